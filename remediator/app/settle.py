"""Every run ends with an outcome in the audit trail and a Slack notice, whatever ended it.

A run records its own outcome (workflows/remediation.py), even after a failed step, an internal
error or a cancellation. Temporal can also end a run where its code never runs again: ``temporal
workflow terminate``, a workflow execution or run timeout. Such a run would stay ``running`` in
the audit trail forever, post no notice, and its cooldown would not count. ``Settler`` records
for it what Temporal says happened:

* ``outcome`` ``terminated`` (with who and why, from the ``WorkflowExecutionTerminated``
  event), ``timed_out``, ``cancelled``, or ``failed``; ``ended_at`` is Temporal's close time;
  ``cooldown_until`` is that time plus the playbook's ``cooldown``, so the intake starts no new
  remediation of the target before then;
* an ``outcome`` event (key ``settled-outcome``) and one Slack notice in the target's thread
  (event key ``<run_id>/settled``), with the run's timeline from the audit trail.

Who calls it: the engine (remediator.app.runtime) runs ``Settler.run_forever`` every
``settle_interval``, which finds such runs with a Temporal visibility query (closed, search
attribute ``Outcome`` still ``running``); the intake (remediator.app.intake) calls ``settle`` at
once when Temporal refuses to hand an alert to a target whose last run the audit shows running
(that run has ended). Both are idempotent: the audit keeps the first write of each key, and the
notice is posted once per event key.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, cast
from urllib.parse import quote

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from remediator.audit.store import AuditStore, RunRow, format_time
from remediator.domain.durations import format_duration
from remediator.domain.messages import (
    AlertSignal,
    AuditEvent,
    AuditWriteInput,
    Notice,
    NoticeKind,
    RemediationInput,
    RemediationResult,
    RunInfo,
    TargetRef,
)
from remediator.domain.runs import SA_OUTCOME

log = logging.getLogger("remediator.app.settle")

WORKFLOW_TYPE = "RemediationWorkflow"
SETTLED_KEY = "settled-outcome"
NOTICE_KEY = "settled-notice"
FIRST_LOOK_BACK = timedelta(days=7)
"""How far back the first scan after start-up looks for runs that ended without an outcome."""
LOOK_BACK = timedelta(days=1)
"""How far back later scans look (a notice that could not be posted is retried that long)."""

_OUTCOME_OF_STATUS = {
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.FAILED: "failed",
}


class Settler:
    """Records outcomes for runs Temporal ended without one.

    Args:
        client: connected Temporal client (pydantic data converter).
        audit: the audit store.
        post_notice: ``SlackActivities.post_notice`` (a blocking call, run on a thread), or None
            when Slack is not configured.
    """

    def __init__(self, client: Client, audit: AuditStore, post_notice: Any = None) -> None:
        self._client = client
        self._audit = audit
        self._post_notice = post_notice
        self._scanned = False

    async def settle(self, run: RunRow) -> RunRow:
        """Give ``run`` an outcome if its workflow has ended without recording one, and post its
        notice (again, if an earlier post failed).

        Returns the run as the audit trail has it afterwards (unchanged when the workflow is
        still running or recorded its outcome itself).

        Raises:
            temporalio.service.RPCError: Temporal could not describe the run.
        """
        events = {e.key for e in await asyncio.to_thread(self._audit.events, run.run_id)}
        if run.outcome != "running" and (SETTLED_KEY not in events or NOTICE_KEY in events):
            return run  # recorded by the run itself, or settled and notified already
        handle = self._client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        desc = await handle.describe()
        if desc.status in (None, WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
            return run
        history = await handle.fetch_history()
        started, ended = history.events[0], history.events[-1]
        inp = await self._decode(started.workflow_execution_started_event_attributes.input.payloads, RemediationInput)
        outcome, reason = await self._how_it_ended(desc.status, ended)
        if run.outcome == "running":
            closed = desc.close_time or datetime.now(timezone.utc)
            until = closed + inp.playbook.cooldown
            await asyncio.to_thread(
                self._audit.write,
                AuditWriteInput(
                    run_id=run.run_id,
                    run=RunInfo(**{**run.model_dump(), "outcome": outcome, "ended_at": closed, "cooldown_until": until}),
                    events=[
                        AuditEvent(
                            key=SETTLED_KEY,
                            at=closed,
                            kind="outcome",
                            message=f"{outcome}: {reason}",
                            data={"outcome": outcome, "reason": reason, "cooldown_until": until.isoformat(), "recorded_by": "settle"},
                        )
                    ],
                ),
            )
            log.warning("run %s of %s ended %s without recording it: %s", run.run_id, run.target, outcome, reason)
        await self._notify(run, inp, outcome, reason)
        return await asyncio.to_thread(self._audit.get_run, run.run_id)

    async def settle_new(self, workflow_id: str, run_id: str) -> RunRow | None:
        """Settle a closed run the audit trail has no row for (it ended before its first write):
        its row comes from the workflow's history. Returns None while it still runs."""
        handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
        desc = await handle.describe()
        if desc.status in (None, WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW):
            return None
        history = await handle.fetch_history()
        inp = await self._decode(history.events[0].workflow_execution_started_event_attributes.input.payloads, RemediationInput)
        first = None
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attrs = event.workflow_execution_signaled_event_attributes
                if attrs.signal_name == "alert" and attrs.input.payloads:
                    first = (await self._decode(attrs.input.payloads, AlertSignal)).alert
                    break
        await asyncio.to_thread(
            self._audit.write,
            AuditWriteInput(
                run_id=run_id,
                run=inp.run_info(run_id, workflow_id, desc.start_time, first),
            ),
        )
        return await self.settle(await asyncio.to_thread(self._audit.get_run, run_id))

    async def scan(self) -> int:
        """Find runs that ended since the last scan with ``Outcome`` still ``running`` and settle
        them. Returns how many were settled."""
        began = datetime.now(timezone.utc)
        since = began - (LOOK_BACK if self._scanned else FIRST_LOOK_BACK)
        query = (
            f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus != 'Running' "
            f"AND {SA_OUTCOME.name} = 'running' AND CloseTime > '{format_time(since)}'"
        )
        settled = 0
        async for wf in self._client.list_workflows(query):
            try:
                run = await asyncio.to_thread(self._audit.get_run, wf.run_id)
            except LookupError:
                row = await self.settle_new(wf.id, wf.run_id)
                settled += row is not None
                continue
            before = run.outcome
            if (await self.settle(run)).outcome != before:
                settled += 1
        self._scanned = True
        return settled

    async def run_forever(self, interval: timedelta) -> None:
        """``scan`` every ``interval`` until cancelled; a failed scan is logged and retried."""
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except (RPCError, RuntimeError, OSError) as err:
                log.warning("could not look for runs that ended without an outcome: %s", err)
            await asyncio.sleep(interval.total_seconds())

    async def _decode(self, payloads: Any, cls: type) -> Any:
        return (await self._client.data_converter.decode(payloads, [cls]))[0]

    async def _how_it_ended(self, status: WorkflowExecutionStatus, last: Any) -> tuple[str, str]:
        if status == WorkflowExecutionStatus.COMPLETED:
            attrs = last.workflow_execution_completed_event_attributes
            result = await self._decode(attrs.result.payloads, RemediationResult)
            return result.outcome, result.reason
        outcome = _OUTCOME_OF_STATUS.get(status, "failed")
        if status == WorkflowExecutionStatus.TERMINATED:
            attrs = last.workflow_execution_terminated_event_attributes
            who = attrs.identity or "someone"
            return outcome, f"the workflow was terminated by {who}" + (f": {attrs.reason}" if attrs.reason else "")
        if status == WorkflowExecutionStatus.TIMED_OUT:
            return outcome, "the workflow hit its Temporal execution or run timeout; the remaining steps did not run"
        if status == WorkflowExecutionStatus.CANCELED:
            return outcome, "the workflow was cancelled; the remaining steps did not run"
        failure = last.workflow_execution_failed_event_attributes.failure
        return outcome, f"the workflow failed: {failure.message or 'no message'}"

    async def _notify(self, run: RunRow, inp: RemediationInput, outcome: str, reason: str) -> None:
        slack = inp.playbook.slack
        if slack is None or self._post_notice is None:
            why = "the playbook names no Slack channel" if slack is None else "Slack is not configured"
            await asyncio.to_thread(self._audit.write, _notice_event(run.run_id, f"no Slack notice ({outcome}): {why}", {"notice_kind": outcome}))
            return
        events = await asyncio.to_thread(self._audit.events, run.run_id)
        timeline = [
            f"+{format_duration(timedelta(seconds=int((e.at - run.started_at).total_seconds())))} {e.message}"
            for e in events
            if e.kind not in ("run_started", "alert")
        ]
        ui = inp.ui_url.rstrip("/")
        notice = Notice(
            event_key=f"{run.run_id}/settled",
            kind=cast(NoticeKind, outcome),
            channel=slack.channel,
            target=TargetRef.model_validate(inp.target.model_dump()),
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            playbook=run.playbook,
            title=f"remediation of {run.target} with playbook {run.playbook} ended {outcome}: {reason}",
            timeline=timeline[-20:],
            mention=slack.oncall_usergroup,
            temporal_url=f"{ui}/namespaces/{self._client.namespace}/workflows/{quote(run.workflow_id, safe='')}/{run.run_id}/history" if ui else "",
            audit_url=f"{inp.public_url.rstrip('/')}/runs/{run.run_id}" if inp.public_url else "",
        )
        try:
            result = await asyncio.to_thread(self._post_notice, notice)
        except Exception as err:  # Slack down or refusing: the audit has the outcome; retried next scan
            log.warning("could not post the Slack notice for run %s: %s", run.run_id, err)
            return
        data = {"notice_kind": outcome, "channel": result.channel, "ts": result.ts, "thread_ts": result.thread_ts}
        await asyncio.to_thread(self._audit.write, _notice_event(run.run_id, f"Slack notice ({outcome}) posted: {notice.title}", data))


def _notice_event(run_id: str, message: str, data: dict[str, Any]) -> AuditWriteInput:
    return AuditWriteInput(
        run_id=run_id,
        events=[AuditEvent(key=NOTICE_KEY, at=datetime.now(timezone.utc), kind="notice", message=message, data=data)],
    )
