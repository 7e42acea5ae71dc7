"""The ``hand_over_alerts`` activity: a large Alertmanager group handed to its runs.

The intake answers a group with more alerts to hand over than it can hand over one by one
within Alertmanager's webhook timeout (10 s by default) by starting one ``AlertHandoffWorkflow``
(workflows/handoff.py) that carries the group: one Temporal call, durable once answered. This
activity then makes the per-alert calls the intake would have made (signal-with-start of each
target's run, the ``alert`` signal for a resolved alert), with the intake's own checks and
bounded concurrency. The hand-over itself is the intake's (remediator.app.handoff.Handoff),
passed in by the composition root, so this layer does not depend on the application layer.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from temporalio import activity

from remediator.domain.messages import HandoffInput, HandoffSummary

HandOver = Callable[[HandoffInput], Awaitable[HandoffSummary]]
"""Hands every alert of a group over; raises when some could not be (the activity is retried)."""


class HandoffActivities:
    """``HandoffActivities(hand_over).hand_over_alerts``: ``hand_over`` is
    ``remediator.app.handoff.Handoff.hand_over_group`` of the worker's process."""

    def __init__(self, hand_over: HandOver) -> None:
        self._hand_over = hand_over

    @activity.defn(name="hand_over_alerts")
    async def hand_over_alerts(self, inp: HandoffInput) -> HandoffSummary:
        """Hand every alert of ``inp`` to its run; the alerts by disposition.

        Idempotent: an alert already with its run is answered ``duplicate`` (the intake's record,
        the audit trail) or deduplicated by the run itself, so a retry after a partial failure
        hands over only what is missing.

        Raises:
            temporalio.exceptions.ApplicationError: some alerts could not be handed to Temporal
                (retryable; the message says how many and why).
        """
        return await self._hand_over(inp)
