"""Health checks as Temporal activities: one evaluation per call, the workflow polls.

``HealthActivities`` is built once by the worker (remediator.app.runtime ``build_activities``)
with the shared ``remediator.k8s.client.KubeClient`` and the optional Prometheus and
Alertmanager URLs; the workflow runs the step's check every ``interval`` until it passes, fails
for good (``final``) or its ``timeout`` runs out. Activity names:

* ``check_rollout_status`` - kubectl's rollout status viewers
  (pkg/polymorphichelpers/rollout_status.go) for Deployment, StatefulSet and DaemonSet,
  with kubectl's own messages;
* ``check_node_ready`` - the Node's ``Ready`` condition is ``True``;
* ``check_promql`` - a Prometheus instant query (remediator.monitoring.prometheus) whose every
  sample must satisfy ``<op> threshold``;
* ``check_alert_resolved`` - the alert that started the run is no longer active in
  Alertmanager (remediator.monitoring.alertmanager).

Unreachable or failing Prometheus/Alertmanager raise a retryable ``ApplicationError``
(``PrometheusUnavailable`` / ``AlertmanagerUnavailable``); Kubernetes errors are classified by
``remediator.k8s`` and converted by ``api_errors``.
"""

from __future__ import annotations

from temporalio import activity

from remediator.domain.messages import HealthInput, HealthResult
from remediator.domain.playbook import PromQLCheck
from remediator.k8s.client import KubeClient
from remediator.k8s.errors import api_errors
from remediator.k8s.kubectl import STATUS_VIEWERS
from remediator.monitoring.alertmanager import (
    Alertmanager,
    AlertmanagerUnavailable,
    QueryRefused,
)
from remediator.monitoring.prometheus import (
    NOT_CONFIGURED,
    Prometheus,
    PrometheusUnavailable,
    QueryRejected,
)


class HealthActivities:
    """The health-check activities.

    ``kube``: the worker's KubeClient (every Kubernetes read goes through it);
    ``prometheus_url`` / ``alertmanager_url``: base URLs (``http://prometheus:9090``); None
    when not configured. Each check is one evaluation; the workflow does the polling.
    """

    def __init__(
        self,
        kube: KubeClient,
        prometheus_url: str | None = None,
        alertmanager_url: str | None = None,
    ) -> None:
        self.kube = kube
        self.prometheus = Prometheus(prometheus_url) if prometheus_url else None
        self.alertmanager = Alertmanager(alertmanager_url) if alertmanager_url else None

    # ------------------------------------------------------------------ rollout status

    @activity.defn
    def check_rollout_status(self, input: HealthInput) -> HealthResult:
        """``kubectl rollout status`` evaluated once, with kubectl's messages.

        healthy True when kubectl would say "successfully rolled out" (or "partitioned roll
        out complete"); ``final`` True with healthy False on ``ProgressDeadlineExceeded``
        ('deployment "x" exceeded its progress deadline'), on a non-RollingUpdate strategy,
        or when the target is gone.

        Raises:
            ApplicationError: Kubernetes API errors as classified by remediator.k8s.
        """
        target = input.target
        viewer = STATUS_VIEWERS.get(target.kind)
        if viewer is None:
            return HealthResult(
                healthy=False, final=True, message=f"no status viewer has been implemented for {target.kind}"
            )
        with api_errors():
            obj = self.kube.get_or_none(target.kind, target.name, target.namespace)
        if obj is None:
            return HealthResult(healthy=False, final=True, message=f"{target.key} not found")
        message, done, error = viewer(obj)
        observed = {
            "generation": obj["metadata"].get("generation"),
            "resourceVersion": obj["metadata"].get("resourceVersion"),
            "status": {k: v for k, v in (obj.get("status") or {}).items() if k != "conditions"},
        }
        if error is not None:
            return HealthResult(healthy=False, final=True, message=error, observed=observed)
        activity.logger.info("rollout status %s: %s", target.key, message)
        return HealthResult(healthy=done, final=False, message=message, observed=observed)

    # ------------------------------------------------------------------ node ready

    @activity.defn
    def check_node_ready(self, input: HealthInput) -> HealthResult:
        """The Node's ``Ready`` condition is ``True``. Never final: a node may come back
        (but a Node that does not exist is a final failure).

        Raises:
            ApplicationError: Kubernetes API errors as classified by remediator.k8s.
        """
        target = input.target
        with api_errors():
            node = self.kube.get_or_none("Node", target.name)
        if node is None:
            return HealthResult(healthy=False, final=True, message=f"node {target.name} not found")
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        observed = {
            "ready": ready,
            "unschedulable": bool((node.get("spec") or {}).get("unschedulable", False)),
        }
        if ready is None:
            return HealthResult(healthy=False, message=f"node {target.name} reports no Ready condition", observed=observed)
        if ready.get("status") == "True":
            return HealthResult(healthy=True, message=f"node {target.name} is Ready", observed=observed)
        detail = " - ".join(x for x in (ready.get("reason"), ready.get("message")) if x)
        return HealthResult(
            healthy=False,
            message=f"node {target.name} is not Ready (Ready={ready.get('status')})" + (f": {detail}" if detail else ""),
            observed=observed,
        )

    # ------------------------------------------------------------------ node cordoned / drained

    @activity.defn
    def check_node_cordoned(self, input: HealthInput) -> HealthResult:
        """The Node is unschedulable (``spec.unschedulable``), as ``kubectl get node`` shows
        ``SchedulingDisabled``. A Node that does not exist is a final failure.

        Raises:
            ApplicationError: Kubernetes API errors as classified by remediator.k8s.
        """
        name = input.target.name
        with api_errors():
            node = self.kube.get_or_none("Node", name)
        if node is None:
            return HealthResult(healthy=False, final=True, message=f"node {name} not found")
        cordoned = bool((node.get("spec") or {}).get("unschedulable", False))
        return HealthResult(
            healthy=cordoned,
            message=f"node {name} is {'cordoned (SchedulingDisabled)' if cordoned else 'schedulable'}",
            observed={"unschedulable": cordoned},
        )

    @activity.defn
    def check_node_drained(self, input: HealthInput) -> HealthResult:
        """No pod that ``kubectl drain`` would evict is left on the Node: pods bound to it
        (``fieldSelector=spec.nodeName``) other than DaemonSet pods, mirror pods
        (``kubernetes.io/config.mirror``) and finished pods (Succeeded/Failed), as kubectl
        drain's filters skip them.

        Raises:
            ApplicationError: Kubernetes API errors as classified by remediator.k8s.
        """
        name = input.target.name
        with api_errors():
            pods = self.kube.list("Pod", field_selector=f"spec.nodeName={name}")
        left = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if any(o.get("kind") == "DaemonSet" and o.get("controller") for o in meta.get("ownerReferences") or []):
                continue
            left.append(f"{meta.get('namespace')}/{meta.get('name')}")
        if left:
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            return HealthResult(healthy=False, message=f"{len(left)} pod(s) still on node {name}: {shown}", observed={"pods": left})
        return HealthResult(healthy=True, message=f"node {name} is drained (no pod left that drain evicts)", observed={"pods": []})

    # ------------------------------------------------------------------ promql

    @activity.defn
    def check_promql(self, input: HealthInput) -> HealthResult:
        """A Prometheus instant query; healthy when every sample satisfies ``<op> threshold``.

        ``params`` (PromQLCheck): ``query``, ``op``, ``threshold``, ``on_empty``. An empty
        result is healthy only with ``on_empty: pass``. A query Prometheus rejects (400
        ``bad_data``) or whose result is not an instant vector or scalar is a final failure
        with Prometheus' own error text; no Prometheus configured is a final failure too.

        Raises:
            ApplicationError: type ``PrometheusUnavailable`` (retryable) when Prometheus is
                unreachable, answers 5xx/422 or something that is not its API.
        """
        check = input.params
        if not isinstance(check, PromQLCheck):
            return HealthResult(
                healthy=False, final=True,
                message=f"invalid promql check: expected PromQLCheck params, got {type(check).__name__}",
            )
        if self.prometheus is None:
            return HealthResult(healthy=False, final=True, message=NOT_CONFIGURED)
        try:
            verdict = self.prometheus.evaluate(check)
        except PrometheusUnavailable as exc:
            raise exc.to_application_error() from exc
        except QueryRejected as exc:
            return HealthResult(healthy=False, final=True, message=str(exc))
        return HealthResult(healthy=verdict.passed, message=verdict.message, observed=verdict.observed)

    # ------------------------------------------------------------------ alert resolved

    @activity.defn
    def check_alert_resolved(self, input: HealthInput) -> HealthResult:
        """The alert that started the run (by fingerprint) is no longer active in Alertmanager.

        Asks ``GET /api/v2/alerts?active=true&filter=alertname="..."`` and looks for the
        fingerprint; Alertmanager's API lists no resolved alert, so absent means resolved.
        Without an Alertmanager URL it returns healthy False, final False: the workflow then
        relies on the ``resolved`` webhook notification it also watches for. A query
        Alertmanager refuses (4xx) is a final failure.

        Raises:
            ApplicationError: type ``AlertmanagerUnavailable`` (retryable) when Alertmanager
                is unreachable or answers 5xx.
        """
        alert = input.alert
        if alert is None:
            return HealthResult(healthy=False, final=True, message="no alert is attached to this run")
        if self.alertmanager is None:
            return HealthResult(
                healthy=False,
                final=False,
                message=(
                    f"no Alertmanager API configured (--alertmanager-url); waiting for the resolved "
                    f"notification of {alert.alertname or 'the alert'} ({alert.fingerprint})"
                ),
            )
        try:
            found = self.alertmanager.find_active(alert.fingerprint, alert.alertname)
        except AlertmanagerUnavailable as exc:
            raise exc.to_application_error() from exc
        except QueryRefused as exc:
            return HealthResult(healthy=False, final=True, message=str(exc))
        if not found.active:
            return HealthResult(
                healthy=True,
                message=f"alert {alert.alertname} ({alert.fingerprint}) is no longer active",
                observed={"active_with_same_name": found.active_with_same_name},
            )
        match = found.alert or {}
        return HealthResult(
            healthy=False,
            message=f"alert {alert.alertname} ({alert.fingerprint}) is still firing (state {found.state})",
            observed={"status": match.get("status"), "endsAt": match.get("endsAt")},
        )
