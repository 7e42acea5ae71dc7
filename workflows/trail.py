"""The run's audit trail, as the workflow writes it: events buffered with deterministic keys,
flushed through the ``audit_write`` activity.

Used by RemediationWorkflow and its approval wait (workflows/approval.py). Deterministic: only
``workflow.now()``, ``workflow.info()`` and activities.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities
    from remediator.domain.durations import format_duration
    from remediator.domain.messages import AuditEvent, AuditEventKind, AuditWriteInput, RemediationInput, RunInfo

from workflows.policies import AUDIT_RETRY, AUDIT_TIMEOUT


class AuditTrail:
    """The events of one run, written in order.

    ``event`` buffers one event, keyed ``<seq:05d>-<kind>`` (the same on every replay);
    ``flush`` writes the buffer, and the run's columns when given or pending. ``timeline`` keeps
    one ``+1m02s message`` line per event but alerts and the start, for Slack notices.

    ``durable``: the run has the ``durable-runs`` patch (regular-activity writes); a run started
    before it writes through a local activity, as it always did.
    """

    def __init__(self, inp: RemediationInput, durable: bool) -> None:
        self._inp = inp
        self._durable = durable
        self.seq = 0
        self.buffer: list[AuditEvent] = []
        self.pending_run: RunInfo | None = None
        self.timeline: list[str] = []
        # Runs with the brakes write a long buffer in several activities (CHUNK_BYTES each), so
        # no activity input nears Temporal's payload limit whatever arrived meanwhile.
        self.chunked = False
        # A cooldown continued as new writes on under the run it continues (RunCarry.audit_run_id).
        self.run_id_override = ""

    @property
    def run_id(self) -> str:
        """The run the audit trail records these events under."""
        return self.run_id_override or workflow.info().run_id

    def event(self, kind: AuditEventKind, message: str, **data: Any) -> None:
        """Buffer one event (``data`` is kept as JSON); written by the next ``flush``."""
        self.seq += 1
        if kind not in ("run_started", "alert"):
            offset = int((workflow.now() - workflow.info().start_time).total_seconds())
            self.timeline.append(f"+{format_duration(timedelta(seconds=offset))} {message}")
        if self._inp.simulate:
            data["simulated_cluster"] = True
        self.buffer.append(AuditEvent(key=f"{self.seq:05d}-{kind}", at=workflow.now(), kind=kind, message=message, data=data))

    async def flush(self, run: RunInfo | None = None) -> None:
        """Append the buffered events (and run columns) to the audit trail.

        A regular activity: its input is recorded in this workflow's history when it is
        scheduled, so whatever retries it (a crash after the commit, a lost completion, a
        replay) writes exactly these events again, which the store keeps once. Retried without
        limit: an unavailable audit store holds the run, it never fails it.
        """
        run = run or self.pending_run
        if not self.buffer and run is None:
            return
        events, self.buffer, self.pending_run = self.buffer, [], None
        if self.chunked:
            chunks = _chunks(events)
            for chunk in chunks[:-1]:
                await self._write(AuditWriteInput(run=None, run_id=self.run_id, events=chunk))
            # The run's columns go with the last events: an outcome is written after its story.
            await self._write(AuditWriteInput(run=run, run_id=self.run_id, events=chunks[-1]))
            return
        write = AuditWriteInput(run=run, run_id=self.run_id, events=events)
        if not self._durable:
            await workflow.execute_local_activity_method(
                AuditActivities.audit_write, write, start_to_close_timeout=AUDIT_TIMEOUT, retry_policy=AUDIT_RETRY
            )
            return
        await self._write(write)

    async def _write(self, write: AuditWriteInput) -> None:
        await workflow.execute_activity_method(
            AuditActivities.audit_write,
            write,
            start_to_close_timeout=AUDIT_TIMEOUT,
            heartbeat_timeout=self._inp.heartbeat_timeout,
            retry_policy=AUDIT_RETRY,
        )


CHUNK_BYTES = 256 * 1024
"""Most JSON bytes of events in one ``audit_write`` of a run with the brakes (Temporal refuses
payloads over 2 MiB)."""


def _chunks(events: list[AuditEvent]) -> list[list[AuditEvent]]:
    """``events`` in order, cut into lists of at most CHUNK_BYTES of JSON (at least one event
    each); one empty list when there are none (a write of the run's columns only)."""
    chunks: list[list[AuditEvent]] = [[]]
    size = 0
    for event in events:
        n = len(event.model_dump_json())
        if chunks[-1] and size + n > CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += n
    return chunks
