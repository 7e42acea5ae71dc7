"""``AlertHandoffWorkflow``: a large Alertmanager group, durably handed to its runs.

Started by the intake (remediator.app.intake) for a group with more alerts to hand over than
``HANDOFF_DIRECT_MAX``: signal-with-start costs the Temporal server several milliseconds per
alert, so 1,000 one-by-one hand-overs take longer than Alertmanager's 10 s webhook timeout on a
small machine. Starting this workflow is one call; once it is answered the group is with
Temporal, and its one activity (activities/handoff.py) makes the per-alert calls, retried until
every alert is handed over. It runs on its own task queue (``handoff_task_queue``) so that a
flood of remediation work does not delay it. History: the input, one activity, its result.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.handoff import HandoffActivities
    from remediator.domain.messages import HandoffInput, HandoffSummary

HANDOFF_WORKFLOW_ID_PREFIX = "alert-handoff/"

HANDOFF_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1)
)
"""Retried until every alert is handed over: no maximum_attempts (an accepted alert is never dropped)."""


def handoff_task_queue(task_queue: str) -> str:
    """The task queue of the hand-off workflows of the engine on ``task_queue``."""
    return f"{task_queue}-handoff"


@workflow.defn(name="AlertHandoff")
class AlertHandoffWorkflow:
    """One activity: ``hand_over_alerts`` over the whole group, retried until it succeeds."""

    @workflow.run
    async def run(self, inp: HandoffInput) -> HandoffSummary:
        return await workflow.execute_activity_method(
            HandoffActivities.hand_over_alerts,
            inp,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=HANDOFF_RETRY,
        )
