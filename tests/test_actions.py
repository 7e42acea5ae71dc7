"""The Kubernetes actions (activities.kube) and the client/error layer (remediator.k8s),
against the Kubernetes API emulator over HTTP.

Where kubectl can do the same thing, the pinned kubectl (tests.support.KUBECTL, the version
named by remediator.k8s.kubectl.KUBECTL_VERSION) runs against a second emulator
seeded identically and the mutating requests both received are compared (method, path,
content type, JSON body). Activities run inside Temporal's ActivityEnvironment, as under a
worker: ``plan_mutation`` first, then the action with the plan, and again with the same plan
for a retry.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from datetime import datetime, timezone
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, PolicyV1Api
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube import KubeActivities
from remediator.k8s.errors import SafetyRefusal
from remediator.k8s.kubectl import deployment_revision, rfc3339, rollout_template_sha256
from remediator.sim.kube import Emulator
from remediator.domain.errors import NON_RETRYABLE_KUBE as NON_RETRYABLE_ERROR_TYPES
from remediator.k8s.client import KubeClient, KubeConfigError, load_api_client
from tests.support import KUBECTL
from remediator.domain.messages import (
    DescribeTargetInput,
    MutationInput,
    MutationPlan,
    MutationPlanInput,
    MutationResult,
    TargetRef,
)

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")
ORDERS_DB = TargetRef(kind="StatefulSet", namespace="prod", name="orders-db")
WORKER_1 = TargetRef(kind="Node", name="worker-1")
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def kubectl_emulator(tmp_path):
    """A second emulator seeded like ``emulator``, and a function running kubectl against it."""
    emu = Emulator().start()
    emu.seed_demo()
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60
        )

    emu.kubectl = kubectl
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kube(emulator):
    return KubeActivities(KubeClient(emulator.api_client()), eviction_retry_delay=0.2, delete_poll_interval=0.05)


def run(fn, arg, *, heartbeat_details: list[Any] | None = None, attempt: int = 1):
    """Run an activity in an ActivityEnvironment; returns (result, heartbeats)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_details=heartbeat_details or [], attempt=attempt)
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.extend(details)
    return env.run(fn, arg), beats


def mutation(target: TargetRef, request_id: str = "run-1/step-0", **params: Any) -> MutationInput:
    """The input a run started before plans existed sends: the activity plans by itself."""
    return MutationInput(target=target, params=params, request_id=request_id, now=NOW)


def plan(kube: KubeActivities, target: TargetRef, action: str, **params: Any) -> MutationPlan:
    """``plan_mutation``, as the workflow calls it before the action."""
    result, _ = run(kube.plan_mutation, MutationPlanInput(target=target, action=action, params=params, now=NOW))
    return result


def apply(kube: KubeActivities, planned: MutationPlan, attempt: int = 1) -> MutationResult:
    """The action's activity with the plan; ``attempt`` > 1 is a retry of the same input."""
    result, _ = run(getattr(kube, planned.action), MutationInput(target=planned.target, plan=planned), attempt=attempt)
    return result


def _drop_null_creation_timestamps(value: Any) -> Any:
    # Go encodes an unset metav1.Time as "creationTimestamp": null; the official Python
    # client's models omit it. The API server reads both as "unset".
    if isinstance(value, dict):
        return {
            k: _drop_null_creation_timestamps(v)
            for k, v in value.items()
            if not (k == "creationTimestamp" and v is None)
        }
    if isinstance(value, list):
        return [_drop_null_creation_timestamps(v) for v in value]
    return value


def sent(emu: Emulator, *, strip_null_timestamps: bool = False) -> list[tuple[str, str, str | None, Any]]:
    """The mutating requests the emulator received: (method, path, content type, body)."""
    out = []
    for r in emu.requests():
        if r.method in MUTATING:
            body = _drop_null_creation_timestamps(r.body) if strip_null_timestamps else r.body
            out.append((r.method, r.path, (r.content_type or "").split(";")[0] or None, body))
    return out


def recorded(result) -> list[tuple[str, str, str | None, Any]]:
    return [(r.method, r.path, r.content_type, r.body) for r in result.requests]


# --------------------------------------------------------------------------- rollout_restart


def test_rollout_restart_sends_kubectls_patch(emulator, kubectl_emulator, kube):
    emulator.clear_requests()
    kubectl_emulator.clear_requests()

    result, _ = run(kube.rollout_restart, mutation(CHECKOUT))
    out = kubectl_emulator.kubectl("-n", "prod", "rollout", "restart", "deployment/checkout")
    assert out.returncode == 0, out.stderr

    ours, theirs = sent(emulator), sent(kubectl_emulator)
    assert len(ours) == len(theirs) == 1
    # kubectl stamps time.Now(); ours stamps the workflow's time. Same shape, same format.
    kubectl_value = theirs[0][3]["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert kubectl_value == rfc3339(datetime.fromisoformat(kubectl_value))
    expected = (
        "PATCH",
        "/apis/apps/v1/namespaces/prod/deployments/checkout",
        "application/strategic-merge-patch+json",
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-03-14T09:26:53Z"}}}}},
    )
    assert ours == [expected]
    assert theirs[0][:3] == expected[:3]
    assert recorded(result) == [expected]
    assert result.changed and result.undo is None
    assert result.state_before["restartedAt"] is None
    assert result.state_after["restartedAt"] == "2025-03-14T09:26:53Z"
    assert int(result.resource_version_after) > int(result.resource_version_before)


def test_rollout_restart_retry_sends_nothing(emulator, kube):
    run(kube.rollout_restart, mutation(CHECKOUT))
    emulator.clear_requests()
    result, _ = run(kube.rollout_restart, mutation(CHECKOUT))
    assert sent(emulator) == []
    assert not result.changed and result.requests == []
    assert result.message == "deployment/prod/checkout already restarted at 2025-03-14T09:26:53Z"


def test_rollout_restart_refuses_paused_deployment_like_kubectl(emulator, kubectl_emulator, kube):
    AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    assert kubectl_emulator.kubectl("-n", "prod", "rollout", "pause", "deployment/checkout").returncode == 0
    emulator.clear_requests()

    with pytest.raises(ApplicationError) as info:
        run(kube.rollout_restart, mutation(CHECKOUT))
    assert info.value.type == "SafetyRefusal" and info.value.non_retryable
    assert info.value.message == "can't restart paused deployment (run rollout resume first)"
    assert sent(emulator) == []

    out = kubectl_emulator.kubectl("-n", "prod", "rollout", "restart", "deployment/checkout")
    assert out.returncode != 0
    assert "can't restart paused deployment (run rollout resume first)" in out.stderr


# --------------------------------------------------------------------------- scale


def _scale_put(request: tuple) -> tuple:
    """A PUT of the Scale object, without what two emulators seeded alike still differ in."""
    method, path, content_type, body = request
    meta = {k: v for k, v in body["metadata"].items() if k not in ("uid", "creationTimestamp")}
    return method, path, content_type, {**body, "metadata": meta}


def test_scale_sends_what_kubectl_scale_with_current_replicas_sends(emulator, kubectl_emulator, kube):
    emulator.clear_requests()
    kubectl_emulator.clear_requests()
    planned = plan(kube, CHECKOUT, "scale", replicas=5, min_replicas=1, max_replicas=10)
    assert planned.change == {"replicas": 5} and planned.precondition == {"replicas": 3}
    assert planned.message == (
        "scale deployment/prod/checkout from 3 to 5 replicas (kubectl scale --current-replicas=3 --replicas=5)"
    )
    assert sent(emulator) == []  # planning only reads
    result = apply(kube, planned)
    out = kubectl_emulator.kubectl("-n", "prod", "scale", "deployment/checkout", "--current-replicas=3", "--replicas=5")
    assert out.returncode == 0, out.stderr

    # kubectl's scaler with a precondition (pkg/scale/scale.go ScaleSimple): GET the Scale, then
    # PUT it back with the new replicas; its resourceVersion makes the write conditional.
    [ours], [theirs] = sent(emulator), sent(kubectl_emulator)
    assert _scale_put(ours) == _scale_put(theirs)
    assert ours[:3] == ("PUT", "/apis/apps/v1/namespaces/prod/deployments/checkout/scale", None)
    assert ours[3]["spec"] == {"replicas": 5} and ours[3]["metadata"]["resourceVersion"]
    assert [r.path for r in emulator.requests("GET")][-1].endswith("/deployments/checkout/scale")
    assert recorded(result) == [ours]
    assert result.message == "deployment.apps/checkout scaled from 3 to 5"
    assert result.state_before == {"replicas": 3} and result.state_after == {"replicas": 5}
    assert result.undo.action == "scale" and result.undo.params.replicas == 3
    assert emulator.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 5


def test_scale_delta_is_clamped_and_says_so(emulator, kube):
    emulator.clear_requests()
    planned = plan(kube, CHECKOUT, "scale", delta=4, min_replicas=1, max_replicas=5)
    assert planned.change == {"replicas": 5}
    assert "(clamped from 7 to max_replicas 5)" in planned.message
    apply(kube, planned)
    assert sent(emulator)[0][3]["spec"] == {"replicas": 5}


def test_scale_already_at_target_sends_nothing(emulator, kube):
    emulator.clear_requests()
    planned = plan(kube, CHECKOUT, "scale", replicas=3, min_replicas=1, max_replicas=5)
    assert planned.noop and planned.message == "deployment/prod/checkout already at 3 replicas"
    result = apply(kube, planned)
    assert not result.changed and sent(emulator) == [] and result.undo is None


def test_scale_retry_never_applies_a_delta_twice(emulator, kube):
    planned = plan(kube, CHECKOUT, "scale", delta=1, min_replicas=1, max_replicas=10)
    first = apply(kube, planned)
    assert first.state_after == {"replicas": 4} and not first.already_applied
    emulator.clear_requests()
    # The worker died before Temporal heard of the first attempt: the retry gets the same plan.
    again = apply(kube, planned, attempt=2)
    assert [r for r in sent(emulator)] == []
    assert again.changed and again.already_applied and again.state_after == {"replicas": 4}
    assert again.undo.params.replicas == 3
    assert emulator.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 4


def test_scale_refuses_when_the_replicas_changed_since_the_plan(emulator, kube):
    planned = plan(kube, CHECKOUT, "scale", delta=1, min_replicas=1, max_replicas=10)
    AppsV1Api(emulator.api_client()).patch_namespaced_deployment_scale("checkout", "prod", {"spec": {"replicas": 6}})
    emulator.clear_requests()
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned)
    assert info.value.type == "SafetyRefusal" and info.value.non_retryable
    assert "Expected replicas to be 3, was 6" in info.value.message  # kubectl's PreconditionError
    assert sent(emulator) == []
    assert emulator.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 6


def test_scale_statefulset(emulator, kube):
    emulator.clear_requests()
    apply(kube, plan(kube, ORDERS_DB, "scale", replicas=3, min_replicas=1, max_replicas=3))
    [(method, path, _, body)] = sent(emulator)
    assert (method, path, body["spec"]) == ("PUT", "/apis/apps/v1/namespaces/prod/statefulsets/orders-db/scale", {"replicas": 3})


def test_a_run_started_before_plans_existed_still_scales_once(emulator, kube):
    """Runs in flight from before the plan/apply split send params only: the activity plans by
    itself, with the same precondition."""
    emulator.clear_requests()
    result, _ = run(kube.scale, mutation(CHECKOUT, delta=1, min_replicas=1, max_replicas=10))
    assert result.state_after == {"replicas": 4}
    assert [r[0] for r in sent(emulator)] == ["PUT"]


# --------------------------------------------------------------------------- rollback


def test_rollback_sends_kubectls_json_patch(emulator, kubectl_emulator, kube):
    emulator.clear_requests()
    kubectl_emulator.clear_requests()
    result, _ = run(kube.rollback, mutation(CHECKOUT))
    out = kubectl_emulator.kubectl("-n", "prod", "rollout", "undo", "deployment/checkout")
    assert out.returncode == 0, out.stderr

    ours, theirs = sent(emulator), sent(kubectl_emulator)
    assert ours == theirs
    assert len(ours) == 1
    method, path, content_type, body = ours[0]
    assert (method, path, content_type) == (
        "PATCH", "/apis/apps/v1/namespaces/prod/deployments/checkout", "application/json-patch+json"
    )
    assert [op["path"] for op in body] == ["/spec/template", "/metadata/annotations"]
    assert body[0]["value"]["spec"]["containers"][0]["image"] == "registry.example/checkout:1.4.1"
    assert "pod-template-hash" not in body[0]["value"]["metadata"]["labels"]
    assert recorded(result) == ours
    assert result.message == "deployment.apps/checkout rolled back to revision 1"
    assert result.state_before == {"revision": 2}
    assert result.undo.action == "rollback" and result.undo.params.to_revision == 2


def test_rollback_retry_sends_nothing_once_applied(emulator, kube):
    planned = plan(kube, CHECKOUT, "rollback", to_revision=0)
    assert planned.change["revision"] == 1 and planned.precondition["revision"] == 2
    assert planned.requests[0].body == planned.change["patch"]
    first = apply(kube, planned)
    emulator.wait_until(lambda e: e.get("Deployment", "checkout", "prod")["metadata"]["annotations"]
                        ["deployment.kubernetes.io/revision"] == "3")
    emulator.clear_requests()
    # Planning again now would pick revision 2, the bad one: the retry applies the recorded plan.
    again = apply(kube, planned, attempt=2)
    assert sent(emulator) == []
    assert again.changed and again.already_applied
    assert again.message.startswith("deployment/prod/checkout already rolled back to revision 1")
    assert again.undo == first.undo
    image = emulator.get("Deployment", "checkout", "prod")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/checkout:1.4.1"


def test_rollback_plans_carry_template_hashes_that_recognise_a_flip_flop(emulator, kube):
    """Roll back B -> A, then plan a rollback from A: it would roll to B, and its
    to_template_sha256 (B read from its ReplicaSet) is the first plan's from_template_sha256
    (B read from the Deployment): one normalisation wherever the template is read."""
    first = plan(kube, CHECKOUT, "rollback")
    deployment = emulator.get("Deployment", "checkout", "prod")
    b_rs, a_rs = sorted(
        (rs for rs in emulator.list("ReplicaSet", "prod")),
        key=lambda rs: rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], reverse=True,
    )
    assert first.change["from_template_sha256"] == rollout_template_sha256(deployment["spec"]["template"])
    assert first.change["from_template_sha256"] == rollout_template_sha256(b_rs["spec"]["template"])
    assert first.change["to_template_sha256"] == rollout_template_sha256(a_rs["spec"]["template"])
    assert first.change["from_template_sha256"] != first.change["to_template_sha256"]
    assert first.precondition["template_sha256"] == first.change["from_template_sha256"]
    apply(kube, first)
    emulator.wait_until(lambda e: e.get("Deployment", "checkout", "prod")["metadata"]["annotations"]
                        ["deployment.kubernetes.io/revision"] == "3")

    back = plan(kube, CHECKOUT, "rollback")
    assert back.change["revision"] == 2 and not back.noop
    assert back.change["to_template_sha256"] == first.change["from_template_sha256"]
    assert back.change["from_template_sha256"] == first.change["to_template_sha256"]
    # The template the rollback patch wrote hashes as the ReplicaSet's it came from.
    written = emulator.get("Deployment", "checkout", "prod")["spec"]["template"]
    assert rollout_template_sha256(written) == rollout_template_sha256(first.change["patch"][0]["value"])


def test_rollback_refuses_when_the_deployment_changed_since_the_plan(emulator, kube):
    planned = plan(kube, CHECKOUT, "rollback", to_revision=0)
    AppsV1Api(emulator.api_client()).patch_namespaced_deployment(
        "checkout", "prod", {"spec": {"template": {"spec": {"containers": [{"name": "checkout", "image": "registry.example/checkout:1.5.0"}]}}}}
    )
    emulator.wait_until(lambda e: e.get("Deployment", "checkout", "prod")["metadata"]["annotations"]
                        ["deployment.kubernetes.io/revision"] == "3")
    emulator.clear_requests()
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned)
    assert info.value.type == "SafetyRefusal"
    assert "changed since the rollback was planned (revision 2, now 3); nothing sent" in info.value.message
    assert sent(emulator) == []


def test_rollback_skips_when_template_already_matches(emulator, kube):
    emulator.clear_requests()
    result, _ = run(kube.rollback, mutation(CHECKOUT, to_revision=2))
    assert not result.changed and sent(emulator) == []
    assert result.message == "skipped rollback (current template already matches revision 2)"


def test_rollback_refusals_match_kubectl(emulator, kubectl_emulator, kube):
    for emu in (emulator, kubectl_emulator):
        emu.create({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fresh", "namespace": "prod"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "fresh"}},
                     "template": {"metadata": {"labels": {"app": "fresh"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
        })
        emu.wait_until(lambda e: any(
            rs["metadata"]["name"].startswith("fresh-") for rs in e.list("ReplicaSet", "prod")))
    emulator.clear_requests()
    fresh = TargetRef(kind="Deployment", namespace="prod", name="fresh")
    cases = [
        (fresh, {}, 'no rollout history found for deployment "fresh"', ["deployment/fresh"]),
        (CHECKOUT, {"to_revision": 7}, "unable to find specified revision 7 in history",
         ["deployment/checkout", "--to-revision=7"]),
    ]
    for target, params, message, args in cases:
        with pytest.raises(ApplicationError) as info:
            run(kube.rollback, mutation(target, **params))
        assert info.value.type == "SafetyRefusal" and info.value.non_retryable
        assert info.value.message == message
        out = kubectl_emulator.kubectl("-n", "prod", "rollout", "undo", *args)
        assert out.returncode != 0 and message in out.stderr
    assert sent(emulator) == []


def test_rollback_refuses_paused_deployment_like_kubectl(emulator, kubectl_emulator, kube):
    assert kubectl_emulator.kubectl("-n", "prod", "rollout", "pause", "deployment/checkout").returncode == 0
    AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    emulator.clear_requests()
    message = (
        "you cannot rollback a paused deployment; resume it first with "
        "'kubectl rollout resume' and try again"
    )
    with pytest.raises(ApplicationError) as info:
        run(kube.rollback, mutation(CHECKOUT))
    assert info.value.type == "SafetyRefusal" and info.value.message == message
    assert sent(emulator) == []
    out = kubectl_emulator.kubectl("-n", "prod", "rollout", "undo", "deployment/checkout")
    assert out.returncode != 0 and message in out.stderr


# --------------------------------------------------------------------------- cordon / uncordon


def test_cordon_and_uncordon_send_kubectls_patches(emulator, kubectl_emulator, kube):
    emulator.clear_requests()
    kubectl_emulator.clear_requests()
    cordoned, _ = run(kube.cordon, mutation(WORKER_1))
    again, _ = run(kube.cordon, mutation(WORKER_1))
    uncordoned, _ = run(kube.uncordon, mutation(WORKER_1))
    for verb in ("cordon", "cordon", "uncordon"):
        out = kubectl_emulator.kubectl(verb, "worker-1")
        assert out.returncode == 0, out.stderr

    expected = [
        ("PATCH", "/api/v1/nodes/worker-1", "application/strategic-merge-patch+json", {"spec": {"unschedulable": True}}),
        ("PATCH", "/api/v1/nodes/worker-1", "application/strategic-merge-patch+json", {"spec": {"unschedulable": None}}),
    ]
    assert sent(emulator) == sent(kubectl_emulator) == expected
    assert cordoned.changed and cordoned.undo.action == "uncordon"
    assert not again.changed and again.message == "node/worker-1 already cordoned"
    assert uncordoned.changed and uncordoned.state_after == {"unschedulable": False}


# --------------------------------------------------------------------------- drain


def _pods_on(emu: Emulator, node: str) -> list[dict[str, Any]]:
    return [p for p in emu.list("Pod") if (p.get("spec") or {}).get("nodeName") == node]


def test_drain_sends_kubectls_cordon_and_evictions(emulator, kubectl_emulator, kube):
    emulator.clear_requests()
    kubectl_emulator.clear_requests()
    before = {p["metadata"]["uid"] for p in _pods_on(emulator, "worker-1")}
    result, beats = run(kube.drain, mutation(WORKER_1, ignore_daemonsets=True, timeout="30s"))
    out = kubectl_emulator.kubectl("drain", "worker-1", "--ignore-daemonsets", "--timeout=30s")
    assert out.returncode == 0, out.stderr

    ours = sent(emulator, strip_null_timestamps=True)
    theirs = sent(kubectl_emulator, strip_null_timestamps=True)
    assert [r for r in ours if r[0] != "POST"] == [r for r in theirs if r[0] != "POST"] == [
        ("PATCH", "/api/v1/nodes/worker-1", "application/strategic-merge-patch+json", {"spec": {"unschedulable": True}})
    ]

    def evictions(requests):
        # kubectl evicts concurrently; pod names carry random suffixes, so compare shapes.
        return sorted(
            (r[0], r[1].rsplit("/", 3)[0], r[2], json.dumps({**r[3], "metadata": {"namespace": r[3]["metadata"]["namespace"]}}, sort_keys=True))
            for r in requests if r[0] == "POST"
        )

    assert evictions(ours) and evictions(ours) == evictions(theirs)
    for method, path, content_type, body in ours[1:]:
        assert (method, content_type) == ("POST", "application/json")
        assert path == f"/api/v1/namespaces/{body['metadata']['namespace']}/pods/{body['metadata']['name']}/eviction"
        assert body == {"apiVersion": "policy/v1", "kind": "Eviction",
                        "metadata": {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]},
                        "deleteOptions": {}}
    assert [r for r in emulator.requests() if r.method == "DELETE"] == []
    assert recorded(result) == ours
    assert result.changed and result.undo.action == "uncordon"
    assert "ignoring DaemonSet-managed Pods: kube-system/node-exporter-" in result.message
    remaining = {p["metadata"]["uid"] for p in _pods_on(emulator, "worker-1")}
    daemon = {p["metadata"]["uid"] for p in _pods_on(emulator, "worker-1")
              if p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"}
    assert remaining == daemon and before - daemon
    assert beats[-1]["gone"] == beats[-1]["pods"] == len(before - daemon)


def test_drain_retry_after_the_cordon_still_knows_it_cordoned(emulator, kube):
    planned = plan(kube, WORKER_1, "drain", ignore_daemonsets=True, timeout="30s")
    assert planned.precondition == {"unschedulable": False} and planned.undo.action == "uncordon"
    assert [r.method for r in planned.requests][0] == "PATCH" and {r.method for r in planned.requests[1:]} == {"POST"}
    # The first attempt cordoned the node and died before anything else.
    kube._cordon_node(WORKER_1, True)
    emulator.clear_requests()
    result = apply(kube, planned, attempt=2)
    assert not [r for r in sent(emulator) if r[0] == "PATCH"]  # no second cordon
    assert {r[0] for r in sent(emulator)} == {"POST"}
    assert result.changed and result.undo is not None and result.undo.action == "uncordon"


def test_drain_grace_period_goes_into_delete_options(emulator, kube):
    emulator.clear_requests()
    run(kube.drain, mutation(WORKER_1, grace_period_seconds=0, timeout="30s"))
    posts = [r.body for r in emulator.requests("POST")]
    assert posts and all(b["deleteOptions"] == {"gracePeriodSeconds": 0} for b in posts)


@pytest.mark.parametrize(
    ("extra_pod", "params", "message"),
    [
        (
            {"metadata": {"name": "bare", "namespace": "default"},
             "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "busybox"}]}},
            {},
            "cannot delete Pods that declare no controller (use --force to override): default/bare",
        ),
        (
            {"metadata": {"name": "scratch", "namespace": "default"},
             "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "busybox"}],
                      "volumes": [{"name": "tmp", "emptyDir": {}}]}},
            {"force": True},
            "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/scratch",
        ),
        (None, {"ignore_daemonsets": False}, "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "),
    ],
)
def test_drain_refuses_before_sending_anything(emulator, kubectl_emulator, kube, extra_pod, params, message):
    flags = {"force": "--force", "delete_emptydir_data": "--delete-emptydir-data"}
    args = [flags[k] for k, v in params.items() if v and k in flags]
    if params.get("ignore_daemonsets", True):
        args.append("--ignore-daemonsets")
    for emu in (emulator, kubectl_emulator):
        if extra_pod:
            emu.create({"apiVersion": "v1", "kind": "Pod", **extra_pod})
    emulator.clear_requests()
    with pytest.raises(ApplicationError) as info:
        run(kube.drain, mutation(WORKER_1, timeout="10s", **params))
    assert info.value.type == "SafetyRefusal" and info.value.non_retryable
    assert info.value.message.startswith(message)
    assert sent(emulator) == []
    assert emulator.get("Node", "worker-1")["spec"].get("unschedulable") is None

    out = kubectl_emulator.kubectl("drain", "worker-1", "--timeout=10s", *args)
    assert out.returncode != 0 and message in out.stderr


def test_drain_pdb_refusal_times_out_and_never_deletes(emulator, kube):
    PolicyV1Api(emulator.api_client()).patch_namespaced_pod_disruption_budget(
        "checkout", "prod", {"spec": {"maxUnavailable": 0}}
    )
    checkout_pods = [p for p in _pods_on(emulator, "worker-1") if p["metadata"]["labels"].get("app") == "checkout"]
    assert checkout_pods, "the seed puts a checkout pod on worker-1"
    emulator.clear_requests()
    with pytest.raises(ApplicationError) as info:
        run(kube.drain, mutation(WORKER_1, timeout="1s"))
    err = info.value
    assert err.type == "DrainTimeout" and err.non_retryable and "DrainTimeout" in NON_RETRYABLE_ERROR_TYPES
    name = checkout_pods[0]["metadata"]["name"]
    assert err.message == f'error when evicting pods/"{name}" -n "prod": global timeout reached: 1s'
    evictions = emulator.requests("POST", f"/pods/{name}/eviction")
    assert len(evictions) >= 2 and {r.status for r in evictions} == {429}
    assert emulator.requests("DELETE") == []
    details = err.details[0]
    assert details["undo"]["action"] == "uncordon"
    assert details["requests"][0]["body"] == {"spec": {"unschedulable": True}}
    assert emulator.get("Pod", name, "prod") is not None


# --------------------------------------------------------------------------- delete_pod


def test_delete_pod_sends_kubectls_delete_options_plus_uid_precondition(emulator, kubectl_emulator, kube):
    pod = next(p for p in emulator.list("Pod", "prod") if p["metadata"]["name"].startswith("orders-db-0"))
    emulator.clear_requests()
    kubectl_emulator.clear_requests()
    result, _ = run(kube.delete_pod, mutation(ORDERS_DB, pod="orders-db-0", grace_period_seconds=5))
    out = kubectl_emulator.kubectl("-n", "prod", "delete", "pod", "orders-db-0", "--grace-period=5", "--wait=false")
    assert out.returncode == 0, out.stderr

    [ours], [theirs] = sent(emulator), sent(kubectl_emulator)
    assert ours[:3] == theirs[:3] == ("DELETE", "/api/v1/namespaces/prod/pods/orders-db-0", "application/json")
    assert ours[3] == {**theirs[3], "preconditions": {"uid": pod["metadata"]["uid"]}}
    assert theirs[3] == {"gracePeriodSeconds": 5, "propagationPolicy": "Background"}
    assert recorded(result) == [ours]
    assert result.state_before["uid"] == pod["metadata"]["uid"]


def test_delete_pod_retry_never_deletes_the_replacement(emulator, kube):
    planned = plan(kube, ORDERS_DB, "delete_pod", pod="orders-db-0")
    old_uid = planned.precondition["uid"]
    apply(kube, planned)
    emulator.wait_until(lambda e: (e.get("Pod", "orders-db-0", "prod") or {}).get("metadata", {}).get("uid")
                        not in (None, old_uid))
    emulator.clear_requests()
    again = apply(kube, planned, attempt=2)
    assert emulator.requests("DELETE") == []
    assert again.changed and again.already_applied
    assert again.message.startswith(f"pod prod/orders-db-0 with uid {old_uid} already deleted")


def test_delete_pod_refuses_a_pod_of_another_workload(emulator, kube):
    checkout_pod = next(p for p in emulator.list("Pod", "prod") if p["metadata"]["name"].startswith("checkout-"))
    name = checkout_pod["metadata"]["name"]
    emulator.clear_requests()
    with pytest.raises(ApplicationError) as info:
        run(kube.delete_pod, mutation(ORDERS_DB, pod=name))
    assert info.value.type == "SafetyRefusal"
    rs = checkout_pod["metadata"]["ownerReferences"][0]["name"]
    assert info.value.message == (
        f"pod prod/{name} does not belong to statefulset/prod/orders-db: it is controlled by ReplicaSet/{rs}"
    )
    assert sent(emulator) == []
    # And the right owner passes the pod -> ReplicaSet -> Deployment check.
    result, _ = run(kube.delete_pod, mutation(CHECKOUT, pod=name))
    assert result.changed and [r[0] for r in sent(emulator)] == ["DELETE"]


# --------------------------------------------------------------------------- describe_target


def test_describe_target(emulator, kube):
    state, _ = run(kube.describe_target, DescribeTargetInput(target=CHECKOUT))
    rs = next(r for r in emulator.list("ReplicaSet", "prod")
              if r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2")
    assert state.exists and state.revision == 2 and state.replicas == 3 and not state.paused
    assert rfc3339(state.last_rollout) == rs["metadata"]["creationTimestamp"]
    assert state.summary.startswith("deployment prod/checkout: 3/3 ready, revision 2")

    node, _ = run(kube.describe_target, DescribeTargetInput(target=WORKER_1))
    assert node.exists and node.ready is True and node.unschedulable is False
    assert node.summary == "node worker-1: Ready"

    missing, _ = run(kube.describe_target, DescribeTargetInput(target=TargetRef(kind="Node", name="nope")))
    assert not missing.exists and missing.summary == "node/nope not found"


# --------------------------------------------------------------------------- error classification


@pytest.mark.parametrize(
    ("method", "status", "type_", "non_retryable"),
    [
        ("PATCH", 500, "KubeTemporaryError", False),
        ("PATCH", 409, "KubeTemporaryError", False),
        ("PATCH", 429, "KubeTemporaryError", False),
        ("PATCH", 503, "KubeTemporaryError", False),
        ("GET", 404, "KubePermanentError", True),
        ("PATCH", 403, "KubePermanentError", True),
        ("PATCH", 422, "KubePermanentError", True),
    ],
)
def test_api_errors_are_classified(emulator, kube, method, status, type_, non_retryable):
    emulator.fault_api_error(method, r"/deployments/checkout$", status)
    with pytest.raises(ApplicationError) as info:
        run(kube.rollout_restart, mutation(CHECKOUT))
    err = info.value
    assert err.type == type_ and err.non_retryable is non_retryable
    assert (type_ in NON_RETRYABLE_ERROR_TYPES) is non_retryable
    assert err.message.startswith(f"{method if method == 'PATCH' else 'GET'} deployment/prod/checkout: {status} ")
    assert err.__cause__ is not None and getattr(err.__cause__, "status", None) == status
    assert err.details == ({"status": status},)


def test_unreachable_api_server_is_temporary(kube, emulator):
    client = Emulator().api_client()  # never started: port 0
    client.configuration.host = "http://127.0.0.1:9"
    client.configuration.retries = False
    acts = KubeActivities(KubeClient(client))
    with pytest.raises(ApplicationError) as info:
        run(acts.rollout_restart, mutation(CHECKOUT))
    assert info.value.type == "KubeTemporaryError" and not info.value.non_retryable
    assert "cannot reach the Kubernetes API server" in info.value.message


# --------------------------------------------------------------------------- load_api_client


def test_load_api_client_from_kubeconfig(emulator, tmp_path, monkeypatch):
    path = emulator.write_kubeconfig(tmp_path / "config")
    client = load_api_client(str(path), None, None)
    assert client.configuration.host == emulator.url
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert load_api_client(None, "remediator-simulated", None).configuration.host == emulator.url


def test_load_api_client_refuses_without_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubeConfigError, match=r"no kubeconfig file at .*--simulate"):
        load_api_client(None, None, None)
    with pytest.raises(KubeConfigError, match="no kubeconfig file at --kubeconfig /nope"):
        load_api_client("/nope", None, None)
    with pytest.raises(KubeConfigError, match="no in-cluster configuration"):
        load_api_client(None, None, True)


def test_load_api_client_unknown_context(emulator, tmp_path):
    path = emulator.write_kubeconfig(tmp_path / "config")
    with pytest.raises(KubeConfigError, match="context 'staging'"):
        load_api_client(str(path), "staging", None)


# --------------------------------------------------------------------------- fidelity to kubectl


def test_a_replica_set_without_a_revision_annotation_counts_as_revision_0():
    """kubectl deploymentutil.Revision reads a missing annotation as 0, and rollback.go's
    deploymentRevision counts it: it can be the previous revision."""
    def rs(name: str, revision: str | None) -> dict[str, Any]:
        annotations = {} if revision is None else {"deployment.kubernetes.io/revision": revision}
        return {"metadata": {"name": name, "annotations": annotations}}

    history = [rs("old", None), rs("current", "5"), rs("garbled", "x")]
    assert deployment_revision(history, 0, "web")["metadata"]["name"] == "old"
    assert deployment_revision(history, 5, "web")["metadata"]["name"] == "current"
    with pytest.raises(SafetyRefusal, match='no rollout history found for deployment "web"'):
        deployment_revision([rs("only", "3"), rs("garbled", "x")], 0, "web")


def test_a_retried_rollback_checks_spec_paused_again(emulator, kube):
    planned = plan(kube, CHECKOUT, "rollback", to_revision=0)
    AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    emulator.clear_requests()
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned, attempt=2)
    assert info.value.type == "SafetyRefusal" and "cannot rollback a paused deployment" in info.value.message
    assert sent(emulator) == []


def test_scale_writes_back_the_scale_it_read_with_its_resource_version(emulator, kube):
    """Something else changed the Deployment (not its replicas) since the plan: the write is
    conditional on the resourceVersion the apply read, not the plan's, and goes through."""
    planned = plan(kube, CHECKOUT, "scale", delta=1, min_replicas=1, max_replicas=10)
    AppsV1Api(emulator.api_client()).patch_namespaced_deployment("checkout", "prod", {"metadata": {"labels": {"team": "payments"}}})
    current = emulator.get("Deployment", "checkout", "prod")["metadata"]["resourceVersion"]
    assert current != planned.resource_version
    emulator.clear_requests()
    apply(kube, planned)
    [(method, _, _, body)] = sent(emulator)
    assert method == "PUT" and body["metadata"]["resourceVersion"] == current and body["spec"]["replicas"] == 4


def test_a_409_on_the_scale_write_is_retried_not_final(emulator, kube):
    planned = plan(kube, CHECKOUT, "scale", delta=1, min_replicas=1, max_replicas=10)
    emulator.fault_api_error("PUT", r"/deployments/checkout/scale$", 409)
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned)
    assert info.value.type == "KubeTemporaryError" and not info.value.non_retryable
    assert apply(kube, planned, attempt=2).state_after == {"replicas": 4}


def _checkout_pod_on(emu: Emulator, node: str) -> dict[str, Any]:
    return next(p for p in _pods_on(emu, node) if p["metadata"]["labels"].get("app") == "checkout")


def test_a_drain_whose_eviction_fails_otherwise_carries_its_requests_and_undo_and_is_not_retried(emulator, kube):
    """Two PodDisruptionBudgets over one pod: the API server answers the eviction 500 "more than
    one PodDisruptionBudget"; kubectl drain does not retry that, and neither does the activity.
    The failure says what was sent (the cordon) and how to undo it."""
    PolicyV1Api(emulator.api_client()).create_namespaced_pod_disruption_budget("prod", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "checkout-too"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "checkout"}}},
    })
    _checkout_pod_on(emulator, "worker-1")
    planned = plan(kube, WORKER_1, "drain", ignore_daemonsets=True, timeout="30s")
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned)
    err = info.value
    assert err.non_retryable and err.type == "KubePermanentError"
    assert "more than one PodDisruptionBudget" in err.message
    details = err.details[0]
    assert details["undo"]["action"] == "uncordon"
    assert details["requests"][0]["body"] == {"spec": {"unschedulable": True}}


def test_a_drain_that_loses_the_api_server_while_waiting_keeps_its_requests_and_undo(emulator, kube):
    pod = _checkout_pod_on(emulator, "worker-1")
    name = pod["metadata"]["name"]
    planned = plan(kube, WORKER_1, "drain", ignore_daemonsets=True, timeout="30s")

    def fail_the_wait(request) -> None:
        if request.method == "POST" and request.path.endswith(f"/pods/{name}/eviction") and request.status == 201:
            emulator.fault_api_error("GET", rf"/namespaces/prod/pods/{name}$", 503, count=5)

    emulator.on_request(fail_the_wait)
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned)
    err = info.value
    assert not err.non_retryable and err.type == "KubeTemporaryError"
    details = err.details[0]
    assert details["undo"]["action"] == "uncordon"
    assert [r["method"] for r in details["requests"]][0] == "PATCH"
    assert any(r["path"].endswith(f"/pods/{name}/eviction") for r in details["requests"])


def test_drain_treats_only_apps_v1_daemonsets_as_daemonsets(emulator, kube):
    """kubectl filters.go isControllerRefDaemonSet: kind DaemonSet *and* apiVersion apps/v1. A
    pod controlled by a DaemonSet of another API group is an ordinary controlled pod: evicted,
    and no apps/v1 DaemonSet of that name is looked up."""
    emulator.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent-x1", "namespace": "default", "ownerReferences": [{
            "apiVersion": "example.com/v1", "kind": "DaemonSet", "name": "agent", "uid": "0f0e0d0c",
            "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "agent:1"}]},
    })
    emulator.clear_requests()
    planned = plan(kube, WORKER_1, "drain", ignore_daemonsets=True, timeout="30s")
    assert "default/agent-x1" in planned.change["evict"]
    apply(kube, planned)
    assert not emulator.requests("GET", "/daemonsets/agent")
    assert [r for r in sent(emulator) if r[1].endswith("/pods/agent-x1/eviction")]


def test_drain_waits_for_a_deleting_pod_of_a_terminating_namespace(emulator, kube):
    """Its eviction is answered 403 NamespaceTerminating (NamespaceLifecycle admission): for a pod
    already being deleted kubectl drain stops evicting and waits for it to go (drain.go
    evictPods), and so does the activity, instead of failing the drain."""
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})
    emulator.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "leftover", "namespace": "doomed", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "0a0b0c0d", "controller": True}]},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "x:1"}]},
    })
    planned = plan(kube, WORKER_1, "drain", ignore_daemonsets=True, timeout="30s")
    assert "doomed/leftover" in planned.change["evict"]
    api = kube.kube
    api.request("DELETE", "/api/v1/namespaces/doomed")
    emulator.wait_until(lambda e: (e.get("Pod", "leftover", "doomed") or {}).get("metadata", {}).get("deletionTimestamp"))
    result = apply(kube, planned)
    refused = [r for r in emulator.requests("POST", "/pods/leftover/eviction")]
    assert refused and {r.status for r in refused} == {403}
    assert result.changed and "doomed/leftover" in result.message
    assert emulator.get("Pod", "leftover", "doomed") is None
