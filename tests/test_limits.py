"""The brakes' arithmetic (remediator.audit.brakes.Brakes) against a real audit database file.

Concurrency slots (arrival order, positions, releases, reaping of ended runs), the node limit
(unschedulable nodes read from the cluster plus nodes granted to running runs), action rates
over a sliding window, the per-target limit, overrides, retried gates, undo and dry runs,
pauses, and the append-only ledgers. Each decision is one ``BEGIN IMMEDIATE`` transaction on
the file, so the last tests run the brakes from several processes on one file at once.

The clock of a rate is the ``at`` of the rows in ``grants``: tests write earlier grants
directly, dated as they need, instead of waiting. The brakes on a real Temporal server are
tested in tests/test_brakes.py.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from remediator.audit.brakes import Brakes, FrozenRun
from remediator.audit.store import AuditStore, format_time
from remediator.db import DatabaseError
from remediator.domain.messages import (
    AuditWriteInput,
    GateInput,
    GateResult,
    PauseScope,
    RunInfo,
    SlotInput,
    TargetRef,
)
from remediator.domain.policy import Policy
from remediator.domain.runs import workflow_id_for

T0 = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")
CART = TargetRef(kind="Deployment", namespace="shop", name="cart")
RESTART = "deployment-restart"
NODE_PLAYBOOK = "kube-node-not-ready"


def policy(**limits: Any) -> Policy:
    """A policy whose only tight limits are ``limits`` (the others far above what a test does)."""
    base: dict[str, Any] = {
        "concurrent_remediations": 1000, "unschedulable_nodes": "100%", "actions": {},
        "per_target": {"max": 1000, "per": "1h"}, "queue_timeout": "15m",
    }
    return Policy.model_validate({"limits": {**base, **limits}, "gitops": "allow"})


@pytest.fixture
def store(database_url) -> Iterator[AuditStore]:
    """The audit store on each backend (tests/conftest.py ``database_url``)."""
    s = AuditStore(database_url)
    yield s
    s.close()


def node(name: str) -> TargetRef:
    return TargetRef(kind="Node", name=name)


def deployment(namespace: str, name: str) -> TargetRef:
    return TargetRef(kind="Deployment", namespace=namespace, name=name)


def gate_input(
    run_id: str, target: TargetRef = CHECKOUT, action: str = "rollout_restart", step: int = 0, *,
    attempt: int = 1, playbook: str | None = None, **kw: Any,
) -> GateInput:
    """The gate a run asks right before step ``step``'s mutation (key ``<run>/<step>/<attempt>``)."""
    return GateInput(
        key=f"{run_id}/{step}/{attempt}", run_id=run_id, workflow_id=workflow_id_for(target.key), target=target,
        playbook=playbook or (NODE_PLAYBOOK if target.kind == "Node" else RESTART), action=action, step=step, **kw,
    )


def slot(run_id: str, requested_at: datetime, target: TargetRef = CHECKOUT) -> SlotInput:
    return SlotInput(run_id=run_id, workflow_id=workflow_id_for(target.key), target=target, requested_at=requested_at)


def record_run(store: AuditStore, run_id: str, target: TargetRef = CHECKOUT, outcome: str = "running") -> None:
    """The run's row in the audit trail, as the workflow writes it (outcome ``running`` at the
    start, the outcome at the end)."""
    info = RunInfo(
        run_id=run_id, workflow_id=workflow_id_for(target.key), alertname="KubeDeploymentReplicasMismatch",
        namespace=target.namespace, target=target.key, playbook=RESTART, playbook_path="playbooks/restart.yaml",
        playbook_sha256="0" * 64, simulate=False, started_at=T0, outcome=outcome,
        ended_at=None if outcome == "running" else T0 + timedelta(minutes=5),
    )
    store.write(AuditWriteInput(run_id=run_id, run=info))


def earlier_grant(
    store: AuditStore, run_id: str, ago: timedelta, target: TargetRef = CHECKOUT, action: str = "rollout_restart"
) -> None:
    """A grant of the ledger dated ``ago`` before now: the clock the sliding windows read."""
    with store.transaction() as db:
        db.execute(
            text("INSERT INTO grants (key, run_id, workflow_id, target, kind, action, at)"
                 " VALUES (:key, :run_id, :workflow_id, :target, :kind, :action, :at)"),
            {"key": f"{run_id}/{action}/{ago}", "run_id": run_id, "workflow_id": workflow_id_for(target.key),
             "target": target.key, "kind": target.kind, "action": action, "at": format_time(datetime.now(UTC) - ago)},
        )


def ledger(store: AuditStore) -> list[dict[str, Any]]:
    with store.transaction() as db:
        return [dict(r) for r in db.execute(text("SELECT * FROM grants ORDER BY at, key")).mappings()]


def slot_rows(store: AuditStore) -> dict[str, dict[str, Any]]:
    with store.transaction() as db:
        return {r["run_id"]: dict(r) for r in db.execute(text("SELECT * FROM slots")).mappings()}


class Cluster:
    """The ``nodes`` reader of the gate: (unschedulable node names, number of nodes)."""

    def __init__(self, total: int, unschedulable: set[str] | None = None) -> None:
        self.total = total
        self.unschedulable = set(unschedulable or ())
        self.reads = 0

    def __call__(self) -> tuple[set[str], int]:
        self.reads += 1
        return set(self.unschedulable), self.total


def verdicts(*results: GateResult) -> list[str]:
    return [r.verdict for r in results]


# --------------------------------------------------------------------------- concurrency slots


def test_slots_are_granted_up_to_the_limit_and_the_rest_queue_in_arrival_order(store):
    brakes = Brakes(store, policy(concurrent_remediations=2))
    a = brakes.acquire_slot(slot("run-a", T0))
    b = brakes.acquire_slot(slot("run-b", T0 + timedelta(seconds=1)))
    assert (a.granted, a.holders, a.limit, a.message) == (True, 1, 2, "slot 1 of 2 (concurrent_remediations)")
    assert (b.granted, b.holders, b.message) == (True, 2, "slot 2 of 2 (concurrent_remediations)")
    assert a.queue_timeout == timedelta(minutes=15)

    # The queue is ordered by when each run first asked, not by when the call arrived.
    e = brakes.acquire_slot(slot("run-e", T0 + timedelta(seconds=4)))
    c = brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=2)))
    d = brakes.acquire_slot(slot("run-d", T0 + timedelta(seconds=3)))
    assert [(r.granted, r.position) for r in (e, c, d)] == [(False, 1), (False, 1), (False, 2)]
    e = brakes.acquire_slot(slot("run-e", T0 + timedelta(seconds=4)))
    assert (e.granted, e.position, e.holders) == (False, 3, 2)
    assert e.message == "2 of 2 remediations past diagnosis (concurrent_remediations); position 3 in the queue"
    assert brakes.waiting() == 3

    # One slot frees: the first in arrival order takes it, not a later run that polls first.
    brakes.release("run-a")
    assert (brakes.acquire_slot(slot("run-e", T0 + timedelta(seconds=4))).granted,
            brakes.acquire_slot(slot("run-d", T0 + timedelta(seconds=3))).granted) == (False, False)
    c = brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=2)))
    assert (c.granted, c.holders) == (True, 2)
    d = brakes.acquire_slot(slot("run-d", T0 + timedelta(seconds=3)))
    assert (d.granted, d.position) == (False, 1)
    assert brakes.waiting() == 2

    brakes.release("run-b")
    assert brakes.acquire_slot(slot("run-e", T0 + timedelta(seconds=4))).granted is False
    assert brakes.acquire_slot(slot("run-d", T0 + timedelta(seconds=3))).granted is True
    assert {r for r, row in slot_rows(store).items() if row["granted_at"] and not row["released_at"]} == {"run-c", "run-d"}


def test_runs_that_asked_at_the_same_time_queue_by_run_id(store):
    brakes = Brakes(store, policy(concurrent_remediations=1))
    assert brakes.acquire_slot(slot("run-0", T0)).granted
    late = brakes.acquire_slot(slot("run-2", T0 + timedelta(seconds=1)))
    early = brakes.acquire_slot(slot("run-1", T0 + timedelta(seconds=1)))
    assert (late.position, early.position) == (1, 1)
    assert brakes.acquire_slot(slot("run-2", T0 + timedelta(seconds=1))).position == 2
    brakes.release("run-0")
    assert brakes.acquire_slot(slot("run-2", T0 + timedelta(seconds=1))).granted is False
    assert brakes.acquire_slot(slot("run-1", T0 + timedelta(seconds=1))).granted is True


def test_acquire_is_idempotent(store):
    brakes = Brakes(store, policy(concurrent_remediations=1))
    first = brakes.acquire_slot(slot("run-a", T0))
    again = brakes.acquire_slot(slot("run-a", T0))
    assert (first.granted, again.granted, again.holders, again.message) == (True, True, 1, "slot held")

    # A waiter's retry keeps its first place even if it says it asked later.
    assert brakes.acquire_slot(slot("run-b", T0 + timedelta(seconds=1))).position == 1
    assert brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=2))).position == 2
    assert brakes.acquire_slot(slot("run-b", T0 + timedelta(seconds=9))).position == 1
    assert len(slot_rows(store)) == 3

    # A run whose slot was released does not get one again (it ended, or handed over).
    brakes.release("run-a")
    gone = brakes.acquire_slot(slot("run-a", T0))
    assert (gone.granted, gone.message) == (False, "this run's slot was released")
    assert brakes.acquire_slot(slot("run-b", T0 + timedelta(seconds=1))).granted is True


def test_a_holder_whose_run_ended_is_reaped(store):
    brakes = Brakes(store, policy(concurrent_remediations=2))
    for run_id in ("run-a", "run-b"):
        record_run(store, run_id)
        assert brakes.acquire_slot(slot(run_id, T0)).granted
    assert brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=1))).granted is False

    # The worker died; remediator.app.settle (or the run) recorded the outcome, release never came.
    record_run(store, "run-a", outcome="terminated")
    c = brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=1)))
    assert (c.granted, c.holders) == (True, 2)
    rows = slot_rows(store)
    assert rows["run-a"]["released_at"] is not None
    assert rows["run-b"]["released_at"] is None


def test_a_waiter_whose_run_ended_is_not_ahead_of_anyone(store):
    brakes = Brakes(store, policy(concurrent_remediations=1))
    assert brakes.acquire_slot(slot("run-a", T0)).granted
    record_run(store, "run-b")
    assert brakes.acquire_slot(slot("run-b", T0 + timedelta(seconds=1))).position == 1
    assert brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=2))).position == 2
    record_run(store, "run-b", outcome="timed_out")
    assert brakes.waiting() == 1
    assert brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=2))).position == 1
    brakes.release("run-a")
    assert brakes.acquire_slot(slot("run-c", T0 + timedelta(seconds=2))).granted is True


# --------------------------------------------------------------------------- the node limit


def test_node_limit_counts_the_clusters_unschedulable_nodes(store):
    brakes = Brakes(store, policy(unschedulable_nodes=1))
    cluster = Cluster(12, {"worker-1"})
    result = brakes.gate(gate_input("run-b", node("worker-2"), "cordon"), cluster)
    assert result.verdict == "exceeded"
    [hit] = result.limits
    assert (hit.limit, hit.count, hit.max) == ("unschedulable_nodes", 2, 1)
    assert hit.message == "would make 2 of 12 nodes unschedulable; limit 1"
    assert result.message == "would make 2 of 12 nodes unschedulable; limit 1"
    assert cluster.reads == 1
    assert ledger(store) == []

    # A node already unschedulable is not counted again: draining the cordoned node is allowed.
    assert brakes.gate(gate_input("run-a", node("worker-1"), "drain"), cluster).verdict == "granted"


def test_with_nothing_unschedulable_one_node_may_go(store):
    brakes = Brakes(store, policy(unschedulable_nodes=1))
    result = brakes.gate(gate_input("run-a", node("worker-1"), "cordon"), Cluster(12))
    assert (result.verdict, result.limits) == ("granted", [])


def test_nodes_granted_to_running_runs_count_before_the_cluster_shows_them(store):
    brakes = Brakes(store, policy(unschedulable_nodes=1))
    cluster = Cluster(12)
    record_run(store, "run-a", node("worker-1"))
    assert brakes.gate(gate_input("run-a", node("worker-1"), "cordon"), cluster).verdict == "granted"

    # The cordon is granted but not yet visible in the cluster.
    second = brakes.gate(gate_input("run-b", node("worker-2"), "cordon"), cluster)
    assert second.verdict == "exceeded"
    assert second.message == "would make 2 of 12 nodes unschedulable; limit 1"
    # Once the cluster shows it, the same node is not counted twice.
    cluster.unschedulable.add("worker-1")
    assert brakes.gate(gate_input("run-b", node("worker-2"), "cordon", attempt=2), cluster).limits[0].count == 2
    # The run's own next step (a drain of its cordoned node) is not another node.
    assert brakes.gate(gate_input("run-a", node("worker-1"), "drain", step=1), cluster).verdict == "granted"

    # run-a ended and its node is schedulable again: its grants no longer hold a node.
    record_run(store, "run-a", node("worker-1"), outcome="healed")
    cluster.unschedulable.clear()
    assert brakes.gate(gate_input("run-b", node("worker-2"), "cordon", attempt=3), cluster).verdict == "granted"


def test_node_limit_as_a_percentage(store, tmp_path):
    brakes = Brakes(store, policy(unschedulable_nodes="10%"))
    twelve = Cluster(12)
    assert brakes.gate(gate_input("run-a", node("worker-1"), "cordon"), twelve).verdict == "granted"
    result = brakes.gate(gate_input("run-b", node("worker-2"), "cordon"), twelve)
    assert result.verdict == "exceeded"
    assert result.message == "would make 2 of 12 nodes unschedulable; limit 1 (10%)"

    # 10% of 5 nodes rounds down to 0: no node may be cordoned.
    small = Brakes(AuditStore(tmp_path / "small.db"), policy(unschedulable_nodes="10%"))
    try:
        result = small.gate(gate_input("run-c", node("node-1"), "drain"), Cluster(5))
        assert (result.verdict, result.message) == ("exceeded", "would make 1 of 5 nodes unschedulable; limit 0 (10%)")
    finally:
        small.store.close()


def test_node_limit_applies_to_node_actions_only(store):
    brakes = Brakes(store, policy(unschedulable_nodes=0))
    cluster = Cluster(3, {"a", "b", "c"})
    assert brakes.gate(gate_input("run-a", CHECKOUT, "rollout_restart"), cluster).verdict == "granted"
    assert brakes.gate(gate_input("run-b", node("a"), "uncordon"), cluster).verdict == "granted"
    assert cluster.reads == 0
    with pytest.raises(RuntimeError, match="needs the cluster's nodes"):
        brakes.gate(gate_input("run-c", node("d"), "cordon"))


# --------------------------------------------------------------------------- action rates


def test_action_rate_is_a_sliding_window_per_action(store):
    brakes = Brakes(store, policy(actions={"rollout_restart": {"max": 2, "per": "1h"}, "rollback": {"max": 1, "per": "1h"}}))
    for i in range(5):
        earlier_grant(store, f"old-{i}", timedelta(hours=2))
    earlier_grant(store, "old-5", timedelta(minutes=61))
    earlier_grant(store, "recent", timedelta(minutes=30))
    earlier_grant(store, "other-action", timedelta(minutes=10), action="scale")

    assert brakes.gate(gate_input("run-a", deployment("prod", "a"))).verdict == "granted"
    result = brakes.gate(gate_input("run-b", deployment("prod", "b")))
    assert result.verdict == "exceeded"
    [hit] = result.limits
    assert (hit.limit, hit.count, hit.max) == ("actions", 3, 2)
    assert hit.message == "would be rollout_restart number 3 within 1h across all runs; limit 2 per 1h"

    # Other actions have their own count; an action the policy does not list has none.
    assert brakes.gate(gate_input("run-c", deployment("prod", "c"), "rollback")).verdict == "granted"
    assert brakes.gate(gate_input("run-d", deployment("prod", "d"), "rollback")).verdict == "exceeded"
    for i in range(3):
        assert brakes.gate(gate_input(f"run-s{i}", deployment("prod", f"s{i}"), "scale")).verdict == "granted"


def test_a_rate_of_0_forbids_the_action(store):
    brakes = Brakes(store, policy(actions={"drain": {"max": 0, "per": "1h"}}))
    result = brakes.gate(gate_input("run-a", node("worker-1"), "drain"), Cluster(10))
    assert result.message == "would be drain number 1 within 1h across all runs; limit 0 per 1h"


# --------------------------------------------------------------------------- per target


def test_per_target_counts_distinct_earlier_runs_in_the_window(store):
    brakes = Brakes(store, policy(per_target={"max": 2, "per": "1h"}))
    earlier_grant(store, "yesterday", timedelta(hours=2))
    # One run of three steps is one remediation.
    for step in range(3):
        assert brakes.gate(gate_input("run-1", step=step)).verdict == "granted"
    assert brakes.gate(gate_input("run-2")).verdict == "granted"

    result = brakes.gate(gate_input("run-3"))
    assert result.verdict == "exceeded"
    [hit] = result.limits
    assert (hit.limit, hit.count, hit.max) == ("per_target", 3, 2)
    assert hit.message.startswith("would be remediation 3 of deployment/prod/checkout within 1h; limit 2 (earlier runs: ")
    assert "run-1" in hit.message and "run-2" in hit.message and "yesterday" not in hit.message

    # Another object has its own count.
    assert brakes.gate(gate_input("run-4", CART)).verdict == "granted"


def test_a_second_step_of_the_same_run_is_not_another_remediation(store):
    brakes = Brakes(store, policy(per_target={"max": 1, "per": "1h"}))
    assert brakes.gate(gate_input("run-1")).verdict == "granted"
    assert brakes.gate(gate_input("run-2")).verdict == "exceeded"
    assert brakes.gate(gate_input("run-2", attempt=2, override_by="U0ALICE")).verdict == "granted"
    # Two runs now have grants on the object; run-1's next step is still run-1's remediation.
    assert brakes.gate(gate_input("run-1", step=1)).verdict == "granted"


# --------------------------------------------------------------------------- overrides and retries


def test_override_grants_past_the_limits_and_is_recorded(store):
    brakes = Brakes(store, policy(unschedulable_nodes=1, actions={"cordon": {"max": 1, "per": "1h"}}))
    cluster = Cluster(12, {"worker-1"})
    earlier_grant(store, "run-0", timedelta(minutes=5), node("worker-1"), "cordon")

    refused = brakes.gate(gate_input("run-a", node("worker-2"), "cordon"), cluster)
    assert [h.limit for h in refused.limits] == ["unschedulable_nodes", "actions"]
    result = brakes.gate(gate_input("run-a", node("worker-2"), "cordon", attempt=2, override_by="U0ALICE"), cluster)
    assert result.verdict == "granted"
    assert [h.limit for h in result.limits] == ["unschedulable_nodes", "actions"]
    assert result.message == (
        "granted past the limits by U0ALICE: would make 2 of 12 nodes unschedulable; limit 1; "
        "would be cordon number 2 within 1h across all runs; limit 1 per 1h"
    )
    [row] = [r for r in ledger(store) if r["run_id"] == "run-a"]
    assert (row["key"], row["limit_name"], row["override_by"]) == ("run-a/0/2", "unschedulable_nodes,actions", "U0ALICE")
    assert (row["target"], row["kind"], row["action"]) == ("node/worker-2", "Node", "cordon")

    # An override where no limit was hit is an ordinary grant.
    plain = brakes.gate(gate_input("run-b", CART, override_by="U0ALICE"))
    assert (plain.verdict, plain.limits, plain.message) == ("granted", [], "granted")
    [row] = [r for r in ledger(store) if r["run_id"] == "run-b"]
    assert (row["limit_name"], row["override_by"]) == (None, None)


def test_a_retried_gate_finds_its_grant(store):
    brakes = Brakes(store, policy(actions={"rollout_restart": {"max": 1, "per": "1h"}}))
    first = brakes.gate(gate_input("run-a"))
    assert (first.verdict, first.message) == ("granted", "granted")
    # The activity is retried after the grant committed: the same key, now past the limit.
    again = brakes.gate(gate_input("run-a"))
    assert (again.verdict, again.message) == ("granted", "granted earlier")
    assert [r["key"] for r in ledger(store)] == ["run-a/0/1"]
    # Another attempt is another mutation and counts.
    assert brakes.gate(gate_input("run-a", attempt=2)).verdict == "exceeded"


def test_undo_and_dry_run_are_not_limited_nor_recorded_but_a_pause_freezes_them(store):
    brakes = Brakes(store, policy(
        unschedulable_nodes=0, actions={"rollout_restart": {"max": 0, "per": "1h"}, "cordon": {"max": 0, "per": "1h"}},
        per_target={"max": 0, "per": "1h"},
    ))
    cluster = Cluster(3)
    assert brakes.gate(gate_input("run-a"), cluster).verdict == "exceeded"
    undo = brakes.gate(gate_input("run-a", attempt=2, undo=True), cluster)
    dry = brakes.gate(gate_input("run-b", node("worker-1"), "cordon", dry_run=True), cluster)
    assert (undo.verdict, undo.message, undo.limits) == ("granted", "no limit applies", [])
    assert (dry.verdict, dry.message) == ("granted", "no limit applies")
    assert cluster.reads == 0
    assert ledger(store) == []

    brakes.pause(PauseScope(), "freeze", "U0ALICE")
    assert brakes.gate(gate_input("run-a", attempt=3, undo=True), cluster).verdict == "paused"
    assert brakes.gate(gate_input("run-b", node("worker-1"), "cordon", dry_run=True), cluster).verdict == "paused"
    assert {f.run_id for f in brakes.frozen_runs()} == {"run-a", "run-b"}


# --------------------------------------------------------------------------- pauses


def test_a_pause_freezes_the_runs_it_covers_and_others_pass(store):
    brakes = Brakes(store, policy())
    at = datetime.now(UTC).replace(microsecond=0)
    pause, created = brakes.pause(PauseScope(namespace="prod"), "incident INC-42", "U0ALICE", at=at)
    assert created
    again, created = brakes.pause(PauseScope(namespace="prod"), "other reason", "U0BOB")
    assert not created
    assert (again.reason, again.paused_by, again.paused_at) == ("incident INC-42", "U0ALICE", at)
    assert brakes.pauses() == [pause]

    result = brakes.gate(gate_input("run-a", CHECKOUT, step=2))
    assert result.verdict == "paused"
    assert result.pause == pause
    assert result.message == "paused: namespace prod (incident INC-42)"
    assert ledger(store) == []
    [frozen] = brakes.frozen_runs()
    assert isinstance(frozen, FrozenRun)
    assert (frozen.run_id, frozen.workflow_id, frozen.target, frozen.namespace, frozen.playbook, frozen.step, frozen.scope) == (
        "run-a", workflow_id_for(CHECKOUT.key), "deployment/prod/checkout", "prod", RESTART, 2, "namespace=prod playbook=*",
    )

    # Other namespaces, and Nodes (no namespace), are not covered.
    assert brakes.gate(gate_input("run-b", CART)).verdict == "granted"
    assert brakes.gate(gate_input("run-c", node("worker-1"), "cordon"), Cluster(10)).verdict == "granted"

    # A pause of one playbook covers that playbook wherever it runs.
    brakes.pause(PauseScope(playbook=NODE_PLAYBOOK), "node flapping", "U0BOB")
    assert brakes.gate(gate_input("run-d", node("worker-2"), "cordon"), Cluster(10)).verdict == "paused"
    assert brakes.gate(gate_input("run-e", CART, playbook="other")).verdict == "granted"
    assert brakes.gate(gate_input("run-f", deployment("staging", "x"), playbook=NODE_PLAYBOOK)).verdict == "paused"
    # Both fields: only that playbook in that namespace.
    scope = PauseScope(namespace="shop", playbook="cart-scale")
    assert scope.covers("shop", "cart-scale") and not scope.covers("shop", RESTART) and not scope.covers("prod", "cart-scale")

    # The frozen run asks again at a later step: one marker, the step updated, frozen since the first.
    assert brakes.gate(gate_input("run-a", CHECKOUT, step=3)).verdict == "paused"
    assert [(f.step, f.since) for f in brakes.frozen_runs() if f.run_id == "run-a"] == [(3, frozen.since)]

    # Resumed: the run passes and is no longer frozen; release drops a marker too.
    resumed = brakes.resume(PauseScope(namespace="prod"), "fixed", "U0ALICE")
    assert resumed == pause
    assert brakes.gate(gate_input("run-a", CHECKOUT, step=3)).verdict == "granted"
    assert {f.run_id for f in brakes.frozen_runs()} == {"run-d", "run-f"}
    brakes.release("run-d")
    assert {f.run_id for f in brakes.frozen_runs()} == {"run-f"}


def test_resume_of_a_scope_not_paused_returns_none_and_logs_nothing(store):
    brakes = Brakes(store, policy())
    brakes.pause(PauseScope(namespace="prod"), "incident", "U0ALICE")
    # Only the exact scope is lifted: "everything" is not a pause of prod.
    assert brakes.resume(PauseScope(), "oops", "U0BOB") is None
    assert brakes.resume(PauseScope(namespace="prod", playbook=RESTART), "oops", "U0BOB") is None
    assert [r.kind for r in brakes.log()] == ["pause"]
    assert len(brakes.pauses()) == 1


def test_brake_log_records_pauses_and_resumes_and_is_append_only(store):
    brakes = Brakes(store, policy())
    brakes.pause(PauseScope(namespace="prod"), "incident", "U0ALICE")
    brakes.pause(PauseScope(namespace="prod"), "again", "U0BOB")  # already paused: not logged
    brakes.resume(PauseScope(namespace="prod"), "fixed", "U0BOB")
    brakes.pause(PauseScope(), "change freeze", "U0ALICE")
    log = brakes.log()
    assert [(r.kind, r.namespace, r.playbook, r.reason, r.actor) for r in log] == [
        ("pause", None, None, "change freeze", "U0ALICE"),
        ("resume", "prod", None, "fixed", "U0BOB"),
        ("pause", "prod", None, "incident", "U0ALICE"),
    ]
    assert [r.seq for r in log] == sorted((r.seq for r in log), reverse=True)
    assert len(brakes.log(limit=1)) == 1

    for sql, refused in (
        ("UPDATE brake_log SET reason = 'nothing happened'", "audit brake_log is append-only: UPDATE refused"),
        ("DELETE FROM brake_log", "audit brake_log is append-only: DELETE refused"),
    ):
        with pytest.raises(DatabaseError, match=refused), store.transaction() as db:
            db.execute(text(sql))
    assert len(brakes.log()) == 3


def test_grants_are_append_only(store):
    brakes = Brakes(store, policy())
    brakes.gate(gate_input("run-a"))
    for sql, refused in (
        ("UPDATE grants SET at = '2000-01-01T00:00:00.000000Z'", "audit grants are append-only: UPDATE refused"),
        ("DELETE FROM grants", "audit grants are append-only: DELETE refused"),
    ):
        with pytest.raises(DatabaseError, match=refused), store.transaction() as db:
            db.execute(text(sql))
    assert [r["key"] for r in ledger(store)] == ["run-a/0/1"]


# --------------------------------------------------------------------------- several processes, one database

PROCESSES = 4
GATES_PER_PROCESS = 5
SLOTS_PER_PROCESS = 10


def _gate_from_process(path: str, pol: Policy, worker: int, barrier: Any, out: Any) -> None:
    """One worker process: its own AuditStore on the shared file, gates for its own runs."""
    store = AuditStore(path)
    brakes = Brakes(store, pol)
    barrier.wait(timeout=60)
    for i in range(GATES_PER_PROCESS):
        target = deployment("prod", f"app-{worker}-{i}")
        out.put(brakes.gate(gate_input(f"run-{worker}-{i}", target)).verdict)
    store.close()


def _slots_from_process(path: str, pol: Policy, worker: int, barrier: Any, out: Any) -> None:
    """One worker process: takes a slot for each of its runs in turn (asking again until granted),
    counts the holders while it holds one, then releases it."""
    store = AuditStore(path)
    brakes = Brakes(store, pol)
    barrier.wait(timeout=60)
    for i in range(SLOTS_PER_PROCESS):
        run_id = f"run-{worker}-{i}"
        inp = slot(run_id, datetime.now(UTC), deployment("prod", f"app-{worker}-{i}"))
        while not (result := brakes.acquire_slot(inp)).granted:
            assert result.position >= 1
        with store.transaction() as db:
            holding = db.execute(text("SELECT count(*) FROM slots WHERE granted_at IS NOT NULL AND released_at IS NULL")).scalar_one()
        out.put((run_id, result.holders, holding))
        brakes.release(run_id)
    store.close()


def _run_processes(target: Any, path: Path | str, pol: Policy, per_process: int) -> list[Any]:
    """Run ``target`` in PROCESSES spawned processes released together by a barrier; returns
    the ``per_process`` results each puts on the queue."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(path), pol, w, barrier, out)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=60) for _ in range(PROCESSES * per_process)]
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    return results


def test_an_action_rate_holds_across_processes(database_url):
    """Several worker processes on one database: an SQLite file, a PostgreSQL database."""
    path = database_url
    AuditStore(path).close()
    got = _run_processes(_gate_from_process, path, policy(actions={"rollout_restart": {"max": 3, "per": "1h"}}), GATES_PER_PROCESS)
    assert sorted(got) == ["exceeded"] * (PROCESSES * GATES_PER_PROCESS - 3) + ["granted"] * 3
    store = AuditStore(path)
    try:
        assert len(ledger(store)) == 3
    finally:
        store.close()


# On SQLite only, to keep the suite short: the action rate above already has processes contend
# for PostgreSQL's write lock, which the slots take the same way (Database.write).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_concurrency_slots_hold_across_processes(database_url):
    """Several worker processes on one database file."""
    path = database_url
    AuditStore(path).close()
    got = _run_processes(_slots_from_process, path, policy(concurrent_remediations=2), SLOTS_PER_PROCESS)
    assert sorted(r for r, _, _ in got) == sorted(f"run-{w}-{i}" for w in range(PROCESSES) for i in range(SLOTS_PER_PROCESS))
    assert max(h for _, h, _ in got) <= 2
    assert max(n for _, _, n in got) <= 2
    store = AuditStore(path)
    try:
        rows = slot_rows(store)
        assert len(rows) == PROCESSES * SLOTS_PER_PROCESS
        assert all(r["granted_at"] and r["released_at"] for r in rows.values())
    finally:
        store.close()
