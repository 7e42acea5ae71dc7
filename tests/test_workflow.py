"""RemediationWorkflow on a real Temporal dev server with the real activities, against the
Kubernetes API emulator over HTTP and a real SQLite audit store.

Each test runs a Worker on its own task queue; timings (health intervals, verification
window, cooldown) are shortened in the playbooks so the real timers stay short.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from remediator.sim.kube import Emulator
from remediator.domain.messages import AlertRef, AlertSignal, RemediationInput, RemediationStatus, TargetRef
from remediator.domain.playbook import Playbook, PlaybookRef
from remediator.app.runtime import build_activities, new_worker
from remediator.domain.runs import workflow_id_for
from workflows.remediation import RemediationWorkflow

CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")


@pytest.fixture
async def worker(client, emulator, audit):
    queue = f"test-{uuid.uuid4()}"
    with ThreadPoolExecutor(16) as pool:
        async with new_worker(client, queue, build_activities(emulator.api_client(), None, None, audit), pool):
            yield queue


def make_alert(status="firing", fingerprint="c0ffee", starts="2026-11-21T05:00:00+00:00", **labels) -> AlertRef:
    return AlertRef(
        fingerprint=fingerprint,
        starts_at=datetime.fromisoformat(starts),
        status=status,
        labels={"alertname": "KubePodCrashLooping", "namespace": "prod", **labels},
    )


def playbook(steps, **extra) -> Playbook:
    return Playbook.model_validate(
        {
            "name": "test-playbook",
            "match": ['alertname="KubePodCrashLooping"'],
            "target": {"kind": "Deployment", "namespace": "prod", "name": "checkout"},
            "steps": steps,
            "verification_window": "3s",
            "cooldown": "0s",
            **extra,
        }
    )


async def start(client, queue, pb: Playbook, alert: AlertRef, target: TargetRef = CHECKOUT):
    return await client.start_workflow(
        RemediationWorkflow.run,
        RemediationInput(target=target, playbook=pb, playbook_ref=PlaybookRef(name=pb.name, path="inline.yaml", sha256="ab" * 32)),
        id=workflow_id_for(target.key) + "-" + uuid.uuid4().hex[:8],
        task_queue=queue,
        start_signal="alert",
        start_signal_args=[AlertSignal(alert=alert, playbook=pb.name, received_at=datetime.now(timezone.utc))],
    )


def patches(emu: Emulator, name: str = "checkout") -> list:
    return [r for r in emu.requests(method="PATCH") if f"/deployments/{name}" in r.path]


async def test_restart_then_alert_resolves_heals(client, worker, emulator, audit):
    pb = playbook([{"name": "restart", "rollout_restart": {}, "health": {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}}])
    emulator.clear_requests()
    alert = make_alert()
    handle = await start(client, worker, pb, alert)
    # Resolved while verifying: the playbook's verification passes on the resolved notification.
    await _wait_phase(handle, "verifying")
    await handle.signal("alert", AlertSignal(alert=alert.model_copy(update={"status": "resolved"}), playbook=pb.name, received_at=datetime.now(timezone.utc)))
    result = await handle.result()
    assert result.outcome == "healed", result.reason
    assert [s.status for s in result.steps] == ["succeeded"]
    sent = patches(emulator)
    assert len(sent) == 1
    assert sent[0].content_type == "application/strategic-merge-patch+json"
    assert "kubectl.kubernetes.io/restartedAt" in sent[0].body["spec"]["template"]["metadata"]["annotations"]

    run = audit.get_run(handle.result_run_id)
    assert run.outcome == "healed"
    kinds = [e.kind for e in audit.events(run.run_id)]
    assert kinds[0] == "run_started"
    for kind in ("alert", "step_intent", "mutation", "health", "outcome"):
        assert kind in kinds
    mutation = next(e for e in audit.events(run.run_id) if e.kind == "mutation")
    assert mutation.data["requests"][0]["method"] == "PATCH"
    assert mutation.data["resource_version_before"] != mutation.data["resource_version_after"]


async def test_repeated_alert_folds_into_running_run(client, worker, emulator, audit):
    pb = playbook([{"name": "restart", "rollout_restart": {}, "health": {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}}])
    alert = make_alert()
    handle = await start(client, worker, pb, alert)
    now = datetime.now(timezone.utc)
    # The same firing twice more (HA peer, repeat) and one new firing for the same target.
    await handle.signal("alert", AlertSignal(alert=alert, playbook=pb.name, received_at=now))
    await handle.signal("alert", AlertSignal(alert=alert, playbook=pb.name, received_at=now))
    other = make_alert(fingerprint="beef", pod="checkout-abc")
    await handle.signal("alert", AlertSignal(alert=other, playbook=pb.name, received_at=now))
    result = await handle.result()
    assert sorted(result.alerts) == sorted([alert.dedup_key, other.dedup_key])
    events = [e for e in audit.events(handle.result_run_id) if e.kind == "alert"]
    assert [e.data["disposition"] for e in events] == ["started", "attached"]
    assert len(patches(emulator)) == 1
    assert result.outcome == "not_healed"  # nobody resolved the alerts within the 3 s window
    assert "still firing" in result.reason


async def test_paused_deployment_is_refused_and_nothing_is_sent(client, worker, emulator, audit):
    from kubernetes import client as k8s

    k8s.AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    emulator.clear_requests()
    pb = playbook([{"name": "restart", "rollout_restart": {}}])
    handle = await start(client, worker, pb, make_alert())
    result = await handle.result()
    assert result.outcome == "refused"
    assert "paused" in result.reason
    assert patches(emulator) == []


async def test_failed_step_rolls_back_this_runs_changes(client, worker, emulator, audit):
    from kubernetes import client as k8s

    apps = k8s.AppsV1Api(emulator.api_client())
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"progressDeadlineSeconds": 1}})
    before = apps.read_namespaced_deployment("checkout", "prod").spec.replicas
    emulator.fault_stall_rollout("prod", "checkout")
    pb = playbook(
        [
            {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
            {
                "name": "restart",
                "rollout_restart": {},
                "health": {"rollout_status": {}, "timeout": "30s", "interval": "200ms"},
                "on_failure": "rollback",
            },
        ]
    )
    handle = await start(client, worker, pb, make_alert())
    result = await handle.result()
    assert result.outcome == "rolled_back", result.reason
    assert "progress deadline" in result.reason
    assert apps.read_namespaced_deployment("checkout", "prod").spec.replicas == before
    # kubectl scale --current-replicas=N --replicas=M: GET then PUT of the Scale object.
    scale_puts = [r.body["spec"]["replicas"] for r in emulator.requests(method="PUT") if r.path.endswith("/scale")]
    assert scale_puts == [before + 1, before]
    undo = [e for e in audit.events(handle.result_run_id) if e.kind == "undo"]
    assert len(undo) == 1


async def test_when_selects_rollback_after_recent_rollout(client, worker, emulator, audit):
    """The shipped KubePodCrashLooping shape: roll back when the Deployment changed recently, else restart."""
    from kubernetes import client as k8s

    apps = k8s.AppsV1Api(emulator.api_client())
    dep = apps.read_namespaced_deployment("checkout", "prod")
    container = dep.spec.template.spec.containers[0].name
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"template": {"spec": {"containers": [{"name": container, "image": "registry.example/checkout:9.9.9"}]}}}})
    emulator.clear_requests()
    pb = playbook(
        [
            {"name": "roll back", "when": {"rollout_within": "30m"}, "rollback": {}, "health": {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}},
            {"name": "restart", "when": {"no_rollout_within": "30m"}, "rollout_restart": {}},
        ]
    )
    handle = await start(client, worker, pb, make_alert())
    result = await handle.result()
    assert [s.status for s in result.steps] == ["succeeded", "skipped"]
    assert "within 30m" in result.steps[1].message
    sent = patches(emulator)
    assert len(sent) == 1 and sent[0].content_type == "application/json-patch+json"
    image = apps.read_namespaced_deployment("checkout", "prod").spec.template.spec.containers[0].image
    assert image == dep.spec.template.spec.containers[0].image


async def test_cooldown_records_new_alerts_and_starts_nothing(client, worker, emulator, audit):
    pb = playbook([{"name": "restart", "rollout_restart": {}}], cooldown="3s", verification_window="1s")
    alert = make_alert()
    handle = await start(client, worker, pb, alert)
    await _wait_phase(handle, "cooldown")
    later = make_alert(fingerprint="c0ffee", starts="2026-11-21T06:00:00+00:00")
    await handle.signal("alert", AlertSignal(alert=later, playbook=pb.name, received_at=datetime.now(timezone.utc)))
    result = await handle.result()
    assert len(patches(emulator)) == 1
    dispositions = [e.data["disposition"] for e in audit.events(handle.result_run_id) if e.kind == "alert"]
    assert dispositions == ["started", "cooldown"]
    assert result.outcome == "not_healed"


async def _wait_phase(handle, phase: str, timeout: float = 30) -> RemediationStatus:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await handle.query("status", result_type=RemediationStatus)
        if status.phase == phase:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"workflow never reached phase {phase}: {status}")


async def test_drain_blocked_by_pdb_times_out_and_rollback_uncordons(client, worker, emulator, audit):
    """A PodDisruptionBudget that allows no disruption: the drain retries evictions until its timeout,
    never deletes a pod, and on_failure: rollback uncordons the node again."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(emulator.api_client())
    node = next(p.spec.node_name for p in core.list_namespaced_pod("prod", label_selector="app=checkout").items)
    policy = k8s.PolicyV1Api(emulator.api_client())
    (pdb,) = policy.list_namespaced_pod_disruption_budget("prod").items
    policy.patch_namespaced_pod_disruption_budget(pdb.metadata.name, "prod", {"spec": {"maxUnavailable": 0}})
    emulator.clear_requests()
    pb = Playbook.model_validate(
        {
            "name": "drain-node",
            "match": ['alertname="KubeNodeNotReady"'],
            "target": {"kind": "Node", "name": node},
            "steps": [{"name": "drain", "drain": {"timeout": "2s"}, "on_failure": "rollback"}],
            "verification_window": "1s",
            "cooldown": "0s",
        }
    )
    target = TargetRef(kind="Node", name=node)
    handle = await start(client, worker, pb, make_alert(alertname="KubeNodeNotReady", node=node), target=target)
    result = await handle.result()
    assert result.outcome == "rolled_back", result.reason
    assert result.steps[0].status == "failed"
    assert emulator.requests(method="DELETE") == []
    evictions = [r for r in emulator.requests(method="POST", path_contains="/eviction") if "/pods/checkout-" in r.path]
    assert evictions and all(r.status == 429 for r in evictions)
    node_patches = [r.body for r in emulator.requests(method="PATCH") if r.path.endswith(f"/nodes/{node}")]
    assert node_patches == [{"spec": {"unschedulable": True}}, {"spec": {"unschedulable": None}}]
    assert not core.read_node(node).spec.unschedulable
