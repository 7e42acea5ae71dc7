"""End-to-end: the real Alertmanager (and Prometheus) started by remediator.sim.alerting deliver
webhook notifications to a local HTTP receiver.

Proves what the intake relies on: the exact payload Alertmanager sends (parsed with
remediator.domain.alertmanager.WebhookMessage), the Authorization header built from the generated
``http_config``, resolved notifications (``send_resolved``), grouping by alertname and
namespace, and the Prometheus -> Alertmanager -> webhook chain the demo uses.

The binaries come from Debian (``apt-get install prometheus-alertmanager prometheus``, which
``make test`` runs); missing, these tests fail with the install hint.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from remediator.sim import alerting as procs
from remediator.domain.alertmanager import WebhookMessage

DEADLINE = 30.0
"""Seconds: upper bound of a wait that normally ends in 1-3 s (group_wait is 1 s)."""


def e2e(test: Callable) -> Callable:
    """Mark a test ``e2e``; it needs Alertmanager and Prometheus (fails with the install hint
    when one is missing, tests/conftest.py ``alerting_binaries``)."""
    return pytest.mark.e2e(pytest.mark.usefixtures("alerting_binaries")(test))


# --------------------------------------------------------------------------- helpers


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label pairs, each name
    and value followed by the 0xff separator (prometheus/common ``model.LabelSet.Fingerprint``),
    printed as 16 hex digits. An oracle independent of Alertmanager for ``fingerprint``."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name.encode(), labels[name].encode()):
            for byte in part + b"\xff":
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Recorder:
    """A loopback HTTP server that records every request and answers 200 with ``body``."""

    def __init__(self, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.requests: queue.Queue[Captured] = queue.Queue()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.put(
                    Captured(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                )
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float = DEADLINE, context: str = "") -> Captured:
        """The next request, waiting at most ``timeout`` seconds."""
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no request reached http://{self.address} within {timeout:g}s\n{context}"
            ) from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def _message(req: Captured) -> WebhookMessage:
    return WebhookMessage.model_validate(json.loads(req.body))


def _logs(*processes: procs.ManagedProcess) -> str:
    return "\n".join(f"--- {p.name} log:\n{p.log_tail()}" for p in processes)


NOW = datetime.now(timezone.utc).replace(microsecond=0)
LABELS = {
    "alertname": "KubeDeploymentReplicasMismatch",
    "namespace": "prod",
    "deployment": "checkout",
    "severity": "warning",
}
ANNOTATIONS = {"summary": "Deployment prod/checkout has not matched the expected number of replicas."}
PROD_GROUP_KEY = '{}:{alertname="KubeDeploymentReplicasMismatch", namespace="prod"}'
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- Alertmanager


@e2e
def test_bearer_firing_then_resolved(tmp_path: Path, receiver: Recorder) -> None:
    token = "s3cr3t-t0ken"
    starts_at = NOW - timedelta(minutes=2)
    alert = {
        "labels": LABELS,
        "annotations": ANNOTATIONS,
        "startsAt": starts_at,
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
    }
    with procs.start_alertmanager(tmp_path, f"http://{receiver.address}/alerts", bearer_token=token) as am:
        procs.post_alerts(am.url, [alert])
        firing = receiver.next(context=_logs(am))

        ends_at = NOW - timedelta(seconds=1)
        procs.post_alerts(am.url, [{**alert, "endsAt": ends_at}])
        resolved = receiver.next(context=_logs(am))
        # The token lives in an owner-only file; the config only points at it.
        assert token not in am.config_path.read_text()

    assert (firing.method, firing.path) == ("POST", "/alerts")
    assert firing.headers["Authorization"] == f"Bearer {token}"
    assert firing.headers["Content-Type"] == "application/json"
    assert firing.headers["User-Agent"].startswith("Alertmanager/0.")
    msg = _message(firing)
    assert msg.version == "4"
    assert msg.status == "firing"
    assert msg.receiver == procs.RECEIVER == "remediator"
    assert msg.group_key == PROD_GROUP_KEY
    assert msg.group_labels == {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "prod"}
    assert msg.common_labels == LABELS
    assert msg.common_annotations == ANNOTATIONS
    assert msg.external_url == am.url
    assert msg.truncated_alerts == 0
    [a] = msg.alerts
    assert a.status == "firing"
    assert a.labels == LABELS
    assert a.annotations == ANNOTATIONS
    assert a.fingerprint == fingerprint(LABELS)
    assert a.starts_at == starts_at
    # Alertmanager hides the end of a firing alert (types.Alerts): Go's zero time.
    assert a.ends_at == GO_ZERO_TIME
    assert a.generator_url == alert["generatorURL"]

    assert (resolved.method, resolved.path) == ("POST", "/alerts")
    assert resolved.headers["Authorization"] == f"Bearer {token}"
    msg = _message(resolved)
    assert (msg.status, msg.group_key) == ("resolved", PROD_GROUP_KEY)
    [a] = msg.alerts
    assert a.status == "resolved"
    assert a.labels == LABELS
    assert a.fingerprint == fingerprint(LABELS)
    assert (a.starts_at, a.ends_at) == (starts_at, ends_at)
    assert receiver.requests.empty(), "a notification arrived that was neither the firing nor the resolved one"


@e2e
def test_basic_auth_and_grouping_by_alertname_and_namespace(tmp_path: Path, receiver: Recorder) -> None:
    username, password = "alertmanager", "c0rrect:h0rse-battery"
    starts_at = NOW - timedelta(minutes=1)
    cart = {**LABELS, "deployment": "cart"}
    staging = {**LABELS, "namespace": "staging"}
    alerts = [{"labels": labels, "startsAt": starts_at} for labels in (LABELS, cart, staging)]
    staging_key = '{}:{alertname="KubeDeploymentReplicasMismatch", namespace="staging"}'
    requests: list[Captured] = []
    by_group: dict[str, WebhookMessage] = {}  # the latest notification of each group

    def grouped() -> bool:
        return len(getattr(by_group.get(PROD_GROUP_KEY), "alerts", [])) == 2 and staging_key in by_group

    with procs.start_alertmanager(
        tmp_path, f"http://{receiver.address}/hooks/alertmanager", basic_auth=(username, password)
    ) as am:
        procs.post_alerts(am.url, alerts)
        # Alertmanager flushes a group group_wait after its first alert; on a loaded machine the
        # prod group can go out before its second alert was routed to it, and the next flush
        # (group_interval, 1 s) carries both. Read notifications until each group has its alerts.
        deadline = time.monotonic() + DEADLINE
        while not grouped():
            req = receiver.next(timeout=max(deadline - time.monotonic(), 0.1), context=_logs(am))
            requests.append(req)
            message = _message(req)
            by_group[message.group_key] = message

    expected_auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    for req in requests:
        assert (req.method, req.path) == ("POST", "/hooks/alertmanager")
        assert req.headers["Authorization"] == expected_auth
    assert set(by_group) == {PROD_GROUP_KEY, staging_key}

    prod = by_group[PROD_GROUP_KEY]
    assert prod.group_labels == {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "prod"}
    assert prod.common_labels == {"alertname": "KubeDeploymentReplicasMismatch", "namespace": "prod", "severity": "warning"}
    assert sorted((a.labels["deployment"], a.fingerprint) for a in prod.alerts) == sorted(
        [("checkout", fingerprint(LABELS)), ("cart", fingerprint(cart))]
    )
    [only] = by_group[staging_key].alerts
    assert (only.labels, only.fingerprint, only.status) == (staging, fingerprint(staging), "firing")


@e2e
def test_post_alerts_reports_alertmanager_refusal(tmp_path: Path, receiver: Recorder) -> None:
    with procs.start_alertmanager(tmp_path, f"http://{receiver.address}/alerts") as am:
        with pytest.raises(procs.AlertmanagerAPIError, match=r'HTTP 422: \{"code":602,"message":"0.labels in body is required"\}$'):
            procs.post_alerts(am.url, [{"annotations": {"summary": "no labels"}}])
    assert receiver.requests.empty()


@e2e
def test_taken_port_fails_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        # Bound, not listening: the bind conflict is the same and nothing answers /-/ready.
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(procs.ProcessStartError, match=r"(?s)alertmanager exited with code 1.*address already in use"):
            procs.start_alertmanager(tmp_path, "http://127.0.0.1:9/alerts", port=port)


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either a bearer token or basic auth, not both"):
        procs.start_alertmanager(tmp_path, "http://127.0.0.1:9/", bearer_token="t", basic_auth=("u", "p"))
    with pytest.raises(ValueError, match="group_wait: expected a duration such as 30s"):
        procs.start_alertmanager(tmp_path, "http://127.0.0.1:9/", group_wait="soon")
    with pytest.raises(ValueError, match="webhook_url must be an http:// or https:// URL"):
        procs.start_alertmanager(tmp_path, "127.0.0.1:9/alerts")
    with pytest.raises(ValueError, match="scrape target of job 'ksm' must be host:port"):
        procs.start_prometheus(tmp_path, scrape_targets={"ksm": "http://127.0.0.1:8080/metrics"})
    with pytest.raises(ValueError, match="rule file .*missing.yml does not exist"):
        procs.start_prometheus(tmp_path, scrape_targets={}, rule_files=[tmp_path / "missing.yml"])
    assert list(tmp_path.iterdir()) == []


@e2e
def test_deploy_example_config_passes_amtool(amtool: str) -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run([amtool, "check-config", str(example)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    assert " - 2 receivers" in checked.stdout


# --------------------------------------------------------------------------- Prometheus


METRICS = b"""\
# HELP kube_deployment_status_replicas_unavailable The number of unavailable replicas per deployment.
# TYPE kube_deployment_status_replicas_unavailable gauge
kube_deployment_status_replicas_unavailable{namespace="prod",deployment="checkout"} 2
"""

RULES = """\
groups:
  - name: remediator-e2e
    rules:
      - alert: KubeDeploymentReplicasMismatch
        expr: kube_deployment_status_replicas_unavailable > 0
        labels:
          severity: warning
        annotations:
          summary: "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} has {{ $value }} unavailable replicas."
"""


@e2e
def test_prometheus_scrapes_evaluates_and_alerts_through_alertmanager(tmp_path: Path, receiver: Recorder) -> None:
    metrics = Recorder(METRICS, content_type="text/plain; version=0.0.4")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    begun = datetime.now(timezone.utc) - timedelta(seconds=1)
    try:
        with (
            procs.start_alertmanager(tmp_path, f"http://{receiver.address}/alerts", bearer_token="tok") as am,
            procs.start_prometheus(
                tmp_path,
                scrape_targets={"kube-state-metrics": metrics.address},
                rule_files=[rules],
                alertmanager_url=am.url,
            ) as prom,
        ):
            scrape = metrics.next(context=_logs(prom))
            assert (scrape.method, scrape.path) == ("GET", "/metrics")
            assert scrape.headers["User-Agent"].startswith("Prometheus/2.")

            series = {
                "__name__": "kube_deployment_status_replicas_unavailable",
                "namespace": "prod",
                "deployment": "checkout",
                "job": "kube-state-metrics",
                "instance": metrics.address,
            }
            result = _query_until_present(prom, "kube_deployment_status_replicas_unavailable")
            assert [(r["metric"], r["value"][1]) for r in result] == [(series, "2")]

            notification = receiver.next(context=_logs(prom, am))
    finally:
        metrics.close()

    assert notification.headers["Authorization"] == "Bearer tok"
    msg = _message(notification)
    assert (msg.status, msg.group_key) == ("firing", PROD_GROUP_KEY)
    [a] = msg.alerts
    expected_labels = {
        "alertname": "KubeDeploymentReplicasMismatch",
        "namespace": "prod",
        "deployment": "checkout",
        "job": "kube-state-metrics",
        "instance": metrics.address,
        "severity": "warning",
    }
    assert a.status == "firing"
    assert a.labels == expected_labels
    assert a.annotations == {"summary": "Deployment prod/checkout has 2 unavailable replicas."}
    assert a.fingerprint == fingerprint(expected_labels)
    assert a.generator_url.startswith(f"{prom.url}/graph?g0.expr=kube_deployment_status_replicas_unavailable")
    assert begun <= a.starts_at <= datetime.now(timezone.utc)


def _query_until_present(prom: procs.ManagedProcess, query: str) -> list[dict]:
    """``GET /api/v1/query`` until the instant vector is not empty (bounded by DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        answer = httpx.get(f"{prom.url}/api/v1/query", params={"query": query}, timeout=5)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["status"], body["data"]["resultType"]) == ("success", "vector")
        if body["data"]["result"]:
            return body["data"]["result"]
        if time.monotonic() > deadline:
            raise AssertionError(f"{query} returned no series within {DEADLINE:g}s\n{_logs(prom)}")
        time.sleep(0.1)


@e2e
def test_prometheus_with_a_broken_rule_file_fails_with_its_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: broken\n    rules:\n      - alert: X\n        expr: 'sum(('\n")
    with pytest.raises(procs.ProcessStartError, match=r"(?s)prometheus exited with code 1.*rules.yml"):
        procs.start_prometheus(tmp_path, scrape_targets={}, rule_files=[rules])
