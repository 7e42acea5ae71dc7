"""The Kubernetes API emulator, over real HTTP: the official client (typed, strict models),
the pinned kubectl (tests.support.KUBECTL) against a written kubeconfig, the controllers, faults, evictions and /metrics.

Every test gets a fresh emulator seeded with the demo cluster (prod/checkout and friends);
waits go through ``Emulator.wait_until`` (bounded polling), never through sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from remediator.sim.kube import Emulator
from remediator.sim.kube.patch import strategic_merge
from remediator.sim.kube.selectors import parse_label_selector
from remediator.sim.kube.server import Handler
from tests.support import KUBECTL



@pytest.fixture
def emu():
    emulator = Emulator(pod_ready_seconds=0.1, tick_seconds=0.02).start()
    emulator.seed_demo()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def api(emu):
    api_client = emu.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def kubectl(emu, tmp_path):
    """Run kubectl against the emulator; returns the CompletedProcess."""
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([KUBECTL, "--cache-dir", str(tmp_path / "cache"), *args], env=env,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    return run


def checkout_ready(emu: Emulator, replicas: int = 3) -> bool:
    d = emu.get("deployment", "checkout", "prod")
    st = d["status"]
    return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("replicas") == replicas
            and st.get("updatedReplicas") == replicas and st.get("availableReplicas") == replicas)


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


# --------------------------------------------------------------------------- the seed


def test_seed_demo_builds_a_settled_cluster(emu):
    d = emu.get("deploy", "checkout", "prod")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d["status"]["availableReplicas"] == 3
    assert [(c["type"], c["status"], c["reason"]) for c in d["status"]["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable")]
    rss = emu.list("rs", "prod")
    assert sorted((rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], rs["spec"]["replicas"],
                   rs["spec"]["template"]["spec"]["containers"][0]["image"]) for rs in rss) == [
        ("1", 0, "registry.example/checkout:1.4.1"), ("2", 3, "registry.example/checkout:1.4.2")]
    for rs in rss:
        pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
        assert rs["metadata"]["name"] == f"checkout-{pod_hash}"
        assert 8 <= len(pod_hash) <= 10 and set(pod_hash) <= set("bcdfghjklmnpqrstvwxz2456789")
        assert rs["spec"]["selector"]["matchLabels"] == {"app": "checkout", "pod-template-hash": pod_hash}
        assert rs["metadata"]["ownerReferences"] == [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout", "uid": d["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}]
    pods = emu.list("pods", "prod")
    checkout = [p for p in pods if p["metadata"]["labels"].get("app") == "checkout"]
    assert len(checkout) == 3
    assert {p["spec"]["nodeName"] for p in checkout} <= {"worker-1", "worker-2", "worker-3"}
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert sorted(p["metadata"]["name"] for p in pods if p["metadata"]["labels"].get("app") == "orders-db") == [
        "orders-db-0", "orders-db-1"]
    exporters = emu.list("pods", "kube-system")
    assert sorted(p["spec"]["nodeName"] for p in exporters) == ["worker-1", "worker-2", "worker-3"]
    pdb = emu.get("pdb", "checkout", "prod")
    assert {k: pdb["status"][k] for k in ("currentHealthy", "desiredHealthy", "disruptionsAllowed", "expectedPods")} \
        == {"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 3}
    events = {(e["involvedObject"]["kind"], e["reason"]) for e in emu.list("events", "prod")}
    assert {("Deployment", "ScalingReplicaSet"), ("ReplicaSet", "SuccessfulCreate"), ("Pod", "Scheduled")} <= events


# --------------------------------------------------------------------------- official client


def test_typed_client_reads_every_kind(emu, api):
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    assert {n.metadata.name for n in core.list_node().items} == {"worker-1", "worker-2", "worker-3"}
    node = core.read_node("worker-1")
    assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]
    assert {n.metadata.name for n in core.list_namespace().items} >= {"default", "kube-system", "prod"}
    pods = core.list_pod_for_all_namespaces()
    assert len(pods.items) == 8 and int(pods.metadata.resource_version) > 0
    pod = core.read_namespaced_pod(pods.items[-1].metadata.name, pods.items[-1].metadata.namespace)
    assert pod.status.container_statuses[0].ready is True
    assert core.list_event_for_all_namespaces().items
    dep = apps.read_namespaced_deployment("checkout", "prod")
    assert dep.spec.template.spec.containers[0].image == "registry.example/checkout:1.4.2"
    assert dep.status.ready_replicas == 3
    assert len(apps.list_replica_set_for_all_namespaces().items) == 2
    assert apps.read_namespaced_stateful_set("orders-db", "prod").status.ready_replicas == 2
    assert apps.read_namespaced_daemon_set("node-exporter", "kube-system").status.number_ready == 3
    # StatefulSets and DaemonSets keep their template history in ControllerRevisions.
    revisions = apps.list_controller_revision_for_all_namespaces().items
    assert sorted((r.metadata.owner_references[0].kind, r.metadata.owner_references[0].name, r.revision)
                  for r in revisions) == [("DaemonSet", "node-exporter", 1), ("StatefulSet", "orders-db", 1)]
    pdb = policy.read_namespaced_pod_disruption_budget("checkout", "prod")
    assert pdb.status.disruptions_allowed == 1 and pdb.status.conditions[0].type == "DisruptionAllowed"
    assert len(policy.list_pod_disruption_budget_for_all_namespaces().items) == 1
    scale = apps.read_namespaced_deployment_scale("checkout", "prod")
    assert (scale.spec.replicas, scale.status.selector) == (3, "app=checkout")
    version = client.VersionApi(api).get_code()
    assert (version.major, version.minor) == ("1", "32")


def test_not_found_and_already_exists_statuses(emu, api):
    apps = client.AppsV1Api(api)
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("missing", "prod")
    assert exc.value.status == 404
    assert error_body(exc.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "missing" not found', "reason": "NotFound",
        "details": {"name": "missing", "group": "apps", "kind": "deployments"}, "code": 404}
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).read_namespaced_pod("missing", "prod")
    assert error_body(exc.value)["message"] == 'pods "missing" not found'
    body = apps.read_namespaced_deployment("checkout", "prod").to_dict()
    body["metadata"] = {"name": "checkout"}
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment("prod", body)
    assert (exc.value.status, error_body(exc.value)["reason"], error_body(exc.value)["message"]) == (
        409, "AlreadyExists", 'deployments.apps "checkout" already exists')


def new_deployment(name: str, replicas: int = 2, **spec_extra) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "prod", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, **spec_extra,
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": f"registry.example/{name}:1.0"},
                                                      {"name": "sidecar", "image": "registry.example/proxy:2.0"}]}}},
    }


def test_create_update_conflict_and_invalid(emu, api):
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment("prod", new_deployment("web"))
    assert created.metadata.generation == 1 and created.metadata.uid
    assert created.spec.strategy.rolling_update.max_surge == "25%"  # apiserver defaulting
    emu.wait_until(lambda e: e.get("deploy", "web", "prod")["status"].get("availableReplicas") == 2)
    stale = apps.read_namespaced_deployment("web", "prod")
    stale.spec.replicas = 4
    fresh = apps.replace_namespaced_deployment("web", "prod", stale)
    assert (fresh.metadata.generation, fresh.spec.replicas) == (2, 4)
    stale.spec.replicas = 5
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment("web", "prod", stale)
    assert exc.value.status == 409
    assert error_body(exc.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
                   "please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 409}
    # A status-only change through the main resource is ignored: generation stays.
    current = apps.read_namespaced_deployment("web", "prod")
    generation = current.metadata.generation
    current.metadata.labels["team"] = "payments"
    assert apps.replace_namespaced_deployment("web", "prod", current).metadata.generation == generation
    bad = new_deployment("bad", replicas=-1)
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment("prod", bad)
    assert exc.value.status == 422
    assert error_body(exc.value)["message"] == (
        'Deployment.apps "bad" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0')
    assert error_body(exc.value)["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
         "field": "spec.replicas"}]


def test_patch_content_types(emu, api):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("prod", new_deployment("web"))
    emu.clear_requests()
    # Strategic merge: containers merge by name, the sidecar is kept.
    patched = apps.patch_namespaced_deployment(
        "web", "prod", {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "registry.example/web:1.1"}]}}}})
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
        ("web", "registry.example/web:1.1"), ("sidecar", "registry.example/proxy:2.0")]
    # JSON patch (RFC 6902).
    patched = apps.patch_namespaced_deployment(
        "web", "prod", [{"op": "replace", "path": "/spec/replicas", "value": 3},
                        {"op": "add", "path": "/metadata/labels/tier", "value": "front"}])
    assert (patched.spec.replicas, patched.metadata.labels["tier"]) == (3, "front")
    # Merge patch (RFC 7386): lists are replaced, null deletes.
    patched = apps.patch_namespaced_deployment(
        "web", "prod", {"metadata": {"labels": {"tier": None}},
                        "spec": {"template": {"spec": {"containers": [
                            {"name": "web", "image": "registry.example/web:1.2"}]}}}},
        _content_type="application/merge-patch+json")
    assert [c.name for c in patched.spec.template.spec.containers] == ["web"]
    assert "tier" not in patched.metadata.labels
    assert [(r.content_type, r.status) for r in emu.requests("PATCH", "/deployments/web")] == [
        ("application/strategic-merge-patch+json", 200), ("application/json-patch+json", 200),
        ("application/merge-patch+json", 200)]
    assert emu.requests("PATCH")[1].body[0] == {"op": "replace", "path": "/spec/replicas", "value": 3}
    # A stale resourceVersion inside a patch is a conflict; an unknown patch type is 415.
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", "prod", {"metadata": {"resourceVersion": "1"}})
    assert exc.value.status == 409
    response = httpx.patch(f"{emu.url}/apis/apps/v1/namespaces/prod/deployments/web", content=b"{}",
                           headers={"Content-Type": "application/xml-patch+xml"})
    assert response.status_code == 415 and response.json()["reason"] == "UnsupportedMediaType"


def test_strategic_merge_directives():
    original = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}],
                         "tolerations": [{"key": "x"}],
                         "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "c", "image": "3"}],
                      "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
                      "tolerations": [{"key": "y"}],
                      "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert strategic_merge(original, patch) == {"spec": {
        "containers": [{"name": "a", "image": "1"}, {"name": "c", "image": "3"}],
        "tolerations": [{"key": "y"}], "strategy": {"type": "Recreate"}}}


def test_label_and_field_selectors(emu, api):
    core = client.CoreV1Api(api)
    names = lambda pods: sorted(p.metadata.name for p in pods.items)  # noqa: E731
    checkout = names(core.list_namespaced_pod("prod", label_selector="app=checkout"))
    assert len(checkout) == 3
    assert names(core.list_namespaced_pod("prod", label_selector="app in (checkout, orders-db),pod-template-hash")) \
        == checkout
    assert names(core.list_namespaced_pod("prod", label_selector="app!=checkout")) == ["orders-db-0", "orders-db-1"]
    assert names(core.list_namespaced_pod("prod", label_selector="app notin (checkout),!pod-template-hash")) == [
        "orders-db-0", "orders-db-1"]
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=worker-2")
    assert on_node.items and {p.spec.node_name for p in on_node.items} == {"worker-2"}
    assert core.list_pod_for_all_namespaces(field_selector="status.phase!=Running").items == []
    assert names(core.list_namespaced_pod("prod", field_selector="metadata.name==orders-db-1")) == ["orders-db-1"]
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod("prod", field_selector="spec.bogus=1")
    assert exc.value.status == 400 and error_body(exc.value)["message"] == "field label not supported: spec.bogus"
    assert emu.requests("GET", "/api/v1/pods")[0].query == {"fieldSelector": "spec.nodeName=worker-2"}
    assert parse_label_selector("a,b!=2")({"a": "1", "b": "3"}) is True
    assert parse_label_selector("a,b!=2")({"a": "1", "b": "2"}) is False


def test_scale_subresource_drives_the_controllers(emu, api):
    apps = client.AppsV1Api(api)
    scale = apps.patch_namespaced_deployment_scale("checkout", "prod", {"spec": {"replicas": 5}})
    assert scale.spec.replicas == 5
    emu.wait_until(lambda e: checkout_ready(e, 5))
    scale = apps.read_namespaced_deployment_scale("checkout", "prod")
    scale.spec.replicas = 2
    apps.replace_namespaced_deployment_scale("checkout", "prod", scale)
    emu.wait_until(lambda e: checkout_ready(e, 2) and len(e.list("pods", "prod")) == 4)
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_stateful_set_scale("orders-db", "prod", {"spec": {"replicas": -1}})
    assert exc.value.status == 422
    apps.patch_namespaced_stateful_set_scale("orders-db", "prod", {"spec": {"replicas": 3}})
    emu.wait_until(lambda e: e.get("sts", "orders-db", "prod")["status"].get("readyReplicas") == 3)
    assert emu.get("pod", "orders-db-2", "prod") is not None


def test_delete_propagation_and_preconditions(emu, api):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    pod = core.list_namespaced_pod("prod", label_selector="app=orders-db").items[0]
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod(pod.metadata.name, "prod", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid="not-the-uid")))
    assert exc.value.status == 409
    assert error_body(exc.value)["message"] == (
        f'Operation cannot be fulfilled on pods "{pod.metadata.name}": Precondition failed: '
        f"UID in precondition: not-the-uid, UID in object meta: {pod.metadata.uid}")
    # Orphan keeps the ReplicaSets, without their owner reference.
    apps.delete_namespaced_deployment("checkout", "prod", propagation_policy="Orphan")
    rss = emu.list("rs", "prod")
    assert len(rss) == 2 and all("ownerReferences" not in rs["metadata"] for rs in rss)
    # Background deletes dependents: the StatefulSet's pods go with it.
    status = apps.delete_namespaced_stateful_set("orders-db", "prod",
                                                 body=client.V1DeleteOptions(propagation_policy="Background"))
    assert status["status"] == "Success" and status["details"]["kind"] == "statefulsets"
    # The garbage collector deletes them as any client would: gracefully.
    orders = [p for p in emu.list("pods", "prod") if p["metadata"]["name"].startswith("orders")]
    assert len(orders) == 2 and all(p["metadata"]["deletionTimestamp"] for p in orders)
    emu.wait_until(lambda e: not [p for p in e.list("pods", "prod") if p["metadata"]["name"].startswith("orders")])
    delete = emu.requests("DELETE", "/statefulsets/orders-db")[0]
    assert delete.body["propagationPolicy"] == "Background"


def test_watch_streams_changes(emu, api):
    apps = client.AppsV1Api(api)
    listed = apps.list_namespaced_deployment("prod")
    apps.patch_namespaced_deployment_scale("checkout", "prod", {"spec": {"replicas": 4}})
    stream = watch.Watch()
    seen = []
    for event in stream.stream(apps.list_namespaced_deployment, "prod", field_selector="metadata.name=checkout",
                               resource_version=listed.metadata.resource_version, timeout_seconds=5):
        seen.append((event["type"], event["object"].spec.replicas))
        if event["object"].status.available_replicas == 4:
            stream.stop()
    assert seen[0] == ("MODIFIED", 4) and seen[-1][0] == "MODIFIED"


# --------------------------------------------------------------------------- kubectl


def test_kubectl_get_scale_and_rollout_status(emu, kubectl):
    out = json.loads(kubectl("get", "deploy,rs,pods", "-n", "prod", "-o", "json").stdout)
    kinds = sorted({item["kind"] for item in out["items"]})
    assert kinds == ["Deployment", "Pod", "ReplicaSet"] and len(out["items"]) == 1 + 2 + 5
    emu.clear_requests()
    assert kubectl("scale", "deployment/checkout", "-n", "prod", "--replicas=4").stdout.strip() == \
        "deployment.apps/checkout scaled"
    (patch,) = emu.requests("PATCH")
    assert (patch.path, patch.content_type, patch.body) == (
        "/apis/apps/v1/namespaces/prod/deployments/checkout/scale", "application/merge-patch+json",
        {"spec": {"replicas": 4}})
    emu.wait_until(lambda e: checkout_ready(e, 4))
    status = kubectl("rollout", "status", "deployment/checkout", "-n", "prod", "--watch=false")
    assert status.stdout.strip() == 'deployment "checkout" successfully rolled out'


def test_kubectl_rollout_restart_and_undo_reuse_the_old_replicaset(emu, kubectl):
    original = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs["metadata"]["name"]
                for rs in emu.list("rs", "prod")}
    emu.clear_requests()
    kubectl("rollout", "restart", "deployment/checkout", "-n", "prod")
    (patch,) = emu.requests("PATCH")
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert list(patch.body["spec"]["template"]["metadata"]["annotations"]) == ["kubectl.kubernetes.io/restartedAt"]
    emu.wait_until(checkout_ready)
    d = emu.get("deploy", "checkout", "prod")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    # rollout status through a watch.
    assert "successfully rolled out" in kubectl("rollout", "status", "deployment/checkout", "-n", "prod",
                                                "--timeout=20s").stdout
    emu.clear_requests()
    assert "rolled back" in kubectl("rollout", "undo", "deployment/checkout", "-n", "prod").stdout
    (patch,) = emu.requests("PATCH")
    assert patch.content_type == "application/json-patch+json"
    assert [op["path"] for op in patch.body] == ["/spec/template", "/metadata/annotations"]
    emu.wait_until(checkout_ready)
    rss = {rs["metadata"]["name"]: rs for rs in emu.list("rs", "prod")}
    assert len(rss) == 3  # revision 2's ReplicaSet was reused, not duplicated
    reused = rss[original["2"]]
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "2"
    assert reused["spec"]["replicas"] == 3
    d = emu.get("deploy", "checkout", "prod")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"


def test_kubectl_cordon_uncordon(emu, kubectl):
    emu.clear_requests()
    assert kubectl("cordon", "worker-1").stdout.strip() == "node/worker-1 cordoned"
    assert emu.get("node", "worker-1")["spec"]["unschedulable"] is True
    assert kubectl("uncordon", "worker-1").stdout.strip() == "node/worker-1 uncordoned"
    assert "unschedulable" not in emu.get("node", "worker-1")["spec"]
    assert [(r.path, r.content_type, r.body) for r in emu.requests("PATCH")] == [
        ("/api/v1/nodes/worker-1", "application/strategic-merge-patch+json", {"spec": {"unschedulable": True}}),
        ("/api/v1/nodes/worker-1", "application/strategic-merge-patch+json", {"spec": {"unschedulable": None}})]


def _node_with_one_checkout_pod(emu: Emulator) -> str:
    counts: dict[str, int] = {}
    for p in emu.list("pods", "prod"):
        if p["metadata"]["labels"].get("app") == "checkout":
            counts[p["spec"]["nodeName"]] = counts.get(p["spec"]["nodeName"], 0) + 1
    return next(node for node, n in sorted(counts.items()) if n == 1)


def test_kubectl_drain_evicts_through_the_pdb(emu, kubectl):
    node = _node_with_one_checkout_pod(emu)
    on_node = {p["metadata"]["name"] for p in emu.list("pods", "prod") if p["spec"]["nodeName"] == node}
    emu.clear_requests()
    proc = kubectl("drain", node, "--ignore-daemonsets", "--timeout=30s")
    assert f"node/{node} drained" in proc.stdout
    evictions = emu.requests("POST", "/eviction")
    assert {r.path.split("/")[-2] for r in evictions} == on_node
    assert all(r.status == 201 and r.body["kind"] == "Eviction" for r in evictions)
    assert emu.get("node", node)["spec"]["unschedulable"] is True
    # kubectl waited for each evicted pod to terminate (drain.go waitForDelete): it found it
    # still there, terminating, before it found it gone (a StatefulSet pod comes back under
    # its name, so only the ReplicaSet's are checked).
    for name in (n for n in on_node if n.startswith("checkout-")):
        after = [r.status for r in emu.requests("GET", f"/namespaces/prod/pods/{name}")
                 if r.at >= next(e.at for e in evictions if f"/pods/{name}/" in e.path)]
        assert 200 in after and after[-1] == 404, (name, after)
    emu.wait_until(checkout_ready)
    assert all(p["spec"]["nodeName"] != node for p in emu.list("pods", "prod"))


def test_kubectl_drain_fails_on_a_blocking_pdb(emu, kubectl):
    client.PolicyV1Api(emu.api_client()).patch_namespaced_pod_disruption_budget(
        "checkout", "prod", {"spec": {"maxUnavailable": 0}})
    emu.wait_until(lambda e: e.get("pdb", "checkout", "prod")["status"]["disruptionsAllowed"] == 0)
    node = _node_with_one_checkout_pod(emu)
    emu.clear_requests()
    proc = kubectl("drain", node, "--ignore-daemonsets", "--timeout=3s", check=False)
    assert proc.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in proc.stderr
    refused = [r for r in emu.requests("POST", "/eviction") if r.status == 429]
    assert refused and all("checkout-" in r.path for r in refused)


# --------------------------------------------------------------------------- controllers and faults


def test_eviction_with_pdb(emu, api):
    core = client.CoreV1Api(api)
    pods = [p.metadata.name for p in core.list_namespaced_pod("prod", label_selector="app=checkout").items]
    eviction = lambda name: client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace="prod"))  # noqa: E731
    core.create_namespaced_pod_eviction(pods[0], "prod", eviction(pods[0]))
    assert emu.get("pod", pods[0], "prod")["metadata"]["deletionTimestamp"]  # terminating, gone shortly
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction(pods[1], "prod", eviction(pods[1]))
    assert exc.value.status == 429
    assert error_body(exc.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget",
                                "message": "The disruption budget checkout needs 2 healthy pods and has 2 currently"}]},
        "code": 429}
    assert emu.get("pod", pods[1], "prod") is not None
    emu.wait_until(lambda e: e.get("pdb", "checkout", "prod")["status"]["disruptionsAllowed"] == 1)
    core.create_namespaced_pod_eviction(pods[1], "prod", eviction(pods[1]))
    assert [r.status for r in emu.requests("POST", "/eviction")] == [201, 429, 201]


def test_progress_deadline_exceeded_on_a_stalled_rollout(emu, api):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("prod", new_deployment("web", progressDeadlineSeconds=1))
    emu.wait_until(lambda e: e.get("deploy", "web", "prod")["status"].get("availableReplicas") == 2)
    emu.fault_stall_rollout("prod", "web")
    apps.patch_namespaced_deployment("web", "prod", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "registry.example/web:2.0"}]}}}})

    def progressing(e: Emulator) -> tuple[str, str]:
        cond = next(c for c in e.get("deploy", "web", "prod")["status"]["conditions"] if c["type"] == "Progressing")
        return cond["status"], cond["reason"]

    emu.wait_until(lambda e: progressing(e) == ("False", "ProgressDeadlineExceeded"))
    d = apps.read_namespaced_deployment("web", "prod")
    assert (d.status.replicas, d.status.updated_replicas, d.status.available_replicas) == (3, 1, 2)
    cond = next(c for c in d.status.conditions if c.type == "Progressing")
    assert cond.message == f'ReplicaSet "{cond.message.split(chr(34))[1]}" has timed out progressing.'


def test_crashloop_pods_fault_is_healed_by_a_restart(emu, api):
    crashing = emu.fault_crashloop_pods("prod", "app=checkout")
    assert crashing == 3

    def waiting_reasons(e: Emulator) -> list[str]:
        return [cs["state"].get("waiting", {}).get("reason", "") for p in e.list("pods", "prod")
                if p["metadata"]["labels"].get("app") == "checkout" for cs in p["status"]["containerStatuses"]]

    emu.wait_until(lambda e: waiting_reasons(e) == ["CrashLoopBackOff"] * 3
                   and e.get("deploy", "checkout", "prod")["status"].get("availableReplicas", 0) == 0)
    pod = client.CoreV1Api(api).list_namespaced_pod("prod", label_selector="app=checkout").items[0]
    cs = pod.status.container_statuses[0]
    assert (cs.ready, cs.last_state.terminated.reason, cs.last_state.terminated.exit_code) == (False, "Error", 1)
    assert cs.restart_count >= 1
    backoff = [e for e in emu.list("events", "prod") if e["reason"] == "BackOff"]
    assert backoff and backoff[0]["type"] == "Warning"
    assert backoff[0]["message"].startswith("Back-off restarting failed container checkout in pod checkout-")
    available = next(c for c in emu.get("deploy", "checkout", "prod")["status"]["conditions"]
                     if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
    client.AppsV1Api(api).patch_namespaced_deployment("checkout", "prod", {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}})
    # The crash-looping pods terminate (gracefully) while their replacements come up.
    emu.wait_until(lambda e: checkout_ready(e) and waiting_reasons(e) == [""] * 3)


def test_crashloop_image_fault_and_clear(emu):
    emu.fault_crashloop_image("docker.io/library/postgres:16.4")
    emu.wait_until(lambda e: e.get("sts", "orders-db", "prod")["status"].get("readyReplicas", 0) == 0)
    emu.clear_faults()
    emu.wait_until(lambda e: e.get("sts", "orders-db", "prod")["status"].get("readyReplicas", 0) == 2)


def test_node_not_ready_fault(emu, api):
    emu.fault_node_not_ready("worker-3")
    node = client.CoreV1Api(api).read_node("worker-3")
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "KubeletNotReady")
    assert [t.key for t in node.spec.taints] == ["node.kubernetes.io/not-ready"]
    emu.wait_until(lambda e: all(
        not any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
        for p in e.list("pods") if p["spec"]["nodeName"] == "worker-3"))
    # New pods avoid the NotReady node.
    client.AppsV1Api(api).patch_namespaced_deployment_scale("checkout", "prod", {"spec": {"replicas": 9}})
    emu.wait_until(lambda e: len([p for p in e.list("pods", "prod") if "checkout" in p["metadata"]["name"]]) >= 9)
    before = {p["metadata"]["name"] for p in emu.list("pods", "prod")}
    assert sum(1 for p in emu.list("pods", "prod") if p["spec"]["nodeName"] == "worker-3") <= 2
    assert before
    emu.clear_faults()
    emu.wait_until(lambda e: any(c["type"] == "Ready" and c["status"] == "True"
                                 for c in e.get("node", "worker-3")["status"]["conditions"]))


def test_api_error_fault_and_admin_api(emu, api):
    admin = httpx.Client(base_url=emu.url)
    response = admin.post("/_emulator/faults", json={"type": "api_error", "method": "GET",
                                                     "path_regex": "/deployments/checkout$", "status": 503,
                                                     "count": 1})
    assert response.status_code == 200
    apps = client.AppsV1Api(api)
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("checkout", "prod")
    assert exc.value.status == 503 and error_body(exc.value)["reason"] == "ServiceUnavailable"
    assert apps.read_namespaced_deployment("checkout", "prod").metadata.name == "checkout"
    recorded = admin.get("/_emulator/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in recorded[-2:]] == [
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/checkout", 503),
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/checkout", 200)]
    assert admin.delete("/_emulator/requests").status_code == 200 and emu.requests() == []
    created = admin.post("/_emulator/objects", json={
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "static-web", "namespace": "prod",
                     "annotations": {"kubernetes.io/config.mirror": "abc"}},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "web", "image": "nginx:1.27"}]}})
    assert created.status_code == 201 and created.json()["spec"]["nodeName"] == "worker-1"
    response = admin.post("/_emulator/faults", json={"type": "nope"})
    assert response.status_code == 400 and "unknown fault type" in response.json()["message"]
    admin.post("/_emulator/faults", json={"type": "node_not_ready", "node": "worker-2"})
    assert not any(c["type"] == "Ready" and c["status"] == "True"
                   for c in emu.get("node", "worker-2")["status"]["conditions"])
    admin.close()


def test_metrics_expose_kube_state_metrics_series(emu):
    emu.fault_crashloop_pods("prod", "app=orders-db")
    emu.fault_node_not_ready("worker-2")
    emu.wait_until(lambda e: all(
        p["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for p in e.list("pods", "prod") if p["metadata"]["name"].startswith("orders-db")))
    response = httpx.get(f"{emu.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    pod = emu.get("pod", "orders-db-0", "prod")
    uid = pod["metadata"]["uid"]
    available = emu.get("deploy", "checkout", "prod")["status"]["availableReplicas"]
    assert available < 3  # one checkout pod ran on the NotReady worker-2
    for line in (
        f'kube_pod_container_status_waiting_reason{{container="postgres",namespace="prod",pod="orders-db-0",'
        f'reason="CrashLoopBackOff",uid="{uid}"}} 1.0',
        f'kube_pod_status_ready{{condition="false",namespace="prod",pod="orders-db-0",uid="{uid}"}} 1.0',
        'kube_deployment_spec_replicas{deployment="checkout",namespace="prod"} 3.0',
        f'kube_deployment_status_replicas_available{{deployment="checkout",namespace="prod"}} {available}.0',
        'kube_deployment_status_replicas_updated{deployment="checkout",namespace="prod"} 3.0',
        'kube_deployment_status_observed_generation{deployment="checkout",namespace="prod"} 2.0',
        'kube_deployment_metadata_generation{deployment="checkout",namespace="prod"} 2.0',
        'kube_node_status_condition{condition="Ready",node="worker-2",status="false"} 1.0',
        'kube_node_status_condition{condition="Ready",node="worker-1",status="true"} 1.0',
        'kube_node_spec_unschedulable{node="worker-1"} 0.0',
    ):
        assert line in text, line
    assert f'kube_pod_container_status_restarts_total{{container="postgres",namespace="prod",pod="orders-db-0",' \
           f'uid="{uid}"}}' in text
    assert "# TYPE kube_pod_container_status_restarts_total counter" in text


def test_discovery_documents(emu):
    with httpx.Client(base_url=emu.url) as http:
        core = http.get("/api/v1").json()
        pods_eviction = next(r for r in core["resources"] if r["name"] == "pods/eviction")
        assert (pods_eviction["group"], pods_eviction["version"], pods_eviction["kind"]) == ("policy", "v1", "Eviction")
        apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
        assert apps["deployments"]["shortNames"] == ["deploy"]
        assert apps["deployments/scale"]["kind"] == "Scale"
        groups = [g["name"] for g in http.get("/apis").json()["groups"]]
        assert groups == ["apps", "policy", "autoscaling"]
        assert http.get("/apis/batch/v1").status_code == 404


def test_cli_serves_a_seeded_cluster(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "remediator.sim.kube", "--seed", "demo",
                             "--kubeconfig", str(kubeconfig)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == f"kubeconfig: {kubeconfig}"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        deployment = httpx.get(f"{url}/apis/apps/v1/namespaces/prod/deployments/checkout").json()
        assert deployment["spec"]["replicas"] == 3
        assert url in Path(kubeconfig).read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_keepalive_without_nagle(emu):
    """A keep-alive GET must not pay the ~40 ms delayed-ACK penalty: the handler disables Nagle
    and answers HTTP/1.1 with Content-Length, so one connection serves every request."""
    assert Handler.disable_nagle_algorithm is True
    with httpx.Client(base_url=emu.url) as http:
        responses = [http.get("/apis/apps/v1/namespaces/prod/deployments/checkout") for _ in range(5)]
    assert all(r.http_version == "HTTP/1.1" and int(r.headers["content-length"]) == len(r.content)
               for r in responses)


def test_kubectl_get_prints_server_side_tables_and_logs(emu, kubectl):
    emu.fault_crashloop_pods("prod", "app=orders-db")
    emu.wait_until(lambda e: all(
        p["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for p in e.list("pods", "prod") if p["metadata"]["name"].startswith("orders-db")))
    lines = kubectl("get", "pods", "-n", "prod").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows["orders-db-0"] == ["0/1", "CrashLoopBackOff"]
    assert sum(1 for r in rows.values() if r == ["1/1", "Running"]) == 3
    nodes = kubectl("get", "nodes").stdout.splitlines()
    assert [line.split()[:2] for line in nodes[1:]] == [["worker-1", "Ready"], ["worker-2", "Ready"],
                                                        ["worker-3", "Ready"]]
    assert "emulated crash" in kubectl("logs", "-n", "prod", "orders-db-0").stdout


# --------------------------------------------------------------------------- disruption budgets (fidelity)


def evict(core: client.CoreV1Api, name: str, namespace: str = "prod", **delete_options):
    """POST pods/{name}/eviction with a policy/v1 Eviction, as kubectl drain sends it."""
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                             delete_options=client.V1DeleteOptions(**delete_options) if delete_options else None)
    return core.create_namespaced_pod_eviction(name, namespace, body)


def create_pdb(api, name: str, selector: dict, namespace: str = "prod", **spec):
    return client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(namespace, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": selector}, **spec}})


def pdb_numbers(emu: Emulator, name: str, namespace: str = "prod") -> dict:
    st = emu.get("pdb", name, namespace).get("status") or {}
    return {k: st.get(k) for k in ("currentHealthy", "desiredHealthy", "expectedPods", "disruptionsAllowed")}


def pdb_observed(emu: Emulator, name: str, namespace: str = "prod") -> bool:
    pdb = emu.get("pdb", name, namespace)
    return (pdb.get("status") or {}).get("observedGeneration") == pdb["metadata"]["generation"]


def disruption_allowed(emu: Emulator, name: str, namespace: str = "prod") -> dict:
    cond = next(c for c in emu.get("pdb", name, namespace)["status"]["conditions"] if c["type"] == "DisruptionAllowed")
    return {k: v for k, v in cond.items() if k != "lastTransitionTime"}


def budget_refusal(exc: ApiException) -> tuple[int, str, list]:
    body = error_body(exc)
    return exc.status, body["message"], body["details"]["causes"]


def is_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def bare_pod(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}


def test_pdb_with_neither_min_available_nor_max_unavailable_allows_no_disruption(emu, api):
    """policy/v1 has no default for either field: getExpectedPodCount leaves expectedCount
    and desiredHealthy at 0, and updatePdbStatus allows no disruption when expectedCount <= 0."""
    core = client.CoreV1Api(api)
    create_pdb(api, "orders-db", {"app": "orders-db"})
    emu.wait_until(lambda e: pdb_observed(e, "orders-db"))
    assert pdb_numbers(emu, "orders-db") == {
        "currentHealthy": 2, "desiredHealthy": 0, "expectedPods": 0, "disruptionsAllowed": 0}
    assert disruption_allowed(emu, "orders-db") == {
        "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
        "observedGeneration": 1}
    with pytest.raises(ApiException) as exc:
        evict(core, "orders-db-1")
    assert budget_refusal(exc.value) == (
        429, "Cannot evict pod as it would violate the pod's disruption budget.",
        [{"reason": "DisruptionBudget",
          "message": "The disruption budget orders-db needs 0 healthy pods and has 2 currently"}])
    assert "deletionTimestamp" not in emu.get("pod", "orders-db-1", "prod")["metadata"]


def test_pdb_over_pods_without_a_scalable_controller_allows_no_disruption(emu, api):
    """getExpectedScale: unmanaged pods count for nothing (expectedCount 0, so no disruption and
    an UnmanagedPods warning); a controller without a scale subresource (a DaemonSet) is a sync
    error, and failSafe sets disruptionsAllowed to 0 without observing the generation, so the
    eviction answers that the budget is still being processed."""
    core = client.CoreV1Api(api)
    for name in ("bare-1", "bare-2"):
        core.create_namespaced_pod("prod", bare_pod(name, {"app": "bare"}))
    emu.wait_until(lambda e: all(is_ready(e.get("pod", n, "prod")) for n in ("bare-1", "bare-2")))
    create_pdb(api, "bare", {"app": "bare"}, maxUnavailable=1)
    create_pdb(api, "node-exporter", {"app.kubernetes.io/name": "node-exporter"}, "kube-system", maxUnavailable=1)
    emu.wait_until(lambda e: pdb_observed(e, "bare"))
    assert pdb_numbers(emu, "bare") == {"currentHealthy": 2, "desiredHealthy": 0, "expectedPods": 0,
                                        "disruptionsAllowed": 0}
    warnings = [e for e in emu.list("events", "prod") if e["reason"] == "UnmanagedPods"]
    assert warnings and warnings[0]["type"] == "Warning" and warnings[0]["involvedObject"]["name"] == "bare"
    assert "were found to be unmanaged" in warnings[0]["message"]
    with pytest.raises(ApiException) as exc:
        evict(core, "bare-1")
    assert budget_refusal(exc.value)[0] == 429
    assert budget_refusal(exc.value)[2][0]["message"] == \
        "The disruption budget bare needs 0 healthy pods and has 2 currently"

    exporter = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("node-exporter", "kube-system")
    assert exporter.status.disruptions_allowed == 0 and not exporter.status.observed_generation
    assert disruption_allowed(emu, "node-exporter", "kube-system") == {
        "type": "DisruptionAllowed", "status": "False", "reason": "SyncFailed",
        "message": "daemonsets.apps does not implement the scale subresource", "observedGeneration": 0}
    failed = [e for e in emu.list("events", "kube-system") if e["reason"] == "CalculateExpectedPodCountFailed"]
    assert failed and failed[0]["message"] == ("Failed to calculate the number of expected pods: "
                                               "daemonsets.apps does not implement the scale subresource")
    pod = emu.list("pods", "kube-system")[0]["metadata"]["name"]
    with pytest.raises(ApiException) as exc:
        evict(core, pod, "kube-system")
    assert exc.value.status == 429 and error_body(exc.value)["details"] == {
        "retryAfterSeconds": 10, "causes": [{
            "reason": "DisruptionBudget",
            "message": "The disruption budget node-exporter is still being processed by the server."}]}

    # An integer minAvailable counts the selected pods themselves, as the warning advises.
    client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget(
        "bare", "prod", {"spec": {"maxUnavailable": None, "minAvailable": 1}})
    emu.wait_until(lambda e: pdb_observed(e, "bare"))
    assert pdb_numbers(emu, "bare") == {"currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2,
                                        "disruptionsAllowed": 1}
    evict(core, "bare-1")


def test_unhealthy_pod_eviction_policy(emu, api):
    """eviction.go: an unready pod may be evicted outside the budget when the budget is met
    (IfHealthyBudget, the default), or always (AlwaysAllow); a Ready pod is always guarded."""
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    create_pdb(api, "orders-db", {"app": "orders-db"}, minAvailable=2)
    emu.fault_crashloop_pods("prod", "app=orders-db")
    emu.wait_until(lambda e: pdb_observed(e, "orders-db") and pdb_numbers(e, "orders-db")["currentHealthy"] == 0)
    with pytest.raises(ApiException) as exc:
        evict(core, "orders-db-1")
    assert budget_refusal(exc.value)[2][0]["message"] == \
        "The disruption budget orders-db needs 2 healthy pods and has 0 currently"
    policy.patch_namespaced_pod_disruption_budget("orders-db", "prod",
                                                  {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})
    emu.wait_until(lambda e: pdb_observed(e, "orders-db"))
    evict(core, "orders-db-1")
    evicted = emu.get("pod", "orders-db-1", "prod")
    assert evicted["metadata"]["deletionTimestamp"]
    assert "disruptedPods" not in emu.get("pdb", "orders-db", "prod")["status"]  # the budget was not spent
    # Once healthy, the pods are guarded by the budget again.
    emu.clear_faults()
    emu.wait_until(lambda e: pdb_numbers(e, "orders-db")["currentHealthy"] == 2)
    with pytest.raises(ApiException) as exc:
        evict(core, "orders-db-0")
    assert budget_refusal(exc.value)[2][0]["message"] == \
        "The disruption budget orders-db needs 2 healthy pods and has 2 currently"


def test_unhealthy_pod_eviction_policy_is_validated(emu, api):
    with pytest.raises(ApiException) as exc:
        create_pdb(api, "orders-db", {"app": "orders-db"}, minAvailable=1, unhealthyPodEvictionPolicy="Sometimes")
    assert exc.value.status == 422 and error_body(exc.value)["message"] == (
        'PodDisruptionBudget.policy "orders-db" is invalid: spec.unhealthyPodEvictionPolicy: Unsupported value: '
        '"Sometimes": supported values: "AlwaysAllow", "IfHealthyBudget"')


# --------------------------------------------------------------------------- graceful termination


@pytest.fixture
def slow_emu():
    """An emulator whose containers take 3 s to exit on SIGTERM, to look at terminating pods."""
    emulator = Emulator(pod_ready_seconds=0.1, tick_seconds=0.02, termination_seconds=3).start()
    emulator.seed_demo()
    try:
        yield emulator
    finally:
        emulator.stop()


def checkout_pods(emu: Emulator, terminating: bool | None = None) -> list[dict]:
    return [p for p in emu.list("pods", "prod") if p["metadata"]["labels"].get("app") == "checkout"
            and (terminating is None or bool(p["metadata"].get("deletionTimestamp")) == terminating)]


def test_deleted_pod_terminates_gracefully(slow_emu):
    """A DELETE sets deletionTimestamp and deletionGracePeriodSeconds (pod strategy
    CheckGracefulDelete, rest.BeforeDelete); the ReplicaSet replaces the pod at once and no
    controller counts it; the kubelet stops its containers, reports the terminal phase, then
    the pod is removed. Grace period 0 removes it at once."""
    emu = slow_emu
    api = emu.api_client()
    core = client.CoreV1Api(api)
    first, second = (p["metadata"]["name"] for p in checkout_pods(emu)[:2])
    rv = core.list_namespaced_pod("prod").metadata.resource_version
    started = time.monotonic()
    deleted = core.delete_namespaced_pod(first, "prod")
    assert deleted.metadata.deletion_timestamp is not None and deleted.metadata.deletion_grace_period_seconds == 30
    pod = core.read_namespaced_pod(first, "prod")
    assert pod.metadata.deletion_timestamp == deleted.metadata.deletion_timestamp
    left = pod.metadata.deletion_timestamp.timestamp() - time.time()
    assert 28 <= left <= 31
    # Until its containers stop, the kubelet reports it as it was (Running, Ready: the
    # container has no readiness probe), while no controller counts it.
    assert pod.status.phase == "Running" and pod.status.container_statuses[0].state.running is not None
    with emu.store.lock:
        assert len(checkout_pods(emu, terminating=False)) == 3 and len(checkout_pods(emu)) == 4
        rs = next(r for r in emu.list("rs", "prod") if r["spec"]["replicas"] == 3)
        live_ready = sum(1 for p in checkout_pods(emu, terminating=False) if is_ready(p))
        assert rs["status"]["replicas"] == 3 and rs["status"].get("readyReplicas", 0) == live_ready
        assert pdb_numbers(emu, "checkout")["currentHealthy"] == live_ready
    killing = [e for e in emu.list("events", "prod")
               if e["reason"] == "Killing" and e["involvedObject"]["name"] == first]
    assert [(e["message"], e["source"]["component"]) for e in killing] == [("Stopping container checkout", "kubelet")]
    # A second DELETE changes nothing; a shorter grace period would shorten it.
    again = core.delete_namespaced_pod(first, "prod")
    assert again.metadata.deletion_timestamp == deleted.metadata.deletion_timestamp
    # Grace period 0: removed at once.
    core.delete_namespaced_pod(second, "prod", grace_period_seconds=0)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod(second, "prod")
    assert exc.value.status == 404
    emu.wait_until(lambda e: e.get("pod", first, "prod") is None, timeout=10)
    assert time.monotonic() - started >= 3  # the containers took termination_seconds to exit
    # What a watch saw: the deletion, the kubelet's terminal status, the removal.
    stream = watch.Watch()
    seen = []
    for event in stream.stream(core.list_namespaced_pod, "prod", field_selector=f"metadata.name={first}",
                               resource_version=rv, timeout_seconds=5):
        seen.append(event)
        if event["type"] == "DELETED":
            stream.stop()
    assert [e["type"] for e in seen][-1] == "DELETED"
    assert seen[0]["object"].metadata.deletion_timestamp is not None and seen[0]["object"].status.phase == "Running"
    final = next(e["object"] for e in seen if e["object"].status.phase != "Running")
    assert final.status.phase == "Succeeded"
    term = final.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, final.status.container_statuses[0].ready) == (0, "Completed", False)
    conditions = {c.type: (c.status, c.reason) for c in final.status.conditions}
    assert conditions["Ready"] == conditions["ContainersReady"] == ("False", "PodCompleted")
    api.close()


def test_grace_period_from_the_request_or_the_pod(slow_emu):
    """deletionGracePeriodSeconds is the request's, else the pod's terminationGracePeriodSeconds;
    containers that outlive a short grace period are stopped at its end."""
    emu = slow_emu
    api = emu.api_client()
    core = client.CoreV1Api(api)
    short = bare_pod("short", {"app": "short"})
    short["spec"]["terminationGracePeriodSeconds"] = 1
    core.create_namespaced_pod("prod", short)
    emu.wait_until(lambda e: is_ready(e.get("pod", "short", "prod")))
    started = time.monotonic()
    assert core.delete_namespaced_pod("short", "prod").metadata.deletion_grace_period_seconds == 1
    other = checkout_pods(emu)[0]["metadata"]["name"]
    deleted = core.delete_namespaced_pod(other, "prod", body=client.V1DeleteOptions(grace_period_seconds=2))
    assert deleted.metadata.deletion_grace_period_seconds == 2
    emu.wait_until(lambda e: e.get("pod", "short", "prod") is None, timeout=10)
    assert time.monotonic() - started < 2.5  # the end of its 1 s grace period, not the containers' 3 s
    emu.wait_until(lambda e: e.get("pod", other, "prod") is None, timeout=10)
    api.close()


def test_eviction_marks_the_pod_and_a_terminating_pod_is_evicted_again(slow_emu):
    """eviction.go addConditionAndDeletePod adds DisruptionTarget (EvictionByEvictionAPI); a pod
    already being deleted skips the budget (canIgnorePDB) and its eviction only deletes again,
    which may shorten the grace period."""
    emu = slow_emu
    api = emu.api_client()
    core = client.CoreV1Api(api)
    first, second = (p["metadata"]["name"] for p in checkout_pods(emu)[:2])
    evict(core, first)
    pod = emu.get("pod", first, "prod")
    assert pod["metadata"]["deletionTimestamp"] and pod["metadata"]["deletionGracePeriodSeconds"] == 30
    target = next(c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert {k: target[k] for k in ("status", "reason", "message")} == {
        "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}
    client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget("checkout", "prod", {"spec": {"maxUnavailable": 0}})
    emu.wait_until(lambda e: pdb_observed(e, "checkout"))
    evict(core, first)  # already being deleted: no budget to consult
    assert emu.get("pod", first, "prod")["metadata"]["deletionTimestamp"] == pod["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as exc:
        evict(core, second)
    assert exc.value.status == 429
    evict(core, first, grace_period_seconds=0)
    assert emu.get("pod", first, "prod") is None
    assert [r.status for r in emu.requests("POST", "/eviction")] == [201, 201, 429, 201]
    api.close()


def test_statefulset_waits_for_its_pod_to_terminate(emu, api):
    """stateful_set_control.go: a terminating replica blocks an OrderedReady set; its successor,
    under the same name, is created once it is gone."""
    core = client.CoreV1Api(api)
    uid = core.read_namespaced_pod("orders-db-1", "prod").metadata.uid
    core.delete_namespaced_pod("orders-db-1", "prod")
    pod = core.read_namespaced_pod("orders-db-1", "prod")
    assert pod.metadata.uid == uid and pod.metadata.deletion_timestamp is not None
    emu.wait_until(lambda e: (p := e.get("pod", "orders-db-1", "prod")) is not None
                   and p["metadata"]["uid"] != uid and is_ready(p))
    emu.wait_until(lambda e: e.get("sts", "orders-db", "prod")["status"].get("readyReplicas") == 2)


def test_pods_on_a_node_whose_kubelet_is_gone_stay_terminating(emu, api):
    """Only the kubelet ends a graceful termination: on a node that stopped posting status
    (NodeStatusUnknown) the pod stays terminating until the node comes back."""
    core = client.CoreV1Api(api)
    on = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in checkout_pods(emu)}
    lost_node, lost = min(on.items())
    fine = next(name for node, name in on.items() if node != lost_node)
    emu.fault_node_not_ready(lost_node, reason="NodeStatusUnknown")
    core.delete_namespaced_pod(lost, "prod")
    core.delete_namespaced_pod(fine, "prod")
    emu.wait_until(lambda e: e.get("pod", fine, "prod") is None)
    assert emu.get("pod", lost, "prod")["metadata"]["deletionTimestamp"]
    emu.clear_faults()
    emu.wait_until(lambda e: e.get("pod", lost, "prod") is None)


# --------------------------------------------------------------------------- workload controllers (fidelity)


def test_paused_deployment_scales_but_does_not_roll_out(emu, api):
    """deployment_controller.go syncDeployment: a paused Deployment goes through sync(), which
    scales its ReplicaSets (sync.go scale) but creates no new one."""
    apps = client.AppsV1Api(api)
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": True}})
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"template": {"spec": {"containers": [
        {"name": "checkout", "image": "registry.example/checkout:1.5.0"}]}}}})
    apps.patch_namespaced_deployment_scale("checkout", "prod", {"spec": {"replicas": 5}})
    emu.wait_until(lambda e: e.get("deploy", "checkout", "prod")["status"].get("availableReplicas") == 5)
    rss = emu.list("rs", "prod")
    assert len(rss) == 2
    active = next(rs for rs in rss if rs["spec"]["replicas"])
    assert active["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/checkout:1.4.2"
    assert active["spec"]["replicas"] == 5
    assert {k: active["metadata"]["annotations"][f"deployment.kubernetes.io/{k}"]
            for k in ("desired-replicas", "max-replicas")} == {"desired-replicas": "5", "max-replicas": "7"}
    scaled = f"Scaled up replica set {active['metadata']['name']} from 3 to 5"
    assert any(e["reason"] == "ScalingReplicaSet" and e["message"] == scaled for e in emu.list("events", "prod"))
    d = emu.get("deploy", "checkout", "prod")
    progressing = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "DeploymentPaused" and d["status"].get("updatedReplicas", 0) == 0
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"paused": False}})
    emu.wait_until(lambda e: checkout_ready(e, 5) and all(
        p["spec"]["containers"][0]["image"] == "registry.example/checkout:1.5.0" for p in checkout_pods(e)))


def test_statefulset_partition_keeps_lower_ordinals_on_the_old_revision(emu, api):
    """stateful_set_control.go: a rolling update stops at spec.updateStrategy.rollingUpdate.partition;
    a pod below it that is recreated comes back at the current revision (newVersionedStatefulSetPod)."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.patch_namespaced_stateful_set_scale("orders-db", "prod", {"spec": {"replicas": 3}})
    emu.wait_until(lambda e: e.get("sts", "orders-db", "prod")["status"].get("readyReplicas") == 3)
    old = emu.get("sts", "orders-db", "prod")["status"]["currentRevision"]
    apps.patch_namespaced_stateful_set("orders-db", "prod", {"spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
        "template": {"spec": {"containers": [{"name": "postgres", "image": "docker.io/library/postgres:16.5"}]}}}})

    def images(e: Emulator) -> list[tuple[str, str, str]]:
        return [(p["metadata"]["name"], p["spec"]["containers"][0]["image"].rsplit(":", 1)[1],
                 p["metadata"]["labels"]["controller-revision-hash"])
                for p in e.list("pods", "prod") if p["metadata"]["name"].startswith("orders-db")]

    def settled(e: Emulator, updated: int) -> bool:
        st = e.get("sts", "orders-db", "prod")["status"]
        return (st.get("updatedReplicas") == updated and st.get("readyReplicas") == 3 and st.get("replicas") == 3
                and len(images(e)) == 3)

    emu.wait_until(lambda e: settled(e, 2))
    new = emu.get("sts", "orders-db", "prod")["status"]["updateRevision"]
    assert new != old
    assert images(emu) == [("orders-db-0", "16.4", old), ("orders-db-1", "16.5", new), ("orders-db-2", "16.5", new)]
    st = emu.get("sts", "orders-db", "prod")["status"]
    assert (st["currentRevision"], st["currentReplicas"], st["updatedReplicas"]) == (old, 1, 2)
    # Recreated below the partition: the current revision again.
    core.delete_namespaced_pod("orders-db-0", "prod", grace_period_seconds=0)
    emu.wait_until(lambda e: settled(e, 2) and is_ready(e.get("pod", "orders-db-0", "prod")))
    assert images(emu)[0] == ("orders-db-0", "16.4", old)
    revisions = sorted((r["revision"], r["metadata"]["name"]) for r in emu.list("controllerrevisions", "prod"))
    assert revisions == [(1, old), (2, new)]
    # Partition 0 completes the rollout.
    apps.patch_namespaced_stateful_set("orders-db", "prod", {"spec": {"updateStrategy": {
        "type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}})
    emu.wait_until(lambda e: settled(e, 3) and e.get("sts", "orders-db", "prod")["status"]["currentRevision"] == new)
    assert [image for _, image, _ in images(emu)] == ["16.5"] * 3


def test_dry_run_runs_every_check_and_persists_nothing(emu, api):
    """dryRun=All on a create, update, patch, scale and delete: the same checks and answers as
    the real write (AlreadyExists, a missing namespace, a stale resourceVersion, validation),
    nothing stored, no resourceVersion used (k8s.io/apiserver DryRunnableStorage)."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    rv = emu.store.resource_version
    created = core.create_namespace({"metadata": {"name": "dry"}}, dry_run="All")
    assert created.metadata.name == "dry" and created.metadata.uid and not created.metadata.resource_version
    for call, status in (
        (lambda: core.create_namespace({"metadata": {"name": "prod"}}, dry_run="All"), 409),
        (lambda: core.create_namespaced_pod(
            "nowhere", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            dry_run="All"), 404),
        (lambda: apps.replace_namespaced_deployment_scale(
            "checkout", "prod", {"metadata": {"name": "checkout", "resourceVersion": "1"}, "spec": {"replicas": 9}},
            dry_run="All"), 409),
        (lambda: apps.patch_namespaced_deployment_scale("checkout", "prod", {"spec": {"replicas": -1}}, dry_run="All"), 422),
    ):
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == status
    deployment = emu.get("deployment", "checkout", "prod")
    patched = apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"replicas": 7}}, dry_run="All")
    assert patched.spec.replicas == 7 and patched.metadata.generation == deployment["metadata"]["generation"] + 1
    assert patched.metadata.resource_version == deployment["metadata"]["resourceVersion"]
    scale = apps.replace_namespaced_deployment_scale(
        "checkout", "prod", {"metadata": {"name": "checkout"}, "spec": {"replicas": 8}}, dry_run="All")
    assert scale.spec.replicas == 8
    pod = checkout_pods(emu)[0]
    answer = core.delete_namespaced_pod(pod["metadata"]["name"], "prod", dry_run="All")
    assert answer.metadata.deletion_timestamp and answer.metadata.resource_version == pod["metadata"]["resourceVersion"]
    status = apps.delete_namespaced_stateful_set("orders-db", "prod", dry_run="All")
    assert status["status"] == "Success"

    assert emu.store.resource_version == rv
    assert emu.get("namespace", "dry") is None and emu.get("statefulset", "orders-db", "prod")
    assert emu.get("deployment", "checkout", "prod") == deployment
    assert emu.get("pod", pod["metadata"]["name"], "prod") == pod
