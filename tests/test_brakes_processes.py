"""The brakes across real worker processes (``python worker.py``, as in production): two workers
on one task queue and one state directory, the emulator over HTTP, alerts posted to their
intakes.

* an action rate limit holds across the two processes (no in-process counter);
* a pause freezes a run between its steps within 1 s, the run stays frozen through a worker
  SIGKILL and restart, and ``remediator resume`` completes it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from remediator.audit.store import AuditStore
from remediator.domain.runs import workflow_id_for
from tests.support import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent


def _wait(predicate, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _deployments(emu, ns: str, names: list[str]) -> None:
    emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for name in names:
        labels = {"app": name}
        emu.create({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}},
        })


def _alert(i: int, ns: str, name: str) -> dict:
    return {
        "status": "firing", "labels": {"alertname": "RateTest", "namespace": ns, "deployment": name}, "annotations": {},
        "startsAt": "2026-12-01T05:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
        "fingerprint": f"r{i:03d}",
    }


def _group(alerts: list[dict]) -> dict:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "remediator",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
            "alerts": alerts}


RESTART = """
name: restart
match: ['alertname="RateTest"']
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
steps:
  - name: restart
    rollout_restart: {}
    health: {rollout_status: {}, timeout: 1m, interval: 300ms}
verification_window: 1s
cooldown: 0s
"""


def test_an_action_rate_limit_holds_across_two_worker_processes(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    ns = "rate"
    names = [f"app-{i}" for i in range(8)]
    _deployments(emu, ns, names)
    (tmp_path / "playbooks" / "restart.yaml").write_text(RESTART)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "limits:\n  concurrent_remediations: 100\n  unschedulable_nodes: 1\n"
        "  actions: {rollout_restart: {max: 3, per: 1h}}\n  per_target: {max: 10, per: 1h}\n"
    )
    workers = [WorkerProcess(tmp_path, temporal.address, kubeconfig, ["--policy", str(policy)]) for _ in range(2)]
    try:
        # Half the alerts to each worker, at once: their runs interleave on the shared task queue.
        for w, part in zip(workers, (names[:4], names[4:])):
            resp = httpx.post(f"{w.url}/api/v1/alerts", json=_group([_alert(names.index(n), ns, n) for n in part]), timeout=30)
            assert resp.status_code == 200, resp.text
        audit = AuditStore(tmp_path / "state" / "audit.db")

        def ended():
            rows = [audit.latest_run(workflow_id_for(f"deployment/{ns}/{n}")) for n in names]
            return rows if all(r is not None and r.outcome != "running" for r in rows) else None

        rows = _wait(ended, "all 8 runs to end", timeout=180)
    finally:
        for w in workers:
            w.stop()
    restarts = [r for r in emu.requests("PATCH") if f"/namespaces/{ns}/deployments/" in r.path]
    assert len(restarts) == 3, [r.path for r in restarts]
    outcomes = sorted(r.outcome for r in rows)
    assert outcomes == ["not_healed"] * 3 + ["refused"] * 5, outcomes
    refused = [r for r in rows if r.outcome == "refused"]
    assert all("would be rollout_restart number 4 within 1h across all runs; limit 3 per 1h" in r_reason(audit, r) for r in refused)


def r_reason(audit: AuditStore, row) -> str:
    return next(e.data.get("reason", e.message) for e in audit.events(row.run_id) if e.kind == "outcome")


TWO_STEPS = """
name: two-steps
match: ['alertname="RateTest"']
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
steps:
  - name: restart
    rollout_restart: {}
    health: {rollout_status: {}, timeout: 2m, interval: 300ms}
  - name: scale-up
    scale: {delta: 1, min_replicas: 1, max_replicas: 5}
    health: {rollout_status: {}, timeout: 1m, interval: 300ms}
verification_window: 1s
cooldown: 0s
"""


def test_a_pause_freezes_a_run_between_steps_survives_a_worker_restart_and_resume_completes_it(tmp_path, cluster, temporal):
    emu, kubeconfig = cluster
    ns = "freeze"
    _deployments(emu, ns, ["web"])
    (tmp_path / "playbooks" / "two.yaml").write_text(TWO_STEPS)
    # Step 1's rollout stalls until the test lets it go, so the pause lands while step 1 runs.
    emu.fault_stall_rollout(ns, "web")
    state = tmp_path / "state"
    worker = WorkerProcess(tmp_path, temporal.address, kubeconfig)
    wf_id = workflow_id_for(f"deployment/{ns}/web")
    try:
        resp = httpx.post(f"{worker.url}/api/v1/alerts", json=_group([_alert(1, ns, "web")]), timeout=30)
        assert resp.json()["alerts"][0]["disposition"] == "started", resp.text
        _wait(lambda: [r for r in emu.requests("PATCH") if r.path.endswith(f"/namespaces/{ns}/deployments/web")], "step 1's restart")
        cli = [sys.executable, "-m", "remediator.cli"]
        out = subprocess.run(
            [*cli, "pause", "--namespace", ns, "--reason", "change freeze", "--as", "U0ALICE", "--state-dir", str(state),
             "--playbook-dir", str(tmp_path / "playbooks")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        emu.clear_faults()  # the new pods become Ready
        # Step 1's health check passes; the run reaches the boundary and freezes there.
        audit = AuditStore(state / "audit.db")
        step1_done = _wait(
            lambda: next((e for e in _events(audit, wf_id) if e.kind == "health" and e.data.get("step") == 0 and e.data.get("healthy")), None),
            "step 1 to pass its health check",
        )
        frozen = _wait(lambda: next((e for e in _events(audit, wf_id) if e.kind == "brake" and e.message.startswith("frozen before step 2")), None),
                       "the run to freeze before step 2")
        assert (frozen.written_at - step1_done.written_at).total_seconds() < 1.0
        assert not _scales(emu, ns)

        # The worker dies and a new one starts: the run stays frozen.
        worker.kill()
        worker.stop()
        worker = WorkerProcess(tmp_path, temporal.address, kubeconfig)
        time.sleep(3)
        assert not _scales(emu, ns)
        status = subprocess.run([*cli, "status", "--state-dir", str(state), "--output", "json"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert wf_id in status.stdout, status.stdout + status.stderr

        out = subprocess.run(
            [*cli, "resume", "--namespace", ns, "--reason", "freeze over", "--as", "U0BOB", "--state-dir", str(state),
             "--playbook-dir", str(tmp_path / "playbooks"), "--temporal-address", temporal.address],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        row = _wait(lambda: (r := audit.latest_run(wf_id)) is not None and r.outcome != "running" and r, "the run to end", timeout=120)
        assert row.outcome == "not_healed", row
        assert len(_scales(emu, ns)) == 1
        messages = [e.message for e in _events(audit, wf_id) if e.kind == "brake"]
        assert any(m.startswith("resumed at step 2") for m in messages), messages
    finally:
        worker.stop()


def _scales(emu, ns: str) -> list:
    return [r for r in emu.requests("PUT") if r.path.endswith(f"/namespaces/{ns}/deployments/web/scale")]


def _events(audit: AuditStore, wf_id: str):
    row = audit.latest_run(wf_id)
    return audit.events(row.run_id) if row is not None else []
