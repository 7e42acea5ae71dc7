"""Server-side dry run (``dryRun=All``), as ``kubectl --dry-run=server``: every action, and the
emulator answering it as a real API server does.

Each action runs through its activities (``plan_mutation`` with ``dry_run``, then the action
with the plan) inside Temporal's ActivityEnvironment, through the real KubeClient over HTTP to
the Kubernetes API emulator. Each test asserts what reached the API server (the emulator's
request log: every mutating request carries ``dryRun=All``; evictions and deletes also
``dryRun: ["All"]`` in their DeleteOptions) and that nothing changed: the resourceVersion of
every object in the cluster (target, pods, ReplicaSets, nodes, budgets...) and the cluster's
own resourceVersion are the same afterwards. The pinned kubectl (tests.support.KUBECTL) runs
with ``--dry-run=server`` against the same emulator and sends the same requests; a bad
``dryRun`` value gets the API server's own error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from kubernetes.client import PolicyV1Api
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube import KubeActivities
from remediator.domain.messages import MutationInput, MutationPlan, MutationPlanInput, MutationResult, TargetRef
from remediator.k8s.client import KubeClient
from remediator.k8s.kubectl import rfc3339
from remediator.sim.kube import Emulator
from remediator.sim.kube.kinds import BY_KIND
from tests.support import KUBECTL

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")
SUFFIX = " (server dry run)"
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def kube(emulator):
    return KubeActivities(KubeClient(emulator.api_client()), eviction_retry_delay=0.2, delete_poll_interval=0.05)


@pytest.fixture
def kubectl(emulator, tmp_path):
    """Run the pinned kubectl against ``emulator``; returns the CompletedProcess."""
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    def run_kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "--cache-dir", str(tmp_path / "cache"), *args], env=env,
                              capture_output=True, text=True, timeout=60)

    return run_kubectl


def run(fn, arg, attempt: int = 1):
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env.run(fn, arg)


def dry_plan(kube: KubeActivities, target: TargetRef, action: str, **params: Any) -> MutationPlan:
    return run(kube.plan_mutation, MutationPlanInput(target=target, action=action, params=params, now=NOW, dry_run=True))


def apply(kube: KubeActivities, planned: MutationPlan, attempt: int = 1) -> MutationResult:
    return run(getattr(kube, planned.action), MutationInput(target=planned.target, plan=planned), attempt=attempt)


def cluster_versions(emu: Emulator) -> tuple[str, dict[tuple[str, str | None, str, str], str]]:
    """The cluster's resourceVersion and every object's, keyed by kind, namespace, name, uid."""
    with emu.store.lock:
        objects = {
            (kind, o["metadata"].get("namespace"), o["metadata"]["name"], o["metadata"]["uid"]): o["metadata"]["resourceVersion"]
            for kind in BY_KIND for o in emu.list(kind)
        }
        return emu.store.resource_version, objects


def writes(emu: Emulator):
    return [r for r in emu.requests() if r.method in MUTATING]


def assert_all_dry_run(emu: Emulator) -> None:
    """Every mutating request the emulator received carries dryRun=All; evictions and deletes
    also in their DeleteOptions; and every one was accepted."""
    sent = writes(emu)
    assert sent
    for r in sent:
        assert r.query.get("dryRun") == "All", (r.method, r.path, r.query)
        if r.method == "DELETE":
            assert r.body["dryRun"] == ["All"], r.body
        if r.path.endswith("/eviction"):
            assert r.body["deleteOptions"]["dryRun"] == ["All"], r.body
        assert 200 <= r.status < 300, (r.method, r.path, r.status)


def assert_recorded_as_sent(emu: Emulator, result: MutationResult) -> None:
    """The result's requests are those the emulator received, path with its ?dryRun=All."""
    received = [(r.method, f"{r.path}?dryRun={r.query['dryRun']}", r.body) for r in writes(emu)]
    assert sorted(received, key=json.dumps) == sorted(
        ((q.method, q.path, q.body) for q in result.requests), key=json.dumps)
    assert all(q.path.endswith("?dryRun=All") for q in result.requests)


def assert_dry_run_result(result: MutationResult) -> None:
    assert result.dry_run and not result.changed and not result.already_applied
    assert result.message.endswith(SUFFIX) or SUFFIX + ":" in result.message, result.message
    assert result.undo is None
    assert len(result.responses) == len(result.requests) >= 1


def pods_on(emu: Emulator, node: str) -> list[dict[str, Any]]:
    return [p for p in emu.list("Pod") if (p.get("spec") or {}).get("nodeName") == node]


def busy_node(emu: Emulator) -> TargetRef:
    """A node that runs a checkout pod (guarded by the checkout PodDisruptionBudget)."""
    pod = next(p for p in emu.list("Pod", "prod") if p["metadata"]["name"].startswith("checkout-"))
    return TargetRef(kind="Node", name=pod["spec"]["nodeName"])


def checkout_pod(emu: Emulator) -> dict[str, Any]:
    return next(p for p in emu.list("Pod", "prod") if p["metadata"]["name"].startswith("checkout-"))


# --------------------------------------------------------------------------- every action


def test_rollout_restart_dry_run(emulator, kube):
    before = cluster_versions(emulator)
    emulator.clear_requests()
    planned = dry_plan(kube, CHECKOUT, "rollout_restart")
    assert planned.dry_run and [r.path for r in planned.requests] == [
        "/apis/apps/v1/namespaces/prod/deployments/checkout?dryRun=All"]
    result = apply(kube, planned)

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message == "deployment.apps/checkout restarted (server dry run)"
    [answer] = result.responses
    # The server answered the Deployment as the patch would leave it: the template stamped, the
    # generation one up, the resourceVersion unchanged.
    assert answer["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == rfc3339(NOW)
    assert result.state_after == {"restartedAt": rfc3339(NOW), "generation": planned.state_before["generation"] + 1}
    assert result.resource_version_after == result.resource_version_before
    assert cluster_versions(emulator) == before
    assert "kubectl.kubernetes.io/restartedAt" not in (
        emulator.get("Deployment", "checkout", "prod")["spec"]["template"]["metadata"].get("annotations") or {})


def test_scale_dry_run(emulator, kube):
    before = cluster_versions(emulator)
    emulator.clear_requests()
    planned = dry_plan(kube, CHECKOUT, "scale", replicas=5, min_replicas=1, max_replicas=10)
    result = apply(kube, planned)

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message == "deployment.apps/checkout scaled from 3 to 5 (server dry run)"
    assert result.responses[0]["kind"] == "Scale" and result.responses[0]["spec"] == {"replicas": 5}
    assert result.state_after == {"replicas": 5}
    assert cluster_versions(emulator) == before
    assert emulator.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 3


def test_rollback_dry_run(emulator, kube):
    before = cluster_versions(emulator)
    emulator.clear_requests()
    planned = dry_plan(kube, CHECKOUT, "rollback")
    result = apply(kube, planned)

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message == "deployment.apps/checkout rolled back to revision 1 (server dry run)"
    [answer] = result.responses
    assert answer["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/checkout:1.4.1"
    assert result.state_after == {"revision": 2, "template_revision": 1}
    assert cluster_versions(emulator) == before
    current = emulator.get("Deployment", "checkout", "prod")
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/checkout:1.4.2"


def test_cordon_dry_run(emulator, kube):
    node = TargetRef(kind="Node", name="worker-1")
    before = cluster_versions(emulator)
    emulator.clear_requests()
    result = apply(kube, dry_plan(kube, node, "cordon"))

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message == "node/worker-1 cordoned (server dry run)"
    assert result.responses[0]["spec"]["unschedulable"] is True
    assert result.state_after == {"unschedulable": True}
    assert cluster_versions(emulator) == before
    assert not emulator.get("Node", "worker-1").get("spec", {}).get("unschedulable")


def test_uncordon_dry_run(emulator, kube):
    node = TargetRef(kind="Node", name="worker-2")
    run(kube.cordon, MutationInput(target=node, plan=run(kube.plan_mutation, MutationPlanInput(
        target=node, action="cordon", now=NOW))))
    before = cluster_versions(emulator)
    emulator.clear_requests()
    result = apply(kube, dry_plan(kube, node, "uncordon"))

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message == "node/worker-2 uncordoned (server dry run)"
    assert result.state_after == {"unschedulable": False}
    assert cluster_versions(emulator) == before
    assert emulator.get("Node", "worker-2")["spec"]["unschedulable"] is True


def test_drain_dry_run_evicts_nothing_and_does_not_wait(emulator, kube):
    node = busy_node(emulator)
    evictable = sorted(p["metadata"]["name"] for p in pods_on(emulator, node.name)
                       if p["metadata"]["ownerReferences"][0]["kind"] != "DaemonSet")
    before = cluster_versions(emulator)
    emulator.clear_requests()
    planned = dry_plan(kube, node, "drain", ignore_daemonsets=True, timeout="30s")
    assert planned.dry_run and all(r.path.endswith("?dryRun=All") for r in planned.requests)
    assert all(r.body["deleteOptions"] == {"dryRun": ["All"]} for r in planned.requests if r.method == "POST")
    emulator.clear_requests()
    result = apply(kube, planned)

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message.startswith(f"node/{node.name} drained (server dry run): {len(evictable)} pod(s) evicted")
    assert sorted(result.state_after["evicted"]) == evictable and result.state_after["unschedulable"] is True
    # The cordon's answer is the Node; every eviction's a Status Success (201).
    assert result.responses[0]["kind"] == "Node" and result.responses[0]["spec"]["unschedulable"] is True
    assert [r["status"] for r in result.responses[1:]] == ["Success"] * len(evictable)
    # It did not wait for the pods to go (kubectl drain --dry-run=server does not): after the
    # evictions, no pod was read again.
    last_eviction = max(i for i, r in enumerate(emulator.requests()) if r.path.endswith("/eviction"))
    assert not [r for r in emulator.requests()[last_eviction + 1:] if "/pods/" in r.path]
    assert cluster_versions(emulator) == before
    assert sorted(p["metadata"]["name"] for p in pods_on(emulator, node.name)
                  if p["metadata"]["ownerReferences"][0]["kind"] != "DaemonSet") == evictable
    assert not any(p["metadata"].get("deletionTimestamp") for p in emulator.list("Pod"))


def test_drain_dry_run_is_refused_by_a_budget_as_a_real_drain(emulator, kube):
    """The dry-run evictions consult the PodDisruptionBudget: with no disruption allowed each
    gets 429 and is retried until the drain's timeout, as kubectl drain --dry-run=server does."""
    policy = PolicyV1Api(emulator.api_client())
    policy.patch_namespaced_pod_disruption_budget("checkout", "prod", {"spec": {"maxUnavailable": 0}})
    emulator.wait_until(lambda e: (e.get("pdb", "checkout", "prod").get("status") or {}).get("observedGeneration") == 2
                        and e.get("pdb", "checkout", "prod")["status"]["disruptionsAllowed"] == 0)
    node = busy_node(emulator)
    before = cluster_versions(emulator)
    emulator.clear_requests()
    planned = dry_plan(kube, node, "drain", ignore_daemonsets=True, timeout="1s")
    with pytest.raises(ApplicationError) as info:
        apply(kube, planned)
    assert info.value.type == "DrainTimeout" and "global timeout reached: 1s" in info.value.message
    assert info.value.details[0]["undo"] is None  # nothing to undo: nothing changed
    refused = [r for r in emulator.requests("POST") if r.status == 429]
    assert refused and all(r.body["deleteOptions"] == {"dryRun": ["All"]} for r in refused)
    assert cluster_versions(emulator) == before


def test_delete_pod_dry_run(emulator, kube):
    pod = checkout_pod(emulator)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    before = cluster_versions(emulator)
    emulator.clear_requests()
    planned = dry_plan(kube, CHECKOUT, "delete_pod", pod=name)
    assert planned.requests[0].body == {"preconditions": {"uid": uid}, "propagationPolicy": "Background", "dryRun": ["All"]}
    result = apply(kube, planned)

    assert_all_dry_run(emulator)
    assert_recorded_as_sent(emulator, result)
    assert_dry_run_result(result)
    assert result.message == f'pod "{name}" deleted from prod namespace (server dry run)'
    [answer] = result.responses
    # The pod as the deletion would mark it: terminating after its grace period (30 s).
    assert answer["metadata"]["uid"] == uid and answer["metadata"]["deletionGracePeriodSeconds"] == 30
    assert answer["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]
    assert result.state_after["deletionTimestamp"] == answer["metadata"]["deletionTimestamp"]
    assert cluster_versions(emulator) == before
    assert emulator.get("Pod", name, "prod")["metadata"]["uid"] == uid
    assert "deletionTimestamp" not in emulator.get("Pod", name, "prod")["metadata"]


def test_a_retried_dry_run_sends_again_and_is_never_taken_for_applied(emulator, kube):
    """Nothing a dry run sends changes anything, so a retry finds the starting point of the
    plan, sends the same dry-run request again and reports it; no "already applied"."""
    planned = dry_plan(kube, CHECKOUT, "scale", delta=1, min_replicas=1, max_replicas=10)
    first = apply(kube, planned)
    emulator.clear_requests()
    second = apply(kube, planned, attempt=2)
    assert_all_dry_run(emulator)
    assert first.requests == second.requests and second.dry_run and not second.already_applied
    assert second.message == "deployment.apps/checkout scaled from 3 to 4 (server dry run)"


def test_a_dry_run_no_op_says_so_as_kubectl(emulator, kube):
    node = TargetRef(kind="Node", name="worker-3")
    run(kube.cordon, MutationInput(target=node, plan=run(kube.plan_mutation, MutationPlanInput(
        target=node, action="cordon", now=NOW))))
    emulator.clear_requests()
    planned = dry_plan(kube, node, "cordon")
    result = apply(kube, planned)
    assert planned.noop and writes(emulator) == []
    assert result.dry_run and not result.changed and result.requests == []
    assert result.message == "node/worker-3 already cordoned (server dry run)"


def test_dry_run_changes_raise_no_watch_event(emulator, kube):
    rv = emulator.store.resource_version
    apply(kube, dry_plan(kube, CHECKOUT, "scale", replicas=6, min_replicas=1, max_replicas=10))
    apply(kube, dry_plan(kube, CHECKOUT, "rollback"))
    watched = httpx.get(f"{emulator.url}/apis/apps/v1/namespaces/prod/deployments",
                        params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}, timeout=10)
    assert watched.status_code == 200 and watched.text == ""


# --------------------------------------------------------------------------- kubectl


def test_kubectl_dry_run_server_changes_nothing_and_sends_what_remediator_sends(emulator, kube, kubectl):
    """kubectl --dry-run=server against the emulator: accepted, nothing changed; and the
    requests are remediator's dry-run requests (kubectl puts dryRun only in the DeleteOptions
    of an eviction or a delete, remediator in the query as well)."""
    node = busy_node(emulator)
    pod = checkout_pod(emulator)["metadata"]["name"]
    before = cluster_versions(emulator)
    cases = [
        (["-n", "prod", "scale", "deployment/checkout", "--current-replicas=3", "--replicas=5"],
         "deployment.apps/checkout scaled (server dry run)",
         (CHECKOUT, "scale", {"replicas": 5, "min_replicas": 1, "max_replicas": 10})),
        (["-n", "prod", "rollout", "undo", "deployment/checkout"], "deployment.apps/checkout rolled back (server dry run)",
         (CHECKOUT, "rollback", {})),
        (["cordon", node.name], f"node/{node.name} cordoned (server dry run)", (node, "cordon", {})),
        (["drain", node.name, "--ignore-daemonsets"], f"node/{node.name} drained (server dry run)",
         (node, "drain", {"ignore_daemonsets": True})),
        (["-n", "prod", "delete", "pod", pod], f'pod "{pod}" deleted from prod namespace (server dry run)',
         (CHECKOUT, "delete_pod", {"pod": pod})),
    ]
    for args, printed, (target, action, params) in cases:
        emulator.clear_requests()
        out = kubectl(*args, "--dry-run=server")
        assert out.returncode == 0, out.stderr
        assert printed in out.stdout
        theirs = writes(emulator)
        for r in theirs:
            dry = r.body.get("dryRun") if r.method == "DELETE" else (
                r.body["deleteOptions"].get("dryRun") if r.path.endswith("/eviction") else [r.query.get("dryRun")])
            assert dry == ["All"], (r.method, r.path, r.query, r.body)
        assert cluster_versions(emulator) == before, args

        emulator.clear_requests()
        apply(kube, dry_plan(kube, target, action, **params))
        ours = writes(emulator)
        assert_all_dry_run(emulator)

        def shape(requests):
            out = []
            for r in requests:
                body = r.body
                if r.method == "DELETE":  # remediator guards its delete with the pod's UID
                    body = {k: v for k, v in body.items() if k != "preconditions"}
                out.append((r.method, r.path, (r.content_type or "").split(";")[0] or None, json.dumps(body, sort_keys=True)))
            return sorted(out)  # kubectl evicts concurrently

        assert shape(ours) == shape(theirs), action
        assert cluster_versions(emulator) == before, action


def test_kubectl_gets_the_api_servers_error_for_a_bad_dry_run_value(emulator, kubectl, tmp_path):
    namespace = tmp_path / "ns.json"
    namespace.write_text(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dry"}}))
    before = cluster_versions(emulator)
    out = kubectl("create", "--raw", "/api/v1/namespaces?dryRun=foo", "-f", str(namespace))
    assert out.returncode != 0
    assert out.stderr.strip() == 'The CreateOptions "" is invalid: dryRun: Unsupported value: []string{"foo"}: supported values: "All"'
    out = kubectl("create", "--raw", "/api/v1/namespaces?dryRun=All", "-f", str(namespace))
    assert out.returncode == 0 and json.loads(out.stdout)["metadata"]["name"] == "dry"
    assert emulator.get("Namespace", "dry") is None
    assert cluster_versions(emulator) == before


# --------------------------------------------------------------------------- the API server's answers


def _invalid(options: str, value: str) -> dict[str, Any]:
    text = f'Unsupported value: []string{{"{value}"}}: supported values: "All"'
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'{options}.meta.k8s.io "" is invalid: dryRun: {text}', "reason": "Invalid", "code": 422,
        "details": {"group": "meta.k8s.io", "kind": options,
                    "causes": [{"reason": "FieldValueNotSupported", "message": text, "field": "dryRun"}]},
    }


def test_an_unsupported_dry_run_value_is_invalid_for_every_write(emulator):
    """ValidateDryRun in each REST handler (k8s.io/apiserver pkg/endpoints/handlers): 422 with
    the options kind of the verb, before the object is even looked up."""
    pod = checkout_pod(emulator)["metadata"]["name"]
    deployments = f"{emulator.url}/apis/apps/v1/namespaces/prod/deployments"
    before = cluster_versions(emulator)
    with httpx.Client(timeout=10) as http:
        answers = {
            "PatchOptions": http.patch(f"{deployments}/checkout", params={"dryRun": "foo"}, json={"spec": {"replicas": 9}},
                                       headers={"Content-Type": "application/merge-patch+json"}),
            "UpdateOptions": http.put(f"{deployments}/checkout/scale", params={"dryRun": "foo"},
                                      json={"spec": {"replicas": 9}}),
            "CreateOptions": http.post(f"{emulator.url}/api/v1/namespaces/prod/pods/{pod}/eviction", params={"dryRun": "foo"},
                                       json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}),
            "DeleteOptions": http.request("DELETE", f"{emulator.url}/api/v1/namespaces/prod/pods/{pod}",
                                          json={"dryRun": ["foo"]}),
        }
        missing = http.patch(f"{deployments}/nothing", params={"dryRun": "foo"}, json={},
                             headers={"Content-Type": "application/merge-patch+json"})
        several = http.request("DELETE", f"{emulator.url}/api/v1/namespaces/prod/pods/{pod}?dryRun=All&dryRun=x")
    for options, answer in answers.items():
        assert (answer.status_code, answer.json()) == (422, _invalid(options, "foo")), options
    assert missing.status_code == 422  # options are validated before the object is read
    assert several.status_code == 422
    assert several.json()["message"] == ('DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: '
                                        '[]string{"All", "x"}: supported values: "All"')
    assert cluster_versions(emulator) == before


def test_the_dry_run_of_an_eviction_must_agree_with_its_request(emulator):
    """eviction.go propagateDryRun: the request's dryRun and the Eviction's deleteOptions.dryRun,
    both set and different, is a plain error, which the handler answers 500 without a reason."""
    pod = checkout_pod(emulator)["metadata"]["name"]
    before = cluster_versions(emulator)
    answer = httpx.post(f"{emulator.url}/api/v1/namespaces/prod/pods/{pod}/eviction", params={"dryRun": "All"}, timeout=10,
                        json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod},
                              "deleteOptions": {"dryRun": ["Other"]}})
    assert answer.status_code == 500
    assert answer.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500,
                             "message": "Non-matching dry-run options in request and content: [All] and [Other]"}
    assert cluster_versions(emulator) == before


def test_a_delete_with_a_body_takes_its_options_from_the_body_only(emulator):
    """handlers/delete.go reads DeleteOptions from the body when there is one and then ignores
    the query: ?dryRun=All beside a body without dryRun deletes for real. That is why a dry-run
    DELETE carries dryRun in its body (as kubectl's does, and remediator's)."""
    pod = checkout_pod(emulator)["metadata"]["name"]
    url = f"{emulator.url}/api/v1/namespaces/prod/pods/{pod}"
    with httpx.Client(timeout=10) as http:
        dry = http.request("DELETE", url, params={"dryRun": "All"})  # no body: the query counts
        assert dry.status_code == 200 and dry.json()["metadata"]["deletionTimestamp"]
        assert "deletionTimestamp" not in emulator.get("Pod", pod, "prod")["metadata"]
        real = http.request("DELETE", url, params={"dryRun": "All"}, json={"propagationPolicy": "Background"})
    assert real.status_code == 200
    assert emulator.get("Pod", pod, "prod")["metadata"]["deletionTimestamp"]
