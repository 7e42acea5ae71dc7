"""Slack activities and Block Kit against the Slack Web API emulator, over HTTP with slack-sdk's
real WebClient (``remediator.slack.make_client``), activities run by Temporal's ActivityEnvironment.

Covers: exactly one approval message per request (repeated calls, a post whose local record was
lost), in-place updates that remove the buttons and state the outcome, one escalation reply,
notices folded into one thread per target and one message per event key, 429 + Retry-After,
outages and bad tokens classified for the workflow's retry policy, the Block Kit shape, and the
signed interaction requests the emulator crafts for the interactivity tests.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.slack import SLACK_NON_RETRYABLE, SlackActivities
from remediator.domain.messages import (
    AlertRef,
    ApprovalOutcome,
    ApprovalRequest,
    Evidence,
    Notice,
    ResolveApproversInput,
    TargetRef,
)
from remediator.slack.blocks import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    approval_blocks,
    notice_blocks,
    parse_action_value,
)
from remediator.slack.client import SlackNotConfigured, make_client
from remediator.slack.threads import SlackThreads
from remediator.sim.slack import SlackEmulator, block_actions_payload, signed_interaction, validate_blocks

CHANNEL = "C0ONCALL01"
ONCALL = "S0ONCALL01"
ALICE, BOB = "U0ALICE001", "U0BOB00001"
TARGET = TargetRef(kind="Deployment", namespace="prod", name="checkout")
GENERATOR_URL = "http://prometheus:9090/graph?g0.expr=rate%28errors%5B5m%5D%29+%3E+0.05&g0.tab=1"


@pytest.fixture
def slack():
    emu = SlackEmulator(signing_secret="s3cret")
    emu.add_channel("oncall", CHANNEL, members=[ALICE, BOB])
    emu.add_channel("random")
    emu.add_user(ALICE, "alice", real_name="Alice Example")
    emu.add_user(BOB, "bob")
    emu.add_usergroup(ONCALL, "oncall", [ALICE, BOB])
    with emu:
        yield emu


@pytest.fixture
def store(database_url):
    """The Slack state on each backend (tests/conftest.py ``database_url``)."""
    s = SlackThreads(database_url)
    yield s
    s.close()


def client_for(emu: SlackEmulator, token: str | None = None) -> WebClient:
    return make_client(token or emu.bot_token, emu.url)


@pytest.fixture
def acts(slack, store):
    return SlackActivities(client_for(slack), store)


def run(fn, arg):
    return ActivityEnvironment().run(fn, arg)


def alert() -> AlertRef:
    return AlertRef(fingerprint="f00d", starts_at=datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc), status="firing",
                    labels={"alertname": "CheckoutErrors", "namespace": "prod"}, generator_url=GENERATOR_URL)


def request(request_id: str = "run-1/step-1", channel: str = "#oncall", **kw) -> ApprovalRequest:
    now = datetime.now(timezone.utc)
    fields = dict(
        request_id=request_id, run_id="run-1", workflow_id="remediation/deployment/prod/checkout",
        step_index=1, step_name="roll back", action="rollback", params={"to_revision": 0},
        change="roll deployment prod/checkout back to the previous revision", target=TARGET,
        playbook="checkout-errors", alert=alert(),
        evidence=[
            Evidence(name="recent_rollout", check="recent_rollout", signal=True, summary="revision 7 rolled out 4m ago"),
            Evidence(name="crashloop", check="container_status", signal=False, summary="no container restarting"),
            Evidence(name="errors", check="promql", signal=False, summary="", error="prometheus unreachable"),
        ],
        confidence=0.4, reason="confidence 40% is below 70%", channel=channel, approvers=[ALICE],
        approver_groups=[ONCALL], oncall_usergroup=ONCALL,
        temporal_url="http://localhost:8233/namespaces/default/workflows/remediation%2Fdeployment%2Fprod%2Fcheckout/run-1",
        audit_url="http://localhost:9095/runs/run-1", requested_at=now,
        escalate_at=now + timedelta(minutes=15), deadline=now + timedelta(hours=1),
    )
    fields.update(kw)
    return ApprovalRequest(**fields)


def notice(event_key: str, target: TargetRef = TARGET, **kw) -> Notice:
    fields = dict(event_key=event_key, kind="not_healed", channel="#oncall", target=target, run_id="run-1",
                  workflow_id=f"remediation/{target.key}", playbook="checkout-errors",
                  title=f"{target.key} not healed", timeline=["12:00 alert fired", "12:01 rollout restart done"],
                  mention=ONCALL, alert=alert(), temporal_url="http://localhost:8233/x", audit_url="http://localhost:9095/runs/run-1")
    fields.update(kw)
    return Notice(**fields)


def actions_block(msg: dict) -> dict | None:
    return next((b for b in msg.get("blocks", []) if b["type"] == "actions"), None)


def all_text(blocks: list[dict]) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [e.get("text", "") for e in b.get("elements", []) if isinstance(e.get("text"), str)]
    return "\n".join(out)


# --------------------------------------------------------------------------- Block Kit


def test_approval_blocks_shape():
    req = request()
    blocks = approval_blocks(req)
    assert validate_blocks(blocks) == []
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                    "text": "Approval needed: roll back on deployment/prod/checkout"}}
    buttons = actions_block({"blocks": blocks})["elements"]
    assert [(b["action_id"], b["style"], b["text"]["text"]) for b in buttons] == [
        (APPROVE_ACTION_ID, "primary", "Approve"), (REJECT_ACTION_ID, "danger", "Reject")]
    for b in buttons:
        assert json.loads(b["value"]) == {"workflow_id": "remediation/deployment/prod/checkout", "run_id": "run-1",
                                          "request_id": "run-1/step-1"}
        assert parse_action_value(b["value"]).request_id == "run-1/step-1"
    assert buttons[0]["confirm"]["text"]["text"] == "This will roll deployment prod/checkout back to the previous revision."
    text = all_text(blocks)
    assert ":white_check_mark: *recent_rollout* (recent_rollout) — revision 7 rolled out 4m ago" in text
    assert ":x: *crashloop* (container_status) — no container restarting" in text
    assert ":warning: *errors* (promql) — could not gather: prometheus unreachable" in text
    assert "*Confidence:* 40%\n*Why approval:* confidence 40% is below 70%" in text
    assert "*Step 2: roll back* (`rollback`) will roll deployment prod/checkout back to the previous revision" in text
    assert "```to_revision: 0```" in text
    assert "*Alert* `CheckoutErrors` firing since <!date^1746100800^" in text
    assert f"<{GENERATOR_URL.replace('&', '&amp;')}|Alert source>" in text
    assert f"<{req.temporal_url}|Temporal run>" in text
    assert "<http://localhost:9095/runs/run-1|Audit timeline>" in text
    assert f"Approvers: <@{ALICE}> <!subteam^{ONCALL}>" in text


def test_blocks_are_cut_to_slack_limits(slack, acts):
    long = "x" * 5000
    req = request(step_name="s" * 300, change=long,
                  evidence=[Evidence(name=f"e{i}", check="promql", signal=True, summary=long) for i in range(20)])
    blocks = approval_blocks(req)
    assert validate_blocks(blocks) == []
    assert len(blocks[0]["text"]["text"]) == 150 and blocks[0]["text"]["text"].endswith("…")
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    assert any(b["text"]["text"].endswith("…") for b in blocks if b["type"] == "section")
    # Slack (the emulator's checks) accepts what the builders make.
    msg = run(acts.post_approval_request, req)
    assert slack.message(CHANNEL, msg.ts)["blocks"] == blocks
    nb = notice_blocks(notice("k", title="t" * 400, timeline=[long] * 5))
    assert validate_blocks(nb) == []


def test_emulator_refuses_oversized_blocks(slack):
    client = client_for(slack)
    from slack_sdk.errors import SlackApiError
    with pytest.raises(SlackApiError) as e:
        client.chat_postMessage(channel=CHANNEL, text="x",
                                blocks=[{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}])
    assert e.value.response["error"] == "invalid_blocks"
    assert e.value.response["errors"] == ["must be less than 151 characters [json-pointer:/blocks/0/text/text]"]


# --------------------------------------------------------------------------- approval message


def test_one_approval_message_per_request(slack, acts):
    req = request()
    first = run(acts.post_approval_request, req)
    again = run(acts.post_approval_request, req)
    assert first.posted is True and again.posted is False
    assert (again.channel, again.ts) == (first.channel, first.ts) and first.channel == CHANNEL
    posts = slack.calls("chat.postMessage")
    assert len(posts) == 1
    assert posts[0].params["channel"] == CHANNEL  # "#oncall" resolved through conversations.list
    assert posts[0].params["metadata"] == {"event_type": "remediator_approval_request", "event_payload": {
        "request_id": "run-1/step-1", "workflow_id": "remediation/deployment/prod/checkout", "run_id": "run-1"}}
    stored = slack.message(CHANNEL, first.ts)
    assert stored["blocks"] == approval_blocks(req)
    assert stored["text"].startswith("Approval needed: roll back on deployment/prod/checkout")
    # A different request is a different message.
    other = run(acts.post_approval_request, request("run-1/step-2"))
    assert other.posted and other.ts != first.ts
    assert len(slack.calls("chat.postMessage")) == 2


class CrashAfterPost(SlackThreads):
    """A store whose first write fails: the worker died right after chat.postMessage returned."""

    crashed = False

    def record_message(self, *a, **kw):
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("worker killed")
        return super().record_message(*a, **kw)


def test_post_went_through_but_record_lost(slack, tmp_path):
    client = client_for(slack)
    crashing = SlackActivities(client, CrashAfterPost(tmp_path / "a.db"))
    req = request()
    with pytest.raises(RuntimeError):  # not an ApplicationError: Temporal retries it
        run(crashing.post_approval_request, req)
    assert len(slack.calls("chat.postMessage")) == 1
    # The retry runs on another worker with an empty state dir: Slack's metadata finds the post.
    fresh = SlackActivities(client, SlackThreads(tmp_path / "b.db"))
    slack.reset_calls()
    msg = run(fresh.post_approval_request, req)
    assert msg.posted is False
    assert [c.method for c in slack.calls()] == ["conversations.list", "conversations.history"]
    hist = slack.calls("conversations.history")[0].params
    assert hist["channel"] == CHANNEL and hist["include_all_metadata"] in ("1", "true", True)
    assert float(hist["oldest"]) < req.requested_at.timestamp()
    assert [m["ts"] for m in slack.messages(CHANNEL)] == [msg.ts]
    # ...and the next retry answers from the local record without asking Slack.
    slack.reset_calls()
    assert run(fresh.post_approval_request, req).ts == msg.ts
    assert slack.calls() == []


def test_decision_rewrites_message_without_buttons(slack, acts):
    req = request()
    msg = run(acts.post_approval_request, req)
    assert actions_block(slack.message(CHANNEL, msg.ts)) is not None
    outcome = ApprovalOutcome(request=req, message=msg, status="approved",
                              text=f"by <@{ALICE}> at 12:05 UTC; rolling back now")
    run(acts.update_approval_message, outcome)
    stored = slack.message(CHANNEL, msg.ts)
    assert actions_block(stored) is None
    assert stored["blocks"][1]["text"]["text"] == f":white_check_mark: *Approved* — by <@{ALICE}> at 12:05 UTC; rolling back now"
    assert stored["text"].startswith("[Approved] Approval needed")
    # Quoted user input cannot ping the channel; user mentions written by remediator stay.
    run(acts.update_approval_message, outcome.model_copy(update={"status": "executed",
                                                                   "text": f"<@{ALICE}>: ok <!channel>"}))
    status_line = slack.message(CHANNEL, msg.ts)["blocks"][1]["text"]["text"]
    assert status_line == f":heavy_check_mark: *Done* — <@{ALICE}>: ok &lt;!channel&gt;"
    assert "<!channel>" not in slack.message(CHANNEL, msg.ts)["text"]
    assert stored["metadata"]["event_payload"]["request_id"] == req.request_id
    update = slack.calls("chat.update")[0].params
    assert (update["channel"], update["ts"]) == (CHANNEL, msg.ts)
    # A late "escalated" (an older attempt finishing after the decision) must not bring buttons back.
    run(acts.update_approval_message, ApprovalOutcome(request=req, message=msg, status="escalated", text="late"))
    assert actions_block(slack.message(CHANNEL, msg.ts)) is None
    assert len(slack.calls("chat.update")) == 2


def test_escalation_mentions_oncall_once(slack, acts, tmp_path):
    req = request()
    msg = run(acts.post_approval_request, req)
    esc = ApprovalOutcome(request=req, message=msg, status="escalated", text="no answer after 15m")
    run(acts.update_approval_message, esc)
    run(acts.update_approval_message, esc)
    # Local record lost too: found in the thread by its metadata.
    other = SlackActivities(client_for(slack), SlackThreads(tmp_path / "other.db"))
    run(other.update_approval_message, esc)
    replies = [m for m in slack.messages(CHANNEL) if m.get("thread_ts") == msg.ts and m["ts"] != msg.ts]
    assert len(replies) == 1
    assert replies[0]["text"].startswith(f"<!subteam^{ONCALL}> no answer yet: *roll back* on `deployment/prod/checkout`")
    assert replies[0]["subtype"] == "thread_broadcast"
    stored = slack.message(CHANNEL, msg.ts)
    assert actions_block(stored) is not None  # still waiting: buttons stay
    assert stored["blocks"][1]["text"]["text"] == ":rotating_light: *Escalated* — no answer after 15m"
    assert len(slack.calls("chat.update")) == 3


# --------------------------------------------------------------------------- notices


def test_notices_fold_into_one_thread_per_target(slack, acts, tmp_path):
    first = run(acts.post_notice, notice("run-1/health_failed", kind="health_failed", title="health check failed"))
    second = run(acts.post_notice, notice("run-1/not_healed"))
    repeat = run(acts.post_notice, notice("run-1/not_healed"))
    other = run(acts.post_notice, notice("run-9/not_healed", target=TargetRef(kind="Node", name="worker-1")))
    assert (first.posted, second.posted, repeat.posted, other.posted) == (True, True, False, True)
    assert first.thread_ts is None and second.thread_ts == first.ts and repeat.ts == second.ts
    assert other.thread_ts is None
    assert len(slack.calls("chat.postMessage")) == 3
    root = slack.message(CHANNEL, first.ts)
    assert root["reply_count"] == 1 and root["text"] == f"<!subteam^{ONCALL}> health check failed (deployment/prod/checkout)"
    assert "• 12:01 rollout restart done" in all_text(root["blocks"])
    assert "<http://localhost:9095/runs/run-1|Audit timeline>" in all_text(root["blocks"])
    # After a restart with the state dir lost: the thread is found by metadata, the event not repeated.
    fresh = SlackActivities(client_for(slack), SlackThreads(tmp_path / "fresh.db"))
    assert run(fresh.post_notice, notice("run-1/not_healed")).posted is False
    third = run(fresh.post_notice, notice("run-2/failed", kind="failed", title="run 2 failed"))
    assert third.posted and third.thread_ts == first.ts
    assert len(slack.calls("chat.postMessage")) == 4


def test_notices_of_one_target_on_two_clusters_keep_a_thread_each(slack, acts, tmp_path):
    """Engines started with --cluster: the same deployment on two clusters is two targets."""
    east = run(acts.post_notice, notice("run-e/not_healed", workflow_id="remediation/east/deployment/prod/checkout"))
    west = run(acts.post_notice, notice("run-w/not_healed", workflow_id="remediation/west/deployment/prod/checkout"))
    east_again = run(acts.post_notice, notice("run-e2/failed", kind="failed", title="",
                                              workflow_id="remediation/east/deployment/prod/checkout"))
    assert (east.thread_ts, west.thread_ts, east_again.thread_ts) == (None, None, east.ts)
    root = slack.message(CHANNEL, east.ts)
    assert root["metadata"]["event_payload"]["target"] == "east/deployment/prod/checkout"
    assert "*Cluster* `east` · *Target* `deployment/prod/checkout`" in all_text(root["blocks"])
    reply = slack.message(CHANNEL, east_again.ts)
    assert reply["text"].startswith(f"<!subteam^{ONCALL}> remediation of east/deployment/prod/checkout with playbook")
    # Another engine of west with its local record lost finds west's thread by metadata, not east's.
    fresh = SlackActivities(client_for(slack), SlackThreads(tmp_path / "fresh.db"))
    west_again = run(fresh.post_notice, notice("run-w2/failed", kind="failed",
                                                workflow_id="remediation/west/deployment/prod/checkout"))
    assert west_again.thread_ts == west.ts


def test_approval_request_names_the_cluster(slack, acts):
    req = request(workflow_id="remediation/east/deployment/prod/checkout")
    msg = run(acts.post_approval_request, req)
    stored = slack.message(CHANNEL, msg.ts)
    assert stored["blocks"][0]["text"]["text"] == "Approval needed: roll back on east/deployment/prod/checkout"
    assert "*Cluster* `east` · *Target* `deployment/prod/checkout`" in all_text(stored["blocks"])
    assert "roll back on east/deployment/prod/checkout will" in stored["text"]


# --------------------------------------------------------------------------- errors


def test_rate_limit_is_waited_out_as_slack_asks(slack, acts):
    slack.rate_limit("chat.postMessage", count=1, retry_after=1)
    msg = run(acts.post_approval_request, request())
    assert msg.posted
    rec = slack.recorded("chat.postMessage")
    assert [(c.status, c.error) for c in rec] == [(429, "ratelimited"), (200, None)]
    assert rec[0].headers == {"Retry-After": "1"}
    assert rec[1].at - rec[0].at >= 1.0
    assert len(slack.messages(CHANNEL)) == 1


def test_long_rate_limit_is_left_to_temporal(slack, acts):
    slack.rate_limit("chat.postMessage", count=1, retry_after=120)
    with pytest.raises(ApplicationError) as e:
        run(acts.post_approval_request, request())
    assert e.value.type == "SlackTemporaryError" and not e.value.non_retryable
    assert e.value.next_retry_delay == timedelta(seconds=120)
    assert len(slack.calls("chat.postMessage")) == 1
    assert run(acts.post_approval_request, request()).posted


def test_outage_is_retryable_and_loses_nothing(slack, acts):
    slack.outage("chat.postMessage", count=1, status=503)
    with pytest.raises(ApplicationError) as e:
        run(acts.post_approval_request, request())
    assert e.value.type == "SlackTemporaryError" and e.value.non_retryable is False
    assert "service_unavailable" in e.value.message
    assert e.value.type not in SLACK_NON_RETRYABLE
    msg = run(acts.post_approval_request, request())
    assert msg.posted and len(slack.messages(CHANNEL)) == 1


def test_connection_refused_is_retryable(store):
    dead = SlackEmulator()
    dead.start()
    url = dead.url
    dead.stop()
    acts = SlackActivities(make_client("xoxb-x", url), store)
    with pytest.raises(ApplicationError) as e:
        run(acts.post_approval_request, request(channel=CHANNEL))
    assert e.value.type == "SlackTemporaryError" and not e.value.non_retryable


def test_invalid_token_is_permanent(slack, store):
    acts = SlackActivities(client_for(slack, token="xoxb-wrong"), store)
    with pytest.raises(ApplicationError) as e:
        run(acts.post_approval_request, request(channel=CHANNEL))
    assert e.value.type == "SlackPermanentError" and e.value.non_retryable
    assert "invalid_auth" in e.value.message
    assert e.value.type in SLACK_NON_RETRYABLE
    with pytest.raises(ApplicationError) as e:
        run(acts.resolve_approvers, ResolveApproversInput(usergroups=[ONCALL]))
    assert e.value.type == "SlackPermanentError"


def test_unknown_channel_and_not_in_channel_are_permanent(slack, acts):
    with pytest.raises(ApplicationError) as e:
        run(acts.post_approval_request, request(channel="#nope"))
    assert e.value.type == "SlackPermanentError" and "#nope not found" in e.value.message
    private = slack.add_channel("secret", is_private=True, is_member=False)
    with pytest.raises(ApplicationError) as e:
        run(acts.post_approval_request, request(channel=private))
    assert e.value.type == "SlackPermanentError" and "not_in_channel" in e.value.message


def test_not_configured(store):
    with pytest.raises(SlackNotConfigured, match="slack-bot-token"):
        make_client(None)
    acts = SlackActivities(None, store)
    with pytest.raises(ApplicationError) as e:
        run(acts.post_notice, notice("x"))
    assert e.value.type == "SlackNotConfigured" and e.value.non_retryable


def test_resolve_approvers(slack, acts):
    res = run(acts.resolve_approvers, ResolveApproversInput(usergroups=[ONCALL, "S0GONE0001", ONCALL]))
    assert res.members == {ONCALL: [ALICE, BOB]}
    assert res.errors == ["S0GONE0001: no_such_subteam"]
    assert [c.params["usergroup"] for c in slack.calls("usergroups.users.list")] == [ONCALL, "S0GONE0001"]


# --------------------------------------------------------------------------- emulator helpers


def test_signed_click_and_response_url(slack, acts):
    req = request()
    msg = run(acts.post_approval_request, req)
    body, headers = slack.click(ALICE, CHANNEL, msg.ts, APPROVE_ACTION_ID)
    assert SignatureVerifier("s3cret").is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": ALICE, "username": "alice", "name": "alice", "team_id": slack.team_id}
    assert payload["container"] == {"type": "message", "message_ts": msg.ts, "channel_id": CHANNEL, "is_ephemeral": False}
    assert payload["channel"] == {"id": CHANNEL, "name": "oncall"}
    action = payload["actions"][0]
    assert (action["action_id"], action["type"], action["block_id"]) == (APPROVE_ACTION_ID, "button", "remediator_decision")
    assert parse_action_value(action["value"]).workflow_id == req.workflow_id
    assert payload["message"]["ts"] == msg.ts
    r = httpx.post(payload["response_url"], json={"response_type": "ephemeral", "text": "only approvers may decide"})
    assert r.status_code == 200
    assert [p.body for p in slack.response_posts()] == [{"response_type": "ephemeral", "text": "only approvers may decide"}]
    old = int(time.time()) - 600
    body, headers = signed_interaction(block_actions_payload(BOB, REJECT_ACTION_ID, "v", CHANNEL, msg.ts), "s3cret", old)
    assert headers["X-Slack-Request-Timestamp"] == str(old)
    assert not SignatureVerifier("s3cret").is_valid_request(body, headers)  # stale: replay protection


def test_emulator_history_replies_and_metadata(slack):
    client = client_for(slack)
    ts = [client.chat_postMessage(channel="#random", text=f"m{i}",
                                  metadata={"event_type": "t", "event_payload": {"i": i}})["ts"] for i in range(3)]
    ch = client.chat_postMessage(channel="random", text="x")["channel"]
    client.chat_postMessage(channel=ch, text="reply", thread_ts=ts[0])
    h = client.conversations_history(channel=ch, limit=2)
    assert [m["text"] for m in h["messages"]] == ["x", "m2"] and h["has_more"]
    assert "metadata" not in h["messages"][1]
    h2 = client.conversations_history(channel=ch, limit=2, cursor=h["response_metadata"]["next_cursor"],
                                      include_all_metadata=True)
    assert [(m["text"], m["metadata"]["event_payload"]) for m in h2["messages"]] == [("m1", {"i": 1}), ("m0", {"i": 0})]
    assert [m["text"] for m in client.conversations_history(channel=ch, oldest=ts[1])["messages"]] == ["x", "m2"]
    r = client.conversations_replies(channel=ch, ts=ts[0])
    assert [m["text"] for m in r["messages"]] == ["m0", "reply"] and r["messages"][0]["reply_count"] == 1
    from slack_sdk.errors import SlackApiError
    with pytest.raises(SlackApiError) as e:
        client.conversations_history(channel="#random")
    assert e.value.response["error"] == "channel_not_found"
    assert client.auth_test()["user_id"] == slack.bot_user_id
    assert client.users_info(user=ALICE)["user"]["real_name"] == "Alice Example"
    assert client.chat_getPermalink(channel=ch, message_ts=ts[0])["permalink"].endswith(f"/archives/{ch}/p{ts[0].replace('.', '')}")
    assert client.chat_postEphemeral(channel="#oncall", user=BOB, text="hi")["message_ts"]
    assert slack.ephemeral_messages()[0]["user"] == BOB


@pytest.mark.parametrize("starts_at, shown", [
    # past datetime.max once in UTC: shown as written
    ("9999-12-31T23:00:00-05:00", "9999-12-31T23:00:00-05:00"),
    # before datetime.min once in UTC: shown as written
    ("0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00+05:00"),
    # the largest offset RFC 3339 allows: Slack's date formatting, UTC fallback
    ("2026-11-21T05:00:00+23:59", "<!date^1795150860^{date_short_pretty} {time}|2026-11-20 05:01 UTC>"),
])
def test_any_accepted_alert_time_is_posted(slack, acts, starts_at, shown):
    """A notice and an approval request whose alert time cannot be converted to UTC are posted
    (the time as written, without Slack's date formatting), not retried until lost."""
    odd = alert().model_copy(update={"starts_at": datetime.fromisoformat(starts_at)})
    result = run(acts.post_notice, notice("odd-time", alert=odd))
    assert validate_blocks(slack.message(CHANNEL, result.ts)["blocks"]) == []
    posted = run(acts.post_approval_request, request("run-1/odd", alert=odd))
    text = all_text(slack.message(CHANNEL, posted.ts)["blocks"])
    assert f"*Alert* `CheckoutErrors` firing since {shown}" in text
