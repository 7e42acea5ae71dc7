"""Evidence gathering and assessment (activities.diagnosis, remediator.playbook.cel) against real components.

* every evidence check reads the Kubernetes API emulator over HTTP through one ``KubeClient``
  (as the worker builds it, remediator.app.runtime), on a healthy workload and on a broken one
  (crash loop terminating with Error or OOMKilled, NotReady node, deleted node), and the test
  asserts the requests that reached the API server;
* ``promql`` evidence asks a real Prometheus (remediator.sim.alerting) scraping the emulator's
  kube-state-metrics ``/metrics``, with a query rendered from a playbook template;
* ``assess``: confidence by weights and by CEL, step conditions, and every way an
  expression can go wrong failing closed (confidence 0, step skipped);
* CEL load-time checks with the exact ``file:line: field: message`` a person reads.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from kubernetes.client import CoreV1Api
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.diagnosis import DiagnosisActivities, assess_evidence
from remediator.app.runtime import build_activities
from remediator.domain.messages import (
    AlertRef,
    AssessInput,
    DiagnosisInput,
    Evidence,
    TargetRef,
)
from remediator.k8s.client import KubeClient
from remediator.playbook import cel
from remediator.playbook.loader import PlaybookError, load_playbook, render
from remediator.sim.kube import Emulator
from tests.support import permissive_brakes

CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")
ORDERS_DB = TargetRef(kind="StatefulSet", namespace="prod", name="orders-db")
WORKER_1 = TargetRef(kind="Node", name="worker-1")
WORKER_2 = TargetRef(kind="Node", name="worker-2")
READY_DEADLINE = 30.0
"""Seconds: upper bound of set-up waits that normally end in about a second."""




def gather(fn, target: TargetRef = CHECKOUT, params: dict | None = None, name: str | None = None) -> Evidence:
    check = fn.__name__.removeprefix("diagnose_")
    return ActivityEnvironment().run(
        fn, DiagnosisInput(target=target, name=name or check, check=check, params=params or {})
    )


def revision_created(emu: Emulator, revision: int) -> datetime:
    """creationTimestamp of checkout's ReplicaSet with ``revision``."""
    for rs in emu.list("ReplicaSet", "prod"):
        if rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision") == str(revision):
            return datetime.fromisoformat(rs["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    raise AssertionError(f"no ReplicaSet of revision {revision}")


def crashing(emu: Emulator, selector: str, reason: str) -> None:
    """Make checkout's pods crash-loop with ``reason`` and wait until each reports it."""
    assert emu.fault_crashloop_pods("prod", selector, reason=reason) == 3

    def reported(e: Emulator) -> bool:
        pods = [p for p in e.list("Pod", "prod") if p["metadata"]["labels"].get("app") == "checkout"]
        return len(pods) == 3 and all(
            (cs.get("lastState") or {}).get("terminated", {}).get("reason") == reason
            for p in pods
            for cs in p["status"].get("containerStatuses") or []
        )

    emu.wait_until(reported, timeout=READY_DEADLINE)


# --------------------------------------------------------------------------- recent_rollout


def test_recent_rollout_reads_revision_and_replicaset_age(emulator):
    created = revision_created(emulator, 2)
    recent = DiagnosisActivities(KubeClient(emulator.api_client()), None, clock=lambda: created + timedelta(minutes=5))
    emulator.clear_requests()
    evidence = gather(recent.diagnose_recent_rollout, params={"within": "30m"})
    assert evidence.signal is True and evidence.error is None
    assert evidence.summary == "revision 2 rolled out 5m ago (within 30m)"
    assert evidence.value == {
        "revision": 2,
        "rolled_out_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "age_seconds": 300,
        "within_seconds": 1800.0,
    }
    assert [(r.method, r.path, r.query.get("labelSelector")) for r in emulator.requests()] == [
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/checkout", None),
        ("GET", "/apis/apps/v1/namespaces/prod/replicasets", "app=checkout"),
    ]

    old = DiagnosisActivities(KubeClient(emulator.api_client()), None, clock=lambda: created + timedelta(hours=2))
    evidence = gather(old.diagnose_recent_rollout, params={"within": "30m"})
    assert evidence.signal is False and evidence.error is None
    assert evidence.summary == "revision 2 rolled out 2h ago (not within 30m)"


def test_recent_rollout_that_cannot_be_gathered_is_an_error_not_a_signal(emulator):
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    missing = gather(diagnosis.diagnose_recent_rollout, TargetRef(kind="Deployment", namespace="prod", name="gone"))
    assert missing.signal is False
    assert missing.error == "deployment/prod/gone not found"
    assert missing.summary == "could not be gathered: deployment/prod/gone not found"

    wrong_kind = gather(diagnosis.diagnose_recent_rollout, ORDERS_DB)
    assert wrong_kind.error == "recent_rollout cannot examine a StatefulSet; it works on Deployment"

    forbidden = "/apis/apps/v1/namespaces/prod/deployments/checkout$"
    emulator.fault_api_error("GET", forbidden, 403)
    denied = gather(diagnosis.diagnose_recent_rollout)
    assert denied.signal is False and denied.error.startswith("GET deployment/prod/checkout: 403 Forbidden: ")


def test_temporary_api_errors_are_raised_for_retry(emulator):
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    emulator.fault_api_error("GET", "/api/v1/namespaces/prod/pods$", 503)
    with pytest.raises(ApplicationError) as err:
        gather(diagnosis.diagnose_container_status)
    assert err.value.type == "KubeTemporaryError" and not err.value.non_retryable
    assert err.value.message.startswith("LIST Pod in prod: 503 Service Unavailable")
    # the next attempt (the fault was used up) gathers the evidence
    assert gather(diagnosis.diagnose_container_status).error is None

    emulator.fault_api_error("GET", "/api/v1/namespaces/prod/events$", 429)
    with pytest.raises(ApplicationError) as err:
        gather(diagnosis.diagnose_kube_events)
    assert err.value.type == "KubeTemporaryError" and not err.value.non_retryable
    assert err.value.message.startswith("LIST Event in prod: 429 Too Many Requests")


def test_params_of_another_check_are_an_error_not_a_crash():
    evidence = ActivityEnvironment().run(
        DiagnosisActivities(None, None).diagnose_promql,
        DiagnosisInput(target=CHECKOUT, name="crash", check="container_status", params={}),
    )
    assert evidence.signal is False
    assert evidence.error == "invalid container_status parameters: expected PromQLEvidence, got ContainerStatusEvidence"


def test_the_worker_shares_one_kube_client(emulator, audit):
    activities = build_activities(emulator.api_client(), None, None, audit, brakes=permissive_brakes(audit))
    clients = {id(fn.__self__.kube): fn.__self__.kube for fn in activities if hasattr(fn.__self__, "kube")}
    owners = {type(fn.__self__).__name__ for fn in activities if hasattr(fn.__self__, "kube")}
    assert owners == {"KubeActivities", "HealthActivities", "DiagnosisActivities", "BrakesActivities"}
    assert len(clients) == 1 and isinstance(next(iter(clients.values())), KubeClient)


# --------------------------------------------------------------------------- container_status


def test_container_status_of_a_healthy_workload(emulator):
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    emulator.clear_requests()
    evidence = gather(diagnosis.diagnose_container_status)
    assert evidence.signal is False and evidence.error is None
    assert evidence.summary == "3 pods, no container crashing (0 restarts)"
    assert evidence.value == {
        "pods": 3, "restarts": 0, "waiting": {}, "reasons": {}, "exit_codes": {}, "crashing": [],
    }
    assert [(r.method, r.path, r.query.get("labelSelector")) for r in emulator.requests()] == [
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/checkout", None),
        ("GET", "/apis/apps/v1/namespaces/prod/replicasets", "app=checkout"),
        ("GET", "/api/v1/namespaces/prod/pods", "app=checkout"),
    ]


def test_container_status_crash_loop_with_error_supports_the_remediation(emulator):
    crashing(emulator, "app=checkout", "Error")
    evidence = gather(DiagnosisActivities(KubeClient(emulator.api_client()), None).diagnose_container_status)
    assert evidence.signal is True
    assert evidence.value["reasons"] == {"Error": 3}
    assert evidence.value["exit_codes"] == {"1": 3}
    assert evidence.value["waiting"] == {"CrashLoopBackOff": 3}
    assert evidence.value["restarts"] >= 3
    assert {(c["container"], c["waiting"], c["reason"], c["exit_code"]) for c in evidence.value["crashing"]} == {
        ("checkout", "CrashLoopBackOff", "Error", 1)
    }
    assert evidence.summary.startswith("3 containers crashing in 3 pods (Error 3; ")


def test_container_status_oomkilled_is_not_the_code(emulator):
    crashing(emulator, "app=checkout", "OOMKilled")
    evidence = gather(DiagnosisActivities(KubeClient(emulator.api_client()), None).diagnose_container_status)
    assert evidence.signal is False and evidence.error is None
    assert evidence.value["reasons"] == {"OOMKilled": 3}
    assert evidence.value["exit_codes"] == {"137": 3}
    assert evidence.summary.startswith("3 containers crashing in 3 pods (OOMKilled 3; ")
    assert evidence.summary.endswith("; OOMKilled points at a memory limit, not the code")


def test_container_status_of_a_node_reads_the_pods_bound_to_it(emulator):
    emulator.clear_requests()
    evidence = gather(DiagnosisActivities(KubeClient(emulator.api_client()), None).diagnose_container_status, WORKER_1)
    on_node = [p for p in emulator.list("Pod") if p["spec"].get("nodeName") == "worker-1"]
    assert evidence.value["pods"] == len(on_node) >= 2
    assert [(r.path, r.query.get("fieldSelector")) for r in emulator.requests()] == [
        ("/api/v1/pods", "spec.nodeName=worker-1")
    ]


# --------------------------------------------------------------------------- kube_events


def test_kube_events_of_a_healthy_workload(emulator):
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    emulator.clear_requests()
    warnings = gather(diagnosis.diagnose_kube_events, params={"since": "15m", "type": "Warning"})
    assert warnings.signal is False and warnings.summary == "no Warning events in the last 15m"
    events = [r for r in emulator.requests() if r.path == "/api/v1/namespaces/prod/events"]
    assert [r.query["fieldSelector"] for r in events] == [
        "involvedObject.kind=Deployment,involvedObject.name=checkout,involvedObject.namespace=prod",
        "involvedObject.kind=Pod,involvedObject.namespace=prod",
        "involvedObject.kind=ReplicaSet,involvedObject.namespace=prod",
    ]

    everything = gather(diagnosis.diagnose_kube_events, params={"type": "any"})
    assert everything.signal is True
    # the rollout of revision 2 (ScalingReplicaSet on the Deployment, SuccessfulCreate on its
    # ReplicaSets, Scheduled on its pods); nothing about orders-db or node-exporter
    assert set(everything.value["reasons"]) == {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete", "Scheduled"}
    objects = {e["object"].split("/")[0] for e in everything.value["events"]}
    assert objects <= {"deployment", "replicaset", "pod"}
    assert all("orders-db" not in e["object"] for e in everything.value["events"])


def test_kube_events_of_a_crash_loop_and_since(emulator):
    crashing(emulator, "app=checkout", "Error")
    long_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    deployment = emulator.get("Deployment", "checkout", "prod")
    old = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "checkout.old", "namespace": "prod"},
        "involvedObject": {"kind": "Deployment", "namespace": "prod", "name": "checkout",
                           "uid": deployment["metadata"]["uid"], "apiVersion": "apps/v1"},
        "reason": "ProgressDeadlineExceeded", "message": "an hour ago", "type": "Warning",
        "firstTimestamp": long_ago, "lastTimestamp": long_ago, "count": 1,
        "source": {"component": "deployment-controller"},
    }
    emulator.create(old)
    other = {**old, "metadata": {"name": "payments.now", "namespace": "prod"},
             "involvedObject": {**old["involvedObject"], "name": "payments"},
             "firstTimestamp": None, "lastTimestamp": None,
             "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
             "reportingComponent": "deployment-controller", "reportingInstance": "x", "action": "Progressing"}
    emulator.create(other)

    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    recent = gather(diagnosis.diagnose_kube_events, params={"since": "15m"})
    assert recent.signal is True
    assert set(recent.value["reasons"]) == {"BackOff"}
    assert recent.value["count"] == 3  # one BackOff Event per pod, repeats counted in it
    assert recent.value["occurrences"] == sum(e["count"] for e in recent.value["events"])
    assert recent.summary.startswith("3 Warning events in the last 15m: BackOff x")
    assert all(e["object"].startswith("pod/checkout-") for e in recent.value["events"])

    longer = gather(diagnosis.diagnose_kube_events, params={"since": "2h"})
    assert set(longer.value["reasons"]) == {"BackOff", "ProgressDeadlineExceeded"}
    assert longer.value["events"][-1]["message"] == "an hour ago"  # newest first


def test_kube_events_of_a_node(emulator):
    node = emulator.get("Node", "worker-2")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    emulator.create({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "worker-2.notready", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "worker-2", "uid": node["metadata"]["uid"], "apiVersion": "v1"},
        "reason": "NodeNotReady", "message": "Node worker-2 status is now: NodeNotReady", "type": "Normal",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "source": {"component": "node-controller"},
    })
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    emulator.clear_requests()
    evidence = gather(diagnosis.diagnose_kube_events, WORKER_2, {"type": "any"})
    assert evidence.signal is True and evidence.value["reasons"] == {"NodeNotReady": 1}
    assert evidence.summary == "1 event in the last 15m: NodeNotReady x1"
    assert [(r.path, r.query.get("fieldSelector")) for r in emulator.requests()] == [
        ("/api/v1/events", "involvedObject.kind=Node,involvedObject.name=worker-2")
    ]
    assert gather(diagnosis.diagnose_kube_events, WORKER_1, {"type": "any"}).signal is False


# --------------------------------------------------------------------------- node_conditions


def test_node_conditions_healthy_then_not_ready(emulator):
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    healthy = gather(diagnosis.diagnose_node_conditions)
    assert healthy.signal is True
    assert healthy.summary == "3 nodes Ready, no pressure: worker-1, worker-2, worker-3"
    assert gather(diagnosis.diagnose_node_conditions, WORKER_2).summary == "node worker-2 Ready, no pressure"

    emulator.fault_node_not_ready("worker-2")
    workload = gather(diagnosis.diagnose_node_conditions)
    assert workload.signal is False
    assert workload.value["not_ready"] == ["worker-2"] and workload.value["pressure"] == {}
    assert workload.value["nodes"]["worker-2"]["Ready"] == "False"
    assert workload.summary.startswith("worker-2 Ready=False (KubeletNotReady - container runtime network not ready")

    node = gather(diagnosis.diagnose_node_conditions, WORKER_2)
    assert node.signal is False and node.value["not_ready"] == ["worker-2"]
    assert gather(diagnosis.diagnose_node_conditions, WORKER_1).signal is True

    emulator.fault_node_not_ready("worker-3", reason="NodeStatusUnknown")
    unknown = gather(diagnosis.diagnose_node_conditions, TargetRef(kind="Node", name="worker-3"))
    assert unknown.summary == "worker-3 Ready=Unknown (NodeStatusUnknown - Kubelet stopped posting node status.)"


def test_node_conditions_pressure(emulator):
    body = emulator.get("Node", "worker-1")
    for condition in body["status"]["conditions"]:
        if condition["type"] == "MemoryPressure":
            condition.update(status="True", reason="KubeletHasInsufficientMemory")
    CoreV1Api(emulator.api_client()).replace_node_status("worker-1", body)
    evidence = gather(DiagnosisActivities(KubeClient(emulator.api_client()), None).diagnose_node_conditions, WORKER_1)
    assert evidence.signal is False
    assert evidence.value["pressure"] == {"worker-1": ["MemoryPressure"]}
    assert evidence.summary == "worker-1 MemoryPressure"


def test_node_conditions_of_a_node_that_no_longer_exists(emulator):
    nodes = {p["spec"]["nodeName"] for p in emulator.list("Pod", "prod") if p["metadata"]["labels"].get("app") == "checkout"}
    gone = sorted(nodes)[-1]
    CoreV1Api(emulator.api_client()).delete_node(gone)
    diagnosis = DiagnosisActivities(KubeClient(emulator.api_client()), None)
    emulator.clear_requests()
    workload = gather(diagnosis.diagnose_node_conditions)
    assert workload.signal is False and workload.error is None
    assert workload.value["missing"] == [gone] and workload.value["not_ready"] == [gone]
    assert sorted(workload.value["nodes"]) == sorted(nodes - {gone})
    assert workload.summary == f"{gone} no longer exists"
    assert [r.path for r in emulator.requests() if "/nodes/" in r.path] == [f"/api/v1/nodes/{n}" for n in sorted(nodes)]

    node = gather(diagnosis.diagnose_node_conditions, TargetRef(kind="Node", name=gone))
    assert node.signal is False
    assert node.error.startswith(f"GET node/{gone}: 404 Not Found: ")


def test_node_conditions_without_scheduled_pods(emulator):
    emulator.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "idle", "namespace": "prod"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "idle"}},
                 "template": {"metadata": {"labels": {"app": "idle"}},
                              "spec": {"containers": [{"name": "idle", "image": "idle:1"}]}}},
    })
    evidence = gather(
        DiagnosisActivities(KubeClient(emulator.api_client()), None).diagnose_node_conditions,
        TargetRef(kind="Deployment", namespace="prod", name="idle"),
    )
    assert evidence.signal is False and evidence.error is None
    assert evidence.summary == "no node to examine: no pod of the target is scheduled"


# --------------------------------------------------------------------------- promql


PROMQL_PLAYBOOK = """
    name: replicas
    match: ['alertname="KubeDeploymentReplicasMismatch"']
    target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
    diagnosis:
      - name: available
        promql:
          query: 'kube_deployment_status_replicas_available{namespace="{{ labels.namespace }}",deployment="{{ labels.deployment }}"}'
          op: ">="
          threshold: 3
    confidence: {expression: "evidence.available.signal ? 0.9 : 0.2"}
    steps: [{name: restart, rollout_restart: {}}]
"""


@pytest.mark.e2e
def test_promql_evidence_from_a_rendered_template(prometheus, tmp_path: Path):
    path = tmp_path / "replicas.yaml"
    path.write_text(textwrap.dedent(PROMQL_PLAYBOOK).lstrip())
    alert = AlertRef(
        fingerprint="f00d", starts_at=datetime.now(timezone.utc), status="firing",
        labels={"alertname": "KubeDeploymentReplicasMismatch", "namespace": "prod", "deployment": "checkout"},
    )
    target, playbook = render(load_playbook(path), alert)
    check = playbook.diagnosis[0]
    assert check.promql.query == 'kube_deployment_status_replicas_available{namespace="prod",deployment="checkout"}'

    diagnosis = DiagnosisActivities(None, prometheus.url)
    evidence = ActivityEnvironment().run(
        diagnosis.diagnose_promql,
        DiagnosisInput(target=target, name=check.name, check=check.check, params=check.promql.model_dump(), alert=alert),
    )
    assert evidence.signal is True and evidence.summary == "all 1 samples >= 3"
    assert evidence.value["samples"][0]["value"] == "3"
    assessment = assess_evidence(
        AssessInput(evidence=[evidence], confidence=playbook.confidence.model_dump(), alert=alert)
    )
    assert (assessment.confidence, assessment.reason) == (
        0.9, "expression 'evidence.available.signal ? 0.9 : 0.2' = 0.9"
    )


@pytest.mark.e2e
def test_promql_evidence_failing_empty_and_rejected(prometheus):
    diagnosis = DiagnosisActivities(None, prometheus.url)
    failing = gather(diagnosis.diagnose_promql, params={"query": "kube_node_spec_unschedulable", "op": ">", "threshold": 0})
    assert failing.signal is False and failing.error is None
    assert failing.summary.startswith("3 of 3 samples not > 0: kube_node_spec_unschedulable{")

    empty = gather(diagnosis.diagnose_promql, params={"query": 'kube_pod_info{namespace="nowhere"}'})
    assert empty.signal is False and empty.error is None
    assert empty.summary == "query 'kube_pod_info{namespace=\"nowhere\"}' returned no samples"

    rejected = gather(diagnosis.diagnose_promql, params={"query": "sum(("})
    own = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": "sum(("}).json()
    assert rejected.signal is False
    assert rejected.error == f"Prometheus rejected the query 'sum((': bad_data: {own['error']}"

    matrix = gather(diagnosis.diagnose_promql, params={"query": "up[1m]"})
    assert matrix.signal is False
    assert matrix.error == "query 'up[1m]' returned a matrix; an instant vector or scalar is needed"
    assert matrix.summary == f"could not be gathered: {matrix.error}"


def test_promql_evidence_without_or_with_an_unreachable_prometheus():
    missing = gather(DiagnosisActivities(None, None).diagnose_promql, params={"query": "up"})
    assert missing.signal is False
    assert missing.error == "the promql check needs a Prometheus: set --prometheus-url (REMEDIATOR_PROMETHEUS_URL)"

    with pytest.raises(ApplicationError) as err:
        gather(DiagnosisActivities(None, "http://127.0.0.1:9").diagnose_promql, params={"query": "up"})
    assert err.value.type == "PrometheusUnavailable" and not err.value.non_retryable


# --------------------------------------------------------------------------- assess


def ev(name: str, signal: bool, error: str | None = None, **value) -> Evidence:
    return Evidence(name=name, check=name, signal=signal, value=value, summary=f"{name} summary", error=error)


CRASHLOOP_EVIDENCE = [
    ev("recent_rollout", False, age_seconds=7200),
    ev("container_status", True, reasons={"Error": 3}),
    ev("kube_events", True),
]
WEIGHTS = {"weights": {"recent_rollout": 0.5, "container_status": 0.3, "kube_events": 0.2}}


def assess(evidence, confidence=None, conditions=(), alert=None):
    diagnosis = DiagnosisActivities(None, None)
    return ActivityEnvironment().run(
        diagnosis.assess,
        AssessInput(evidence=evidence, confidence=confidence, conditions=list(conditions), alert=alert),
    )


def test_assess_by_weights():
    result = assess(CRASHLOOP_EVIDENCE, WEIGHTS, ["evidence.recent_rollout.signal", "!evidence.recent_rollout.signal"])
    assert result.confidence == pytest.approx(0.5)
    assert result.reason == (
        "confidence 0.50 = (recent_rollout 0.5·0 + container_status 0.3·1 + kube_events 0.2·1) / 1"
    )
    assert result.conditions == [False, True]
    assert result.condition_reasons == [
        "when 'evidence.recent_rollout.signal' = false",
        "when '!evidence.recent_rollout.signal' = true",
    ]


def test_assess_by_weights_counts_evidence_not_gathered_as_zero():
    evidence = [ev("recent_rollout", True, error="403 Forbidden"), CRASHLOOP_EVIDENCE[1]]
    result = assess(evidence, {"weights": {"recent_rollout": 2, "container_status": 1, "kube_events": 1}})
    assert result.confidence == pytest.approx(0.25)
    assert result.reason == (
        "confidence 0.25 = (recent_rollout 2·0 + container_status 1·1 + kube_events 1·0) / 4; "
        "not gathered, counted as 0: recent_rollout, kube_events"
    )
    zero = assess(evidence, {"weights": {"recent_rollout": 0}})
    assert zero.confidence == 0 and zero.reason == "confidence 0 (fail closed): the weights sum to 0 (recent_rollout 0·0)"


def test_assess_by_cel_expression_with_alert_and_values():
    alert = AlertRef(fingerprint="abc", starts_at=datetime.now(timezone.utc), status="firing",
                     labels={"severity": "critical"}, annotations={"summary": "x"})
    expression = (
        'alert.labels.severity == "critical" && evidence.container_status.value.reasons.Error > 2 '
        "? 0.8 : 0.3"
    )
    result = assess(CRASHLOOP_EVIDENCE, {"expression": expression},
                    ['evidence.recent_rollout.value.age_seconds < 1800', None, 'alert.fingerprint == "abc"'],
                    alert=alert)
    assert (result.confidence, result.reason) == (0.8, f"expression {expression!r} = 0.8")
    assert result.conditions == [False, None, True]
    assert result.condition_reasons[1] == ""

    no_rule = assess(CRASHLOOP_EVIDENCE)
    assert (no_rule.confidence, no_rule.reason) == (1.0, "confidence 1 (the playbook does not weigh evidence)")
    integer = assess(CRASHLOOP_EVIDENCE, {"expression": "evidence.kube_events.signal ? 1 : 0"})
    assert integer.confidence == 1.0 and isinstance(integer.confidence, float)


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("1.5", "= 1.5, outside [0, 1]"),
        ("-0.1", "= -0.1, outside [0, 1]"),
        ("evidence.kube_events.signal", "= true, not a number in [0, 1]"),
        ('"0.9"', '= "0.9", not a number in [0, 1]'),
        ("double('nan')", "= nan, not a number in [0, 1]"),
        ("evidence.missing.signal ? 1.0 : 0.0", "failed: no such member in mapping: 'missing'"),
        ("1 / 0", "failed: modulus or divide by zero"),
    ],
)
def test_assess_expression_fails_closed(expression, why):
    result = assess(CRASHLOOP_EVIDENCE, {"expression": expression})
    assert result.confidence == 0.0
    assert result.reason == f"confidence 0 (fail closed): expression {expression!r} {why}"


@pytest.mark.parametrize(
    ("condition", "why"),
    [
        ("1", "= 1, not a bool"),
        ("evidence.recent_rollout.summary", '= "recent_rollout summary", not a bool'),
        ("evidence.recent_rollout.value.nope", "failed: no such member in mapping: 'nope'"),
        ("evidence.nothing.signal", "failed: no such member in mapping: 'nothing'"),
        ("evidence.recent_rollout.signal &&", "failed: CEL syntax error: unexpected end of expression"),
    ],
)
def test_assess_condition_fails_closed(condition, why):
    result = assess(CRASHLOOP_EVIDENCE, WEIGHTS, [condition])
    assert result.conditions == [False]
    assert result.condition_reasons == [f"when {condition!r} {why}; the step is skipped (fail closed)"]


def test_cel_error_shortcircuit_follows_cel_semantics():
    # CEL's commutative || and &&: an error on one side is absorbed when the other decides
    assert cel.evaluate("evidence.nope.signal || true", {"evidence": {}}) is True
    assert assess(CRASHLOOP_EVIDENCE, None, ["false && evidence.nope.signal"]).conditions == [False]


# --------------------------------------------------------------------------- CEL at load time


def test_check_expression_messages():
    declared = ["recent_rollout", "container_status"]
    cel.check_expression("evidence.recent_rollout.signal && [1, 2].exists(x, x > 1)", declared)
    cel.check_expression('evidence["container_status"].value.restarts > 3 && type(1) == int', declared)
    cases = {
        "evidence.recent_rollout.signal &&& true": "CEL syntax error: unexpected character '&' at column 34",
        "evidence.recent_rollout.signal ? 0.9": "CEL syntax error: unexpected end of expression (expected ':')",
        "": "CEL syntax error: the expression is empty",
        "evidnce.recent_rollout.signal": (
            "unknown name 'evidnce' (did you mean 'evidence'?); CEL expressions can use evidence and alert"
        ),
        "evidence.recent_rolout.signal": (
            "evidence.recent_rolout is not declared in diagnosis (did you mean 'recent_rollout'?); "
            "declared: recent_rollout, container_status"
        ),
        'evidence["kube_events"].signal': (
            'evidence["kube_events"] is not declared in diagnosis; declared: recent_rollout, container_status'
        ),
    }
    for text, message in cases.items():
        with pytest.raises(ValueError) as err:
            cel.check_expression(text, declared)
        assert str(err.value) == message
    with pytest.raises(ValueError, match="^evidence.a is not declared in diagnosis; the playbook has no diagnosis$"):
        cel.check_expression("evidence.a.signal", [])


def test_loader_reports_cel_problems_with_file_line_and_field(tmp_path: Path):
    path = tmp_path / "cel.yaml"
    path.write_text(textwrap.dedent("""
        name: cel-problems
        match: ['alertname="KubePodCrashLooping"']
        target: {kind: Deployment, namespace: prod, name: checkout}
        diagnosis:
          - name: rollout
            recent_rollout: {within: 30m}
        confidence:
          expression: "evidence.rollout.signal ? 0.9"
        steps:
          - name: undo
            when: "evidence.rolout.signal"
            rollback: {}
    """).lstrip())
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:8: confidence.expression: CEL syntax error: unexpected end of expression (expected ':')",
        f"{path}:11: steps[0].when: evidence.rolout is not declared in diagnosis (did you mean 'rollout'?); "
        "declared: rollout",
    ]
