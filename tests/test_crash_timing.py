"""Durability under real timing: crashes at every audit commit, at the instant a change lands,
Temporal and the API server unreachable, a dead worker, runs Temporal ends on its own.

Everything is real and separate, as in production: ``temporal server start-dev`` with a SQLite
file, ``python worker.py`` processes pointed at the Kubernetes API emulator through a
kubeconfig, alerts posted to their intake over HTTP. Where timing matters, the workers reach
Temporal through a ``DelayProxy`` adding 50 ms each way (a managed Temporal's round trip), so a
worker killed right after a write to the cluster or the audit trail dies before Temporal hears
of it. The promises checked each time:

* the run ends as it would have without the crash;
* each change reaches the cluster once (the emulator's request log);
* the audit trail holds exactly the events the workflow's history says were written, each
  once, numbered without a gap.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes.client import AppsV1Api, PolicyV1Api
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus

from remediator.audit.store import AuditStore
from remediator.sim.kube import Emulator
from remediator.domain.messages import (
    AlertRef,
    AlertSignal,
    AuditWriteInput,
    RemediationInput,
    RemediationResult,
    RemediationStatus,
    TargetRef,
)
from remediator.domain.playbook import Playbook, PlaybookRef
from remediator.app.runtime import build_activities, new_worker
from remediator.sim.slack import SlackEmulator
from remediator.app.temporal import connect
from remediator.domain.runs import workflow_id_for
from tests.support import DelayProxy, WorkerProcess, engine_api_client, engine_kubeconfig, permissive_brakes, webhook

HEARTBEAT = ["--heartbeat-timeout", "2s"]
"""Test workers notice a dead peer in 2 s instead of 10 s, so a kill costs seconds."""

MUTATING = ("PATCH", "PUT", "POST", "DELETE")

THREE_STEPS = """\
name: three-steps
match: ['alertname="ThreeSteps"']
target: {kind: Deployment, namespace: '{{ labels.namespace }}', name: '{{ labels.deployment }}'}
steps:
  - name: restart
    rollout_restart: {}
    health: {rollout_status: {}, timeout: HEALTH_TIMEOUT, interval: 300ms}
  - name: scale
    scale: {delta: 1, min_replicas: 1, max_replicas: 10}
    health: {rollout_status: {}, timeout: HEALTH_TIMEOUT, interval: 300ms}
  - name: rollback
    rollback: {to_revision: 0}
    health: {rollout_status: {}, timeout: HEALTH_TIMEOUT, interval: 300ms}
verification_window: VERIFY
cooldown: 0s
"""

NODE_DOWN = """\
name: node-down
match: ['alertname="NodeDown"']
target: {kind: Node, name: '{{ labels.node }}'}
steps:
  - name: cordon
    cordon: {}
  - name: drain
    drain: {ignore_daemonsets: true, timeout: 1m}
verification_window: 1s
cooldown: 0s
"""


def three_steps(health_timeout: str = "1m", verify: str = "1s") -> str:
    return THREE_STEPS.replace("HEALTH_TIMEOUT", health_timeout).replace("VERIFY", verify)


SCENARIOS = {
    # playbook, alert labels, workflow ID
    "restart-scale-rollback": (three_steps(), {"alertname": "ThreeSteps"}, workflow_id_for("deployment/prod/checkout")),
    "cordon-drain": (NODE_DOWN, {"alertname": "NodeDown", "node": "worker-1"}, workflow_id_for("node/worker-1")),
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def proxy(temporal):
    """Temporal behind 50 ms each way."""
    p = DelayProxy(temporal.address, delay=0.05).start()
    try:
        yield p
    finally:
        p.stop()


def mutations(emu: Emulator) -> collections.Counter:
    """Accepted mutating requests by (method, path, content type): a change sent twice counts 2."""
    return collections.Counter(
        (r.method, r.path, (r.content_type or "").split(";")[0] or None)
        for r in emu.requests()
        if r.method in MUTATING and 200 <= r.status < 300
    )


async def wait_closed(client: Client, workflow_id: str, timeout: float = 240, on_tick=None) -> WorkflowExecutionStatus:
    """Wait until the workflow's latest run closes; ``on_tick()`` runs between polls."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = (await handle.describe()).status
        except Exception:  # not started yet, or Temporal unreachable for a moment
            status = None
        if status not in (None, WorkflowExecutionStatus.RUNNING):
            return status
        if on_tick is not None:
            on_tick()
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} did not finish within {timeout}s")


async def assert_audit_is_the_history(client: Client, store: AuditStore, workflow_id: str) -> list:
    """The audit trail holds exactly the events the ``audit_write`` activities of the run's
    history carry: none lost, none twice, same content, keys numbered without a gap; and every
    firing the run was signalled is recorded. Returns the stored events."""
    handle = client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    run_id = history.events[0].workflow_execution_started_event_attributes.original_execution_run_id
    written, firing = [], set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "audit_write":
                [inp] = await client.data_converter.decode(attrs.input.payloads, [AuditWriteInput])
                written += inp.events
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            [sig] = await client.data_converter.decode(
                event.workflow_execution_signaled_event_attributes.input.payloads, [AlertSignal]
            )
            if sig.alert.status == "firing":
                firing.add(sig.alert.dedup_key)
    stored = store.events(run_id)
    assert [e.key for e in stored] == [e.key for e in written]
    for s, w in zip(stored, written):
        assert (s.at, s.kind, s.message) == (w.at, w.kind, w.message), s.key
        assert s.data == w.data, s.key
    numbers = [int(e.key.split("-")[0]) for e in stored]
    assert numbers == list(range(1, len(numbers) + 1)), "a gap in the audit trail"
    assert firing <= {e.dedup_key for e in stored if e.kind == "alert"}
    return stored


async def audit_writes(client: Client, workflow_id: str, types: tuple[str, ...] = ("audit_write",)) -> tuple[int, int]:
    """(activities of these types in the run's history, how many of them needed a retry)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {
        e.event_id for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name in types
    }
    retried = {
        e.activity_task_started_event_attributes.scheduled_event_id for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
        and e.activity_task_started_event_attributes.attempt > 1
    }
    return len(scheduled), len(retried)


class CommitWatcher(threading.Thread):
    """Watches the audit database from outside, as a person would, and SIGKILLs the current
    worker the moment a commit adds events: after every commit, whichever it is."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.worker: WorkerProcess | None = None
        self.kills = 0
        self.armed = True
        self._halt = threading.Event()

    def run(self) -> None:
        seen, conn = 0, None
        while not self._halt.is_set():
            if conn is None:
                if self.db.exists():
                    conn = sqlite3.connect(self.db, isolation_level=None)
                time.sleep(0.001)
                continue
            try:
                count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if count > seen:
                seen = count
                worker = self.worker
                if worker is not None and self.armed:
                    os.kill(worker.pid, signal.SIGKILL)
                    self.worker = None
                    self.kills += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def node_pods(emu: Emulator, node: str) -> set[str]:
    """Paths of the evictions a drain of ``node`` sends (every pod but DaemonSet ones)."""
    return {
        f"/api/v1/namespaces/{p['metadata']['namespace']}/pods/{p['metadata']['name']}/eviction"
        for p in emu.list("Pod")
        if (p.get("spec") or {}).get("nodeName") == node
        and (p["metadata"].get("ownerReferences") or [{}])[0].get("kind") != "DaemonSet"
    }


def expected_mutations(scenario: str, emu: Emulator) -> collections.Counter:
    if scenario == "cordon-drain":
        expected = collections.Counter({("PATCH", "/api/v1/nodes/worker-1", "application/strategic-merge-patch+json"): 1})
        for path in node_pods(emu, "worker-1"):
            expected[("POST", path, "application/json")] = 1
        return expected
    deployment = "/apis/apps/v1/namespaces/prod/deployments/checkout"
    return collections.Counter({
        ("PATCH", deployment, "application/strategic-merge-patch+json"): 1,
        ("PUT", deployment + "/scale", None): 1,
        ("PATCH", deployment, "application/json-patch+json"): 1,
    })


async def baseline(tmp_path: Path, temporal, scenario: str) -> tuple[str, list[str]]:
    """The same scenario without a crash, on a cluster of its own: (outcome, event kinds)."""
    playbook, labels, workflow_id = SCENARIOS[scenario]
    base = tmp_path / "baseline"
    (base / "playbooks").mkdir(parents=True)
    (base / "playbooks" / "p.yaml").write_text(playbook)
    with Emulator() as emu:
        emu.seed_demo()
        worker = WorkerProcess(base, temporal.address, engine_kubeconfig(emu, base / "kubeconfig"), HEARTBEAT + ["--task-queue", "baseline"])
        try:
            assert worker.post("firing", **labels).status_code == 200
            client = await connect(temporal.address)
            await wait_closed(client, workflow_id)
            result = await client.get_workflow_handle(workflow_id, result_type=RemediationResult).result()
        finally:
            worker.stop()
    events = AuditStore(base / "state" / "audit.db").events(result.run_id)
    return result.outcome, [e.kind for e in events]


# --------------------------------------------------------------------------- every audit commit


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_worker_killed_after_every_audit_commit(tmp_path, cluster, temporal, proxy, scenario):
    """SIGKILL right after the 1st, 2nd, ... N-th audit commit of one run, across the whole
    run: each kill lands while Temporal has not yet heard the write completed."""
    emu, kubeconfig = cluster
    playbook, labels, workflow_id = SCENARIOS[scenario]
    expected = expected_mutations(scenario, emu)
    (tmp_path / "playbooks" / "p.yaml").write_text(playbook)
    watcher = CommitWatcher(tmp_path / "state" / "audit.db")
    watcher.start()
    client = await connect(temporal.address)
    worker = WorkerProcess(tmp_path, proxy.address, kubeconfig, HEARTBEAT)
    watcher.worker = worker
    try:
        assert worker.post("firing", **labels).status_code == 200

        def restart_if_killed() -> None:
            nonlocal worker
            if worker.proc.poll() is not None:
                worker = WorkerProcess(tmp_path, proxy.address, kubeconfig, HEARTBEAT, wait=False)
                watcher.worker = worker  # armed before it can write anything
                worker.wait_ready()

        status = await wait_closed(client, workflow_id, timeout=400, on_tick=restart_if_killed)
    finally:
        watcher.stop()
        worker.stop()
    assert status == WorkflowExecutionStatus.COMPLETED
    result = await client.get_workflow_handle(workflow_id, result_type=RemediationResult).result()
    store = AuditStore(tmp_path / "state" / "audit.db")
    stored = await assert_audit_is_the_history(client, store, workflow_id)
    writes, retried = await audit_writes(client, workflow_id)
    # One kill after each write; most writes were retried: the kill beat their completion.
    assert watcher.kills == writes, (watcher.kills, writes)
    assert retried >= writes // 2, (retried, writes)
    print(f"{scenario}: {writes} audit writes, {watcher.kills} kills, {retried} writes retried after their kill")
    assert mutations(emu) == expected
    assert [s.status for s in result.steps] == ["succeeded"] * len(result.steps)
    # As it would have ended without a crash, with the same timeline.
    outcome, kinds = await baseline(tmp_path, temporal, scenario)
    assert (result.outcome, [e.kind for e in stored]) == (outcome, kinds)
    assert store.get_run(result.run_id).outcome == result.outcome


# --------------------------------------------------------------------------- a change lands, the worker dies


@pytest.mark.parametrize(
    ("step", "method", "suffix"),
    [
        ({"name": "scale", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}}, "PUT", "/deployments/checkout/scale"),
        ({"name": "rollback", "rollback": {"to_revision": 0}}, "PATCH", "/deployments/checkout"),
    ],
    ids=["scale-delta", "rollback"],
)
async def test_worker_killed_the_instant_its_change_lands(tmp_path, cluster, temporal, proxy, step, method, suffix):
    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "p.yaml").write_text(yaml.safe_dump({
        "name": "one-change", "match": ['alertname="OneChange"'],
        "target": {"kind": "Deployment", "namespace": "{{ labels.namespace }}", "name": "{{ labels.deployment }}"},
        "steps": [step], "verification_window": "1s", "cooldown": "0s",
    }))
    workers: list[WorkerProcess] = []

    def kill_when_it_lands(request) -> None:
        if request.method == method and request.path.endswith(suffix) and 200 <= request.status < 300 and len(workers) == 1:
            workers[0].kill()  # before the response leaves the API server

    emu.on_request(kill_when_it_lands)
    workers.append(WorkerProcess(tmp_path, proxy.address, kubeconfig, HEARTBEAT))
    client = await connect(temporal.address)
    try:
        assert workers[0].post("firing", alertname="OneChange").status_code == 200
        deadline = time.monotonic() + 60
        while workers[0].proc.poll() is None:
            assert time.monotonic() < deadline, "the change never landed"
            await asyncio.sleep(0.05)
        workers.append(WorkerProcess(tmp_path, proxy.address, kubeconfig, HEARTBEAT))
        status = await wait_closed(client, workflow_id_for("deployment/prod/checkout"))
    finally:
        for w in workers:
            w.stop()
    assert status == WorkflowExecutionStatus.COMPLETED
    sent = [k for k, n in mutations(emu).items() for _ in range(n)]
    assert len(sent) == 1 and sent[0][0] == method, sent
    deployment = emu.get("Deployment", "checkout", "prod")
    if step["name"] == "scale":
        assert deployment["spec"]["replicas"] == 4  # 3 + 1, not 5
    else:
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/checkout:1.4.1"
    store = AuditStore(tmp_path / "state" / "audit.db")
    events = await assert_audit_is_the_history(client, store, workflow_id_for("deployment/prod/checkout"))
    [applied] = [e for e in events if e.kind == "mutation"]
    assert applied.data["already_applied"] is True and applied.data["requests"] == []
    [planned] = [e for e in events if e.kind == "plan"]
    assert planned.data["requests"][0]["method"] == method  # the intent, recorded before it was sent


# --------------------------------------------------------------------------- outages


async def test_temporal_unreachable_for_30s_during_a_flush(tmp_path, cluster, temporal, proxy):
    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "p.yaml").write_text(three_steps())
    watcher = CommitWatcher(tmp_path / "state" / "audit.db")
    watcher.armed = False
    worker = WorkerProcess(tmp_path, proxy.address, kubeconfig, HEARTBEAT)
    cut_at: list[float] = []

    def cut_after_second_commit() -> None:
        while watcher.is_alive() and not cut_at:
            with sqlite3.connect(watcher.db) as conn:
                writes = conn.execute("SELECT count(DISTINCT written_at) FROM events").fetchone()[0]
            if writes >= 2:
                proxy.cut()
                cut_at.append(time.monotonic())
                time.sleep(30)
                proxy.restore()
                return
            time.sleep(0.002)

    client = await connect(temporal.address)
    try:
        assert worker.post("firing", alertname="ThreeSteps").status_code == 200
        while not (tmp_path / "state" / "audit.db").exists():
            await asyncio.sleep(0.01)
        watcher.start()
        cutter = threading.Thread(target=cut_after_second_commit, daemon=True)
        cutter.start()
        status = await wait_closed(client, workflow_id_for("deployment/prod/checkout"), timeout=300)
        cutter.join(5)
        assert worker.proc.poll() is None, "the worker did not ride out the outage"
    finally:
        watcher.stop()
        worker.stop()
    assert cut_at, "the outage never happened"
    assert status == WorkflowExecutionStatus.COMPLETED
    result = await client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult).result()
    assert [s.status for s in result.steps] == ["succeeded"] * 3
    assert mutations(emu) == expected_mutations("restart-scale-rollback", emu)
    await assert_audit_is_the_history(client, AuditStore(tmp_path / "state" / "audit.db"), workflow_id_for("deployment/prod/checkout"))


async def test_api_server_unreachable_for_90s_mid_step(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "p.yaml").write_text(three_steps(health_timeout="3m"))
    outage: list[float] = []

    def down_after_the_restart(request) -> None:
        if request.method == "PATCH" and request.path.endswith("/deployments/checkout") and not outage:
            outage.append(time.monotonic())
            threading.Timer(0.1, emu.api_down).start()  # after this answer leaves
            threading.Timer(90, emu.api_up).start()

    emu.on_request(down_after_the_restart)
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig, HEARTBEAT)
    client = await connect(temporal.address)
    try:
        assert worker.post("firing", alertname="ThreeSteps").status_code == 200
        status = await wait_closed(client, workflow_id_for("deployment/prod/checkout"), timeout=300)
    finally:
        worker.stop()
    assert outage and time.monotonic() - outage[0] >= 90
    assert status == WorkflowExecutionStatus.COMPLETED
    result = await client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult).result()
    assert [s.status for s in result.steps] == ["succeeded"] * 3, result.reason
    assert mutations(emu) == expected_mutations("restart-scale-rollback", emu)


async def test_retry_budget_spent_ends_the_run_failed_with_the_reason(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "p.yaml").write_text(THREE_STEPS.replace(
        "    health: {rollout_status: {}, timeout: HEALTH_TIMEOUT, interval: 300ms}\n", "", 1
    ).replace("HEALTH_TIMEOUT", "1m").replace("VERIFY", "1s"))

    def down_when_step_2_reads(request) -> None:
        if request.path.endswith("/deployments/checkout/scale"):
            emu.api_down()  # this answer is lost too

    emu.on_request(down_when_step_2_reads)
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig, HEARTBEAT + ["--kube-retry-budget", "5s"])
    client = await connect(temporal.address)
    try:
        assert worker.post("firing", alertname="ThreeSteps").status_code == 200
        await wait_closed(client, workflow_id_for("deployment/prod/checkout"), timeout=120)
    finally:
        worker.stop()
        emu.api_up()
    result = await client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult).result()
    assert result.outcome == "failed"
    assert [s.status for s in result.steps] == ["succeeded", "failed", "pending"]
    assert "cannot reach the Kubernetes API server" in result.reason
    assert result.reason.endswith("(still failing when the 5s Kubernetes retry budget ran out)")
    run = AuditStore(tmp_path / "state" / "audit.db").get_run(result.run_id)
    assert run.outcome == "failed" and run.cooldown_until is not None


# --------------------------------------------------------------------------- a dead worker


async def test_a_dead_workers_action_is_retried_on_another_worker_within_15s(tmp_path, cluster, temporal):
    """Default heartbeat timeout (10 s): a drain held up by a PodDisruptionBudget is going on
    when its worker is SIGKILLed; the other worker takes it over."""
    emu, kubeconfig = cluster
    PolicyV1Api(emu.api_client()).patch_namespaced_pod_disruption_budget("checkout", "prod", {"spec": {"maxUnavailable": 0}})
    (tmp_path / "playbooks" / "p.yaml").write_text(NODE_DOWN.replace("timeout: 1m", "timeout: 3m"))
    workers = [WorkerProcess(tmp_path, temporal.address, kubeconfig), WorkerProcess(tmp_path, temporal.address, kubeconfig)]
    client = await connect(temporal.address)
    handle = client.get_workflow_handle(workflow_id_for("node/worker-1"))

    async def drain() -> tuple:
        for a in (await handle.describe()).raw_description.pending_activities:
            if a.activity_type.name == "drain" and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                return a.attempt, a.last_worker_identity
        return None

    try:
        assert workers[0].post("firing", alertname="NodeDown", node="worker-1").status_code == 200
        deadline = time.monotonic() + 60
        while not (running := await drain()):
            assert time.monotonic() < deadline, "the drain never started"
            await asyncio.sleep(0.1)
        attempt, identity = running
        [dead] = [w for w in workers if identity.startswith(f"{w.pid}@")]
        dead.kill()
        killed = time.monotonic()
        while True:
            now = await drain()
            if now and now[0] > attempt:
                break
            assert time.monotonic() - killed < 15, "the drain was not retried within 15 s"
            await asyncio.sleep(0.1)
        taken_over = time.monotonic() - killed
        [alive] = [w for w in workers if w is not dead]
        assert now[1].startswith(f"{alive.pid}@")
        PolicyV1Api(emu.api_client()).patch_namespaced_pod_disruption_budget("checkout", "prod", {"spec": {"maxUnavailable": 1}})
        await wait_closed(client, workflow_id_for("node/worker-1"))
    finally:
        for w in workers:
            w.stop()
    result = await client.get_workflow_handle(workflow_id_for("node/worker-1"), result_type=RemediationResult).result()
    assert [s.status for s in result.steps] == ["succeeded", "succeeded"], result.reason
    print(f"drain retried on the other worker {taken_over:.1f} s after the kill")


# --------------------------------------------------------------------------- runs Temporal ends


async def test_a_terminated_run_gets_its_outcome_notice_and_cooldown(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    emu.fault_stall_rollout("prod", "checkout")  # keeps step 1 checking health
    AppsV1Api(emu.api_client()).create_namespaced_deployment("prod", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cart"}},
                 "template": {"metadata": {"labels": {"app": "cart"}}, "spec": {"containers": [{"name": "c", "image": "cart:1"}]}}},
    })
    emu.fault_stall_rollout("prod", "cart")
    (tmp_path / "playbooks" / "p.yaml").write_text(three_steps().replace("cooldown: 0s", "cooldown: 1h") + (
        'slack: {channel: "#sre-oncall", approvers: {users: [U0BOB]}, oncall_usergroup: S0ONCALL}\n'
    ))
    with SlackEmulator() as slack:
        slack.add_channel("sre-oncall")
        slack.add_user("U0BOB", "bob")
        worker = WorkerProcess(tmp_path, temporal.address, kubeconfig, HEARTBEAT + [
            "--slack-bot-token", slack.bot_token, "--slack-api-url", slack.url, "--settle-interval", "1s",
        ])
        client = await connect(temporal.address)
        try:
            for deployment in ("checkout", "cart"):
                assert worker.post("firing", alertname="ThreeSteps", deployment=deployment).status_code == 200
            restarts = lambda name: [r for r in emu.requests("PATCH") if r.path.endswith(f"/deployments/{name}")]  # noqa: E731
            deadline = time.monotonic() + 60
            while not (restarts("checkout") and restarts("cart")):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            for deployment in ("checkout", "cart"):
                await client.get_workflow_handle(workflow_id_for(f"deployment/prod/{deployment}")).terminate(reason="taken over by hand")
            # At once, a new firing for checkout: the intake finds its run ended, records it, and
            # starts nothing inside its cooldown.
            again = worker.post("firing", alertname="ThreeSteps", fingerprint="beef01")
            assert again.status_code == 200
            [answer] = again.json()["alerts"]
            assert answer["disposition"] == "cooling_down", answer
            # cart gets no alert: the periodic settle finds it.
            store = AuditStore(tmp_path / "state" / "audit.db")
            deadline = time.monotonic() + 30
            while store.latest_run(workflow_id_for("deployment/prod/cart")).outcome == "running":
                assert time.monotonic() < deadline, "the terminated run was never settled"
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + 30
            while len([m for m in slack.messages("sre-oncall") if "terminated" in m.get("text", "")]) < 2:
                assert time.monotonic() < deadline, slack.messages("sre-oncall")
                await asyncio.sleep(0.2)
        finally:
            worker.stop()
    for deployment in ("checkout", "cart"):
        run = store.latest_run(workflow_id_for(f"deployment/prod/{deployment}"))
        assert run.outcome == "terminated"
        assert run.ended_at is not None and run.cooldown_until is not None
        assert abs((run.cooldown_until - run.ended_at).total_seconds() - 3600) < 1
        [outcome] = [e for e in store.events(run.run_id) if e.kind == "outcome"]
        assert "terminated by" in outcome.message and "taken over by hand" in outcome.message
    assert [r.kind for r in store.intake_records(kind="cooldown")] == ["cooldown"]
    assert len(restarts("checkout")) == 1  # the new firing started nothing


# --------------------------------------------------------------------------- signals while writing


class SignallingStore(AuditStore):
    """The real store, with a burst of alert signals sent to the run while each write is in
    progress (as an Alertmanager HA pair and resends do, at the worst moment)."""

    def __init__(self, path, loop, client) -> None:
        super().__init__(path)
        self.loop, self.client, self.sent, self.done = loop, client, 0, False

    def write(self, inp) -> None:
        if self.done or any(e.kind == "outcome" for e in inp.events):
            # The run has ended: what arrives during its last write is recorded by the pass
            # after it, and nothing arrives after that.
            self.done = True
            return super().write(inp)
        workflow_id = workflow_id_for("deployment/prod/checkout") + "-burst"
        handle = self.client.get_workflow_handle(workflow_id)
        now = datetime.now(timezone.utc)
        burst = [ALERT, ALERT.model_copy(update={"fingerprint": f"f{self.sent:04d}"}), ALERT.model_copy(update={"status": "resolved", "fingerprint": "nope"})]
        for alert in burst:
            signal_ = handle.signal("alert", AlertSignal(alert=alert, playbook="burst", received_at=now))
            try:
                asyncio.run_coroutine_threadsafe(signal_, self.loop).result(10)
                self.sent += 1
            except Exception:  # the run has ended
                pass
        super().write(inp)


ALERT = AlertRef(
    fingerprint="c0ffee", starts_at=datetime(2026, 11, 21, 5, tzinfo=timezone.utc), status="firing",
    labels={"alertname": "ThreeSteps", "namespace": "prod", "deployment": "checkout"},
)


async def test_a_burst_of_signals_during_every_audit_write(client, emulator, tmp_path):
    store = SignallingStore(tmp_path / "audit.db", asyncio.get_running_loop(), client)
    raw = yaml.safe_load(three_steps(verify="2s"))
    raw["target"] = {"kind": "Deployment", "namespace": "prod", "name": "checkout"}
    pb = Playbook.model_validate(raw)
    queue = f"burst-{uuid.uuid4()}"
    workflow_id = workflow_id_for("deployment/prod/checkout") + "-burst"
    with ThreadPoolExecutor(16) as pool:
        async with new_worker(client, queue, build_activities(engine_api_client(emulator), None, None, store, brakes=permissive_brakes(store)), pool):
            handle = await client.start_workflow(
                "RemediationWorkflow",
                RemediationInput(target=TargetRef(kind="Deployment", namespace="prod", name="checkout"), playbook=pb, playbook_ref=PlaybookRef(name=pb.name, path="p.yaml", sha256="ab" * 32)),
                id=workflow_id, task_queue=queue, start_signal="alert",
                start_signal_args=[AlertSignal(alert=ALERT, playbook=pb.name, received_at=datetime.now(timezone.utc))],
                result_type=RemediationResult,
            )
            result = await handle.result()
    assert store.sent > 10
    assert result.outcome == "not_healed" and [s.status for s in result.steps] == ["succeeded"] * 3
    events = await assert_audit_is_the_history(client, store, workflow_id)
    assert len([e for e in events if e.kind == "alert"]) > 5


async def test_the_same_resolved_twice_3_to_50ms_apart_while_verifying(tmp_path, cluster, temporal):
    """An Alertmanager HA pair delivers each notification twice, milliseconds apart."""
    emu, kubeconfig = cluster
    apps = AppsV1Api(emu.api_client())
    names = [f"svc-{i}" for i in range(4)]
    for name in names:
        apps.create_namespaced_deployment("prod", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": f"{name}:1"}]}}},
        })
    # Three steps: restart, scale, restart again (new Deployments have no revision to roll back to).
    book = three_steps(verify="1m").replace("rollback: {to_revision: 0}", "rollout_restart: {}")
    (tmp_path / "playbooks" / "p.yaml").write_text(book)
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    client = await connect(temporal.address)
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=10) as http:
            for name in names:
                assert (await http.post("/api/v1/alerts", json=webhook("firing", "ThreeSteps", deployment=name))).status_code == 200

            async def twice(name: str, gap: float) -> None:
                handle = client.get_workflow_handle(workflow_id_for(f"deployment/prod/{name}"))
                deadline = time.monotonic() + 120
                while (await handle.query("status", result_type=RemediationStatus)).phase != "verifying":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                body = webhook("resolved", "ThreeSteps", deployment=name)
                first = asyncio.create_task(http.post("/api/v1/alerts", json=body))
                await asyncio.sleep(gap)
                second = await http.post("/api/v1/alerts", json=body)
                assert (await first).status_code == second.status_code == 200

            await asyncio.gather(*(twice(n, gap) for n, gap in zip(names, (0.003, 0.010, 0.020, 0.050))))
        results = []
        for name in names:
            status = await wait_closed(client, workflow_id_for(f"deployment/prod/{name}"))
            assert status == WorkflowExecutionStatus.COMPLETED
            results.append(await client.get_workflow_handle(workflow_id_for(f"deployment/prod/{name}"), result_type=RemediationResult).result())
    finally:
        worker.stop()
    assert [r.outcome for r in results] == ["healed"] * 4
    store = AuditStore(tmp_path / "state" / "audit.db")
    for name in names:
        events = await assert_audit_is_the_history(client, store, workflow_id_for(f"deployment/prod/{name}"))
        resolved = [e for e in events if e.kind == "alert" and e.data.get("status") == "resolved"]
        assert len(resolved) == 1
        assert store.latest_run(workflow_id_for(f"deployment/prod/{name}")).outcome == "healed"



async def test_an_unavailable_audit_trail_holds_the_run_and_nothing_is_changed_meanwhile(client, emulator, tmp_path):
    """The audit database is locked by another process for 15 s (longer than its 10 s busy
    timeout) when the run starts: the write fails, is retried, the run waits; nothing reaches
    the cluster before its intent is recorded, and the run ends as usual."""
    store = AuditStore(tmp_path / "audit.db")
    raw = yaml.safe_load(three_steps())
    raw["target"] = {"kind": "Deployment", "namespace": "prod", "name": "checkout"}
    pb = Playbook.model_validate(raw)
    queue = f"locked-{uuid.uuid4()}"
    workflow_id = workflow_id_for("deployment/prod/checkout") + "-locked"
    locker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    released: list[float] = []

    def release() -> None:
        locker.execute("COMMIT")
        released.append(time.time())

    threading.Timer(15, release).start()
    with ThreadPoolExecutor(16) as pool:
        async with new_worker(client, queue, build_activities(engine_api_client(emulator), None, None, store, brakes=permissive_brakes(store)), pool):
            handle = await client.start_workflow(
                "RemediationWorkflow",
                RemediationInput(target=TargetRef(kind="Deployment", namespace="prod", name="checkout"), playbook=pb,
                                 playbook_ref=PlaybookRef(name=pb.name, path="p.yaml", sha256="ab" * 32)),
                id=workflow_id, task_queue=queue, start_signal="alert",
                start_signal_args=[AlertSignal(alert=ALERT, playbook=pb.name, received_at=datetime.now(timezone.utc))],
                result_type=RemediationResult,
            )
            result = await handle.result()
    assert [s.status for s in result.steps] == ["succeeded"] * 3
    first_change = min(r.at for r in emulator.requests() if r.method in MUTATING)
    assert released and first_change > released[0]
    # Whichever reaches the locked database first (the run's first audit write, or the
    # transaction that takes its concurrency slot) fails and is retried.
    _, retried = await audit_writes(client, workflow_id, ("audit_write", "acquire_slot"))
    assert retried >= 1
    await assert_audit_is_the_history(client, store, workflow_id)
