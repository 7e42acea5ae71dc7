"""The Slack interactivity endpoint (remediator.slack_interactivity) and the decision path
(remediator.app.approvals) against the real ``RemediationWorkflow`` on a real Temporal dev server.

The run waits on a step with ``approval: always``; its approval message is posted to the Slack
emulator (remediator.sim.slack) over real HTTP, and clicks are the requests Slack would
send for that message (``SlackEmulator.click``: signed exactly as Slack signs them) POSTed to the
intake app served by uvicorn. Kubernetes is the API emulator; the audit trail is real SQLite.
What reached the run is read from the workflow itself: its ``status`` query and its history
(``WorkflowExecutionUpdateAccepted`` events).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from tests.support import alert, playbook, serve, start_run
from slack_sdk import WebClient
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from remediator.app.approvals import BadButtonValue, DecisionRefused, parse_button_value, submit_decision
from remediator.app.config import Settings
from remediator.app.intake import create_app
from remediator.playbook.loader import load_directory
from remediator.domain.messages import (
    ApprovalDecision,
    ApprovalRequest,
    RemediationStatus,
)
from remediator.domain.playbook import Playbook
from remediator.slack.client import make_client
from remediator.sim.slack import SlackEmulator, block_actions_payload, signed_interaction
from remediator.app.slack_interactivity import INTERACTIVITY_PATH, MAX_BODY_BYTES, router

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
ALICE = "U0ALICE01"
MALLORY = "U0MALLORY1"


# --------------------------------------------------------------------------- fixtures
# ``slack`` and ``slack_client`` replace tests/conftest.py's: a Slack app with a signing secret
# and a channel by ID. The shared ``worker`` fixture runs the real workflow with them.


@pytest.fixture
def slack():
    emu = SlackEmulator(signing_secret=SECRET, bot_token=BOT_TOKEN).start()
    emu.add_user(ALICE, "alice")
    emu.add_user(MALLORY, "mallory")
    emu.add_channel("oncall", "C0ONCALL01", members=[ALICE, MALLORY])
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def slack_client(slack):
    return make_client(BOT_TOKEN, slack.url)


def settings(slack: SlackEmulator, **extra: Any) -> Settings:
    return Settings(
        no_auth=True,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack.url,
        **extra,
    )


PLAYBOOK_YAML = """\
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


def playbooks(tmp_path: Path):
    """The intake's playbook set (the interactivity endpoint does not use it)."""
    pb_dir = tmp_path / "playbooks"
    pb_dir.mkdir(exist_ok=True)
    (pb_dir / "restart.yaml").write_text(PLAYBOOK_YAML)
    return load_directory(pb_dir)


@pytest.fixture
async def intake(client, worker, slack, audit, slack_client, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    """The intake app as the worker builds it, with the interactivity router mounted, over HTTP."""
    app = create_app(settings(slack), client, playbooks(tmp_path), audit, task_queue=worker)
    app.include_router(router(settings(slack), client, audit, slack_client))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        yield http


# --------------------------------------------------------------------------- the run


def approval_playbook() -> Playbook:
    return playbook(
        [{"name": "restart", "rollout_restart": {}, "approval": "always"}],
        name="restart-with-approval",
        slack={"channel": "C0ONCALL01", "approvers": {"users": [ALICE]}},
        # Long enough that the run is still there for a second click after an approval.
        verification_window="10m",
    )


async def until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fails the test with ``what`` if never."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def waiting_run(client: Client, queue: str, slack: SlackEmulator) -> tuple[WorkflowHandle, ApprovalRequest, str]:
    """Start a run that waits for approval; returns its handle, the request and the message ts."""
    pb = approval_playbook()
    handle = await start_run(client, queue, pb, alert(fingerprint=uuid.uuid4().hex[:16], pod="checkout-7d4b9c-x2x9z"))

    async def waiting() -> ApprovalRequest | None:
        return (await handle.query("status", result_type=RemediationStatus)).waiting

    request: ApprovalRequest = await until(waiting, "the run to wait for approval")
    [message] = await until(lambda: [m for m in slack.messages("C0ONCALL01") if _buttons_of(m, request)], "the approval message")
    return handle, request, message["ts"]


def _buttons_of(message: dict[str, Any], request: ApprovalRequest) -> list[str]:
    """action_ids of the message's buttons that carry ``request``."""
    return [
        e["action_id"]
        for b in message.get("blocks", []) if b.get("type") == "actions"
        for e in b.get("elements", []) if request.request_id in e.get("value", "")
    ]


async def accepted_decisions(handle: WorkflowHandle, client: Client) -> list[ApprovalDecision]:
    """Every ``decide`` Update the run accepted, from its history."""
    out = []
    async for ev in handle.fetch_history_events():
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            req = ev.workflow_execution_update_accepted_event_attributes.accepted_request
            assert req.input.name == "decide"
            [decision] = await client.data_converter.decode(req.input.args.payloads, [ApprovalDecision])
            out.append(decision)
    return out


async def assert_untouched(handle: WorkflowHandle, client: Client, request: ApprovalRequest) -> None:
    status = await handle.query("status", result_type=RemediationStatus)
    assert status.phase == "awaiting_approval"
    assert status.waiting is not None and status.waiting.request_id == request.request_id
    assert await accepted_decisions(handle, client) == []


async def post(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await http.post(INTERACTIVITY_PATH, content=body, headers=headers)


# --------------------------------------------------------------------------- clicks that decide


async def test_approve_click_resumes_the_run(client, worker, intake, slack, emulator, audit):
    handle, request, ts = await waiting_run(client, worker, slack)
    emulator.clear_requests()

    resp = await post(intake, *slack.click(ALICE, "C0ONCALL01", ts, "remediator_approve"))

    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "message": "approved by U0ALICE01; step 1 runs now"}
    [decision] = await accepted_decisions(handle, client)
    assert (decision.request_id, decision.decision, decision.user_id, decision.user_name, decision.via) == (
        request.request_id, "approve", ALICE, "alice", "slack",
    )
    # The step ran: exactly one rollout restart reached the Kubernetes API.
    await until(lambda: [r for r in emulator.requests(method="PATCH") if "/deployments/checkout" in r.path], "the restart")
    [patch] = [r for r in emulator.requests(method="PATCH") if "/deployments/checkout" in r.path]
    assert "kubectl.kubernetes.io/restartedAt" in patch.body["spec"]["template"]["metadata"]["annotations"]
    status = await handle.query("status", result_type=RemediationStatus)
    assert status.waiting is None and status.steps[0].status in ("running", "succeeded")
    assert slack.ephemeral_messages() == []
    assert audit.intake_records(kind="approval_refused") == []
    # The run itself rewrites the approval message: the buttons are gone.
    await until(lambda: not _buttons_of(slack.message("C0ONCALL01", ts), request), "the approval message to be rewritten")
    await handle.terminate("test done")


async def test_reject_click_stops_the_step(client, worker, intake, slack, emulator, audit):
    handle, request, ts = await waiting_run(client, worker, slack)
    emulator.clear_requests()

    resp = await post(intake, *slack.click(ALICE, "C0ONCALL01", ts, "remediator_reject"))

    assert resp.status_code == 200, resp.text
    result = await handle.result()
    assert result.outcome == "needs_human"
    assert result.reason == f"step 1 (restart) was rejected by {ALICE}; it did not run"
    assert [(s.status, s.message) for s in result.steps] == [("skipped", f"rejected by {ALICE}")]
    assert emulator.requests(method="PATCH") == []
    [decision] = await accepted_decisions(handle, client)
    assert (decision.decision, decision.user_id, decision.via) == ("reject", ALICE, "slack")


# --------------------------------------------------------------------------- clicks the run refuses


async def test_unauthorised_user_is_refused_told_and_audited(client, worker, intake, slack, audit):
    handle, request, ts = await waiting_run(client, worker, slack)

    resp = await post(intake, *slack.click(MALLORY, "C0ONCALL01", ts, "remediator_approve"))

    reason = f"{MALLORY} is not an approver of playbook restart-with-approval"
    assert resp.status_code == 403
    assert resp.json() == {"error": reason}
    [ephemeral] = slack.ephemeral_messages()
    assert (ephemeral["channel"], ephemeral["user"]) == ("C0ONCALL01", MALLORY)
    assert ephemeral["text"] == f":no_entry: Your Approve was not applied to `{request.request_id}`: {reason}"
    [record] = audit.intake_records(kind="approval_refused")
    assert record.run_id == request.run_id
    assert record.message == f"approve of {request.request_id} by {MALLORY} (mallory) via slack refused: {reason}"
    await assert_untouched(handle, client, request)
    await handle.terminate("test done")


async def test_second_click_and_replay_are_refused(client, worker, intake, slack, audit):
    handle, request, ts = await waiting_run(client, worker, slack)
    body, headers = slack.click(ALICE, "C0ONCALL01", ts, "remediator_approve")
    # Made on the message as first posted: once decided, the run rewrites it without buttons.
    reject = slack.click(ALICE, "C0ONCALL01", ts, "remediator_reject")
    assert (await post(intake, body, headers)).status_code == 200

    replay = await post(intake, body, headers)  # the same signed request again, within 5 minutes
    second = await post(intake, *reject)

    # The replay is refused by the endpoint itself: it never reaches the run, nor the audit trail.
    assert (replay.status_code, replay.json()) == (
        401, {"error": "this signed request was already received (same timestamp and signature): refused as a replay"},
    )
    already = f"already decided: approved by {ALICE} via slack"
    assert (second.status_code, second.json()) == (403, {"error": already})
    assert [e["text"] for e in slack.ephemeral_messages()] == [
        f":no_entry: Your Reject was not applied to `{request.request_id}`: {already}",
    ]
    assert [r.message.split(" refused: ")[1] for r in audit.intake_records(kind="approval_refused")] == [already]
    [decision] = await accepted_decisions(handle, client)
    assert decision.decision == "approve"
    await handle.terminate("test done")


async def test_click_on_a_stale_request_is_refused(client, worker, intake, slack):
    handle, request, ts = await waiting_run(client, worker, slack)
    stale = f"{request.run_id}/step-7"
    value = json.dumps({"workflow_id": request.workflow_id, "run_id": request.run_id, "request_id": stale})
    payload = block_actions_payload(ALICE, "remediator_approve", value, "C0ONCALL01", ts, slack.response_url())

    resp = await post(intake, *signed_interaction(payload, SECRET))

    assert resp.status_code == 403
    assert resp.json() == {"error": f"stale request {stale}: the run waits on {request.request_id}"}
    await assert_untouched(handle, client, request)
    await handle.terminate("test done")


async def test_click_on_an_ended_run_is_refused(client, worker, intake, slack, audit):
    handle, request, ts = await waiting_run(client, worker, slack)
    await handle.terminate("operator stopped it")

    resp = await post(intake, *slack.click(ALICE, "C0ONCALL01", ts, "remediator_approve"))

    assert resp.status_code == 403
    assert resp.json()["error"].startswith(f"run {request.run_id} of {request.workflow_id} has ended or does not exist")
    [ephemeral] = slack.ephemeral_messages()
    assert ephemeral["user"] == ALICE and "has ended or does not exist" in ephemeral["text"]
    assert len(audit.intake_records(kind="approval_refused")) == 1


async def test_ephemeral_falls_back_to_response_url(client, worker, slack, audit, tmp_path):
    """When chat.postEphemeral fails, the explanation goes to the payload's response_url."""
    handle, request, ts = await waiting_run(client, worker, slack)
    app = create_app(settings(slack), client, playbooks(tmp_path), audit, task_queue=worker)
    # A bot token Slack refuses (invalid_auth) for the ephemeral message.
    app.include_router(router(settings(slack), client, audit, WebClient(token="xoxb-revoked", base_url=slack.url)))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        resp = await post(http, *slack.click(MALLORY, "C0ONCALL01", ts, "remediator_approve"))

    assert resp.status_code == 403
    assert [c.error for c in slack.recorded("chat.postEphemeral")] == ["invalid_auth"]
    [posted] = slack.response_posts()
    assert posted.path.startswith("/actions/")
    assert posted.body == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": f":no_entry: Your Approve was not applied to `{request.request_id}`: {MALLORY} is not an approver of playbook restart-with-approval",
    }
    await assert_untouched(handle, client, request)
    await handle.terminate("test done")


# --------------------------------------------------------------------------- requests refused at the door


async def test_unsigned_or_badly_signed_requests_are_refused_with_401(client, worker, intake, slack, audit):
    handle, request, ts = await waiting_run(client, worker, slack)
    body, headers = slack.click(ALICE, "C0ONCALL01", ts, "remediator_approve")
    now = int(time.time())

    def without(*names: str) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k not in names}

    tampered = body.replace(ALICE.encode(), MALLORY.encode())
    assert tampered != body
    cases = {
        "tampered body": (tampered, headers, "X-Slack-Signature does not match the body and the signing secret (SLACK_SIGNING_SECRET)"),
        "wrong secret": (*signed_interaction(json.loads(_payload_of(body)), "not-the-secret"), "X-Slack-Signature does not match the body and the signing secret (SLACK_SIGNING_SECRET)"),
        "stale timestamp": (*signed_interaction(json.loads(_payload_of(body)), SECRET, timestamp=now - 301), "refused as a possible replay"),
        "future timestamp": (*signed_interaction(json.loads(_payload_of(body)), SECRET, timestamp=now + 400), "in the future (over 300s): check the clock"),
        "missing signature": (body, without("X-Slack-Signature"), "missing X-Slack-Signature; requests must be signed by Slack"),
        "missing timestamp": (body, without("X-Slack-Request-Timestamp"), "missing X-Slack-Request-Timestamp; requests must be signed by Slack"),
        "missing both": (body, without("X-Slack-Signature", "X-Slack-Request-Timestamp"), "missing X-Slack-Request-Timestamp and X-Slack-Signature; requests must be signed by Slack"),
        "non-numeric timestamp": (body, {**headers, "X-Slack-Request-Timestamp": "yesterday"}, "X-Slack-Request-Timestamp must be Unix seconds, got 'yesterday'"),
        "negative timestamp": (body, {**headers, "X-Slack-Request-Timestamp": f"-{now}"}, f"X-Slack-Request-Timestamp must be Unix seconds, got '-{now}'"),
    }
    for name, (b, h, message) in cases.items():
        resp = await post(intake, b, h)
        assert resp.status_code == 401, name
        assert message in resp.json()["error"], (name, resp.json())

    await assert_untouched(handle, client, request)
    assert slack.ephemeral_messages() == [] and slack.response_posts() == []
    assert audit.intake_records() == []
    # The genuine request still works afterwards: nothing above consumed it.
    assert (await post(intake, body, headers)).status_code == 200
    await handle.terminate("test done")


def _payload_of(body: bytes) -> str:
    from urllib.parse import parse_qs

    return parse_qs(body.decode())["payload"][0]


async def test_malformed_oversized_and_foreign_interactions(client, worker, intake, slack):
    handle, request, ts = await waiting_run(client, worker, slack)
    value = json.dumps({"workflow_id": request.workflow_id, "run_id": request.run_id, "request_id": request.request_id})

    def signed_raw(body: bytes) -> tuple[bytes, dict[str, str]]:
        stamp = str(int(time.time()))
        from slack_sdk.signature import SignatureVerifier

        sig = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
        return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": sig}

    too_big = b"payload=" + b"x" * MAX_BODY_BYTES
    resp = await post(intake, *signed_raw(too_big))
    assert (resp.status_code, resp.json()) == (413, {"error": f"body of {len(too_big)} bytes is over the limit of {MAX_BODY_BYTES} bytes"})

    bad = {
        b"text=hello": "body must have exactly one 'payload' form field",
        b"payload=%7Bnot+json": "payload is not JSON (Expecting property name enclosed in double quotes at position 1)",
        b"payload=%5B1%5D": "payload must be a JSON object, got list",
    }
    for body, message in bad.items():
        resp = await post(intake, *signed_raw(body))
        assert (resp.status_code, resp.json()) == (400, {"error": message}), body

    broken_value = block_actions_payload(ALICE, "remediator_approve", "{oops", "C0ONCALL01", ts)
    resp = await post(intake, *signed_interaction(broken_value, SECRET))
    assert resp.status_code == 400
    assert resp.json() == {"error": "action remediator_approve: button value is not JSON: '{oops'"}

    # What Slack sends that is not ours: answered 200, nothing done.
    other_button = block_actions_payload(ALICE, "someone_elses_button", value, "C0ONCALL01", ts)
    view = {"type": "view_submission", "user": {"id": ALICE}, "view": {"id": "V1"}}
    for payload in (other_button, view):
        resp = await post(intake, *signed_interaction(payload, SECRET))
        assert (resp.status_code, resp.content) == (200, b"")

    await assert_untouched(handle, client, request)
    assert slack.ephemeral_messages() == []
    await handle.terminate("test done")


async def test_temporal_unreachable_answers_503_and_tells_the_user(slack, audit, tmp_path):
    # A frontend that refuses connections: nothing listens on this port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    down = await Client.connect(dead, lazy=True, data_converter=pydantic_data_converter)
    slack_client = make_client(BOT_TOKEN, slack.url)
    app = create_app(settings(slack), down, playbooks(tmp_path), audit, task_queue="unused")
    app.include_router(router(settings(slack), down, audit, slack_client))
    value = json.dumps({"workflow_id": "remediation/deployment/prod/checkout", "run_id": "r1", "request_id": "r1/step-0"})
    payload = block_actions_payload(ALICE, "remediator_approve", value, "C0ONCALL01", "1.000001", slack.response_url())
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        resp = await post(http, *signed_interaction(payload, SECRET))
        assert resp.status_code == 503
        assert "could not be delivered" not in resp.json()["error"]
        assert resp.json()["error"].startswith(f"approve of r1/step-0 by {ALICE} (via slack): ")
        await until(lambda: slack.ephemeral_messages(), "the ephemeral explanation")
    [ephemeral] = slack.ephemeral_messages()
    assert ephemeral["user"] == ALICE
    assert ephemeral["text"].startswith(":warning: Your Approve for `r1/step-0` could not be delivered")
    assert "`remediator approve r1 --as U0ALICE01`" in ephemeral["text"]
    assert audit.intake_records() == []


# --------------------------------------------------------------------------- approvals, directly


def test_parse_button_value():
    assert parse_button_value('{"workflow_id": "w", "run_id": "r", "request_id": "r/step-0", "x": 1}') == ("w", "r", "r/step-0")
    for value, message in [
        (None, "button value is missing; expected a JSON object with workflow_id, run_id, request_id"),
        ("", "button value is missing; expected a JSON object with workflow_id, run_id, request_id"),
        ("nope", "button value is not JSON: 'nope'"),
        ("[1]", "button value must be a JSON object"),
        ('{"workflow_id": "w", "run_id": "r"}', "button value has no request_id"),
        ('{"workflow_id": "", "run_id": "r", "request_id": "q"}', "button value has no workflow_id"),
        ('{"workflow_id": "w", "run_id": 5, "request_id": "q"}', "button value has no run_id"),
    ]:
        with pytest.raises(BadButtonValue) as err:
            parse_button_value(value)
        assert str(err.value) == message


async def test_submit_decision_from_the_cli(client, worker, slack, audit):
    """The CLI path: no run ID (the latest run of the workflow ID), ``via="cli"``."""
    handle, request, _ = await waiting_run(client, worker, slack)
    refused = ApprovalDecision(request_id=request.request_id, decision="approve", user_id=MALLORY, via="cli")
    with pytest.raises(DecisionRefused) as err:
        await submit_decision(client, request.workflow_id, None, refused, audit=audit)
    assert err.value.reason == f"{MALLORY} is not an approver of playbook restart-with-approval"
    assert err.value.kind == "ValueError"
    [record] = audit.intake_records(kind="approval_refused")
    assert record.message == f"approve of {request.request_id} by {MALLORY} via cli refused: {err.value.reason}"
    assert record.run_id is None and record.alertname == "" and record.alert == {}

    ok = ApprovalDecision(request_id=request.request_id, decision="reject", user_id=ALICE, via="cli", comment="not now")
    result = await submit_decision(client, request.workflow_id, None, ok, audit=audit)
    assert result.message == f"rejected by {ALICE}; step 1 will not run"
    [decision] = await accepted_decisions(handle, client)
    assert (decision.via, decision.comment) == ("cli", "not now")
    assert (await handle.result()).outcome == "needs_human"
