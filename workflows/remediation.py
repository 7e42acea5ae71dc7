"""RemediationWorkflow: one remediation of one Kubernetes object, driven by a playbook.

Started by the intake with signal-with-start on the workflow ID ``remediation/<target key>``
(remediator.domain.runs.workflow_id_for), so at most one remediation runs per target: later
alerts for the same target arrive as ``alert`` signals and are attached to this run.

The run, in order (every decision goes to the audit trail through the ``audit_write``
activity, whose input, fixed in this workflow's history, carries events with deterministic
keys: a retried or replayed write writes the same thing, and never fails the run):

1. record the run and its first alert(s); read the target once (``describe_target``);
2. diagnose: gather the playbook's evidence concurrently (``diagnose_<check>`` activities),
   then ``assess`` turns it into a confidence and evaluates the steps' CEL conditions;
3. for each step: evaluate ``when``; apply its approval policy — when approval is needed,
   post one Slack message (``post_approval_request``) and wait durably for the ``decide``
   Update (its validator refuses unauthorised users, stale requests and second decisions),
   escalating at ``approval_timeout`` and giving up (``needs_human``) at
   ``approval_deadline``; plan the action (``plan_mutation`` reads the target and fixes the
   concrete change), record the plan in the audit trail, run the action with that plan (a
   mutating activity that does what kubectl does and sends nothing an earlier attempt already
   applied), record the exact change, then poll the step's health check until it
   passes, fails for good or times out; retry the step up to ``retries`` times; on failure
   ``stop``, ``continue`` or ``rollback`` (run the undo actions of this run's changes,
   newest first) and post a Slack notice;
4. verify: wait up to the playbook's ``verification_window`` for every attached alert to
   resolve (resolved notification, or the Alertmanager API) -> ``healed`` / ``not_healed``;
5. end: record the outcome and the end of the cooldown in the audit trail, post one Slack
   notice with the outcome, whatever ended the run (a failed step, an internal error, a
   cancellation); a run that Temporal terminates or times out gets both from
   remediator.app.settle instead;
6. cool down: stay alive for the playbook's ``cooldown`` so further alerts for the target
   are recorded and start nothing, then return.

Every activity heartbeats (remediator.app.temporal.HeartbeatInterceptor) under the run's
``heartbeat_timeout``, so the work of a dead worker is retried elsewhere within seconds;
Kubernetes calls are retried with backoff for ``kube_retry_budget`` (an API server outage).

Runs started before plans existed (their history has no ``durable-runs`` patch marker) keep
their command sequence: local-activity audit writes, one mutating activity per step, the
notices of the time.

Deterministic: only ``workflow.now()``, timers, activities and signals; no I/O.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, NoReturn
from urllib.parse import quote

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, is_cancelled_exception
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from remediator.domain.durations import format_duration as fmt
    from remediator.k8s.errors import NON_RETRYABLE_ERROR_TYPES
    from remediator.domain.messages import (
        AlertRef,
        AlertSignal,
        ApprovalDecision,
        ApprovalMessage,
        ApprovalOutcome,
        ApprovalRequest,
        AssessInput,
        Assessment,
        AuditEvent,
        AuditWriteInput,
        DecisionResult,
        DescribeTargetInput,
        DiagnosisInput,
        Evidence,
        HealthInput,
        HealthResult,
        MutationInput,
        MutationPlan,
        MutationPlanInput,
        MutationResult,
        Notice,
        NoticeResult,
        RemediationInput,
        RemediationResult,
        RemediationStatus,
        ResolveApproversInput,
        ResolveApproversResult,
        RunInfo,
        StepRecord,
        TargetState,
        UndoAction,
    )
    from remediator.domain.playbook import ApprovalBelow, Step
    from remediator.domain.runs import SA_ALERTNAME, SA_NAMESPACE, SA_OUTCOME, SA_PLAYBOOK, SA_TARGET

DURABLE_RUNS = "durable-runs"
"""Patch ID (``workflow.patched``): audit writes as regular activities, mutations planned then
applied, one outcome notice per run, internal errors and cancellations recorded."""

# Error types an activity raises that retrying cannot fix (remediator.k8s).
NON_RETRYABLE = list(NON_RETRYABLE_ERROR_TYPES)

# Unlimited attempts: the run's ``kube_retry_budget`` bounds them (schedule-to-close timeout).
KUBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE,
)
HEALTH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=NON_RETRYABLE,
)
# Unlimited attempts: a run waits for its audit trail, it never fails or acts without it.
AUDIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
AUDIT_TIMEOUT = timedelta(seconds=30)
FINAL_DRAIN_PASSES = 5
VERIFY_POLL = timedelta(seconds=5)
SLACK_NON_RETRYABLE = ["SlackNotConfigured", "SlackPermanentError"]
# An approval request is retried until the run stops waiting: a Slack outage never loses it.
SLACK_REQUEST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=SLACK_NON_RETRYABLE,
)
SLACK_NOTICE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=20,
    non_retryable_error_types=SLACK_NON_RETRYABLE,
)


class StepFailed(Exception):
    """A step did not succeed; ``refused`` marks a safety refusal (never retried)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@workflow.defn(name="RemediationWorkflow")
class RemediationWorkflow:
    """Runs one playbook against one target; see the module docstring for the phases."""

    @workflow.init
    def __init__(self, inp: RemediationInput) -> None:
        self._inp = inp
        self._inbox: list[AlertSignal] = []
        self._seen: set[str] = set()
        self._firing: dict[str, AlertRef] = {}  # dedup_key -> alert attached to this run
        self._resolved: set[str] = set()
        self._phase = "diagnosing"
        self._outcome = "running"
        self._reason = ""
        self._current: int | None = None
        self._steps = [
            StepRecord(index=i, name=s.name, action=s.action) for i, s in enumerate(inp.playbook.steps)
        ]
        self._seq = 0
        self._buffer: list[AuditEvent] = []
        self._undo: list[UndoAction] = []
        self._state: TargetState | None = None
        self._run_pending: RunInfo | None = None
        self._evidence: list[Evidence] = []
        self._assessment: Assessment | None = None
        self._waiting: ApprovalRequest | None = None
        self._authorized: set[str] = set()
        self._decisions: dict[str, ApprovalDecision] = {}
        self._timeline: list[str] = []

    # ------------------------------------------------------------------ messages

    @workflow.signal(name="alert")
    def alert(self, sig: AlertSignal) -> None:
        """An alert for this target (firing or resolved); handled in the run loop."""
        self._inbox.append(sig)

    @workflow.query(name="status")
    def status(self) -> RemediationStatus:
        """The run as it stands; reads only."""
        return RemediationStatus(
            run_id=workflow.info().run_id,
            target=self._inp.target,
            playbook=self._inp.playbook.name,
            phase=self._phase,  # type: ignore[arg-type]
            outcome=self._outcome,  # type: ignore[arg-type]
            reason=self._reason,
            current_step=self._current,
            steps=self._steps,
            alerts=sorted(self._seen),
            simulate=self._inp.simulate,
            confidence=self._assessment.confidence if self._assessment else None,
            evidence=self._evidence,
            waiting=self._waiting,
        )

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecision) -> DecisionResult:
        """A human's Approve/Reject for the step that is waiting (Slack button, Socket Mode or CLI)."""
        decided = decision.model_copy(update={"decided_at": workflow.now()})
        self._decisions[decision.request_id] = decided
        verb = "approved" if decision.decision == "approve" else "rejected"
        return DecisionResult(
            request_id=decision.request_id,
            decision=decision.decision,
            user_id=decision.user_id,
            message=f"{verb} by {decision.user_id}; step {self._waiting.step_index + 1 if self._waiting else '?'} {'runs now' if verb == 'approved' else 'will not run'}",
        )

    @decide.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        """Refuse, before anything is written to history: a second decision, a decision for a
        request that is not waiting, or a user who is not an approver of this playbook."""
        earlier = self._decisions.get(decision.request_id)
        if earlier is not None:
            verb = "approved" if earlier.decision == "approve" else "rejected"
            raise ValueError(f"already decided: {verb} by {earlier.user_id} via {earlier.via}")
        waiting = self._waiting
        if waiting is None:
            raise ValueError("no step of this run is waiting for approval")
        if decision.request_id != waiting.request_id:
            raise ValueError(f"stale request {decision.request_id}: the run waits on {waiting.request_id}")
        if decision.user_id not in self._authorized:
            raise ValueError(
                f"{decision.user_id} is not an approver of playbook {self._inp.playbook.name}"
            )

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, inp: RemediationInput) -> RemediationResult:
        self._v2 = workflow.patched(DURABLE_RUNS)
        self._log("remediation of %s with playbook %s (%s)", inp.target.key, inp.playbook.name, inp.playbook_ref.sha256[:12])
        # Signal-with-start delivers the first alert with the start; wait briefly otherwise.
        await self._sleep_or_signal(timedelta(seconds=10) if not self._inbox else timedelta(0))
        self._event(
            "run_started",
            f"remediation of {inp.target.key} with playbook {inp.playbook.name}",
            playbook=inp.playbook_ref.model_dump(),
            target=inp.target.model_dump(),
            steps=[s.name for s in inp.playbook.steps],
        )
        self._drain_inbox()
        first = next(iter(self._firing.values()), None)
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
        self._run_pending = self._run_info(first)
        if not self._v2:
            return await self._run_v1(first)

        cancelled = False
        try:
            await self._remediate()
            if self._outcome == "running":
                await self._verify()
        except StepFailed as failure:
            # Outcome already set by the step logic; the message is the reason.
            if self._outcome == "running":
                self._finish("refused" if failure.refused else "failed", str(failure))
        except (asyncio.CancelledError, Exception) as err:
            if is_cancelled_exception(err):  # also an awaited activity's ActivityError on cancel
                cancelled = True
                self._finish("cancelled", "the workflow was cancelled; the remaining steps did not run")
            else:  # a bug must not leave a run without an outcome or a notice
                workflow.logger.exception("remediation of %s: internal error", inp.target.key)
                self._finish("failed", f"internal error: {type(err).__name__}: {err}")

        self._phase = "done" if cancelled or inp.playbook.cooldown <= timedelta(0) else "cooldown"
        ended = workflow.now()
        until = ended + inp.playbook.cooldown
        self._event(
            "outcome", f"{self._outcome}: {self._reason}",
            outcome=self._outcome, reason=self._reason, cooldown_until=until.isoformat(),
        )
        # The audit first (the outcome and the cooldown must not wait on Slack), then the search
        # attribute: a run stopped in between is still found by remediator.app.settle.
        await self._flush(run=self._run_info(first, outcome=self._outcome, ended=ended, cooldown_until=until))
        workflow.upsert_search_attributes([SA_OUTCOME.value_set(self._outcome)])
        await self._notify(self._outcome, self._outcome_title(), mention=self._outcome_mention())
        await self._flush()
        self._log("remediation of %s ended %s: %s", inp.target.key, self._outcome, self._reason)
        if cancelled:
            raise asyncio.CancelledError()

        await self._cooldown(ended)
        # Alerts that arrived while the last write ran are recorded before the run ends (a few
        # passes: a sender that never stops must not keep an ended run alive).
        for _ in range(FINAL_DRAIN_PASSES):
            if not self._inbox:
                break
            self._drain_inbox(cooldown_until=until)
            await self._flush()
        self._phase = "done"
        return self._result()

    async def _run_v1(self, first: AlertRef | None) -> RemediationResult:
        """The end of a run started before ``DURABLE_RUNS``: its command sequence, unchanged."""
        inp = self._inp
        try:
            await self._remediate()
        except StepFailed as failure:
            if self._outcome == "running":
                self._finish("refused" if failure.refused else "failed", str(failure))
        if self._outcome == "running":
            await self._verify()
            if self._outcome == "not_healed":
                await self._notify("not_healed", f"{inp.target.key} is not healed: {self._reason}")

        self._phase = "done" if inp.playbook.cooldown <= timedelta(0) else "cooldown"
        workflow.upsert_search_attributes([SA_OUTCOME.value_set(self._outcome)])
        self._event("outcome", f"{self._outcome}: {self._reason}", outcome=self._outcome, reason=self._reason)
        ended = workflow.now()
        await self._flush(
            run=self._run_info(first, outcome=self._outcome, ended=ended, cooldown_until=ended + inp.playbook.cooldown)
        )
        self._log("remediation of %s ended %s: %s", inp.target.key, self._outcome, self._reason)
        await self._cooldown(ended)
        self._phase = "done"
        return self._result()

    def _result(self) -> RemediationResult:
        return RemediationResult(
            run_id=workflow.info().run_id,
            target=self._inp.target,
            playbook=self._inp.playbook.name,
            outcome=self._outcome,  # type: ignore[arg-type]
            reason=self._reason,
            steps=self._steps,
            alerts=sorted(self._seen),
        )

    def _outcome_title(self) -> str:
        inp = self._inp
        if self._outcome == "healed":
            return f"{inp.target.key} healed by playbook {inp.playbook.name}"
        if self._outcome == "not_healed":
            return f"{inp.target.key} is not healed: {self._reason}"
        return f"remediation of {inp.target.key} with playbook {inp.playbook.name} ended {self._outcome}: {self._reason}"

    def _outcome_mention(self) -> str | None:
        slack = self._inp.playbook.slack
        needs_people = ("not_healed", "failed", "refused", "needs_human", "rolled_back")
        return slack.oncall_usergroup if slack and self._outcome in needs_people else None

    # ------------------------------------------------------------------ phases

    async def _remediate(self) -> None:
        inp = self._inp
        try:
            self._state = await workflow.execute_activity(
                "describe_target",
                DescribeTargetInput(target=inp.target),
                result_type=TargetState,
                **self._kube_options(timedelta(seconds=30)),
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            if not self._v2:
                raise
            raise StepFailed(f"could not read {inp.target.key}: {_cause_message(err, inp.kube_retry_budget)}") from err
        self._event("decision", f"target {inp.target.key}: {self._state.summary}", state=self._state.model_dump(mode="json"))
        if not self._state.exists:
            self._finish("refused", f"{inp.target.key} does not exist")
            if not self._v2:
                await self._notify("failed", f"{inp.target.key} does not exist; nothing was changed")
            return
        await self._diagnose()
        self._phase = "remediating"
        for index, step in enumerate(inp.playbook.steps):
            if self._alerts_resolved() and inp.playbook.on_resolved == "stop":
                for rest in self._steps[index:]:
                    rest.status = "skipped"
                self._event("decision", "alert resolved before the remaining steps ran; playbook says stop")
                self._finish("resolved", "the alert resolved before the remaining steps ran")
                return
            self._current = index
            skip = self._skip_reason(index, step)
            if skip:
                self._steps[index].status = "skipped"
                self._steps[index].message = skip
                self._event("decision", f"step {index + 1} ({step.name}) skipped: {skip}", step=index)
                continue
            approval = await self._approval(index, step)
            if approval is False:
                return
            try:
                await self._run_step(index, step)
            except StepFailed as failure:
                record = self._steps[index]
                record.status = "refused" if failure.refused else "failed"
                record.message = str(failure)
                if approval is not True:
                    await self._update_message(*approval, "failed", f"{self._decided_line(approval[0])}; the step ran and failed: {failure}")
                title = f"step {index + 1} ({step.name}) of {inp.playbook.name} on {inp.target.key} "
                if failure.refused:
                    self._finish("refused", f"step {index + 1} ({step.name}) refused: {failure}")
                    if not self._v2:
                        await self._notify("safety_refusal", title + f"was refused for safety: {failure}")
                    return
                # Since DURABLE_RUNS the outcome notice tells how a run ended; mid-run notices
                # are for what goes on.
                if not self._v2 or step.on_failure == "continue":
                    await self._notify("health_failed", title + f"failed: {failure} (on_failure: {step.on_failure})")
                if step.on_failure == "continue":
                    self._event("decision", f"step {index + 1} ({step.name}) failed; on_failure: continue", step=index)
                    continue
                if step.on_failure == "rollback":
                    self._event("decision", f"step {index + 1} ({step.name}) failed; on_failure: rollback", step=index)
                    await self._undo_all()
                    self._finish("rolled_back", f"step {index + 1} ({step.name}) failed: {failure}; this run's changes were undone")
                    return
                self._finish("failed", f"step {index + 1} ({step.name}) failed: {failure}")
                return
            if approval is not True:
                await self._update_message(*approval, "executed", f"{self._decided_line(approval[0])}; the step ran: {self._steps[index].message}")
        self._current = None

    async def _diagnose(self) -> None:
        """Gather every piece of evidence concurrently, then turn it into a confidence."""
        pb = self._inp.playbook
        conditions = [s.when if isinstance(s.when, str) else None for s in pb.steps]
        if not pb.diagnosis and pb.confidence is None and not any(conditions):
            return
        self._phase = "diagnosing"
        primary = next(iter(self._firing.values()), None)

        async def gather(d) -> Evidence:
            try:
                return await workflow.execute_activity(
                    f"diagnose_{d.check}",
                    DiagnosisInput(target=self._inp.target, name=d.name, check=d.check, params=getattr(d, d.check).model_dump(mode="json"), alert=primary),
                    result_type=Evidence,
                    start_to_close_timeout=d.timeout,
                    heartbeat_timeout=self._inp.heartbeat_timeout,
                    retry_policy=HEALTH_RETRY,
                )
            except ActivityError as err:
                _raise_if_cancelled(err)
                message = _cause_message(err)
                return Evidence(name=d.name, check=d.check, signal=False, summary=f"could not be gathered: {message}", error=message)

        self._evidence = list(await asyncio.gather(*(gather(d) for d in pb.diagnosis)))
        for ev in self._evidence:
            self._event(
                "evidence",
                f"{ev.name} ({ev.check}): {ev.summary}",
                name=ev.name, check=ev.check, signal=ev.signal, value=ev.value, error=ev.error,
            )
        try:
            self._assessment = await workflow.execute_activity(
                "assess",
                AssessInput(
                    evidence=self._evidence,
                    confidence=pb.confidence.model_dump(mode="json", exclude_none=True) if pb.confidence else None,
                    conditions=conditions,
                    alert=primary,
                ),
                result_type=Assessment,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=HEALTH_RETRY,
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            # Fail closed: no confidence means humans decide, and no condition holds.
            message = _cause_message(err)
            self._assessment = Assessment(
                confidence=0.0,
                reason=f"could not assess the evidence: {message}",
                conditions=[False if c else None for c in conditions],
                condition_reasons=[f"could not be evaluated: {message}" if c else "" for c in conditions],
            )
        a = self._assessment
        self._event("decision", f"confidence {a.confidence:.2f}: {a.reason}", confidence=a.confidence, conditions=a.conditions, condition_reasons=a.condition_reasons)

    async def _approval(self, index: int, step: Step) -> bool | tuple[ApprovalRequest, ApprovalMessage | None]:
        """Apply the step's approval policy. True: no approval needed. False: not approved (the run
        ends ``needs_human``). A (request, message) pair: approved, the message to update later."""
        policy = step.approval
        if policy == "never":
            return True
        confidence = self._assessment.confidence if self._assessment else None
        if isinstance(policy, ApprovalBelow):
            if confidence is not None and confidence >= policy.below:
                self._event("decision", f"step {index + 1} ({step.name}): confidence {confidence:.2f} is not below {policy.below:.2f}; no approval needed", step=index)
                return True
            reason = f"confidence {confidence if confidence is not None else 0:.2f} is below {policy.below:.2f}"
        else:
            reason = "the playbook asks for approval of this step every time"
        return await self._ask(index, step, reason, confidence)

    async def _ask(self, index: int, step: Step, reason: str, confidence: float | None) -> bool | tuple[ApprovalRequest, ApprovalMessage | None]:
        inp = self._inp
        slack = inp.playbook.slack
        assert slack is not None  # the playbook model requires it for steps that need approval
        info = workflow.info()
        members = set(slack.approvers.users)
        if slack.approvers.usergroups:
            try:
                resolved = await workflow.execute_activity(
                    "resolve_approvers",
                    ResolveApproversInput(usergroups=slack.approvers.usergroups),
                    result_type=ResolveApproversResult,
                    start_to_close_timeout=timedelta(seconds=30),
                    heartbeat_timeout=self._inp.heartbeat_timeout,
                    retry_policy=HEALTH_RETRY,
                )
                for users in resolved.members.values():
                    members.update(users)
                problems = resolved.errors
            except ActivityError as err:
                _raise_if_cancelled(err)
                problems = [_cause_message(err)]
            if problems:
                self._event("approval", "could not expand approver user groups; only users named directly can approve: " + "; ".join(problems), step=index)
        self._authorized = members
        now = workflow.now()
        primary = next(iter(self._firing.values()), None)
        request = ApprovalRequest(
            request_id=f"{info.run_id}/step-{index}",
            run_id=info.run_id,
            workflow_id=info.workflow_id,
            step_index=index,
            step_name=step.name,
            action=step.action,
            params=step.params.model_dump(mode="json"),
            change=_describe_change(step, inp.target),
            target=inp.target,
            playbook=inp.playbook.name,
            alert=primary,
            evidence=self._evidence,
            confidence=confidence,
            reason=reason,
            channel=slack.channel,
            approvers=slack.approvers.users,
            approver_groups=slack.approvers.usergroups,
            oncall_usergroup=slack.oncall_usergroup,
            temporal_url=self._temporal_url(),
            audit_url=self._audit_url(),
            requested_at=now,
            escalate_at=now + slack.approval_timeout,
            deadline=now + slack.approval_deadline,
        )
        self._waiting = request
        self._phase = "awaiting_approval"
        self._event(
            "approval",
            f"step {index + 1} ({step.name}) waits for approval: {reason}",
            step=index, request_id=request.request_id, approvers=sorted(members),
            escalate_at=request.escalate_at.isoformat(), deadline=request.deadline.isoformat(),
        )
        await self._flush()
        post = workflow.start_activity(
            "post_approval_request",
            request,
            result_type=ApprovalMessage,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=self._inp.heartbeat_timeout,
            retry_policy=SLACK_REQUEST_RETRY,
        )
        message: ApprovalMessage | None = None
        posting = True
        escalated = False
        rid = request.request_id
        while rid not in self._decisions and workflow.now() < request.deadline:
            until = request.deadline if escalated else request.escalate_at
            try:
                await workflow.wait_condition(
                    lambda: rid in self._decisions or (posting and post.done()),
                    timeout=max(until - workflow.now(), timedelta(milliseconds=1)),
                )
            except asyncio.TimeoutError:
                pass
            if posting and post.done():
                posting = False
                try:
                    message = post.result()
                    self._event("approval", f"approval request posted to Slack {message.channel} (ts {message.ts})", step=index, channel=message.channel, ts=message.ts, posted=message.posted)
                except ActivityError as err:
                    _raise_if_cancelled(err)
                    self._event("approval", f"could not post the approval request to Slack: {_cause_message(err)}; the run keeps waiting (remediator approve/reject works)", step=index)
                await self._flush()
                continue
            if rid in self._decisions:
                break
            if not escalated and workflow.now() >= request.escalate_at:
                escalated = True
                text = f"no decision within {fmt(slack.approval_timeout)}; escalated to the on-call"
                self._event("approval", text, step=index)
                if message is not None:
                    await self._update_message(request, message, "escalated", text)
                await self._notify("approval_escalation", f"step {index + 1} ({step.name}) of {inp.playbook.name} on {inp.target.key} still waits for approval", mention=slack.oncall_usergroup)
        if posting:
            post.cancel()
        self._waiting = None
        self._phase = "remediating"
        decision = self._decisions.get(rid)
        record = self._steps[index]
        if decision is None:
            text = f"no decision by the deadline ({fmt(slack.approval_deadline)}); the step did not run"
            self._event("approval", text, step=index, request_id=rid, decision=None)
            record.status, record.message = "skipped", text
            if message is not None:
                await self._update_message(request, message, "expired", text)
            if not self._v2:
                await self._notify("approval_timeout", f"step {index + 1} ({step.name}) of {inp.playbook.name} on {inp.target.key} was not approved in time; it did not run", mention=slack.oncall_usergroup)
            self._finish("needs_human", f"step {index + 1} ({step.name}) was not approved by its deadline; it did not run")
            return False
        verb = "approved" if decision.decision == "approve" else "rejected"
        text = self._decided_line(request)
        self._event(
            "approval",
            f"step {index + 1} ({step.name}) {verb} by {decision.user_id} via {decision.via}" + (f": {decision.comment}" if decision.comment else ""),
            step=index, request_id=rid, decision=decision.decision, user_id=decision.user_id, user_name=decision.user_name, via=decision.via,
        )
        if decision.decision == "reject":
            record.status, record.message = "skipped", f"rejected by {decision.user_id}"
            if message is not None:
                await self._update_message(request, message, "rejected", text + "; the step did not run")
            if not self._v2:
                await self._notify("approval_rejected", f"step {index + 1} ({step.name}) of {inp.playbook.name} on {inp.target.key} was rejected by <@{decision.user_id}>; it did not run")
            self._finish("needs_human", f"step {index + 1} ({step.name}) was rejected by {decision.user_id}; it did not run")
            return False
        if message is not None:
            await self._update_message(request, message, "approved", text + f"; running step {index + 1}")
        return (request, message)

    def _decided_line(self, request: ApprovalRequest) -> str:
        """``approved by <@U1> at 2026-11-21 05:56:13Z via slack``: who and when, for the message."""
        d = self._decisions[request.request_id]
        verb = "approved" if d.decision == "approve" else "rejected"
        at = d.decided_at.strftime("%Y-%m-%d %H:%M:%SZ") if d.decided_at else "?"
        return f"{verb} by <@{d.user_id}> at {at} via {d.via}"

    async def _update_message(self, request: ApprovalRequest, message: ApprovalMessage | None, status: str, text: str) -> None:
        if message is None:
            return
        try:
            await workflow.execute_activity(
                "update_approval_message",
                ApprovalOutcome(request=request, message=message, status=status, text=text),  # type: ignore[arg-type]
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=SLACK_NOTICE_RETRY,
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            self._event("notice", f"could not update the Slack approval message: {_cause_message(err)}")

    async def _notify(self, kind: str, title: str, mention: str | None = None) -> None:
        """Post one escalation notice to the playbook's Slack channel (folded into the target's thread)."""
        slack = self._inp.playbook.slack
        if slack is None:
            return
        info = workflow.info()
        notice = Notice(
            event_key=f"{info.run_id}/{self._seq:05d}-{kind}",
            kind=kind,  # type: ignore[arg-type]
            channel=slack.channel,
            target=self._inp.target,
            run_id=info.run_id,
            workflow_id=info.workflow_id,
            playbook=self._inp.playbook.name,
            title=title,
            timeline=self._timeline[-20:],
            mention=mention,
            alert=next(iter(self._firing.values()), None),
            temporal_url=self._temporal_url(),
            audit_url=self._audit_url(),
        )
        try:
            result = await workflow.execute_activity(
                "post_notice",
                notice,
                result_type=NoticeResult,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=SLACK_NOTICE_RETRY,
            )
            self._event("notice", f"Slack notice ({kind}) posted: {title}", notice_kind=kind, channel=result.channel, ts=result.ts, thread_ts=result.thread_ts)
        except ActivityError as err:
            _raise_if_cancelled(err)
            self._event("notice", f"could not post the Slack notice ({kind}): {_cause_message(err)}", notice_kind=kind)

    def _temporal_url(self) -> str:
        info = workflow.info()
        if not self._inp.ui_url:
            return ""
        return f"{self._inp.ui_url.rstrip('/')}/namespaces/{info.namespace}/workflows/{quote(info.workflow_id, safe='')}/{info.run_id}/history"

    def _audit_url(self) -> str:
        if not self._inp.public_url:
            return ""
        return f"{self._inp.public_url.rstrip('/')}/runs/{workflow.info().run_id}"

    async def _run_step(self, index: int, step: Step) -> None:
        record = self._steps[index]
        record.status = "running"
        params = step.params.model_dump(mode="json")
        check = step.health.check if step.health else None
        self._event(
            "step_intent",
            f"step {index + 1} ({step.name}): {step.action} {self._inp.target.key}"
            + (f", then check {check}" if check else ""),
            step=index,
            action=step.action,
            params=params,
            health=step.health.model_dump(mode="json") if step.health else None,
        )
        last_error = ""
        for attempt in range(1, step.retries + 2):
            record.attempts = attempt
            if not self._v2:
                await self._flush()
            result = await self._mutate(step.action, params, index, attempt, step.timeout, step)
            self._event(
                "mutation",
                result.message,
                step=index,
                attempt=attempt,
                changed=result.changed,
                requests=[r.model_dump(mode="json") for r in result.requests],
                resource_version_before=result.resource_version_before,
                resource_version_after=result.resource_version_after,
                state_before=result.state_before,
                state_after=result.state_after,
                already_applied=result.already_applied,
            )
            if result.undo is not None and result.changed:
                self._undo.append(result.undo)
            if step.health is None:
                record.status = "succeeded"
                record.message = result.message
                await self._flush()
                return
            healthy, message = await self._check(index, attempt, step)
            if healthy:
                record.status = "succeeded"
                record.message = message
                await self._flush()
                return
            last_error = message
            if attempt <= step.retries:
                self._event("decision", f"step {index + 1} ({step.name}) health check failed: {message}; retrying", step=index)
        raise StepFailed(last_error)

    async def _mutate(
        self, action: str, params: dict[str, Any], index: int, attempt: int, timeout: timedelta, step: Step | None
    ) -> MutationResult:
        """Plan the action, record the plan in the audit trail, then apply it.

        The plan (``plan_mutation``, a read) fixes the concrete change in this workflow's
        history; the action's activity gets it as input, so every retry applies that change and
        one that finds it applied sends nothing. Raises StepFailed when planning or applying
        fails (``refused`` for a safety refusal)."""
        if action == "drain":
            drain_timeout = step.drain.timeout if step and step.drain else timedelta(minutes=5)
            timeout = max(timeout, drain_timeout + timedelta(minutes=1))
        if not self._v2:
            return await self._mutate_v1(action, params, index, attempt, timeout)
        inp = self._inp
        try:
            plan = await workflow.execute_activity(
                "plan_mutation",
                MutationPlanInput(target=inp.target, action=action, params=params, now=workflow.now()),
                result_type=MutationPlan,
                **self._kube_options(timedelta(seconds=30)),
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            self._mutation_failed(action, index, attempt, err)
        self._event(
            "plan",
            plan.message,
            step=index,
            attempt=attempt,
            action=action,
            noop=plan.noop,
            change=plan.change,
            precondition=plan.precondition,
            requests=[r.model_dump(mode="json") for r in plan.requests],
            resource_version=plan.resource_version,
            state_before=plan.state_before,
            undo=plan.undo.model_dump(mode="json") if plan.undo else None,
        )
        if plan.noop:
            return plan.unchanged()
        await self._flush()  # the intent is in the audit trail before anything is sent
        try:
            return await workflow.execute_activity(
                action,
                MutationInput(target=inp.target, plan=plan, simulate=inp.simulate),
                result_type=MutationResult,
                **self._kube_options(timeout),
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            self._mutation_failed(action, index, attempt, err)

    async def _mutate_v1(self, action: str, params: dict[str, Any], index: int, attempt: int, timeout: timedelta) -> MutationResult:
        inp = self._inp
        try:
            return await workflow.execute_activity(
                action,
                MutationInput(
                    target=inp.target,
                    params=params,
                    request_id=f"{workflow.info().run_id}/{index}/{attempt}",
                    now=workflow.now(),
                    simulate=inp.simulate,
                ),
                result_type=MutationResult,
                **self._kube_options(timeout),
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            self._mutation_failed(action, index, attempt, err)

    def _mutation_failed(self, action: str, index: int, attempt: int, err: ActivityError) -> NoReturn:
        cause = _last_failure(err)
        refused = isinstance(cause, ApplicationError) and cause.type == "SafetyRefusal"
        message = _cause_message(err, self._inp.kube_retry_budget)
        # A partly done action (a drain that timed out on a PodDisruptionBudget) reports what it
        # already sent and how to undo it: record both so on_failure: rollback can restore.
        partial = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else None
        partial = partial if isinstance(partial, dict) else {}
        if partial.get("undo"):
            self._undo.append(UndoAction.model_validate(partial["undo"]))
        self._event(
            "decision",
            f"{action} failed: {message}",
            step=index,
            attempt=attempt,
            error_type=getattr(cause, "type", None),
            requests=partial.get("requests", []),
        )
        raise StepFailed(message, refused=refused) from err

    def _kube_options(self, start_to_close: timedelta) -> dict[str, Any]:
        """Activity options of a Kubernetes call: heartbeats, and retries with backoff until the
        run's ``kube_retry_budget`` is spent (an API server outage), then the step fails."""
        return {
            "start_to_close_timeout": start_to_close,
            "schedule_to_close_timeout": start_to_close + self._inp.kube_retry_budget,
            "heartbeat_timeout": self._inp.heartbeat_timeout,
            "retry_policy": KUBE_RETRY,
        }

    async def _check(self, index: int, attempt: int, step: Step) -> tuple[bool, str]:
        """Poll the step's health check every ``interval`` until it passes, fails for good or times out."""
        assert step.health is not None
        health = step.health
        name = health.check
        deadline = workflow.now() + health.timeout
        polls = 0
        result = HealthResult(healthy=False, message="not evaluated")
        while True:
            polls += 1
            if name == "alert_resolved" and self._alerts_resolved():
                result = HealthResult(healthy=True, final=True, message="resolved notification received")
            else:
                result = await self._evaluate(name, getattr(health, name).model_dump(mode="json"))
            if result.healthy or result.final or workflow.now() >= deadline:
                break
            remaining = deadline - workflow.now()
            await self._sleep_or_signal(min(health.interval, remaining))
            self._drain_inbox()
        timed_out = not result.healthy and not result.final
        message = result.message + (f" (timed out after {fmt(health.timeout)})" if timed_out else "")
        self._event(
            "health",
            message,
            step=index,
            attempt=attempt,
            check=name,
            healthy=result.healthy,
            polls=polls,
            observed=result.observed,
        )
        return result.healthy, message

    async def _evaluate(self, name: str, params: dict[str, Any]) -> HealthResult:
        primary = next(iter(self._firing.values()), None)
        try:
            return await workflow.execute_activity(
                f"check_{name}",
                HealthInput(target=self._inp.target, check=name, params=params, alert=primary),
                result_type=HealthResult,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=HEALTH_RETRY,
            )
        except ActivityError as err:
            _raise_if_cancelled(err)
            cause = err.cause
            final = isinstance(cause, ApplicationError) and cause.non_retryable
            return HealthResult(healthy=False, final=final, message=f"check could not be evaluated: {_cause_message(err)}")

    async def _undo_all(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            self._event("undo", f"undo: {undo.description or undo.action}", action=undo.action, params=undo.params)
            if not self._v2:
                await self._flush()
            try:
                result = await self._mutate(undo.action, undo.params, -1, len(self._undo) + 1, timedelta(minutes=2), None)
            except StepFailed as failure:
                self._event("undo", f"undo {undo.action} failed: {failure}", action=undo.action)
                continue
            self._event(
                "mutation",
                result.message,
                undo=True,
                changed=result.changed,
                requests=[r.model_dump(mode="json") for r in result.requests],
                resource_version_before=result.resource_version_before,
                resource_version_after=result.resource_version_after,
                already_applied=result.already_applied,
            )

    async def _verify(self) -> None:
        """Wait up to the verification window for every attached alert to stop firing."""
        self._phase = "verifying"
        window = self._inp.playbook.verification_window
        deadline = workflow.now() + window
        self._event("decision", f"steps done; verifying for up to {fmt(window)} that the alert resolves")
        while not self._alerts_resolved():
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                break
            await self._sleep_or_signal(min(VERIFY_POLL, remaining))
            self._drain_inbox()
            if self._alerts_resolved():
                break
            result = await self._evaluate("alert_resolved", {})
            if result.healthy:
                for key in self._firing:
                    self._resolved.add(key)
                self._event("health", result.message, check="alert_resolved", healthy=True)
        if self._alerts_resolved():
            self._finish("healed", "every step succeeded and the alert resolved")
        else:
            self._finish("not_healed", f"the alert was still firing {fmt(window)} after the last step")

    async def _cooldown(self, ended) -> None:
        cooldown = self._inp.playbook.cooldown
        until = ended + cooldown
        while workflow.now() < until:
            await self._sleep_or_signal(until - workflow.now())
            if self._inbox:
                self._drain_inbox(cooldown_until=until)
                await self._flush()

    # ------------------------------------------------------------------ helpers

    def _drain_inbox(self, cooldown_until=None) -> None:
        """Fold pending signals into the run: dedup firings, attach new ones, note resolutions."""
        while self._inbox:
            sig = self._inbox.pop(0)
            alert = sig.alert
            key = alert.dedup_key
            if alert.status == "resolved":
                if key in self._firing and key not in self._resolved:
                    self._resolved.add(key)
                    self._event("alert", f"alert {alert.alertname} {alert.fingerprint} resolved", dedup_key=key, status="resolved", disposition="resolved")
                continue
            if key in self._seen:
                continue  # the same firing delivered again (repeat, HA peer, resend)
            self._seen.add(key)
            if cooldown_until is not None:
                disposition = "cooldown"
                message = f"alert {alert.alertname} {alert.fingerprint} for {self._inp.target.key} recorded, no new remediation: cooling down until {cooldown_until.isoformat()}"
            else:
                self._firing[key] = alert
                disposition = "started" if len(self._firing) == 1 else "attached"
                message = (
                    f"alert {alert.alertname} {alert.fingerprint} firing since {alert.starts_at.isoformat()}"
                    if disposition == "started"
                    else f"alert {alert.alertname} {alert.fingerprint} attached to the running remediation"
                )
            self._event(
                "alert",
                message,
                dedup_key=key,
                status="firing",
                disposition=disposition,
                playbook=sig.playbook,
                alert=alert.model_dump(mode="json"),
            )

    def _alerts_resolved(self) -> bool:
        return bool(self._firing) and all(k in self._resolved for k in self._firing)

    def _skip_reason(self, index: int, step: Step) -> str | None:
        if step.when is None:
            return None
        if isinstance(step.when, str):
            a = self._assessment
            holds = a.conditions[index] if a and index < len(a.conditions) else False
            if holds:
                return None
            why = a.condition_reasons[index] if a and index < len(a.condition_reasons) else "not evaluated"
            return f"condition {step.when!r} is false: {why}"
        last = self._state.last_rollout if self._state else None
        if last is None:
            return "the target's last rollout time is unknown" if step.when.rollout_within else None
        age = workflow.now() - last
        if step.when.rollout_within is not None and age > step.when.rollout_within:
            return f"last rollout was {_human(age)} ago, not within {fmt(step.when.rollout_within)}"
        if step.when.no_rollout_within is not None and age <= step.when.no_rollout_within:
            return f"last rollout was {_human(age)} ago, within {fmt(step.when.no_rollout_within)}"
        return None

    async def _sleep_or_signal(self, duration: timedelta) -> None:
        """Sleep up to ``duration``, waking early when a signal arrives."""
        if duration <= timedelta(0):
            return
        try:
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=duration)
        except TimeoutError:
            pass

    def _finish(self, outcome: str, reason: str) -> None:
        self._outcome = outcome
        self._reason = reason
        self._event("decision", f"run ends {outcome}: {reason}", outcome=outcome)

    def _event(self, kind: str, message: str, **data: Any) -> None:
        self._seq += 1
        if kind not in ("run_started", "alert"):
            offset = int((workflow.now() - workflow.info().start_time).total_seconds())
            self._timeline.append(f"+{fmt(timedelta(seconds=offset))} {message}")
        if self._inp.simulate:
            data["simulated_cluster"] = True
        self._buffer.append(
            AuditEvent(key=f"{self._seq:05d}-{kind}", at=workflow.now(), kind=kind, message=message, data=data)  # type: ignore[arg-type]
        )

    async def _flush(self, run: RunInfo | None = None) -> None:
        """Append the buffered events (and run columns) to the audit trail.

        A regular activity: its input is recorded in this workflow's history when it is
        scheduled, so whatever retries it (a crash after the commit, a lost completion, a
        replay) writes exactly these events again, which the store keeps once. Retried without
        limit: an unavailable audit store holds the run, it never fails it.
        """
        run = run or self._run_pending
        if not self._buffer and run is None:
            return
        events, self._buffer, self._run_pending = self._buffer, [], None
        write = AuditWriteInput(run=run, run_id=workflow.info().run_id, events=events)
        if not self._v2:
            await workflow.execute_local_activity(
                "audit_write", write, start_to_close_timeout=AUDIT_TIMEOUT, retry_policy=AUDIT_RETRY
            )
            return
        await workflow.execute_activity(
            "audit_write",
            write,
            start_to_close_timeout=AUDIT_TIMEOUT,
            heartbeat_timeout=self._inp.heartbeat_timeout,
            retry_policy=AUDIT_RETRY,
        )

    def _run_info(self, first: AlertRef | None, outcome: str = "running", ended=None, cooldown_until=None) -> RunInfo:
        info = workflow.info()
        run = self._inp.run_info(info.run_id, info.workflow_id, info.start_time, first)
        return run.model_copy(update={"outcome": outcome, "ended_at": ended, "cooldown_until": cooldown_until})

    def _log(self, msg: str, *args: Any) -> None:
        # In --simulate mode the process's log filter prefixes every line with [simulated cluster].
        workflow.logger.info(msg, *args)


def _raise_if_cancelled(err: ActivityError) -> None:
    """A cancellation of the workflow reaches an awaited activity as its ActivityError (with a
    CancelledError cause); it must end the run, not be taken for the activity's failure."""
    if is_cancelled_exception(err):
        raise asyncio.CancelledError() from err


def _last_failure(err: ActivityError) -> BaseException | None:
    """The activity's own failure; for a retry budget that ran out (a schedule-to-close
    timeout), the failure of its last attempt when Temporal kept it."""
    cause = err.cause
    if isinstance(cause, TemporalTimeoutError) and cause.cause is not None:
        return cause.cause
    return cause


def _cause_message(err: ActivityError, budget: timedelta | None = None) -> str:
    """The activity's failure as a person reads it; says when retries stopped because their time
    (``budget``: the Kubernetes retry budget) ran out rather than because retrying cannot help."""
    last = _last_failure(err)
    text = last.message if isinstance(last, ApplicationError) else str(last or err)
    if err.retry_state == RetryState.TIMEOUT or isinstance(err.cause, TemporalTimeoutError):
        spent = f"the {fmt(budget)} Kubernetes retry budget" if budget else "the time for its retries"
        return f"{text} (still failing when {spent} ran out)"
    return text


def _describe_change(step: Step, target) -> str:
    """What a step will change, in the words of the kubectl command it mirrors."""
    obj = f"{target.kind.lower()} {target.namespace + '/' if target.namespace else ''}{target.name}"
    p = step.params
    if step.action == "rollout_restart":
        return f"restart every pod of {obj} (kubectl rollout restart)"
    if step.action == "scale":
        size = f"to {p.replicas} replicas" if p.replicas is not None else f"by {int(p.delta):+d} replicas"
        return f"scale {obj} {size}, within {p.min_replicas}..{p.max_replicas} (kubectl scale)"
    if step.action == "rollback":
        where = "the previous revision" if p.to_revision == 0 else f"revision {p.to_revision}"
        return f"roll {obj} back to {where} (kubectl rollout undo)"
    if step.action == "drain":
        return f"cordon {obj} and evict its pods through the Eviction API (kubectl drain)"
    if step.action == "delete_pod":
        return f"delete pod {target.namespace}/{p.pod} of {obj} (kubectl delete pod)"
    return f"{step.action} {obj} (kubectl {step.action})"


def _human(delta: timedelta) -> str:
    return fmt(timedelta(seconds=int(delta.total_seconds())))
