"""Errors classified by what retrying should do (kopf's habit), shared by the Kubernetes and
Slack layers (remediator.k8s, remediator.slack).

A ``ClassifiedError`` becomes the ``ApplicationError`` that fails an activity: its ``type`` is
the class name (what the workflow's RetryPolicy lists as non-retryable), ``non_retryable`` comes
from the class, and a server's ``Retry-After`` becomes ``next_retry_delay``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError


class ClassifiedError(Exception):
    """Base of the classified errors. ``status``: HTTP status when there was one;
    ``retry_after``: seconds the server asked us to wait."""

    non_retryable: bool = True

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def type_name(self) -> str:
        return type(self).__name__

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
