"""The ``audit_write`` activity: the workflow's only way to write the audit trail.

Registered by worker.py with the process's one ``AuditStore``; runs on the worker's thread pool
(SQLite is a blocking client). Called by workflows/remediation.py with events whose keys are
deterministic, so Temporal's retries of this activity never write an event twice.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from remediator.audit import AuditEventInvalid, AuditKeyConflict, AuditStore
from remediator.models import AuditWriteInput


class AuditActivities:
    """Activities bound to one ``AuditStore``: ``AuditActivities(store).audit_write``."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    @activity.defn
    def audit_write(self, inp: AuditWriteInput) -> None:
        """Append ``inp.events`` and upsert ``inp.run`` (``AuditStore.write``), idempotently.

        Raises:
            ApplicationError: non-retryable, type ``AuditEventInvalid`` (an event that cannot be
                recorded as given) or ``AuditKeyConflict`` (a key reused for a different event);
                retrying would give the same answer. SQLite errors such as a busy database are
                left as they are, so Temporal retries them.
        """
        try:
            self._store.write(inp)
        except (AuditEventInvalid, AuditKeyConflict) as e:
            raise ApplicationError(str(e), type=type(e).__name__, non_retryable=True) from e
