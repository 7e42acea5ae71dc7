"""The brakes: pauses, concurrency slots and cluster-wide limits, counted in the audit store.

Why here: every limit must hold across concurrent runs, worker crashes and several worker
processes on one task queue, so nothing is counted in a process's memory. Each decision is
one ``BEGIN IMMEDIATE`` transaction on the audit database (AuditStore.transaction): the
database's write lock serialises every process that uses the file, the count and the grant
that depends on it commit together, and a grant is recorded before its mutation is sent, so a
run that is then terminated, fails or times out still counts. Counts of the cluster (the
unschedulable nodes) are read by the caller inside the same transaction.

Tables (remediator.audit.store): ``pauses`` (scopes in force), ``brake_log`` (every pause and
resume, append-only), ``frozen`` (runs waiting on a pause), ``slots`` (concurrency: queue and
holders), ``grants`` (every mutation allowed, append-only: the ledger of action rates and
per-target counts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict

from remediator.audit.store import AuditStore, format_time, parse_time
from remediator.domain.durations import format_duration as fmt
from remediator.domain.messages import (
    GateInput,
    GateResult,
    LimitHit,
    Pause,
    PauseScope,
    SlotInput,
    SlotResult,
)
from remediator.domain.policy import NODE_ACTIONS, Policy


class FrozenRun(BaseModel):
    """A run frozen at a step boundary by a pause."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    workflow_id: str
    target: str
    namespace: str | None
    playbook: str
    step: int
    scope: str
    since: datetime


class BrakeRecord(BaseModel):
    """One pause or resume, as the audit keeps it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: datetime
    kind: Literal["pause", "resume"]
    namespace: str | None
    playbook: str | None
    reason: str
    actor: str


REFUSALS = Counter(
    "remediator_brake_refusals_total",
    "Mutations or runs the brakes refused, by limit (unschedulable_nodes, actions, per_target, namespace, gitops, "
    "flip_flop, queue_timeout).",
    ["limit"],
)


NodeCounter = Callable[[], tuple[set[str], int]]
"""Reads the cluster: (names of unschedulable nodes, number of nodes)."""


class Brakes:
    """Pauses, slots and limits of one cluster, in ``store``'s database.

    Args:
        store: the audit store (its file is shared by every worker process of the cluster).
        policy: the limits to enforce (remediator.domain.policy).
    """

    def __init__(self, store: AuditStore, policy: Policy) -> None:
        self.store = store
        self.policy = policy

    # ------------------------------------------------------------------ pauses

    def pause(self, scope: PauseScope, reason: str, actor: str, at: datetime | None = None) -> tuple[Pause, bool]:
        """Pause ``scope``; returns the pause in force and whether this call created it (a
        scope already paused keeps its first reason and author; nothing is logged twice)."""
        at = at or datetime.now(UTC)
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM pauses WHERE scope = ?", (scope.key,)).fetchone()
            if row is not None:
                return _pause(row), False
            db.execute(
                "INSERT INTO pauses (scope, namespace, playbook, reason, paused_by, paused_at) VALUES (?, ?, ?, ?, ?, ?)",
                (scope.key, scope.namespace, scope.playbook, reason, actor, format_time(at)),
            )
            _log(self.store, db, "pause", scope, reason, actor, at)
        return Pause(namespace=scope.namespace, playbook=scope.playbook, reason=reason, paused_by=actor, paused_at=at), True

    def resume(self, scope: PauseScope, reason: str, actor: str, at: datetime | None = None) -> Pause | None:
        """Lift the pause of exactly ``scope``; returns it, or None when that scope is not paused."""
        at = at or datetime.now(UTC)
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM pauses WHERE scope = ?", (scope.key,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM pauses WHERE scope = ?", (scope.key,))
            _log(self.store, db, "resume", scope, reason, actor, at)
        return _pause(row)

    def pauses(self) -> list[Pause]:
        """Every pause in force, oldest first."""
        with self.store.transaction() as db:
            return [_pause(r) for r in db.execute("SELECT * FROM pauses ORDER BY paused_at").fetchall()]

    def frozen_runs(self) -> list[FrozenRun]:
        """Runs frozen by a pause, oldest first."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT * FROM frozen ORDER BY since").fetchall()
        return [FrozenRun(**{**dict(r), "since": parse_time(r["since"])}) for r in rows]

    def log(self, limit: int = 50) -> list[BrakeRecord]:
        """Pauses and resumes, newest first."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT * FROM brake_log ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [BrakeRecord(**{**dict(r), "at": parse_time(r["at"])}) for r in rows]

    def waiting(self) -> int:
        """Runs waiting for a concurrency slot now."""
        with self.store.transaction() as db:
            return int(db.execute(f"SELECT count(*) FROM slots s WHERE {_WAITING}").fetchone()[0])

    # ------------------------------------------------------------------ concurrency

    def acquire_slot(self, inp: SlotInput) -> SlotResult:
        """Take a slot when one is free and no run that asked earlier still waits (arrival
        order); else join the queue. Idempotent: a run holding a slot gets it again.

        Holders and waiters whose run the audit shows ended (whatever ended it, recorded by
        the run or by remediator.app.settle) are released first, so a dead run never holds
        a slot for good."""
        limit = self.policy.limits.concurrent_remediations
        timeout = self.policy.limits.queue_timeout
        now = format_time(datetime.now(UTC))
        with self.store.transaction() as db:
            db.execute(
                "UPDATE slots SET released_at = ? WHERE released_at IS NULL AND run_id IN"
                " (SELECT run_id FROM runs WHERE outcome != 'running')",
                (now,),
            )
            db.execute(
                "INSERT INTO slots (run_id, workflow_id, target, enqueued_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO NOTHING",
                (inp.run_id, inp.workflow_id, inp.target.key, format_time(inp.requested_at)),
            )
            mine = db.execute("SELECT * FROM slots WHERE run_id = ?", (inp.run_id,)).fetchone()
            holders = int(db.execute("SELECT count(*) FROM slots WHERE granted_at IS NOT NULL AND released_at IS NULL").fetchone()[0])
            if mine["released_at"] is not None:
                return SlotResult(granted=False, holders=holders, limit=limit, queue_timeout=timeout, message="this run's slot was released")
            if mine["granted_at"] is not None:
                return SlotResult(granted=True, holders=holders, limit=limit, queue_timeout=timeout, message="slot held")
            ahead = int(
                db.execute(
                    f"SELECT count(*) FROM slots s WHERE {_WAITING} AND (s.enqueued_at < ? OR (s.enqueued_at = ? AND s.run_id < ?))",
                    (mine["enqueued_at"], mine["enqueued_at"], inp.run_id),
                ).fetchone()[0]
            )
            if holders + ahead < limit:
                db.execute("UPDATE slots SET granted_at = ? WHERE run_id = ?", (now, inp.run_id))
                return SlotResult(
                    granted=True, holders=holders + 1, limit=limit, queue_timeout=timeout,
                    message=f"slot {holders + 1} of {limit} (concurrent_remediations)",
                )
        return SlotResult(
            granted=False, position=ahead + 1, holders=holders, limit=limit, queue_timeout=timeout,
            message=f"{holders} of {limit} remediations past diagnosis (concurrent_remediations); "
            f"position {ahead + 1} in the queue",
        )

    def release(self, run_id: str) -> None:
        """The run ended (or hands over): free its slot and drop its frozen marker."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE slots SET released_at = ? WHERE run_id = ? AND released_at IS NULL",
                (format_time(datetime.now(UTC)), run_id),
            )
            db.execute("DELETE FROM frozen WHERE run_id = ?", (run_id,))

    # ------------------------------------------------------------------ the gate

    def gate(self, inp: GateInput, nodes: NodeCounter | None = None) -> GateResult:
        """May this mutation be sent now? One transaction: the pause, then each limit.

        ``paused``: a pause covers the run; it is recorded as frozen. ``exceeded``: every limit
        the mutation would break (node limit, the action's rate, the per-target limit), each
        with its count; nothing is granted unless ``inp.override_by`` (an approver approved
        exceeding them). ``granted``: recorded in the ledger first (a dry run and an undo are
        not: they change nothing / take a change back). A retried gate with the same ``key``
        finds its grant.

        Args:
            nodes: reads the cluster's nodes, for the node limit of ``cordon`` / ``drain``.
        """
        policy = self.policy
        now = datetime.now(UTC)
        ns, pb = inp.target.namespace, inp.playbook
        with self.store.transaction() as db:
            for row in db.execute("SELECT * FROM pauses ORDER BY paused_at").fetchall():
                pause = _pause(row)
                if pause.covers(ns, pb):
                    db.execute(
                        "INSERT INTO frozen (run_id, workflow_id, target, namespace, playbook, step, scope, since)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET step = excluded.step, scope = excluded.scope",
                        (inp.run_id, inp.workflow_id, inp.target.key, ns, pb, inp.step, pause.key, format_time(now)),
                    )
                    return GateResult(verdict="paused", pause=pause, gitops=policy.gitops, message=f"paused: {pause} ({pause.reason})")
            db.execute("DELETE FROM frozen WHERE run_id = ?", (inp.run_id,))
            if inp.undo or inp.dry_run:
                return GateResult(verdict="granted", gitops=policy.gitops, message="no limit applies")
            if db.execute("SELECT 1 FROM grants WHERE key = ?", (inp.key,)).fetchone():
                return GateResult(verdict="granted", gitops=policy.gitops, message="granted earlier")
            hits = self._limits(db, inp, now, nodes)
            if hits and not inp.override_by:
                for hit in hits:
                    REFUSALS.labels(limit=hit.limit).inc()
                return GateResult(verdict="exceeded", limits=hits, gitops=policy.gitops, message="; ".join(h.message for h in hits))
            cur = db.execute(
                "INSERT INTO grants (key, run_id, workflow_id, target, kind, action, at, limit_name, override_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    inp.key, inp.run_id, inp.workflow_id, inp.target.key, inp.target.kind, inp.action, format_time(now),
                    ",".join(h.limit for h in hits) or None, inp.override_by if hits else None,
                ),
            )
            self.store.chain(db).append_row("grant", cur.lastrowid, inp.run_id)
        message = "granted" + (f" past the limits by {inp.override_by}: " + "; ".join(h.message for h in hits) if hits else "")
        return GateResult(verdict="granted", limits=hits, gitops=policy.gitops, message=message)

    def _limits(self, db: sqlite3.Connection, inp: GateInput, now: datetime, nodes: NodeCounter | None) -> list[LimitHit]:
        limits = self.policy.limits
        hits: list[LimitHit] = []
        if inp.action in NODE_ACTIONS and inp.target.kind == "Node":
            if nodes is None:
                raise RuntimeError("the node limit needs the cluster's nodes; no node reader given")
            unschedulable, total = nodes()
            # Nodes a running run was granted to cordon count before the cluster shows them.
            granted = {
                r[0].removeprefix("node/")
                for r in db.execute(
                    "SELECT g.target FROM grants g LEFT JOIN runs r ON r.run_id = g.run_id WHERE g.kind = 'Node'"
                    " AND g.action IN ('cordon', 'drain') AND coalesce(r.outcome, 'running') = 'running'"
                ).fetchall()
            }
            would = unschedulable | granted | {inp.target.name}
            cap = limits.node_limit(total)
            if inp.target.name not in unschedulable | granted and len(would) > cap:
                hits.append(
                    LimitHit(
                        limit="unschedulable_nodes", count=len(would), max=cap,
                        message=f"would make {len(would)} of {total} nodes unschedulable; limit {cap}"
                        + (f" ({limits.unschedulable_nodes})" if isinstance(limits.unschedulable_nodes, str) else ""),
                    )
                )
        rate = limits.actions.get(inp.action)
        if rate is not None:
            since = format_time(now - rate.per)
            done = int(db.execute("SELECT count(*) FROM grants WHERE action = ? AND at > ?", (inp.action, since)).fetchone()[0])
            if done + 1 > rate.max:
                hits.append(
                    LimitHit(
                        limit="actions", count=done + 1, max=rate.max,
                        message=f"would be {inp.action} number {done + 1} within {fmt(rate.per)} across all runs; "
                        f"limit {rate.max} per {fmt(rate.per)}",
                    )
                )
        per = limits.per_target
        mine = db.execute("SELECT 1 FROM grants WHERE run_id = ? LIMIT 1", (inp.run_id,)).fetchone()
        if mine is None:
            since = format_time(now - per.per)
            earlier = [
                r[0]
                for r in db.execute(
                    "SELECT run_id FROM grants WHERE workflow_id = ? AND at > ? AND run_id != ? GROUP BY run_id ORDER BY min(at)",
                    (inp.workflow_id, since, inp.run_id),
                ).fetchall()
            ]
            if len(earlier) + 1 > per.max:
                hits.append(
                    LimitHit(
                        limit="per_target", count=len(earlier) + 1, max=per.max,
                        message=f"would be remediation {len(earlier) + 1} of {inp.target.key} within {fmt(per.per)}; "
                        f"limit {per.max} (earlier runs: {', '.join(earlier[-3:])})",
                    )
                )
        return hits


_WAITING = (
    "s.granted_at IS NULL AND s.released_at IS NULL AND coalesce((SELECT outcome FROM runs r WHERE r.run_id = s.run_id),"
    " 'running') = 'running'"
)


def _pause(row: sqlite3.Row) -> Pause:
    return Pause(
        namespace=row["namespace"], playbook=row["playbook"], reason=row["reason"], paused_by=row["paused_by"],
        paused_at=parse_time(row["paused_at"]),
    )


def _log(store: AuditStore, db: sqlite3.Connection, kind: str, scope: PauseScope, reason: str, actor: str,
         at: datetime) -> None:
    """Append a pause or resume to the brake log and to the audit chain, in ``db``'s transaction."""
    cur = db.execute(
        "INSERT INTO brake_log (at, kind, namespace, playbook, reason, actor) VALUES (?, ?, ?, ?, ?, ?)",
        (format_time(at), kind, scope.namespace, scope.playbook, reason, actor),
    )
    store.chain(db).append_row("brake", cur.lastrowid)
