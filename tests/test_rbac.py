"""Least privilege, proven: the ClusterRole grants exactly what the engine sends, nothing else.

* The manifest (deploy/kubernetes/base/clusterrole.yaml) is ``python -m remediator.k8s.rbac``'s
  output, with no ``*`` and no Secrets, and the rules are declared for every action, health
  check and evidence check of the registries.
* The real engine (the worker's activities, its Temporal Worker, a kubeconfig loaded as the
  worker loads it) runs every action, every Kubernetes health check and every Kubernetes
  evidence check against the API emulator with a service-account token bound to exactly the
  manifest's rules, which authorizes each request as the API server's RBAC authorizer does: no
  request is refused, every run heals, and every (verb, resource) the role grants was used.
* With ``patch deployments`` taken out of the role, the API server's 403 comes back word for
  word (to raw HTTP and to kubectl), and the worker process's rollout restart fails closed:
  one refused PATCH, nothing else sent.
* The HTTP request -> RBAC verb mapping, and rule matching, as the API server does them.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from activities.kube import KubeActivities
from remediator.app.runtime import build_activities
from remediator.app.temporal import connect
from remediator.audit.brakes import Brakes
from remediator.audit.store import AuditStore
from remediator.domain.actions import ACTIONS
from remediator.domain.messages import RemediationResult, TargetRef
from remediator.domain.playbook import CHECK_NAMES, DIAGNOSIS_NAMES
from remediator.domain.policy import Namespaces
from remediator.domain.runs import workflow_id_for
from remediator.k8s import rbac
from remediator.k8s.client import load_api_client
from remediator.playbook.policy_loader import load_policy
from remediator.sim.kube import Emulator
from remediator.sim.kube import auth as emu_auth
from tests.tls import make_pki
from tests.support import KUBECTL, PERMISSIVE_POLICY, WorkerProcess, alert, alert_signal, playbook, running_worker, start_run, wait_phase

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / rbac.MANIFEST_PATH
TOKEN = "remediator-service-account-token"
USER = "system:serviceaccount:remediator:remediator"
ROLLOUT = {"rollout_status": {}, "timeout": "60s", "interval": "200ms"}


def manifest_rules() -> list[dict]:
    """The rules of the ClusterRole as deployed."""
    return yaml.safe_load(MANIFEST.read_text())["rules"]


def rbac_cluster(tmp_path: Path, rules: list[dict]) -> tuple[Emulator, Path]:
    """A seeded emulator serving HTTPS (kubectl sends a token over TLS only, as to any API
    server) and a kubeconfig whose token is the service account remediator/remediator, bound to
    ``rules`` (as the ClusterRoleBinding binds the ClusterRole)."""
    pki = make_pki(tmp_path / "pki")
    emu = Emulator(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca).start()
    emu.seed_demo()
    assert emu.add_service_account_token(TOKEN, rules) == USER
    return emu, emu.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)


def refused(emu: Emulator) -> list:
    return [(r.method, r.path, r.status) for r in emu.requests() if r.status in (401, 403)]


def permissions_used(emu: Emulator) -> set[rbac.Permission]:
    used = set()
    for r in emu.requests():
        a = rbac.request_attributes(r.method, r.path, r.query)
        if a.is_resource_request:
            used.add(rbac.Permission(a.api_group, a.combined_resource, a.verb))
    return used


# --------------------------------------------------------------------------- (a) the manifest


def test_manifest_is_the_generated_role_and_grants_no_wildcard_and_no_secrets():
    printed = subprocess.run([sys.executable, "-m", "remediator.k8s.rbac"], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=60).stdout
    text = MANIFEST.read_text()
    assert text == printed == rbac.render(), "regenerate: python -m remediator.k8s.rbac > " + rbac.MANIFEST_PATH
    assert text.startswith(rbac.HEADER + "\n")
    role = yaml.safe_load(text)
    assert role == rbac.cluster_role()
    assert (role["apiVersion"], role["kind"], role["metadata"]["name"]) == (
        "rbac.authorization.k8s.io/v1", "ClusterRole", "remediator")
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs, no resourceNames
        values = rule["apiGroups"] + rule["resources"] + rule["verbs"]
        assert not any("*" in v for v in values), rule
        assert not any(r.split("/")[0] in ("secrets", "serviceaccounts", "configmaps") for r in rule["resources"]), rule
        assert not {"watch", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    # The deployment binds it to the service account whose token the tests below use.
    binding = yaml.safe_load((MANIFEST.parent / "clusterrolebinding.yaml").read_text())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "remediator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remediator", "namespace": "remediator"}]
    assert USER == f"system:serviceaccount:{binding['subjects'][0]['namespace']}:{binding['subjects'][0]['name']}"
    # Exactly the permissions some user needs, each needed by someone.
    granted = {rbac.Permission(r["apiGroups"][0], r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert granted == set(rbac.USED_BY) == set().union(*rbac.needs().values())
    assert all(rbac.USED_BY[p] for p in granted)


def test_every_action_check_and_evidence_declares_its_requests_for_every_kind_it_acts_on():
    assert set(rbac.ACTION_REQUESTS) == set(ACTIONS)
    assert set(rbac.CHECK_REQUESTS) == set(CHECK_NAMES)
    assert set(rbac.EVIDENCE_REQUESTS) == set(DIAGNOSIS_NAMES)
    needs = rbac.needs()
    for name, spec in ACTIONS.items():
        for kind in spec.kinds:  # each action touches the kinds it acts on
            resource = rbac.permission("get", kind).resource
            assert any(p.resource.split("/")[0] == resource for p in needs[f"action {name}"]), (name, kind)
    # What a kind maps to is read from the very path KubeClient sends.
    assert rbac.permission("update", "StatefulSet", "scale") == rbac.Permission("apps", "statefulsets/scale", "update")
    assert rbac.permission("create", "Pod", "eviction") == rbac.Permission("", "pods/eviction", "create")
    assert rbac.permission("patch", "Node") == rbac.Permission("", "nodes", "patch")


# --------------------------------------------------------------------------- (b) the engine under the role


async def _heal(client, queue, pb, target: TargetRef) -> RemediationResult:
    """One run to its end: the alert resolves once the steps are done."""
    first = alert(fingerprint=f"rbac-{target.kind.lower()}")
    handle = await start_run(client, queue, pb, first, target=target)
    await wait_phase(handle, "verifying", timeout=60)
    await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
    return await handle.result()


async def test_the_engine_runs_every_action_check_and_evidence_with_exactly_the_role(client, tmp_path):
    emu, kubeconfig = rbac_cluster(tmp_path, manifest_rules())
    try:
        api = load_api_client(str(kubeconfig))  # as the worker loads --kubeconfig
        audit = AuditStore(tmp_path / "audit.db")
        # kube-system too (the permissive test policy denies it), for the DaemonSet's restart.
        policy = load_policy(PERMISSIVE_POLICY).model_copy(update={"namespaces": Namespaces(deny=[])})
        activities = build_activities(api, None, None, audit, None, None, Brakes(audit, policy), None)
        kube = next(a.__self__ for a in activities if isinstance(getattr(a, "__self__", None), KubeActivities))
        kube.eviction_retry_delay, kube.delete_poll_interval = 0.2, 0.05  # as kubectl's, shortened
        pod = {
            o: next(p["metadata"]["name"] for p in emu.list("Pod", ns) if p["metadata"]["name"].startswith(o))
            for ns, o in (("prod", "checkout"), ("prod", "orders-db"), ("kube-system", "node-exporter"))
        }
        evidence = [
            {"name": "rollout", "recent_rollout": {"within": "1h"}},
            {"name": "containers", "container_status": {}},
            {"name": "events", "kube_events": {"type": "any"}},
            {"name": "nodes", "node_conditions": {}},
        ]
        deployment = playbook([
            {"name": "delete", "delete_pod": {"pod": pod["checkout"]}, "health": ROLLOUT},
            {"name": "restart", "rollout_restart": {}, "health": ROLLOUT},
            {"name": "scale", "scale": {"delta": 1, "min_replicas": 1, "max_replicas": 5}, "health": ROLLOUT},
            {"name": "rollback", "rollback": {}, "health": ROLLOUT},
        ], name="rbac-deployment", diagnosis=evidence)
        statefulset = playbook([
            {"name": "delete", "delete_pod": {"pod": pod["orders-db"]}, "health": ROLLOUT},
            {"name": "restart", "rollout_restart": {}, "health": ROLLOUT},
            {"name": "scale", "scale": {"replicas": 3, "min_replicas": 1, "max_replicas": 3}, "health": ROLLOUT},
        ], name="rbac-statefulset", target={"kind": "StatefulSet", "namespace": "prod", "name": "orders-db"},
            diagnosis=evidence[1:])
        daemonset = playbook([
            {"name": "delete", "delete_pod": {"pod": pod["node-exporter"]}, "health": ROLLOUT},
            {"name": "restart", "rollout_restart": {}, "health": ROLLOUT},
        ], name="rbac-daemonset", target={"kind": "DaemonSet", "namespace": "kube-system", "name": "node-exporter"},
            diagnosis=evidence[1:])
        node_check = {"timeout": "60s", "interval": "200ms"}
        node = playbook([
            {"name": "cordon", "cordon": {}, "health": {"node_cordoned": {}, **node_check}},
            {"name": "drain", "drain": {"timeout": "60s"}, "health": {"node_drained": {}, **node_check}},
            {"name": "uncordon", "uncordon": {}, "health": {"node_ready": {}, **node_check}},
        ], name="rbac-node", target={"kind": "Node", "name": "worker-1"}, diagnosis=evidence[1:])
        workloads = [
            (deployment, TargetRef(kind="Deployment", namespace="prod", name="checkout")),
            (statefulset, TargetRef(kind="StatefulSet", namespace="prod", name="orders-db")),
            (daemonset, TargetRef(kind="DaemonSet", namespace="kube-system", name="node-exporter")),
        ]
        async with running_worker(client, activities) as queue:
            results = list(await asyncio.gather(*(_heal(client, queue, pb, t) for pb, t in workloads)))
            # The node last: its drain evicts the workloads' pods, once their rollouts are done.
            results.append(await _heal(client, queue, node, TargetRef(kind="Node", name="worker-1")))

        assert refused(emu) == []
        for result in results:
            assert result.outcome == "healed", (result.target.key, result.reason)
            assert all(s.status == "succeeded" for s in result.steps), result.steps
        for run in audit.list_runs():
            for event in audit.events(run.run_id):
                if event.kind == "evidence":
                    assert event.data.get("error") is None, event.message
        # Every request came with the token, and each change went through.
        assert {r.user for r in emu.requests()} == {USER}
        assert emu.get("Deployment", "checkout", "prod")["spec"]["replicas"] == 4
        assert emu.get("StatefulSet", "orders-db", "prod")["spec"]["replicas"] == 3
        assert any(r.path.endswith("/pods/" + pod["checkout"]) and r.method == "DELETE" for r in emu.requests())
        assert emu.requests(method="POST", path_contains="/eviction")
        assert not emu.get("Node", "worker-1").get("spec", {}).get("unschedulable")
        # Nothing the role grants went unused: the role is no wider than the engine's requests.
        assert permissions_used(emu) == set(rbac.USED_BY)
    finally:
        emu.stop()


# --------------------------------------------------------------------------- (c) one verb short: 403, fail closed

FORBIDDEN = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \\"checkout\\" '
    'is forbidden: User \\"system:serviceaccount:remediator:remediator\\" cannot patch resource \\"deployments\\" in '
    'API group \\"apps\\" in the namespace \\"prod\\"","reason":"Forbidden","details":{"name":"checkout",'
    '"group":"apps","kind":"deployments"},"code":403}'
)
FORBIDDEN_MESSAGE = json.loads(FORBIDDEN)["message"]

PLAYBOOK = """\
name: rbac-restart
match: ['alertname="RbacTest"']
target:
  kind: Deployment
  namespace: '{{ labels.namespace }}'
  name: '{{ labels.deployment }}'
steps:
  - name: restart
    rollout_restart: {}
    health:
      rollout_status: {}
      timeout: 1m
      interval: 300ms
verification_window: 3s
cooldown: 0s
"""


def without_patch_deployments(rules: list[dict]) -> list[dict]:
    out = []
    for rule in rules:
        if rule["apiGroups"] == ["apps"] and rule["resources"] == ["deployments"]:
            rule = {**rule, "verbs": [v for v in rule["verbs"] if v != "patch"]}
        out.append(rule)
    return out


async def test_a_role_without_patch_deployments_gets_the_api_servers_403_and_the_step_fails_closed(tmp_path, temporal):
    emu, kubeconfig = rbac_cluster(tmp_path, without_patch_deployments(manifest_rules()))
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "rbac.yaml").write_text(PLAYBOOK)
    try:
        # The API server's answer, byte for byte.
        answer = httpx.patch(
            f"{emu.url}/apis/apps/v1/namespaces/prod/deployments/checkout",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/merge-patch+json"},
            content=b'{"metadata":{"labels":{"x":"y"}}}', timeout=10,
            verify=ssl.create_default_context(cafile=str(emu.tls_ca)),
        )
        assert (answer.status_code, answer.text) == (403, FORBIDDEN)
        # kubectl with the same token says what it says against a real cluster (its discovery
        # and GET are allowed, the PATCH is not); and no Secret is readable.
        def kubectl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                                  timeout=60)

        restart = kubectl("rollout", "restart", "deployment/checkout", "-n", "prod")
        assert (restart.returncode, restart.stderr) == (1, f"error: failed to patch: {FORBIDDEN_MESSAGE}\n")
        secrets = kubectl("get", "--raw", "/api/v1/namespaces/prod/secrets")  # the emulator serves none anyway
        assert secrets.returncode == 1
        assert secrets.stderr.strip().endswith(
            f'Error from server (Forbidden): secrets is forbidden: User "{USER}" cannot list resource "secrets" in '
            'API group "" in the namespace "prod"'), secrets.stderr
        assert emu.get("Deployment", "checkout", "prod")["metadata"]["generation"] == 2  # unchanged
        emu.clear_requests()

        worker = WorkerProcess(tmp_path, temporal.address, kubeconfig)
        try:
            assert worker.post("firing", alertname="RbacTest").status_code == 200
            handle = (await connect(temporal.address)).get_workflow_handle(
                workflow_id_for("deployment/prod/checkout"), result_type=RemediationResult)
            result = await asyncio.wait_for(handle.result(), 60)
        finally:
            worker.stop()
        assert result.outcome == "failed", result.reason
        assert result.steps[0].status == "failed"
        assert FORBIDDEN_MESSAGE in result.reason
        # One refused PATCH and nothing else: no retry, no other way around (no PUT, no
        # DELETE of pods, no eviction), no other request refused.
        writes = [(r.method, r.path, r.status) for r in emu.requests() if r.method != "GET"]
        assert writes == [("PATCH", "/apis/apps/v1/namespaces/prod/deployments/checkout", 403)]
        assert {r.user for r in emu.requests()} == {USER}
        assert emu.get("Deployment", "checkout", "prod")["metadata"]["generation"] == 2
    finally:
        emu.stop()


# --------------------------------------------------------------------------- (d) how a request maps to RBAC


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/prod/pods/web", {}, ("get", "", "pods", "", "prod", "web")),
    ("GET", "/api/v1/namespaces/prod/pods", {"labelSelector": "app=web"}, ("list", "", "pods", "", "prod", "")),
    ("GET", "/api/v1/pods", {"fieldSelector": "spec.nodeName=worker-1"}, ("list", "", "pods", "", "", "")),
    ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "pods", "", "", "")),
    ("GET", "/api/v1/pods", {"watch": "1"}, ("watch", "", "pods", "", "", "")),
    ("GET", "/api/v1/pods", {"watch": "false"}, ("list", "", "pods", "", "", "")),
    ("GET", "/api/v1/watch/namespaces/prod/pods", {}, ("watch", "", "pods", "", "prod", "")),
    ("GET", "/api/v1/nodes", {"fieldSelector": "metadata.name=worker-1"}, ("list", "", "nodes", "", "", "worker-1")),
    ("GET", "/apis/apps/v1/namespaces/prod/deployments/checkout/scale", {},
     ("get", "apps", "deployments", "scale", "prod", "checkout")),
    ("PUT", "/apis/apps/v1/namespaces/prod/statefulsets/db/scale", {"fieldManager": "remediator"},
     ("update", "apps", "statefulsets", "scale", "prod", "db")),
    ("PATCH", "/api/v1/nodes/worker-1", {}, ("patch", "", "nodes", "", "", "worker-1")),
    ("POST", "/api/v1/namespaces/prod/pods/web/eviction", {}, ("create", "", "pods", "eviction", "prod", "web")),
    ("POST", "/apis/apps/v1/namespaces/prod/deployments", {}, ("create", "apps", "deployments", "", "prod", "")),
    ("DELETE", "/api/v1/namespaces/prod/pods/web", {}, ("delete", "", "pods", "", "prod", "web")),
    ("DELETE", "/api/v1/namespaces/prod/pods", {}, ("deletecollection", "", "pods", "", "prod", "")),
    ("GET", "/api/v1/namespaces/prod", {}, ("get", "", "namespaces", "", "prod", "prod")),
    ("PUT", "/api/v1/namespaces/gone/finalize", {}, ("update", "", "namespaces", "finalize", "gone", "gone")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
])
def test_a_request_maps_to_rbac_attributes_as_the_api_server_maps_it(method, path, query, expected):
    mine = rbac.request_attributes(method, path, query)
    assert mine.is_resource_request
    assert (mine.verb, mine.api_group, mine.resource, mine.subresource, mine.namespace, mine.name) == expected
    emulated = emu_auth.request_info(method, path, {k: [v] for k, v in query.items()})
    assert (emulated.verb, emulated.api_group, emulated.resource, emulated.subresource, emulated.namespace,
            emulated.name) == expected


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/version"), ("GET", "/api"), ("GET", "/api/v1"), ("GET", "/apis"), ("GET", "/apis/apps"),
    ("GET", "/apis/apps/v1"), ("GET", "/openapi/v3"), ("POST", "/healthz"),
])
def test_discovery_and_other_paths_are_non_resource_requests(method, path):
    mine = rbac.request_attributes(method, path)
    emulated = emu_auth.request_info(method, path)
    assert not mine.is_resource_request and not emulated.is_resource_request
    assert mine.verb == emulated.verb == method.lower()


def test_rules_match_as_the_rbac_authorizer_matches_them():
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments", "*/scale"], "verbs": ["get"]},
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["list"], "resourceNames": ["web"]},
        {"apiGroups": [""], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]},
    ]
    cases = [
        (("get", "apps", "deployments"), True),
        (("get", "apps", "deployments", "scale"), True),    # */scale
        (("get", "apps", "statefulsets", "scale"), True),
        (("get", "apps", "statefulsets"), False),
        (("patch", "apps", "deployments"), False),
        (("get", "apps", "deployments", "status"), False),  # a subresource is its own resource
        (("list", "policy", "pods", "", "web"), True),
        (("list", "policy", "pods", "", "db"), False),      # resourceNames
        (("list", "policy", "pods"), False),
        (("delete", "", "secrets"), True),                  # the wildcards remediator's role never has
        (("delete", "", "pods", "eviction"), True),
    ]
    for args, expected in cases:
        assert rbac.allows(rules, *args) is expected, args
        info = emu_auth.RequestInfo(True, "", args[0], "", args[1], "v1", "ns", args[2],
                                    args[3] if len(args) > 3 else "", args[4] if len(args) > 4 else "")
        assert any(emu_auth.rule_allows(r, info) for r in rules) is expected, args
    for path, expected in (("/metrics", True), ("/logs/kubelet", True), ("/logs", False), ("/metrics/x", False)):
        assert rbac.allows(rules, "get", non_resource_path=path) is expected, path
        assert any(emu_auth.rule_allows(r, emu_auth.RequestInfo(False, path, "get")) for r in rules) is expected
    # The role itself: what remediator needs, and nothing next to it.
    role = rbac.RULES
    assert rbac.allows(role, "update", "apps", "deployments", "scale", "checkout")
    assert rbac.allows(role, "create", "", "pods", "eviction", "web")
    assert not rbac.allows(role, "update", "apps", "deployments", "", "checkout")
    assert not rbac.allows(role, "get", "", "secrets", "", "token")
    assert not rbac.allows(role, "watch", "", "pods")
    assert not rbac.allows(role, "create", "", "pods")
    assert not rbac.allows(role, "patch", "apps", "deployments", "status")


def test_the_emulator_answers_a_token_as_its_rules_say(tmp_path):
    """Discovery stays open to the service account; an unknown token is 401; the placeholder
    token and no token keep full access; a list is refused in the API server's words."""
    with Emulator() as emu:
        emu.add_service_account_token(TOKEN, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
        sa = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/version", "/api", "/api/v1", "/apis", "/apis/apps/v1"):
            assert httpx.get(emu.url + path, headers=sa).status_code == 200, path
        listed = httpx.get(emu.url + "/api/v1/namespaces/default/pods", headers=sa)
        assert listed.status_code == 403
        assert listed.json() == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'pods is forbidden: User "{USER}" cannot list resource "pods" in API group "" in the '
                       'namespace "default"',
            "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}
        nodes = httpx.get(emu.url + "/api/v1/nodes", headers=sa).json()
        assert nodes["message"] == (f'nodes is forbidden: User "{USER}" cannot list resource "nodes" in API group "" '
                                    "at the cluster scope")
        assert httpx.get(emu.url + "/api/v1/namespaces/default/pods/none", headers=sa).status_code == 404  # allowed
        metrics_path = httpx.get(emu.url + "/logs", headers=sa).json()
        assert metrics_path["message"] == f'forbidden: User "{USER}" cannot get path "/logs"'
        assert metrics_path["details"] == {}
        unknown = httpx.get(emu.url + "/api/v1/nodes", headers={"Authorization": "Bearer nobody"})
        assert (unknown.status_code, unknown.json()["reason"]) == (401, "Unauthorized")
        assert httpx.get(emu.url + "/api/v1/nodes", headers={"Authorization": "Bearer emulator"}).status_code == 200
        assert httpx.get(emu.url + "/api/v1/nodes").status_code == 200
        assert [(r.status, r.user) for r in emu.requests(path_contains="/api/v1/nodes")] == [
            (403, USER), (401, None), (200, None), (200, None)]
