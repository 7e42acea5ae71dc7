"""A Kubernetes API emulator: real HTTP on loopback for kubectl and the official client.

No real API server runs in the tests, the CI or the worker's ``--simulate`` demo, so this
package emulates one together with the controllers that make a cluster behave
(Deployment -> ReplicaSet -> Pod with revisions and rollout conditions, StatefulSets,
DaemonSets, scheduling onto nodes, evictions with PodDisruptionBudgets), fault injection
(crash loops, stalled rollouts, NotReady nodes, API errors) and a kube-state-metrics
``/metrics`` endpoint.

    from remediator.sim.kube import Emulator
    emu = Emulator().start()
    emu.seed_demo()
    emu.write_kubeconfig("kubeconfig")   # kubectl --kubeconfig kubeconfig get pods -n prod
    ...
    emu.stop()

Service-account tokens bound to RBAC rules (``emu.add_service_account_token(token, rules)``,
``emu.write_kubeconfig(path, token=token)``) are authorized as the API server does: 403
Forbidden for what the rules do not allow.

Modules: ``cluster`` (the ``Emulator`` facade), ``server`` (HTTP and REST semantics),
``auth`` (tokens, RBAC authorization), ``store`` (objects and resourceVersions),
``controllers``, ``kinds`` (discovery, errors), ``patch``, ``selectors``, ``defaults``,
``metrics``, ``names``.
"""

from remediator.sim.kube.cluster import Emulator
from remediator.sim.kube.kinds import ApiError
from remediator.sim.kube.server import RecordedRequest

__all__ = ["ApiError", "Emulator", "RecordedRequest"]
