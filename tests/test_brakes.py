"""The brakes against real components: the real workflow on a real Temporal dev server, every
real activity, the Kubernetes API emulator and the Slack emulator over HTTP, alerts posted to
the real intake as Alertmanager sends them.

* 100 KubeNodeNotReady alerts for 100 nodes with ``unschedulable_nodes: 1``: exactly one node
  is cordoned; every other run is refused, escalated in Slack with the limit and the count;
* 50 Deployment alerts with ``concurrent_remediations: 5``: never more than 5 runs past
  diagnosis at once (read from the emulator's request log), all 50 handled;
* a ``kube-system`` alert is refused at the intake and starts nothing;
* a resolved notification during an approval wait, with ``on_resolved: stop`` and ``rollback``;
* an alert of another playbook for a busy target is queued, then runs after the current run;
* 1,000 distinct firings with 100 KB of annotations each to one run: its history stays
  under 10 MB;
* a rollback that would return to a template an earlier run rolled away from is refused;
* a dry run of a run: ``dryRun=All`` on the wire, nothing changed, outcome ``dry_run``.

The limits' arithmetic is tested alone in tests/test_limits.py; pauses and limits across worker
processes in tests/test_kill_switch.py and tests/test_brakes_processes.py.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from remediator.app.config import Settings
from remediator.app.intake import WEBHOOK_PATH, create_app
from remediator.app.runtime import build_activities, new_worker
from remediator.audit.brakes import Brakes
from remediator.audit.store import AuditStore
from remediator.domain.messages import ApprovalDecision, RemediationStatus, TargetRef
from remediator.domain.policy import Policy
from remediator.domain.runs import workflow_id_for
from remediator.k8s.client import KubeClient
from remediator.playbook.loader import load_directory
from remediator.slack.threads import SlackThreads
from tests.support import SLACK, alert, alert_signal, engine_api_client, playbook, serve, start_run, until, wait_phase

ROOT = Path(__file__).resolve().parent.parent


def policy(**limits: Any) -> Policy:
    """A policy whose only tight limits are ``limits`` (the others far above what a test does)."""
    base: dict[str, Any] = {
        "concurrent_remediations": 1000, "unschedulable_nodes": "100%", "actions": {},
        "per_target": {"max": 1000, "per": "1h"}, "queue_timeout": "15m",
    }
    return Policy.model_validate({"limits": {**base, **limits}, "gitops": "allow"})


@dataclass
class Engine:
    """The worker and intake of one test, as remediator.app.runtime builds them."""

    url: str
    queue: str
    client: Client
    audit: AuditStore
    brakes: Brakes
    http: httpx.AsyncClient

    async def post(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = await self.http.post(WEBHOOK_PATH, json=group(alerts))
        assert resp.status_code == 200, resp.text
        return resp.json()["alerts"]

    def handle(self, target_key: str):
        return self.client.get_workflow_handle(workflow_id_for(target_key))


@contextlib.asynccontextmanager
async def engine(client: Client, emulator: Any, audit: AuditStore, slack_client: Any, tmp_path: Path,
                 pol: Policy, playbooks: dict[str, str]) -> AsyncIterator[Engine]:
    """Worker (every real activity, the brakes of ``pol``, ``playbooks`` loaded from files) and
    intake, on a queue of their own; runs left at the end are terminated."""
    d = tmp_path / "playbooks"
    d.mkdir(exist_ok=True)
    for name, text in playbooks.items():
        (d / f"{name}.yaml").write_text(text)
    loaded = load_directory(d)
    brakes = Brakes(audit, pol)
    activities = build_activities(
        engine_api_client(emulator), None, None, audit, slack_client, SlackThreads(tmp_path / "slack.db"), brakes, loaded
    )
    queue = f"brakes-{uuid.uuid4()}"
    with ThreadPoolExecutor(64) as pool:
        async with new_worker(client, queue, activities, pool):
            app = create_app(Settings(no_auth=True), client, loaded, audit, task_queue=queue, brakes=brakes)
            async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
                try:
                    yield Engine(url, queue, client, audit, brakes, http)
                finally:
                    async for wf in client.list_workflows(f'TaskQueue="{queue}" AND ExecutionStatus="Running"'):
                        with contextlib.suppress(RPCError):
                            await client.get_workflow_handle(wf.id).terminate()


def firing(fingerprint: str, annotations: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    return {
        "status": "firing", "labels": labels, "annotations": annotations or {},
        "startsAt": "2026-12-01T05:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint,
    }


def group(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """An Alertmanager webhook message (version 4) with ``alerts``."""
    return {
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "remediator",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
        "alerts": alerts,
    }


def slack_texts(slack: Any) -> str:
    """Everything remediator sent to Slack (posts and updates), as one JSON text."""
    return json.dumps([c.params for c in slack.recorded("chat.postMessage") + slack.recorded("chat.update")])


def node_playbook() -> str:
    """The shipped node playbook with approvals that expire in seconds."""
    text = (ROOT / "playbooks" / "kube-node-not-ready.yaml").read_text()
    return text.replace("approval_timeout: 10m", "approval_timeout: 1s").replace("approval_deadline: 30m", "approval_deadline: 3s")


# --------------------------------------------------------------------------- limits under bursts


# 100 runs, each reading evidence and asking Slack to exceed the limit: 70-110 s alone on 2 cores,
# several times that beside another test file under xdist. A bound, not an expected duration.
@pytest.mark.timeout(900)
async def test_100_not_ready_nodes_with_a_node_limit_of_1_cordon_exactly_one(
    client, emulator, audit, slack, slack_client, tmp_path
):
    names = [f"burst-{i:03d}" for i in range(100)]
    for name in names:
        emulator.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        emulator.fault_node_not_ready(name)
    total = len(emulator.list("Node"))
    async with engine(client, emulator, audit, slack_client, tmp_path, policy(unschedulable_nodes=1),
                      {"node": node_playbook()}) as eng:
        answers = await eng.post([firing(f"n{i:03d}", alertname="KubeNodeNotReady", node=n) for i, n in enumerate(names)])
        assert [a["disposition"] for a in answers] == ["started"] * 100

        async def ended() -> list:
            rows = [audit.latest_run(workflow_id_for(f"node/{n}")) for n in names]
            return rows if all(r is not None and r.outcome != "running" for r in rows) else None

        rows = await until(ended, "every node run to end", timeout=800)

    cordoned = [n for n in names if emulator.get("Node", n)["spec"].get("unschedulable")]
    assert len(cordoned) == 1, cordoned
    refused = [r for r in rows if r.outcome == "refused"]
    # Every other run was refused by the limit, except a run whose evidence could not be read
    # in time on a loaded machine: its cordon is skipped (fail closed), its drain waits for an
    # approval that expires, and it ends needs_human without a change.
    others = [r for r in rows if r.outcome != "refused" and r.target != f"node/{cordoned[0]}"]
    for row in others:
        assert row.outcome == "needs_human", row.outcome
        assert any(e.message.startswith("step 1 (cordon) skipped") for e in audit.events(row.run_id)), row.run_id
    assert len(refused) + len(others) == 99 and len(refused) >= 80, sorted({r.outcome for r in rows})
    for row in refused:
        assert any(f"would make 2 of {total} nodes unschedulable; limit 1" in e.message for e in audit.events(row.run_id))
    # escalated: each asked in Slack to exceed the limit, naming it and the count
    texts = slack_texts(slack)
    assert texts.count(f"would make 2 of {total} nodes unschedulable; limit 1") >= len(refused)
    assert emulator.requests("PATCH", "/nodes/") and len({r.path for r in emulator.requests("PATCH", "/nodes/")}) == 1


@pytest.mark.timeout(600)  # 50 runs through 5 slots: a bound for a loaded machine, not an expected duration
async def test_50_alerts_never_more_than_5_runs_past_diagnosis(client, emulator, audit, slack_client, tmp_path):
    ns = f"wave-{uuid.uuid4().hex[:6]}"
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    names = [f"app-{i:02d}" for i in range(50)]
    for name in names:
        labels = {"app": name}
        emulator.create({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}},
        })
    restart = f"""
name: restart-wave
match: ['alertname="WaveTest"']
target: {{kind: Deployment, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.deployment }}}}"}}
steps:
  - name: restart
    rollout_restart: {{}}
    health: {{rollout_status: {{}}, timeout: 2m, interval: 300ms}}
verification_window: 1s
cooldown: 0s
"""
    emulator.clear_requests()
    async with engine(client, emulator, audit, slack_client, tmp_path, policy(concurrent_remediations=5),
                      {"restart": restart}) as eng:
        answers = await eng.post([firing(f"w{i:02d}", alertname="WaveTest", namespace=ns, deployment=n) for i, n in enumerate(names)])
        assert [a["disposition"] for a in answers] == ["started"] * 50

        async def ended() -> list:
            rows = [audit.latest_run(workflow_id_for(f"deployment/{ns}/{n}")) for n in names]
            return rows if all(r is not None and r.outcome != "running" for r in rows) else None

        rows = await until(ended, "all 50 runs to end", timeout=500)

    assert {r.outcome for r in rows} == {"not_healed"}, {r.outcome for r in rows}  # restarted; nothing resolves the alert
    # From the request log: a run is past diagnosis from its first change (the restart PATCH)
    # until its last request about its Deployment (the rollout status reads).
    spans = []
    for name in names:
        mine = [r for r in emulator.requests(path_contains=f"/namespaces/{ns}/deployments/{name}")]
        patches = [r.at for r in mine if r.method == "PATCH"]
        assert len(patches) == 1, (name, len(patches))
        spans.append((patches[0], max(r.at for r in mine)))
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert 1 < peak <= 5, peak


async def test_a_kube_system_alert_is_refused_and_starts_nothing(client, emulator, audit, slack_client, tmp_path):
    text = (ROOT / "playbooks" / "kube-deployment-replicas-mismatch.yaml").read_text()
    async with engine(client, emulator, audit, slack_client, tmp_path, Policy(), {"mismatch": text}) as eng:
        answers = await eng.post([firing("ks1", alertname="KubeDeploymentReplicasMismatch", namespace="kube-system",
                                         deployment="dns-autoscaler")])
        assert answers[0]["disposition"] == "refused_namespace"
        assert "namespace kube-system is denied by the policy" in answers[0]["message"]
        with pytest.raises(RPCError):
            await eng.handle("deployment/kube-system/dns-autoscaler").describe()
        metrics = (await eng.http.get("/metrics")).text
        assert 'remediator_brake_refusals_total{limit="namespace"}' in metrics
        assert "remediator_runs_waiting_for_slot 0.0" in metrics and "remediator_paused_scopes 0.0" in metrics
    records = audit.intake_records(kind="refused_namespace")
    assert [r.alertname for r in records] == ["KubeDeploymentReplicasMismatch"]
    assert not emulator.requests("PATCH")


# --------------------------------------------------------------------------- humans and other playbooks


NODE_STEPS = [
    {"name": "cordon", "cordon": {}, "health": {"node_cordoned": {}, "timeout": "20s", "interval": "200ms"}},
    {"name": "drain", "approval": "always", "drain": {"ignore_daemonsets": True, "timeout": "1m"},
     "health": {"node_drained": {}, "timeout": "30s", "interval": "500ms"}},
]


@pytest.mark.parametrize("rule", ["stop", "rollback"])
async def test_resolved_during_an_approval_wait(client, worker, emulator, audit, slack, rule):
    node = TargetRef(kind="Node", name="worker-1")
    pb = playbook(NODE_STEPS, target={"kind": "Node", "name": "worker-1"}, slack=SLACK, on_resolved=rule)
    first = alert()
    handle = await start_run(client, worker, pb, first, target=node)
    await wait_phase(handle, "awaiting_approval")
    await until(lambda: slack.recorded("chat.postMessage"), "the approval message in Slack")
    assert emulator.get("Node", "worker-1")["spec"].get("unschedulable") is True
    await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
    result = await handle.result()

    assert result.outcome == "resolved", result.reason
    assert [s.status for s in result.steps] == ["succeeded", "skipped"]
    assert "resolved before a decision; nothing ran" in slack_texts(slack)
    assert not emulator.requests("POST", "/eviction")
    unschedulable = emulator.get("Node", "worker-1")["spec"].get("unschedulable")
    if rule == "rollback":
        assert not unschedulable
        assert "undone: uncordon" in result.reason or "undone:" in result.reason, result.reason
    else:
        assert unschedulable is True


async def test_an_alert_of_another_playbook_is_queued_and_runs_after(client, emulator, audit, slack, slack_client, tmp_path):
    a = """
name: pb-a
match: ['alertname="AlertA"']
target: {kind: Deployment, namespace: prod, name: checkout}
steps:
  - name: restart-a
    approval: always
    rollout_restart: {}
    health: {rollout_status: {}, timeout: 1m, interval: 300ms}
slack: {channel: "#sre-oncall", approvers: {users: [U0BOB]}, approval_timeout: 5m, approval_deadline: 10m}
verification_window: 1s
cooldown: 0s
"""
    b = """
name: pb-b
match: ['alertname="AlertB"']
target: {kind: Deployment, namespace: prod, name: checkout}
steps:
  - name: scale-b
    scale: {delta: 1, min_replicas: 1, max_replicas: 10}
    health: {rollout_status: {}, timeout: 1m, interval: 300ms}
verification_window: 1s
cooldown: 0s
"""
    async with engine(client, emulator, audit, slack_client, tmp_path, policy(), {"a": a, "b": b}) as eng:
        handle = eng.handle("deployment/prod/checkout")
        assert (await eng.post([firing("fa", alertname="AlertA")]))[0]["disposition"] == "started"
        status = await wait_phase(handle, "awaiting_approval")
        # The intake answers "queued" from the audit trail's row of the running run, which the
        # run writes through an activity: on a loaded machine it can lag the phase.
        await until(lambda: audit.latest_run(handle.id), "the running run's audit row")
        queued = await eng.post([firing("fb", alertname="AlertB")])
        assert queued[0]["disposition"] == "queued", queued
        assert "pb-b runs after it ends" in queued[0]["message"]
        await handle.execute_update(
            "decide",
            ApprovalDecision(request_id=status.waiting.request_id, decision="reject", user_id="U0BOB", via="cli"),
        )

        async def handed_over() -> Any:
            row = audit.latest_run(handle.id)
            return row if row is not None and row.playbook == "pb-b" and row.outcome != "running" else None

        b_run = await until(handed_over, "playbook pb-b to run after pb-a", timeout=120)
    runs = audit.list_runs(target="deployment/prod/checkout")
    assert [r.playbook for r in reversed(runs)][-2:] == ["pb-a", "pb-b"]
    assert runs[1].outcome == "needs_human"
    started = [e for e in audit.events(b_run.run_id) if e.kind == "run_started"][0]
    assert started.data["handed_over_from"] == runs[1].run_id
    assert emulator.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 4  # pb-b scaled 3 -> 4
    assert not [r for r in emulator.requests("PATCH", "/deployments/checkout") if "restartedAt" in json.dumps(r.body)]


# --------------------------------------------------------------------------- history bound


async def test_1000_fat_firings_keep_the_history_under_10_mb(client, emulator, audit, slack, slack_client, tmp_path):
    pb = """
name: fat
match: ['alertname="FatAlert"']
target: {kind: Deployment, namespace: prod, name: checkout}
steps:
  - name: restart
    approval: always
    rollout_restart: {}
slack: {channel: "#sre-oncall", approvers: {users: [U0BOB]}, approval_deadline: 1h}
"""
    fat = {"description": "x" * 100_000, "summary": "y" * 1000}
    async with engine(client, emulator, audit, slack_client, tmp_path, policy(), {"fat": pb}) as eng:
        handle = eng.handle("deployment/prod/checkout")
        await eng.post([firing("f0000", fat, alertname="FatAlert")])
        await wait_phase(handle, "awaiting_approval")
        for start in range(1, 1000, 9):
            batch = [firing(f"f{i:04d}", fat, alertname="FatAlert") for i in range(start, min(start + 9, 1000))]
            answers = await eng.post(batch)
            assert {a["disposition"] for a in answers} == {"attached"}, answers[:1]

        async def folded() -> RemediationStatus | None:
            status = await handle.query("status", result_type=RemediationStatus)
            return status if len(status.alerts) == 1000 else None

        status = await until(folded, "the 1000 firings to be folded in", timeout=120)
        assert status.phase == "awaiting_approval"
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
        size = desc.raw_description.workflow_execution_info.history_size_bytes
        assert size < 10 * 1024 * 1024, size
        print(f"history after 1000 firings of 100 KB: {size / 1e6:.2f} MB, {desc.history_length} events")
    stored = [e for e in audit.events(desc.run_id) if e.kind == "alert"]
    assert len(stored) == 1000
    assert stored[-1].data["alert"]["annotations"]["description"].endswith("[truncated]")


# --------------------------------------------------------------------------- flip-flops and dry runs


async def test_a_rollback_never_returns_to_what_an_earlier_run_rolled_away_from(client, worker, emulator, audit):
    pb = playbook([{"name": "undo", "rollback": {"to_revision": 0},
                    "health": {"rollout_status": {}, "timeout": "1m", "interval": "300ms"}}])
    wf_id = f"{workflow_id_for('deployment/prod/checkout')}-{uuid.uuid4().hex[:8]}"
    first = await start_run(client, worker, pb, alert(fingerprint="ff1"), workflow_id=wf_id)
    one = await first.result()
    assert one.outcome == "not_healed" and one.steps[0].status == "succeeded", one.reason
    before = emulator.get("Deployment", "checkout", "prod")["metadata"]["resourceVersion"]
    emulator.clear_requests()

    second = await start_run(client, worker, pb, alert(fingerprint="ff2"), workflow_id=wf_id)
    two = await second.result()
    assert two.outcome == "refused", two.reason
    assert f"run {first.result_run_id} rolled away" in two.reason
    assert not emulator.requests("PATCH")
    assert emulator.get("Deployment", "checkout", "prod")["metadata"]["resourceVersion"] == before


async def test_a_dry_run_sends_dry_run_all_and_changes_nothing(client, worker, emulator, audit, slack):
    steps = [
        {"name": "scale", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10},
         "health": {"rollout_status": {}, "timeout": "30s", "interval": "300ms"}},
        {"name": "restart", "rollout_restart": {}, "health": {"rollout_status": {}, "timeout": "30s", "interval": "300ms"}},
    ]
    before = emulator.get("Deployment", "checkout", "prod")["metadata"]["resourceVersion"]
    emulator.clear_requests()
    handle = await start_run(client, worker, playbook(steps, slack=SLACK), alert(), dry_run=True)
    result = await handle.result()

    assert result.outcome == "dry_run", result.reason
    writes = [r for r in emulator.requests() if r.method in ("PATCH", "PUT", "POST", "DELETE")]
    assert writes and all(r.query.get("dryRun") == "All" for r in writes), [(r.method, r.path, r.query) for r in writes]
    assert emulator.get("Deployment", "checkout", "prod")["metadata"]["resourceVersion"] == before
    health = [e for e in audit.events(handle.result_run_id) if e.kind == "health"]
    assert health and all("skipped: dry run" in e.message for e in health)
    assert "DRY RUN" in slack_texts(slack)


# --------------------------------------------------------------------------- GitOps


def argo_managed(emulator: Any) -> None:
    KubeClient(emulator.api_client()).patch(
        "Deployment", "checkout", "prod",
        {"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:prod/checkout"}}},
        "application/merge-patch+json",
    )


async def test_gitops_approve_asks_before_a_spec_change_naming_the_owner(client, worker, emulator, audit, slack):
    argo_managed(emulator)
    steps = [{"name": "restart", "rollout_restart": {}}]  # its own policy asks nobody
    handle = await start_run(client, worker, playbook(steps, slack=SLACK), alert(), gitops="approve")
    status = await wait_phase(handle, "awaiting_approval")
    assert status.waiting is not None and status.waiting.gitops == "Argo CD application shop"
    assert "the controller will revert this change unless it is fixed in Git or sync is suspended" in status.waiting.reason
    await until(lambda: slack.recorded("chat.postMessage"), "the approval message")
    assert "Managed by Argo CD application shop" in slack_texts(slack)
    assert not emulator.requests("PATCH", "/deployments/checkout")[1:]  # only the test's own annotation
    await handle.execute_update(
        "decide", ApprovalDecision(request_id=status.waiting.request_id, decision="reject", user_id="U0BOB", via="cli"),
    )
    assert (await handle.result()).outcome == "needs_human"
    described = [e for e in audit.events(handle.result_run_id) if e.kind == "decision" and "managed by" in e.message]
    assert described, "the evidence names the owner"


async def test_gitops_refuse_refuses_a_spec_change(client, worker, emulator, audit):
    argo_managed(emulator)
    emulator.clear_requests()
    steps = [{"name": "scale", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}}]
    handle = await start_run(client, worker, playbook(steps), alert(), gitops="refuse")
    result = await handle.result()
    assert result.outcome == "refused", result.reason
    assert "managed by Argo CD application shop" in result.reason and "gitops: refuse" in result.reason
    assert not emulator.requests("PUT") and not emulator.requests("PATCH")
