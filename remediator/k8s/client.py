"""The one place that talks to the Kubernetes API server through the ``kubernetes`` client.

* ``load_api_client``: the ApiClient, configured as kubectl finds its configuration; called by
  the composition root (remediator.cli) once at start;
* ``KubeClient``: every request remediator sends (get/list/patch/put/evict/delete by kind),
  JSON in and out as on the wire, errors raised by reason (remediator.k8s.errors).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from remediator.domain.messages import TargetRef, TargetState
from remediator.k8s.errors import NotFound, classify
from remediator.k8s.gitops import gitops_owner
from remediator.k8s.kubectl import DRY_RUN_ALL, controller_of, dry_run_options, revision_of, rfc3339, selector_string

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


# --------------------------------------------------------------------------- requests

JSON = "application/json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FIELD_MANAGER = "remediator"
"""``fieldManager`` of every write, so managedFields show who changed what."""
DRY_RUN_QUERY = f"?dryRun={DRY_RUN_ALL}"
"""How a dry-run request's path is recorded (``KubeRequest.path``), as it goes on the wire."""


def dry_run_path(path: str, dry_run: bool) -> str:
    """``path`` as sent: with ``?dryRun=All`` for a dry run (the recorded ``KubeRequest.path``)."""
    return path + DRY_RUN_QUERY if dry_run else path


_RESOURCES: dict[str, tuple[str, str, bool]] = {
    # kind: (API path prefix, plural, namespaced)
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Event": ("/api/v1", "events", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
}


class KubeClient:
    """Every request remediator sends to the Kubernetes API server: the one module that calls the
    ``kubernetes`` client, shared by the activities (activities/kube.py, diagnosis.py, health.py).

    Bodies go out and come back as JSON exactly as on the wire (dicts; no model conversion, so
    no field is dropped and what is recorded is what was sent). Errors are raised by reason
    (remediator.k8s.errors: ``NotFound``, ``Conflict``, ``TooManyRequests``, ``Unreachable``...),
    each prefixed with the request (``GET deployment/prod/checkout: 404 Not Found: ...``).

    Args:
        api_client: from ``load_api_client`` (or the emulator's ``api_client()``); it carries
            the server, credentials and TLS settings.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client

    @staticmethod
    def path(kind: str, name: str | None = None, namespace: str | None = None, subresource: str = "") -> str:
        """The REST path: ``/apis/apps/v1/namespaces/prod/deployments/checkout/scale``.

        Raises:
            ValueError: a kind remediator does not address.
        """
        try:
            prefix, plural, namespaced = _RESOURCES[kind]
        except KeyError:
            raise ValueError(f"remediator does not address {kind} objects") from None
        path = prefix + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{plural}"
        if name:
            path += f"/{name}"
        return path + (f"/{subresource}" if subresource else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
        what: str = "",
    ) -> dict[str, Any]:
        """Send one request; return the JSON body of a 2xx answer (``{}`` when empty).

        ``content_type`` None sends no Content-Type header (as kubectl's scale client does for
        its PUT); the API server reads JSON. ``what`` prefixes error messages (default
        ``METHOD path``).

        Raises:
            remediator.k8s.errors.KubeError: by reason, for any other answer or no answer.
        """
        headers = {"Accept": JSON}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            params = self.api_client.param_serialize(
                method=method, resource_path=path, query_params=query or [], header_params=headers,
                body=body, auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*params)
            response.read()
            data = self.api_client.response_deserialize(response, {"2XX": "object"}).data
        except (ApiException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            raise classify(exc, what or f"{method} {path}") from exc
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """``GET`` one object. Raises ``NotFound`` when there is none."""
        return self.request("GET", self.path(kind, name, namespace), what=f"GET {_key(kind, name, namespace)}")

    def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """``get``, None instead of ``NotFound``."""
        try:
            return self.get(kind, name, namespace)
        except NotFound:
            return None

    def list(
        self, kind: str, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        """``LIST`` the kind's objects (``namespace`` None: all namespaces), filtered as the
        API server filters (``labelSelector=``, ``fieldSelector=``)."""
        query = [(k, v) for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v]
        where = f"in {namespace}" if namespace else "in all namespaces"
        listed = self.request("GET", self.path(kind, namespace=namespace), query=query, what=f"LIST {kind} {where}")
        return listed.get("items") or []

    # ------------------------------------------------------------------ writes
    #
    # Every write takes ``dry_run``: True sends it as ``kubectl --dry-run=server`` does, with
    # ``dryRun=All``; the API server then runs every check (validation, admission, a
    # PodDisruptionBudget's verdict, preconditions) and answers as it would, persisting nothing.

    @staticmethod
    def _write_query(dry_run: bool) -> list[tuple[str, str]]:
        # Go's url.Values.Encode sorts by key: dryRun before fieldManager.
        return ([("dryRun", DRY_RUN_ALL)] if dry_run else []) + [("fieldManager", FIELD_MANAGER)]

    def patch(
        self, kind: str, name: str, namespace: str | None, body: Any, content_type: str, subresource: str = "",
        *, dry_run: bool = False,
    ) -> dict[str, Any]:
        """``PATCH`` with ``content_type`` (strategic-merge, merge or JSON patch) and
        ``fieldManager=remediator`` (plus ``dryRun=All`` for a dry run, as kubectl's
        resource.Helper.Patch); returns the object the server answered (for a dry run, the
        object as the patch would leave it, its resourceVersion unchanged)."""
        return self.request(
            "PATCH", self.path(kind, name, namespace, subresource), body=body, content_type=content_type,
            query=self._write_query(dry_run),
            what=f"PATCH {_key(kind, name, namespace)}" + (f"/{subresource}" if subresource else ""),
        )

    def put_scale(self, kind: str, name: str, namespace: str, scale: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """``PUT .../scale`` with the Scale object (its ``resourceVersion`` makes the write
        conditional: ``Conflict`` when it changed), no Content-Type header, as kubectl's scaler
        (``dryRun=All`` for a dry run, as ``kubectl scale --dry-run=server``). Returns the Scale
        the server answered."""
        return self.request(
            "PUT", self.path(kind, name, namespace, "scale"), body=scale,
            query=self._write_query(dry_run), what=f"PUT {_key(kind, name, namespace)}/scale",
        )

    def evict(self, name: str, namespace: str, eviction: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """``POST pods/{name}/eviction`` with a policy/v1 Eviction (application/json, as kubectl);
        returns the server's Status (``"status": "Success"``).

        A dry run puts ``dryRun: ["All"]`` in the Eviction's ``deleteOptions``, as kubectl
        drain's ``makeDeleteOptions`` does and as the API server reads it (eviction.go
        ``propagateDryRun``), and also sends the ``dryRun=All`` query parameter (kubectl does
        not; the server checks the two agree), so the request log shows it like every other
        dry-run write. The budget is consulted as for a real eviction: 429 when it would refuse.

        Raises:
            TooManyRequests: a PodDisruptionBudget does not allow it now; ``NotFound``: gone.
        """
        if dry_run:
            eviction = {**eviction, "deleteOptions": dry_run_options(eviction.get("deleteOptions") or {}, True)}
        return self.request(
            "POST", self.path("Pod", name, namespace, "eviction"), body=eviction, content_type=JSON,
            query=self._write_query(dry_run), what=f'error when evicting pods/"{name}" -n "{namespace}"',
        )

    def delete(
        self, kind: str, name: str, namespace: str | None, options: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """``DELETE`` with DeleteOptions (application/json, as kubectl); returns the server's
        answer (a pod: the pod, terminating; other kinds: a Status).

        A dry run puts ``dryRun: ["All"]`` in the DeleteOptions body, as ``kubectl delete
        --dry-run=server`` does: the API server reads a DELETE's options from its body and
        ignores the query when there is a body (handlers/delete.go). The ``dryRun=All`` query
        parameter is sent as well (kubectl does not), so the request log shows it like every
        other dry-run write."""
        return self.request(
            "DELETE", self.path(kind, name, namespace), body=dry_run_options(options, dry_run), content_type=JSON,
            query=[("dryRun", DRY_RUN_ALL)] if dry_run else None, what=f"DELETE {_key(kind, name, namespace)}",
        )


    # ------------------------------------------------------------------ kubectl's reads

    def owned_replica_sets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """ReplicaSets controlled by the Deployment (kubectl deploymentutil.ListReplicaSets):
        listed with the Deployment's selector, kept when their controller ownerRef has its UID."""
        uid = deployment["metadata"].get("uid")
        selector = selector_string((deployment.get("spec") or {}).get("selector"))
        listed = self.list("ReplicaSet", deployment["metadata"].get("namespace"), label_selector=selector)
        return [rs for rs in listed if (controller_of(rs) or {}).get("uid") == uid]

    def describe(self, target: TargetRef) -> TargetState:
        """The target's state in one read: ``exists`` False on 404; revision, last rollout
        time, paused, replicas, ready count; a Node's Ready condition and cordon; the GitOps
        controller that manages it (``gitops``, remediator.k8s.gitops.gitops_owner).

        For a Deployment, ``revision`` is its ``deployment.kubernetes.io/revision`` and
        ``last_rollout`` the creationTimestamp of the ReplicaSet it owns with that revision.
        ``summary`` is one line for people, ending "; managed by <owner>" for a GitOps-managed
        object (``deployment prod/checkout: 3/3 ready, revision 2; managed by Argo CD
        application shop``).
        """
        obj = self.get_or_none(target.kind, target.name, target.namespace)
        if obj is None:
            return TargetState(exists=False, summary=f"{target.key} not found")
        state = self._describe(target, obj)
        state.gitops = gitops_owner(obj)
        if state.gitops:
            state.summary += f"; managed by {state.gitops}"
        return state

    def _describe(self, target: TargetRef, obj: dict[str, Any]) -> TargetState:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        state = TargetState(exists=True, resource_version=str(meta.get("resourceVersion", "")), generation=meta.get("generation"))
        if target.kind == "Node":
            ready = next(
                (c.get("status") == "True" for c in status.get("conditions") or [] if c.get("type") == "Ready"), False
            )
            state.unschedulable = bool(spec.get("unschedulable", False))
            state.ready = ready
            state.summary = f"node {target.name}: {'Ready' if ready else 'NotReady'}" + (
                ", SchedulingDisabled" if state.unschedulable else ""
            )
            return state
        if target.kind == "DaemonSet":
            state.replicas = status.get("desiredNumberScheduled")
            ready_count = status.get("numberReady", 0)
        else:
            state.replicas = spec.get("replicas", 1)
            ready_count = status.get("readyReplicas", 0)
        state.summary = f"{target.kind.lower()} {target.namespace}/{target.name}: {ready_count}/{state.replicas} ready"
        if target.kind == "Deployment":
            state.paused = bool(spec.get("paused", False))
            state.revision = revision_of(obj)
            if state.revision is not None:
                for rs in self.owned_replica_sets(obj):
                    if revision_of(rs) == state.revision:
                        created = (rs.get("metadata") or {}).get("creationTimestamp")
                        if created:
                            state.last_rollout = datetime.fromisoformat(created.replace("Z", "+00:00"))
                        break
            state.summary += f", revision {state.revision}" + (", paused" if state.paused else "")
            if state.last_rollout:
                state.summary += f", rolled out {rfc3339(state.last_rollout)}"
        return state


def _key(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind.lower()}/{namespace}/{name}" if namespace else f"{kind.lower()}/{name}"
