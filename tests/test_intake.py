"""Tests of the HTTP intake (remediator.app.intake) over real HTTP against a real Temporal.

The app is served by uvicorn on a loopback port and spoken to with httpx, as Alertmanager
speaks to it. Playbooks are loaded from YAML by the real loader and the audit trail is the
real SQLite store. In place of the real workflow, a stand-in with the same type name
(``RemediationWorkflow``) and ``alert`` signal runs on a uuid task queue and records what it
receives, so the tests check exactly what the intake hands to Temporal without Kubernetes.
The stand-in only records: what the real workflow makes of it (dedup of repeated deliveries,
the remediation, the run's timeline at ``GET /runs/RUN``, an API server that is down) is
checked at the end of this file with the real workflow and the Kubernetes API emulator.
Each test uses its own Kubernetes namespace label, hence its own workflow IDs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from remediator.app.config import Settings
from remediator.app.intake import MAX_BODY_BYTES, WEBHOOK_PATH, create_app
from remediator.audit.store import AuditStore
from remediator.domain.messages import (
    AlertSignal,
    AuditEvent,
    AuditWriteInput,
    RemediationInput,
    RemediationResult,
    RemediationStatus,
)
from remediator.domain.runs import SA_OUTCOME, SA_PLAYBOOK, SA_TARGET, workflow_id_for
from remediator.playbook.loader import load_directory
from tests.support import serve, until

# A payload a real Alertmanager sent (copied from shared/fixtures/alertmanager).
FIXTURE = Path(__file__).parent / "fixtures" / "alertmanager" / "firing-single.json"
TOKEN = "s3cret-token"
BASIC = "alertmanager:pa55:word"

PLAYBOOK = """\
name: restart-on-errors
match:
  - alertname="HighErrorRate"
target:
  kind: Deployment
  namespace: "{{ labels.namespace }}"
  name: "{{ labels.service }}"
steps:
  - name: restart
    rollout_restart: {}
"""


# --------------------------------------------------------------------------- stand-in workflow


@workflow.defn(name="RemediationWorkflow")
class StandInRemediation:
    """Same type name and signal as the real workflow; records its input and every signal,
    deduplicating nothing (the real workflow's dedup: ``test_one_firing_delivered_twice_...``)."""

    def __init__(self) -> None:
        self.signals: list[AlertSignal] = []
        self.input: RemediationInput | None = None

    @workflow.run
    async def run(self, inp: RemediationInput) -> None:
        self.input = inp
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="alert")
    def alert(self, sig: AlertSignal) -> None:
        self.signals.append(sig)

    @workflow.query
    def received(self) -> list[AlertSignal]:
        return self.signals

    @workflow.query
    def started_with(self) -> RemediationInput | None:
        return self.input


# --------------------------------------------------------------------------- helpers


def payload(namespace: str, *, alerts: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """The Alertmanager fixture with its alerts moved to ``namespace``."""
    msg = json.loads(FIXTURE.read_text())
    if alerts is not None:
        msg["alerts"] = alerts
    for a in msg["alerts"]:
        a["labels"]["namespace"] = namespace
    msg.update(fields)
    return msg


def alert(service: str = "checkout", *, fingerprint: str | None = None, status: str = "firing",
          starts_at: str = "2026-11-21T05:37:14.576395237Z", alertname: str = "HighErrorRate") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "service": service, "severity": "critical"},
        "annotations": {"summary": "5xx > 5%"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T05:50:00Z",
        "generatorURL": "http://prom.example/graph?g0.expr=x",
        "fingerprint": fingerprint or uuid.uuid4().hex[:16],
    }


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signals_in_history(client: Client, workflow_id: str, expected: int) -> list[AlertSignal]:
    """Every ``alert`` signal in the workflow's history, decoded, once ``expected`` are there.

    A signal accepted while the stand-in's workflow task is in flight is buffered by the
    server and written to history when that task completes, so this waits (up to 10 s) for
    the count instead of reading once; the caller asserts the exact list.
    """
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        out = []
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attrs = event.workflow_execution_signaled_event_attributes
                assert attrs.signal_name == "alert"
                [sig] = await pydantic_data_converter.decode(attrs.input.payloads, [AlertSignal])
                out.append(sig)
        if len(out) >= expected or asyncio.get_running_loop().time() > deadline:
            return out
        await asyncio.sleep(0.05)


async def assert_not_started(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as err:
        await client.get_workflow_handle(workflow_id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


class Intake:
    """One app under test: its URL, Temporal client, audit store, namespace and task queue."""

    def __init__(self, url: str, client: Client, audit: AuditStore, namespace: str, task_queue: str) -> None:
        self.url = url
        self.client = client
        self.audit = audit
        self.namespace = namespace
        self.task_queue = task_queue
        self.http = httpx.AsyncClient(base_url=url, timeout=30)

    def wf_id(self, service: str = "checkout") -> str:
        return workflow_id_for(f"deployment/{self.namespace}/{service}")

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post(WEBHOOK_PATH, json=body, headers=bearer() if headers is None else headers)

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, app: Any, client: Client, audit: AuditStore, namespace: str, task_queue: str) -> AsyncIterator["Intake"]:
        """Serve ``app`` on loopback; at the end, close the HTTP client and terminate the runs
        still going on ``task_queue``."""
        async with serve(app) as url:
            it = cls(url, client, audit, namespace, task_queue)
            try:
                yield it
            finally:
                await it.http.aclose()
                async for wf in client.list_workflows(f'TaskQueue="{task_queue}" AND ExecutionStatus="Running"'):
                    await client.get_workflow_handle(wf.id).terminate()


@pytest.fixture
def playbook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "playbooks"
    d.mkdir()
    (d / "restart-on-errors.yaml").write_text(PLAYBOOK)
    return d


@pytest.fixture
async def intake(client: Client, playbook_dir: Path, tmp_path: Path) -> AsyncIterator[Intake]:
    task_queue = f"intake-{uuid.uuid4()}"
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    settings = Settings(auth_token=TOKEN, basic_auth=BASIC)
    audit = AuditStore(tmp_path / "audit.db")
    app = create_app(settings, client, load_directory(playbook_dir), audit, task_queue=task_queue)
    async with Worker(
        client, task_queue=task_queue, workflows=[StandInRemediation], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        async with Intake.serving(app, client, audit, namespace, task_queue) as it:
            yield it
    audit.close()


# --------------------------------------------------------------------------- refusals: nothing starts


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing Authorization header"),
        (bearer("wrong"), "bearer token does not match"),
        ({"Authorization": "Basic " + base64.b64encode(b"alertmanager:wrong").decode()}, "basic auth user or password"),
        ({"Authorization": "Basic !!notbase64"}, "not valid base64"),
        ({"Authorization": "Digest abc"}, "'digest' not accepted; use Bearer or Basic"),
    ],
)
async def test_bad_credentials_get_401_and_start_nothing(intake: Intake, headers, reason) -> None:
    resp = await intake.post(payload(intake.namespace), headers=headers)
    assert resp.status_code == 401
    assert reason in resp.json()["error"]
    assert resp.headers["www-authenticate"] == 'Bearer realm="remediator", Basic realm="remediator"'
    await assert_not_started(intake.client, intake.wf_id())


async def test_basic_auth_as_alertmanager_sends_it_is_accepted(intake: Intake) -> None:
    resp = await intake.http.post(
        WEBHOOK_PATH, json=payload(intake.namespace), auth=httpx.BasicAuth("alertmanager", "pa55:word")
    )
    assert resp.status_code == 200, resp.text
    assert [a["disposition"] for a in resp.json()["alerts"]] == ["started"]


async def test_credentials_are_checked_before_the_body(intake: Intake) -> None:
    huge = b"x" * (2 * MAX_BODY_BYTES)
    resp = await intake.http.post(WEBHOOK_PATH, content=huge, headers={"Content-Type": "application/json"})
    assert resp.status_code == 401
    resp = await intake.http.post(WEBHOOK_PATH, content=b"{not json", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 401


async def test_content_type_must_be_json(intake: Intake) -> None:
    body = json.dumps(payload(intake.namespace)).encode()
    resp = await intake.http.post(WEBHOOK_PATH, content=body, headers={**bearer(), "Content-Type": "text/plain"})
    assert resp.status_code == 415
    assert resp.json() == {"error": "Content-Type must be application/json, got text/plain"}
    await assert_not_started(intake.client, intake.wf_id())
    # A charset parameter is fine.
    resp = await intake.http.post(
        WEBHOOK_PATH, content=body, headers={**bearer(), "Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status_code == 200


async def test_body_over_limit_by_content_length_gets_413(intake: Intake) -> None:
    msg = payload(intake.namespace)
    msg["padding"] = "x" * MAX_BODY_BYTES
    resp = await intake.post(msg)
    assert resp.status_code == 413
    assert "over the limit of 1048576 bytes" in resp.json()["error"]
    await assert_not_started(intake.client, intake.wf_id())


async def test_chunked_body_over_limit_gets_413(intake: Intake) -> None:
    msg = payload(intake.namespace)
    msg["padding"] = "x" * MAX_BODY_BYTES
    body = json.dumps(msg).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    resp = await intake.http.post(WEBHOOK_PATH, content=chunks(), headers={**bearer(), "Content-Type": "application/json"})
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413
    assert resp.json() == {"error": "body is over the limit of 1048576 bytes"}
    await assert_not_started(intake.client, intake.wf_id())


async def test_chunked_body_under_limit_is_accepted(intake: Intake) -> None:
    body = json.dumps(payload(intake.namespace)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    resp = await intake.http.post(WEBHOOK_PATH, content=chunks(), headers={**bearer(), "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["alerts"][0]["disposition"] == "started"


async def test_malformed_json_gets_400(intake: Intake) -> None:
    resp = await intake.http.post(
        WEBHOOK_PATH, content=b'{"version": "4", "alerts": [', headers={**bearer(), "Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("body is not valid JSON: Expecting value: line 1 column 29")


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda m: m.update(version="3"), "version: Input should be '4'"),
        (lambda m: m.pop("groupKey"), "groupKey: Field required"),
        (lambda m: m["alerts"][0].pop("startsAt"), "alerts[0].startsAt: Field required"),
        (lambda m: m["alerts"][0].update(status="pending"), "alerts[0].status: Input should be 'firing' or 'resolved'"),
        (lambda m: m["alerts"][0].update(labels=["a"]), "alerts[0].labels: Input should be a valid dictionary"),
    ],
)
async def test_wrong_shape_gets_422_with_field_path(intake: Intake, change, expected) -> None:
    msg = payload(intake.namespace)
    change(msg)
    resp = await intake.post(msg)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error.startswith('not an Alertmanager webhook message version "4": ')
    assert expected in error
    await assert_not_started(intake.client, intake.wf_id())


async def test_json_array_gets_422(intake: Intake) -> None:
    resp = await intake.post([1, 2])
    assert resp.status_code == 422
    assert "(body): Input should be a valid dictionary" in resp.json()["error"]


# --------------------------------------------------------------------------- hand-off


async def test_fixture_payload_starts_one_workflow_with_its_alert(intake: Intake) -> None:
    msg = payload(intake.namespace)
    resp = await intake.post(msg)
    assert resp.status_code == 200, resp.text
    wf_id = intake.wf_id()
    [out] = resp.json()["alerts"]
    assert out["disposition"] == "started"
    assert out["workflow_id"] == wf_id
    assert out["target"] == f"deployment/{intake.namespace}/checkout"
    assert out["playbook"] == "restart-on-errors"
    assert out["fingerprint"] == "32c16fb6eca3387b"

    handle = intake.client.get_workflow_handle(wf_id)
    desc = await handle.describe()
    assert desc.run_id == out["run_id"]
    assert desc.workflow_type == "RemediationWorkflow"
    assert desc.task_queue == intake.task_queue
    assert desc.typed_search_attributes[SA_TARGET] == f"deployment/{intake.namespace}/checkout"
    assert desc.typed_search_attributes[SA_PLAYBOOK] == "restart-on-errors"
    assert desc.typed_search_attributes[SA_OUTCOME] == "running"

    [sig] = await signals_in_history(intake.client, wf_id, 1)
    assert sig.playbook == "restart-on-errors"
    assert sig.alert.fingerprint == "32c16fb6eca3387b"
    assert sig.alert.dedup_key == "32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00"
    assert sig.alert.status == "firing"
    assert sig.alert.ends_at is None  # Go's zero time means "not ended"
    assert sig.alert.receiver == "hook"
    assert sig.alert.group_key == '{}:{alertname="HighErrorRate"}'
    assert sig.alert.external_url == "http://vm:19093"
    assert sig.alert.labels["namespace"] == intake.namespace

    # The stand-in decoded the same input and signal through the real data converter.
    started_with = await handle.query(StandInRemediation.started_with, result_type=RemediationInput)
    assert started_with.target.key == f"deployment/{intake.namespace}/checkout"
    assert started_with.playbook.target.name == "checkout"  # rendered: no template left
    assert started_with.playbook_ref.name == "restart-on-errors"
    assert started_with.simulate is False


async def test_unknown_fields_are_accepted(intake: Intake) -> None:
    msg = payload(intake.namespace, notification_reason="repeat", routeLabels={"team": "a"})
    msg["alerts"][0]["silencedBy"] = []
    resp = await intake.post(msg)
    assert resp.status_code == 200, resp.text
    assert resp.json()["alerts"][0]["disposition"] == "started"


async def test_same_alert_from_two_ha_members_starts_one_workflow(intake: Intake) -> None:
    msg = payload(intake.namespace)
    first, second = await asyncio.gather(intake.post(msg), intake.post(copy.deepcopy(msg)))
    assert first.status_code == second.status_code == 200
    dispositions = sorted(r.json()["alerts"][0]["disposition"] for r in (first, second))
    assert dispositions == ["attached", "started"]
    run_ids = {r.json()["alerts"][0]["run_id"] for r in (first, second)}
    assert run_ids == {(await intake.client.get_workflow_handle(intake.wf_id()).describe()).run_id}
    # Both deliveries reach the one run as signals; the stand-in keeps both, the real workflow
    # folds the second away by dedup_key (test_one_firing_delivered_twice_is_remediated_once).
    sigs = await signals_in_history(intake.client, intake.wf_id(), 2)
    assert [s.alert.dedup_key for s in sigs] == ["32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00"] * 2


async def test_two_alerts_for_one_target_give_one_workflow_two_signals(intake: Intake) -> None:
    a1 = alert("checkout", fingerprint="aaaaaaaaaaaaaaa1")
    a2 = alert("checkout", fingerprint="aaaaaaaaaaaaaaa2", alertname="HighErrorRate")
    a2["labels"]["pod"] = "checkout-1"
    resp = await intake.post(payload(intake.namespace, alerts=[a1, a2]))
    assert resp.status_code == 200, resp.text
    outs = resp.json()["alerts"]
    assert sorted(o["disposition"] for o in outs) == ["attached", "started"]
    assert {o["workflow_id"] for o in outs} == {intake.wf_id()}
    sigs = await signals_in_history(intake.client, intake.wf_id(), 2)
    assert sorted(s.alert.fingerprint for s in sigs) == ["aaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaa2"]
    received = await intake.client.get_workflow_handle(intake.wf_id()).query(
        StandInRemediation.received, result_type=list[AlertSignal]
    )
    assert sorted(s.alert.fingerprint for s in received) == ["aaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaa2"]


async def test_alerts_for_two_targets_start_two_workflows(intake: Intake) -> None:
    resp = await intake.post(payload(intake.namespace, alerts=[alert("checkout"), alert("cart")]))
    assert resp.status_code == 200, resp.text
    assert [(o["disposition"], o["workflow_id"]) for o in resp.json()["alerts"]] == [
        ("started", intake.wf_id("checkout")),
        ("started", intake.wf_id("cart")),
    ]


async def test_firing_already_handled_by_a_run_is_a_duplicate(intake: Intake) -> None:
    msg = payload(intake.namespace)
    dedup_key = "32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00"
    intake.audit.write(
        AuditWriteInput(
            run_id="run-earlier",
            events=[AuditEvent(key="alert/1", at="2026-11-21T05:38:00Z", kind="alert", message="attached",
                               data={"dedup_key": dedup_key})],
        )
    )
    resp = await intake.post(msg)
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["alerts"]
    assert out["disposition"] == "duplicate"
    assert out["run_id"] == "run-earlier"
    await assert_not_started(intake.client, intake.wf_id())
    [rec] = intake.audit.intake_records(kind="duplicate")
    assert (rec.dedup_key, rec.run_id, rec.playbook) == (dedup_key, "run-earlier", "restart-on-errors")


async def test_unmatched_alert_is_recorded_and_acknowledged(intake: Intake) -> None:
    resp = await intake.post(payload(intake.namespace, alerts=[alert(alertname="DiskFull", fingerprint="ffff000011112222")]))
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["alerts"]
    assert (out["disposition"], out["workflow_id"]) == ("unmatched", None)
    [rec] = intake.audit.intake_records(kind="unmatched")
    assert (rec.alertname, rec.fingerprint, rec.playbook) == ("DiskFull", "ffff000011112222", None)
    assert rec.message == "no playbook matches this alert's labels"
    await assert_not_started(intake.client, intake.wf_id())
    metrics_text = (await intake.http.get("/metrics")).text
    # DiskFull is no playbook's alertname: counted as "other", not as a series of its own.
    assert 'remediator_alerts_unmatched_total{alertname="other"}' in metrics_text
    assert 'alertname="DiskFull"' not in metrics_text


async def test_render_failure_is_recorded_and_acknowledged(intake: Intake) -> None:
    a = alert(fingerprint="eeee000011112222")
    del a["labels"]["service"]  # the playbook's target name is "{{ labels.service }}"
    resp = await intake.post(payload(intake.namespace, alerts=[a]))
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["alerts"]
    assert out["disposition"] == "render_failed"
    assert out["playbook"] == "restart-on-errors"
    [rec] = intake.audit.intake_records(kind="render_failed")
    assert rec.fingerprint == "eeee000011112222"
    assert rec.message == out["message"] and "service" in rec.message


async def test_resolved_alert_is_signalled_to_the_running_workflow(intake: Intake) -> None:
    firing = alert(fingerprint="1234123412341234")
    resp = await intake.post(payload(intake.namespace, alerts=[firing]))
    assert resp.json()["alerts"][0]["disposition"] == "started"
    resolved = {**firing, "status": "resolved", "endsAt": "2026-11-21T05:50:00Z"}
    resp = await intake.post(payload(intake.namespace, alerts=[resolved], status="resolved"))
    assert resp.status_code == 200, resp.text
    assert [(o["disposition"], o["workflow_id"]) for o in resp.json()["alerts"]] == [
        ("resolved_signalled", intake.wf_id())
    ]
    sigs = await signals_in_history(intake.client, intake.wf_id(), 2)
    assert [(s.alert.status, s.alert.fingerprint) for s in sigs] == [
        ("firing", "1234123412341234"),
        ("resolved", "1234123412341234"),
    ]
    assert sigs[1].alert.ends_at is not None and sigs[1].alert.ends_at.minute == 50


async def test_resolved_alert_without_a_run_starts_nothing(intake: Intake) -> None:
    resp = await intake.post(payload(intake.namespace, alerts=[alert(status="resolved")], status="resolved"))
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["alerts"]
    assert (out["disposition"], out["workflow_id"]) == ("resolved_no_run", intake.wf_id())
    await assert_not_started(intake.client, intake.wf_id())


async def test_each_alert_is_handled_on_its_own_status(intake: Intake) -> None:
    # A "resolved" group can still carry firing alerts and the other way round.
    resp = await intake.post(
        payload(intake.namespace, alerts=[alert("checkout"), alert("cart", status="resolved")], status="resolved")
    )
    assert [o["disposition"] for o in resp.json()["alerts"]] == ["started", "resolved_no_run"]
    await assert_not_started(intake.client, intake.wf_id("cart"))


# --------------------------------------------------------------------------- Temporal down


async def test_temporal_unreachable_gets_503_and_records_nothing(playbook_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = await Client.connect(f"127.0.0.1:{dead_port}", lazy=True, data_converter=pydantic_data_converter)
    audit = AuditStore(tmp_path / "audit.db")
    app = create_app(
        Settings(auth_token=TOKEN), dead, load_directory(playbook_dir), audit,
        task_queue="unused", rpc_timeout=timedelta(seconds=2),
    )
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            resp = await http.post(WEBHOOK_PATH, json=payload("prod"), headers=bearer())
            assert resp.status_code == 503
            error = resp.json()["error"]
            assert error.startswith("1 of 1 alerts could not be handed to Temporal (signal-with-start "
                                    "remediation/deployment/prod/checkout: ")
            assert "Alertmanager will resend the group" in error
            health = await http.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            # A group whose alerts need no Temporal call is still acknowledged.
            resp = await http.post(WEBHOOK_PATH, json=payload("prod", alerts=[alert(alertname="Other")]), headers=bearer())
            assert resp.status_code == 200
        assert [r.kind for r in audit.intake_records()] == ["unmatched"]
    finally:
        audit.close()


async def test_hung_temporal_gets_503_after_the_rpc_timeout(playbook_dir: Path, tmp_path: Path) -> None:
    # A socket that accepts TCP connections (kernel backlog) but never speaks HTTP/2.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = await Client.connect(
            f"127.0.0.1:{silent.getsockname()[1]}", lazy=True, data_converter=pydantic_data_converter
        )
        audit = AuditStore(tmp_path / "audit.db")
        app = create_app(
            Settings(auth_token=TOKEN), hung, load_directory(playbook_dir), audit,
            task_queue="unused", rpc_timeout=timedelta(seconds=0.5),
        )
        try:
            async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
                resp = await http.post(WEBHOOK_PATH, json=payload("prod"), headers=bearer())
            assert resp.status_code == 503
            assert "no answer from Temporal within 0.5s" in resp.json()["error"]
        finally:
            audit.close()


async def test_healthz_and_metrics(intake: Intake) -> None:
    assert (await intake.http.get("/healthz")).json() == {"status": "ok"}
    await intake.post(payload(intake.namespace))
    text = (await intake.http.get("/metrics")).text
    assert 'remediator_intake_requests_total{code="200"}' in text
    assert 'remediator_alerts_total{disposition="started",status="firing"}' in text
    assert "remediator_intake_handoff_seconds_bucket" in text


# --------------------------------------------------------------------------- with the real workflow

REAL_PLAYBOOK = PLAYBOOK + """\
    health: {rollout_status: {}, timeout: 30s, interval: 200ms}
verification_window: 5s
cooldown: 0s
"""


@pytest.fixture
async def real(client: Client, worker: str, audit: AuditStore, emulator, tmp_path: Path) -> AsyncIterator[Intake]:
    """The intake in front of the real workflow (the shared ``worker``: every real activity,
    the Kubernetes API emulator, the same audit store), for a Deployment ``checkout`` of 2
    replicas in a namespace of the test's own."""
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    emulator.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app": "checkout"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": {"labels": {"app": "checkout"}},
                              "spec": {"containers": [{"name": "checkout", "image": "registry.example/checkout:1.4.2"}]}}},
    })
    emulator.wait_until(lambda e: (e.get("Deployment", "checkout", namespace)["status"].get("availableReplicas") or 0) == 2)
    playbooks = tmp_path / "real-playbooks"
    playbooks.mkdir()
    (playbooks / "restart-on-errors.yaml").write_text(REAL_PLAYBOOK)
    app = create_app(Settings(auth_token=TOKEN), client, load_directory(playbooks), audit, task_queue=worker)
    async with Intake.serving(app, client, audit, namespace, worker) as it:
        yield it


def restarts_in(emulator, namespace: str) -> list:
    return [r for r in emulator.requests(method="PATCH") if r.path == f"/apis/apps/v1/namespaces/{namespace}/deployments/checkout"]


async def resolve_and_finish(real: Intake, msg: dict[str, Any]):
    """Send the firing alerts of ``msg`` as resolved and wait for the run's result."""
    resolved = copy.deepcopy(msg)
    resolved["status"] = "resolved"
    for a in resolved["alerts"]:
        a.update(status="resolved", endsAt="2026-11-21T05:50:00Z")
    handle = real.client.get_workflow_handle(real.wf_id(), result_type=RemediationResult)
    await until(lambda: _phase(handle, "verifying"), "the run to verify")
    assert [o["disposition"] for o in (await real.post(resolved)).json()["alerts"]] == ["resolved_signalled"]
    return await handle.result()


async def _phase(handle, phase: str) -> bool:
    return (await handle.query("status", result_type=RemediationStatus)).phase == phase


async def test_one_firing_delivered_twice_is_remediated_once(real: Intake, emulator) -> None:
    """Both members of an Alertmanager HA pair deliver the same firing: one run, which records
    it once and restarts once; after the run, the same firing again is a recorded duplicate."""
    msg = payload(real.namespace)
    first, second = await asyncio.gather(real.post(msg), real.post(copy.deepcopy(msg)))
    assert sorted(r.json()["alerts"][0]["disposition"] for r in (first, second)) == ["attached", "started"]
    run_id = first.json()["alerts"][0]["run_id"]
    assert second.json()["alerts"][0]["run_id"] == run_id

    result = await resolve_and_finish(real, msg)
    assert result.outcome == "healed", result.reason
    assert result.alerts == ["32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00"]
    alerts = [e for e in real.audit.events(run_id) if e.kind == "alert" and e.data["status"] == "firing"]
    assert [e.data["disposition"] for e in alerts] == ["started"]
    assert len(restarts_in(emulator, real.namespace)) == 1

    again = await real.post(msg)
    [out] = again.json()["alerts"]
    assert (out["disposition"], out["run_id"]) == ("duplicate", run_id)
    desc = await real.client.get_workflow_handle(real.wf_id()).describe()
    assert desc.run_id == run_id  # nothing new started
    assert len(restarts_in(emulator, real.namespace)) == 1


async def test_run_timeline_needs_credentials_and_shows_the_run(real: Intake, emulator) -> None:
    msg = payload(real.namespace)
    [started] = (await real.post(msg)).json()["alerts"]
    result = await resolve_and_finish(real, msg)
    run_id = started["run_id"]
    assert result.outcome == "healed"

    for headers in ({}, bearer("wrong")):
        refused = await real.http.get(f"/runs/{run_id}", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="remediator"'
        assert run_id not in refused.text
    unknown = await real.http.get("/runs/ffffffff", headers=bearer())
    assert (unknown.status_code, unknown.json()) == (404, {"error": "no audited run matches 'ffffffff'"})

    resp = await real.http.get(f"/runs/{run_id[:8]}", headers=bearer())
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    text = resp.text
    lines = [line.strip(" │") for line in text.splitlines()]
    assert f"Run       {run_id}" in lines
    assert f"Target    deployment/{real.namespace}/checkout" in lines
    assert "Outcome   healed  every step succeeded and the alert resolved" in lines
    [patch] = restarts_in(emulator, real.namespace)
    assert f"PATCH /apis/apps/v1/namespaces/{real.namespace}/deployments/checkout" in text
    assert "Content-Type: application/strategic-merge-patch+json" in text
    # The very body the API server received, folded over lines in the timeline.
    assert json.dumps(patch.body, separators=(",", ":")) in "".join(text.split())
    kinds = [line.split()[1] for line in text.splitlines() if line[:1] == "+" or line.lstrip().startswith("+")]
    assert kinds[:2] == ["run_started", "alert"] and kinds[-2:] == ["decision", "outcome"]
    assert {"plan", "mutation", "health"} <= set(kinds)


async def test_the_intake_never_waits_for_kubernetes(real: Intake, emulator) -> None:
    """With the API server down the intake still answers at once (it only talks to Temporal);
    the run waits, retrying its read of the target, and goes on when the API server is back."""
    emulator.api_down()
    try:
        resp = await real.http.post(WEBHOOK_PATH, json=payload(real.namespace), headers=bearer(), timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["alerts"][0]["disposition"] == "started"
        handle = real.client.get_workflow_handle(real.wf_id())

        async def retrying_the_read() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(a.activity_type.name == "describe_target" and a.attempt >= 2 for a in pending)

        await until(retrying_the_read, "the run to retry reading the target")
        [pending] = (await handle.describe()).raw_description.pending_activities
        # (the server keeps a long failure of a pending activity as the cause of a shorter one)
        assert "KubeTemporaryError" in str(pending.last_failure)
        assert "cannot reach the Kubernetes API server" in str(pending.last_failure)
        assert restarts_in(emulator, real.namespace) == []
    finally:
        emulator.api_up()
    await until(lambda: restarts_in(emulator, real.namespace), "the restart once the API server is back")
    assert len(restarts_in(emulator, real.namespace)) == 1
