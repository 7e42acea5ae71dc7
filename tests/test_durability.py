"""Durability: the worker SIGKILLed mid-step, and the embedded Temporal restarted mid-run.

Everything is real and separate, as in production: a ``temporal server start-dev`` with a
SQLite file, ``python worker.py`` as a child process (pointed at the emulator through a
kubeconfig, like any cluster), alerts posted to its intake over HTTP. The run must finish
at the step it was in, and the emulator's request log must show each mutation once.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from temporalio.api.enums.v1 import EventType

from remediator.app.devserver import DevServer
from remediator.sim.kube import Emulator
from remediator.domain.messages import RemediationResult, RemediationStatus
from remediator.app.temporal import connect
from remediator.audit.store import AuditStore
from remediator.domain.runs import workflow_id_for
from tests.support import WorkerProcess

PLAYBOOK = """\
name: durability
match: ['alertname="DurabilityTest"']
target:
  kind: Deployment
  namespace: '{{ labels.namespace }}'
  name: '{{ labels.deployment }}'
steps:
  - name: restart
    rollout_restart: {}
    health:
      rollout_status: {}
      timeout: 2m
      interval: 300ms
verification_window: 1m
cooldown: 0s
"""


def restart_patches(emu: Emulator) -> list:
    return [
        r for r in emu.requests(method="PATCH")
        if r.path.endswith("/deployments/checkout") and "restartedAt" in str(r.body)
    ]


async def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def activities_done(handle) -> Counter:
    """How many times each activity of the run completed so far, from its history."""
    scheduled: dict[int, str] = {}
    done: Counter = Counter()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done[scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]] += 1
    return done


async def polling_the_health_check(server: DevServer) -> RemediationStatus:
    """Wait until the run is in its step's health check, which has polled at least twice after
    the rollout restart: where the tests below stop a process. Returns the run's status."""
    client = await connect(server.address)
    handle = client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"))

    async def polled() -> RemediationStatus | None:
        done = await activities_done(handle)
        if done["rollout_restart"] != 1 or done["check_rollout_status"] < 2:
            return None
        status = await handle.query("status", result_type=RemediationStatus)
        return status if (status.phase, status.current_step, status.steps[0].status) == ("remediating", 0, "running") else None

    return await wait_for(polled, what="the health check of step 1 to poll")


async def finish_healed(server: DevServer, worker: WorkerProcess) -> RemediationResult:
    client = await connect(server.address)
    handle = client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult)

    async def verifying():
        try:
            status = await handle.query("status", result_type=RemediationStatus)
        except Exception:
            return False
        return status.phase == "verifying"

    await wait_for(verifying, what="the run to reach verification")
    assert worker.post("resolved").status_code == 200
    return await asyncio.wait_for(handle.result(), 60)


@pytest.fixture
def cluster(cluster, tmp_path):
    (tmp_path / "playbooks" / "durability.yaml").write_text(PLAYBOOK)
    return cluster


async def test_worker_sigkilled_mid_step_resumes_without_repeating_the_mutation(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    emu.fault_stall_rollout("prod", "checkout")  # keeps the health check polling: the kill lands mid-step
    first = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    try:
        assert first.post("firing").status_code == 200
        status = await polling_the_health_check(temporal)
        assert len(restart_patches(emu)) == 1 and status.steps[0].attempts == 1
        first.kill()  # mid-step: the change sent, the check polling
    finally:
        first.stop()
    emu.clear_faults()
    second = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    try:
        result = await finish_healed(temporal, second)
        done = await activities_done((await connect(temporal.address)).get_workflow_handle(workflow_id_for("deployment/prod/checkout")))
    finally:
        second.stop()
    assert result.outcome == "healed", result.reason
    assert result.steps[0].status == "succeeded" and result.steps[0].attempts == 1
    # The second worker went on polling the same step's check; the change was not made again.
    assert done["rollout_restart"] == 1 and done["check_rollout_status"] >= 3
    assert len(restart_patches(emu)) == 1


async def test_temporal_restarted_mid_run_continues_at_the_same_step(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    emu.fault_stall_rollout("prod", "checkout")
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    try:
        assert worker.post("firing").status_code == 200
        await polling_the_health_check(temporal)
        temporal.stop()  # mid-step: the change sent, the check polling

        async def temporal_gone() -> bool:
            async with httpx.AsyncClient(timeout=10) as http:
                return (await http.get(f"{worker.url}/healthz")).status_code == 503

        await wait_for(temporal_gone, what="the worker to see Temporal gone")
        temporal.start()
        emu.clear_faults()
        result = await finish_healed(temporal, worker)
        done = await activities_done((await connect(temporal.address)).get_workflow_handle(workflow_id_for("deployment/prod/checkout")))
    finally:
        worker.stop()
    assert done["rollout_restart"] == 1 and done["check_rollout_status"] >= 3
    assert result.steps[0].attempts == 1
    assert result.outcome == "healed", result.reason
    assert len(restart_patches(emu)) == 1


APPROVAL_PLAYBOOK = PLAYBOOK.replace("    rollout_restart: {}", "    approval: always\n    rollout_restart: {}") + """\
slack:
  channel: "#sre-oncall"
  approvers: {users: [U0BOB]}
  approval_timeout: 10m
  approval_deadline: 1h
"""


async def test_worker_killed_while_waiting_for_approval_then_cli_approval_resumes_it(tmp_path, cluster, temporal):
    from remediator.sim.slack import SlackEmulator

    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "durability.yaml").write_text(APPROVAL_PLAYBOOK)
    with SlackEmulator() as slack:
        slack.add_channel("sre-oncall")
        slack.add_user("U0BOB", "bob")
        extra = ["--slack-bot-token", slack.bot_token, "--slack-api-url", slack.url]
        client = await connect(temporal.address)
        handle = client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult)

        async def waiting():
            try:
                return (await handle.query("status", result_type=RemediationStatus)).waiting
            except Exception:
                return None

        first = WorkerProcess(tmp_path, temporal.address, kubeconfig, extra)
        try:
            assert first.post("firing").status_code == 200
            await wait_for(waiting, what="the approval request")
            await wait_for(lambda: _async(len(slack.calls("chat.postMessage")) == 1), what="the Slack message")
            first.kill()
        finally:
            first.stop()
        assert restart_patches(emu) == []
        second = WorkerProcess(tmp_path, temporal.address, kubeconfig, extra)
        try:
            run_id = AuditStore(tmp_path / "state" / "audit.db").list_runs()[0].run_id

            def cli(verb: str, user: str) -> subprocess.CompletedProcess:
                return subprocess.run(
                    [sys.executable, "-m", "remediator.cli", verb, run_id[:8], "--as", user,
                     "--temporal-address", temporal.address, "--state-dir", str(tmp_path / "state")],
                    cwd=WorkerProcess.ROOT, capture_output=True, text=True, timeout=60,
                )

            # Someone who is not an approver first: refused by the run's validator, nothing decided.
            refused = cli("reject", "U0MALLORY")
            assert refused.returncode == 3, refused.stdout + refused.stderr
            assert refused.stderr.strip().splitlines()[-1] == "error: refused: U0MALLORY is not an approver of playbook durability"
            assert restart_patches(emu) == []
            approved = cli("approve", "U0BOB")
            assert approved.returncode == 0, approved.stdout + approved.stderr
            assert "approved by U0BOB" in approved.stdout
            result = await finish_healed(temporal, second)
        finally:
            second.stop()
        assert result.outcome == "healed", result.reason
        assert len(restart_patches(emu)) == 1
        # The claimed --as identity is recorded beside the OS user and host the CLI ran as.
        store = AuditStore(tmp_path / "state" / "audit.db")
        me = (getpass.getuser(), socket.gethostname())
        [decided] = [e for e in store.events(run_id) if e.kind == "approval" and e.data.get("decision")]
        assert (decided.data["user_id"], decided.data["via"], decided.data["os_user"], decided.data["os_host"]) == ("U0BOB", "cli", *me)
        assert f"approved by U0BOB via cli (as OS user {me[0]} on {me[1]})" in decided.message
        [refusal] = store.intake_records(kind="approval_refused")
        assert f"by U0MALLORY (as OS user {me[0]} on {me[1]}) via cli refused" in refusal.message
        approvals = [c for c in slack.calls("chat.postMessage") if (c.params.get("metadata") or {}).get("event_type") == "remediator_approval_request"]
        assert len(approvals) == 1


async def _async(value):
    return value
