"""Kubernetes actions as Temporal activities: what kubectl would send, and nothing else.

``KubeActivities`` is built once by the worker (remediator.app.runtime.build_activities) with
the process's ``KubeClient`` (remediator.k8s.client); its bound methods are registered as
activities (name = method name, as the action registry remediator.domain.actions names them;
sync ``def`` run on the worker's thread pool). The workflow calls ``describe_target`` once,
then, per playbook step, ``plan_mutation`` and the action:

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

A plan made with ``dry_run`` (``MutationPlanInput.dry_run``: the worker's --dry-run or the
playbook's) is applied as ``kubectl --dry-run=server``: the same reads and checks, every write
sent with ``dryRun=All`` (and ``deleteOptions.dryRun: ["All"]`` for evictions and deletes),
so the API server validates, runs admission and consults PodDisruptionBudgets, and answers
what it would do while persisting nothing. The result has ``dry_run``, ``changed`` False,
kubectl's " (server dry run)" after its message, the requests as sent (their path ending
``?dryRun=All``), the server's answers in ``responses`` and ``state_after`` read from them;
no undo. A dry-run drain does not wait for pods to go, as kubectl drain does not.

Every request goes through the ``KubeClient``, JSON as on the wire; its errors arrive by
reason (``NotFound``, ``Conflict``, ``TooManyRequests``...) and leave each activity as an
ApplicationError through ``remediator.k8s.errors.api_errors``. kubectl's own computations
(selectors, template comparison, drain filters' messages) are the pure ports of
remediator.k8s.kubectl.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from remediator.domain.errors import DRAIN_TIMEOUT
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
from remediator.domain.actions import ACTION_KINDS, DeletePodParams, DrainParams, RollbackParams, ScaleParams, params_for
from remediator.k8s.client import JSON, JSON_PATCH, STRATEGIC_MERGE_PATCH, KubeClient, dry_run_path
from remediator.k8s.errors import (
    Conflict,
    Forbidden,
    KubeError,
    KubePermanentError,
    NotFound,
    SafetyRefusal,
    TooManyRequests,
    api_errors,
)
from remediator.k8s.kubectl import (
    ANNOTATIONS_TO_SKIP,
    DAEMONSET_FATAL,
    DAEMONSET_WARNING,
    LOCAL_STORAGE_FATAL,
    LOCAL_STORAGE_WARNING,
    MIRROR_POD,
    NAMESPACE_TERMINATING,
    POD_TEMPLATE_HASH,
    RESTARTED_AT,
    SERVER_DRY_RUN,
    UNMANAGED_FATAL,
    UNMANAGED_WARNING,
    controller_of,
    cordon_body,
    deployment_revision,
    dry_run_options,
    equal_ignore_hash,
    eviction_body,
    go_duration,
    go_encoded_template,
    refuse_paused_restart,
    refuse_paused_rollback,
    replica_set_revision,
    restarted_at,
    revision_of,
    rfc3339,
    rollout_template_sha256,
)

P = TypeVar("P", bound=BaseModel)



# --------------------------------------------------------------------------- helpers


def _typed(model: type[P], params: Any) -> P:
    """The action's params model (MutationPlanInput validated it on the way in)."""
    if not isinstance(params, model):
        raise KubePermanentError(f"expected {model.__name__} params, got {type(params).__name__}")
    return params


def _as_permanent(err: KubeError) -> KubeError:
    """An eviction error kubectl does not retry (drain.go evictPods), whatever its status."""
    if err.non_retryable:
        return err
    return KubePermanentError(err.message, status=err.status)


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


class KubeActivities:
    """The Kubernetes activities, sharing one ``KubeClient``.

    ``eviction_retry_delay``: seconds between eviction attempts refused with 429 (kubectl
    drain's ``EvictErrorRetryDelay``, 5 s). ``delete_poll_interval``: seconds between checks
    that evicted pods are gone (kubectl ``waitForDelete``, 1 s). Tests shorten both.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        eviction_retry_delay: float = 5.0,
        delete_poll_interval: float = 1.0,
    ) -> None:
        self.kube = kube
        self.eviction_retry_delay = eviction_retry_delay
        self.delete_poll_interval = delete_poll_interval

    # ------------------------------------------------------------------ describe_target

    @activity.defn
    def describe_target(self, input: DescribeTargetInput) -> TargetState:
        """Read the target once (``KubeClient.describe``): revision, last rollout time, paused,
        replicas, node state; ``exists`` False on 404.

        Raises:
            ApplicationError: ``KubePermanentError`` / ``KubeTemporaryError`` from the API.
        """
        with api_errors():
            return self.kube.describe(input.target)

    def _get(self, target: TargetRef) -> dict[str, Any]:
        return self.kube.get(target.kind, target.name, target.namespace)

    def _patch(self, target: TargetRef, body: Any, content_type: str, dry_run: bool = False) -> tuple[KubeRequest, dict[str, Any]]:
        """PATCH the target (``dryRun=All`` for a dry run); returns the recorded request and the
        object the server answered."""
        request = self._request("PATCH", self._path(target), body, content_type, dry_run)
        _log().info("%s %s (%s) %s", request.method, request.path, content_type, json.dumps(body))
        return request, self.kube.patch(target.kind, target.name, target.namespace, body, content_type, dry_run=dry_run)

    @staticmethod
    def _path(target: TargetRef, sub: str = "") -> str:
        return KubeClient.path(target.kind, target.name, target.namespace, sub)

    @staticmethod
    def _request(method: str, path: str, body: Any, content_type: str | None = None, dry_run: bool = False) -> KubeRequest:
        """A mutating request as recorded: a dry run's path carries its ``?dryRun=All``."""
        return KubeRequest(method=method, path=dry_run_path(path, dry_run), content_type=content_type, body=body)

    # ------------------------------------------------------------------ plan

    @activity.defn
    def plan_mutation(self, input: MutationPlanInput) -> MutationPlan:
        """Decide the concrete change of one action from one read of the target; sends nothing.

        The workflow calls this before every mutating activity; the plan is recorded in its
        history and in the audit trail, then handed to the action's activity, which applies
        exactly that change (see ``MutationPlan``): an absolute replica count, the revision and
        the very JSON patch of a rollback, the ``restartedAt`` value, the pod UID, whether the
        node was already cordoned. kubectl's refusals are raised here, before anything is sent.
        ``input.dry_run`` is copied into the plan (``MutationPlan.dry_run``), whose requests are
        then the dry-run ones (``?dryRun=All``; ``deleteOptions.dryRun: ["All"]``).

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
                try:
                    params = params_for(action, input.params)
                except ValidationError as exc:
                    raise KubePermanentError(f"invalid {action} params: {exc.errors()[0]['msg']}") from exc
                plan = self._planners()[action](MutationPlanInput(target=target, action=action, params=params, now=now))
            if plan.action != action or plan.target != target:
                raise KubePermanentError(f"{action} {target.key} was given a plan for {plan.action} {plan.target.key}")
            if not plan.noop:
                return apply(plan)
            result = plan.unchanged()
            if plan.dry_run:
                result.dry_run, result.message = True, result.message + SERVER_DRY_RUN
            return result

    @staticmethod
    def _sent(
        plan: MutationPlan,
        message: str,
        requests: list[KubeRequest],
        responses: list[Any],
        resource_version_before: str,
        resource_version_after: str,
        state_after: dict[str, Any],
    ) -> MutationResult:
        """The result of an attempt that sent ``requests``: the change, with the plan's undo;
        or, for a dry run, ``dry_run`` with ``changed`` False, kubectl's " (server dry run)"
        after ``message``, the server's ``responses`` and no undo (nothing changed)."""
        return MutationResult(
            changed=not plan.dry_run,
            dry_run=plan.dry_run,
            message=message + (SERVER_DRY_RUN if plan.dry_run else ""),
            requests=requests,
            responses=responses if plan.dry_run else [],
            resource_version_before=resource_version_before,
            resource_version_after=resource_version_after,
            state_before=plan.state_before,
            state_after=state_after,
            undo=None if plan.dry_run else plan.undo,
        )

    @staticmethod
    def _already(plan: MutationPlan, resource_version: str, state_after: dict[str, Any], message: str) -> MutationResult:
        """The target already shows the planned change: an earlier attempt of this activity
        applied it (its completion was lost to a crash or a timeout). Nothing is sent again.

        In a dry run no attempt changed anything, so something else made the change: the
        result says so, ``changed`` False, nothing sent."""
        if plan.dry_run:
            return MutationResult(
                changed=False,
                dry_run=True,
                message=f"{message}; nothing sent{SERVER_DRY_RUN}",
                resource_version_before=plan.resource_version,
                resource_version_after=resource_version,
                state_before=plan.state_before,
                state_after=state_after,
            )
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
        refuse_paused_restart(target, spec)
        value = rfc3339(input.now)
        current = restarted_at(spec)
        rv = str(obj["metadata"].get("resourceVersion", ""))
        before = {"restartedAt": current, "generation": obj["metadata"].get("generation")}
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: value}}}}}
        return MutationPlan(
            action="rollout_restart",
            target=target,
            params=input.params,
            dry_run=input.dry_run,
            noop=current == value,
            message=(
                f"{target.key} already restarted at {value}"
                if current == value
                else f"restart every pod of {target.key}: {RESTARTED_AT}={value} on its pod template (kubectl rollout restart)"
            ),
            change={"restartedAt": value},
            precondition={"restartedAt": current},
            requests=[self._request("PATCH", self._path(target), body, STRATEGIC_MERGE_PATCH, input.dry_run)],
            resource_version=rv,
            state_before=before,
        )

    def _apply_rollout_restart(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        obj = self._get(target)
        spec = obj.get("spec") or {}
        value = plan.change["restartedAt"]
        rv = str(obj["metadata"].get("resourceVersion", ""))
        if restarted_at(spec) == value:
            state = {"restartedAt": value, "generation": obj["metadata"].get("generation")}
            return self._already(plan, rv, state, f"{target.key} already restarted at {value}")
        refuse_paused_restart(target, spec)
        request, after = self._patch(target, plan.requests[0].body, STRATEGIC_MERGE_PATCH, plan.dry_run)
        return self._sent(
            plan,
            f"{target.kind.lower()}.apps/{target.name} restarted",
            [request],
            [after],
            rv,
            str(after.get("metadata", {}).get("resourceVersion", "")),
            {"restartedAt": restarted_at(after.get("spec") or {}), "generation": after.get("metadata", {}).get("generation")},
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
        params = _typed(ScaleParams, input.params)
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
            dry_run=input.dry_run,
            noop=current == desired,
            message=(
                f"{target.key} already at {desired} replicas{note}"
                if current == desired
                else f"scale {target.key} from {current} to {desired} replicas{note} "
                f"(kubectl scale --current-replicas={current} --replicas={desired})"
            ),
            change={"replicas": desired},
            precondition={"replicas": current},
            requests=[self._request("PUT", self._path(target, "scale"), body, dry_run=input.dry_run)],
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
        request, updated = self._put_scale(target, scale, plan.dry_run)
        return self._sent(
            plan,
            f"{target.kind.lower()}.apps/{target.name} scaled from {expected} to {desired}",
            [request],
            [updated],
            rv,
            str(updated.get("metadata", {}).get("resourceVersion", "")),
            {"replicas": (updated.get("spec") or {}).get("replicas", desired)},
        )

    def _get_scale(self, target: TargetRef) -> dict[str, Any]:
        return self.kube.request("GET", self._path(target, "scale"), what=f"GET {target.key}/scale")

    def _put_scale(self, target: TargetRef, scale: dict[str, Any], dry_run: bool = False) -> tuple[KubeRequest, dict[str, Any]]:
        request = self._request("PUT", self._path(target, "scale"), scale, dry_run=dry_run)
        _log().info("PUT %s %s", request.path, json.dumps(scale))
        return request, self.kube.put_scale(target.kind, target.name, target.namespace, scale, dry_run=dry_run)

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
        revision N)") when the template already matches. The plan's ``change`` also carries
        ``from_template_sha256`` (the Deployment's template now) and ``to_template_sha256``
        (the template it rolls to), both ``rollout_template_sha256``, so a later rollback back
        to where this one came from can be recognised (flip-flop).

        Applying it re-reads the Deployment: a template that already equals the planned one
        means an earlier attempt rolled back (nothing is sent; "previous" would now name the
        bad revision again, which is why the revision is fixed in the plan); a template and
        revision still as planned get the patch; anything else is refused. Undo: roll back to
        the revision that was current before.

        Raises:
            ApplicationError: ``SafetyRefusal`` with kubectl's messages: 'no rollout history
                found for deployment "x"', "unable to find specified revision N in history",
                "you cannot rollback a paused deployment; resume it first with 'kubectl rollout
                resume' and try again" (kubectl's wording), or when the Deployment changed
                since the plan; API errors as classified.
        """
        return self._apply("rollback", input, self._apply_rollback)

    def _plan_rollback(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        params = _typed(RollbackParams, input.params)
        deployment = self._get(target)
        meta = deployment["metadata"]
        rv = str(meta.get("resourceVersion", ""))
        current_revision = revision_of(deployment)
        template = (deployment.get("spec") or {}).get("template") or {}
        rs = deployment_revision(self.kube.owned_replica_sets(deployment), params.to_revision, target.name)
        revision = replica_set_revision(rs)
        refuse_paused_rollback(deployment)
        rs_template = (rs.get("spec") or {}).get("template") or {}
        from_sha256, to_sha256 = rollout_template_sha256(template), rollout_template_sha256(rs_template)
        precondition = {"revision": current_revision, "template_sha256": from_sha256}
        before = {"revision": current_revision}
        hashes = {"from_template_sha256": from_sha256, "to_template_sha256": to_sha256}
        if equal_ignore_hash(rs_template, template):
            return MutationPlan(
                action="rollback", target=target, params=input.params, noop=True, dry_run=input.dry_run,
                message=f"skipped rollback (current template already matches revision {revision})",
                change={"revision": revision, **hashes}, precondition=precondition, resource_version=rv,
                state_before=before,
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
            {"op": "replace", "path": "/spec/template", "value": go_encoded_template(new_template)},
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
            dry_run=input.dry_run,
            message=f"roll {target.key} back from revision {current_revision} to revision {revision} (kubectl rollout undo{flag})",
            change={"revision": revision, "patch": patch, **hashes},
            precondition=precondition,
            requests=[self._request("PATCH", self._path(target), patch, JSON_PATCH, input.dry_run)],
            resource_version=rv,
            state_before=before,
            undo=undo,
        )

    def _apply_rollback(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        deployment = self._get(target)
        rv = str(deployment["metadata"].get("resourceVersion", ""))
        template = (deployment.get("spec") or {}).get("template") or {}
        current_revision = revision_of(deployment)
        revision, patch = plan.change["revision"], plan.change["patch"]
        if equal_ignore_hash(patch[0]["value"], template):
            state = {"revision": current_revision, "template_revision": revision}
            return self._already(plan, rv, state, f"{target.key} already rolled back to revision {revision}")
        refuse_paused_rollback(deployment)
        expected = plan.precondition
        if current_revision != expected.get("revision") or rollout_template_sha256(template) != expected.get("template_sha256"):
            raise SafetyRefusal(
                f"rollback of {target.key} to revision {revision}: the Deployment changed since the rollback "
                f"was planned (revision {expected.get('revision')}, now {current_revision}); nothing sent"
            )
        request, after = self._patch(target, patch, JSON_PATCH, plan.dry_run)
        return self._sent(
            plan,
            f"deployment.apps/{target.name} rolled back to revision {revision}",
            [request],
            [after],
            rv,
            str(after.get("metadata", {}).get("resourceVersion", "")),
            {"revision": revision_of(after), "template_revision": revision},
        )

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
            dry_run=input.dry_run,
            noop=current == desired,
            message=f"node/{target.name} already {verb}" if current == desired else f"{action} node/{target.name} (kubectl {action})",
            change={"unschedulable": desired},
            precondition={"unschedulable": current},
            requests=[self._request("PATCH", self._path(target), cordon_body(desired), STRATEGIC_MERGE_PATCH, input.dry_run)],
            resource_version=str(node["metadata"].get("resourceVersion", "")),
            state_before={"unschedulable": current},
            undo=UndoAction(action=opposite, description=f"{opposite} {target.key}"),
        )

    def _apply_cordon(self, plan: MutationPlan) -> MutationResult:
        result = self._cordon_node(plan.target, bool(plan.change["unschedulable"]), plan.dry_run)
        if not result.requests:
            return self._already(plan, result.resource_version_after, result.state_after, result.message)
        result.undo = None if plan.dry_run else plan.undo
        return result

    def _cordon_node(self, target: TargetRef, desired: bool, dry_run: bool = False) -> MutationResult:
        """GET the Node, PATCH ``spec.unschedulable`` unless it already is ``desired`` (kubectl
        CordonHelper.UpdateIfRequired); ``requests`` is empty when nothing was sent. A dry run
        sends the PATCH with ``dryRun=All`` (kubectl cordon/drain ``--dry-run=server``): not
        ``changed``, the server's answer in ``responses`` and ``state_after``."""
        node = self._get(target)
        rv = str(node["metadata"].get("resourceVersion", ""))
        current = bool((node.get("spec") or {}).get("unschedulable", False))
        before = {"unschedulable": current}
        verb = "cordoned" if desired else "uncordoned"
        suffix = SERVER_DRY_RUN if dry_run else ""
        if current == desired:
            return MutationResult(
                changed=False, dry_run=dry_run, message=f"node/{target.name} already {verb}{suffix}",
                resource_version_before=rv, resource_version_after=rv, state_before=before, state_after=before,
            )
        request, after = self._patch(target, cordon_body(desired), STRATEGIC_MERGE_PATCH, dry_run)
        return MutationResult(
            changed=not dry_run,
            dry_run=dry_run,
            message=f"node/{target.name} {verb}{suffix}",
            requests=[request],
            responses=[after] if dry_run else [],
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

        A dry run (``plan.dry_run``) is ``kubectl drain --dry-run=server``: the cordon PATCH
        and every eviction go with ``dryRun=All`` (the Eviction's ``deleteOptions.dryRun:
        ["All"]``), a 429 is retried as above, and nothing is waited for: no pod goes.

        Undo: uncordon, when the Node was schedulable when the drain was planned, whichever
        attempt cordoned it (none for a dry run).

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
        params = _typed(DrainParams, input.params)
        node = self._get(target)
        was_unschedulable = bool((node.get("spec") or {}).get("unschedulable", False))
        pods, warnings = self._pods_for_deletion(target.name, params)  # refuse before anything is sent
        names = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]
        requests = [] if was_unschedulable else [
            self._request("PATCH", self._path(target), cordon_body(True), STRATEGIC_MERGE_PATCH, input.dry_run)
        ]
        for pod in pods:
            requests.append(self._eviction_request(pod, params.grace_period_seconds, input.dry_run))
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
            dry_run=input.dry_run,
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
        params = _typed(DrainParams, plan.params)
        timeout = params.timeout.total_seconds()
        deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
        dry_run = plan.dry_run
        undo = None if dry_run else plan.undo  # a dry run changes nothing to undo

        self._pods_for_deletion(target.name, params)  # refuse before this attempt sends anything
        cordon = self._cordon_node(target, True, dry_run)
        requests = list(cordon.requests)
        responses: list[Any] = list(cordon.responses)
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
        evicted = self._evict_all(pods, params, deadline, timeout, requests, undo, progress, dry_run, responses)
        if not dry_run:  # kubectl drain --dry-run=server does not wait: nothing is deleted
            self._wait_for_delete(evicted, deadline, timeout, requests, undo, progress)

        names = ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods)
        message = f"node/{target.name} drained" + (SERVER_DRY_RUN if dry_run else "")
        message += f": {len(pods)} pod(s) evicted" + (f" ({names})" if names else "")
        if warnings:
            message += "; Warning: " + "; ".join(warnings)
        state_after = {"unschedulable": cordon.state_after["unschedulable"], "evicted": [p["metadata"]["name"] for p in evicted]}
        if not requests:
            return self._already(plan, cordon.resource_version_after, state_after, message)
        return MutationResult(
            changed=not dry_run,
            dry_run=dry_run,
            message=message,
            requests=requests,
            responses=responses,
            resource_version_before=cordon.resource_version_before,
            resource_version_after=cordon.resource_version_after,
            state_before=plan.state_before,
            state_after=state_after,
            undo=undo,
        )

    def _pods_for_deletion(self, node: str, params: DrainParams) -> tuple[list[dict[str, Any]], list[str]]:
        """kubectl drain ``GetPodsForDeletion``: list the Node's pods, run kubectl's filters.

        Returns (pods to evict, warnings). Raises SafetyRefusal with kubectl's aggregated
        error text when any pod is refused.
        """
        listed = self.kube.list("Pod", field_selector=f"spec.nodeName={node}", label_selector=params.pod_selector)
        to_delete: list[dict[str, Any]] = []
        warnings: dict[str, list[str]] = {}
        errors: dict[str, list[str]] = {}
        for pod in listed:
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
        # kubectl filters.go isControllerRefDaemonSet: kind DaemonSet of apps/v1 only.
        if ref is None or ref.get("kind") != "DaemonSet" or ref.get("apiVersion") != "apps/v1":
            return True, "Okay", ""
        if self._finished(pod):
            return True, "Okay", ""
        try:
            self.kube.get("DaemonSet", ref["name"], pod["metadata"].get("namespace"))
        except NotFound:
            message = f'daemonsets.apps "{ref["name"]}" not found'
            return (True, "Warning", message) if params.force else (False, "Error", message)
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

    def _eviction_request(self, pod: dict[str, Any], grace_period_seconds: int, dry_run: bool = False) -> KubeRequest:
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        return self._request(
            "POST", KubeClient.path("Pod", name, namespace, "eviction"),
            eviction_body(pod, grace_period_seconds, dry_run), JSON, dry_run,
        )

    @staticmethod
    def _drain_failed(err: KubeError | str, requests: list[KubeRequest], undo: UndoAction | None) -> ApplicationError:
        """A drain failure that carries the requests already sent and the undo (uncordon), so
        ``on_failure: rollback`` restores the node whatever stopped the drain: its own timeout
        (``DrainTimeout``, a string message) or an API error (its own type and retry class)."""
        details = {"requests": [r.model_dump() for r in requests], "undo": undo.model_dump() if undo else None}
        if isinstance(err, str):
            return ApplicationError(err, details, type=DRAIN_TIMEOUT, non_retryable=True)
        return ApplicationError(err.message, details, type=err.type_name, non_retryable=err.non_retryable)

    def _evict_all(
        self,
        pods: list[dict[str, Any]],
        params: DrainParams,
        deadline: float,
        timeout: float,
        requests: list[KubeRequest],
        undo: UndoAction | None,
        progress: dict[str, Any],
        dry_run: bool = False,
        responses: list[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Evict every pod as kubectl drain's evictPods: 404 counts as gone; 429 (a
        PodDisruptionBudget) is retried every ``eviction_retry_delay`` until the deadline; 403
        in a terminating namespace is done for a pod already being deleted and retried for
        another; any other error ends the drain (kubectl does not retry it, e.g. the 500 "more
        than one PodDisruptionBudget"). Returns the pods whose eviction was accepted (to wait
        for). ``dry_run``: evictions with ``dryRun=All``, each accepted answer appended to
        ``responses``."""
        pending = list(pods)
        accepted: list[dict[str, Any]] = []
        retried = activity.in_activity() and activity.info().attempt > 1
        while pending:
            refused: list[dict[str, Any]] = []
            for pod in pending:
                name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
                if time.monotonic() >= deadline:
                    raise self._drain_failed(
                        f'error when evicting pods/"{name}" -n "{namespace}": global timeout reached: '
                        f"{go_duration(timeout)}",
                        requests,
                        undo,
                    )
                deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
                if deleting and retried and not dry_run:
                    # A retried drain: an earlier attempt evicted it. Wait for it; evicting it
                    # again would send a second request for the same change.
                    accepted.append(pod)
                    continue
                request = self._eviction_request(pod, params.grace_period_seconds, dry_run)
                _log().info("evicting pod %s/%s%s", namespace, name, SERVER_DRY_RUN if dry_run else "")
                try:
                    answer = self.kube.evict(name, namespace, request.body, dry_run=dry_run)
                except NotFound:
                    continue
                except TooManyRequests as err:
                    _log().warning(
                        'error when evicting pods/"%s" -n "%s" (will retry after %s): %s',
                        name, namespace, go_duration(self.eviction_retry_delay), err.message,
                    )
                    refused.append(pod)
                    continue
                except Forbidden as err:
                    if NAMESPACE_TERMINATING not in err.causes:
                        raise self._drain_failed(_as_permanent(err), requests, undo) from err
                    if deleting:
                        accepted.append(pod)  # it goes with its namespace: wait for it
                        continue
                    _log().warning(
                        'error when evicting pod "%s" from terminating namespace "%s" (will retry after %s): %s',
                        name, namespace, go_duration(self.eviction_retry_delay), err.message,
                    )
                    refused.append(pod)
                    continue
                except KubeError as err:
                    raise self._drain_failed(_as_permanent(err), requests, undo) from err
                requests.append(request)
                if dry_run and responses is not None:
                    responses.append(answer)
                accepted.append(pod)
                progress["evicted"] += 1
            pending = refused
            _heartbeat({**progress, "waiting_for_eviction": [p["metadata"]["name"] for p in pending]})
            if pending:
                for p in pending:  # kubectl reads each pod again before the next try
                    fresh = self.kube.get_or_none("Pod", p["metadata"]["name"], p["metadata"]["namespace"])
                    if fresh is not None:
                        p.update(fresh)
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
        """kubectl ``waitForDelete``: poll each pod until 404 or its UID changed. An API error
        ends this attempt with the requests and the undo (retryable when it is temporary)."""
        pending = list(pods)
        while True:
            still = []
            for pod in pending:
                name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
                try:
                    current = self.kube.get_or_none("Pod", name, namespace)
                except KubeError as err:
                    raise self._drain_failed(err, requests, undo) from err
                if current is None or current.get("metadata", {}).get("uid") != pod["metadata"].get("uid"):
                    continue
                still.append(pod)
            pending = still
            progress["gone"] = len(pods) - len(pending)
            _heartbeat({**progress, "waiting_for_delete": [p["metadata"]["name"] for p in pending]})
            if not pending:
                return
            if time.monotonic() >= deadline:
                pod = pending[0]
                raise self._drain_failed(
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
        another UID was deleted already, and nothing is sent. No undo. A dry run sends the
        DELETE with ``dryRun: ["All"]`` in its DeleteOptions (``kubectl delete --dry-run=server``):
        the server checks the precondition and answers the pod as the deletion would mark it.

        Raises:
            ApplicationError: ``SafetyRefusal`` when the pod does not belong to the target;
                ``KubePermanentError`` when it does not exist; API errors as classified.
        """
        return self._apply("delete_pod", input, self._apply_delete_pod)

    def _plan_delete_pod(self, input: MutationPlanInput) -> MutationPlan:
        target = input.target
        params = _typed(DeletePodParams, input.params)
        namespace, name = target.namespace, params.pod
        pod = self.kube.get("Pod", name, namespace)
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
            dry_run=input.dry_run,
            message=f"delete pod {namespace}/{name} (uid {uid}) of {target.key} (kubectl delete pod)",
            change={"deleted_uid": uid},
            precondition={"uid": uid},
            requests=[self._request(
                "DELETE", KubeClient.path("Pod", name, namespace), dry_run_options(body, input.dry_run), JSON, input.dry_run
            )],
            resource_version=str(pod["metadata"].get("resourceVersion", "")),
            state_before={"pod": name, "uid": uid, "phase": (pod.get("status") or {}).get("phase")},
        )

    def _apply_delete_pod(self, plan: MutationPlan) -> MutationResult:
        target = plan.target
        request = plan.requests[0]
        namespace, name, uid = target.namespace, plan.state_before["pod"], plan.precondition["uid"]
        gone = self._already(plan, "", {"pod": name, "deleted_uid": uid}, f"pod {namespace}/{name} with uid {uid} already deleted")
        pod = self.kube.get_or_none("Pod", name, namespace)
        if pod is None or pod["metadata"].get("uid") != uid:
            return gone
        _log().info("DELETE %s %s", request.path, json.dumps(request.body))
        try:
            answer = self.kube.delete("Pod", name, namespace, request.body, dry_run=plan.dry_run)
        except (NotFound, Conflict):  # gone, or replaced (the UID precondition failed)
            return gone
        meta = answer.get("metadata") or {}
        state_after: dict[str, Any] = {"pod": name, "deleted_uid": uid}
        if plan.dry_run:  # what the deletion would do: terminate it from then on, or remove it
            state_after["deletionTimestamp"] = meta.get("deletionTimestamp")
            state_after["deletionGracePeriodSeconds"] = meta.get("deletionGracePeriodSeconds")
        return self._sent(
            plan,
            f'pod "{name}" deleted from {namespace} namespace',
            [request],
            [answer],
            str(pod["metadata"].get("resourceVersion", "")),
            str(meta.get("resourceVersion", "")),
            state_after,
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
            rs = self.kube.get("ReplicaSet", ref["name"], target.namespace)
            if rs["metadata"].get("uid") != ref.get("uid"):
                raise refuse(f"its ReplicaSet {ref['name']} was replaced")
            rs_ref = controller_of(rs)
            if not rs_ref or rs_ref.get("kind") != "Deployment" or rs_ref.get("uid") != owner_uid:
                owner_text = f"{rs_ref.get('kind')}/{rs_ref.get('name')}" if rs_ref else "nothing"
                raise refuse(f"its ReplicaSet {ref['name']} is controlled by {owner_text}")
            return
        if ref.get("kind") != target.kind or ref.get("uid") != owner_uid:
            raise refuse(f"it is controlled by {ref.get('kind')}/{ref.get('name')}")
