"""The ``audit_write`` activity: the workflow's only way to write the audit trail.

Registered by worker.py with the process's one ``AuditStore``; runs on the worker's thread pool
(SQLite is a blocking client). Called by workflows/remediation.py as a regular activity: the
events it carries are its input, recorded in the workflow's history when it is scheduled, so
every retry (after a crash, a timeout, a lost completion) writes exactly the same thing, and
the store keeps the first write of each key.
"""

from __future__ import annotations

from temporalio import activity

from remediator.audit.store import AuditStore
from remediator.domain.messages import AuditWriteInput


class AuditActivities:
    """Activities bound to one ``AuditStore``: ``AuditActivities(store).audit_write``."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    @activity.defn
    def audit_write(self, inp: AuditWriteInput) -> None:
        """Append ``inp.events`` and upsert ``inp.run`` (``AuditStore.write``), idempotently.

        Every error is left retryable (a locked or full disk, an unreadable file, even an event
        the store refuses): the workflow's policy retries without limit, so the run waits for
        the audit trail rather than failing, and never acts before its intent is recorded.
        """
        self._store.write(inp)
