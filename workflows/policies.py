"""How RemediationWorkflow retries and times out its activities: every policy in one place.

The error types named non-retryable come from remediator.domain.errors, the one list of the
types the activities raise. Imported by workflows/remediation.py (and its approval wait).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from remediator.domain.errors import NON_RETRYABLE_KUBE, NON_RETRYABLE_SLACK

KUBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=list(NON_RETRYABLE_KUBE),
)
"""Kubernetes reads and changes: unlimited attempts, bounded by the run's ``kube_retry_budget``
(a schedule-to-close timeout), so an API server outage is ridden out and then fails the step."""

HEALTH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE_KUBE),
)
"""One evaluation of a health check or a piece of evidence: a few attempts; the workflow polls
health checks again until their own timeout anyway."""

AUDIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
"""Audit writes: unlimited attempts; a run waits for its audit trail, it never fails or acts
without it."""

SLACK_REQUEST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=list(NON_RETRYABLE_SLACK),
)
"""An approval request: retried until the run stops waiting; a Slack outage never loses it."""

SLACK_NOTICE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=20,
    non_retryable_error_types=list(NON_RETRYABLE_SLACK),
)
"""Notices and message updates: about 15 minutes of attempts, then recorded as not posted."""

AUDIT_TIMEOUT = timedelta(seconds=30)
READ_TIMEOUT = timedelta(seconds=30)
"""Start-to-close of one read (describe, plan, health check, assess) or one Slack call."""
VERIFY_POLL = timedelta(seconds=5)
"""How often verification asks Alertmanager whether the alert resolved."""
FINAL_DRAIN_PASSES = 5
"""How many times an ending run records alerts that arrived during its last write."""
