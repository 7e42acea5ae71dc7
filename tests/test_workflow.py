"""RemediationWorkflow on a real Temporal dev server with the real activities, against the
Kubernetes API emulator over HTTP, the Slack Web API emulator and a real SQLite audit store.

Each test runs the ``worker`` fixture (tests/conftest.py: the worker process's Worker on its own
task queue); timings (health intervals, verification window, cooldown) are shortened in the
playbooks so the real timers stay short. A playbook with a ``slack:`` section posts its notices
to the Slack emulator, where the tests read them.
"""

from __future__ import annotations

import itertools

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from kubernetes import client as k8s

from remediator.domain.messages import ApprovalDecision, RemediationStatus, TargetRef
from remediator.sim.kube import Emulator
from remediator.sim.slack import SlackEmulator
from tests.support import (
    SLACK,
    alert,
    alert_signal,
    playbook,
    start_run,
    until,
    wait_phase,
)
from workflows.remediation import RemediationWorkflow

CHECK = {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}
ONCALL = "<!subteam^S0ONCALL>"


def patches(emu: Emulator, name: str = "checkout") -> list:
    return [r for r in emu.requests(method="PATCH") if f"/deployments/{name}" in r.path]


def restarts(emu: Emulator) -> list:
    return [r for r in patches(emu) if "restartedAt" in str(r.body)]


def scale_puts(emu: Emulator) -> list[int]:
    return [r.body["spec"]["replicas"] for r in emu.requests(method="PUT") if r.path.endswith("/deployments/checkout/scale")]


def stall_with_progress_deadline(emu: Emulator) -> None:
    """Every rollout of prod/checkout from now on stalls and exceeds its progress deadline (1 s):
    a ``rollout_status`` health check then fails for good (kubectl's ProgressDeadlineExceeded)."""
    k8s.AppsV1Api(emu.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"progressDeadlineSeconds": 1}})
    emu.fault_stall_rollout("prod", "checkout")


def notices(slack: SlackEmulator) -> list[dict]:
    """The run notices in #sre-oncall, oldest first (approval requests left out)."""
    return [
        m for m in slack.messages("sre-oncall")
        if (m.get("metadata") or {}).get("event_type") != "remediator_approval_request"
        and (m.get("metadata") or {}).get("event_payload", {}).get("kind")
    ]


def kind_of(message: dict) -> str:
    return message["metadata"]["event_payload"]["kind"]


# --------------------------------------------------------------------------- outcomes


async def test_restart_then_alert_resolves_heals(client, worker, emulator, audit):
    pb = playbook([{"name": "restart", "rollout_restart": {}, "health": CHECK}])
    emulator.clear_requests()
    first = alert()
    handle = await start_run(client, worker, pb, first)
    # Resolved while verifying: the playbook's verification passes on the resolved notification.
    await wait_phase(handle, "verifying")
    await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
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
    pb = playbook([{"name": "restart", "rollout_restart": {}, "health": CHECK}])
    first = alert()
    handle = await start_run(client, worker, pb, first)
    # The same firing twice more (HA peer, repeat) and one new firing for the same target.
    await handle.signal("alert", alert_signal(first, pb))
    await handle.signal("alert", alert_signal(first, pb))
    other = alert(fingerprint="beef", pod="checkout-abc")
    await handle.signal("alert", alert_signal(other, pb))
    result = await handle.result()
    assert sorted(result.alerts) == sorted([first.dedup_key, other.dedup_key])
    events = [e for e in audit.events(handle.result_run_id) if e.kind == "alert"]
    assert [e.data["disposition"] for e in events] == ["started", "attached"]
    assert len(patches(emulator)) == 1
    assert result.outcome == "not_healed"  # nobody resolved the alerts within the 3 s window
    assert "still firing" in result.reason


async def test_paused_deployment_is_refused_and_nothing_is_sent(client, worker, emulator, audit):
    k8s.AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    emulator.clear_requests()
    pb = playbook([{"name": "restart", "rollout_restart": {}}])
    handle = await start_run(client, worker, pb)
    result = await handle.result()
    assert result.outcome == "refused"
    assert "paused" in result.reason
    assert patches(emulator) == []


async def test_cooldown_records_new_alerts_and_starts_nothing(client, worker, emulator, audit):
    pb = playbook([{"name": "restart", "rollout_restart": {}}], cooldown="3s", verification_window="1s")
    handle = await start_run(client, worker, pb)
    await wait_phase(handle, "cooldown")
    later = alert(fingerprint="c0ffee", starts="2026-11-21T06:00:00+00:00")
    await handle.signal("alert", alert_signal(later, pb))
    result = await handle.result()
    assert len(patches(emulator)) == 1
    dispositions = [e.data["disposition"] for e in audit.events(handle.result_run_id) if e.kind == "alert"]
    assert dispositions == ["started", "cooling_down"]
    assert result.outcome == "not_healed"


# --------------------------------------------------------------------------- failures: retries, on_failure


async def test_failed_step_rolls_back_this_runs_changes(client, worker, emulator, audit):
    apps = k8s.AppsV1Api(emulator.api_client())
    before = apps.read_namespaced_deployment("checkout", "prod").spec.replicas
    stall_with_progress_deadline(emulator)
    pb = playbook(
        [
            {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
            {"name": "restart", "rollout_restart": {}, "health": {**CHECK, "timeout": "30s"}, "on_failure": "rollback"},
        ]
    )
    handle = await start_run(client, worker, pb)
    result = await handle.result()
    assert result.outcome == "rolled_back", result.reason
    assert "progress deadline" in result.reason
    assert apps.read_namespaced_deployment("checkout", "prod").spec.replicas == before
    # kubectl scale --current-replicas=N --replicas=M: GET then PUT of the Scale object.
    assert scale_puts(emulator) == [before + 1, before]
    undo = [e for e in audit.events(handle.result_run_id) if e.kind == "undo"]
    assert len(undo) == 1


async def test_step_retries_run_action_and_check_again_then_on_failure_stop_ends_the_run(client, worker, emulator, audit):
    stall_with_progress_deadline(emulator)
    emulator.clear_requests()
    pb = playbook(
        [
            {"name": "restart", "rollout_restart": {}, "health": CHECK, "retries": 1, "on_failure": "stop"},
            {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
        ]
    )
    handle = await start_run(client, worker, pb)
    result = await handle.result()

    assert result.outcome == "failed", result.reason
    assert result.reason == 'step 1 (restart) failed: deployment "checkout" exceeded its progress deadline'
    assert [(s.status, s.attempts) for s in result.steps] == [("failed", 2), ("pending", 0)]
    # The action ran once per attempt (two restarts, each with its own restartedAt), the check after each.
    sent = restarts(emulator)
    assert len(sent) == 2
    stamps = [r.body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] for r in sent]
    assert stamps[0] != stamps[1]
    events = audit.events(handle.result_run_id)
    assert [(e.data["attempt"], e.data["healthy"]) for e in events if e.kind == "health"] == [(1, False), (2, False)]
    assert [e.data["attempt"] for e in events if e.kind == "mutation"] == [1, 2]
    assert any(e.kind == "decision" and e.message.endswith("; retrying") for e in events)
    # on_failure: stop -- the next step never ran.
    assert scale_puts(emulator) == []


async def test_when_selects_rollback_after_recent_rollout(client, worker, emulator, audit):
    """The shipped KubePodCrashLooping shape: roll back when the Deployment changed recently, else restart."""
    apps = k8s.AppsV1Api(emulator.api_client())
    dep = apps.read_namespaced_deployment("checkout", "prod")
    container = dep.spec.template.spec.containers[0].name
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"template": {"spec": {"containers": [{"name": container, "image": "registry.example/checkout:9.9.9"}]}}}})
    emulator.clear_requests()
    pb = playbook(
        [
            {"name": "roll back", "when": {"rollout_within": "30m"}, "rollback": {}, "health": CHECK},
            {"name": "restart", "when": {"no_rollout_within": "30m"}, "rollout_restart": {}},
        ]
    )
    handle = await start_run(client, worker, pb)
    result = await handle.result()
    assert [s.status for s in result.steps] == ["succeeded", "skipped"]
    assert "within 30m" in result.steps[1].message
    sent = patches(emulator)
    assert len(sent) == 1 and sent[0].content_type == "application/json-patch+json"
    image = apps.read_namespaced_deployment("checkout", "prod").spec.template.spec.containers[0].image
    assert image == dep.spec.template.spec.containers[0].image


async def test_drain_blocked_by_pdb_times_out_and_rollback_uncordons(client, worker, emulator, audit):
    """A PodDisruptionBudget that allows no disruption: the drain retries evictions until its timeout,
    never deletes a pod, and on_failure: rollback uncordons the node again."""
    core = k8s.CoreV1Api(emulator.api_client())
    node = next(p.spec.node_name for p in core.list_namespaced_pod("prod", label_selector="app=checkout").items)
    policy = k8s.PolicyV1Api(emulator.api_client())
    (pdb,) = policy.list_namespaced_pod_disruption_budget("prod").items
    policy.patch_namespaced_pod_disruption_budget(pdb.metadata.name, "prod", {"spec": {"maxUnavailable": 0}})
    emulator.clear_requests()
    pb = playbook(
        [{"name": "drain", "drain": {"timeout": "2s"}, "on_failure": "rollback"}],
        name="drain-node", target={"kind": "Node", "name": node}, match=['alertname="KubeNodeNotReady"'],
        verification_window="1s",
    )
    target = TargetRef(kind="Node", name=node)
    handle = await start_run(client, worker, pb, alert(alertname="KubeNodeNotReady", node=node), target=target)
    result = await handle.result()
    assert result.outcome == "rolled_back", result.reason
    assert result.steps[0].status == "failed"
    assert emulator.requests(method="DELETE") == []
    evictions = [r for r in emulator.requests(method="POST", path_contains="/eviction") if "/pods/checkout-" in r.path]
    assert evictions and all(r.status == 429 for r in evictions)
    node_patches = [r.body for r in emulator.requests(method="PATCH") if r.path.endswith(f"/nodes/{node}")]
    assert node_patches == [{"spec": {"unschedulable": True}}, {"spec": {"unschedulable": None}}]
    assert not core.read_node(node).spec.unschedulable


# --------------------------------------------------------------------------- Kubernetes API errors


async def test_temporary_api_errors_are_retried_with_backoff_doubling_from_1s(client, worker, emulator, audit):
    """503 twice on the restart's PATCH: the activity is retried by Temporal (KUBE_RETRY: 1 s,
    then 2 s) and the third attempt lands; one restart reaches the object."""
    emulator.fault_api_error("PATCH", r"/deployments/checkout$", 503, count=2)
    emulator.clear_requests()
    handle = await start_run(client, worker, playbook([{"name": "restart", "rollout_restart": {}}], verification_window="1s"))
    result = await handle.result()

    assert result.steps[0].status == "succeeded", result.steps[0].message
    attempts = patches(emulator)
    assert [r.status for r in attempts] == [503, 503, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps
    assert len(restarts(emulator)) == 3 and [r for r in attempts if r.status == 200] == attempts[2:]
    mutation = next(e for e in audit.events(handle.result_run_id) if e.kind == "mutation")
    assert mutation.data["changed"] and not mutation.data["already_applied"]


@pytest.mark.parametrize(("status", "reason"), [(400, "Bad Request"), (401, "Unauthorized")])
async def test_permanent_api_errors_fail_the_step_at_once(client, worker, emulator, status, reason):
    emulator.fault_api_error("PATCH", r"/deployments/checkout$", status, count=5)
    emulator.clear_requests()
    handle = await start_run(client, worker, playbook([{"name": "restart", "rollout_restart": {}}]))
    result = await handle.result()

    assert result.outcome == "failed"
    assert result.reason.startswith(f"step 1 (restart) failed: PATCH deployment/prod/checkout: {status} {reason}")
    assert [r.status for r in patches(emulator)] == [status]  # not retried


# --------------------------------------------------------------------------- on_resolved


@pytest.mark.parametrize("on_resolved", ["stop", "continue"])
async def test_resolved_before_the_remaining_steps(client, worker, emulator, audit, on_resolved):
    """The alert resolves while step 1 checks its health: ``on_resolved: stop`` skips step 2 and
    the run ends ``resolved``; ``continue`` runs it and verification finds the alert resolved."""
    pb = playbook(
        [
            {"name": "restart", "rollout_restart": {}, "health": {"alert_resolved": {}, "timeout": "30s", "interval": "5s"}},
            {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
        ],
        on_resolved=on_resolved,
    )
    first = alert()
    handle = await start_run(client, worker, pb, first)
    await until(lambda: restarts(emulator), "the restart of step 1")
    await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
    result = await handle.result()

    assert result.steps[0].status == "succeeded"
    assert result.steps[0].message == "resolved notification received"
    if on_resolved == "stop":
        assert result.outcome == "resolved"
        assert result.reason == "the alert resolved before the remaining steps ran"
        assert result.steps[1].status == "skipped"
        assert scale_puts(emulator) == []
    else:
        assert result.outcome == "healed", result.reason
        assert result.steps[1].status == "succeeded"
        assert scale_puts(emulator) == [4]


async def test_resolved_while_waiting_for_approval_ends_the_wait_and_nothing_runs(client, worker, emulator, slack):
    pb = playbook(
        [
            {"name": "restart", "approval": "always", "rollout_restart": {}},
            {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
        ],
        slack=SLACK,
    )
    first = alert()
    handle = await start_run(client, worker, pb, first)
    status = await until(lambda: _waiting(handle), "the approval request")
    await until(lambda: slack.recorded("chat.postMessage"), "the approval message in Slack")
    await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
    result = await handle.result()
    assert result.outcome == "resolved", result.reason
    assert result.reason == "the alert resolved while a step waited for approval; nothing ran"
    assert [s.status for s in result.steps] == ["skipped", "skipped"]
    assert restarts(emulator) == [] and scale_puts(emulator) == []
    # A click after that changes nothing: the run is over.
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await handle.execute_update(
            RemediationWorkflow.decide,
            ApprovalDecision(request_id=status.waiting.request_id, decision="approve", user_id="U0BOB", via="cli"),
        )
    updates = [c.params for c in slack.recorded("chat.update")]
    assert any("resolved before a decision; nothing ran" in str(u) for u in updates)


async def _waiting(handle) -> RemediationStatus | None:
    status = await handle.query("status", result_type=RemediationStatus)
    return status if status.waiting is not None else None


# --------------------------------------------------------------------------- notices in Slack


async def test_notices_for_a_failed_check_not_healed_and_refused_reach_the_targets_thread(client, worker, emulator, slack, audit):
    """Run 1: step 1's health check fails and ``on_failure: continue`` posts a notice while the
    run goes on; step 2 runs; the alert never resolves: a ``not_healed`` notice. Run 2 on the same
    Deployment, now paused: refused for safety, a ``refused`` notice. All three fold into one
    thread for the target; the outcomes that need a person mention the on-call group."""
    stall_with_progress_deadline(emulator)
    emulator.clear_requests()
    pb = playbook(
        [
            {"name": "restart", "rollout_restart": {}, "health": CHECK, "on_failure": "continue"},
            {"name": "scale up", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 10}},
        ],
        slack=SLACK, verification_window="1s",
    )
    handle = await start_run(client, worker, pb)
    result = await handle.result()
    assert result.outcome == "not_healed", result.reason
    assert [s.status for s in result.steps] == ["failed", "succeeded"]

    failed, not_healed = await until(lambda: len(notices(slack)) == 2 and notices(slack), "two notices")
    assert [kind_of(m) for m in (failed, not_healed)] == ["health_failed", "not_healed"]
    assert failed["text"] == (
        "step 1 (restart) of test-playbook on deployment/prod/checkout failed: "
        'deployment "checkout" exceeded its progress deadline (on_failure: continue) (deployment/prod/checkout)'
    )
    # Posted mid-run: before step 2 sent its change, as the audit trail also records.
    [scale] = [r for r in emulator.requests(method="PUT") if r.path.endswith("/scale")]
    assert float(failed["ts"]) < scale.at
    events = audit.events(handle.result_run_id)
    seq = {e.key: i for i, e in enumerate(events)}
    notice = next(e for e in events if e.kind == "notice" and e.data["notice_kind"] == "health_failed")
    step2 = next(e for e in events if e.kind == "mutation" and e.data.get("step") == 1)
    assert seq[notice.key] < seq[step2.key] and notice.data["ts"] == failed["ts"]
    assert not_healed["text"] == (
        f"{ONCALL} deployment/prod/checkout is not healed: the alert was still firing 1s after the last step "
        "(deployment/prod/checkout)"
    )

    k8s.AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    second = await start_run(client, worker, playbook([{"name": "restart", "rollout_restart": {}}], slack=SLACK))
    assert (await second.result()).outcome == "refused"
    *_, refused = await until(lambda: len(notices(slack)) == 3 and notices(slack), "the refused notice")
    assert kind_of(refused) == "refused"
    assert refused["text"].startswith(
        f"{ONCALL} remediation of deployment/prod/checkout with playbook test-playbook ended refused: "
        "step 1 (restart) refused: "
    )
    assert "paused" in refused["text"]
    # One thread per target: the first notice starts it, every later one (any run) replies in it.
    assert "thread_ts" not in failed or failed["thread_ts"] == failed["ts"]
    assert [m.get("thread_ts") for m in (not_healed, refused)] == [failed["ts"], failed["ts"]]
    assert [m["metadata"]["event_payload"]["target"] for m in notices(slack)] == ["deployment/prod/checkout"] * 3
