"""The audit trail's hash chain: every append-only record, in write order, linked by hashes.

Written by remediator.audit.store (``AuditStore.write``, ``record_intake``) and
remediator.audit.brakes (pause/resume log, grants) inside the transaction that writes the
record itself; read by ``remediator audit verify`` and ``remediator audit export``
(remediator.cli).

One table, ``ledger`` (schema version 4), one row per record appended to ``events``,
``intake``, ``brake_log`` and ``grants``, and one per state of a ``runs`` row (the row is
upserted; each change of ``outcome``, ``ended_at`` or ``cooldown_until`` appends its new
state). A row holds:

* ``seq``: 1, 2, 3... without a gap, the chain's order;
* ``kind`` and ``record``: which record (``event`` ``RUN#KEY``, ``run`` ``RUN``, ``intake``
  ``SEQ``, ``brake`` ``SEQ``, ``grant`` ``KEY``), and ``run_id`` when it belongs to a run;
* ``body``: every column of the record as stored, canonical JSON (``canonical``);
* ``key_id``: None for SHA-256, else the id of the HMAC key (``key_id``, not the key);
* ``prev``: the previous row's ``hash`` (64 zeros for the first);
* ``hash``: SHA-256, or HMAC-SHA256 with the key, of ``canonical([seq, at, kind, record,
  run_id, body, key_id, prev])`` as UTF-8, lower-case hex.

``verify`` walks the chain (gaps, links, hashes) and compares the live tables with the bodies:
a changed column, a row with no entry (inserted), an entry with no row (removed), a missing
append-only trigger. Without the key, a keyed chain can be checked for links and bodies only,
and ``verify`` says so. Someone who can write the file but lacks the key can rewrite the tables
and the ledger alike, but cannot recompute a keyed hash.

The same on SQLite and PostgreSQL (remediator.db): the bodies are the columns as stored, text
and integers alike on both, except PostgreSQL's ``rowid`` identity column (``runs``,
``grants``: the insertion order SQLite keeps implicitly), which is not part of a record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

GENESIS = "0" * 64
"""``prev`` of the first record."""

LEDGER_SCHEMA = """
CREATE TABLE ledger (
    seq     INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    record  TEXT NOT NULL,
    run_id  TEXT,
    body    TEXT NOT NULL,
    key_id  TEXT,
    prev    TEXT NOT NULL,
    hash    TEXT NOT NULL
);
CREATE INDEX ledger_record ON ledger (kind, record, seq);
CREATE INDEX ledger_run ON ledger (run_id, seq) WHERE run_id IS NOT NULL;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'audit ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'audit ledger is append-only: DELETE refused'); END;
"""

TABLES = {"event": "events", "run": "runs", "intake": "intake", "brake": "brake_log", "grant": "grants"}
"""Ledger kind -> the table its records live in."""

ORDER = {"event": "seq", "run": "rowid", "intake": "seq", "brake": "seq", "grant": "rowid"}
"""Ledger kind -> the column of its table's insertion order (SQLite's implicit ``rowid``, an
explicit identity column of that name in PostgreSQL)."""


def record_body(row: Any) -> dict[str, Any]:
    """The record of a table row (a mapping of every column as stored), without ``rowid``."""
    return {k: v for k, v in dict(row).items() if k != "rowid"}


class AuditKeyError(Exception):
    """The audit key is missing, unreadable, or not the key the chain was written with."""


def canonical(value: Any) -> str:
    """The one encoding that is hashed: JSON, sorted keys, no spaces, UTF-8 text as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key_id(key: bytes) -> str:
    """A public name of a key (16 hex digits): HMAC-SHA256 of a fixed text. It tells keys
    apart and reveals nothing of the key."""
    return hmac.new(key, b"remediator audit key id", hashlib.sha256).hexdigest()[:16]


def read_key(path: str | Path) -> bytes:
    """The key in ``path``: its bytes without surrounding whitespace (at least 16).

    Raises:
        AuditKeyError: the file cannot be read or holds fewer than 16 bytes.
    """
    try:
        key = Path(path).read_bytes().strip()
    except OSError as err:
        raise AuditKeyError(f"audit key file {path}: {err.strerror or err}") from None
    if len(key) < 16:
        raise AuditKeyError(f"audit key file {path}: holds {len(key)} bytes; a key needs at least 16 (e.g. `openssl rand -hex 32`)")
    return key


def link_hash(seq: int, at: str, kind: str, record: str, run_id: str | None, body: str, kid: str | None, prev: str,
              key: bytes | None) -> str:
    """The hash of one ledger row (see the module docstring)."""
    message = canonical([seq, at, kind, record, run_id, body, kid, prev]).encode()
    if kid is None:
        return hashlib.sha256(message).hexdigest()
    if key is None:
        raise AuditKeyError("a keyed record needs the key")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def record_key(kind: str, row: dict[str, Any]) -> str:
    """The ``record`` of a row of ``TABLES[kind]``."""
    if kind == "event":
        return f"{row['run_id']}#{row['key']}"
    if kind == "run":
        return str(row["run_id"])
    if kind == "grant":
        return str(row["key"])
    return str(row["seq"])


class Chain:
    """Appends to the ledger inside one open write transaction (remediator.db.Database.write,
    which serialises every writer of the database, in any process). The head is read once, by
    primary key, then kept for the rest of the transaction.

    Raises (from ``append``):
        AuditKeyError: the chain is keyed and this process has no key, or another one.
    """

    def __init__(self, db: Connection, key: bytes | None, at: str) -> None:
        self.db = db
        self.key = key
        self.kid = key_id(key) if key is not None else None
        self.at = at
        self._head: tuple[int, str] | None = None

    def _load(self) -> tuple[int, str]:
        if self._head is None:
            row = self.db.execute(text("SELECT seq, hash, key_id FROM ledger ORDER BY seq DESC LIMIT 1")).fetchone()
            if row is None:
                self._head = (0, GENESIS)
            else:
                if row[2] is not None and row[2] != self.kid:
                    raise AuditKeyError(
                        f"the audit trail is keyed (key id {row[2]}); "
                        + ("this process has no key: set --audit-key-file (REMEDIATOR_AUDIT_KEY_FILE)" if self.kid is None
                           else f"this process's key is another one (key id {self.kid})")
                    )
                self._head = (row[0], row[1])
        return self._head

    def append(self, kind: str, row: dict[str, Any], run_id: str | None = None) -> None:
        """Append the record ``row`` (every column, as stored) of ``TABLES[kind]``."""
        row = record_body(row)
        seq, prev = self._load()
        seq += 1
        record = record_key(kind, row)
        body = canonical(row)
        digest = link_hash(seq, self.at, kind, record, run_id, body, self.kid, prev, self.key)
        self.db.execute(
            text("INSERT INTO ledger (seq, at, kind, record, run_id, body, key_id, prev, hash)"
                 " VALUES (:seq, :at, :kind, :record, :run_id, :body, :key_id, :prev, :hash)"),
            {"seq": seq, "at": self.at, "kind": kind, "record": record, "run_id": run_id, "body": body,
             "key_id": self.kid, "prev": prev, "hash": digest},
        )
        self._head = (seq, digest)

    def append_state(self, kind: str, row: dict[str, Any], run_id: str | None = None) -> None:
        """Append ``row`` unless the record's last entry already holds exactly it (a mutable
        record, ``runs``: each distinct state once, so a retried write adds nothing)."""
        row = record_body(row)
        last = self.db.execute(
            text("SELECT body FROM ledger WHERE kind = :kind AND record = :record ORDER BY seq DESC LIMIT 1"),
            {"kind": kind, "record": record_key(kind, row)},
        ).fetchone()
        if last is None or last[0] != canonical(row):
            self.append(kind, row, run_id)


def chain_existing(db: Connection, key: bytes | None, at: str) -> int:
    """Schema 3 -> 4: chain the rows already stored, oldest first (by their own time:
    ``written_at`` of events, ``at`` of intake, brake and grant records, ``started_at`` of runs;
    then by table and row order), each run in its current state. Returns how many."""
    rows: list[tuple[str, int, str, dict[str, Any]]] = []
    order = {"run": 0, "event": 1, "intake": 2, "brake": 3, "grant": 4}
    times = {"run": "started_at", "event": "written_at", "intake": "at", "brake": "at", "grant": "at"}
    for kind, table in TABLES.items():
        # SQLite only: PostgreSQL's schema starts at version 4.
        for r in db.execute(text(f"SELECT rowid AS _rowid, * FROM {table}")).mappings():
            row = dict(r)
            rowid = row.pop("_rowid")
            rows.append((row[times[kind]], order[kind], f"{rowid:020d}", {"kind": kind, "row": row}))
    rows.sort(key=lambda t: t[:3])
    chain = Chain(db, key, at)
    for *_, item in rows:
        chain.append(item["kind"], item["row"], _run_of(item["kind"], item["row"]))
    return len(rows)


def _run_of(kind: str, row: dict[str, Any]) -> str | None:
    return row.get("run_id") if kind != "brake" else None


# --------------------------------------------------------------------------- verify


@dataclass
class Problem:
    """One finding of ``verify``: ``order`` sorts it (the ledger seq, or after them)."""

    order: float
    text: str


@dataclass
class Verdict:
    """What ``verify`` found. ``problems`` in chain order; ``missing_key``: the keyed records
    could not be checked; ``records``: the chain's length; ``checked``: records compared
    with their tables (all, or the run's); ``head``: ``(seq, hash)`` of the last record."""

    records: int = 0
    checked: int = 0
    head: tuple[int, str] | None = None
    problems: list[Problem] = field(default_factory=list)
    missing_key: str | None = None

    @property
    def intact(self) -> bool:
        return not self.problems and self.missing_key is None


def _show(value: Any) -> str:
    return repr(value)


JSON_COLUMNS = {"data", "alert"}
"""Columns holding JSON text: a change is shown field by field (``data.user_id``)."""


def _differences(column: str, live: Any, chained: Any) -> list[str]:
    """``column is <live>, the chain says <chained>``; for a JSON column, one per field that
    differs (``data.user_id is 'U0EVE', the chain says 'U0BOB'``)."""
    if column in JSON_COLUMNS and isinstance(live, str) and isinstance(chained, str):
        try:
            a, b = json.loads(live), json.loads(chained)
        except ValueError:
            pass
        else:
            found = list(_json_diff(column, a, b))
            if found:
                return found
    return [f"{column} is {_show(live)}, the chain says {_show(chained)}"]


_ABSENT = object()


def _json_diff(path: str, a: Any, b: Any) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            yield from _json_diff(f"{path}.{k}", a.get(k, _ABSENT), b.get(k, _ABSENT))
    elif a != b or type(a) is not type(b):
        yield (f"{path} is " + ("absent" if a is _ABSENT else _show(a)) + ", the chain says "
               + ("absent" if b is _ABSENT else _show(b)))


def _label(seq: int, kind: str, record: str) -> str:
    return f"record {seq} ({kind} {record})"


def verify(db: Connection, key: bytes | None, run_id: str | None = None,
           triggers: set[str] | None = None) -> Verdict:
    """Check the whole chain's order, links and hashes, then compare the records (every one, or
    only those of ``run_id``) with their tables, and the append-only ``triggers`` (names) with
    those in the database.

    A chain whose records carry a key id needs ``key`` (else ``missing_key`` says so and links and
    bodies are still checked). With a key, every record after the first keyed one must be keyed
    with it, and at least one must be: a chain without the key's records was written, or
    rewritten, without it.
    """
    out = Verdict()
    kid = key_id(key) if key is not None else None
    expected_seq, prev = 1, GENESIS
    first_keyed: int | None = None
    keyed = 0
    foreign: set[str] = set()
    latest: dict[tuple[str, str], int] = {}
    for r in db.execute(text("SELECT seq, at, kind, record, run_id, body, key_id, prev, hash FROM ledger ORDER BY seq")):
        seq, at, kind, record, rid, body, rkid, rprev, digest = r
        label = _label(seq, kind, record)
        if seq != expected_seq:
            missing = f"record {expected_seq}" if seq == expected_seq + 1 else f"records {expected_seq}-{seq - 1}"
            out.problems.append(Problem(seq, f"chain broken at record {seq}: {missing} removed from the chain"))
        elif rprev != prev:
            out.problems.append(Problem(seq, f"chain broken at {label}: it does not follow record {seq - 1} "
                                             "(a record was inserted or removed)"))
        if rkid is None:
            if first_keyed is not None:
                out.problems.append(Problem(seq, f"chain broken at {label}: not keyed, though record {first_keyed} "
                                                 "before it is (written without the key)"))
            elif link_hash(seq, at, kind, record, rid, body, None, rprev, None) != digest:
                out.problems.append(Problem(seq, f"chain broken at {label}: hash does not match "
                                                 "(the chain was rewritten or the key differs)"))
        else:
            first_keyed = first_keyed or seq
            keyed += 1
            if key is None:
                foreign.add(rkid)
            elif rkid != kid:
                out.problems.append(Problem(seq, f"chain broken at {label}: keyed with key id {rkid}, "
                                                 f"not the key given (key id {kid})"))
            elif link_hash(seq, at, kind, record, rid, body, rkid, rprev, key) != digest:
                out.problems.append(Problem(seq, f"chain broken at {label}: hash does not match "
                                                 "(the chain was rewritten or the key differs)"))
        if run_id is None or rid == run_id:
            latest[(kind, record)] = seq
        expected_seq, prev = seq + 1, digest
        out.records += 1
        out.head = (seq, digest)
    if foreign:
        out.missing_key = (f"{keyed} records are keyed (HMAC-SHA256, "
                           f"key id {', '.join(sorted(foreign))}): give the key with --audit-key-file "
                           "(REMEDIATOR_AUDIT_KEY_FILE) to verify them")
    if key is not None and first_keyed is None and out.records:
        out.problems.append(Problem(0, "no record is keyed, but a key was given: the chain was written, "
                                       "or rewritten, without the key"))
    _compare(db, out, latest, run_id)
    if triggers is not None:
        present = set(db.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'" if db.dialect.name == "sqlite"
            # A disabled trigger (ALTER TABLE ... DISABLE TRIGGER) counts as missing.
            else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled != 'D'"
        )).scalars())
        for name in sorted(triggers - present):
            out.problems.append(Problem(float("inf"), f"trigger {name} is missing: its table is no longer append-only"))
    out.problems.sort(key=lambda p: p.order)
    return out


def _compare(db: Connection, out: Verdict, latest: dict[tuple[str, str], int], run_id: str | None) -> None:
    seen: set[tuple[str, str]] = set()
    inserted: list[Problem] = []
    for kind, table in TABLES.items():
        if run_id is not None and kind == "brake":
            continue
        where = "" if run_id is None else " WHERE run_id = :run_id"
        for r in db.execute(text(f"SELECT * FROM {table}{where} ORDER BY {ORDER[kind]}"), {"run_id": run_id}).mappings():
            row = record_body(r)
            record = record_key(kind, row)
            seq = latest.get((kind, record))
            if seq is None:
                inserted.append(Problem(float("inf"), f"inserted: {kind} {record} is not in the chain"))
                continue
            seen.add((kind, record))
            out.checked += 1
            body = json.loads(db.execute(text("SELECT body FROM ledger WHERE seq = :seq"), {"seq": seq}).scalar_one())
            diffs = [
                d
                # A column added by a later migration is NULL in the rows chained before it.
                for column in [*row, *(c for c in body if c not in row)]
                if row.get(column) != body.get(column) or (column not in row and column in body)
                for d in _differences(column, row.get(column), body.get(column))
            ]
            if diffs:
                out.problems.append(Problem(seq, f"{_label(seq, kind, record)}: changed: " + "; ".join(diffs)))
    for (kind, record), seq in latest.items():
        if (kind, record) not in seen:
            out.problems.append(Problem(seq, f"{_label(seq, kind, record)}: removed: not in the {TABLES[kind]} table"))
    out.problems.extend(inserted)


def entries(db: Connection, since: str | None = None, until: str | None = None,
            run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Ledger rows for ``remediator audit export``, oldest first: ``seq``, ``at``, ``kind``,
    ``record``, ``run_id``, ``body`` (the record, as an object), ``key_id``, ``prev``, ``hash``.
    ``since`` (inclusive) and ``until`` (exclusive) bound ``at`` (RFC 3339 UTC text)."""
    where = []
    if since is not None:
        where.append("at >= :since")
    if until is not None:
        where.append("at < :until")
    if run_id is not None:
        where.append("run_id = :run_id")
    sql = "SELECT * FROM ledger" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
    for r in db.execute(text(sql), {"since": since, "until": until, "run_id": run_id}).mappings():
        row = dict(r)
        row["body"] = json.loads(row["body"])
        yield row


def trigger_names(script: str) -> set[str]:
    """The names of the triggers a schema script creates."""
    return set(re.findall(r"CREATE TRIGGER (\w+)", script))

