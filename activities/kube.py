"""Kubernetes actions as Temporal activities: what kubectl would send, and nothing else.

``KubeActivities`` is built once by ``worker.py`` with the ApiClient from
``remediator.k8s.client.load_api_client`` and its bound methods are registered as activities
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

Every change is planned before it is sent: ``plan_mutation`` reads the object, refuses what
kubectl refuses (``SafetyRefusal``) and fixes the concrete change (``MutationPlan``: absolute
replicas, the rollback's revision and patch, the pod UID...); the workflow records the plan
in its history and in the audit trail, then runs the action's activity with it. That
activity re-reads the object and sends the planned request only when the object still shows
the planned starting point: an object that already shows the change was changed by an
earlier attempt whose completion was lost (``already_applied``, nothing sent again), and one
that shows neither is refused. So a retried scale or rollback never applies twice, whenever
the worker died. Every mutating request is recorded exactly as sent.

Reads use the typed APIs with ``_preload_content=False`` so the object is seen exactly as
the API server sent it (no field dropped by model conversion); patches choose their type
with ``_content_type=``. All API errors go through ``remediator.k8s.errors.api_errors``.
"""

from __future__ import annotations

import copy
import hashlib
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

from remediator.k8s.errors import DRAIN_TIMEOUT, KubePermanentError, SafetyRefusal, api_errors, classify
from remediator.domain.messages import (
    DescribeTargetInput,
    KubeRequest,
    MutationInput,
    MutationPlan,
    MutationPlanInput,
    MutationResult,
    TargetRef,
    TargetState,
    UndoAction,
)
from remediator.domain.playbook import ACTION_KINDS, DeletePodParams, DrainParams, RollbackParams, ScaleParams

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


def _cordon_body(desired: bool) -> dict[str, Any]:
    """kubectl's cordon/uncordon patch: ``true``, or ``null`` to delete the omitempty field."""
    return {"spec": {"unschedulable": True if desired else None}}


def _restarted_at(spec: dict[str, Any]) -> str | None:
    return (((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)


def _refuse_paused_restart(target: TargetRef, spec: dict[str, Any]) -> None:
    if target.kind == "Deployment" and spec.get("paused"):
        raise SafetyRefusal("can't restart paused deployment (run rollout resume first)")


def _refuse_paused_rollback(deployment: dict[str, Any]) -> None:
    if (deployment.get("spec") or {}).get("paused"):
        raise SafetyRefusal(
            "you cannot rollback a paused deployment; resume it first with "
            "'kubectl rollout resume' and try again"
        )


def template_sha256(template: dict[str, Any]) -> str:
    """sha256 of a pod template as kubectl's rollback compares templates (``equalIgnoreHash``):
    without the ``pod-template-hash`` label, nil and empty alike. Hex digest."""
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH, None)
    text = json.dumps(_semantic(t), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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

    # ------------------------------------------------------------------ plan

    @activity.defn
    def plan_mutation(self, input: MutationPlanInput) -> MutationPlan:
        """Decide the concrete change of one action from one read of the target; sends nothing.

        The workflow calls this before every mutating activity; the plan is recorded in its
        history and in the audit trail, then handed to the action's activity, which applies
        exactly that change (see ``MutationPlan``): an absolute replica count, the revision and
        the very JSON patch of a rollback, the ``restartedAt`` value, the pod UID, whether the
        node was already cordoned. kubectl's refusals are raised here, before anything is sent.

        Raises:
            ApplicationError: ``SafetyRefusal`` with kubectl's refusals (paused rollout, no
                rollout history, pods a drain would refuse...); ``KubePermanentError`` for an
                unknown action, a kind the action does not act on, or invalid params; API
                errors as classified.
        """
        target = input.target
        with api_errors(f"plan {input.action} {target.key}"):
            planner = self._planners().get(input.action)
            if planner is None:
                raise KubePermanentError(f"unknown action {input.action!r}; known: {', '.join(sorted(self._planners()))}")
            _check_kind(input.action, target)
            return planner(input)

    def _planners(self) -> dict[str, Callable[[MutationPlanInput], MutationPlan]]:
        return {
            "rollout_restart": self._plan_rollout_restart,
            "scale": self._plan_scale,
            "rollback": self._plan_rollback,
            "cordon": lambda i: self._plan_cordon(i, True),
            "uncordon": lambda i: self._plan_cordon(i, False),
            "drain": self._plan_drain,
            "delete_pod": self._plan_delete_pod,
        }

    def _apply(self, action: str, input: MutationInput, apply: Callable[[MutationPlan], MutationResult]) -> MutationResult:
        """Apply ``input.plan``; a run started before plans existed sends params instead, and
        gets a plan made here first."""
        target = input.target
        with api_errors(f"{action} {target.key}"):
            _check_kind(action, target)
            plan = input.plan
            if plan is None:
                now = input.now or datetime.now(timezone.utc)
                plan = self._planners()[action](MutationPlanInput(target=target, action=action, params=input.params, now=now))
            if plan.action != action or plan.target != target:
                raise KubePermanentError(f"{action} {target.key} was given a plan for {plan.action} {plan.target.key}")
            return plan.unchanged() if plan.noop else apply(plan)

    @staticmethod
    def _already(plan: MutationPlan, resource_version: str, state_after: dict[str, Any], message: str) -> MutationResult:
        """The target already shows the planned change: an earlier attempt of this activity
        applied it (its completion was lost to a crash or a timeout). Nothing is sent again."""
        return MutationResult(
            changed=True,
            already_applied=True,
            message=f"{message} (found applied by an earlier attempt; nothing sent again)",
            resource_version_before=plan.resource_version,
            resource_version_after=resource_version,
            state_before=plan.state_before,
            state_after=state_after,
            undo=plan.undo,
        )

    # ------------------------------------------------------------------ rollout_restart

    @activity.defn
    def rollout_restart(self, input: MutationInput) -> MutationResult:
        """``kubectl rollout restart``: stamp ``kubectl.kubernetes.io/restartedAt`` on the pod template.

        Strategic-merge patch
        ``{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":T}}}}}``
        with T from the plan (the workflow's time in RFC 3339; kubectl stamps ``time.Now()``).
        Nothing is sent when the template already carries T. No undo: a restart cannot be
        taken back.

        Raises:
            ApplicationError: ``SafetyRefusal`` "can't restart paused deployment (run rollout
                resume first)" (kubectl objectrestarter.go); API errors as classified.
        """
        return self._apply("rollout_restart", input, self._apply_rollout_restart)

    def _plan_rollout_restart(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        obj = self._get(target)
        spec = obj.get("spec") or {}
        _refuse_paused_restart(target, spec)
        value = rfc3339(input.now)
        current = _restarted_at(spec)
        rv = str(obj["metadata"].get("resourceVersion", ""))
        before = {"restartedAt": current, "generation": obj["metadata"].get("generation")}
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: value}}}}}
        return MutationPlan(
            action="rollout_restart",
            target=target,
            params=input.params,
            noop=current == value,
            message=(
                f"{target.key} already restarted at {value}"
                if current == value
                else f"restart every pod of {target.key}: {RESTARTED_AT}={value} on its pod template (kubectl rollout restart)"
            ),
            change={"restartedAt": value},
            precondition={"restartedAt": current},
            requests=[KubeRequest(method="PATCH", path=self._path(target), content_type=STRATEGIC_MERGE_PATCH, body=body)],
            resource_version=rv,
            state_before=before,
        )

    def _apply_rollout_restart(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        obj = self._get(target)
        spec = obj.get("spec") or {}
        value = plan.change["restartedAt"]
        rv = str(obj["metadata"].get("resourceVersion", ""))
        if _restarted_at(spec) == value:
            state = {"restartedAt": value, "generation": obj["metadata"].get("generation")}
            return self._already(plan, rv, state, f"{target.key} already restarted at {value}")
        _refuse_paused_restart(target, spec)
        request, after = self._patch(target, plan.requests[0].body, STRATEGIC_MERGE_PATCH)
        return MutationResult(
            changed=True,
            message=f"{target.kind.lower()}.apps/{target.name} restarted",
            requests=[request],
            resource_version_before=rv,
            resource_version_after=str(after.get("metadata", {}).get("resourceVersion", "")),
            state_before=plan.state_before,
            state_after={"restartedAt": value, "generation": after.get("metadata", {}).get("generation")},
        )

    # ------------------------------------------------------------------ scale

    @activity.defn
    def scale(self, input: MutationInput) -> MutationResult:
        """``kubectl scale --current-replicas=FROM --replicas=TO`` through the scale subresource.

        The plan reads ``spec.replicas`` (FROM) and fixes TO: ``replicas`` (absolute) or
        ``delta`` (relative to FROM), clamped into [``min_replicas``, ``max_replicas``] (the
        message says when it clamped). Applying it does what kubectl's scaler does with a
        precondition (pkg/scale/scale.go ``ScaleSimple``): ``GET .../scale``, check that
        ``spec.replicas`` is still FROM, ``PUT .../scale`` with that Scale object (its
        ``resourceVersion`` makes the write conditional) and ``spec.replicas`` = TO. A retry
        that finds TO already set sends nothing, so a delta is never applied twice. Undo:
        scale back to FROM.

        Raises:
            ApplicationError: ``SafetyRefusal`` "Expected replicas to be FROM, was N" (kubectl's
                ``PreconditionError``) when something else changed the replicas since the plan;
                ``KubePermanentError`` for bad params or kinds; API errors as classified (409 on
                a concurrent write is retried and re-checked).
        """
        return self._apply("scale", input, self._apply_scale)

    def _plan_scale(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        params = _params(ScaleParams, input.params, "scale")
        scale = self._get_scale(target)
        rv = str(scale["metadata"].get("resourceVersion", ""))
        current = int((scale.get("spec") or {}).get("replicas", 0))
        wanted = _as_int(params.replicas, "replicas") if params.replicas is not None else current + _as_int(params.delta, "delta")
        desired = min(max(wanted, params.min_replicas), params.max_replicas)
        note = ""
        if desired != wanted:
            bound = "max_replicas" if wanted > params.max_replicas else "min_replicas"
            note = f" (clamped from {wanted} to {bound} {desired})"
        body = copy.deepcopy(scale)
        body.setdefault("spec", {})["replicas"] = desired
        return MutationPlan(
            action="scale",
            target=target,
            params=input.params,
            noop=current == desired,
            message=(
                f"{target.key} already at {desired} replicas{note}"
                if current == desired
                else f"scale {target.key} from {current} to {desired} replicas{note} "
                f"(kubectl scale --current-replicas={current} --replicas={desired})"
            ),
            change={"replicas": desired},
            precondition={"replicas": current},
            requests=[KubeRequest(method="PUT", path=self._path(target, "scale"), body=body)],
            resource_version=rv,
            state_before={"replicas": current},
            undo=UndoAction(
                action="scale",
                params={"replicas": current, "min_replicas": current, "max_replicas": max(current, 1)},
                description=f"scale {target.key} back to {current} replicas",
            ),
        )

    def _apply_scale(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        desired, expected = int(plan.change["replicas"]), int(plan.precondition["replicas"])
        scale = self._get_scale(target)
        rv = str(scale["metadata"].get("resourceVersion", ""))
        actual = int((scale.get("spec") or {}).get("replicas", 0))
        if actual == desired:
            return self._already(plan, rv, {"replicas": actual}, f"{target.key} already at {desired} replicas")
        if actual != expected:
            raise SafetyRefusal(
                f"scale {target.key}: Expected replicas to be {expected}, was {actual}: the replicas changed "
                f"since the plan to scale to {desired}; nothing sent"
            )
        scale.setdefault("spec", {})["replicas"] = desired
        request, updated = self._put_scale(target, scale)
        return MutationResult(
            changed=True,
            message=f"{target.kind.lower()}.apps/{target.name} scaled from {expected} to {desired}",
            requests=[request],
            resource_version_before=rv,
            resource_version_after=str(updated.get("metadata", {}).get("resourceVersion", "")),
            state_before=plan.state_before,
            state_after={"replicas": (updated.get("spec") or {}).get("replicas", desired)},
            undo=plan.undo,
        )

    def _get_scale(self, target: TargetRef) -> dict[str, Any]:
        read = {
            "Deployment": self.apps.read_namespaced_deployment_scale,
            "StatefulSet": self.apps.read_namespaced_stateful_set_scale,
        }[target.kind]
        return self._call(f"GET {target.key}/scale", read, target.name, target.namespace)

    def _put_scale(self, target: TargetRef, scale: dict[str, Any]) -> tuple[KubeRequest, dict[str, Any]]:
        # Like kubectl's scale client, no Content-Type header (the API server reads JSON). Sent
        # through the ApiClient's own request path: the typed replace_*_scale methods validate
        # the body into a V1Scale model and re-encode it, which would not be the Scale as read.
        path = self._path(target, "scale")
        request = KubeRequest(method="PUT", path=path, body=scale)
        _log().info("PUT %s %s", path, json.dumps(scale))
        with api_errors(f"PUT {target.key}/scale"):
            params = self.api_client.param_serialize(
                method="PUT",
                resource_path=path,
                query_params=[("fieldManager", FIELD_MANAGER)],
                header_params={"Accept": JSON},
                body=scale,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*params)
            response.read()
            updated = self.api_client.response_deserialize(response, {"200": "object", "201": "object"}).data
        return request, updated if isinstance(updated, dict) else {}

    # ------------------------------------------------------------------ rollback

    @activity.defn
    def rollback(self, input: MutationInput) -> MutationResult:
        """``kubectl rollout undo`` for a Deployment (kubectl rollback.go ``DeploymentRollbacker``).

        The plan lists the ReplicaSets the Deployment controls, picks ``to_revision`` (0: the
        second highest revision, i.e. the previous one) and builds kubectl's JSON patch:
        replace ``/spec/template`` with that ReplicaSet's template minus the
        ``pod-template-hash`` label, and replace ``/metadata/annotations`` with the
        Deployment's own revision-bookkeeping annotations plus the ReplicaSet's other
        annotations. It is a no-op ("skipped rollback (current template already matches
        revision N)") when the template already matches.

        Applying it re-reads the Deployment: a template that already equals the planned one
        means an earlier attempt rolled back (nothing is sent; "previous" would now name the
        bad revision again, which is why the revision is fixed in the plan); a template and
        revision still as planned get the patch; anything else is refused. Undo: roll back to
        the revision that was current before.

        Raises:
            ApplicationError: ``SafetyRefusal`` with kubectl's messages: 'no rollout history
                found for deployment "x"', "unable to find specified revision N in history",
                "you cannot rollback a paused deployment; resume it first with 'kubectl rollout
                resume' and try again" (kubectl 1.32's wording), or when the Deployment changed
                since the plan; API errors as classified.
        """
        return self._apply("rollback", input, self._apply_rollback)

    def _plan_rollback(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        params = _params(RollbackParams, input.params, "rollback")
        deployment = self._get(target)
        meta = deployment["metadata"]
        rv = str(meta.get("resourceVersion", ""))
        current_revision = _revision_of(deployment)
        template = (deployment.get("spec") or {}).get("template") or {}
        rs = self._revision_replica_set(target, deployment, params.to_revision)
        revision = _revision_of(rs)
        _refuse_paused_rollback(deployment)
        rs_template = (rs.get("spec") or {}).get("template") or {}
        precondition = {"revision": current_revision, "template_sha256": template_sha256(template)}
        before = {"revision": current_revision}
        if equal_ignore_hash(rs_template, template):
            return MutationPlan(
                action="rollback", target=target, params=input.params, noop=True,
                message=f"skipped rollback (current template already matches revision {revision})",
                change={"revision": revision}, precondition=precondition, resource_version=rv, state_before=before,
            )
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
        flag = f" --to-revision={params.to_revision}" if params.to_revision else ""
        return MutationPlan(
            action="rollback",
            target=target,
            params=input.params,
            message=f"roll {target.key} back from revision {current_revision} to revision {revision} (kubectl rollout undo{flag})",
            change={"revision": revision, "patch": patch},
            precondition=precondition,
            requests=[KubeRequest(method="PATCH", path=self._path(target), content_type=JSON_PATCH, body=patch)],
            resource_version=rv,
            state_before=before,
            undo=undo,
        )

    def _apply_rollback(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        deployment = self._get(target)
        rv = str(deployment["metadata"].get("resourceVersion", ""))
        template = (deployment.get("spec") or {}).get("template") or {}
        current_revision = _revision_of(deployment)
        revision, patch = plan.change["revision"], plan.change["patch"]
        if equal_ignore_hash(patch[0]["value"], template):
            state = {"revision": current_revision, "template_revision": revision}
            return self._already(plan, rv, state, f"{target.key} already rolled back to revision {revision}")
        _refuse_paused_rollback(deployment)
        expected = plan.precondition
        if current_revision != expected.get("revision") or template_sha256(template) != expected.get("template_sha256"):
            raise SafetyRefusal(
                f"rollback of {target.key} to revision {revision}: the Deployment changed since the rollback "
                f"was planned (revision {expected.get('revision')}, now {current_revision}); nothing sent"
            )
        request, after = self._patch(target, patch, JSON_PATCH)
        return MutationResult(
            changed=True,
            message=f"deployment.apps/{target.name} rolled back to revision {revision}",
            requests=[request],
            resource_version_before=rv,
            resource_version_after=str(after.get("metadata", {}).get("resourceVersion", "")),
            state_before=plan.state_before,
            state_after={"revision": _revision_of(after), "template_revision": revision},
            undo=plan.undo,
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

        As kubectl's CordonHelper, nothing is sent when the Node is already unschedulable
        (the plan is then a no-op, or an earlier attempt did it). Undo: uncordon.
        """
        return self._apply("cordon", input, self._apply_cordon)

    @activity.defn
    def uncordon(self, input: MutationInput) -> MutationResult:
        """``kubectl uncordon``: strategic-merge patch ``{"spec":{"unschedulable":null}}``.

        kubectl computes a two-way merge patch between the Node with and without
        ``unschedulable`` (an omitempty bool), which deletes the field: hence ``null``, not
        ``false``. Nothing is sent when the Node is already schedulable. Undo: cordon.
        """
        return self._apply("uncordon", input, self._apply_cordon)

    def _plan_cordon(self, input: MutationPlanInput, desired: bool) -> MutationPlan:
        target = input.target
        action, opposite = ("cordon", "uncordon") if desired else ("uncordon", "cordon")
        node = self._get(target)
        current = bool((node.get("spec") or {}).get("unschedulable", False))
        verb = "cordoned" if desired else "uncordoned"
        return MutationPlan(
            action=action,
            target=target,
            params=input.params,
            noop=current == desired,
            message=f"node/{target.name} already {verb}" if current == desired else f"{action} node/{target.name} (kubectl {action})",
            change={"unschedulable": desired},
            precondition={"unschedulable": current},
            requests=[KubeRequest(method="PATCH", path=self._path(target), content_type=STRATEGIC_MERGE_PATCH, body=_cordon_body(desired))],
            resource_version=str(node["metadata"].get("resourceVersion", "")),
            state_before={"unschedulable": current},
            undo=UndoAction(action=opposite, description=f"{opposite} {target.key}"),
        )

    def _apply_cordon(self, plan: MutationPlan) -> MutationResult:
        result = self._cordon_node(plan.target, bool(plan.change["unschedulable"]))
        if not result.changed:
            return self._already(plan, result.resource_version_after, result.state_after, result.message)
        result.undo = plan.undo
        return result

    def _cordon_node(self, target: TargetRef, desired: bool) -> MutationResult:
        """GET the Node, PATCH ``spec.unschedulable`` unless it already is ``desired`` (kubectl
        CordonHelper.UpdateIfRequired)."""
        node = self._get(target)
        rv = str(node["metadata"].get("resourceVersion", ""))
        current = bool((node.get("spec") or {}).get("unschedulable", False))
        before = {"unschedulable": current}
        verb = "cordoned" if desired else "uncordoned"
        if current == desired:
            return MutationResult(
                changed=False, message=f"node/{target.name} already {verb}", resource_version_before=rv,
                resource_version_after=rv, state_before=before, state_after=before,
            )
        request, after = self._patch(target, _cordon_body(desired), STRATEGIC_MERGE_PATCH)
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
        evicted, as kubectl does. The plan runs the filters first, so a refusal comes before
        anything is sent; they run again after cordoning, as kubectl does, and if a pod that
        arrived in between is refused, the cordon is undone before refusing.

        Each pod gets ``POST pods/{name}/eviction`` with a policy/v1 Eviction
        (``deleteOptions.gracePeriodSeconds`` when ``grace_period_seconds`` >= 0). A 429
        (PodDisruptionBudget) is retried every ``eviction_retry_delay`` seconds until
        ``timeout``, heartbeating; a pod is never deleted instead. 404 means already gone; a
        pod already terminating (an earlier attempt evicted it) is waited for, not evicted
        again. Then waits until every evicted pod is gone (404 or a new UID, kubectl
        waitForDelete).

        Undo: uncordon, when the Node was schedulable when the drain was planned, whichever
        attempt cordoned it.

        Raises:
            ApplicationError: ``SafetyRefusal`` with kubectl's filter errors, e.g.
                "cannot delete Pods that declare no controller (use --force to override):
                default/web"; ``DrainTimeout`` (non-retryable, details carry the requests sent
                and the undo) when evictions or deletions did not finish in ``timeout``;
                API errors as classified.
        """
        return self._apply("drain", input, self._apply_drain)

    def _plan_drain(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        params = _params(DrainParams, input.params, "drain")
        node = self._get(target)
        was_unschedulable = bool((node.get("spec") or {}).get("unschedulable", False))
        pods, warnings = self._pods_for_deletion(target.name, params)  # refuse before anything is sent
        names = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]
        requests = [] if was_unschedulable else [
            KubeRequest(method="PATCH", path=self._path(target), content_type=STRATEGIC_MERGE_PATCH, body=_cordon_body(True))
        ]
        for pod in pods:
            requests.append(self._eviction_request(pod, params.grace_period_seconds))
        message = (
            f"drain node/{target.name}: " + ("" if was_unschedulable else "cordon it, then ")
            + f"evict {len(pods)} pod(s) through the Eviction API (kubectl drain)"
            + (f": {', '.join(names)}" if names else "")
            + ("; Warning: " + "; ".join(warnings) if warnings else "")
        )
        nothing = was_unschedulable and not pods
        return MutationPlan(
            action="drain",
            target=target,
            params=input.params,
            noop=nothing,
            message=f"node/{target.name} already cordoned, with no pod to evict" if nothing else message,
            change={"unschedulable": True, "evict": names},
            precondition={"unschedulable": was_unschedulable},
            requests=requests,
            resource_version=str(node["metadata"].get("resourceVersion", "")),
            state_before={"unschedulable": was_unschedulable, "pods": [p["metadata"]["name"] for p in pods]},
            undo=None if was_unschedulable else UndoAction(action="uncordon", description=f"uncordon {target.key}"),
        )

    def _apply_drain(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        params = _params(DrainParams, plan.params, "drain")
        timeout = params.timeout.total_seconds()
        deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
        undo = plan.undo

        self._pods_for_deletion(target.name, params)  # refuse before this attempt sends anything
        cordon = self._cordon_node(target, True)
        requests = list(cordon.requests)
        try:
            pods, warnings = self._pods_for_deletion(target.name, params)
        except SafetyRefusal:
            if undo is not None:
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
        result = MutationResult(
            changed=True,
            message=message,
            requests=requests,
            resource_version_before=cordon.resource_version_before,
            resource_version_after=cordon.resource_version_after,
            state_before=plan.state_before,
            state_after={"unschedulable": True, "evicted": [p["metadata"]["name"] for p in evicted]},
            undo=undo,
        )
        if not requests:
            return self._already(plan, cordon.resource_version_after, result.state_after, message)
        return result

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

    def _eviction_request(self, pod: dict[str, Any], grace_period_seconds: int) -> KubeRequest:
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        return KubeRequest(
            method="POST",
            path=f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
            content_type=JSON,
            body=self.eviction_body(pod, grace_period_seconds),
        )

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
                if (pod.get("metadata") or {}).get("deletionTimestamp"):
                    # Already terminating: evicted by an earlier attempt of this drain (or
                    # deleted by someone else). Wait for it; evicting again would change nothing.
                    accepted.append(pod)
                    continue
                request = self._eviction_request(pod, params.grace_period_seconds)
                _log().info("evicting pod %s/%s", namespace, name)
                try:
                    self.core.create_namespaced_pod_eviction(
                        name, namespace, request.body, field_manager=FIELD_MANAGER, _headers=JSON_BODY, _preload_content=False
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

        ``params`` (DeletePodParams): ``pod`` in the target's namespace. The plan reads the pod
        and checks it belongs to the target: controller chain pod -> ReplicaSet -> Deployment,
        or pod -> StatefulSet/DaemonSet, matched by name and UID. Applying it sends ``DELETE``
        with kubectl's DeleteOptions (``propagationPolicy: Background``, ``gracePeriodSeconds``
        when >= 0) plus ``preconditions.uid`` of the planned pod, so a retry never deletes its
        replacement (a StatefulSet pod comes back with the same name): a pod that is gone or has
        another UID was deleted already, and nothing is sent. No undo.

        Raises:
            ApplicationError: ``SafetyRefusal`` when the pod does not belong to the target;
                ``KubePermanentError`` when it does not exist; API errors as classified.
        """
        return self._apply("delete_pod", input, self._apply_delete_pod)

    def _plan_delete_pod(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        params = _params(DeletePodParams, input.params, "delete_pod")
        namespace, name = target.namespace, params.pod
        pod = self._call(f"GET pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace)
        self._check_pod_owner(target, pod)
        uid = pod["metadata"].get("uid")
        body: dict[str, Any] = {}
        if params.grace_period_seconds >= 0:
            body["gracePeriodSeconds"] = params.grace_period_seconds
        body["preconditions"] = {"uid": uid}
        body["propagationPolicy"] = "Background"
        return MutationPlan(
            action="delete_pod",
            target=target,
            params=input.params,
            message=f"delete pod {namespace}/{name} (uid {uid}) of {target.key} (kubectl delete pod)",
            change={"deleted_uid": uid},
            precondition={"uid": uid},
            requests=[KubeRequest(method="DELETE", path=f"/api/v1/namespaces/{namespace}/pods/{name}", content_type=JSON, body=body)],
            resource_version=str(pod["metadata"].get("resourceVersion", "")),
            state_before={"pod": name, "uid": uid, "phase": (pod.get("status") or {}).get("phase")},
        )

    def _apply_delete_pod(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        request = plan.requests[0]
        namespace, name, uid = target.namespace, plan.state_before["pod"], plan.precondition["uid"]
        gone = self._already(plan, "", {"pod": name, "deleted_uid": uid}, f"pod {namespace}/{name} with uid {uid} already deleted")
        try:
            pod = self._json(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return gone
            raise classify(exc, f"GET pod {namespace}/{name}") from exc
        if pod["metadata"].get("uid") != uid:
            return gone
        _log().info("DELETE %s %s", request.path, json.dumps(request.body))
        try:
            self.core.delete_namespaced_pod(
                name, namespace, body=request.body, _headers=JSON_BODY, _preload_content=False
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or replaced (the UID precondition failed)
                return gone
            raise classify(exc, f"DELETE pod {namespace}/{name}") from exc
        return MutationResult(
            changed=True,
            message=f'pod "{name}" deleted',
            requests=[request],
            resource_version_before=str(pod["metadata"].get("resourceVersion", "")),
            state_before=plan.state_before,
            state_after={"pod": name, "deleted_uid": uid},
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
