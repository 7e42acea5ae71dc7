"""The one place that configures the Kubernetes client.

Called by the composition root (remediator.cli, ``load_api_client`` once at start); the
activities receive the ApiClient it builds.
"""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes.client
import kubernetes.config
from kubernetes.config.config_exception import ConfigException

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubeConfigError(Exception):
    """No usable kubeconfig or in-cluster configuration; the message says what was tried."""



def load_api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
) -> kubernetes.client.ApiClient:
    """Build the ApiClient the activities use, as kubectl finds its configuration.

    * ``in_cluster`` True: the pod's service account only (``KUBERNETES_SERVICE_HOST`` and
      the mounted token);
    * otherwise a kubeconfig: ``kubeconfig`` if given, else ``$KUBECONFIG`` (a
      ``os.pathsep``-separated list, merged as kubectl does), else ``~/.kube/config``;
      ``context`` or the file's current-context;
    * ``in_cluster`` None and no kubeconfig file found: in-cluster if running in a pod.

    Nothing else is ever tried: no default localhost, no fake cluster.

    Raises:
        KubeConfigError: nothing usable was found, or the file/context is invalid; the
            message names the paths tried and how to run the demo without a cluster.
    """
    hint = (
        "point --kubeconfig (or KUBECONFIG) at a cluster, pass --in-cluster inside a pod, "
        "or run the demo against the built-in emulator with --simulate"
    )
    if in_cluster:
        return _in_cluster_client(hint)

    if kubeconfig:
        paths = kubeconfig
        source = f"--kubeconfig {kubeconfig}"
    elif os.environ.get("KUBECONFIG"):
        paths = os.environ["KUBECONFIG"]
        source = f"KUBECONFIG={paths}"
    else:
        paths = str(Path("~/.kube/config").expanduser())
        source = paths
    existing = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().is_file()]

    if not existing:
        if in_cluster is None and not kubeconfig and os.environ.get(SERVICE_HOST_ENV):
            return _in_cluster_client(hint)
        raise KubeConfigError(f"no Kubernetes configuration found: no kubeconfig file at {source}; {hint}")

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(
            config_file=os.pathsep.join(existing),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError) as exc:
        where = f" (context {context!r})" if context else ""
        raise KubeConfigError(f"cannot use kubeconfig {source}{where}: {exc}; {hint}") from exc
    return kubernetes.client.ApiClient(configuration)


def _in_cluster_client(hint: str) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise KubeConfigError(
            f"no in-cluster configuration: {exc} ({SERVICE_HOST_ENV} and {SERVICE_TOKEN_PATH} "
            f"are set only inside a pod); {hint}"
        ) from exc
    return kubernetes.client.ApiClient(configuration)
