"""Slack interactivity: a click on Approve/Reject, verified, handed to the run as a decision.

Two callers share ``handle_block_actions``:

* ``router()``: the FastAPI router for ``POST /slack/interactivity``, the Slack app's
  *Interactivity Request URL*; mounted on the intake app by remediator.app.runtime
  (``app.include_router(router(...))``) when ``SLACK_SIGNING_SECRET`` is set;
* remediator.socket_mode, which receives the same payloads over a WebSocket (no public URL).

The endpoint, in this order, each refusal answered ``{"error": "..."}`` with nothing sent to
Temporal:

1. the raw body is read first, capped at ``MAX_BODY_BYTES`` -> 413;
2. Slack's request signature is checked on that raw body with slack_sdk's
   ``SignatureVerifier`` (``v0=HMAC-SHA256(signing secret, "v0:<timestamp>:<body>")``,
   https://api.slack.com/authentication/verifying-requests-from-slack): missing headers,
   a timestamp that is not an integer, more than 5 minutes old or ahead (replay window), a
   signature mismatch, or a request already received (same timestamp and signature: a replay,
   not audited again) -> 401;
3. ``payload=<json>`` form field -> 400 if missing or not a JSON object;
4. only ``block_actions`` with the ``remediator_approve`` / ``remediator_reject`` action IDs
   are acted on; every other interaction Slack sends (shortcuts, view submissions, other
   buttons) is answered 200 and ignored.

Then the decision goes to the run through remediator.app.approvals.submit_decision, bounded by
``UPDATE_TIMEOUT`` so Slack gets its answer within its 3 seconds: 200 once the run accepted it
(the run rewrites the approval message itself, via an activity); 403 when the run refused it
(unauthorised user, stale message, already decided, run ended) and 503 when Temporal or the
worker did not answer. On 403 and 503 the person who clicked is told why in an ephemeral
message (``chat.postEphemeral`` in the channel, else the payload's ``response_url``); a
refusal is also recorded in the audit trail.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient
from temporalio.client import Client

from remediator.app.approvals import (
    BadButtonValue,
    DecisionRefused,
    TemporalUnavailable,
    parse_button_value,
    submit_decision,
)
from remediator.audit.store import AuditStore
from remediator.app.config import ConfigError, Settings
from remediator.app.intake import BodyRefused, read_body
from remediator.domain.messages import ApprovalDecision, DecisionResult
from remediator.slack.blocks import APPROVE_ACTION_ID, REJECT_ACTION_ID

log = logging.getLogger("remediator.slack_interactivity")

INTERACTIVITY_PATH = "/slack/interactivity"
MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted body (1 MiB); a real block_actions payload is a few KiB."""

REPLAY_WINDOW_S = 300
"""Requests whose ``X-Slack-Request-Timestamp`` is further than this from now (either way) are
refused, as Slack's verification guide and slack_sdk's SignatureVerifier do (5 minutes)."""

UPDATE_TIMEOUT_S = 2.5
"""Seconds the decision may take to reach the run: Slack shows the clicker an error when the
endpoint has not answered within 3 seconds."""

SLACK_DEADLINE_S = 2.9
"""Seconds after receipt by which the answer should be on its way; an ephemeral message that
would delay it past this is finished after the answer."""

ACTIONS: dict[str, Literal["approve", "reject"]] = {
    APPROVE_ACTION_ID: "approve",
    REJECT_ACTION_ID: "reject",
}
"""``action_id`` of the buttons remediator.slack puts on an approval message -> decision."""

Via = Literal["slack", "socket_mode"]


@dataclass
class ClickOutcome:
    """What became of one interaction payload.

    ``status``: the HTTP answer of the endpoint (200 accepted or ignored, 400 malformed,
    403 refused by the run, 503 Temporal unavailable). ``message``: why, for logs and the
    error body. ``ephemeral``: the text the clicker was told (None: nothing sent).
    """

    status: int
    message: str
    result: DecisionResult | None = None
    ephemeral: str | None = None
    ephemeral_task: asyncio.Task[None] | None = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ReplayGuard:
    """Remembers the signed requests accepted in the last ``REPLAY_WINDOW_S`` seconds, so the
    same request sent again (same ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature``) is
    refused instead of reaching the run a second time.

    Slack signs every request afresh and does not retry interactivity requests, so a repeat is a
    replay. A request older than the window is refused by its timestamp; this covers the window
    itself. Kept in this process's memory, bounded by the window: with several replicas behind one
    Request URL a replay sent to another replica gets as far as the run, which accepts one decision
    per approval request ("already decided").
    """

    def __init__(self, window_s: float = REPLAY_WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: dict[tuple[str, str], float] = {}

    def first_time(self, timestamp: str, signature: str, now: float | None = None) -> bool:
        """True the first time this (timestamp, signature) pair is seen within the window."""
        now = time.time() if now is None else now
        if len(self._seen) > 1024:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        key = (timestamp.strip(), signature.strip())
        expires = self._seen.get(key)
        if expires is not None and expires > now:
            return False
        # Accepted timestamps are at most window_s old or ahead: forget them once they are out of it.
        self._seen[key] = int(key[0]) + self.window_s + 1
        return True


def check_signature(verifier: SignatureVerifier, body: bytes, timestamp: str | None, signature: str | None, now: float | None = None) -> str | None:
    """None when ``body`` carries a valid Slack signature, else the reason it does not.

    Args:
        verifier: built from the app's signing secret.
        body: the raw request body, exactly as received.
        timestamp: ``X-Slack-Request-Timestamp`` (Unix seconds, ASCII digits).
        signature: ``X-Slack-Signature`` (``v0=<hex>``).
        now: Unix seconds; defaults to the wall clock.
    """
    if not timestamp or not signature:
        missing = [h for h, v in (("X-Slack-Request-Timestamp", timestamp), ("X-Slack-Signature", signature)) if not v]
        return f"missing {' and '.join(missing)}; requests must be signed by Slack"
    ts = timestamp.strip()
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
        # SignatureVerifier.is_valid would raise ValueError on int(); refuse here instead.
        return f"X-Slack-Request-Timestamp must be Unix seconds, got {timestamp[:40]!r}"
    now = time.time() if now is None else now
    age = now - int(ts)
    if age > REPLAY_WINDOW_S:
        return f"request timestamp is {int(age)}s old (over {REPLAY_WINDOW_S}s): refused as a possible replay"
    if age < -REPLAY_WINDOW_S:
        return f"request timestamp is {int(-age)}s in the future (over {REPLAY_WINDOW_S}s): check the clock"
    try:
        valid = verifier.is_valid(body=body, timestamp=ts, signature=signature)
    except UnicodeDecodeError:
        valid = False
    if not valid:
        return "X-Slack-Signature does not match the body and the signing secret (SLACK_SIGNING_SECRET)"
    return None


def parse_form_payload(body: bytes) -> dict[str, Any]:
    """The ``payload`` JSON object of an ``application/x-www-form-urlencoded`` interaction body.

    Raises:
        ValueError: not UTF-8 form data, no single ``payload`` field, or not a JSON object.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    try:
        form = parse_qs(text, strict_parsing=True, max_num_fields=16)
    except ValueError as err:
        raise ValueError(f"body is not form data: {err}") from None
    values = form.get("payload")
    if not values or len(values) != 1:
        raise ValueError("body must have exactly one 'payload' form field")
    try:
        payload = json.loads(values[0])
    except json.JSONDecodeError as err:
        raise ValueError(f"payload is not JSON ({err.msg} at position {err.pos})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"payload must be a JSON object, got {type(payload).__name__}")
    return payload


def _our_action(payload: dict[str, Any]) -> dict[str, Any] | None:
    actions = payload.get("actions")
    if not isinstance(actions, list):
        return None
    for action in actions:
        if isinstance(action, dict) and action.get("action_id") in ACTIONS:
            return action
    return None


def _channel_id(payload: dict[str, Any]) -> str | None:
    channel = payload.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("id"), str):
        return channel["id"]
    container = payload.get("container")
    if isinstance(container, dict) and isinstance(container.get("channel_id"), str):
        return container["channel_id"]
    return None


async def post_ephemeral(
    slack_client: Any, *, channel: str | None, user: str, text: str, response_url: str | None
) -> None:
    """Tell one person something only they see.

    ``chat.postEphemeral`` to ``user`` in ``channel`` with the bot token (``slack_client``:
    a slack_sdk ``WebClient`` or ``AsyncWebClient``); when that is not possible or fails, a POST
    of ``{"response_type": "ephemeral", "replace_original": false, "text": ...}`` to the
    payload's ``response_url`` (valid 30 minutes, no token needed). Failures are logged, never
    raised: the answer to the click does not depend on it.
    """
    if slack_client is not None and channel:
        try:
            method = slack_client.chat_postEphemeral
            if inspect.iscoroutinefunction(method):
                await method(channel=channel, user=user, text=text)
            else:
                await asyncio.to_thread(method, channel=channel, user=user, text=text)
            return
        except Exception as err:  # SlackApiError, connection errors: fall back to response_url
            log.warning("chat.postEphemeral to %s in %s failed: %s", user, channel, err)
    if response_url:
        try:
            resp = await asyncio.to_thread(
                WebhookClient(response_url, timeout=5).send_dict,
                {"response_type": "ephemeral", "replace_original": False, "text": text},
            )
            if resp.status_code // 100 == 2:
                return
            log.warning("response_url answered %s: %s", resp.status_code, resp.body)
        except Exception as err:
            log.warning("POST to response_url failed: %s", err)
    log.error("could not tell %s (%s)", user, text)


async def handle_block_actions(
    payload: dict[str, Any],
    *,
    via: Via,
    client: Client,
    audit: AuditStore | None,
    slack_client: Any,
    timeout: float = UPDATE_TIMEOUT_S,
) -> ClickOutcome:
    """Act on one interaction payload (already authenticated) and tell the clicker on failure.

    Args:
        payload: Slack's interaction payload; only ``type: block_actions`` with an action whose
            ``action_id`` is in ``ACTIONS`` does anything.
        via: ``slack`` (HTTP endpoint) or ``socket_mode``; recorded on the decision.
        client: connected Temporal client.
        audit: where refusals are recorded.
        slack_client: slack_sdk WebClient (bot token) for the ephemeral explanation, or None.
        timeout: seconds for the decision to reach the run.

    Returns:
        The outcome; when ``ephemeral`` is set its delivery runs as ``ephemeral_task`` (the
        caller may wait for it or let it finish after answering).
    """
    if payload.get("type") != "block_actions":
        return ClickOutcome(200, f"ignored interaction of type {payload.get('type')!r}")
    action = _our_action(payload)
    if action is None:
        return ClickOutcome(200, "ignored block_actions without a remediator action")
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        return ClickOutcome(400, "block_actions payload has no user.id")
    user_id: str = user["id"]
    user_name = str(user.get("username") or user.get("name") or "")
    decision_kind = ACTIONS[action["action_id"]]
    channel = _channel_id(payload)
    response_url = payload.get("response_url") if isinstance(payload.get("response_url"), str) else None
    try:
        workflow_id, run_id, request_id = parse_button_value(action.get("value"))
        decision = ApprovalDecision(
            request_id=request_id,
            decision=decision_kind,
            user_id=user_id,
            user_name=user_name,
            via=via,
            decided_at=datetime.now(UTC),
        )
    except (BadButtonValue, ValidationError) as err:
        return ClickOutcome(400, f"action {action['action_id']}: {err}")

    verb = "Approve" if decision_kind == "approve" else "Reject"
    try:
        result = await submit_decision(client, workflow_id, run_id, decision, audit=audit, timeout=timeout)
    except DecisionRefused as err:
        text = f":no_entry: Your {verb} was not applied to `{request_id}`: {err.reason}"
        outcome = ClickOutcome(403, err.reason, ephemeral=text)
    except TemporalUnavailable as err:
        log.error("decision from %s could not reach %s: %s", user_id, workflow_id, err)
        text = (
            f":warning: Your {verb} for `{request_id}` could not be delivered: the remediation engine did not "
            f"answer in time. Nothing was decided; click again in a minute, or run "
            f"`remediator {decision_kind} {run_id} --as {user_id}`."
        )
        outcome = ClickOutcome(503, str(err), ephemeral=text)
    else:
        return ClickOutcome(200, result.message, result=result)
    outcome.ephemeral_task = asyncio.create_task(
        post_ephemeral(slack_client, channel=channel, user=user_id, text=text, response_url=response_url)
    )
    return outcome


def router(settings: Settings, client: Client, audit: AuditStore | None, slack_client: Any) -> APIRouter:
    """The ``POST /slack/interactivity`` endpoint (see the module docstring for its answers).

    Args:
        settings: ``slack_signing_secret`` is required.
        client: connected Temporal client (pydantic data converter).
        audit: where refused decisions are recorded.
        slack_client: slack_sdk WebClient with the bot token (remediator.slack.make_client), used
            for ephemeral explanations; None falls back to the payload's ``response_url``.

    Raises:
        ConfigError: no signing secret.
    """
    if not settings.slack_signing_secret:
        raise ConfigError(
            "the Slack interactivity endpoint needs the app's signing secret: set SLACK_SIGNING_SECRET "
            "(or use Socket Mode with SLACK_APP_TOKEN)"
        )
    verifier = SignatureVerifier(settings.slack_signing_secret)
    replays = ReplayGuard()
    api = APIRouter()
    background: set[asyncio.Task[None]] = set()

    @api.post(INTERACTIVITY_PATH)
    async def interactivity(request: Request) -> Response:
        received = asyncio.get_running_loop().time()
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyRefused as err:
            return _error(err.status, err.message)

        refused = check_signature(
            verifier,
            body,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
        )
        if refused is None and not replays.first_time(
            request.headers.get("x-slack-request-timestamp", ""), request.headers.get("x-slack-signature", "")
        ):
            refused = "this signed request was already received (same timestamp and signature): refused as a replay"
        if refused is not None:
            log.warning("refused Slack interaction from %s: %s", request.client.host if request.client else "?", refused)
            return _error(401, refused)

        try:
            payload = parse_form_payload(body)
        except ValueError as err:
            return _error(400, str(err))

        outcome = await handle_block_actions(
            payload, via="slack", client=client, audit=audit, slack_client=slack_client, timeout=UPDATE_TIMEOUT_S
        )
        task = outcome.ephemeral_task
        if task is not None:
            # Tell the clicker before answering while Slack's 3 s allow it; otherwise the
            # message is finished after the answer.
            remaining = SLACK_DEADLINE_S - (asyncio.get_running_loop().time() - received)
            done, _ = await asyncio.wait({task}, timeout=max(0.0, remaining))
            if not done:
                background.add(task)
                task.add_done_callback(background.discard)
        if outcome.status == 200:
            if outcome.result is not None:
                return JSONResponse({"ok": True, "message": outcome.result.message})
            return Response(status_code=200)
        return _error(outcome.status, outcome.message)

    return api
