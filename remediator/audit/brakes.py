"""The brakes: pauses, concurrency slots and cluster-wide limits, counted in the audit store.

Why here: every limit must hold across concurrent runs, worker crashes and several worker
processes on one task queue, so nothing is counted in a process's memory. Each decision is
one write transaction on the audit database (AuditStore.transaction, remediator.db
``Database.write``): SQLite's ``BEGIN IMMEDIATE`` or PostgreSQL's transaction-scoped advisory
lock serialises every process that uses the database, the count and the grant
that depends on it commit together, and a grant is recorded before its mutation is sent, so a
run that is then terminated, fails or times out still counts. Counts of the cluster (the
unschedulable nodes) are read by the caller inside the same transaction.

Tables (remediator.audit.store): ``pauses`` (scopes in force), ``brake_log`` (every pause and
resume, append-only), ``frozen`` (runs waiting on a pause), ``slots`` (concurrency: queue and
holders), ``grants`` (every mutation allowed, append-only: the ledger of action rates and
per-target counts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.engine import Connection

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
        store: the audit store (its database is shared by every worker process of the cluster).
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
            row = db.execute(text("SELECT * FROM pauses WHERE scope = :scope"), {"scope": scope.key}).mappings().first()
            if row is not None:
                return _pause(row), False
            db.execute(
                text("INSERT INTO pauses (scope, namespace, playbook, reason, paused_by, paused_at)"
                     " VALUES (:scope, :namespace, :playbook, :reason, :paused_by, :paused_at)"),
                {"scope": scope.key, "namespace": scope.namespace, "playbook": scope.playbook, "reason": reason,
                 "paused_by": actor, "paused_at": format_time(at)},
            )
            _log(self.store, db, "pause", scope, reason, actor, at)
        return Pause(namespace=scope.namespace, playbook=scope.playbook, reason=reason, paused_by=actor, paused_at=at), True

    def resume(self, scope: PauseScope, reason: str, actor: str, at: datetime | None = None) -> Pause | None:
        """Lift the pause of exactly ``scope``; returns it, or None when that scope is not paused."""
        at = at or datetime.now(UTC)
        with self.store.transaction() as db:
            row = db.execute(text("SELECT * FROM pauses WHERE scope = :scope"), {"scope": scope.key}).mappings().first()
            if row is None:
                return None
            db.execute(text("DELETE FROM pauses WHERE scope = :scope"), {"scope": scope.key})
            _log(self.store, db, "resume", scope, reason, actor, at)
        return _pause(row)

    def pauses(self) -> list[Pause]:
        """Every pause in force, oldest first."""
        with self.store.transaction() as db:
            return [_pause(r) for r in db.execute(text("SELECT * FROM pauses ORDER BY paused_at")).mappings()]

    def frozen_runs(self) -> list[FrozenRun]:
        """Runs frozen by a pause, oldest first."""
        with self.store.transaction() as db:
            rows = list(db.execute(text("SELECT * FROM frozen ORDER BY since")).mappings())
        return [FrozenRun(**{**dict(r), "since": parse_time(r["since"])}) for r in rows]

    def log(self, limit: int = 50) -> list[BrakeRecord]:
        """Pauses and resumes, newest first."""
        with self.store.transaction() as db:
            rows = list(db.execute(text("SELECT * FROM brake_log ORDER BY seq DESC LIMIT :limit"), {"limit": limit}).mappings())
        return [BrakeRecord(**{**dict(r), "at": parse_time(r["at"])}) for r in rows]

    def waiting(self) -> int:
        """Runs waiting for a concurrency slot now."""
        with self.store.transaction() as db:
            return int(db.execute(text(f"SELECT count(*) FROM slots s WHERE {_WAITING}")).scalar_one())

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
                text("UPDATE slots SET released_at = :now WHERE released_at IS NULL AND run_id IN"
                     " (SELECT run_id FROM runs WHERE outcome != 'running')"),
                {"now": now},
            )
            db.execute(
                text("INSERT INTO slots (run_id, workflow_id, target, enqueued_at)"
                     " VALUES (:run_id, :workflow_id, :target, :enqueued_at) ON CONFLICT (run_id) DO NOTHING"),
                {"run_id": inp.run_id, "workflow_id": inp.workflow_id, "target": inp.target.key,
                 "enqueued_at": format_time(inp.requested_at)},
            )
            mine = db.execute(text("SELECT * FROM slots WHERE run_id = :run_id"), {"run_id": inp.run_id}).mappings().one()
            holders = int(db.execute(text("SELECT count(*) FROM slots WHERE granted_at IS NOT NULL AND released_at IS NULL")).scalar_one())
            if mine["released_at"] is not None:
                return SlotResult(granted=False, holders=holders, limit=limit, queue_timeout=timeout, message="this run's slot was released")
            if mine["granted_at"] is not None:
                return SlotResult(granted=True, holders=holders, limit=limit, queue_timeout=timeout, message="slot held")
            ahead = int(
                db.execute(
                    text(f"SELECT count(*) FROM slots s WHERE {_WAITING}"
                         " AND (s.enqueued_at < :enqueued_at OR (s.enqueued_at = :enqueued_at AND s.run_id < :run_id))"),
                    {"enqueued_at": mine["enqueued_at"], "run_id": inp.run_id},
                ).scalar_one()
            )
            if holders + ahead < limit:
                db.execute(text("UPDATE slots SET granted_at = :now WHERE run_id = :run_id"), {"now": now, "run_id": inp.run_id})
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
                text("UPDATE slots SET released_at = :now WHERE run_id = :run_id AND released_at IS NULL"),
                {"now": format_time(datetime.now(UTC)), "run_id": run_id},
            )
            db.execute(text("DELETE FROM frozen WHERE run_id = :run_id"), {"run_id": run_id})

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
            for row in db.execute(text("SELECT * FROM pauses ORDER BY paused_at")).mappings().all():
                pause = _pause(row)
                if pause.covers(ns, pb):
                    db.execute(
                        text("INSERT INTO frozen (run_id, workflow_id, target, namespace, playbook, step, scope, since)"
                             " VALUES (:run_id, :workflow_id, :target, :namespace, :playbook, :step, :scope, :since)"
                             " ON CONFLICT (run_id) DO UPDATE SET step = excluded.step, scope = excluded.scope"),
                        {"run_id": inp.run_id, "workflow_id": inp.workflow_id, "target": inp.target.key, "namespace": ns,
                         "playbook": pb, "step": inp.step, "scope": pause.key, "since": format_time(now)},
                    )
                    return GateResult(verdict="paused", pause=pause, gitops=policy.gitops, message=f"paused: {pause} ({pause.reason})")
            db.execute(text("DELETE FROM frozen WHERE run_id = :run_id"), {"run_id": inp.run_id})
            if inp.undo or inp.dry_run:
                return GateResult(verdict="granted", gitops=policy.gitops, message="no limit applies")
            if db.execute(text("SELECT 1 FROM grants WHERE key = :key"), {"key": inp.key}).first():
                return GateResult(verdict="granted", gitops=policy.gitops, message="granted earlier")
            hits = self._limits(db, inp, now, nodes)
            if hits and not inp.override_by:
                for hit in hits:
                    REFUSALS.labels(limit=hit.limit).inc()
                return GateResult(verdict="exceeded", limits=hits, gitops=policy.gitops, message="; ".join(h.message for h in hits))
            stored = db.execute(
                text("INSERT INTO grants (key, run_id, workflow_id, target, kind, action, at, limit_name, override_by)"
                     " VALUES (:key, :run_id, :workflow_id, :target, :kind, :action, :at, :limit_name, :override_by)"
                     " RETURNING *"),
                {
                    "key": inp.key, "run_id": inp.run_id, "workflow_id": inp.workflow_id, "target": inp.target.key,
                    "kind": inp.target.kind, "action": inp.action, "at": format_time(now),
                    "limit_name": ",".join(h.limit for h in hits) or None, "override_by": inp.override_by if hits else None,
                },
            ).mappings().one()
            self.store.chain(db).append("grant", stored, inp.run_id)
        message = "granted" + (f" past the limits by {inp.override_by}: " + "; ".join(h.message for h in hits) if hits else "")
        return GateResult(verdict="granted", limits=hits, gitops=policy.gitops, message=message)

    def _limits(self, db: Connection, inp: GateInput, now: datetime, nodes: NodeCounter | None) -> list[LimitHit]:
        limits = self.policy.limits
        hits: list[LimitHit] = []
        if inp.action in NODE_ACTIONS and inp.target.kind == "Node":
            if nodes is None:
                raise RuntimeError("the node limit needs the cluster's nodes; no node reader given")
            unschedulable, total = nodes()
            # Nodes a running run was granted to cordon count before the cluster shows them.
            granted = {
                r[0].removeprefix("node/")
                for r in db.execute(text(
                    "SELECT g.target FROM grants g LEFT JOIN runs r ON r.run_id = g.run_id WHERE g.kind = 'Node'"
                    " AND g.action IN ('cordon', 'drain') AND coalesce(r.outcome, 'running') = 'running'"
                ))
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
            done = int(db.execute(
                text("SELECT count(*) FROM grants WHERE action = :action AND at > :since"), {"action": inp.action, "since": since}
            ).scalar_one())
            if done + 1 > rate.max:
                hits.append(
                    LimitHit(
                        limit="actions", count=done + 1, max=rate.max,
                        message=f"would be {inp.action} number {done + 1} within {fmt(rate.per)} across all runs; "
                        f"limit {rate.max} per {fmt(rate.per)}",
                    )
                )
        per = limits.per_target
        mine = db.execute(text("SELECT 1 FROM grants WHERE run_id = :run_id LIMIT 1"), {"run_id": inp.run_id}).first()
        if mine is None:
            since = format_time(now - per.per)
            earlier = [
                r[0]
                for r in db.execute(
                    text("SELECT run_id FROM grants WHERE workflow_id = :workflow_id AND at > :since AND run_id != :run_id"
                         " GROUP BY run_id ORDER BY min(at)"),
                    {"workflow_id": inp.workflow_id, "since": since, "run_id": inp.run_id},
                )
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


def _pause(row: Mapping[str, Any]) -> Pause:
    return Pause(
        namespace=row["namespace"], playbook=row["playbook"], reason=row["reason"], paused_by=row["paused_by"],
        paused_at=parse_time(row["paused_at"]),
    )


def _log(store: AuditStore, db: Connection, kind: str, scope: PauseScope, reason: str, actor: str,
         at: datetime) -> None:
    """Append a pause or resume to the brake log and to the audit chain, in ``db``'s transaction."""
    stored = db.execute(
        text("INSERT INTO brake_log (at, kind, namespace, playbook, reason, actor)"
             " VALUES (:at, :kind, :namespace, :playbook, :reason, :actor) RETURNING *"),
        {"at": format_time(at), "kind": kind, "namespace": scope.namespace, "playbook": scope.playbook,
         "reason": reason, "actor": actor},
    ).mappings().one()
    store.chain(db).append("brake", stored)
