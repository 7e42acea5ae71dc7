"""The approval wait of a step: ask in Slack, wait for a decision, escalate, expire.

As samples-python's ``updatable_timer`` keeps a reusable wait apart from the workflow that uses
it: RemediationWorkflow creates one ``ApprovalWait`` per run, routes its ``decide`` Update and
validator here, and calls ``ask`` for each step whose approval policy requires it.

``ask``: expand the approver user groups (``resolve_approvers``), post one Slack message
(``post_approval_request``, retried until the wait ends, so a Slack outage never loses the
request), wait durably for a decision; at ``approval_timeout`` mention the on-call group in
the message's thread and post a notice; at ``approval_deadline`` give up. The message is
rewritten with the outcome. Deterministic: timers, activities, the Update.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.slack import SlackActivities
    from remediator.domain.durations import format_duration as fmt
    from remediator.domain.messages import (
        AlertRef,
        ApprovalDecision,
        ApprovalMessage,
        ApprovalRequest,
        DecisionResult,
        Evidence,
        RemediationInput,
        ResolveApproversInput,
    )
    from remediator.domain.playbook import Step

from workflows import metrics
from workflows.errors import cause_message, raise_if_cancelled
from workflows.notices import Notices, legacy_decided_line
from workflows.policies import HEALTH_RETRY, READ_TIMEOUT, SLACK_REQUEST_RETRY
from workflows.trail import AuditTrail

APPROVAL_MESSAGE_AFTER_DECISION = "approval-message-after-decision"
"""Patch ID (``workflow.patched``): when the decision or the resolution comes before Slack's
answer to the post, the wait takes that answer (up to ``POST_GRACE``) so that the message is
rewritten with the outcome; runs before it cancelled the post and left the message as posted."""

POST_GRACE = timedelta(seconds=10)
"""How long a decided wait still waits for Slack's answer to its post (Slack down: the step goes
on without rewriting the message)."""


@dataclass
class Approval:
    """How an ``ask`` ended. ``approved``: the step may run; its message is updated again with
    the step's result. Otherwise ``step_message`` is why the step did not run and ``reason``
    why the run ends ``needs_human``."""

    approved: bool
    request: ApprovalRequest
    message: ApprovalMessage | None
    decision: ApprovalDecision | None = None
    step_message: str = ""
    reason: str = ""
    resolved: bool = False
    """The alert resolved before anyone decided: nothing ran, the playbook's ``on_resolved`` decides."""


class ApprovalWait:
    """The approvals of one run. ``waiting``: the request a step waits on, if any (the status
    query shows it); ``authorized``: who may decide it; ``decisions``: by request ID."""

    def __init__(
        self, inp: RemediationInput, trail: AuditTrail, notices: Notices, durable: bool,
        *, pending: Callable[[], bool] | None = None, resolved: Callable[[], bool] | None = None,
    ) -> None:
        self._inp = inp
        self._trail = trail
        self._notices = notices
        self._durable = durable
        # Runs with the brakes: a signal wakes the wait (``pending``), the run folds it in and
        # says whether the alert resolved (``resolved``), which ends the wait with nothing run.
        self._pending = pending
        self._resolved = resolved
        self._ended_by_resolve = False
        self.waiting: ApprovalRequest | None = None
        self.authorized: set[str] = set()
        self.decisions: dict[str, ApprovalDecision] = {}

    # ------------------------------------------------------------------ the decide Update

    def validate(self, decision: ApprovalDecision) -> None:
        """Refuse, before anything is written to history: a second decision, a decision for a
        request that is not waiting, or a user who is not an approver of this playbook.

        Raises:
            ValueError: the reason, as the person who clicked reads it.
        """
        earlier = self.decisions.get(decision.request_id)
        if earlier is not None:
            verb = "approved" if earlier.decision == "approve" else "rejected"
            raise ValueError(f"already decided: {verb} by {earlier.user_id} via {earlier.via}")
        waiting = self.waiting
        if waiting is None:
            raise ValueError("no step of this run is waiting for approval")
        if decision.request_id != waiting.request_id:
            raise ValueError(f"stale request {decision.request_id}: the run waits on {waiting.request_id}")
        if decision.user_id not in self.authorized:
            raise ValueError(f"{decision.user_id} is not an approver of playbook {self._inp.playbook.name}")

    def decide(self, decision: ApprovalDecision) -> DecisionResult:
        """Record a validated decision, stamped with the workflow's time."""
        self.decisions[decision.request_id] = decision.model_copy(update={"decided_at": workflow.now()})
        verb = "approved" if decision.decision == "approve" else "rejected"
        step = f"step {self.waiting.step_index + 1}" if self.waiting else "step ?"
        return DecisionResult(
            request_id=decision.request_id,
            decision=decision.decision,
            user_id=decision.user_id,
            message=f"{verb} by {decision.user_id}; {step} {'runs now' if verb == 'approved' else 'will not run'}",
        )

    # ------------------------------------------------------------------ the wait

    async def ask(
        self, index: int, step: Step, reason: str, confidence: float | None, alert: AlertRef | None, evidence: list[Evidence],
        *, change: str = "", limits: list[str] | None = None, gitops: str | None = None, suffix: str = "",
    ) -> Approval:
        """Ask for the step's approval and wait until it is decided, its deadline passes or (runs
        with the brakes) the alert resolves.

        ``limits``: the limits the step would exceed, each with its count ("would make 2 of 12
        nodes unschedulable; limit 1"): approving means exceeding them. ``gitops``: the GitOps
        controller that manages the target. ``suffix``: makes the request ID unique when one
        step asks twice (a limit after its own approval)."""
        inp = self._inp
        slack = inp.playbook.slack
        assert slack is not None  # the playbook model requires it for steps that need approval
        members = await self._approvers(index)
        self.authorized = members
        now = workflow.now()
        info = workflow.info()
        request = ApprovalRequest(
            request_id=f"{info.run_id}/step-{index}{suffix}",
            run_id=info.run_id,
            workflow_id=info.workflow_id,
            step_index=index,
            step_name=step.name,
            action=step.action,
            params=step.params,
            change=change if self._durable else step.spec.describe(step.params, inp.target),
            target=inp.target,
            playbook=inp.playbook.name,
            alert=alert,
            evidence=evidence,
            confidence=confidence,
            reason=reason,
            channel=slack.channel,
            approvers=slack.approvers.users,
            approver_groups=slack.approvers.usergroups,
            oncall_usergroup=slack.oncall_usergroup,
            temporal_url=self._notices.temporal_url(),
            audit_url=self._notices.audit_url(),
            requested_at=now,
            escalate_at=now + slack.approval_timeout,
            deadline=now + slack.approval_deadline,
            limits=limits or [],
            gitops=gitops,
            dry_run=inp.dry_run,
        )
        self._ended_by_resolve = False
        self.waiting = request
        self._trail.event(
            "approval",
            f"step {index + 1} ({step.name}) waits for approval: {reason}",
            step=index, request_id=request.request_id, approvers=sorted(members),
            escalate_at=request.escalate_at.isoformat(), deadline=request.deadline.isoformat(),
        )
        await self._trail.flush()
        message = await self._wait(index, step, request, alert)
        self.waiting = None
        return await self._conclude(index, step, request, message)

    async def _approvers(self, index: int) -> set[str]:
        """Users named directly, plus the members of the approver user groups now."""
        slack = self._inp.playbook.slack
        assert slack is not None
        members = set(slack.approvers.users)
        if not slack.approvers.usergroups:
            return members
        try:
            resolved = await workflow.execute_activity_method(
                SlackActivities.resolve_approvers,
                ResolveApproversInput(usergroups=slack.approvers.usergroups),
                start_to_close_timeout=READ_TIMEOUT,
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=HEALTH_RETRY,
            )
            for users in resolved.members.values():
                members.update(users)
            problems = resolved.errors
        except ActivityError as err:
            raise_if_cancelled(err)
            problems = [cause_message(err)]
        if problems:
            self._trail.event(
                "approval",
                "could not expand approver user groups; only users named directly can approve: " + "; ".join(problems),
                step=index,
            )
        return members

    async def _wait(self, index: int, step: Step, request: ApprovalRequest, alert: AlertRef | None) -> ApprovalMessage | None:
        """Post the request and wait for a decision, escalating once; returns the message posted
        (None when Slack could not take it)."""
        slack = self._inp.playbook.slack
        assert slack is not None
        post = workflow.start_activity_method(
            SlackActivities.post_approval_request,
            request,
            start_to_close_timeout=READ_TIMEOUT,
            heartbeat_timeout=self._inp.heartbeat_timeout,
            retry_policy=SLACK_REQUEST_RETRY,
        )
        message: ApprovalMessage | None = None
        posting = True
        escalated = False
        rid = request.request_id
        while rid not in self.decisions and workflow.now() < request.deadline:
            until = request.deadline if escalated else request.escalate_at
            pending = self._pending
            try:
                await workflow.wait_condition(
                    lambda: rid in self.decisions or (posting and post.done()) or (pending is not None and pending()),
                    timeout=max(until - workflow.now(), timedelta(milliseconds=1)),
                )
            except asyncio.TimeoutError:
                pass
            if rid not in self.decisions and pending is not None and self._resolved is not None and pending():
                if self._resolved():
                    self._ended_by_resolve = True
                    break
                await self._trail.flush()  # the alerts attached meanwhile are in the audit trail now
                continue
            if posting and post.done():
                posting = False
                message = self._posted(index, post)
                await self._trail.flush()
                continue
            if rid in self.decisions:
                break
            if not escalated and workflow.now() >= request.escalate_at:
                escalated = True
                metrics.escalated(self._inp.playbook.name)
                text = f"no decision within {fmt(slack.approval_timeout)}; escalated to the on-call"
                self._trail.event("approval", text, step=index)
                await self._notices.update_message(request, message, "escalated", result=text, text=text)
                await self._notices.notify(
                    "approval_escalation", alert=alert, step=f"step {index + 1} ({step.name})",
                    title="" if self._durable else (
                        f"step {index + 1} ({step.name}) of {self._inp.playbook.name} on {self._inp.target.key} "
                        "still waits for approval"
                    ),
                    mention=slack.oncall_usergroup,
                )
        if posting and workflow.patched(APPROVAL_MESSAGE_AFTER_DECISION):
            # The decision (or the resolution) came before Slack's answer to the post: wait a
            # little for it, so that the message can be rewritten (its buttons removed) instead
            # of being left asking for a decision that was made.
            if not post.done():
                try:
                    await workflow.wait_condition(post.done, timeout=POST_GRACE)
                except asyncio.TimeoutError:
                    pass
            if post.done():
                posting = False
                message = self._posted(index, post)
        if posting:
            post.cancel()
        return message

    def _posted(self, index: int, post: Any) -> ApprovalMessage | None:
        """The message a finished ``post_approval_request`` posted (None when it failed), recorded."""
        try:
            message: ApprovalMessage = post.result()
        except ActivityError as err:
            raise_if_cancelled(err)
            self._trail.event(
                "approval",
                f"could not post the approval request to Slack: {cause_message(err)}; the run keeps waiting "
                "(remediator approve/reject works)",
                step=index,
            )
            return None
        self._trail.event(
            "approval", f"approval request posted to Slack {message.channel} (ts {message.ts})",
            step=index, channel=message.channel, ts=message.ts, posted=message.posted,
        )
        return message

    async def _conclude(self, index: int, step: Step, request: ApprovalRequest, message: ApprovalMessage | None) -> Approval:
        """Record the decision (or its absence) and rewrite the message."""
        slack = self._inp.playbook.slack
        assert slack is not None
        rid = request.request_id
        decision = self.decisions.get(rid)
        where = f"step {index + 1} ({step.name}) of {self._inp.playbook.name} on {self._inp.target.key}"
        if decision is None and self._ended_by_resolve:
            text = "resolved before a decision; nothing ran"
            self._trail.event("approval", f"step {index + 1} ({step.name}): the alert {text}", step=index, request_id=rid, decision=None)
            metrics.approval_decided("resolved", workflow.now() - request.requested_at)
            await self._notices.update_message(request, message, "resolved", result=text, text=text)
            return Approval(
                approved=False, request=request, message=message, step_message=text, resolved=True,
                reason=f"the alert resolved while step {index + 1} ({step.name}) waited for approval; nothing ran",
            )
        if decision is None:
            text = f"no decision by the deadline ({fmt(slack.approval_deadline)}); the step did not run"
            self._trail.event("approval", text, step=index, request_id=rid, decision=None)
            metrics.approval_decided("expired", workflow.now() - request.requested_at)
            await self._notices.update_message(request, message, "expired", result=text, text=text)
            if not self._durable:
                await self._notices.notify(
                    "approval_timeout", alert=request.alert, mention=slack.oncall_usergroup,
                    title=f"{where} was not approved in time; it did not run",
                )
            return Approval(
                approved=False, request=request, message=message, step_message=text,
                reason=f"step {index + 1} ({step.name}) was not approved by its deadline; it did not run",
            )
        verb = "approved" if decision.decision == "approve" else "rejected"
        line = legacy_decided_line(decision)
        metrics.approval_decided(decision.decision, workflow.now() - request.requested_at)
        self._trail.event(
            "approval",
            f"step {index + 1} ({step.name}) {verb} by {decision.user_id} via {decision.via}"
            + (f" (as OS user {decision.os_user} on {decision.os_host})" if decision.os_user else "")
            + (f": {decision.comment}" if decision.comment else ""),
            step=index, request_id=rid, decision=decision.decision, user_id=decision.user_id,
            user_name=decision.user_name, via=decision.via,
            **({"os_user": decision.os_user, "os_host": decision.os_host} if decision.os_user else {}),
        )
        if decision.decision == "reject":
            await self._notices.update_message(
                request, message, "rejected", decision=decision, text=line + "; the step did not run"
            )
            if not self._durable:
                await self._notices.notify(
                    "approval_rejected", alert=request.alert,
                    title=f"{where} was rejected by <@{decision.user_id}>; it did not run",
                )
            return Approval(
                approved=False, request=request, message=message, decision=decision,
                step_message=f"rejected by {decision.user_id}",
                reason=f"step {index + 1} ({step.name}) was rejected by {decision.user_id}; it did not run",
            )
        await self._notices.update_message(
            request, message, "approved", decision=decision, text=line + f"; running step {index + 1}"
        )
        return Approval(approved=True, request=request, message=message, decision=decision)

    async def step_done(self, approval: Approval, ok: bool, result: str) -> None:
        """Rewrite the message of an approved step with what the step did."""
        line = legacy_decided_line(approval.decision) if approval.decision else ""
        if ok:
            await self._notices.update_message(
                approval.request, approval.message, "executed", decision=approval.decision, result=result,
                text=f"{line}; the step ran: {result}",
            )
        else:
            await self._notices.update_message(
                approval.request, approval.message, "failed", decision=approval.decision, result=result,
                text=f"{line}; the step ran and failed: {result}",
            )
