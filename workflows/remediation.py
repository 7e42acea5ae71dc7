"""RemediationWorkflow: one remediation of one Kubernetes object, driven by a playbook.

Started by the intake with signal-with-start on the workflow ID ``remediation/[<cluster>/]<target key>``
(remediator.domain.runs.workflow_id_for), so at most one remediation runs per target: later
alerts for the same target arrive as ``alert`` signals and are attached to this run.

The run, in order (``run`` reads as this list; every decision goes to the audit trail,
workflows/trail.py):

1. start: record the run and its first alert(s);
2. describe: read the target once (``describe_target``);
3. diagnose: gather the playbook's evidence concurrently (``diagnose_<check>``), then
   ``assess`` turns it into a confidence and evaluates the steps' CEL conditions;
4. remediate, step by step: the step's ``when``; its approval policy (workflows/approval.py:
   ask in Slack, wait for the ``decide`` Update, escalate, expire); plan the action
   (``plan_mutation`` reads the target and fixes the concrete change), record the plan, apply
   it (the action's activity, which does what kubectl does and sends nothing an earlier attempt
   already applied); poll the step's health check; ``retries``; on failure ``stop``,
   ``continue`` or ``rollback`` (undo this run's changes, newest first);
5. verify: wait up to ``verification_window`` for every attached alert to resolve
   (resolved notification, or the Alertmanager API) -> ``healed`` / ``not_healed``;
6. end: record the outcome and the end of the cooldown, post one Slack notice with the outcome,
   whatever ended the run (a failed step, an internal error, a cancellation); a run Temporal
   terminates or times out gets both from remediator.app.settle instead;
7. cool down: stay alive for the playbook's ``cooldown``, recording further alerts, which start
   nothing.

Every activity heartbeats (remediator.app.temporal.HeartbeatInterceptor) under the run's
``heartbeat_timeout``; Kubernetes calls are retried for ``kube_retry_budget``
(workflows/policies.py). Runs started before plans existed (no ``durable-runs`` patch marker in
their history) keep their command sequence: local-activity audit writes, one mutating activity
per step, the notices of the time.

Deterministic: only ``workflow.now()``, timers, activities, signals and the Update; no I/O.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.brakes import BrakesActivities
    from activities.diagnosis import DiagnosisActivities
    from activities.kube import KubeActivities
    from activities.playbooks import PlaybookActivities
    from remediator.domain.actions import ActionParams
    from remediator.domain.durations import format_duration as fmt
    from remediator.domain.errors import SAFETY_REFUSAL
    from remediator.domain.messages import (
        AlertRef,
        AlertSignal,
        ApprovalDecision,
        AssessInput,
        Assessment,
        DecisionResult,
        DescribeTargetInput,
        DiagnosisInput,
        Evidence,
        FlipFlopInput,
        GateInput,
        GateResult,
        HealthInput,
        HealthResult,
        MutationInput,
        MutationPlanInput,
        MutationResult,
        NoticeKind,
        Outcome,
        Phase,
        RemediationInput,
        RemediationResult,
        RemediationStatus,
        ReleaseInput,
        RenderPlaybookInput,
        RunCarry,
        RunInfo,
        SlotInput,
        StepRecord,
        TargetState,
        UndoAction,
    )
    from remediator.domain.playbook import ApprovalBelow, Step
    from remediator.domain.policy import SPEC_CHANGING_ACTIONS
    from remediator.domain.runs import SA_ALERTNAME, SA_NAMESPACE, SA_OUTCOME, SA_PLAYBOOK, SA_TARGET

from workflows import metrics
from workflows.approval import Approval, ApprovalWait
from workflows.errors import StepFailed, cause_message, last_failure, raise_if_cancelled
from workflows.notices import Notices
from workflows.policies import FINAL_DRAIN_PASSES, HEALTH_RETRY, KUBE_RETRY, READ_TIMEOUT, VERIFY_POLL
from workflows.trail import AuditTrail

DURABLE_RUNS = "durable-runs"
"""Patch ID (``workflow.patched``): audit writes as regular activities, mutations planned then
applied, one outcome notice per run, internal errors and cancellations recorded."""

FOLD_AT_STEPS = "fold-alerts-at-steps"
"""Patch ID: alerts that arrived during a step are folded in before the next one."""

BRAKES = "brakes"
"""Patch ID: the cluster's brakes (remediator.audit.brakes): a concurrency slot past diagnosis,
the gate before every mutation (pause, limits), the GitOps rule, the flip-flop refusal, dry
runs, a resolved alert ending an approval wait, alerts of other playbooks queued and handed
over, the slot released at the end."""

SLOT_POLL_MAX = timedelta(seconds=5)
"""Longest wait between two asks for a concurrency slot (a freed slot is found this fast)."""
FROZEN_POLL_MAX = timedelta(minutes=5)
"""Longest wait between two asks of a frozen run (``remediator resume`` signals it at once)."""

ALERT_SIGNAL = "alert"
"""Name of the ``alert`` signal, as signal-with-start names it (remediator.app.intake)."""

QUEUE_AT_END = "queue-at-end"
"""Patch ID: alerts of other playbooks that arrived with the decision that ended the run (the
same workflow task, not folded yet) are queued before the hand-over, not left for the cooldown."""

BRAKES_SIGNAL = "brakes"
"""Name of the ``brakes`` signal: a pause was lifted or a slot freed; ask the brakes again now."""


@dataclass
class RunState:
    """What a run knows, in one place; the ``status`` query reads it."""

    steps: list[StepRecord]
    phase: Phase = "diagnosing"
    outcome: Outcome = "running"
    reason: str = ""
    current: int | None = None
    inbox: list[AlertSignal] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    firing: dict[str, AlertRef] = field(default_factory=dict)
    resolved: set[str] = field(default_factory=set)
    target: TargetState | None = None
    evidence: list[Evidence] = field(default_factory=list)
    assessment: Assessment | None = None
    undo: list[UndoAction] = field(default_factory=list)
    irreversible: list[str] = field(default_factory=list)
    undo_failed: bool = False
    brakes_pokes: int = 0
    queued: dict[str, AlertSignal] = field(default_factory=dict)
    frozen: str = ""

    @property
    def first_alert(self) -> AlertRef | None:
        return next(iter(self.firing.values()), None)

    @property
    def alerts_resolved(self) -> bool:
        return bool(self.firing) and all(k in self.resolved for k in self.firing)


@workflow.defn(name="RemediationWorkflow")
class RemediationWorkflow:
    """Runs one playbook against one target; see the module docstring for the phases."""

    @workflow.init
    def __init__(self, inp: RemediationInput) -> None:
        self._inp = inp
        self._s = RunState(steps=[StepRecord(index=i, name=s.name, action=s.action) for i, s in enumerate(inp.playbook.steps)])
        if inp.carry is not None:
            self._s.inbox.extend(inp.carry.inbox)
            # Handed over by a run of another playbook: its queued alerts of this playbook start
            # this run; the others stay queued here.
            for sig in inp.carry.queued:
                if sig.playbook == inp.playbook.name:
                    self._s.inbox.append(sig)
                else:
                    self._s.queued[sig.alert.dedup_key] = sig
        self._brakes = False
        # Set at the start of ``run``; the Update handler needs the approvals before that.
        self._durable = True
        self._trail = AuditTrail(inp, durable=True)
        self._notices = Notices(inp, self._trail, durable=True)
        self._approvals = ApprovalWait(inp, self._trail, self._notices, durable=True)

    # ------------------------------------------------------------------ messages

    @workflow.signal(name=ALERT_SIGNAL)
    def alert(self, sig: AlertSignal) -> None:
        """An alert for this target (firing or resolved); folded into the run at its next wait."""
        self._s.inbox.append(sig)

    @workflow.signal(name=BRAKES_SIGNAL)
    def brakes_changed(self) -> None:
        """A pause in force changed (``remediator resume``) or a slot may be free: a run that is
        frozen or queued asks the brakes again at once instead of at its next poll."""
        self._s.brakes_pokes += 1

    @workflow.query(name="status")
    def status(self) -> RemediationStatus:
        """The run as it stands; reads only."""
        s = self._s
        return RemediationStatus(
            run_id=workflow.info().run_id,
            target=self._inp.target,
            playbook=self._inp.playbook.name,
            phase=s.phase,
            outcome=s.outcome,
            reason=s.reason,
            current_step=s.current,
            steps=s.steps,
            alerts=sorted(s.seen),
            simulate=self._inp.simulate,
            confidence=s.assessment.confidence if s.assessment else None,
            evidence=s.evidence,
            waiting=self._approvals.waiting,
        )

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecision) -> DecisionResult:
        """A human's Approve/Reject for the step that is waiting (Slack button, Socket Mode or CLI)."""
        return self._approvals.decide(decision)

    @decide.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        """Refuse, before anything is written to history, what ``ApprovalWait.validate`` refuses."""
        self._approvals.validate(decision)

    # ------------------------------------------------------------------ the story

    @workflow.run
    async def run(self, inp: RemediationInput) -> RemediationResult:
        self._durable = workflow.patched(DURABLE_RUNS)
        self._brakes = self._durable and workflow.patched(BRAKES)
        self._trail = AuditTrail(inp, self._durable)
        self._trail.chunked = self._brakes
        self._notices = Notices(inp, self._trail, self._durable)
        self._approvals = ApprovalWait(
            inp, self._trail, self._notices, self._durable,
            pending=(lambda: bool(self._s.inbox)) if self._brakes else None,
            resolved=self._resolved_while_waiting if self._brakes else None,
        )
        carry = inp.carry
        if self._brakes and carry is not None and carry.cooldown_until is not None:
            return await self._continued_cooldown(carry)
        first = await self._start()
        if not self._durable:
            return await self._run_started_before_plans(first)

        cancelled = False
        try:
            await self._remediate()
            if self._s.outcome == "running":
                await self._verify()
        except StepFailed as failure:
            self._failed(failure)
        except (asyncio.CancelledError, Exception) as err:
            if is_cancelled_exception(err):  # also an awaited activity's ActivityError on cancel
                cancelled = True
                self._finish("cancelled", "the workflow was cancelled; the remaining steps did not run")
            else:  # a bug must not leave a run without an outcome or a notice
                workflow.logger.exception("remediation of %s: internal error", inp.target.key)
                self._finish("failed", f"internal error: {type(err).__name__}: {err}")
        ended = await self._end(first, cancelled)
        if cancelled:
            raise asyncio.CancelledError()
        if self._brakes and workflow.patched(QUEUE_AT_END):
            self._queue_other_playbooks()
        if self._brakes and self._s.queued:
            handover = await self._hand_over()
            if handover is not None and handover.carry is not None:
                # No await from here on: what arrived meanwhile goes along, unfolded.
                carry = handover.carry.model_copy(update={"inbox": list(self._s.inbox)})
                workflow.continue_as_new(handover.model_copy(update={"carry": carry}))
        await self._cool_down(ended)
        return self._result()

    # ------------------------------------------------------------------ 1. start

    async def _start(self) -> AlertRef | None:
        inp = self._inp
        workflow.logger.info("remediation of %s with playbook %s (%s)", inp.target.key, inp.playbook.name, inp.playbook_ref.sha256[:12])
        # Signal-with-start delivers the first alert with the start; wait briefly otherwise.
        await self._sleep_or_signal(timedelta(seconds=10) if not self._s.inbox else timedelta(0))
        self._trail.event(
            "run_started",
            f"remediation of {inp.target.key} with playbook {inp.playbook.name}",
            playbook=inp.playbook_ref.model_dump(),
            target=inp.target.model_dump(),
            steps=[s.name for s in inp.playbook.steps],
            dry_run=inp.dry_run,
            handed_over_from=inp.carry.handed_over_from if inp.carry else "",
        )
        metrics.run_started(inp.playbook.name)
        self._fold_alerts()
        first = self._s.first_alert
        workflow.upsert_search_attributes(
            [
                SA_ALERTNAME.value_set(first.alertname if first else ""),
                SA_NAMESPACE.value_set(inp.target.namespace or ""),
                SA_TARGET.value_set(inp.target.key),
                SA_PLAYBOOK.value_set(inp.playbook.name),
                SA_OUTCOME.value_set("running"),
            ]
        )
        # Written with the first flush, which comes before any mutation.
        self._trail.pending_run = self._run_info(first)
        return first

    # ------------------------------------------------------------------ 2-4. describe, diagnose, remediate

    async def _remediate(self) -> None:
        inp = self._inp
        s = self._s
        try:
            s.target = await workflow.execute_activity_method(
                KubeActivities.describe_target, DescribeTargetInput(target=inp.target), **self._kube_options(READ_TIMEOUT)
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            if not self._durable:
                raise
            raise StepFailed(f"could not read {inp.target.key}: {cause_message(err, inp.kube_retry_budget)}") from err
        self._trail.event("decision", f"target {inp.target.key}: {s.target.summary}", state=s.target.model_dump(mode="json"))
        if not s.target.exists:
            self._finish("refused", f"{inp.target.key} does not exist")
            if not self._durable:
                await self._notices.notify("failed", alert=s.first_alert, title=f"{inp.target.key} does not exist; nothing was changed")
            return
        await self._diagnose()
        if self._brakes and not inp.dry_run and not await self._take_slot():
            return
        s.phase = "remediating"
        for index, step in enumerate(inp.playbook.steps):
            if workflow.patched(FOLD_AT_STEPS):
                # A resolved notification that came while the last step waited for approval or
                # ran without a health check counts at this boundary.
                self._fold_alerts()
            if s.alerts_resolved and inp.playbook.on_resolved in ("stop", "rollback"):
                await self._stop_resolved(index, "before the remaining steps ran")
                return
            s.current = index
            skip = self._skip_reason(index, step)
            if skip:
                s.steps[index].status, s.steps[index].message = "skipped", skip
                self._trail.event("decision", f"step {index + 1} ({step.name}) skipped: {skip}", step=index)
                metrics.step_done(step.action, "skipped", timedelta(0))
                continue
            gitops = self._gitops_rule(index, step)
            if gitops == "refuse":
                where = f"step {index + 1} ({step.name})"
                reason = (
                    f"{inp.target.key} is managed by {s.target.gitops}; the policy refuses spec changes to "
                    "GitOps-managed objects (gitops: refuse): fix it in Git"
                )
                s.steps[index].status, s.steps[index].message = "refused", reason
                self._trail.event("decision", f"{where} refused: {reason}", step=index, limit="gitops")
                metrics.step_done(step.action, "refused", timedelta(0))
                self._finish("refused", f"{where} refused: {reason}")
                return
            approval = await self._approval(index, step, gitops=gitops == "approve")
            if approval is not None and not approval.approved:
                s.steps[index].status, s.steps[index].message = "skipped", approval.step_message
                if approval.resolved:
                    await self._stop_resolved(index, "while a step waited for approval", approval=True)
                    return
                self._finish("needs_human", approval.reason)
                return
            began = workflow.now()
            try:
                await self._run_step(index, step)
            except StepFailed as failure:
                metrics.step_done(step.action, "failed", workflow.now() - began)
                if await self._step_failed(index, step, failure, approval):
                    continue
                return
            metrics.step_done(step.action, "succeeded", workflow.now() - began)
            if approval is not None:
                await self._approvals.step_done(approval, True, s.steps[index].message)
        s.current = None

    async def _diagnose(self) -> None:
        """Gather every piece of evidence concurrently, then turn it into a confidence."""
        pb = self._inp.playbook
        s = self._s
        conditions = [step.when if isinstance(step.when, str) else None for step in pb.steps]
        if not pb.diagnosis and pb.confidence is None and not any(conditions):
            return
        s.phase = "diagnosing"
        alert = s.first_alert

        async def gather(d) -> Evidence:
            try:
                return await workflow.execute_activity(
                    f"diagnose_{d.check}",
                    DiagnosisInput(target=self._inp.target, name=d.name, check=d.check, params=getattr(d, d.check), alert=alert),
                    result_type=Evidence,
                    start_to_close_timeout=d.timeout,
                    heartbeat_timeout=self._inp.heartbeat_timeout,
                    retry_policy=HEALTH_RETRY,
                )
            except ActivityError as err:
                raise_if_cancelled(err)
                message = cause_message(err)
                return Evidence(name=d.name, check=d.check, signal=False, summary=f"could not be gathered: {message}", error=message)

        s.evidence = list(await asyncio.gather(*(gather(d) for d in pb.diagnosis)))
        for ev in s.evidence:
            self._trail.event(
                "evidence", f"{ev.name} ({ev.check}): {ev.summary}",
                name=ev.name, check=ev.check, signal=ev.signal, value=ev.value, error=ev.error,
            )
        try:
            s.assessment = await workflow.execute_activity_method(
                DiagnosisActivities.assess,
                AssessInput(
                    evidence=s.evidence,
                    confidence=pb.confidence.model_dump(mode="json", exclude_none=True) if pb.confidence else None,
                    conditions=conditions,
                    alert=alert,
                ),
                start_to_close_timeout=READ_TIMEOUT,
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=HEALTH_RETRY,
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            # Fail closed: no confidence means humans decide, and no condition holds.
            message = cause_message(err)
            s.assessment = Assessment(
                confidence=0.0,
                reason=f"could not assess the evidence: {message}",
                conditions=[False if c else None for c in conditions],
                condition_reasons=[f"could not be evaluated: {message}" if c else "" for c in conditions],
            )
        a = s.assessment
        self._trail.event(
            "decision", f"confidence {a.confidence:.2f}: {a.reason}",
            confidence=a.confidence, conditions=a.conditions, condition_reasons=a.condition_reasons,
        )

    def _skip_reason(self, index: int, step: Step) -> str | None:
        """Why the step's ``when`` says it does not run, or None when it runs."""
        if step.when is None:
            return None
        if isinstance(step.when, str):
            a = self._s.assessment
            holds = a.conditions[index] if a and index < len(a.conditions) else False
            if holds:
                return None
            why = a.condition_reasons[index] if a and index < len(a.condition_reasons) else "not evaluated"
            return f"condition {step.when!r} is false: {why}"
        last = self._s.target.last_rollout if self._s.target else None
        if last is None:
            return "the target's last rollout time is unknown" if step.when.rollout_within else None
        age = workflow.now() - last
        if step.when.rollout_within is not None and age > step.when.rollout_within:
            return f"last rollout was {_human(age)} ago, not within {fmt(step.when.rollout_within)}"
        if step.when.no_rollout_within is not None and age <= step.when.no_rollout_within:
            return f"last rollout was {_human(age)} ago, within {fmt(step.when.no_rollout_within)}"
        return None

    async def _approval(self, index: int, step: Step, *, gitops: bool = False) -> Approval | None:
        """Apply the step's approval policy: None when no approval is needed, else how the
        approval wait ended. ``gitops``: the target is GitOps-managed and the policy says
        approve: the step asks whatever its own policy says."""
        policy = step.approval
        confidence = self._s.assessment.confidence if self._s.assessment else None
        owner = self._s.target.gitops if self._s.target else None
        if gitops:
            reason = (
                f"{self._inp.target.key} is managed by {owner}: the controller will revert this change unless it is "
                "fixed in Git or sync is suspended (policy gitops: approve)"
            )
            return await self._ask(index, step, reason, confidence, gitops=owner)
        if policy == "never":
            return None
        if isinstance(policy, ApprovalBelow):
            if confidence is not None and confidence >= policy.below:
                self._trail.event(
                    "decision",
                    f"step {index + 1} ({step.name}): confidence {confidence:.2f} is not below {policy.below:.2f}; no approval needed",
                    step=index,
                )
                return None
            reason = f"confidence {confidence if confidence is not None else 0:.2f} is below {policy.below:.2f}"
        else:
            reason = "the playbook asks for approval of this step every time"
        return await self._ask(index, step, reason, confidence, gitops=owner if self._brakes else None)

    async def _ask(
        self, index: int, step: Step, reason: str, confidence: float | None, *,
        limits: list[str] | None = None, gitops: str | None = None, suffix: str = "",
    ) -> Approval:
        self._s.phase = "awaiting_approval"
        change = step.spec.describe(step.params, self._inp.target) if self._brakes else ""
        approval = await self._approvals.ask(
            index, step, reason, confidence, self._s.first_alert, self._s.evidence,
            change=change, limits=limits, gitops=gitops, suffix=suffix,
        )
        self._s.phase = "remediating"
        return approval

    async def _run_step(self, index: int, step: Step) -> None:
        """The step's action, then its health check, ``retries`` more times while it fails."""
        record = self._s.steps[index]
        record.status = "running"
        check = step.health.check if step.health else None
        self._trail.event(
            "step_intent",
            f"step {index + 1} ({step.name}): {step.action} {self._inp.target.key}" + (f", then check {check}" if check else ""),
            step=index,
            action=step.action,
            params=step.params.model_dump(mode="json"),
            health=step.health.model_dump(mode="json") if step.health else None,
        )
        last_error = ""
        for attempt in range(1, step.retries + 2):
            record.attempts = attempt
            if not self._durable:
                await self._trail.flush()
            if self._brakes:
                await self._gate(index, step, step.action, attempt)
                record.status = "running"
            result = await self._mutate(step.action, step.params, index, attempt, step.spec.timeout(step.params, step.timeout))
            self._record_mutation(result, step=index, attempt=attempt)
            if self._brakes and self._inp.dry_run:
                record.status, record.message = "succeeded", result.message
                if step.health is not None:
                    self._trail.event(
                        "health", f"health check {step.health.check} skipped: dry run (nothing changed)",
                        step=index, attempt=attempt, check=step.health.check, healthy=None, skipped=True,
                    )
                await self._trail.flush()
                return
            if step.health is None:
                record.status, record.message = "succeeded", result.message
                await self._trail.flush()
                return
            healthy, message = await self._check(index, attempt, step)
            if healthy:
                record.status, record.message = "succeeded", message
                await self._trail.flush()
                return
            last_error = message
            if attempt <= step.retries:
                self._trail.event("decision", f"step {index + 1} ({step.name}) health check failed: {message}; retrying", step=index)
        raise StepFailed(last_error)

    async def _mutate(self, action: str, params: ActionParams, index: int, attempt: int, timeout: timedelta) -> MutationResult:
        """Plan the action, record the plan in the audit trail, then apply it.

        The plan (``plan_mutation``, a read) fixes the concrete change in this workflow's
        history; the action's activity gets it as input, so every retry applies that change and
        one that finds it applied sends nothing. Raises StepFailed when planning or applying
        fails (``refused`` for a safety refusal)."""
        inp = self._inp
        if not self._durable:
            return await self._apply(
                action,
                MutationInput(
                    target=inp.target, params=params.model_dump(mode="json"),
                    request_id=f"{workflow.info().run_id}/{index}/{attempt}", now=workflow.now(), simulate=inp.simulate,
                ),
                index, attempt, timeout,
            )
        try:
            plan = await workflow.execute_activity_method(
                KubeActivities.plan_mutation,
                MutationPlanInput(
                    target=inp.target, action=action, params=params, now=workflow.now(),
                    dry_run=self._brakes and inp.dry_run,
                ),
                **self._kube_options(READ_TIMEOUT),
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            self._mutation_failed(action, index, attempt, err)
        if self._brakes and action == "rollback" and index >= 0 and not plan.noop:
            await self._refuse_flip_flop(plan.change.get("to_template_sha256"), index)
        self._trail.event(
            "plan", plan.message,
            step=index, attempt=attempt, action=action, noop=plan.noop, change=plan.change,
            precondition=plan.precondition, requests=[r.model_dump(mode="json") for r in plan.requests],
            resource_version=plan.resource_version, state_before=plan.state_before,
            undo=plan.undo.model_dump(mode="json") if plan.undo else None,
        )
        if plan.noop:
            return plan.unchanged()
        await self._trail.flush()  # the intent is in the audit trail before anything is sent
        return await self._apply(action, MutationInput(target=inp.target, plan=plan), index, attempt, timeout)

    async def _apply(self, action: str, mutation: MutationInput, index: int, attempt: int, timeout: timedelta) -> MutationResult:
        # The action is the playbook's choice: its activity is named as the action (the registry).
        try:
            return await workflow.execute_activity(action, mutation, result_type=MutationResult, **self._kube_options(timeout))
        except ActivityError as err:
            raise_if_cancelled(err)
            self._mutation_failed(action, index, attempt, err)

    def _record_mutation(self, result: MutationResult, **data: Any) -> None:
        self._trail.event(
            "mutation", result.message,
            changed=result.changed, requests=[r.model_dump(mode="json") for r in result.requests],
            resource_version_before=result.resource_version_before, resource_version_after=result.resource_version_after,
            already_applied=result.already_applied,
            **({"state_before": result.state_before, "state_after": result.state_after} if "step" in data else {}),
            **({"dry_run": True, "responses": result.responses} if result.dry_run else {}),
            **data,
        )
        if result.undo is not None and result.changed and "step" in data:
            self._s.undo.append(result.undo)
        elif self._brakes and result.changed and "step" in data and not result.already_applied:
            self._s.irreversible.append(f"step {data['step'] + 1}: {result.message}")

    async def _check(self, index: int, attempt: int, step: Step) -> tuple[bool, str]:
        """Poll the step's health check every ``interval`` until it passes, fails for good or times out."""
        assert step.health is not None
        health = step.health
        name = health.check
        deadline = workflow.now() + health.timeout
        polls = 0
        while True:
            polls += 1
            if name == "alert_resolved" and self._s.alerts_resolved:
                result = HealthResult(healthy=True, final=True, message="resolved notification received")
            else:
                result = await self._evaluate(name, getattr(health, name))
            if result.healthy or result.final or workflow.now() >= deadline:
                break
            await self._sleep_or_signal(min(health.interval, deadline - workflow.now()))
            self._fold_alerts()
        timed_out = not result.healthy and not result.final
        message = result.message + (f" (timed out after {fmt(health.timeout)})" if timed_out else "")
        self._trail.event(
            "health", message,
            step=index, attempt=attempt, check=name, healthy=result.healthy, polls=polls, observed=result.observed,
        )
        return result.healthy, message

    async def _evaluate(self, name: str, params: Any, alert: AlertRef | None = None) -> HealthResult:
        try:
            return await workflow.execute_activity(
                f"check_{name}",
                HealthInput(target=self._inp.target, check=name, params=params, alert=alert or self._s.first_alert),
                result_type=HealthResult,
                start_to_close_timeout=READ_TIMEOUT,
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=HEALTH_RETRY,
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            final = isinstance(err.cause, ApplicationError) and err.cause.non_retryable
            return HealthResult(healthy=False, final=final, message=f"check could not be evaluated: {cause_message(err)}")

    # ------------------------------------------------------------------ failure handling

    async def _step_failed(self, index: int, step: Step, failure: StepFailed, approval: Approval | None) -> bool:
        """What a failed step leads to, as its ``on_failure`` says: True to go on with the next
        step (``continue``), False when the run ends (``stop``, ``rollback``, a refusal)."""
        inp = self._inp
        record = self._s.steps[index]
        record.status = "refused" if failure.refused else "failed"
        record.message = str(failure)
        if approval is not None:
            await self._approvals.step_done(approval, False, str(failure))
        where = f"step {index + 1} ({step.name})"
        title = f"{where} of {inp.playbook.name} on {inp.target.key} "
        if failure.refused:
            self._finish("refused", f"{where} refused: {failure}")
            if not self._durable:
                await self._notices.notify("safety_refusal", alert=self._s.first_alert, title=title + f"was refused for safety: {failure}")
            return False
        # The outcome notice tells how a run ended; mid-run notices are for what goes on.
        if not self._durable or step.on_failure == "continue":
            await self._notices.notify(
                "health_failed", alert=self._s.first_alert, step=where, reason=f"{failure} (on_failure: {step.on_failure})",
                title="" if self._durable else title + f"failed: {failure} (on_failure: {step.on_failure})",
            )
        if step.on_failure == "continue":
            self._trail.event("decision", f"{where} failed; on_failure: continue", step=index)
            return True
        if step.on_failure == "rollback":
            self._trail.event("decision", f"{where} failed; on_failure: rollback", step=index)
            report = await self._undo_all()
            if self._brakes:
                self._finish("rolled_back", f"{where} failed: {failure}; {report}")
            else:
                self._finish("rolled_back", f"{where} failed: {failure}; this run's changes were undone")
            return False
        self._finish("failed", f"{where} failed: {failure}")
        return False

    def _failed(self, failure: StepFailed) -> None:
        """A StepFailed that no step handled (describing the target): the run ends with it."""
        if self._s.outcome == "running":
            self._finish("refused" if failure.refused else "failed", str(failure))

    def _mutation_failed(self, action: str, index: int, attempt: int, err: ActivityError) -> NoReturn:
        cause = last_failure(err)
        refused = isinstance(cause, ApplicationError) and cause.type == SAFETY_REFUSAL
        message = cause_message(err, self._inp.kube_retry_budget)
        # A partly done action (a drain that failed half way) reports what it already sent and
        # how to undo it: record both so on_failure: rollback can restore.
        partial = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else None
        partial = partial if isinstance(partial, dict) else {}
        if partial.get("undo"):
            self._s.undo.append(UndoAction.model_validate(partial["undo"]))
        self._trail.event(
            "decision", f"{action} failed: {message}",
            step=index, attempt=attempt, error_type=getattr(cause, "type", None), requests=partial.get("requests", []),
        )
        raise StepFailed(message, refused=refused) from err

    async def _undo_all(self) -> str:
        """Undo this run's changes, newest first (saga); an undo that fails is recorded and the
        next one still runs. Returns (runs with the brakes) what was undone, what could not be
        and what cannot be (a restart is not taken back), in words."""
        undone: list[str] = []
        failed: list[str] = []
        while self._s.undo:
            undo = self._s.undo.pop()
            if self._brakes:
                try:
                    await self._gate(-1, None, undo.action, len(self._s.undo) + 1, undo=True)
                except StepFailed as failure:
                    failed.append(f"{undo.description or undo.action} ({failure})")
                    self._trail.event("undo", f"undo {undo.action} not sent: {failure}", action=undo.action)
                    continue
            self._trail.event(
                "undo", f"undo: {undo.description or undo.action}",
                action=undo.action, params=undo.params.model_dump(mode="json") if undo.params else {},
            )
            if not self._durable:
                await self._trail.flush()
            try:
                result = await self._mutate(undo.action, undo.params, -1, len(self._s.undo) + 1, timedelta(minutes=2))
            except StepFailed as failure:
                self._trail.event("undo", f"undo {undo.action} failed: {failure}", action=undo.action)
                failed.append(f"{undo.description or undo.action} ({failure})")
                continue
            self._record_mutation(result, undo=True)
            undone.append(undo.description or undo.action)
        self._s.undo_failed = self._s.undo_failed or bool(failed)
        parts = []
        if undone:
            parts.append("undone: " + "; ".join(undone))
        if failed:
            parts.append("could not be undone: " + "; ".join(failed))
        if self._s.irreversible:
            parts.append("cannot be undone: " + "; ".join(self._s.irreversible))
        report = ". ".join(parts) or "nothing to undo"
        if self._brakes:
            self._trail.event("decision", f"rollback report: {report}", undone=undone, failed=failed, irreversible=self._s.irreversible)
        return report

    # ------------------------------------------------------------------ the brakes

    async def _take_slot(self) -> bool:
        """Wait, durably and in arrival order, for one of the cluster's concurrency slots
        (``limits.concurrent_remediations``); False when ``queue_timeout`` passed first (the run
        then ends ``needs_human``)."""
        s = self._s
        info = workflow.info()
        requested = workflow.now()
        delay = timedelta(milliseconds=500)
        waited = False
        while True:
            try:
                slot = await workflow.execute_activity_method(
                    BrakesActivities.acquire_slot,
                    SlotInput(run_id=info.run_id, workflow_id=info.workflow_id, target=self._inp.target, requested_at=requested),
                    **self._kube_options(READ_TIMEOUT),
                )
            except ActivityError as err:
                raise_if_cancelled(err)
                raise StepFailed(f"could not ask for a concurrency slot: {cause_message(err)}") from err
            if slot.granted:
                if waited:
                    self._trail.event("brake", f"concurrency slot granted after {_human(workflow.now() - requested)}: {slot.message}")
                s.phase = "remediating"
                return True
            deadline = requested + slot.queue_timeout
            if not waited:
                waited = True
                s.phase = "awaiting_slot"
                self._trail.event("brake", f"waits for a concurrency slot: {slot.message}", limit="concurrent_remediations")
                await self._trail.flush()
            if workflow.now() >= deadline:
                reason = (
                    f"no concurrency slot within queue_timeout {fmt(slot.queue_timeout)} ({slot.message}); "
                    "nothing was changed"
                )
                self._trail.event("brake", reason, limit="queue_timeout")
                for rest in s.steps:
                    rest.status, rest.message = "skipped", "no concurrency slot"
                self._finish("needs_human", reason)
                return False
            await self._wait_brakes(min(delay, deadline - workflow.now()))
            delay = min(delay * 2, SLOT_POLL_MAX)

    async def _gate(self, index: int, step: Step | None, action: str, attempt: int, *, undo: bool = False) -> None:
        """Ask the brakes before one mutation: frozen while a pause covers the run (until
        ``remediator resume``); over a limit, refused unless an approver approves exceeding it.

        Raises:
            StepFailed: refused for safety (a limit, nobody to approve, or not approved).
        """
        inp = self._inp
        s = self._s
        info = workflow.info()
        key = f"{info.run_id}/{'undo' if undo else index}/{attempt}"
        override: str | None = None
        delay = timedelta(seconds=5)
        where = f"step {index + 1} ({step.name})" if step is not None else f"undo {action}"
        while True:
            pokes = s.brakes_pokes  # a resume signalled while the gate is asked is not missed
            try:
                verdict: GateResult = await workflow.execute_activity_method(
                    BrakesActivities.gate_mutation,
                    GateInput(
                        key=key, run_id=info.run_id, workflow_id=info.workflow_id, target=inp.target,
                        playbook=inp.playbook.name, action=action, step=index, undo=undo, dry_run=inp.dry_run,
                        override_by=override,
                    ),
                    **self._kube_options(READ_TIMEOUT),
                )
            except ActivityError as err:
                raise_if_cancelled(err)
                raise StepFailed(f"could not ask the brakes, so nothing was sent: {cause_message(err)}", refused=True) from err
            if verdict.verdict == "granted":
                if s.frozen:
                    self._trail.event("brake", f"resumed at {where}: the pause ({s.frozen}) was lifted", step=index)
                    s.frozen = ""
                    s.phase = "remediating"
                if verdict.limits:
                    self._trail.event(
                        "brake", f"{where}: {verdict.message}", step=index, override_by=override,
                        limits=[h.model_dump() for h in verdict.limits],
                    )
                return
            if verdict.verdict == "paused":
                if not s.frozen:
                    pause = verdict.pause
                    s.frozen = str(pause) if pause else "paused"
                    s.phase = "paused"
                    self._trail.event(
                        "brake",
                        f"frozen before {where}: {verdict.message}" + (f", by {pause.paused_by}" if pause else ""),
                        step=index, scope=pause.key if pause else None,
                    )
                    await self._trail.flush()
                await self._wait_brakes(delay, pokes)
                delay = min(delay * 2, FROZEN_POLL_MAX)
                continue
            hits = [h.message for h in verdict.limits]
            self._trail.event(
                "brake", f"{where} would exceed the policy's limits: {verdict.message}",
                step=index, limits=[h.model_dump() for h in verdict.limits],
            )
            if step is None or inp.playbook.slack is None or override is not None:
                raise StepFailed(f"refused for safety: {verdict.message}; nobody was asked to approve exceeding it", refused=True)
            approval = await self._ask(
                index, step, f"the step would exceed the policy's limits: {verdict.message}",
                s.assessment.confidence if s.assessment else None, limits=hits, suffix=f"-limits-{attempt}",
            )
            if not approval.approved or approval.decision is None:
                if approval.resolved:
                    raise StepFailed(approval.reason, refused=True)
                raise StepFailed(
                    f"refused for safety: {verdict.message}; exceeding it was not approved ({approval.step_message})",
                    refused=True,
                )
            override = approval.decision.user_id
            await self._approvals.step_done(approval, True, f"limits exceeded with approval of {override}")

    async def _wait_brakes(self, timeout: timedelta, pokes: int | None = None) -> None:
        """Sleep up to ``timeout``, waking on a ``brakes`` signal (since ``pokes`` was read);
        alerts arriving meanwhile are folded in (nothing is lost while a run waits)."""
        pokes = self._s.brakes_pokes if pokes is None else pokes
        try:
            await workflow.wait_condition(lambda: self._s.brakes_pokes != pokes or bool(self._s.inbox), timeout=timeout)
        except TimeoutError:
            pass
        if self._s.inbox:
            self._fold_alerts()
            await self._trail.flush()

    async def _release(self) -> None:
        """Free the run's concurrency slot and frozen marker (the brakes also free the slot of
        a run the audit shows ended, so a run killed before this does not hold it)."""
        try:
            await workflow.execute_activity_method(
                BrakesActivities.release_brakes, ReleaseInput(run_id=workflow.info().run_id), **self._kube_options(READ_TIMEOUT)
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            self._trail.event("brake", f"could not release the concurrency slot: {cause_message(err)}; it is freed once the audit shows the run ended")

    def _gitops_rule(self, index: int, step: Step) -> str:
        """``approve`` / ``refuse`` when the step changes the spec of an object a GitOps
        controller manages (policy ``gitops``), else ``allow``."""
        target = self._s.target
        if not self._brakes or self._inp.dry_run or target is None or not target.gitops:
            return "allow"
        if step.action not in SPEC_CHANGING_ACTIONS:
            return "allow"
        rule = self._inp.gitops
        if rule == "approve" and self._inp.playbook.slack is None:
            return "refuse"  # nobody can be asked: fail closed
        return rule

    async def _refuse_flip_flop(self, template: Any, index: int) -> None:
        """A rollback must not return to a pod template an earlier remediation rolled away from.

        Raises:
            StepFailed: refused, naming the earlier run.
        """
        if not isinstance(template, str) or not template:
            return
        info = workflow.info()
        try:
            earlier = await workflow.execute_activity_method(
                BrakesActivities.rolled_away_from,
                FlipFlopInput(run_id=info.run_id, workflow_id=info.workflow_id, template_sha256=template),
                **self._kube_options(READ_TIMEOUT),
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            raise StepFailed(f"could not check earlier rollbacks, so nothing was sent: {cause_message(err)}", refused=True) from err
        if earlier.run_id:
            reason = (
                f"rollback would return {self._inp.target.key} to the pod template that run {earlier.run_id} rolled away "
                f"from at {earlier.at}; a human must decide (no flip-flops)"
            )
            self._trail.event("decision", f"refused: {reason}", step=index, earlier_run=earlier.run_id, limit="flip_flop")
            raise StepFailed(reason, refused=True)

    async def _stop_resolved(self, index: int, when: str, *, approval: bool = False) -> None:
        """The alert resolved: the remaining steps do not run; ``on_resolved: rollback`` also
        undoes what this run changed."""
        s = self._s
        for rest in s.steps[index:]:
            if rest.status == "pending":
                rest.status = "skipped"
        rule = self._inp.playbook.on_resolved
        self._trail.event("decision", f"alert resolved {when}; playbook says {rule}", step=index)
        if rule == "rollback" and self._brakes:
            report = await self._undo_all()
            self._finish("resolved", f"the alert resolved {when}; {'nothing ran; ' if approval else ''}{report}")
            return
        self._finish("resolved", f"the alert resolved {when}" + ("; nothing ran" if approval else ""))

    def _resolved_while_waiting(self) -> bool:
        """Fold the alerts that woke an approval wait; True when they resolved the run's alert
        and the playbook does not say ``continue``."""
        self._fold_alerts()
        return self._s.alerts_resolved and self._inp.playbook.on_resolved != "continue"

    async def _hand_over(self) -> RemediationInput | None:
        """The input of the run that takes the target over for the first queued alert (of
        another playbook) that still fires, or None. A queued alert that resolved (signal or
        Alertmanager API) or whose playbook cannot be rendered is recorded and dropped."""
        s = self._s
        while s.queued:
            key, sig = next(iter(s.queued.items()))
            del s.queued[key]
            still = await self._evaluate("alert_resolved", None, alert=sig.alert)
            if still.healthy:
                self._trail.event("alert", f"queued alert {sig.alert.alertname} resolved: {still.message}; playbook {sig.playbook} does not run", dedup_key=key, disposition="resolved")
                continue
            try:
                rendered = await workflow.execute_activity_method(
                    PlaybookActivities.render_playbook,
                    RenderPlaybookInput(alert=sig.alert, playbook=sig.playbook),
                    start_to_close_timeout=READ_TIMEOUT, heartbeat_timeout=self._inp.heartbeat_timeout, retry_policy=HEALTH_RETRY,
                )
            except ActivityError as err:
                raise_if_cancelled(err)
                self._trail.event("decision", f"queued playbook {sig.playbook} cannot run: {cause_message(err)}")
                continue
            if rendered.error or rendered.playbook is None or rendered.playbook_ref is None or rendered.target != self._inp.target:
                why = rendered.error or f"it targets {rendered.target.key if rendered.target else '?'}"
                self._trail.event("decision", f"queued playbook {sig.playbook} cannot run on {self._inp.target.key}: {why}")
                continue
            info = workflow.info()
            self._trail.event(
                "decision", f"hands {self._inp.target.key} over to playbook {sig.playbook} for the queued alert {sig.alert.alertname}",
                playbook=sig.playbook, dedup_key=key,
            )
            await self._trail.flush()
            return self._inp.model_copy(
                update={
                    "playbook": rendered.playbook,
                    "playbook_ref": rendered.playbook_ref,
                    "dry_run": rendered.dry_run,
                    "carry": RunCarry(queued=[sig, *s.queued.values()], handed_over_from=info.run_id),
                }
            )
        await self._trail.flush()
        return None

    # ------------------------------------------------------------------ 5. verify

    async def _verify(self) -> None:
        """Wait up to the verification window for every attached alert to stop firing (a dry
        run changed nothing: it ends ``dry_run`` without waiting)."""
        s = self._s
        if self._brakes and self._inp.dry_run:
            sent = sum(1 for r in s.steps if r.status == "succeeded")
            self._finish("dry_run", f"{sent} step(s) sent with dryRun=All and accepted by the API server; nothing changed")
            return
        s.phase = "verifying"
        window = self._inp.playbook.verification_window
        deadline = workflow.now() + window
        self._trail.event("decision", f"steps done; verifying for up to {fmt(window)} that the alert resolves")
        while not s.alerts_resolved:
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                break
            await self._sleep_or_signal(min(VERIFY_POLL, remaining))
            self._fold_alerts()
            if s.alerts_resolved:
                break
            result = await self._evaluate("alert_resolved", None)
            if result.healthy:
                s.resolved.update(s.firing)
                self._trail.event("health", result.message, check="alert_resolved", healthy=True)
        if s.alerts_resolved:
            self._finish("healed", "every step succeeded and the alert resolved")
        else:
            self._finish("not_healed", f"the alert was still firing {fmt(window)} after the last step")

    # ------------------------------------------------------------------ 6. end

    async def _end(self, first: AlertRef | None, cancelled: bool) -> datetime:
        """Record the outcome and the cooldown's end, then tell Slack; returns when it ended."""
        inp = self._inp
        s = self._s
        s.phase = "done" if cancelled or inp.playbook.cooldown <= timedelta(0) else "cooldown"
        ended = workflow.now()
        until = ended + inp.playbook.cooldown
        self._trail.event("outcome", f"{s.outcome}: {s.reason}", outcome=s.outcome, reason=s.reason, cooldown_until=until.isoformat())
        metrics.run_ended(inp.playbook.name, s.outcome)
        # The audit first (the outcome and the cooldown must not wait on Slack), then the search
        # attribute: a run stopped in between is still found by remediator.app.settle.
        await self._trail.flush(run=self._run_info(first, outcome=s.outcome, ended=ended, cooldown_until=until))
        workflow.upsert_search_attributes([SA_OUTCOME.value_set(s.outcome)])
        if self._brakes:
            await self._release()
        slack = inp.playbook.slack
        needs_people = s.outcome in ("not_healed", "failed", "refused", "needs_human", "rolled_back")
        if s.outcome == "resolved" and s.undo_failed:
            needs_people = True
        await self._notices.notify(
            cast(NoticeKind, s.outcome), alert=s.first_alert, reason=s.reason,  # every final outcome is a notice kind
            mention=slack.oncall_usergroup if slack and needs_people else None,
        )
        await self._trail.flush()
        workflow.logger.info("remediation of %s ended %s: %s", inp.target.key, s.outcome, s.reason)
        return ended

    # ------------------------------------------------------------------ 7. cool down

    async def _cool_down(self, ended: datetime) -> None:
        """Stay alive for the cooldown, recording the alerts that arrive; then record those that
        arrived during the last write (a few passes: a sender that never stops must not keep an
        ended run alive)."""
        until = ended + self._inp.playbook.cooldown
        while workflow.now() < until:
            await self._sleep_or_signal(until - workflow.now())
            if self._s.inbox:
                self._fold_alerts(cooldown_until=until)
                await self._trail.flush()
            if self._brakes and workflow.info().get_current_history_length() >= self._inp.history_limit:
                # A long cooldown under a stream of alerts: go on in a fresh history.
                self._trail.event("decision", f"cooldown continues as new after {workflow.info().get_current_history_length()} history events")
                await self._trail.flush()
                # No await from here on: what arrived during the flush goes along, unfolded.
                workflow.continue_as_new(
                    self._inp.model_copy(update={"carry": RunCarry(
                        seen=sorted(self._s.seen)[-1000:], cooldown_until=until, ended_outcome=self._s.outcome,
                        audit_run_id=self._trail.run_id, inbox=list(self._s.inbox),
                    )})
                )
        if self._durable:
            for _ in range(FINAL_DRAIN_PASSES):
                if not self._s.inbox:
                    break
                self._fold_alerts(cooldown_until=until)
                await self._trail.flush()
        self._s.phase = "done"

    async def _continued_cooldown(self, carry: RunCarry) -> RemediationResult:
        """The rest of a cooldown that continued as new: the run's outcome and seen alerts as
        carried, alerts recorded on the audit trail of the run it continues."""
        s = self._s
        s.seen.update(carry.seen)
        s.outcome = cast(Outcome, carry.ended_outcome or "running")
        s.reason = "cooldown continued as new"
        s.phase = "cooldown"
        for record in s.steps:
            record.status = "skipped" if record.status == "pending" else record.status
        self._trail.run_id_override = carry.audit_run_id
        assert carry.cooldown_until is not None
        await self._cool_down(carry.cooldown_until - self._inp.playbook.cooldown)
        return self._result()

    # ------------------------------------------------------------------ runs started before plans

    async def _run_started_before_plans(self, first: AlertRef | None) -> RemediationResult:
        """The end of a run without the ``durable-runs`` marker: its command sequence, unchanged."""
        inp = self._inp
        s = self._s
        try:
            await self._remediate()
        except StepFailed as failure:
            self._failed(failure)
        if s.outcome == "running":
            await self._verify()
            if s.outcome == "not_healed":
                await self._notices.notify("not_healed", alert=s.first_alert, title=f"{inp.target.key} is not healed: {s.reason}")
        s.phase = "done" if inp.playbook.cooldown <= timedelta(0) else "cooldown"
        workflow.upsert_search_attributes([SA_OUTCOME.value_set(s.outcome)])
        self._trail.event("outcome", f"{s.outcome}: {s.reason}", outcome=s.outcome, reason=s.reason)
        metrics.run_ended(inp.playbook.name, s.outcome)
        ended = workflow.now()
        await self._trail.flush(run=self._run_info(first, outcome=s.outcome, ended=ended, cooldown_until=ended + inp.playbook.cooldown))
        workflow.logger.info("remediation of %s ended %s: %s", inp.target.key, s.outcome, s.reason)
        await self._cool_down(ended)
        return self._result()

    # ------------------------------------------------------------------ alerts, waits, records

    def _queue_other_playbooks(self) -> None:
        """Fold the pending alerts of other playbooks (queued, or their resolutions); those of
        this run's playbook stay pending for the cooldown."""
        s = self._s
        mine = [sig for sig in s.inbox if sig.playbook == self._inp.playbook.name]
        others = [sig for sig in s.inbox if sig.playbook != self._inp.playbook.name]
        if not others:
            return
        s.inbox = others
        self._fold_alerts()
        s.inbox = mine

    def _fold_alerts(self, cooldown_until: datetime | None = None) -> None:
        """Fold pending signals into the run: dedup firings, attach new ones, note resolutions."""
        s = self._s
        while s.inbox:
            sig = s.inbox.pop(0)
            alert = sig.alert
            key = alert.dedup_key
            if alert.status == "resolved" and self._brakes and key in s.queued:
                del s.queued[key]
                self._trail.event(
                    "alert", f"queued alert {alert.alertname} {alert.fingerprint} resolved; playbook {sig.playbook} will not run",
                    dedup_key=key, status="resolved", disposition="resolved",
                )
                continue
            if alert.status == "resolved":
                if key in s.firing and key not in s.resolved:
                    s.resolved.add(key)
                    self._trail.event(
                        "alert", f"alert {alert.alertname} {alert.fingerprint} resolved",
                        dedup_key=key, status="resolved", disposition="resolved",
                    )
                continue
            if self._brakes and key in s.queued:
                if alert.status == "resolved":
                    continue
                s.queued[key] = sig  # the latest annotations
                continue
            if key in s.seen:
                continue  # the same firing delivered again (repeat, HA peer, resend)
            if self._brakes and sig.playbook != self._inp.playbook.name and cooldown_until is None:
                s.queued[key] = sig
                self._trail.event(
                    "alert",
                    f"alert {alert.alertname} {alert.fingerprint} matches playbook {sig.playbook}; queued: it runs on "
                    f"{self._inp.target.key} after this run ends if the alert still fires",
                    dedup_key=key, status="firing", disposition="queued", playbook=sig.playbook,
                    alert=alert.model_dump(mode="json"),
                )
                continue
            s.seen.add(key)
            if cooldown_until is not None:
                disposition = "cooling_down"
                message = (
                    f"alert {alert.alertname} {alert.fingerprint} for {self._inp.target.key} recorded, no new "
                    f"remediation: cooling down until {cooldown_until.isoformat()}"
                )
            else:
                s.firing[key] = alert
                disposition = "started" if len(s.firing) == 1 else "attached"
                message = (
                    f"alert {alert.alertname} {alert.fingerprint} firing since {alert.starts_at.isoformat()}"
                    if disposition == "started"
                    else f"alert {alert.alertname} {alert.fingerprint} attached to the running remediation"
                )
            self._trail.event(
                "alert", message,
                dedup_key=key, status="firing", disposition=disposition, playbook=sig.playbook, alert=alert.model_dump(mode="json"),
            )

    async def _sleep_or_signal(self, duration: timedelta) -> None:
        """Sleep up to ``duration``, waking early when a signal arrives."""
        if duration <= timedelta(0):
            return
        try:
            await workflow.wait_condition(lambda: bool(self._s.inbox), timeout=duration)
        except TimeoutError:
            pass

    def _finish(self, outcome: Outcome, reason: str) -> None:
        self._s.outcome = outcome
        self._s.reason = reason
        self._trail.event("decision", f"run ends {outcome}: {reason}", outcome=outcome)

    def _kube_options(self, start_to_close: timedelta) -> dict[str, Any]:
        """Activity options of a Kubernetes call: heartbeats, and retries with backoff until the
        run's ``kube_retry_budget`` is spent (an API server outage), then the step fails."""
        return {
            "start_to_close_timeout": start_to_close,
            "schedule_to_close_timeout": start_to_close + self._inp.kube_retry_budget,
            "heartbeat_timeout": self._inp.heartbeat_timeout,
            "retry_policy": KUBE_RETRY,
        }

    def _run_info(
        self, first: AlertRef | None, outcome: Outcome = "running", ended: datetime | None = None,
        cooldown_until: datetime | None = None,
    ) -> RunInfo:
        info = workflow.info()
        run = self._inp.run_info(info.run_id, info.workflow_id, info.start_time, first)
        return run.model_copy(update={"outcome": outcome, "ended_at": ended, "cooldown_until": cooldown_until})

    def _result(self) -> RemediationResult:
        s = self._s
        return RemediationResult(
            run_id=workflow.info().run_id,
            target=self._inp.target,
            playbook=self._inp.playbook.name,
            outcome=s.outcome,
            reason=s.reason,
            steps=s.steps,
            alerts=sorted(s.seen),
        )


def _human(delta: timedelta) -> str:
    return fmt(timedelta(seconds=int(delta.total_seconds())))

