"""The audit trail: an append-only record, in the database (SQLite or PostgreSQL, remediator.db),
of everything a remediation did and why.

Written by the ``audit_write`` activity (activities/audit.py) from the worker's thread pool and
by the intake (alerts that match no playbook, fail to render, are duplicates or in cooldown;
approval decisions the run refused, via remediator.app.approvals);
read by the intake (``handled_by``: was this alert firing already taken by a run?) and by the
CLI (``remediator audit show|list``, rendered by remediator.audit.view).

One database (``--database-url``: ``sqlite:///<state_dir>/audit.db`` by default, PostgreSQL
for replicas); the tables of the trail (the brakes add theirs, below):

* ``runs``: one row per remediation run (Temporal run ID), upserted; only ``outcome``,
  ``ended_at`` and ``cooldown_until`` ever change, and an outcome never goes back to
  ``running``;
* ``events``: the run's timeline (``AuditEvent``), unique on ``(run_id, key)``: the first write
  of a key wins, so a retried or replayed write adds nothing and never fails;
  ``alert`` events index their ``data.dedup_key`` (``fingerprint@startsAt``);
* ``intake``: alerts handled at the intake without a run, and refused approval decisions;
* ``ledger`` (schema 4): the hash chain over every append-only record and every state of a
  run (remediator.audit.chain), written in the transaction of the record it covers.

Append-only is enforced by the database, not by convention (SQLite triggers below; PostgreSQL
plpgsql triggers of the same names, remediator/db/migrations): triggers refuse UPDATE and DELETE
of ``events``, ``intake`` and ``ledger``, DELETE of ``runs`` and any change to a run's identity
columns. What gets past them (a dropped trigger, an edit of the file) is found by ``verify``:
the tables no longer match the chain, or the chain no longer matches its hashes (HMAC-SHA256
when the store is given a key, so that someone without it cannot recompute them).
Times are stored as RFC 3339 UTC text with fixed-width microseconds
(``2026-11-21T05:37:14.576395Z``) so text order is time order.

Event ``data`` shapes the renderer understands (other keys are kept, and shown by
``--output json``): ``alert``: ``dedup_key`` (required), ``status``, ``disposition`` and the
``AlertRef`` under ``alert`` (as workflows/remediation.py writes it; a flat ``AlertRef`` dump
is read too); ``mutation``/``undo``: a ``MutationResult`` dump (``requests``,
``resource_version_before``/``_after``, ``changed``; ``undo: true`` on a compensation);
``plan``: the ``MutationPlan`` recorded before a change is sent (``change``, ``precondition``,
``requests``, ``noop``); ``health``: ``check``, ``healthy``, ``final``; ``decision``: ``reason``; ``outcome``:
``outcome`` and ``reason``; ``step_intent``: ``action``, ``params``; ``run_started``: ``steps``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, computed_field, field_validator
from pydantic_core import to_jsonable_python
from sqlalchemy import RowMapping, text
from sqlalchemy.engine import Connection

from remediator.audit.chain import LEDGER_SCHEMA, AuditKeyError, Chain, Verdict, chain_existing, entries, trigger_names
from remediator.audit.chain import verify as verify_chain
from remediator.db import Database, Dialect, SchemaError, json_text
from remediator.db.migrate import check_schema
from remediator.domain.durations import parse_duration
from remediator.domain.messages import AlertRef, AuditWriteInput, RunInfo
from remediator.domain.runs import WORKFLOW_ID_PREFIX, cluster_of, qualified_target

SCHEMA_VERSION = 4

log = logging.getLogger("remediator.audit")

IntakeKind = Literal[
    "unmatched", "render_failed", "duplicate", "cooldown", "approval_refused", "refused_namespace", "unknown_cluster",
]

_SCHEMA = """
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    workflow_id     TEXT NOT NULL,
    alertname       TEXT NOT NULL,
    namespace       TEXT,
    target          TEXT NOT NULL,
    playbook        TEXT NOT NULL,
    playbook_path   TEXT NOT NULL,
    playbook_sha256 TEXT NOT NULL,
    simulate        INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    ended_at        TEXT,
    cooldown_until  TEXT
);
CREATE INDEX runs_started_at ON runs (started_at);
CREATE INDEX runs_workflow_id ON runs (workflow_id, started_at);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    data       TEXT NOT NULL,
    dedup_key  TEXT,
    written_at TEXT NOT NULL,
    UNIQUE (run_id, key)
);
CREATE INDEX events_dedup_key ON events (dedup_key) WHERE dedup_key IS NOT NULL;

CREATE TABLE intake (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    playbook    TEXT,
    run_id      TEXT,
    alertname   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    status      TEXT NOT NULL,
    alert       TEXT NOT NULL
);
CREATE INDEX intake_at ON intake (at);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused'); END;
CREATE TRIGGER intake_no_update BEFORE UPDATE ON intake
BEGIN SELECT RAISE(ABORT, 'audit intake records are append-only: UPDATE refused'); END;
CREATE TRIGGER intake_no_delete BEFORE DELETE ON intake
BEGIN SELECT RAISE(ABORT, 'audit intake records are append-only: DELETE refused'); END;
CREATE TRIGGER runs_no_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'audit runs are append-only: DELETE refused'); END;
CREATE TRIGGER runs_identity_frozen BEFORE UPDATE ON runs
WHEN NEW.run_id IS NOT OLD.run_id OR NEW.workflow_id IS NOT OLD.workflow_id
  OR NEW.alertname IS NOT OLD.alertname OR NEW.namespace IS NOT OLD.namespace
  OR NEW.target IS NOT OLD.target OR NEW.playbook IS NOT OLD.playbook
  OR NEW.playbook_path IS NOT OLD.playbook_path OR NEW.playbook_sha256 IS NOT OLD.playbook_sha256
  OR NEW.simulate IS NOT OLD.simulate OR NEW.started_at IS NOT OLD.started_at
BEGIN SELECT RAISE(ABORT, 'audit runs: only outcome and ended_at may change'); END;
"""
_BRAKES = """
CREATE TABLE pauses (
    scope      TEXT PRIMARY KEY,
    namespace  TEXT,
    playbook   TEXT,
    reason     TEXT NOT NULL,
    paused_by  TEXT NOT NULL,
    paused_at  TEXT NOT NULL
);
CREATE TABLE brake_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    namespace  TEXT,
    playbook   TEXT,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL
);
CREATE TRIGGER brake_log_no_update BEFORE UPDATE ON brake_log
BEGIN SELECT RAISE(ABORT, 'audit brake_log is append-only: UPDATE refused'); END;
CREATE TRIGGER brake_log_no_delete BEFORE DELETE ON brake_log
BEGIN SELECT RAISE(ABORT, 'audit brake_log is append-only: DELETE refused'); END;
CREATE TABLE frozen (
    run_id      TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    target      TEXT NOT NULL,
    namespace   TEXT,
    playbook    TEXT NOT NULL,
    step        INTEGER NOT NULL,
    scope       TEXT NOT NULL,
    since       TEXT NOT NULL
);
CREATE TABLE slots (
    run_id      TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    target      TEXT NOT NULL,
    enqueued_at TEXT NOT NULL,
    granted_at  TEXT,
    released_at TEXT
);
CREATE INDEX slots_open ON slots (released_at, granted_at, enqueued_at);
CREATE TABLE grants (
    key         TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    target      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    action      TEXT NOT NULL,
    at          TEXT NOT NULL,
    limit_name  TEXT,
    override_by TEXT
);
CREATE INDEX grants_action ON grants (action, at);
CREATE INDEX grants_target ON grants (workflow_id, at);
CREATE TRIGGER grants_no_update BEFORE UPDATE ON grants
BEGIN SELECT RAISE(ABORT, 'audit grants are append-only: UPDATE refused'); END;
CREATE TRIGGER grants_no_delete BEFORE DELETE ON grants
BEGIN SELECT RAISE(ABORT, 'audit grants are append-only: DELETE refused'); END;
"""
"""Tables of the brakes (remediator.audit.brakes): pause scopes, frozen runs, concurrency slots
(mutable state), the pause/resume log and the ledger of granted mutations (append-only)."""
_SCHEMA += _BRAKES + LEDGER_SCHEMA
TRIGGERS = trigger_names(_SCHEMA)
"""The append-only triggers ``verify`` expects to find."""

def _statements(script: str) -> list[str]:
    """Split the schema into statements (``executescript`` would COMMIT our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]


_MIGRATIONS = {
    # version 1 -> 2: when a run's cooldown ends, whatever ended the run (issue 6).
    2: ["ALTER TABLE runs ADD COLUMN cooldown_until TEXT"],
    # version 2 -> 3: the brakes (issue 8).
    3: _statements(_BRAKES),
    # version 3 -> 4: the hash chain; the rows already stored are chained oldest first, keyed
    # when the process that opens the file first has the key (remediator.audit.chain).
    4: [*_statements(LEDGER_SCHEMA), chain_existing],
}
"""Statements (or functions of the connection, key and time) that bring a database of version
``n - 1`` to version ``n``."""


# ON CONFLICT DO NOTHING rather than INSERT OR IGNORE: OR IGNORE would also drop rows that
# break NOT NULL, hiding a bad write instead of refusing it.
_INSERT_EVENT = """
INSERT INTO events (run_id, key, at, kind, message, data, dedup_key, written_at)
VALUES (:run_id, :key, :at, :kind, :message, :data, :dedup_key, :written_at)
ON CONFLICT (run_id, key) DO NOTHING
RETURNING *
"""


class AuditError(Exception):
    """Base of the audit trail's own errors."""


class AuditSchemaError(AuditError, SchemaError):
    """The SQLite file was written by a newer remediator (``PRAGMA user_version`` too high)."""


class AuditEventInvalid(AuditError, ValueError):
    """An event cannot be recorded as given (e.g. an ``alert`` event without ``data.dedup_key``)."""


# --------------------------------------------------------------------------- rows


class _Row(BaseModel):
    """A row as stored, read by column name: times are RFC 3339 text (UTC-aware datetimes
    here), JSON columns are text (dicts here), booleans are 0/1."""

    model_config = ConfigDict(frozen=True)

    @field_validator("data", "alert", mode="before", check_fields=False)
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Self:
        """The row model of one row (a mapping of column to value; the one mapping from the
        database)."""
        return cls.model_validate(dict(row))


class RunRow(RunInfo):
    """One run as stored: ``RunInfo``'s columns; times are UTC-aware datetimes. ``cluster``:
    the cluster its workflow ID names (engines started with ``--cluster``), else None."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cluster(self) -> str | None:
        return cluster_of(self.workflow_id)

    @property
    def qualified_target(self) -> str:
        """The target as people name it across clusters: ``east/deployment/prod/checkout``,
        or ``target`` alone for a run without a cluster."""
        return qualified_target(self.target, self.cluster)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Self:
        """The run of one row of ``runs`` (a mapping of column to value)."""
        return cls.model_validate(dict(row))


class EventRow(_Row):
    """One event as stored; ``seq`` is the global write order, ``written_at`` the wall clock
    of the write."""

    seq: int
    run_id: str
    key: str
    at: datetime
    kind: str
    message: str
    data: dict[str, Any]
    dedup_key: str | None
    written_at: datetime


class IntakeRow(_Row):
    """An alert handled at the intake without a run; ``alert`` is the ``AlertRef`` as JSON."""

    seq: int
    at: datetime
    kind: str
    message: str
    playbook: str | None
    run_id: str | None
    alertname: str
    fingerprint: str
    starts_at: datetime
    dedup_key: str
    status: str
    alert: dict[str, Any]


# --------------------------------------------------------------------------- time


def format_time(value: datetime) -> str:
    """RFC 3339 UTC text with microseconds: ``2026-11-21T05:37:14.576395Z``.

    A naive datetime is taken as UTC (Temporal's ``workflow.now()`` and pydantic's parse of
    ``...Z`` are both aware, so a naive one can only come from a caller that meant UTC).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; any RFC 3339 text is accepted, the result is UTC-aware."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time_bound(text: str, now: datetime | None = None) -> datetime:
    """A ``--since``/``--until`` value: a duration before ``now`` (``90s``, ``1h``, ``2d``, as
    Prometheus writes durations) or an RFC 3339 time (``2026-11-21T05:00:00Z``).

    Raises:
        ValueError: neither form, with the text a person reads.
    """
    text = text.strip()
    try:
        ago = parse_duration(text)
    except ValueError:
        pass
    else:
        return (now or datetime.now(UTC)) - ago
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"expected a duration such as 30m or 1h, or an RFC 3339 time such as "
            f"2026-11-21T05:00:00Z, got {text!r}"
        ) from None


def _json(value: Any) -> str:
    # Canonical form (sorted keys, no spaces) so a retried write compares equal byte for byte.
    return json.dumps(to_jsonable_python(value), sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- store


class AuditStore:
    """The audit trail in the deployment's database (remediator.db): an SQLite file embedded by
    default, PostgreSQL shared by worker replicas.

    Connections come from the database's pool, one per call (reads) or transaction (writes), so
    the activity thread pool and the asyncio intake never wait on each other to read; writes are
    serialised with every writer of the database, in any process (``Database.write``).

    Args:
        db: the database (shared with remediator.slack.threads by the worker), a
            ``--database-url`` (``sqlite:///STATE_DIR/audit.db``, ``postgresql://...``) or an
            SQLite file path (its directory is created).
        key: the HMAC key of the chain (``--audit-key-file``, read by
            ``remediator.audit.chain.read_key``); None: plain SHA-256. Reading needs no key;
            writing to a chain that is keyed needs the same key.

    An SQLite file is brought to ``SCHEMA_VERSION`` here (``PRAGMA user_version``); a
    PostgreSQL database must already be at this remediator's alembic head (``remediator db
    upgrade``): a store never changes a shared schema.

    Raises:
        AuditSchemaError: the SQLite file holds a schema newer than ``SCHEMA_VERSION``.
        SchemaError: the PostgreSQL database is not at this remediator's schema revision (the
            message names ``remediator db upgrade``).
        DatabaseUnavailable: PostgreSQL cannot be reached.
        DatabaseError: the file is not an SQLite database, or the database cannot be read.
    """

    def __init__(self, db: Database | str | Path, key: bytes | None = None) -> None:
        self._owns_db = not isinstance(db, Database)
        self.db = Database(db) if not isinstance(db, Database) else db
        self.path = self.db.path
        """The SQLite file, or None on PostgreSQL."""
        self._key = key
        try:
            if self.db.dialect == "sqlite":
                self._migrate()
            else:
                check_schema(self.db)
        except BaseException:
            if self._owns_db:
                self.db.dispose()
            raise

    @property
    def dialect(self) -> Dialect:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    def _migrate(self) -> None:
        # The write transaction takes the file's write lock first, so two processes starting
        # together do not both see version 0 and both create the tables.
        with self.db.write() as conn:
            version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
            if version > SCHEMA_VERSION:
                raise AuditSchemaError(
                    f"{self.path}: audit schema version {version} is newer than this "
                    f"remediator supports ({SCHEMA_VERSION}); upgrade remediator"
                )
            if version == 0:
                for statement in _statements(_SCHEMA):
                    conn.exec_driver_sql(statement)
            else:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        if callable(statement):
                            statement(conn, self._key, format_time(datetime.now(UTC)))
                        else:
                            conn.exec_driver_sql(statement)
            if version != SCHEMA_VERSION:
                conn.exec_driver_sql(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (``Database.write``: every writer of the database, in any
        process, is serialised with it), committed on exit, rolled back on any exception.
        Yields a SQLAlchemy ``Connection``; statements are ``sqlalchemy.text`` with named
        parameters. Used by remediator.audit.brakes for count-then-grant."""
        with self.db.write() as conn:
            yield conn

    def chain(self, db: Connection) -> Chain:
        """The ledger appender for the open transaction ``db`` (``transaction()``): every
        append-only record written in it must be appended to the chain in it too."""
        return Chain(db, self._key, format_time(datetime.now(UTC)))

    def close(self) -> None:
        """Close the pool's connections when this store opened the database (a shared
        ``Database`` is closed by its owner)."""
        if self._owns_db:
            self.db.dispose()

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[RowMapping]:
        with self.db.read() as conn:
            return list(conn.execute(text(sql), params or {}).mappings())

    # ------------------------------------------------------------------ writes

    def write(self, inp: AuditWriteInput) -> None:
        """Upsert the run (if given) and append the events, in one transaction.

        Idempotent, first write wins: an event whose ``(run_id, key)`` is already stored is
        skipped, so an activity retried after a write that did commit adds nothing. The workflow
        sends events as the input of a regular activity, fixed once in its history, so a retry
        carries the same content; should a key ever arrive with other content, the stored event
        stays and the difference is logged, never raised (an audit write must not fail a run).
        The run row's ``outcome``, ``ended_at`` and ``cooldown_until`` are updated; ``outcome``
        never returns to ``running``.

        Raises:
            AuditEventInvalid: an ``alert`` event without ``data.dedup_key``, or ``inp.run`` for
                another run ID.
            AuditKeyError: the chain is keyed and this store has no key or another one.
            DatabaseError: the database cannot be written (locked, disk full, unreachable...);
                nothing is written and the caller retries.
        """
        if inp.run is not None and inp.run.run_id != inp.run_id:
            raise AuditEventInvalid(
                f"run_id {inp.run_id!r} of the write differs from run.run_id {inp.run.run_id!r}"
            )
        rows = []
        for ev in inp.events:
            dedup_key = None
            if ev.kind == "alert":
                dedup_key = ev.data.get("dedup_key")
                if not isinstance(dedup_key, str) or not dedup_key:
                    raise AuditEventInvalid(
                        f"audit event {ev.key!r} of run {inp.run_id}: kind alert needs "
                        f"data.dedup_key (fingerprint@startsAt)"
                    )
            rows.append(
                {
                    "run_id": inp.run_id,
                    "key": ev.key,
                    "at": format_time(ev.at),
                    "kind": ev.kind,
                    "message": ev.message,
                    "data": _json(ev.data),
                    "dedup_key": dedup_key,
                }
            )
        written_at = format_time(datetime.now(UTC))
        with self.db.write() as conn:
            chain = Chain(conn, self._key, written_at)
            if inp.run is not None:
                self._upsert_run(conn, inp.run)
                # A run's row changes (outcome, ended_at, cooldown_until): each state it
                # takes is chained once, so a retried write appends nothing.
                state = conn.execute(text("SELECT * FROM runs WHERE run_id = :run_id"), {"run_id": inp.run_id}).mappings().one()
                chain.append_state("run", state, inp.run_id)
            for row in rows:
                stored = conn.execute(text(_INSERT_EVENT), {**row, "written_at": written_at}).mappings().first()
                if stored is None:
                    self._check_same(conn, row)
                else:
                    chain.append("event", stored, inp.run_id)

    def _upsert_run(self, conn: Connection, run: RunInfo) -> None:
        conn.execute(
            text("""
            INSERT INTO runs (run_id, workflow_id, alertname, namespace, target, playbook,
                              playbook_path, playbook_sha256, simulate, started_at, outcome,
                              ended_at, cooldown_until)
            VALUES (:run_id, :workflow_id, :alertname, :namespace, :target, :playbook,
                    :playbook_path, :playbook_sha256, :simulate, :started_at, :outcome,
                    :ended_at, :cooldown_until)
            ON CONFLICT (run_id) DO UPDATE SET
                outcome = CASE WHEN excluded.outcome = 'running' THEN runs.outcome
                               ELSE excluded.outcome END,
                ended_at = COALESCE(excluded.ended_at, runs.ended_at),
                cooldown_until = COALESCE(excluded.cooldown_until, runs.cooldown_until)
            """),
            {
                "run_id": run.run_id,
                "workflow_id": run.workflow_id,
                "alertname": run.alertname,
                "namespace": run.namespace,
                "target": run.target,
                "playbook": run.playbook,
                "playbook_path": run.playbook_path,
                "playbook_sha256": run.playbook_sha256,
                "simulate": int(run.simulate),
                "started_at": format_time(run.started_at),
                "outcome": run.outcome,
                "ended_at": format_time(run.ended_at) if run.ended_at else None,
                "cooldown_until": format_time(run.cooldown_until) if run.cooldown_until else None,
            },
        )

    def _check_same(self, conn: Connection, row: dict[str, Any]) -> None:
        old = conn.execute(
            text("SELECT at, kind, message, data FROM events WHERE run_id = :run_id AND key = :key"), row
        ).mappings().one()
        if (old["at"], old["kind"], old["message"], old["data"]) != (row["at"], row["kind"], row["message"], row["data"]):
            log.warning(
                "audit event %r of run %s is already recorded with other content; the first write "
                "stays (stored: %s %r at %s; not written: %s %r at %s)",
                row["key"], row["run_id"], old["kind"], old["message"], old["at"], row["kind"], row["message"], row["at"],
            )

    def record_intake(
        self,
        kind: IntakeKind,
        alert: AlertRef | None,
        message: str,
        playbook: str | None = None,
        *,
        run_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append a record of an alert the intake handled without starting a run, or of an
        approval decision the run refused.

        Args:
            kind: ``unmatched`` (no playbook's matchers), ``render_failed`` (a playbook matched
                but its templates failed against the alert), ``duplicate`` (this firing was
                already taken by ``run_id``), ``cooldown`` (the target is in its cooldown),
                ``approval_refused`` (the ``decide`` Update's validator refused a click or a
                CLI decision for ``run_id``; remediator.app.approvals), ``unknown_cluster`` (the
                alert's cluster label names a cluster the intake does not route to; ``--cluster``, ``--clusters``).
            alert: the alert; stored whole as JSON, with its ``dedup_key``. None when there is
                no alert (``approval_refused``): the alert columns are then empty and
                ``starts_at`` is ``at``.
            message: why, as a person reads it.
            playbook: the playbook concerned, if any.
            run_id: the run that already handled it (``duplicate``) or that refused the
                decision (``approval_refused``), if known.
            at: when; defaults to now (UTC).
        """
        at = at or datetime.now(UTC)
        with self.transaction() as db:
            stored = db.execute(
                text(
                    "INSERT INTO intake (at, kind, message, playbook, run_id, alertname, fingerprint,"
                    " starts_at, dedup_key, status, alert) VALUES (:at, :kind, :message, :playbook, :run_id,"
                    " :alertname, :fingerprint, :starts_at, :dedup_key, :status, :alert) RETURNING *"
                ),
                {
                    "at": format_time(at),
                    "kind": kind,
                    "message": message,
                    "playbook": playbook,
                    "run_id": run_id,
                    "alertname": alert.alertname if alert else "",
                    "fingerprint": alert.fingerprint if alert else "",
                    "starts_at": format_time(alert.starts_at if alert else at),
                    "dedup_key": alert.dedup_key if alert else "",
                    "status": alert.status if alert else "",
                    "alert": _json(alert.model_dump(mode="json") if alert else {}),
                },
            ).mappings().one()
            self.chain(db).append("intake", stored, run_id)

    # ------------------------------------------------------------------ the chain

    def verify(self, run_id: str | None = None) -> Verdict:
        """Check the chain and the tables against it (remediator.audit.chain.verify), in one
        read snapshot. ``run_id`` (full ID): compare only that run's records (its row, events,
        intake records and grants); the whole chain's order, links and hashes are checked
        either way, since one break undermines every later record."""
        with self.db.read(snapshot=True) as conn:
            return verify_chain(conn, self._key, run_id, TRIGGERS)

    def export(
        self, since: datetime | None = None, until: datetime | None = None, run_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The chain's records, oldest first, each with its ``seq``, ``prev`` and ``hash``
        (remediator.audit.chain.entries); ``since``/``until`` bound the time each was chained.
        Read in one snapshot on a connection of its own, so a slow reader holds up no writer."""
        with self.db.read(snapshot=True) as conn:
            yield from entries(conn, format_time(since) if since else None, format_time(until) if until else None, run_id)

    # ------------------------------------------------------------------ reads

    def handled_by(self, dedup_key: str) -> str | None:
        """The run ID that took this alert firing (``fingerprint@startsAt``) to remediate, or None.

        A firing that a run only recorded during its cooldown (disposition ``cooling_down``, or
        ``cooldown`` in trails written before issue 8) was not remediated, so it does not count:
        once the cooldown is over, the same firing may start a remediation. Nor does a firing a
        run only queued for another playbook (disposition ``queued``), or a resolution. An indexed lookup on ``alert`` events; called by the intake for every alert.
        """
        rows = self._rows(
            "SELECT run_id FROM events WHERE dedup_key = :dedup_key"
            f" AND coalesce({json_text(self.dialect, 'data', 'disposition')}, '')"
            " NOT IN ('cooldown', 'cooling_down', 'queued', 'resolved') ORDER BY seq LIMIT 1",
            {"dedup_key": dedup_key},
        )
        return rows[0]["run_id"] if rows else None

    def latest_run(self, workflow_id: str) -> RunRow | None:
        """The newest run of this workflow ID (``remediation/deployment/prod/checkout``), or None.

        The intake reads it before handing an alert over: its ``cooldown_until`` says whether a
        new remediation of the target may start, and an ``outcome`` still ``running`` says a run
        is believed alive. An indexed read.
        """
        rows = self._rows(
            "SELECT * FROM runs WHERE workflow_id = :workflow_id ORDER BY started_at DESC, rowid DESC LIMIT 1",
            {"workflow_id": workflow_id},
        )
        return RunRow.of(rows[0]) if rows else None

    def get_run(self, run_id: str) -> RunRow:
        """The run with this Temporal run ID, a unique prefix of one, or else the newest run of
        this workflow ID (``remediation/deployment/prod/checkout``).

        Raises:
            LookupError: empty, unknown, or a prefix of several runs (the message lists them).
        """
        run_id = run_id.strip()
        if not run_id:
            raise LookupError("no run ID given")
        with self.db.read() as conn:
            rows = list(conn.execute(
                # A range on the primary key rather than LIKE: exact (LIKE folds case and treats
                # % and _ as wildcards) and indexed. U+10FFFF sorts after any UTF-8 text (byte
                # order: PostgreSQL's columns are COLLATE "C").
                text("SELECT * FROM runs WHERE run_id >= :low AND run_id < :high ORDER BY run_id LIMIT 6"),
                {"low": run_id, "high": run_id + "\U0010ffff"},
            ).mappings())
            exact = [r for r in rows if r["run_id"] == run_id]
            if exact:
                return RunRow.of(exact[0])
            if not rows:
                rows = list(conn.execute(
                    text("SELECT * FROM runs WHERE workflow_id = :workflow_id ORDER BY started_at DESC LIMIT 1"),
                    {"workflow_id": run_id},
                ).mappings())
        if not rows:
            raise LookupError(f"no audited run matches {run_id!r}")
        if len(rows) > 1:
            shown = ", ".join(r["run_id"] for r in rows[:5])
            more = " ..." if len(rows) > 5 else ""
            raise LookupError(
                f"run ID prefix {run_id!r} is ambiguous: it matches {shown}{more}; "
                "give more characters"
            )
        return RunRow.of(rows[0])

    def events(self, run_id: str) -> list[EventRow]:
        """The run's events in write order (full run ID; see ``get_run`` for prefixes)."""
        rows = self._rows("SELECT * FROM events WHERE run_id = :run_id ORDER BY seq", {"run_id": run_id})
        return [EventRow.of(r) for r in rows]

    def list_runs(
        self,
        alertname: str | None = None,
        target: str | None = None,
        playbook: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        *,
        namespace: str | None = None,
        cluster: str | None = None,
    ) -> list[RunRow]:
        """Runs, newest first (by ``started_at``), filtered by exact values.

        ``alertname`` matches the run's first alert or any alert attached to it later;
        ``target`` is the target key (``deployment/prod/checkout``); ``cluster`` the cluster
        the run's workflow ID names (``remediation/<cluster>/...``); ``since`` (inclusive) and
        ``until`` (exclusive) bound ``started_at``. At most ``limit`` rows.
        """
        where: list[str] = []
        args: dict[str, Any] = {}
        if cluster is not None:
            # substr, not LIKE: a cluster name holds '-', and LIKE's '_' would match any character.
            prefix = f"{WORKFLOW_ID_PREFIX}{cluster}/"
            where.append("substr(workflow_id, 1, :cluster_prefix_len) = :cluster_prefix")
            args.update(cluster_prefix_len=len(prefix), cluster_prefix=prefix)
        if alertname is not None:
            where.append(
                "(alertname = :alertname OR EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.run_id"
                f" AND e.kind = 'alert' AND :alertname IN ({json_text(self.dialect, 'e.data', 'alert.labels.alertname')},"
                f" {json_text(self.dialect, 'e.data', 'labels.alertname')})))"
            )
            args["alertname"] = alertname
        rows = self._select(
            "runs", where, args,
            {"target": target, "playbook": playbook, "outcome": outcome, "namespace": namespace},
            "started_at", since, until, "started_at DESC, rowid DESC", limit,
        )
        return [RunRow.of(r) for r in rows]

    def _select(
        self,
        table: str,
        where: list[str],
        args: dict[str, Any],
        equal: dict[str, Any],
        time_column: str,
        since: datetime | None,
        until: datetime | None,
        order: str,
        limit: int,
    ) -> list[RowMapping]:
        """``SELECT *`` from ``table`` with ``where`` (named ``args``) plus ``column = value``
        for each non-None value of ``equal``, ``since <= time_column < until``, newest first, at
        most ``limit``."""
        where, args = list(where), dict(args)
        for column, value in equal.items():
            if value is not None:
                where.append(f"{column} = :eq_{column}")
                args[f"eq_{column}"] = value
        if since is not None:
            where.append(f"{time_column} >= :since")
            args["since"] = format_time(since)
        if until is not None:
            where.append(f"{time_column} < :until")
            args["until"] = format_time(until)
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} LIMIT :limit"
        args["limit"] = max(0, limit)
        return self._rows(sql, args)

    def intake_records(
        self,
        kind: IntakeKind | None = None,
        alertname: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        *,
        playbook: str | None = None,
        run_id: str | None = None,
    ) -> list[IntakeRow]:
        """Intake records, newest first, filtered like ``list_runs``; ``since``/``until``
        bound ``at``."""
        rows = self._select(
            "intake", [], {}, {"kind": kind, "alertname": alertname, "playbook": playbook, "run_id": run_id},
            "at", since, until, "at DESC, seq DESC", limit,
        )
        return [IntakeRow.of(r) for r in rows]
