"""Kubernetes actions as Temporal activities: what kubectl would send, and nothing else.

``KubeActivities`` is built once by ``worker.py`` with the ApiClient from
``remediator.kube.load_api_client`` and its bound methods are registered as activities
(name = method name, sync ``def`` run on the worker's thread pool). The workflow calls
``describe_target`` once, then one action per playbook step:

=================  ==========================================================================
rollout_restart    ``kubectl rollout restart`` (pkg/polymorphichelpers/objectrestarter.go)
scale              ``kubectl scale`` through the scale subresource (pkg/scale/scale.go)
rollback           ``kubectl rollout undo`` (pkg/polymorphichelpers/rollback.go, Deployments)
cordon / uncordon  ``kubectl cordon`` / ``uncordon`` (pkg/drain/cordon.go CordonHelper)
drain              ``kubectl drain`` with evictions (pkg/drain/drain.go, filters.go)
delete_pod         ``kubectl delete pod`` with a UID precondition
=================  ==========================================================================

Every action reads the object first, refuses what kubectl refuses (``SafetyRefusal``),
sends nothing when the object is already in the desired state (``changed=False``) and
records every mutating request exactly as sent. Retries of one activity (same
``request_id``) never apply a relative change twice: what an attempt decided is
heartbeated before it is sent and reused by the next attempt.

Reads use the typed APIs with ``_preload_content=False`` so the object is seen exactly as
the API server sent it (no field dropped by model conversion); patches choose their type
with ``_content_type=``. All API errors go through ``remediator.kube.api_errors``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from remediator.kube import (
    DRAIN_TIMEOUT,
    KubePermanentError,
    SafetyRefusal,
    api_errors,
    classify,
)
from remediator.models import (
    DescribeTargetInput,
    KubeRequest,
    MutationInput,
    MutationResult,
    TargetRef,
    TargetState,
    UndoAction,
)
from remediator.playbook import (
    ACTION_KINDS,
    DeletePodParams,
    DrainParams,
    RollbackParams,
    ScaleParams,
)

FIELD_MANAGER = "remediator"
"""``fieldManager`` of every write, so managedFields show who changed what."""

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
JSON = "application/json"
JSON_BODY = {"Content-Type": JSON}
"""Headers for POST/DELETE bodies: the generated client sets no Content-Type for the eviction
and delete operations (``_content_type`` is ignored there), kubectl sends application/json."""

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
MIRROR_POD = "kubernetes.io/config.mirror"

ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
"""Deployment annotations kept from the Deployment, not copied from the ReplicaSet, on
rollback (kubectl rollback.go ``annotationsToSkip``)."""

# kubectl drain's filter messages (pkg/drain/filters.go).
DAEMONSET_FATAL = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"
DAEMONSET_WARNING = "ignoring DaemonSet-managed Pods"
LOCAL_STORAGE_FATAL = "Pods with local storage (use --delete-emptydir-data to override)"
LOCAL_STORAGE_WARNING = "deleting Pods with local storage"
UNMANAGED_FATAL = "cannot delete Pods that declare no controller (use --force to override)"
UNMANAGED_WARNING = "deleting Pods that declare no controller"

P = TypeVar("P", bound=BaseModel)

_PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


# --------------------------------------------------------------------------- helpers


def rfc3339(moment: datetime) -> str:
    """Go's ``time.Format(time.RFC3339)``: seconds precision, ``Z`` for UTC, else ``+hh:mm``.

    A naive datetime is taken as UTC (Temporal's ``workflow.now()`` is aware UTC).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for whole and fractional seconds: 300 -> ``5m0s``."""
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{secs:g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs_text}"
    if minutes:
        return f"{int(minutes)}m{secs_text}"
    return secs_text


def selector_string(selector: dict[str, Any] | None) -> str:
    """A ``metav1.LabelSelector`` as the text kubectl puts in ``labelSelector=``.

    As apimachinery ``LabelSelectorAsSelector(...).String()``: requirements sorted by key,
    ``k=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``. An empty selector is ``""``.
    """
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op = expr["key"], expr["operator"]
        values = ",".join(sorted(expr.get("values") or []))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(op)
        if text is None:
            raise KubePermanentError(f"unsupported label selector operator {op!r}")
        reqs.append((key, text))
    return ",".join(t for _, t in sorted(reqs, key=lambda r: r[0]))


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true`` (``metav1.GetControllerOf``), or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _revision_of(obj: dict[str, Any]) -> int | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _semantic(value: Any) -> Any:
    """Drop nulls and empty maps/lists, as apimachinery's semantic DeepEqual treats nil and
    empty alike."""
    if isinstance(value, dict):
        out = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def equal_ignore_hash(template1: dict[str, Any], template2: dict[str, Any]) -> bool:
    """kubectl rollback.go ``equalIgnoreHash``: pod templates equal apart from ``pod-template-hash``."""
    t1, t2 = copy.deepcopy(template1), copy.deepcopy(template2)
    for t in (t1, t2):
        labels = (t.get("metadata") or {}).get("labels")
        if labels:
            labels.pop(POD_TEMPLATE_HASH, None)
    return _semantic(t1) == _semantic(t2)


def _go_encoded_template(template: dict[str, Any]) -> dict[str, Any]:
    """The pod template as kubectl's Go JSON encoder writes a ``corev1.PodTemplateSpec``:
    ``metadata.creationTimestamp`` is always present (null when unset) and every container
    has ``resources`` (a struct, never omitted)."""
    out = copy.deepcopy(template)
    meta = out.setdefault("metadata", {})
    meta.setdefault("creationTimestamp", None)
    spec = out.get("spec") or {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            container.setdefault("resources", {})
    return out


def _params(model: type[P], raw: dict[str, Any], action: str) -> P:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or action}: {e['msg']}" for e in exc.errors())
        raise KubePermanentError(f"invalid {action} params: {errors}") from exc


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KubePermanentError(f"scale: {field} must be an integer after rendering, got {value!r}")
    return value


def _check_kind(action: str, target: TargetRef) -> None:
    if target.kind not in ACTION_KINDS[action]:
        raise KubePermanentError(
            f"{action} cannot act on a {target.kind}; it works on {', '.join(ACTION_KINDS[action])}"
        )


def _previous_attempt(request_id: str) -> dict[str, Any] | None:
    """What an earlier attempt of this activity heartbeated before sending, if anything."""
    if not activity.in_activity():
        return None
    for detail in activity.info().heartbeat_details or ():
        if isinstance(detail, dict) and detail.get("request_id") == request_id:
            return detail
    return None


def _heartbeat(detail: Any) -> None:
    if activity.in_activity():
        activity.heartbeat(detail)


def _sleep(seconds: float) -> None:
    """Sleep, waking early and raising CancelledError if the activity is cancelled."""
    if activity.in_activity():
        if activity.wait_for_cancelled_sync(timeout=seconds) or activity.is_cancelled():
            raise CancelledError("activity cancelled")
    else:
        time.sleep(seconds)


def _log() -> Any:
    return activity.logger


# --------------------------------------------------------------------------- activities


def _unchanged(message: str, resource_version: str, state: dict[str, Any]) -> MutationResult:
    """The object already is as wanted: nothing was sent, state before equals after."""
    return MutationResult(
        changed=False,
        message=message,
        resource_version_before=resource_version,
        resource_version_after=resource_version,
        state_before=state,
        state_after=state,
    )


class KubeActivities:
    """The Kubernetes activities, sharing one ApiClient.

    ``eviction_retry_delay``: seconds between eviction attempts refused with 429 (kubectl
    drain's ``EvictErrorRetryDelay``, 5 s). ``delete_poll_interval``: seconds between checks
    that evicted pods are gone (kubectl ``waitForDelete``, 1 s). Tests shorten both.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        eviction_retry_delay: float = 5.0,
        delete_poll_interval: float = 1.0,
    ) -> None:
        self.api_client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.eviction_retry_delay = eviction_retry_delay
        self.delete_poll_interval = delete_poll_interval

    # ------------------------------------------------------------------ raw API access

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        data = response.data if hasattr(response, "data") else response.read()
        return json.loads(data) if data else {}

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call a typed API method, return the response body as the server sent it."""
        with api_errors(what):
            return self._json(fn(*args, _preload_content=False, **kwargs))

    def _get(self, target: TargetRef) -> dict[str, Any]:
        what = f"GET {target.key}"
        if target.kind == "Node":
            return self._call(what, self.core.read_node, target.name)
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "DaemonSet": self.apps.read_namespaced_daemon_set,
        }[target.kind]
        return self._call(what, read, target.name, target.namespace)

    def _get_or_none(self, target: TargetRef) -> dict[str, Any] | None:
        try:
            return self._get(target)
        except ApplicationError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                return None
            raise

    @staticmethod
    def _path(target: TargetRef, sub: str = "") -> str:
        if target.kind == "Node":
            path = f"/api/v1/nodes/{target.name}"
        else:
            path = f"/apis/apps/v1/namespaces/{target.namespace}/{_PLURAL[target.kind]}/{target.name}"
        return path + (f"/{sub}" if sub else "")

    def _patch(
        self, target: TargetRef, body: Any, content_type: str, *, sub: str = ""
    ) -> tuple[KubeRequest, dict[str, Any]]:
        """PATCH the target (or its ``scale`` subresource); returns the recorded request and
        the object the server answered."""
        request = KubeRequest(method="PATCH", path=self._path(target, sub), content_type=content_type, body=body)
        what = f"PATCH {target.key}" + (f"/{sub}" if sub else "")
        kwargs = {"field_manager": FIELD_MANAGER, "_content_type": content_type}
        if target.kind == "Node":
            fn = self.core.patch_node
            args: tuple[Any, ...] = (target.name, body)
        else:
            fn = {
                ("Deployment", ""): self.apps.patch_namespaced_deployment,
                ("StatefulSet", ""): self.apps.patch_namespaced_stateful_set,
                ("DaemonSet", ""): self.apps.patch_namespaced_daemon_set,
                ("Deployment", "scale"): self.apps.patch_namespaced_deployment_scale,
                ("StatefulSet", "scale"): self.apps.patch_namespaced_stateful_set_scale,
            }[(target.kind, sub)]
            args = (target.name, target.namespace, body)
        _log().info("%s %s (%s) %s", request.method, request.path, content_type, json.dumps(body))
        return request, self._call(what, fn, *args, **kwargs)

    # ------------------------------------------------------------------ describe_target

    @activity.defn
    def describe_target(self, input: DescribeTargetInput) -> TargetState:
        """Read the target once: revision, last rollout time, paused, replicas, node state.

        ``exists`` False on 404. For a Deployment, ``revision`` is its
        ``deployment.kubernetes.io/revision`` and ``last_rollout`` the creationTimestamp of
        the ReplicaSet it owns with that revision. ``summary`` is one line for people.

        Raises:
            ApplicationError: ``KubePermanentError`` / ``KubeTemporaryError`` from the API.
        """
        target = input.target
        obj = self._get_or_none(target)
        if obj is None:
            return TargetState(exists=False, summary=f"{target.key} not found")
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        state = TargetState(
            exists=True,
            resource_version=str(meta.get("resourceVersion", "")),
            generation=meta.get("generation"),
        )
        if target.kind == "Node":
            ready = next(
                (c.get("status") == "True" for c in status.get("conditions") or [] if c.get("type") == "Ready"),
                False,
            )
            state.unschedulable = bool(spec.get("unschedulable", False))
            state.ready = ready
            state.summary = (
                f"node {target.name}: {'Ready' if ready else 'NotReady'}"
                + (", SchedulingDisabled" if state.unschedulable else "")
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
            state.revision = _revision_of(obj)
            if state.revision is not None:
                for rs in self._owned_replica_sets(target, obj):
                    if _revision_of(rs) == state.revision:
                        created = (rs.get("metadata") or {}).get("creationTimestamp")
                        if created:
                            state.last_rollout = datetime.fromisoformat(created.replace("Z", "+00:00"))
                        break
            state.summary += f", revision {state.revision}" + (", paused" if state.paused else "")
            if state.last_rollout:
                state.summary += f", rolled out {rfc3339(state.last_rollout)}"
        return state

    def _owned_replica_sets(self, target: TargetRef, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """ReplicaSets controlled by the Deployment (kubectl deploymentutil.ListReplicaSets):
        listed with the Deployment's selector, kept when their controller ownerRef has its UID."""
        uid = deployment["metadata"].get("uid")
        selector = selector_string((deployment.get("spec") or {}).get("selector"))
        listed = self._call(
            f"LIST replicasets in {target.namespace}",
            self.apps.list_namespaced_replica_set,
            target.namespace,
            label_selector=selector or None,
        )
        owned = []
        for rs in listed.get("items") or []:
            ref = controller_of(rs)
            if ref and ref.get("uid") == uid:
                owned.append(rs)
        return owned

    # ------------------------------------------------------------------ rollout_restart

    @activity.defn
    def rollout_restart(self, input: MutationInput) -> MutationResult:
        """``kubectl rollout restart``: stamp ``kubectl.kubernetes.io/restartedAt`` on the pod template.

        Strategic-merge patch
        ``{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":T}}}}}``
        with T = ``input.now`` in RFC 3339 (kubectl stamps ``time.Now()``; the workflow's time
        makes a retried attempt send the same change). Nothing is sent when the template
        already carries T. No undo: a restart cannot be taken back.

        Raises:
            ApplicationError: ``SafetyRefusal`` "can't restart paused deployment (run rollout
                resume first)" (kubectl objectrestarter.go); API errors as classified.
        """
        target = input.target
        with api_errors(f"rollout_restart {target.key}"):
            _check_kind("rollout_restart", target)
            obj = self._get(target)
            spec = obj.get("spec") or {}
            if target.kind == "Deployment" and spec.get("paused"):
                raise SafetyRefusal("can't restart paused deployment (run rollout resume first)")
            value = rfc3339(input.now)
            annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
            before = {"restartedAt": annotations.get(RESTARTED_AT), "generation": obj["metadata"].get("generation")}
            rv = str(obj["metadata"].get("resourceVersion", ""))
            if annotations.get(RESTARTED_AT) == value:
                return _unchanged(f"{target.key} already restarted at {value}", rv, before)
            body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: value}}}}}
            request, after_obj = self._patch(target, body, STRATEGIC_MERGE_PATCH)
            after = {"restartedAt": value, "generation": after_obj.get("metadata", {}).get("generation")}
            return MutationResult(
                changed=True,
                message=f"{target.kind.lower()}.apps/{target.name} restarted",
                requests=[request],
                resource_version_before=rv,
                resource_version_after=str(after_obj.get("metadata", {}).get("resourceVersion", "")),
                state_before=before,
                state_after=after,
            )

    # ------------------------------------------------------------------ scale

    @activity.defn
    def scale(self, input: MutationInput) -> MutationResult:
        """``kubectl scale`` through the scale subresource, bounded by min/max replicas.

        ``params`` (ScaleParams): ``replicas`` (absolute) or ``delta`` (relative to the
        current ``spec.replicas``), clamped into [``min_replicas``, ``max_replicas``]; the
        message says when it clamped. Sends ``PATCH .../scale`` with the merge patch
        ``{"spec":{"replicas":N}}`` as kubectl's scaler does (pkg/scale/scale.go
        ``ScaleSimple`` without preconditions). Nothing is sent when already at N. A retried
        attempt reuses the N and previous replicas heartbeated by the first, so a delta is
        never applied twice. Undo: scale back to the previous replicas.

        Raises:
            ApplicationError: ``KubePermanentError`` for bad params or kinds; API errors.
        """
        target = input.target
        with api_errors(f"scale {target.key}"):
            _check_kind("scale", target)
            params = _params(ScaleParams, input.params, "scale")
            obj = self._get(target)
            rv = str(obj["metadata"].get("resourceVersion", ""))
            current = int((obj.get("spec") or {}).get("replicas", 1))
            earlier = _previous_attempt(input.request_id)
            if earlier and earlier.get("action") == "scale":
                desired, previous, note = int(earlier["replicas"]), int(earlier["previous"]), earlier.get("note", "")
            else:
                if params.replicas is not None:
                    wanted = _as_int(params.replicas, "replicas")
                else:
                    wanted = current + _as_int(params.delta, "delta")
                desired = min(max(wanted, params.min_replicas), params.max_replicas)
                previous = current
                note = ""
                if desired != wanted:
                    bound = "max_replicas" if wanted > params.max_replicas else "min_replicas"
                    note = f" (clamped from {wanted} to {bound} {desired})"
            undo = UndoAction(
                action="scale",
                params={"replicas": previous, "min_replicas": previous, "max_replicas": max(previous, 1)},
                description=f"scale {target.key} back to {previous} replicas",
            )
            before = {"replicas": current}
            if current == desired:
                changed_earlier = bool(earlier) and previous != desired
                return MutationResult(
                    changed=changed_earlier,
                    message=f"{target.key} already at {desired} replicas{note}",
                    resource_version_before=rv,
                    resource_version_after=rv,
                    state_before={"replicas": previous},
                    state_after={"replicas": desired},
                    undo=undo if changed_earlier else None,
                )
            _heartbeat(
                {"request_id": input.request_id, "action": "scale", "replicas": desired, "previous": previous, "note": note}
            )
            body = {"spec": {"replicas": desired}}
            request, scale_obj = self._patch(target, body, MERGE_PATCH, sub="scale")
            return MutationResult(
                changed=True,
                message=f"{target.kind.lower()}.apps/{target.name} scaled from {current} to {desired}{note}",
                requests=[request],
                resource_version_before=rv,
                resource_version_after=str(scale_obj.get("metadata", {}).get("resourceVersion", "")),
                state_before=before,
                state_after={"replicas": (scale_obj.get("spec") or {}).get("replicas", desired)},
                undo=undo,
            )

    # ------------------------------------------------------------------ rollback

    @activity.defn
    def rollback(self, input: MutationInput) -> MutationResult:
        """``kubectl rollout undo`` for a Deployment (kubectl rollback.go ``DeploymentRollbacker``).

        Lists the ReplicaSets the Deployment controls, picks ``to_revision`` (0: the second
        highest revision, i.e. the previous one), then sends kubectl's JSON patch: replace
        ``/spec/template`` with that ReplicaSet's template minus the ``pod-template-hash``
        label, and replace ``/metadata/annotations`` with the Deployment's own
        revision-bookkeeping annotations plus the ReplicaSet's other annotations.

        Skips (``changed=False``, "skipped rollback (current template already matches
        revision N)") when the template already matches. A retried attempt reuses the
        revision chosen by the first (heartbeated), because after a successful rollback
        "previous" would name the bad revision again. Undo: roll back to the revision that
        was current before.

        Raises:
            ApplicationError: ``SafetyRefusal`` with kubectl's messages: 'no rollout history
                found for deployment "x"', "unable to find specified revision N in history",
                "you cannot rollback a paused deployment; resume it first with 'kubectl rollout
                resume' and try again" (kubectl 1.32's wording); API errors as classified.
        """
        target = input.target
        with api_errors(f"rollback {target.key}"):
            _check_kind("rollback", target)
            params = _params(RollbackParams, input.params, "rollback")
            deployment = self._get(target)
            meta = deployment["metadata"]
            rv = str(meta.get("resourceVersion", ""))
            current_revision = _revision_of(deployment)
            template = (deployment.get("spec") or {}).get("template") or {}
            before = {"revision": current_revision}

            earlier = _previous_attempt(input.request_id)
            if earlier and earlier.get("action") == "rollback":
                # An earlier attempt chose and maybe sent this patch: finish its decision.
                patch = earlier["patch"]
                revision = int(earlier["revision"])
                undo = UndoAction(**earlier["undo"]) if earlier.get("undo") else None
                if equal_ignore_hash(patch[0]["value"], template):
                    return MutationResult(
                        changed=True,
                        message=f"rolled back to revision {revision} (by an earlier attempt)",
                        requests=[KubeRequest(method="PATCH", path=self._path(target), content_type=JSON_PATCH, body=patch)],
                        resource_version_before=rv,
                        resource_version_after=rv,
                        state_before={"revision": earlier.get("previous_revision")},
                        state_after=before,
                        undo=undo,
                    )
                return self._send_rollback(input, deployment, patch, revision, earlier.get("previous_revision"), undo)

            rs = self._revision_replica_set(target, deployment, params.to_revision)
            revision = _revision_of(rs)
            if (deployment.get("spec") or {}).get("paused"):
                raise SafetyRefusal(
                    "you cannot rollback a paused deployment; resume it first with "
                    "'kubectl rollout resume' and try again"
                )
            rs_template = (rs.get("spec") or {}).get("template") or {}
            if equal_ignore_hash(rs_template, template):
                return _unchanged(f"skipped rollback (current template already matches revision {revision})", rv, before)
            new_template = copy.deepcopy(rs_template)
            labels = (new_template.get("metadata") or {}).get("labels")
            if labels is not None:
                labels.pop(POD_TEMPLATE_HASH, None)
                if not labels:
                    del new_template["metadata"]["labels"]
            annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in ANNOTATIONS_TO_SKIP}
            for k, v in ((rs.get("metadata") or {}).get("annotations") or {}).items():
                if k not in ANNOTATIONS_TO_SKIP:
                    annotations[k] = v
            patch = [
                {"op": "replace", "path": "/spec/template", "value": _go_encoded_template(new_template)},
                {"op": "replace", "path": "/metadata/annotations", "value": dict(sorted(annotations.items()))},
            ]
            undo = None
            if current_revision is not None:
                undo = UndoAction(
                    action="rollback",
                    params={"to_revision": current_revision},
                    description=f"roll {target.key} back to revision {current_revision}",
                )
            _heartbeat(
                {
                    "request_id": input.request_id,
                    "action": "rollback",
                    "revision": revision,
                    "previous_revision": current_revision,
                    "patch": patch,
                    "undo": undo.model_dump() if undo else None,
                }
            )
            return self._send_rollback(input, deployment, patch, revision, current_revision, undo)

    def _send_rollback(
        self,
        input: MutationInput,
        deployment: dict[str, Any],
        patch: list[dict[str, Any]],
        revision: int | None,
        previous_revision: int | None,
        undo: UndoAction | None,
    ) -> MutationResult:
        request, after = self._patch(input.target, patch, JSON_PATCH)
        return MutationResult(
            changed=True,
            message=f"deployment.apps/{input.target.name} rolled back to revision {revision}",
            requests=[request],
            resource_version_before=str(deployment["metadata"].get("resourceVersion", "")),
            resource_version_after=str(after.get("metadata", {}).get("resourceVersion", "")),
            state_before={"revision": previous_revision},
            state_after={"revision": _revision_of(after), "template_revision": revision},
            undo=undo,
        )

    def _revision_replica_set(self, target: TargetRef, deployment: dict[str, Any], to_revision: int) -> dict[str, Any]:
        """kubectl rollback.go ``deploymentRevision``."""
        latest: tuple[int, dict[str, Any] | None] = (-1, None)
        previous: tuple[int, dict[str, Any] | None] = (-1, None)
        for rs in self._owned_replica_sets(target, deployment):
            v = _revision_of(rs)
            if v is None:
                continue
            if to_revision == 0:
                if latest[0] < v:
                    previous, latest = latest, (v, rs)
                elif previous[0] < v:
                    previous = (v, rs)
            elif to_revision == v:
                return rs
        if to_revision > 0:
            raise SafetyRefusal(f"unable to find specified revision {to_revision} in history")
        if previous[1] is None:
            raise SafetyRefusal(f'no rollout history found for deployment "{target.name}"')
        return previous[1]

    # ------------------------------------------------------------------ cordon / uncordon

    @activity.defn
    def cordon(self, input: MutationInput) -> MutationResult:
        """``kubectl cordon``: strategic-merge patch ``{"spec":{"unschedulable":true}}``.

        As kubectl's CordonHelper, nothing is sent when the Node is already unschedulable.
        Undo: uncordon.
        """
        return self._cordon(input, True)

    @activity.defn
    def uncordon(self, input: MutationInput) -> MutationResult:
        """``kubectl uncordon``: strategic-merge patch ``{"spec":{"unschedulable":null}}``.

        kubectl computes a two-way merge patch between the Node with and without
        ``unschedulable`` (an omitempty bool), which deletes the field: hence ``null``, not
        ``false``. Nothing is sent when the Node is already schedulable. Undo: cordon.
        """
        return self._cordon(input, False)

    def _cordon(self, input: MutationInput, desired: bool) -> MutationResult:
        action = "cordon" if desired else "uncordon"
        target = input.target
        with api_errors(f"{action} {target.key}"):
            _check_kind(action, target)
            result = self._cordon_node(target, desired)
            if result.changed:
                opposite = "uncordon" if desired else "cordon"
                result.undo = UndoAction(action=opposite, description=f"{opposite} {target.key}")
            return result

    def _cordon_node(self, target: TargetRef, desired: bool) -> MutationResult:
        node = self._get(target)
        rv = str(node["metadata"].get("resourceVersion", ""))
        current = bool((node.get("spec") or {}).get("unschedulable", False))
        before = {"unschedulable": current}
        verb = "cordoned" if desired else "uncordoned"
        if current == desired:
            return _unchanged(f"node/{target.name} already {verb}", rv, before)
        body = {"spec": {"unschedulable": True if desired else None}}
        request, after = self._patch(target, body, STRATEGIC_MERGE_PATCH)
        return MutationResult(
            changed=True,
            message=f"node/{target.name} {verb}",
            requests=[request],
            resource_version_before=rv,
            resource_version_after=str(after.get("metadata", {}).get("resourceVersion", "")),
            state_before=before,
            state_after={"unschedulable": bool((after.get("spec") or {}).get("unschedulable", False))},
        )

    # ------------------------------------------------------------------ drain

    @activity.defn
    def drain(self, input: MutationInput) -> MutationResult:
        """``kubectl drain``: cordon, then evict every pod on the Node through the Eviction API.

        Pods are listed with ``fieldSelector=spec.nodeName=<node>`` (and ``pod_selector``)
        and filtered in kubectl's order (pkg/drain/filters.go): skip pods being deleted,
        DaemonSet pods (skipped with ``ignore_daemonsets``, refused otherwise), mirror pods
        (skipped), emptyDir pods (refused unless ``delete_emptydir_data``), pods with no
        controller (refused unless ``force``); finished pods pass every filter and are
        evicted, as kubectl does. Any refusal is raised before anything is sent: the filters
        run once before cordoning, and again after it as kubectl does (if a pod that arrived
        in between is refused, the cordon this call made is undone before refusing).

        Each pod gets ``POST pods/{name}/eviction`` with a policy/v1 Eviction
        (``deleteOptions.gracePeriodSeconds`` when ``grace_period_seconds`` >= 0). A 429
        (PodDisruptionBudget) is retried every ``eviction_retry_delay`` seconds until
        ``timeout``, heartbeating; a pod is never deleted instead. 404 means already gone.
        Then waits until every evicted pod is gone (404 or a new UID, kubectl waitForDelete).

        Undo: uncordon, when this call cordoned the Node.

        Raises:
            ApplicationError: ``SafetyRefusal`` with kubectl's filter errors, e.g.
                "cannot delete Pods that declare no controller (use --force to override):
                default/web"; ``DrainTimeout`` (non-retryable, details carry the requests sent
                and the undo) when evictions or deletions did not finish in ``timeout``;
                API errors as classified.
        """
        target = input.target
        with api_errors(f"drain {target.key}"):
            _check_kind("drain", target)
            params = _params(DrainParams, input.params, "drain")
            timeout = params.timeout.total_seconds()
            deadline = time.monotonic() + timeout if timeout > 0 else float("inf")

            self._pods_for_deletion(target.name, params)  # refuse before sending anything
            cordon = self._cordon_node(target, True)
            requests = list(cordon.requests)
            undo = (
                UndoAction(action="uncordon", description=f"uncordon {target.key}") if cordon.changed else None
            )
            try:
                pods, warnings = self._pods_for_deletion(target.name, params)
            except SafetyRefusal:
                if cordon.changed:
                    self._cordon_node(target, False)
                raise
            for warning in warnings:
                _log().warning("drain %s: %s", target.name, warning)

            progress = {"node": target.name, "pods": len(pods), "evicted": 0, "gone": 0}
            _heartbeat(progress)
            evicted = self._evict_all(pods, params, deadline, timeout, requests, undo, progress)
            self._wait_for_delete(evicted, deadline, timeout, requests, undo, progress)

            names = ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods)
            message = f"node/{target.name} drained: {len(pods)} pod(s) evicted" + (f" ({names})" if names else "")
            if warnings:
                message += "; Warning: " + "; ".join(warnings)
            return MutationResult(
                changed=cordon.changed or bool(pods),
                message=message,
                requests=requests,
                resource_version_before=cordon.resource_version_before,
                resource_version_after=cordon.resource_version_after,
                state_before={**cordon.state_before, "pods": [p["metadata"]["name"] for p in pods]},
                state_after={"unschedulable": True, "evicted": [p["metadata"]["name"] for p in evicted]},
                undo=undo,
            )

    def _pods_for_deletion(self, node: str, params: DrainParams) -> tuple[list[dict[str, Any]], list[str]]:
        """kubectl drain ``GetPodsForDeletion``: list the Node's pods, run kubectl's filters.

        Returns (pods to evict, warnings). Raises SafetyRefusal with kubectl's aggregated
        error text when any pod is refused.
        """
        listed = self._call(
            f"LIST pods on node {node}",
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            label_selector=params.pod_selector or None,
        )
        to_delete: list[dict[str, Any]] = []
        warnings: dict[str, list[str]] = {}
        errors: dict[str, list[str]] = {}
        for pod in listed.get("items") or []:
            delete, reason, message = True, "Okay", ""
            for f in (self._daemonset_filter, self._mirror_pod_filter, self._local_storage_filter, self._unreplicated_filter):
                delete, reason, message = f(pod, params)
                if not delete:
                    break
            key = f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
            if reason == "Warning":
                warnings.setdefault(message, []).append(key)
            elif reason == "Error":
                errors.setdefault(message or "unexpected error", []).append(key)
            if delete:
                to_delete.append(pod)
        if errors:
            texts = []
            for msg, keys in errors.items():
                prefix = msg if msg.lower().startswith("cannot delete") else f"cannot delete {msg}"
                texts.append(f"{prefix}: {', '.join(keys)}")
            # utilerrors.NewAggregate: one error as is, several as "[a, b]".
            raise SafetyRefusal(texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]")
        return to_delete, [f"{msg}: {', '.join(keys)}" for msg, keys in warnings.items()]

    @staticmethod
    def _finished(pod: dict[str, Any]) -> bool:
        return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    def _daemonset_filter(self, pod: dict[str, Any], params: DrainParams) -> tuple[bool, str, str]:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "DaemonSet":
            return True, "Okay", ""
        if self._finished(pod):
            return True, "Okay", ""
        namespace = pod["metadata"].get("namespace")
        try:
            self.apps.read_namespaced_daemon_set(ref["name"], namespace, _preload_content=False)
        except ApiException as exc:
            message = f'daemonsets.apps "{ref["name"]}" not found' if exc.status == 404 else classify(exc).message
            if exc.status == 404 and params.force:
                return True, "Warning", message
            if exc.status == 404:
                return False, "Error", message
            raise
        if not params.ignore_daemonsets:
            return False, "Error", DAEMONSET_FATAL
        return False, "Warning", DAEMONSET_WARNING

    @staticmethod
    def _mirror_pod_filter(pod: dict[str, Any], params: DrainParams) -> tuple[bool, str, str]:
        if MIRROR_POD in ((pod.get("metadata") or {}).get("annotations") or {}):
            return False, "Skip", ""
        return True, "Okay", ""

    def _local_storage_filter(self, pod: dict[str, Any], params: DrainParams) -> tuple[bool, str, str]:
        volumes = (pod.get("spec") or {}).get("volumes") or []
        if not any(v.get("emptyDir") is not None for v in volumes):
            return True, "Okay", ""
        if self._finished(pod):
            return True, "Okay", ""
        if not params.delete_emptydir_data:
            return False, "Error", LOCAL_STORAGE_FATAL
        return True, "Warning", LOCAL_STORAGE_WARNING

    def _unreplicated_filter(self, pod: dict[str, Any], params: DrainParams) -> tuple[bool, str, str]:
        if self._finished(pod):
            return True, "Okay", ""
        if controller_of(pod) is not None:
            return True, "Okay", ""
        if params.force:
            return True, "Warning", UNMANAGED_WARNING
        return False, "Error", UNMANAGED_FATAL

    @staticmethod
    def eviction_body(pod: dict[str, Any], grace_period_seconds: int) -> dict[str, Any]:
        """The policy/v1 Eviction kubectl drain builds (drain.go ``EvictPod``/``makeDeleteOptions``)."""
        delete_options: dict[str, Any] = {}
        if grace_period_seconds >= 0:
            delete_options["gracePeriodSeconds"] = grace_period_seconds
        return {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
            "deleteOptions": delete_options,
        }

    def _drain_timeout(
        self, message: str, requests: list[KubeRequest], undo: UndoAction | None
    ) -> ApplicationError:
        return ApplicationError(
            message,
            {"requests": [r.model_dump() for r in requests], "undo": undo.model_dump() if undo else None},
            type=DRAIN_TIMEOUT,
            non_retryable=True,
        )

    def _evict_all(
        self,
        pods: list[dict[str, Any]],
        params: DrainParams,
        deadline: float,
        timeout: float,
        requests: list[KubeRequest],
        undo: UndoAction | None,
        progress: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Evict every pod; 429 retried until the deadline, 404 counted as gone. Returns the
        pods whose eviction was accepted (to wait for)."""
        pending = list(pods)
        accepted: list[dict[str, Any]] = []
        while pending:
            refused: list[dict[str, Any]] = []
            for pod in pending:
                name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
                if time.monotonic() >= deadline:
                    raise self._drain_timeout(
                        f'error when evicting pods/"{name}" -n "{namespace}": global timeout reached: '
                        f"{go_duration(timeout)}",
                        requests,
                        undo,
                    )
                body = self.eviction_body(pod, params.grace_period_seconds)
                request = KubeRequest(
                    method="POST", path=f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", content_type=JSON, body=body
                )
                _log().info("evicting pod %s/%s", namespace, name)
                try:
                    self.core.create_namespaced_pod_eviction(
                        name, namespace, body, field_manager=FIELD_MANAGER, _headers=JSON_BODY, _preload_content=False
                    )
                except ApiException as exc:
                    if exc.status == 404:
                        continue
                    if exc.status == 429:
                        _log().warning(
                            'error when evicting pods/"%s" -n "%s" (will retry after %s): %s',
                            name,
                            namespace,
                            go_duration(self.eviction_retry_delay),
                            classify(exc).message,
                        )
                        refused.append(pod)
                        continue
                    raise classify(exc, f'error when evicting pods/"{name}" -n "{namespace}"') from exc
                requests.append(request)
                accepted.append(pod)
                progress["evicted"] += 1
            pending = refused
            _heartbeat({**progress, "waiting_for_eviction": [p["metadata"]["name"] for p in pending]})
            if pending:
                if time.monotonic() + self.eviction_retry_delay > deadline:
                    # The next attempt would start after the deadline: fail now, as kubectl's
                    # context deadline would.
                    _sleep(max(0.0, deadline - time.monotonic()))
                else:
                    _sleep(self.eviction_retry_delay)
        return accepted

    def _wait_for_delete(
        self,
        pods: list[dict[str, Any]],
        deadline: float,
        timeout: float,
        requests: list[KubeRequest],
        undo: UndoAction | None,
        progress: dict[str, Any],
    ) -> None:
        """kubectl ``waitForDelete``: poll each pod until 404 or its UID changed."""
        pending = list(pods)
        while True:
            still = []
            for pod in pending:
                name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
                try:
                    current = self._json(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
                except ApiException as exc:
                    if exc.status == 404:
                        continue
                    raise classify(exc, f"GET pod {namespace}/{name}") from exc
                if current.get("metadata", {}).get("uid") != pod["metadata"].get("uid"):
                    continue
                still.append(pod)
            pending = still
            progress["gone"] = len(pods) - len(pending)
            _heartbeat({**progress, "waiting_for_delete": [p["metadata"]["name"] for p in pending]})
            if not pending:
                return
            if time.monotonic() >= deadline:
                pod = pending[0]
                raise self._drain_timeout(
                    f'error when waiting for pod "{pod["metadata"]["name"]}" in namespace '
                    f'"{pod["metadata"]["namespace"]}" to terminate: global timeout reached: {go_duration(timeout)}',
                    requests,
                    undo,
                )
            _sleep(min(self.delete_poll_interval, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ delete_pod

    @activity.defn
    def delete_pod(self, input: MutationInput) -> MutationResult:
        """``kubectl delete pod`` for one pod of the target, guarded by a UID precondition.

        ``params`` (DeletePodParams): ``pod`` in the target's namespace. The pod must belong
        to the target: controller chain pod -> ReplicaSet -> Deployment, or pod ->
        StatefulSet/DaemonSet, matched by name and UID. Sends ``DELETE`` with kubectl's
        DeleteOptions (``propagationPolicy: Background``, ``gracePeriodSeconds`` when >= 0)
        plus ``preconditions.uid`` of the pod just read, so a retry never deletes its
        replacement (a StatefulSet pod comes back with the same name). 404 on a retried
        attempt, or a different UID, means the first attempt's delete happened. No undo.

        Raises:
            ApplicationError: ``SafetyRefusal`` when the pod does not belong to the target;
                ``KubePermanentError`` when it does not exist; API errors as classified.
        """
        target = input.target
        with api_errors(f"delete_pod {target.key}"):
            _check_kind("delete_pod", target)
            params = _params(DeletePodParams, input.params, "delete_pod")
            namespace, name = target.namespace, params.pod
            path = f"/api/v1/namespaces/{namespace}/pods/{name}"
            earlier = _previous_attempt(input.request_id)
            try:
                pod = self._json(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
            except ApiException as exc:
                if exc.status == 404 and earlier and earlier.get("action") == "delete_pod":
                    return self._deleted_earlier(earlier, path)
                raise classify(exc, f"GET pod {namespace}/{name}") from exc
            uid = pod["metadata"].get("uid")
            rv = str(pod["metadata"].get("resourceVersion", ""))
            if earlier and earlier.get("action") == "delete_pod" and earlier.get("uid") != uid:
                return self._deleted_earlier(earlier, path)
            self._check_pod_owner(target, pod)

            body: dict[str, Any] = {}
            if params.grace_period_seconds >= 0:
                body["gracePeriodSeconds"] = params.grace_period_seconds
            body["preconditions"] = {"uid": uid}
            body["propagationPolicy"] = "Background"
            request = KubeRequest(method="DELETE", path=path, content_type=JSON, body=body)
            _heartbeat({"request_id": input.request_id, "action": "delete_pod", "uid": uid, "body": body})
            _log().info("DELETE %s %s", path, json.dumps(body))
            try:
                self.core.delete_namespaced_pod(
                    name, namespace, body=body, _headers=JSON_BODY, _preload_content=False
                )
            except ApiException as exc:
                if exc.status == 404 and earlier:
                    return self._deleted_earlier({"uid": uid, "body": body}, path)
                raise classify(exc, f"DELETE pod {namespace}/{name}") from exc
            return MutationResult(
                changed=True,
                message=f'pod "{name}" deleted',
                requests=[request],
                resource_version_before=rv,
                state_before={"pod": name, "uid": uid, "phase": (pod.get("status") or {}).get("phase")},
                state_after={"pod": name, "deleted_uid": uid},
            )

    @staticmethod
    def _deleted_earlier(earlier: dict[str, Any], path: str) -> MutationResult:
        return MutationResult(
            changed=True,
            message=f"pod with uid {earlier.get('uid')} already deleted (by an earlier attempt)",
            requests=[KubeRequest(method="DELETE", path=path, content_type=JSON, body=earlier.get("body"))],
            state_after={"deleted_uid": earlier.get("uid")},
        )

    def _check_pod_owner(self, target: TargetRef, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        owner = self._get(target)
        owner_uid = owner["metadata"].get("uid")
        ref = controller_of(pod)
        chain = f"pod {target.namespace}/{name}"

        def refuse(detail: str) -> SafetyRefusal:
            return SafetyRefusal(f"{chain} does not belong to {target.key}: {detail}")

        if ref is None:
            raise refuse("it declares no controller")
        if target.kind == "Deployment":
            if ref.get("kind") != "ReplicaSet":
                raise refuse(f"it is controlled by {ref.get('kind')}/{ref.get('name')}")
            rs = self._call(
                f"GET replicaset {target.namespace}/{ref['name']}",
                self.apps.read_namespaced_replica_set,
                ref["name"],
                target.namespace,
            )
            if rs["metadata"].get("uid") != ref.get("uid"):
                raise refuse(f"its ReplicaSet {ref['name']} was replaced")
            rs_ref = controller_of(rs)
            if not rs_ref or rs_ref.get("kind") != "Deployment" or rs_ref.get("uid") != owner_uid:
                owner_text = f"{rs_ref.get('kind')}/{rs_ref.get('name')}" if rs_ref else "nothing"
                raise refuse(f"its ReplicaSet {ref['name']} is controlled by {owner_text}")
            return
        if ref.get("kind") != target.kind or ref.get("uid") != owner_uid:
            raise refuse(f"it is controlled by {ref.get('kind')}/{ref.get('name')}")
