"""The engine's metrics through the Temporal SDK's Prometheus exporter (``--metrics-listen``):
a real worker process remediates, then a CLI approval, and the exporter's page is read as
Prometheus scrapes it (workflows/metrics.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from remediator.app.temporal import connect
from remediator.domain.messages import RemediationResult, RemediationStatus
from remediator.domain.runs import workflow_id_for
from remediator.sim.alerting import free_port
from tests.support import WorkerProcess
from tests.test_durability import PLAYBOOK as DURABILITY_PLAYBOOK

PLAYBOOK = DURABILITY_PLAYBOOK.replace("name: durability", "name: metrics").replace(
    "verification_window: 1m", "verification_window: 1s"
)
"""The durability playbook, named ``metrics``, with a verification window of 1 s."""

APPROVAL = PLAYBOOK.replace("    rollout_restart: {}", "    approval: always\n    rollout_restart: {}") + """\
slack:
  channel: "#sre-oncall"
  approvers: {users: [U0BOB]}
  approval_timeout: 10m
  approval_deadline: 1h
"""


def samples(url: str) -> dict[tuple[str, frozenset], float]:
    """The page at ``url`` as Prometheus parses it: (sample name, labels) -> value."""
    page = httpx.get(url, timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page) for s in family.samples
    }


def value(got: dict, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in got.items() if n == name and set(labels.items()) <= ls)


async def finished(temporal_address: str) -> RemediationResult:
    client = await connect(temporal_address)
    handle = client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult)
    return await asyncio.wait_for(handle.result(), 90)


async def test_runs_steps_and_worker_pollers_are_exported(tmp_path, cluster, temporal):
    _, kubeconfig = cluster
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "metrics.yaml").write_text(PLAYBOOK)
    listen = f"127.0.0.1:{free_port()}"
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig, ["--metrics-listen", listen])
    try:
        assert worker.post("firing").status_code == 200
        result = await finished(temporal.address)
        # The alert is never resolved here: the restart succeeds and the run ends not_healed.
        assert result.outcome == "not_healed", result.reason
        deadline = time.monotonic() + 15  # the exporter's view of the last workflow task
        while time.monotonic() < deadline:
            got = samples(f"http://{listen}/metrics")
            if value(got, "remediator_runs_ended_total", playbook="metrics", outcome="not_healed") == 1:
                break
            await asyncio.sleep(0.2)
        assert value(got, "remediator_runs_started_total", playbook="metrics", task_queue="remediator") == 1
        assert value(got, "remediator_runs_ended_total", playbook="metrics", outcome="not_healed") == 1
        assert value(got, "remediator_runs_ended_total") == 1
        assert value(got, "remediator_step_duration_seconds_count", action="rollout_restart", result="succeeded") == 1
        assert value(got, "remediator_step_duration_seconds_sum", action="rollout_restart", result="succeeded") > 0
        # The SDK's own worker metrics, on both task queues.
        assert value(got, "temporal_num_pollers", poller_type="workflow_task", task_queue="remediator") >= 1
        assert value(got, "temporal_num_pollers", poller_type="workflow_task", task_queue="remediator-handoff") >= 1
        # Label values only from bounded sets: no alert label reaches the page.
        assert not [ls for (_, ls) in got if ("deployment", "checkout") in ls or ("alertname", "DurabilityTest") in ls]
    finally:
        worker.stop()


async def test_an_approval_is_counted_with_its_wait(tmp_path, cluster, temporal):
    _, kubeconfig = cluster
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "metrics.yaml").write_text(APPROVAL)
    listen = f"127.0.0.1:{free_port()}"
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig, ["--metrics-listen", listen])
    client = await connect(temporal.address)
    handle = client.get_workflow_handle(workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult)
    try:
        assert worker.post("firing").status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if (await handle.query("status", result_type=RemediationStatus)).waiting is not None:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.2)
        # by workflow ID, from a directory with no database: the CLI finds the run through Temporal
        (tmp_path / "elsewhere").mkdir()
        rejected = subprocess.run(
            [sys.executable, "-m", "remediator.cli", "reject", handle.id, "--as", "U0BOB",
             "--temporal-address", temporal.address, "--state-dir", str(tmp_path / "elsewhere")],
            cwd=WorkerProcess.ROOT, capture_output=True, text=True, timeout=60,
        )
        assert rejected.returncode == 0, rejected.stdout + rejected.stderr
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.outcome == "needs_human", result.reason
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = samples(f"http://{listen}/metrics")
            if value(got, "remediator_runs_ended_total", outcome="needs_human") == 1:
                break
            await asyncio.sleep(0.2)
        assert value(got, "remediator_approvals_total", decision="reject") == 1
        assert value(got, "remediator_approval_wait_seconds_count", decision="reject") == 1
        assert value(got, "remediator_runs_ended_total", playbook="metrics", outcome="needs_human") == 1
        assert value(got, "remediator_step_duration_seconds_count", action="rollout_restart") == 0
    finally:
        worker.stop()


def test_a_metrics_port_in_use_is_a_clear_refusal(tmp_path, cluster, temporal):
    import socket

    _, kubeconfig = cluster
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "metrics.yaml").write_text(PLAYBOOK)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = subprocess.run(
            [sys.executable, str(WorkerProcess.ROOT / "worker.py"), "--temporal-address", temporal.address,
             "--kubeconfig", str(kubeconfig), "--no-auth", "--state-dir", str(tmp_path / "state"),
             "--playbook-dir", str(tmp_path / "playbooks"), "--metrics-listen", listen],
            cwd=WorkerProcess.ROOT, capture_output=True, text=True, timeout=60,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert f"refusing to start: --metrics-listen {listen}: cannot serve metrics there: " in out, out
