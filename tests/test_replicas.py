"""Two replicas of the engine, as the Kubernetes base runs them: two ``python worker.py``
processes, each with its own state directory (nothing shared on disk), one PostgreSQL
(``--database-url``), one Temporal dev server, and a real Alertmanager HA pair (two Debian
Alertmanagers gossiping on loopback) whose receiver lists both replicas' webhooks, so every
notification reaches both replicas.

What must hold, as an SRE expects of replicas:

* exactly one remediation per target, however many copies of the alert arrive;
* one complete audit trail, which either replica shows (``GET /runs/RUN``);
* SIGKILL of the replica running the step: the other finishes the run, no mutation repeated;
* a repeat of the firing that reaches a replica after the run ended (a new one, whose disk has
  never seen it) is answered ``duplicate`` from the shared database;
* several replicas with the embedded Temporal refuse to start.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType

from remediator.app.temporal import connect
from remediator.domain.messages import RemediationResult, RemediationStatus
from remediator.domain.runs import workflow_id_for
from remediator.sim.alerting import free_port, post_alerts, start_alertmanager
from tests.support import WorkerProcess, webhook
from tests.test_durability import PLAYBOOK, activities_done, restart_patches, wait_for

ROOT = Path(__file__).resolve().parent.parent
TARGET = "deployment/prod/checkout"
LABELS = {"alertname": "DurabilityTest", "namespace": "prod", "deployment": "checkout", "severity": "critical"}


def replica(tmp_path: Path, name: str, temporal: str, kubeconfig: Path, database_url: str) -> WorkerProcess:
    """A replica with its own state and playbook directories (``tmp_path/name``)."""
    home = tmp_path / name
    (home / "playbooks").mkdir(parents=True, exist_ok=True)
    (home / "playbooks" / "durability.yaml").write_text(PLAYBOOK)
    return WorkerProcess(home, temporal, kubeconfig, ["--database-url", database_url, "--heartbeat-timeout", "2s"])


def message(status: str, sent: dict) -> dict:
    """The webhook message of the alert Alertmanager holds (``sent``: its ``/api/v2/alerts``
    entry), with ``status``: the same fingerprint and ``startsAt``, as a resend carries them."""
    body = webhook(status, fingerprint=sent["fingerprint"], severity="critical")
    body["alerts"][0]["startsAt"] = sent["startsAt"]  # RFC 3339, as Alertmanager sends it
    return body


async def mutated_by(handle) -> str:
    """The worker identity of the ``rollout_restart`` activity's attempt, from the history."""
    scheduled: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if scheduled.get(started.scheduled_event_id) == "rollout_restart":
                return started.identity
    raise AssertionError("no rollout_restart in the history")


def timeline(worker: WorkerProcess, run_id: str) -> str:
    resp = httpx.get(f"{worker.url}/runs/{run_id}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.text


async def test_two_replicas_behind_an_alertmanager_ha_pair(tmp_path, cluster, temporal, postgres):
    emu, kubeconfig = cluster
    postgres_url = postgres.new_database(upgraded=False)  # empty: `remediator db upgrade` makes the schema
    upgraded = subprocess.run([sys.executable, "-m", "remediator.cli", "db", "upgrade", "--database-url", postgres_url],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    emu.fault_stall_rollout("prod", "checkout")  # the health check polls until the fault is cleared
    a = replica(tmp_path, "a", temporal.address, kubeconfig, postgres_url)
    b = replica(tmp_path, "b", temporal.address, kubeconfig, postgres_url)
    replicas = {a.pid: a, b.pid: b}
    webhooks = [f"{r.url}/api/v1/alerts" for r in (a, b)]
    gossip = [free_port(), free_port()]
    am1 = start_alertmanager(tmp_path / "am1", webhooks, cluster_port=gossip[0], cluster_peers=[f"127.0.0.1:{gossip[1]}"])
    am2 = start_alertmanager(tmp_path / "am2", webhooks, cluster_port=gossip[1], cluster_peers=[f"127.0.0.1:{gossip[0]}"])
    others: list[WorkerProcess] = []
    try:
        # Prometheus sends every alert to every Alertmanager of the pair, with its startsAt
        # (whole seconds here, so the API's and the webhook's renderings of it are equal).
        starts = datetime.now(UTC).replace(microsecond=0)
        for am in (am1, am2):
            post_alerts(am.url, [{"labels": LABELS, "startsAt": starts, "generatorURL": "http://prometheus/graph"}])
        client = await connect(temporal.address)
        handle = client.get_workflow_handle(workflow_id_for(TARGET), result_type=RemediationResult)

        async def polling():
            try:
                done = await activities_done(handle)
            except Exception:
                return None
            return done["rollout_restart"] == 1 and done["check_rollout_status"] >= 2

        await wait_for(polling, what="the run's health check to poll")
        sent = httpx.get(f"{am1.url}/api/v2/alerts", timeout=10).json()
        assert len(sent) == 1 and sent[0]["labels"] == LABELS, sent
        sent = sent[0]
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id_for(TARGET)}'")]
        assert len(runs) == 1, runs
        assert len(restart_patches(emu)) == 1

        # SIGKILL the replica that made the change (its worker identity is "PID@host" in the
        # history), mid-step: the health check still polling.
        identity = await mutated_by(handle)
        running = replicas[int(identity.split("@")[0])]
        survivor = b if running is a else a
        running.kill()
        emu.clear_faults()

        async def verifying():
            try:
                return (await handle.query("status", result_type=RemediationStatus)).phase == "verifying"
            except Exception:
                return False

        await wait_for(verifying, timeout=90, what="the surviving replica to finish the step")
        resolved = httpx.post(f"{survivor.url}/api/v1/alerts", json=message("resolved", sent), timeout=10)
        assert resolved.status_code == 200, resolved.text
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.outcome == "healed", result.reason
        assert (await activities_done(handle))["rollout_restart"] == 1
        assert len(restart_patches(emu)) == 1, "the other replica did not repeat the mutation"
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id_for(TARGET)}'")]
        assert len(runs) == 1, runs

        # One audit trail: a new replica (an empty disk) shows the same timeline as the survivor,
        # events of both processes in it, the outcome last.
        fresh = replica(tmp_path, "c", temporal.address, kubeconfig, postgres_url)
        others.append(fresh)
        shown = timeline(survivor, result.run_id)
        assert timeline(fresh, result.run_id) == shown
        assert "healed" in shown and "restart" in shown

        # The same firing again, at a replica that never saw it: duplicate, from the database.
        repeat = httpx.post(f"{fresh.url}/api/v1/alerts", json=message("firing", sent), timeout=10)
        assert repeat.status_code == 200, repeat.text
        assert [x["disposition"] for x in repeat.json()["alerts"]] == ["duplicate"], repeat.json()
    finally:
        for process in (am1, am2):
            process.stop()
        for worker in (a, b, *others):
            worker.stop()
