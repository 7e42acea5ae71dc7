"""What a run tells people in Slack: one notice per event, and in-place updates of an approval
message. The words are the Slack activity's (remediator.slack.blocks); the workflow sends what
happened.

Used by RemediationWorkflow and its approval wait. A Slack outage never fails a run: a notice
that cannot be posted after its retries is recorded in the audit trail as not posted.
"""

from __future__ import annotations

from urllib.parse import quote

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.slack import SlackActivities
    from remediator.domain.messages import (
        AlertRef,
        ApprovalDecision,
        ApprovalMessage,
        ApprovalOutcome,
        ApprovalRequest,
        ApprovalStatus,
        Notice,
        NoticeKind,
        RemediationInput,
    )

from workflows.errors import cause_message, raise_if_cancelled
from workflows.policies import READ_TIMEOUT, SLACK_NOTICE_RETRY
from workflows.trail import AuditTrail


class Notices:
    """Slack calls of one run. ``durable``: the run has the ``durable-runs`` patch (structured
    notices and outcomes); runs started before it send the texts they always sent."""

    def __init__(self, inp: RemediationInput, trail: AuditTrail, durable: bool) -> None:
        self._inp = inp
        self._trail = trail
        self._durable = durable

    def temporal_url(self) -> str:
        """The run in the Temporal UI, or "" when its URL is not known."""
        info = workflow.info()
        if not self._inp.ui_url:
            return ""
        return f"{self._inp.ui_url.rstrip('/')}/namespaces/{info.namespace}/workflows/{quote(info.workflow_id, safe='')}/{info.run_id}/history"

    def audit_url(self) -> str:
        """The run's audit timeline on the intake (``GET /runs/RUN``), or ""."""
        if not self._inp.public_url:
            return ""
        return f"{self._inp.public_url.rstrip('/')}/runs/{workflow.info().run_id}"

    async def notify(
        self, kind: NoticeKind, *, alert: AlertRef | None, title: str = "", reason: str = "", step: str = "",
        mention: str | None = None,
    ) -> None:
        """Post one notice to the playbook's Slack channel (folded into the target's thread);
        nothing when the playbook names no channel. ``title``: only runs started before
        structured notices send one."""
        slack = self._inp.playbook.slack
        if slack is None:
            return
        info = workflow.info()
        notice = Notice(
            event_key=f"{info.run_id}/{self._trail.seq:05d}-{kind}",
            kind=kind,
            channel=slack.channel,
            target=self._inp.target,
            run_id=info.run_id,
            workflow_id=info.workflow_id,
            playbook=self._inp.playbook.name,
            title=title,
            reason=reason,
            step=step,
            timeline=self._trail.timeline[-20:],
            mention=mention,
            alert=alert,
            temporal_url=self.temporal_url(),
            audit_url=self.audit_url(),
            dry_run=self._inp.dry_run,
        )
        try:
            result = await workflow.execute_activity_method(
                SlackActivities.post_notice,
                notice,
                start_to_close_timeout=READ_TIMEOUT,
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=SLACK_NOTICE_RETRY,
            )
            said = title or reason
            self._trail.event(
                "notice", f"Slack notice ({kind}) posted" + (f": {said}" if said else ""),
                notice_kind=kind, channel=result.channel, ts=result.ts, thread_ts=result.thread_ts,
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            self._trail.event("notice", f"could not post the Slack notice ({kind}): {cause_message(err)}", notice_kind=kind)

    async def update_message(
        self,
        request: ApprovalRequest,
        message: ApprovalMessage | None,
        status: ApprovalStatus,
        *,
        decision: ApprovalDecision | None = None,
        result: str = "",
        text: str = "",
    ) -> None:
        """Rewrite the approval message with its outcome; nothing when it was never posted.
        ``text``: only runs started before structured outcomes send one (with the request)."""
        if message is None:
            return
        if self._durable:
            outcome = ApprovalOutcome(
                request_id=request.request_id, message=message, status=status, decision=decision, result=result
            )
        else:
            outcome = ApprovalOutcome(request=request, message=message, status=status, text=text)
        try:
            await workflow.execute_activity_method(
                SlackActivities.update_approval_message,
                outcome,
                start_to_close_timeout=READ_TIMEOUT,
                heartbeat_timeout=self._inp.heartbeat_timeout,
                retry_policy=SLACK_NOTICE_RETRY,
            )
        except ActivityError as err:
            raise_if_cancelled(err)
            self._trail.event("notice", f"could not update the Slack approval message: {cause_message(err)}")


def legacy_decided_line(decision: ApprovalDecision) -> str:
    """``approved by <@U1> at 2026-11-21 05:56:13Z via slack``: the outcome text runs started
    before structured outcomes send."""
    verb = "approved" if decision.decision == "approve" else "rejected"
    at = decision.decided_at.strftime("%Y-%m-%d %H:%M:%SZ") if decision.decided_at else "?"
    return f"{verb} by <@{decision.user_id}> at {at} via {decision.via}"
