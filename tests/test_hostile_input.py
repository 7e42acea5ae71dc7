"""Hostile input to the intake: a clear 4xx and nothing started, bounded resources, large groups.

The intake is served as the worker process serves it (remediator.app.serving.intake_server:
the request-head timeout, the connection cap) on loopback, in front of the session's real
Temporal dev server; no worker polls the task queue, so what is checked is exactly what the
intake hands to Temporal. Payloads are the Alertmanager fixture of tests/test_intake.py,
mutated: each case of the issue ("Hostile input gets a clear 4xx and starts nothing") is a
named test with its exact status and message, then a property-based test (hypothesis) posts
2,000 structural mutations of valid payloads and checks that none gets a 5xx and that no
workflow starts from one Alertmanager could not have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from prometheus_client import REGISTRY
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from remediator.app import metrics
from remediator.app.config import Settings
from remediator.app.handoff import Handoff
from remediator.app.intake import WEBHOOK_PATH, create_app
from remediator.app.runtime import new_handoff_worker
from remediator.app.serving import intake_server
from remediator.audit.store import AuditStore
from remediator.domain.messages import HandoffSummary
from remediator.playbook.loader import load_directory
from tests.support import DelayProxy, serve
from workflows.handoff import handoff_task_queue
from tests.test_intake import PLAYBOOK, TOKEN, Intake, alert, assert_not_started, bearer, payload

READ_TIMEOUT = 1.0
"""Seconds: the test intake's read_timeout (the default is 10 s)."""

NOT_A_MESSAGE = 'not an Alertmanager webhook message version "4": '


@contextlib.asynccontextmanager
async def served(app: Any, settings: Settings) -> AsyncIterator[str]:
    """Serve ``app`` as the worker does (intake_server) on a free loopback port; the base URL."""
    # log_config=None as the worker: uvicorn's errors reach the root logger (and caplog).
    async with serve(app, intake_server(app, settings, log_level="warning", log_config=None)) as url:
        yield url


async def terminate_all(client: Client, task_queue: str) -> None:
    """Terminate every running workflow of ``task_queue``, 32 at a time."""
    slots = asyncio.Semaphore(32)

    async def one(wf_id: str) -> None:
        async with slots:
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(wf_id).terminate()

    ids = [wf.id async for wf in client.list_workflows(f'TaskQueue="{task_queue}" AND ExecutionStatus="Running"')]
    await asyncio.gather(*(one(i) for i in ids))


async def workflows_on(client: Client, task_queue: str) -> set[str]:
    return {wf.id async for wf in client.list_workflows(f'TaskQueue="{task_queue}"')}


@contextlib.asynccontextmanager
async def hostile_intake(client: Client, tmp_path: Path, **config: Any) -> AsyncIterator[Intake]:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir(exist_ok=True)
    (playbooks / "restart-on-errors.yaml").write_text(PLAYBOOK)
    task_queue = f"hostile-{uuid.uuid4()}"
    settings = Settings(auth_token=TOKEN, read_timeout=timedelta(seconds=READ_TIMEOUT), **config)
    audit = AuditStore(tmp_path / "audit.db")
    app = create_app(settings, client, load_directory(playbooks), audit, task_queue=task_queue)
    async with served(app, settings) as url:
        it = Intake(url, client, audit, f"ns-{uuid.uuid4().hex[:10]}", task_queue)
        try:
            yield it
        finally:
            await it.http.aclose()
            await terminate_all(client, task_queue)
            audit.close()


@pytest.fixture
async def intake(client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Intake]:
    caplog.set_level(logging.INFO)
    async with hostile_intake(client, tmp_path) as it:
        yield it
    # A sender's mistake is one line in the log, never a traceback or an error.
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def post_raw(intake: Intake, body: bytes | str) -> httpx.Response:
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return await intake.http.post(WEBHOOK_PATH, content=body, headers={**bearer(), "Content-Type": "application/json"})


async def assert_refused(intake: Intake, body: bytes | str, status: int, error: str) -> None:
    """``body`` is answered ``status`` with exactly ``error``; nothing started or recorded."""
    resp = await post_raw(intake, body)
    assert (resp.status_code, resp.json()) == (status, {"error": error})
    await assert_not_started(intake.client, intake.wf_id())
    assert await workflows_on(intake.client, intake.task_queue) == set()
    assert intake.audit.intake_records() == []


def fixture_text(intake: Intake) -> str:
    """The fixture payload as JSON text, for edits a dict cannot hold (duplicate keys)."""
    return json.dumps(payload(intake.namespace))


# --------------------------------------------------------------------------- 500s that were


async def test_json_nested_1000_levels_gets_422(intake: Intake) -> None:
    body = fixture_text(intake)[:-1] + ', "extra": ' + "[" * 1000 + "]" * 1000 + "}"
    await assert_refused(intake, body, 422, NOT_A_MESSAGE + "extra[0][0][0]...: nested deeper than 32 levels")


async def test_json_nested_200000_levels_gets_422(intake: Intake) -> None:
    # Deeper than json's recursion limit: refused without a path.
    body = fixture_text(intake)[:-1] + ', "extra": ' + "[" * 200_000 + "]" * 200_000 + "}"
    await assert_refused(intake, body, 422, NOT_A_MESSAGE + "(body): nested deeper than 32 levels")


async def test_json_nested_40_levels_gets_422_naming_the_field(intake: Intake) -> None:
    body = fixture_text(intake)[:-1] + ', "extra": ' + '{"a":' * 40 + "1" + "}" * 40 + "}"
    await assert_refused(intake, body, 422, NOT_A_MESSAGE + "extra.a.a.a...: nested deeper than 32 levels")


async def test_lone_surrogate_in_a_label_value_gets_422(intake: Intake) -> None:
    body = fixture_text(intake).replace('"service": "checkout"', '"service": "check\\ud800out"')
    await assert_refused(
        intake, body, 422,
        NOT_A_MESSAGE + 'alerts[0].labels.service: "check\\ud800out" is not valid UTF-8 (lone surrogate \\ud800 at character 5)',
    )


async def test_lone_surrogate_in_a_label_name_gets_422(intake: Intake) -> None:
    body = fixture_text(intake).replace('"service": "checkout"', '"serv\\udc00ice": "checkout"')
    await assert_refused(
        intake, body, 422,
        NOT_A_MESSAGE + 'alerts[0].labels: key "serv\\udc00ice" is not valid UTF-8 (lone surrogate \\udc00 at character 4)',
    )


async def test_starts_at_at_the_end_of_time_gets_422(intake: Intake) -> None:
    msg = payload(intake.namespace)
    msg["alerts"][0]["startsAt"] = "9999-12-31T23:00:00-05:00"
    await assert_refused(
        intake, json.dumps(msg), 422,
        NOT_A_MESSAGE + 'alerts[0].startsAt: "9999-12-31T23:00:00-05:00" is out of range: expected a time from '
        "1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z",
    )


async def test_integer_of_5000_digits_gets_422(intake: Intake) -> None:
    body = fixture_text(intake).replace('"truncatedAlerts": 0', '"truncatedAlerts": ' + "7" * 5000)
    await assert_refused(
        intake, body, 422, NOT_A_MESSAGE + "truncatedAlerts: a number of 5000 characters is out of range (at most 20)"
    )


async def test_body_that_is_not_utf8_gets_400(intake: Intake) -> None:
    body = fixture_text(intake).encode().replace(b'"checkout"', b'"check\xffout"')
    offset = body.index(b"\xff")
    await assert_refused(intake, body, 400, f"body is not valid UTF-8: byte 0xff at offset {offset}")


async def test_nan_gets_400(intake: Intake) -> None:
    body = fixture_text(intake).replace('"truncatedAlerts": 0', '"truncatedAlerts": NaN')
    await assert_refused(intake, body, 400, "body is not valid JSON: truncatedAlerts: NaN is not a JSON value")


# --------------------------------------------------------------------------- what Alertmanager never sends


async def test_duplicate_keys_get_422_naming_the_key(intake: Intake) -> None:
    body = fixture_text(intake).replace(
        f'"namespace": "{intake.namespace}"', f'"namespace": "{intake.namespace}", "namespace": "kube-system"', 1
    )
    await assert_refused(intake, body, 422, NOT_A_MESSAGE + 'alerts[0].labels: duplicate key "namespace"')
    await assert_not_started(intake.client, "remediation/deployment/kube-system/checkout")


async def test_duplicate_top_level_key_gets_422(intake: Intake) -> None:
    body = fixture_text(intake)[:-1] + ', "status": "resolved"}'
    await assert_refused(intake, body, 422, NOT_A_MESSAGE + '(body): duplicate key "status"')


@pytest.mark.parametrize(
    "starts_at, reason",
    [
        (0, "expected an RFC 3339 time string with a zone, got int"),
        (1500000000, "expected an RFC 3339 time string with a zone, got int"),
        (1500000000.5, "expected an RFC 3339 time string with a zone, got float"),
        ("2026-11-21", 'expected an RFC 3339 time with a zone (2026-11-21T05:37:14.576Z), got "2026-11-21"'),
        ("2026-11-21T05:37:14", 'expected an RFC 3339 time with a zone (2026-11-21T05:37:14.576Z), got "2026-11-21T05:37:14"'),
        ("2026-11-21 05:37:14Z", 'expected an RFC 3339 time with a zone (2026-11-21T05:37:14.576Z), got "2026-11-21 05:37:14Z"'),
        ("2026-02-30T05:37:14Z", '"2026-02-30T05:37:14Z" is not a valid time: day is out of range for month'),
        ("0001-01-01T00:00:00Z", '"0001-01-01T00:00:00Z" is out of range: expected a time from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z'),
    ],
    ids=["zero", "unix-seconds", "float", "date-only", "no-zone", "space", "no-such-day", "go-zero-time"],
)
async def test_timestamps_alertmanager_never_sends_get_422(intake: Intake, starts_at: Any, reason: str) -> None:
    msg = payload(intake.namespace)
    msg["alerts"][0]["startsAt"] = starts_at
    await assert_refused(intake, json.dumps(msg), 422, NOT_A_MESSAGE + f"alerts[0].startsAt: {reason}")


async def test_ends_at_go_zero_time_and_zones_are_accepted(intake: Intake) -> None:
    msg = payload(intake.namespace)
    msg["alerts"][0]["startsAt"] = "2026-11-21T06:37:14.576395237+01:00"
    assert msg["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    resp = await intake.post(msg)
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["alerts"]
    assert (out["disposition"], out["startsAt"]) == ("started", "2026-11-21T06:37:14.576395+01:00")


@pytest.mark.parametrize(
    "name, shown",
    [("serv-ice", '["serv-ice"]: "serv-ice"'), ("1st", '["1st"]: "1st"'), ("", '[""]: ""'), ("é", '["\\xe9"]: "\\xe9"')],
    ids=["dash", "digit-first", "empty", "non-ascii"],
)
async def test_label_names_prometheus_refuses_get_422(intake: Intake, name: str, shown: str) -> None:
    msg = payload(intake.namespace)
    msg["alerts"][0]["labels"][name] = "x"
    await assert_refused(
        intake, json.dumps(msg), 422,
        NOT_A_MESSAGE + f"alerts[0].labels{shown} is not a valid label name: expected [a-zA-Z_][a-zA-Z0-9_]*",
    )


async def test_annotation_value_that_is_not_a_string_gets_422(intake: Intake) -> None:
    msg = payload(intake.namespace)
    msg["commonAnnotations"]["summary"] = 5
    await assert_refused(intake, json.dumps(msg), 422, NOT_A_MESSAGE + "commonAnnotations.summary: Input should be a valid string")


# --------------------------------------------------------------------------- rendered names


@pytest.mark.parametrize("service", ["checkout\n", "checkout ", " checkout", "Checkout"], ids=["newline", "trailing-space", "leading-space", "upper"])
async def test_target_name_that_is_not_exactly_a_kubernetes_name_is_render_failed(intake: Intake, service: str) -> None:
    resp = await intake.post(payload(intake.namespace, alerts=[alert(service, fingerprint="dddd000011112222")]))
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["alerts"]
    message = f"playbook restart-on-errors: target.name: rendered to {service!r}, which is not a valid Kubernetes Deployment name"
    assert (out["disposition"], out["workflow_id"], out["message"]) == ("render_failed", None, message)
    [rec] = intake.audit.intake_records(kind="render_failed")
    assert (rec.fingerprint, rec.message) == ("dddd000011112222", message)
    await assert_not_started(intake.client, intake.wf_id("checkout"))
    assert await workflows_on(intake.client, intake.task_queue) == set()


async def test_namespace_with_a_trailing_newline_is_render_failed(intake: Intake) -> None:
    resp = await intake.post(payload(intake.namespace + "\n"))
    [out] = resp.json()["alerts"]
    assert (resp.status_code, out["disposition"]) == (200, "render_failed")
    assert out["message"] == (
        f"playbook restart-on-errors: target.namespace: rendered to {intake.namespace + chr(10)!r}, "
        "which is not a valid Kubernetes namespace"
    )
    await assert_not_started(intake.client, intake.wf_id())


# --------------------------------------------------------------------------- metrics cardinality


async def test_unmatched_alertnames_do_not_grow_the_metrics_page(intake: Intake) -> None:
    async def page() -> str:
        return (await intake.http.get("/metrics")).text

    # Every series an unmatched alert touches exists once the first one is counted.
    assert (await intake.post(payload(intake.namespace, alerts=[alert(alertname="Warmup")]))).status_code == 200
    before = await page()
    for batch in range(6):  # 300 distinct alertnames of 10 KB each
        alerts = [alert(alertname=f"Unmatched{batch:02d}{i:03d}" + "x" * 10_000) for i in range(50)]
        resp = await intake.post(payload(intake.namespace, alerts=alerts))
        assert resp.status_code == 200, resp.text[:200]
        assert {a["disposition"] for a in resp.json()["alerts"]} == {"unmatched"}
    after = await page()
    assert "Unmatched" not in after
    assert 'remediator_alerts_unmatched_total{alertname="other"}' in after
    assert len(after) - len(before) < 200  # only counter values changed
    assert len(intake.audit.intake_records(kind="unmatched", limit=1000)) == 301


# --------------------------------------------------------------------------- slow clients


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout=within)


async def test_a_client_sending_headers_slowly_gets_408_and_is_closed(intake: Intake) -> None:
    host, port = intake.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(50):
                await asyncio.sleep(0.2)
                writer.write(b"X")
                await writer.drain()

    dribbling = asyncio.create_task(trickle())
    answer = await read_until_closed(reader, within=READ_TIMEOUT + 2)
    dribbling.cancel()
    writer.close()
    assert time.monotonic() - started < READ_TIMEOUT + 1
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b'{"error": "request headers not received within 1s"}')


async def test_a_connection_that_sends_nothing_is_closed(intake: Intake) -> None:
    host, port = intake.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    assert await read_until_closed(reader, within=READ_TIMEOUT + 2) == b""
    assert time.monotonic() - started < READ_TIMEOUT + 1
    writer.close()


async def test_a_client_sending_its_body_slowly_gets_408(intake: Intake) -> None:
    host, port = intake.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\n" + b'{"version": '
    )
    started = time.monotonic()
    answer = await read_until_closed(reader, within=READ_TIMEOUT + 2)
    writer.close()
    assert time.monotonic() - started < READ_TIMEOUT + 1
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "body not received within 1s (12 bytes arrived)"}
    await assert_not_started(intake.client, intake.wf_id())


async def test_400_slow_connections_are_all_closed_within_seconds(client: Client, tmp_path: Path) -> None:
    async with hostile_intake(client, tmp_path, max_connections=100) as intake:
        host, port = intake.url.removeprefix("http://").split(":")
        head = b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer " + TOKEN.encode()

        async def slow(i: int) -> tuple[float, bytes]:
            reader, writer = await asyncio.open_connection(host, int(port))
            started = time.monotonic()
            # Half send their headers a byte at a time, half a body that never ends.
            writer.write(head + (b"\r\nX-" if i % 2 else b"\r\nContent-Length: 100000\r\n\r\n{"))
            try:
                while not reader.at_eof():
                    with contextlib.suppress(asyncio.TimeoutError):
                        answer = await asyncio.wait_for(reader.read(), timeout=0.3)
                        return time.monotonic() - started, answer
                    writer.write(b"a")
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
            return time.monotonic() - started, b""

        results = await asyncio.wait_for(asyncio.gather(*(slow(i) for i in range(400))), timeout=20)
        assert max(seconds for seconds, _ in results) < READ_TIMEOUT + 3
        statuses = {answer[:12] for _, answer in results}
        # 408 (head or body too slow), or 503 for a request beyond the 100 connections served.
        assert statuses <= {b"HTTP/1.1 408", b"HTTP/1.1 503", b""}, statuses
        # The intake serves Alertmanager again as soon as they are gone.
        resp = await intake.post(payload(intake.namespace))
        assert resp.status_code == 200, resp.text
        assert resp.json()["alerts"][0]["disposition"] == "started"


# --------------------------------------------------------------------------- large groups


def group(namespace: str, n: int, tag: str) -> dict[str, Any]:
    return payload(namespace, alerts=[alert(f"svc-{i}", fingerprint=f"{tag}{i:012x}") for i in range(n)])


@contextlib.asynccontextmanager
async def handoff_intake(
    client: Client, tmp_path: Path, *, through: Client | None = None, rpc_timeout: timedelta = timedelta(seconds=5)
) -> AsyncIterator[tuple[Intake, Handoff]]:
    """An intake and the worker of its hand-off workflows, sharing one Handoff as the engine
    does; ``through``: the client the hand-over calls Temporal with (default ``client``)."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir(exist_ok=True)
    (playbooks / "restart-on-errors.yaml").write_text(PLAYBOOK)
    task_queue = f"hostile-{uuid.uuid4()}"
    settings = Settings(auth_token=TOKEN)
    audit = AuditStore(tmp_path / "audit.db")
    handoff = Handoff(settings, through or client, load_directory(playbooks), audit, task_queue=task_queue,
                      rpc_timeout=rpc_timeout)
    app = create_app(settings, through or client, handoff.playbooks, audit, task_queue=task_queue, handoff=handoff)
    async with served(app, settings) as url, new_handoff_worker(client, task_queue, handoff):
        it = Intake(url, client, audit, f"ns-{uuid.uuid4().hex[:10]}", task_queue)
        try:
            yield it, handoff
        finally:
            await it.http.aclose()
            await terminate_all(client, task_queue)
            audit.close()


async def test_a_group_of_1000_distinct_alerts_is_handed_over_in_one_call(client: Client, tmp_path: Path) -> None:
    """The group goes to Temporal as one hand-off workflow (how long the answer takes is a
    figure of ``make bench`` (5), against Alertmanager's 10 s webhook timeout, not an assertion
    here); its activity starts the 1,000 runs; the resend is answered from the record."""
    async with handoff_intake(client, tmp_path) as (intake, _):
        msg = group(intake.namespace, 1000, "a000")
        resp = await intake.http.post(WEBHOOK_PATH, json=msg, headers=bearer(), timeout=60)
        assert resp.status_code == 200, resp.text[:300]
        answers = resp.json()["alerts"]
        assert {a["disposition"] for a in answers} == {"handed_off"}
        groups = sorted({a["workflow_id"] for a in answers})
        assert all(g.startswith("alert-handoff/") for g in groups) and 1 <= len(groups) <= 3, groups
        assert answers[0]["message"].startswith(f"handed to {answers[0]['workflow_id']} (run ")
        assert answers[0]["target"] == f"deployment/{intake.namespace}/svc-0"
        summaries = [await client.get_workflow_handle(g, result_type=HandoffSummary).result() for g in groups]
        got = sum((Counter(s.dispositions) for s in summaries), Counter())
        # "duplicate": answered from the record on a retry of the activity (a call timed out).
        assert set(got) <= {"started", "duplicate"} and sum(got.values()) == 1000, got
        await visible(intake.client, intake.task_queue, 1000)
        before = handoffs()
        again = await intake.http.post(WEBHOOK_PATH, json=msg, headers=bearer(), timeout=60)
        assert [a["disposition"] for a in again.json()["alerts"]] == ["duplicate"] * 1000
        assert handoffs() == before


async def test_a_resend_while_the_handoff_runs_joins_it(client: Client, tmp_path: Path) -> None:
    """No worker polls the hand-off queue yet: the resend of the same group gets the same
    hand-off workflow, not a second one."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "restart-on-errors.yaml").write_text(PLAYBOOK)
    task_queue = f"hostile-{uuid.uuid4()}"
    settings = Settings(auth_token=TOKEN)
    audit = AuditStore(tmp_path / "audit.db")
    app = create_app(settings, client, load_directory(playbooks), audit, task_queue=task_queue, direct_max=2)
    msg = group(f"ns-{uuid.uuid4().hex[:10]}", 3, "c000")
    try:
        async with served(app, settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            first = (await http.post(WEBHOOK_PATH, json=msg, headers=bearer())).json()["alerts"]
            second = (await http.post(WEBHOOK_PATH, json=msg, headers=bearer())).json()["alerts"]
        assert [a["disposition"] for a in first + second] == ["handed_off"] * 6
        assert {a["workflow_id"] for a in first} == {a["workflow_id"] for a in second}
        assert first[0]["message"].split(" with ")[0] == second[0]["message"].split(" with ")[0]  # same run
        handoff_queue = handoff_task_queue(task_queue)
        assert len(await workflows_on(client, handoff_queue)) == 1
        assert await workflows_on(client, task_queue) == set()
    finally:
        await terminate_all(client, handoff_task_queue(task_queue))
        audit.close()


async def visible(client: Client, task_queue: str, n: int) -> None:
    """Wait (up to 10 s: visibility lags the last starts) until ``n`` workflows are listed."""
    deadline = time.monotonic() + 10
    while len(await workflows_on(client, task_queue)) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(await workflows_on(client, task_queue)) == n


def handoffs() -> float:
    """Temporal calls the hand-over has made (remediator_intake_handoff_seconds_count)."""
    return REGISTRY.get_sample_value("remediator_intake_handoff_seconds_count") or 0.0


async def test_a_resend_after_a_partial_failure_hands_over_only_what_is_missing(
    client: Client, temporal_env, tmp_path: Path
) -> None:
    """A group sent one by one (``direct_max`` above its size) loses Temporal midway: 503;
    the resend hands over only the alerts not already with their runs."""
    proxy = DelayProxy(client.service_client.config.target_host, delay=0).start()
    through = await Client.connect(proxy.address, data_converter=pydantic_data_converter)
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "restart-on-errors.yaml").write_text(PLAYBOOK)
    task_queue = f"hostile-{uuid.uuid4()}"
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    settings = Settings(auth_token=TOKEN)
    audit = AuditStore(tmp_path / "audit.db")
    app = create_app(settings, through, load_directory(playbooks), audit, task_queue=task_queue,
                     rpc_timeout=timedelta(seconds=1), direct_max=1000)
    n = 300
    msg = group(namespace, n, "b000")
    try:
        async with served(app, settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            async def cut_midway() -> None:
                while (await client.count_workflows(f'TaskQueue="{task_queue}"')).count < 100:
                    await asyncio.sleep(0.01)
                proxy.cut()

            cutter = asyncio.create_task(cut_midway())
            first = await http.post(WEBHOOK_PATH, json=msg, headers=bearer())
            await cutter
            assert first.status_code == 503, first.text[:300]
            assert "alerts could not be handed to Temporal" in first.json()["error"]
            proxy.restore()
            for _ in range(3):  # as Alertmanager resends (the client may still be reconnecting)
                before = handoffs()
                second = await http.post(WEBHOOK_PATH, json=msg, headers=bearer())
                if second.status_code == 200:
                    break
            assert second.status_code == 200, second.text[:300]
            dispositions = [a["disposition"] for a in second.json()["alerts"]]
            duplicates = dispositions.count("duplicate")
            assert duplicates >= 50, dispositions.count("started")
            assert set(dispositions) <= {"duplicate", "started", "attached"}
            # Only what was missing went to Temporal: one call per alert not answered from the record.
            assert handoffs() - before == n - duplicates
            await visible(client, task_queue, n)
    finally:
        proxy.stop()
        await terminate_all(client, task_queue)
        audit.close()


async def test_a_handoff_that_loses_temporal_midway_is_retried_until_every_alert_is_handed_over(
    client: Client, temporal_env, tmp_path: Path
) -> None:
    """The hand-off activity's calls go through a proxy that is cut once 100 runs exist: the
    activity fails, is retried once Temporal is back, and the retry hands over only what is
    missing (the rest answered from the record), so each of the 300 runs starts once."""
    proxy = DelayProxy(client.service_client.config.target_host, delay=0).start()
    through = await Client.connect(proxy.address, data_converter=pydantic_data_converter)
    n = 300
    try:
        async with handoff_intake(client, tmp_path, through=through, rpc_timeout=timedelta(seconds=1)) as (intake, _):
            resp = await intake.http.post(WEBHOOK_PATH, json=group(intake.namespace, n, "d000"), headers=bearer())
            assert resp.status_code == 200, resp.text[:300]
            (wf_id,) = {a["workflow_id"] for a in resp.json()["alerts"]}
            handle = client.get_workflow_handle(wf_id, result_type=HandoffSummary)
            while (await client.count_workflows(f'TaskQueue="{intake.task_queue}"')).count < 100:
                await asyncio.sleep(0.01)
            proxy.cut()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the activity has failed and waits to retry
                pending = (await handle.describe()).raw_description.pending_activities
                if pending and pending[0].attempt >= 2:
                    break
                await asyncio.sleep(0.1)
            assert pending and pending[0].attempt >= 2
            assert "alerts could not be handed to Temporal" in pending[0].last_failure.message
            proxy.restore()
            summary = await asyncio.wait_for(handle.result(), timeout=60)
            got = Counter(summary.dispositions)
            assert set(got) <= {"duplicate", "started", "attached"} and sum(got.values()) == n, got
            assert got["duplicate"] >= 100, got
            await visible(client, intake.task_queue, n)
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- property-based


def _valid_label_name() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_time = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}",
    st.integers(1971, 8998), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23), st.integers(0, 59),
    st.integers(0, 59), st.sampled_from(["", ".5", ".576395237"]), st.sampled_from(["Z", "z", "+01:00", "-05:30", "+00:00"]),
)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), _text)
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=8)

# Mutations that keep a payload one Alertmanager could send ...
VALID = ["unknown_field", "label_value", "new_label", "time", "fingerprint", "drop_alert", "annotation"]
# ... and those that make it one it never could.
INVALID = [
    "duplicate_key", "time_int", "time_no_zone", "time_date", "time_range", "bad_label_name", "label_value_type",
    "surrogate_value", "surrogate_key", "deep", "big_int", "nan", "missing_field", "wrong_version", "bad_utf8",
    "alerts_not_list", "status", "truncated_negative",
]


@st.composite
def mutated(draw: st.DrawFn, namespace: str) -> tuple[bool, bytes]:
    """A valid Alertmanager payload with 1-3 alerts, mutated: ``(still valid, body)``."""
    n = draw(st.integers(1, 3))
    alerts = [alert(f"svc-{draw(st.integers(0, 30))}", fingerprint=draw(st.from_regex(r"[0-9a-f]{16}", fullmatch=True)))
              for _ in range(n)]
    msg = payload(namespace, alerts=alerts)
    valid = True
    raw_edits: list[tuple[str, str]] = []
    kinds = draw(st.lists(st.sampled_from(VALID + INVALID), min_size=1, max_size=3))
    # Valid mutations first: a later one must not overwrite the field an invalid one broke.
    for kind in sorted(kinds, key=lambda k: k in INVALID):
        alerts_now = msg.get("alerts")
        target = draw(st.sampled_from(alerts_now)) if isinstance(alerts_now, list) and alerts_now else None
        if kind in INVALID:
            valid = False
        if kind == "unknown_field":
            msg[draw(st.from_regex(r"x[a-z]{1,8}", fullmatch=True))] = draw(_json)
        elif kind == "label_value" and target:
            target["labels"][draw(st.sampled_from(sorted(target["labels"])))] = draw(_text)
        elif kind == "new_label" and target:
            target["labels"]["l_" + draw(_valid_label_name())] = draw(_text)
        elif kind == "annotation":
            msg["commonAnnotations"][draw(_valid_label_name())] = draw(_text)
        elif kind == "time" and target:
            target[draw(st.sampled_from(["startsAt", "endsAt"]))] = draw(_time)
        elif kind == "fingerprint" and target:
            target["fingerprint"] = draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
        elif kind == "drop_alert" and isinstance(alerts_now, list) and len(alerts_now) > 1:
            msg["alerts"].pop()
        elif kind == "duplicate_key":
            raw_edits.append(('"receiver": "hook"', '"receiver": "hook", "receiver": "other"'))
        elif kind == "time_int" and target:
            target["startsAt"] = draw(st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False)))
        elif kind == "time_no_zone" and target:
            target["startsAt"] = draw(_time)[:19]
        elif kind == "time_date" and target:
            target["endsAt"] = draw(_time)[:10]
        elif kind == "time_range" and target:
            target["startsAt"] = draw(st.sampled_from(["9999-12-31T23:00:00-05:00", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9000-01-01T00:00:00Z"]))
        elif kind == "bad_label_name":
            where = draw(st.sampled_from(["groupLabels", "commonLabels", "commonAnnotations"]))
            msg[where][draw(st.text(min_size=1, max_size=8).filter(lambda s: not s.isidentifier() or not s.isascii()))] = "v"
        elif kind == "label_value_type" and target:
            target["labels"]["service"] = draw(st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.booleans()))
        elif kind == "surrogate_value":
            raw_edits.append(('"severity": "critical"', '"severity": "crit\\ud83dical"'))
        elif kind == "surrogate_key":
            raw_edits.append(('"severity": "critical"', '"sev\\udfffrity": "critical"'))
        elif kind == "deep":
            depth = draw(st.integers(33, 3000))
            msg["xdeep"] = "DEEP"
            raw_edits.append(('"xdeep": "DEEP"', '"xdeep": ' + "[" * depth + "]" * depth))
        elif kind == "big_int":
            msg["xbig"] = "BIG"
            raw_edits.append(('"xbig": "BIG"', '"xbig": ' + "9" * draw(st.integers(21, 6000))))
        elif kind == "nan":
            msg["xnan"] = "NAN"
            raw_edits.append(('"xnan": "NAN"', '"xnan": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))))
        elif kind == "missing_field":
            if target and draw(st.booleans()):
                target.pop(draw(st.sampled_from(["status", "labels", "startsAt", "fingerprint"])), None)
            else:
                msg.pop(draw(st.sampled_from(["version", "groupKey", "status", "receiver", "alerts"])), None)
        elif kind == "wrong_version":
            msg["version"] = draw(st.sampled_from([4, "3", "", None, "4 "]))
        elif kind == "bad_utf8":
            raw_edits.append(("BYTES", ""))
        elif kind == "alerts_not_list":
            msg["alerts"] = draw(st.one_of(st.just({}), st.integers(), _text))
        elif kind == "status":
            (target or msg)["status"] = draw(st.sampled_from(["pending", "FIRING", "", 1]))
        elif kind == "truncated_negative":
            msg["truncatedAlerts"] = draw(st.sampled_from([-1, 1.5, "3", True]))
        else:  # a mutation that did not apply (no alert left): still the kind it claimed
            if kind in INVALID:
                msg["version"] = "3"
    text = json.dumps(msg, ensure_ascii=draw(st.booleans()))
    body = text.encode("utf-8")
    for old, new in raw_edits:
        if old == "BYTES":
            body = body.replace(b'"hook"', b'"ho\xc3\x28k"', 1)
        else:
            body = body.replace(old.encode(), new.encode(), 1)
    return valid, body


async def test_2000_mutated_payloads_never_get_a_5xx_nor_start_a_workflow_when_invalid(intake: Intake) -> None:
    """From valid Alertmanager payloads mutated structurally: a valid one is answered 200, an
    invalid one 400/422 with the error naming a field or the body; never a 5xx, and the only
    workflows on the task queue are those 200 answers reported."""
    url = intake.url
    reported: set[str] = set()
    counts = {"valid": 0, "invalid": 0}

    @hsettings(max_examples=2000, deadline=None, database=None, derandomize=True,
               suppress_health_check=list(HealthCheck))
    @given(case=mutated(intake.namespace))
    def check(case: tuple[bool, bytes]) -> None:
        valid, body = case
        resp = http.post(WEBHOOK_PATH, content=body, headers={**bearer(), "Content-Type": "application/json"})
        assert resp.status_code < 500, (resp.status_code, resp.text[:300], body[:300])
        if valid:
            counts["valid"] += 1
            assert resp.status_code == 200, (resp.text[:300], body[:500])
            for out in resp.json()["alerts"]:
                if out["workflow_id"] and out["disposition"] in ("started", "attached"):
                    reported.add(out["workflow_id"])
        else:
            counts["invalid"] += 1
            assert resp.status_code in (400, 422), (resp.status_code, resp.text[:300], body[:300])
            error = resp.json()["error"]
            assert error.startswith(("body is not valid", NOT_A_MESSAGE)), error

    with httpx.Client(base_url=url, timeout=30) as http:
        await asyncio.to_thread(check)
    assert counts["valid"] >= 200 and counts["invalid"] >= 1000, counts
    assert await workflows_on(intake.client, intake.task_queue) == reported
