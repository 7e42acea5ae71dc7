"""The health-check activities (activities.health) against real components.

* rollout status: the emulator over HTTP, each message compared with what the real
  ``kubectl rollout status --watch=false`` prints for the same object at the same moment;
* node ready: the emulator with a NotReady fault;
* PromQL: a real Prometheus (remediator.sim.alerting) scraping the emulator's kube-state-metrics
  ``/metrics``; its own answer for a bad query; a closed port for "unreachable";
* alert resolved: a real Alertmanager fed through its v2 API; a real Prometheus (which has no
  ``/api/v2/alerts``) for a refused query, and the other way round for an answer that is not
  Prometheus' API.

Kubernetes is read through one ``KubeClient`` (remediator.k8s.client), as the worker builds it.

A missing Prometheus or Alertmanager fails those tests with the install hint (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from kubernetes.client import AppsV1Api
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.health import HealthActivities
from tests.support import KUBECTL
from remediator.domain.messages import AlertRef, HealthInput, TargetRef
from remediator.k8s.client import KubeClient
from remediator.sim import alerting as procs
from remediator.sim.kube import Emulator

CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")
ORDERS_DB = TargetRef(kind="StatefulSet", namespace="prod", name="orders-db")
NODE_EXPORTER = TargetRef(kind="DaemonSet", namespace="kube-system", name="node-exporter")
WORKER_2 = TargetRef(kind="Node", name="worker-2")
READY_DEADLINE = 30.0
"""Seconds: upper bound of set-up waits that normally end in about a second."""


@pytest.fixture
def emulator(tmp_path):
    emu = Emulator().start()
    emu.seed_demo()
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")

    def rollout_status(target: TargetRef) -> subprocess.CompletedProcess:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "-n", target.namespace, "rollout", "status",
             f"{target.kind.lower()}/{target.name}", "--watch=false"],
            capture_output=True, text=True, timeout=60,
        )

    emu.rollout_status = rollout_status
    try:
        yield emu
    finally:
        emu.stop()


def check(fn, target: TargetRef, params: dict | None = None, alert: AlertRef | None = None):
    return ActivityEnvironment().run(
        fn, HealthInput(target=target, check=fn.__name__, params=params or {}, alert=alert)
    )


def assert_same_as_kubectl(emulator, health: HealthActivities, target: TargetRef) -> None:
    """Our verdict and message equal kubectl's for the object as it is now (callers use it
    on settled or stalled objects, which do not change between the two reads)."""
    result = check(health.check_rollout_status, target)
    out = emulator.rollout_status(target)
    if result.final and not result.healthy:
        assert out.returncode != 0 and out.stderr.strip() == f"error: {result.message}"
    else:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == result.message


# --------------------------------------------------------------------------- rollout status


def test_rollout_status_settled_objects_match_kubectl(emulator):
    health = HealthActivities(KubeClient(emulator.api_client()))
    for target, message in [
        (CHECKOUT, 'deployment "checkout" successfully rolled out'),
        (ORDERS_DB, "partitioned roll out complete: 2 new pods have been updated..."),
        (NODE_EXPORTER, 'daemon set "node-exporter" successfully rolled out'),
    ]:
        result = check(health.check_rollout_status, target)
        assert result.healthy and not result.final and result.message == message
        assert_same_as_kubectl(emulator, health, target)


def test_rollout_status_waiting_then_progress_deadline(emulator):
    health = HealthActivities(KubeClient(emulator.api_client()))
    apps = AppsV1Api(emulator.api_client())
    emulator.fault_stall_rollout("prod", "checkout")
    # While the stalled rollout is compared with kubectl, its deadline is far away: condition
    # times have whole seconds, so a short one could pass between our read and kubectl's.
    apps.patch_namespaced_deployment(
        "checkout", "prod",
        {"spec": {"progressDeadlineSeconds": 600,
                  "template": {"spec": {"containers": [{"name": "checkout", "image": "registry.example/checkout:1.5.0"}]}}}},
    )
    emulator.wait_until(lambda e: (e.get("Deployment", "checkout", "prod")["status"].get("updatedReplicas") or 0) >= 1)
    waiting = check(health.check_rollout_status, CHECKOUT)
    assert not waiting.healthy and not waiting.final
    assert waiting.message.startswith('Waiting for deployment "checkout" rollout to finish: ')
    assert_same_as_kubectl(emulator, health, CHECKOUT)

    def deadline_exceeded(e: Emulator) -> bool:
        conditions = e.get("Deployment", "checkout", "prod")["status"].get("conditions") or []
        return any(c["type"] == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded" for c in conditions)

    assert not deadline_exceeded(emulator)
    # Then the deadline is cut to 1 s: the rollout, still stalled, exceeds it.
    apps.patch_namespaced_deployment("checkout", "prod", {"spec": {"progressDeadlineSeconds": 1}})
    emulator.wait_until(deadline_exceeded, timeout=READY_DEADLINE)
    failed = check(health.check_rollout_status, CHECKOUT)
    assert not failed.healthy and failed.final
    assert failed.message == 'deployment "checkout" exceeded its progress deadline'
    assert_same_as_kubectl(emulator, health, CHECKOUT)


def test_rollout_status_of_a_missing_target_is_final(emulator):
    health = HealthActivities(KubeClient(emulator.api_client()))
    emulator.clear_requests()
    result = check(health.check_rollout_status, TargetRef(kind="Deployment", namespace="prod", name="nope"))
    assert not result.healthy and result.final and result.message == "deployment/prod/nope not found"
    assert [(r.method, r.path) for r in emulator.requests()] == [
        ("GET", "/apis/apps/v1/namespaces/prod/deployments/nope")
    ]


def test_rollout_status_api_error_is_retryable(emulator):
    health = HealthActivities(KubeClient(emulator.api_client()))
    emulator.fault_api_error("GET", r"/deployments/checkout$", 503)
    with pytest.raises(ApplicationError) as info:
        check(health.check_rollout_status, CHECKOUT)
    assert info.value.type == "KubeTemporaryError" and not info.value.non_retryable
    assert info.value.message.startswith("GET deployment/prod/checkout: 503 Service Unavailable")


# --------------------------------------------------------------------------- node ready


def test_node_ready(emulator):
    health = HealthActivities(KubeClient(emulator.api_client()))
    ok = check(health.check_node_ready, WORKER_2)
    assert ok.healthy and ok.message == "node worker-2 is Ready"
    emulator.fault_node_not_ready("worker-2")
    bad = check(health.check_node_ready, WORKER_2)
    assert not bad.healthy and not bad.final
    assert bad.message.startswith("node worker-2 is not Ready (Ready=False): KubeletNotReady")
    gone = check(health.check_node_ready, TargetRef(kind="Node", name="worker-9"))
    assert not gone.healthy and gone.final and gone.message == "node worker-9 not found"


def test_node_ready_api_error_is_retryable(emulator):
    health = HealthActivities(KubeClient(emulator.api_client()))
    emulator.fault_api_error("GET", r"/api/v1/nodes/worker-2$", 503)
    with pytest.raises(ApplicationError) as info:
        check(health.check_node_ready, WORKER_2)
    assert info.value.type == "KubeTemporaryError" and not info.value.non_retryable
    assert info.value.message.startswith("GET node/worker-2: 503 Service Unavailable")
    assert check(health.check_node_ready, WORKER_2).healthy  # the fault was used up


# --------------------------------------------------------------------------- PromQL


@pytest.mark.e2e
def test_promql_every_sample_compared(prometheus):
    health = HealthActivities(None, prometheus.url)
    ok = check(health.check_promql, CHECKOUT, {
        "query": 'kube_deployment_status_replicas_available{namespace="prod"}', "op": ">=", "threshold": 3})
    assert ok.healthy and ok.message == "all 1 samples >= 3"
    assert ok.observed["samples"][0]["value"] == "3"

    bad = check(health.check_promql, CHECKOUT, {
        "query": "kube_node_spec_unschedulable", "op": ">", "threshold": 0})
    assert not bad.healthy and not bad.final
    assert bad.message.startswith("3 of 3 samples not > 0: kube_node_spec_unschedulable{")


@pytest.mark.e2e
def test_promql_empty_result_follows_on_empty(prometheus):
    health = HealthActivities(None, prometheus.url)
    params = {"query": 'kube_deployment_status_replicas_available{deployment="nope"}', "threshold": 1}
    fail = check(health.check_promql, CHECKOUT, params)
    assert not fail.healthy and fail.message.endswith("returned no samples (on_empty: fail)")
    passed = check(health.check_promql, CHECKOUT, {**params, "on_empty": "pass"})
    assert passed.healthy


@pytest.mark.e2e
def test_promql_bad_query_is_final_with_prometheus_message(prometheus):
    health = HealthActivities(None, prometheus.url)
    query = "sum(kube_pod_info"
    result = check(health.check_promql, CHECKOUT, {"query": query, "threshold": 1})
    own = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}).json()
    assert own["errorType"] == "bad_data"
    assert not result.healthy and result.final
    assert result.message == f"Prometheus rejected the query {query!r}: bad_data: {own['error']}"


@pytest.mark.e2e
def test_promql_scalar_is_judged_and_a_range_vector_is_final(prometheus):
    health = HealthActivities(None, prometheus.url)
    query = 'scalar(kube_deployment_status_replicas_available{namespace="prod",deployment="checkout"})'
    scalar = check(health.check_promql, CHECKOUT, {"query": query, "op": "==", "threshold": 3})
    assert scalar.healthy and scalar.message == "all 1 samples == 3"
    assert scalar.observed == {"samples": [{"metric": {}, "value": "3"}], "op": "==", "threshold": 3.0}

    matrix = check(health.check_promql, CHECKOUT, {"query": "up[1m]", "threshold": 1})
    assert not matrix.healthy and matrix.final
    assert matrix.message == "query 'up[1m]' returned a matrix; an instant vector or scalar is needed"


def test_promql_unreachable_is_retryable():
    url = f"http://127.0.0.1:{procs.free_port()}"
    health = HealthActivities(None, url)
    with pytest.raises(ApplicationError) as info:
        check(health.check_promql, CHECKOUT, {"query": "up", "threshold": 1})
    assert info.value.type == "PrometheusUnavailable" and not info.value.non_retryable
    assert info.value.message.startswith(f"Prometheus at {url} unreachable: ")


@pytest.mark.e2e
def test_promql_answer_that_is_not_prometheus_is_retryable(alertmanager):
    # Alertmanager has no /api/v1/query: it answers 404 "404 page not found" (text/plain)
    health = HealthActivities(None, alertmanager.url + "/")
    with pytest.raises(ApplicationError) as info:
        check(health.check_promql, CHECKOUT, {"query": "up", "threshold": 1})
    assert info.value.type == "PrometheusUnavailable" and not info.value.non_retryable
    assert info.value.message == f"Prometheus at {alertmanager.url} answered HTTP 404 without its API's JSON"


def test_promql_without_prometheus_is_final():
    result = check(HealthActivities(None).check_promql, CHECKOUT, {"query": "up", "threshold": 1})
    assert not result.healthy and result.final and "--prometheus-url" in result.message


# --------------------------------------------------------------------------- alert resolved


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory, alerting_binaries):
    workdir = tmp_path_factory.mktemp("am")
    # The webhook receiver is never reached within these tests (group_wait 1m).
    am = procs.start_alertmanager(workdir, f"http://127.0.0.1:{procs.free_port()}/", group_wait="1m")
    try:
        yield am
    finally:
        am.stop()


def _alert_ref(am_url: str, labels: dict[str, str]) -> AlertRef:
    for _ in range(int(READY_DEADLINE * 4)):
        alerts = httpx.get(f"{am_url}/api/v2/alerts", timeout=5).json()
        match = [a for a in alerts if a["labels"] == labels]
        if match:
            a = match[0]
            return AlertRef(fingerprint=a["fingerprint"], starts_at=a["startsAt"], status="firing", labels=labels)
        time.sleep(0.25)
    raise AssertionError("Alertmanager never listed the alert")


@pytest.mark.e2e
def test_alert_resolved_asks_alertmanager(alertmanager):
    labels = {"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": "checkout-abc"}
    other = {**labels, "pod": "checkout-def"}
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    procs.post_alerts(alertmanager.url, [{"labels": labels, "startsAt": start}, {"labels": other, "startsAt": start}])
    alert = _alert_ref(alertmanager.url, labels)
    health = HealthActivities(None, None, alertmanager.url)

    firing = check(health.check_alert_resolved, CHECKOUT, alert=alert)
    assert not firing.healthy and not firing.final
    assert firing.message == f"alert KubePodCrashLooping ({alert.fingerprint}) is still firing (state active)"

    procs.post_alerts(alertmanager.url, [{"labels": labels, "startsAt": start, "endsAt": datetime.now(timezone.utc)}])
    resolved = check(health.check_alert_resolved, CHECKOUT, alert=alert)
    assert resolved.healthy
    assert resolved.message == f"alert KubePodCrashLooping ({alert.fingerprint}) is no longer active"
    assert resolved.observed == {"active_with_same_name": 1}  # the other pod's alert still fires


def test_alert_resolved_without_alertmanager_relies_on_the_notification():
    alert = AlertRef(fingerprint="0123456789abcdef", starts_at=datetime.now(timezone.utc), status="firing",
                     labels={"alertname": "KubeNodeNotReady"})
    result = check(HealthActivities(None).check_alert_resolved, WORKER_2, alert=alert)
    assert not result.healthy and not result.final
    assert "resolved notification" in result.message and "--alertmanager-url" in result.message


def test_alert_resolved_unreachable_is_retryable():
    alert = AlertRef(fingerprint="0123456789abcdef", starts_at=datetime.now(timezone.utc), status="firing",
                     labels={"alertname": "KubeNodeNotReady"})
    url = f"http://127.0.0.1:{procs.free_port()}"
    health = HealthActivities(None, None, url)
    with pytest.raises(ApplicationError) as info:
        check(health.check_alert_resolved, WORKER_2, alert=alert)
    assert info.value.type == "AlertmanagerUnavailable" and not info.value.non_retryable
    assert info.value.message.startswith(f"Alertmanager at {url} unreachable: ")


@pytest.mark.e2e
def test_alert_resolved_refused_query_is_final(prometheus):
    alert = AlertRef(fingerprint="0123456789abcdef", starts_at=datetime.now(timezone.utc), status="firing",
                     labels={"alertname": "KubeNodeNotReady"})
    # Prometheus has no /api/v2/alerts: a 404, which asking again cannot change
    result = check(HealthActivities(None, None, prometheus.url).check_alert_resolved, WORKER_2, alert=alert)
    assert not result.healthy and result.final
    assert result.message == "Alertmanager refused the query (HTTP 404): 404 page not found"


def test_alert_resolved_without_an_alert_is_final():
    result = check(HealthActivities(None, None, f"http://127.0.0.1:{procs.free_port()}").check_alert_resolved, WORKER_2)
    assert not result.healthy and result.final and result.message == "no alert is attached to this run"
