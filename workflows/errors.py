"""How the workflow reads its activities' failures: one place for the failure handling the
whole run shares.

``StepFailed`` is what a step raises when it did not succeed; ``cause_message`` says why as a
person reads it; ``raise_if_cancelled`` keeps a cancellation of the workflow from being taken
for an activity's failure.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, is_cancelled_exception
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from remediator.domain.durations import format_duration


class StepFailed(Exception):
    """A step did not succeed; ``refused`` marks a safety refusal (never retried)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def raise_if_cancelled(err: ActivityError) -> None:
    """A cancellation of the workflow reaches an awaited activity as its ActivityError (with a
    CancelledError cause); it must end the run, not be taken for the activity's failure."""
    if is_cancelled_exception(err):
        raise asyncio.CancelledError() from err


def last_failure(err: ActivityError) -> BaseException | None:
    """The activity's own failure; for a retry budget that ran out (a schedule-to-close
    timeout), the failure of its last attempt when Temporal kept it."""
    cause = err.cause
    if isinstance(cause, TemporalTimeoutError) and cause.cause is not None:
        return cause.cause
    return cause


def cause_message(err: ActivityError, budget: timedelta | None = None) -> str:
    """The activity's failure as a person reads it; says when retries stopped because their time
    (``budget``: the Kubernetes retry budget) ran out rather than because retrying cannot help."""
    last = last_failure(err)
    text = last.message if isinstance(last, ApplicationError) else str(last or err)
    if err.retry_state == RetryState.TIMEOUT or isinstance(err.cause, TemporalTimeoutError):
        spent = f"the {format_duration(budget)} Kubernetes retry budget" if budget else "the time for its retries"
        return f"{text} (still failing when {spent} ran out)"
    return text
