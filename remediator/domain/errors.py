"""Errors classified by what retrying should do (kopf's habit), and the one list of the error
type names that cross the activity boundary.

A ``ClassifiedError`` (the Kubernetes, Slack and monitoring layers subclass it) becomes the
``ApplicationError`` that fails an activity: its ``type`` is the class's ``error_type`` (what
the workflow's retry policies, workflows/policies.py, list as non-retryable), ``non_retryable``
comes from the class, and a server's ``Retry-After`` becomes ``next_retry_delay``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from temporalio.exceptions import ApplicationError

# ApplicationError types, by layer. Permanent and refusals are never retried; temporary ones
# are retried by the activity's policy (with the server's Retry-After when it gave one).
KUBE_PERMANENT = "KubePermanentError"
"""A Kubernetes request that can never succeed as sent (400, 401, 403, 404, 422...)."""
KUBE_TEMPORARY = "KubeTemporaryError"
"""A Kubernetes request that may succeed later (409, 429, 5xx, the API server unreachable)."""
SAFETY_REFUSAL = "SafetyRefusal"
"""An action refused before anything was sent, because it could hurt the cluster."""
DRAIN_TIMEOUT = "DrainTimeout"
"""A drain whose evictions or deletions did not finish in its timeout."""
SLACK_NOT_CONFIGURED = "SlackNotConfigured"
SLACK_PERMANENT = "SlackPermanentError"
SLACK_TEMPORARY = "SlackTemporaryError"
PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
ALERTMANAGER_UNAVAILABLE = "AlertmanagerUnavailable"

NON_RETRYABLE_KUBE: tuple[str, ...] = (KUBE_PERMANENT, SAFETY_REFUSAL, DRAIN_TIMEOUT)
NON_RETRYABLE_SLACK: tuple[str, ...] = (SLACK_NOT_CONFIGURED, SLACK_PERMANENT)


class ClassifiedError(Exception):
    """Base of the classified errors. ``status``: HTTP status when there was one;
    ``retry_after``: seconds the server asked us to wait."""

    non_retryable: bool = True
    error_type: ClassVar[str | None] = None
    """The ApplicationError type; None: the class name."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def type_name(self) -> str:
        return self.error_type or type(self).__name__

    def details(self) -> list[Any]:
        """The ApplicationError's details; ``[{"status": N}]`` by default."""
        return [{"status": self.status}] if self.status is not None else []

    def to_application_error(self) -> ApplicationError:
        """The ``ApplicationError`` that fails the activity; raise it ``from`` the original
        exception so the cause is kept."""
        return ApplicationError(
            self.message,
            *self.details(),
            type=self.type_name,
            non_retryable=self.non_retryable,
            next_retry_delay=timedelta(seconds=self.retry_after) if self.retry_after else None,
        )
