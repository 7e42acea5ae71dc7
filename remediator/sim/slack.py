"""A Slack Web API emulator on loopback, for the tests and the demo.

``SlackEmulator`` serves the Web API methods remediator uses at ``http://127.0.0.1:PORT/api/``
so slack-sdk's ``WebClient(base_url=emulator.url)`` talks to it over real HTTP. Answers have the
shapes of Slack's method reference (docs.slack.dev/reference/methods): HTTP 200 with
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``; the token is read from
``Authorization: Bearer`` (or a ``token`` parameter) and checked (``not_authed`` /
``invalid_auth``); form-encoded and JSON bodies are both accepted, as Slack does.

Methods: auth.test, chat.postMessage, chat.update, chat.postEphemeral, chat.getPermalink,
conversations.history, conversations.replies, conversations.list, usergroups.users.list,
users.info. Blocks are validated against Block Kit's size limits (``invalid_blocks`` with the
same ``json-pointer`` messages), message metadata is stored and returned only with
``include_all_metadata``, channel names (``#oncall``) resolve where Slack resolves them
(chat.postMessage, chat.postEphemeral) and are refused where Slack wants an ID.

Test helpers: seeding (``add_channel``, ``add_user``, ``add_usergroup``), every call recorded
(``calls``), fault injection (``rate_limit`` answers 429 with ``Retry-After`` as Slack's rate
limiter does, ``outage`` answers 5xx), and interaction requests crafted exactly as Slack sends
them to an app's Request URL (``signed_interaction``, ``block_actions_payload``,
``SlackEmulator.click``) with ``response_url`` POSTs recorded (``response_posts``).

Used by tests/test_slack.py, the interactivity tests and ``remediator demo``; never in production.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

from remediator.sim.httpserve import LoopbackHTTPServer

# Block Kit limits (docs.slack.dev/reference/block-kit): checked on chat.postMessage/update.
MAX_BLOCKS = 50
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
BUTTON_URL_MAX = 3000
ID_MAX = 255
MESSAGE_TEXT_MAX = 40000
BLOCK_TYPES = {"section", "header", "context", "actions", "divider", "image", "rich_text", "markdown", "input"}

_EVENT_TYPE = re.compile(r"^[a-zA-Z0-9_]{1,255}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


class Call(NamedTuple):
    """One Web API call as received: method name, parameters (JSON body, form fields and query
    merged; form values stay strings), ``at`` = ``time.time()`` on receipt."""

    method: str
    params: dict[str, Any]
    at: float


@dataclass(frozen=True)
class RecordedCall:
    """A call with what was answered: HTTP ``status`` and Slack's ``error`` (None when ok)."""

    method: str
    params: dict[str, Any]
    at: float
    status: int
    error: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class ResponsePost:
    """A POST to a ``response_url`` the emulator handed out: path, parsed JSON body, time."""

    path: str
    body: Any
    at: float


@dataclass
class _Fault:
    method: str | None
    remaining: int
    status: int
    retry_after: int | None = None


@dataclass
class _Channel:
    id: str
    name: str
    is_private: bool = False
    is_member: bool = True
    members: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)  # oldest first, replies included


class SlackApiFailure(Exception):
    """Raised inside a method handler: answered as ``{"ok": false, "error": error, **extra}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# --------------------------------------------------------------------------- interaction requests


def signed_interaction(payload: dict[str, Any], signing_secret: str,
                       timestamp: int | float | None = None) -> tuple[bytes, dict[str, str]]:
    """An interaction request as Slack sends it to the app's Request URL.

    Returns ``(body, headers)``: body ``payload=<url-encoded JSON>``
    (``application/x-www-form-urlencoded``), headers ``X-Slack-Request-Timestamp`` (Unix
    seconds, ``timestamp`` or now) and ``X-Slack-Signature`` = ``v0=`` + hex HMAC-SHA256 of
    ``v0:{timestamp}:{body}`` with the signing secret, computed by slack-sdk's
    ``SignatureVerifier`` (docs.slack.dev/authentication/verifying-requests-from-slack).
    """
    body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
    ts = str(int(time.time() if timestamp is None else timestamp))
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature or "",
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
    return body, headers


def block_actions_payload(
    user_id: str,
    action_id: str,
    value: str,
    channel: str,
    message_ts: str,
    response_url: str = "https://hooks.slack.com/actions/T0REMED01/1/emulator",
    *,
    user_name: str = "",
    team_id: str = "T0REMED01",
    team_domain: str = "remediator",
    channel_name: str = "",
    api_app_id: str = "A0REMED001",
    block_id: str = "",
    message: dict[str, Any] | None = None,
    button_text: str = "",
    style: str | None = None,
    action_ts: str | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` payload for a button click, with the fields of Slack's reference
    (docs.slack.dev/reference/interaction-payloads/block_actions-payload): ``type``, ``user``
    {id, username, name, team_id}, ``api_app_id``, ``token`` (the deprecated verification
    token), ``container`` (message, ``message_ts``, ``channel_id``), ``trigger_id``, ``team``,
    ``enterprise``, ``channel``, ``message``, ``state``, ``response_url`` and ``actions``
    [{action_id, block_id, text, value, style, type "button", action_ts}]."""
    now = time.time()
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text or action_id, "emoji": True},
        "value": value,
        "type": "button",
        "action_ts": action_ts or f"{now:.6f}",
    }
    if style:
        action["style"] = style
    name = user_name or user_id.lower()
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": name, "name": name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "verification-token-deprecated",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"{int(now)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": channel_name},
        "message": message if message is not None else {"type": "message", "ts": message_ts},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


# --------------------------------------------------------------------------- block validation


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def validate_blocks(blocks: Any) -> list[str]:
    """Block Kit size and shape errors as Slack words them (``... [json-pointer:/blocks/1/text/text]``);
    empty when valid. Checks what remediator's messages use, not every element type."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for i, b in enumerate(blocks):
        p = f"/blocks/{i}"
        if not isinstance(b, dict) or b.get("type") not in BLOCK_TYPES:
            errors.append(f"unsupported type [json-pointer:{p}/type]")
            continue
        bid = b.get("block_id")
        if bid is not None:
            if len(bid) > ID_MAX:
                errors.append(f"must be less than {ID_MAX + 1} characters [json-pointer:{p}/block_id]")
            if bid in block_ids:
                errors.append(f"duplicate block_id [json-pointer:{p}/block_id]")
            block_ids.add(bid)
        t = b["type"]
        if t == "header":
            text = b.get("text")
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                errors.append(f"must be a plain_text object [json-pointer:{p}/text]")
            elif not 1 <= _text_len(text) <= HEADER_TEXT_MAX:
                errors.append(f"must be less than {HEADER_TEXT_MAX + 1} characters [json-pointer:{p}/text/text]")
        elif t == "section":
            if "text" not in b and "fields" not in b:
                errors.append(f"must provide text or fields [json-pointer:{p}]")
            if "text" in b and not 1 <= _text_len(b["text"]) <= SECTION_TEXT_MAX:
                errors.append(f"must be less than {SECTION_TEXT_MAX + 1} characters [json-pointer:{p}/text/text]")
            fields = b.get("fields", [])
            if len(fields) > SECTION_FIELDS_MAX:
                errors.append(f"no more than {SECTION_FIELDS_MAX} items allowed [json-pointer:{p}/fields]")
            for j, f in enumerate(fields):
                if _text_len(f) > FIELD_TEXT_MAX:
                    errors.append(f"must be less than {FIELD_TEXT_MAX + 1} characters [json-pointer:{p}/fields/{j}/text]")
        elif t == "context":
            elements = b.get("elements", [])
            if not 1 <= len(elements) <= CONTEXT_ELEMENTS_MAX:
                errors.append(f"must have 1 to {CONTEXT_ELEMENTS_MAX} items [json-pointer:{p}/elements]")
            for j, e in enumerate(elements):
                if _text_len(e) > SECTION_TEXT_MAX:
                    errors.append(f"must be less than {SECTION_TEXT_MAX + 1} characters [json-pointer:{p}/elements/{j}/text]")
        elif t == "actions":
            elements = b.get("elements", [])
            if not 1 <= len(elements) <= ACTIONS_ELEMENTS_MAX:
                errors.append(f"must have 1 to {ACTIONS_ELEMENTS_MAX} items [json-pointer:{p}/elements]")
            for j, e in enumerate(elements):
                errors.extend(_validate_button(e, f"{p}/elements/{j}"))
    return errors


def _validate_button(e: Any, p: str) -> list[str]:
    if not isinstance(e, dict) or e.get("type") != "button":
        return []
    errors = []
    if not isinstance(e.get("text"), dict) or not 1 <= _text_len(e["text"]) <= BUTTON_TEXT_MAX:
        errors.append(f"must be less than {BUTTON_TEXT_MAX + 1} characters [json-pointer:{p}/text/text]")
    if len(str(e.get("value", ""))) > BUTTON_VALUE_MAX:
        errors.append(f"must be less than {BUTTON_VALUE_MAX + 1} characters [json-pointer:{p}/value]")
    if len(str(e.get("action_id", ""))) > ID_MAX:
        errors.append(f"must be less than {ID_MAX + 1} characters [json-pointer:{p}/action_id]")
    if len(str(e.get("url", ""))) > BUTTON_URL_MAX:
        errors.append(f"must be less than {BUTTON_URL_MAX + 1} characters [json-pointer:{p}/url]")
    if e.get("style") not in (None, "primary", "danger"):
        errors.append(f"must be one of primary, danger [json-pointer:{p}/style]")
    return errors


# --------------------------------------------------------------------------- emulator


class _Server(LoopbackHTTPServer):
    emulator: SlackEmulator


class SlackEmulator:
    """Slack's Web API on loopback, plus the helpers a test needs.

    ``host`` must be loopback; ``port`` 0 picks a free port. ``bot_token`` is the one token
    accepted (others get ``invalid_auth``); ``signing_secret`` signs the interaction requests
    made by ``click``. The bot user (``bot_user_id``) is a member of every channel added with
    ``is_member=True``. ``start()``/``stop()`` or ``with``; ``url`` is the WebClient base_url.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, signing_secret: str = "emulator-signing-secret",
                 bot_token: str = "xoxb-emulator-token", team_id: str = "T0REMED01",
                 team_domain: str = "remediator") -> None:
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError(f"the Slack emulator listens on loopback only, not {host!r}")
        self.host = host
        self.port = port
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = "U0REMEDBOT"
        self.bot_id = "B0REMEDBOT"
        self.app_id = "A0REMED001"
        self._lock = threading.RLock()
        self._channels: dict[str, _Channel] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, dict[str, Any]] = {}
        self._calls: list[RecordedCall] = []
        self._faults: list[_Fault] = []
        self._response_posts: list[ResponsePost] = []
        self._ephemeral: list[dict[str, Any]] = []
        self._last_ts = 0.0
        self._next_channel = 1
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.add_user(self.bot_user_id, "remediator", real_name="remediator", is_bot=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SlackEmulator:
        """Bind and serve on a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.emulator = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="slack-emulator-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """Web API base URL for ``WebClient(base_url=...)``: ``http://127.0.0.1:PORT/api/``."""
        return f"{self.base}/api/"

    # ------------------------------------------------------------------ seeding

    def add_channel(self, name: str, id: str | None = None, *, is_private: bool = False,  # noqa: A002 - Slack's field name
                    is_member: bool = True, members: list[str] | None = None) -> str:
        """Create a channel (``name`` without ``#``); returns its ID (``C...``, ``G...`` private)."""
        with self._lock:
            if id is None:
                id = f"{'G' if is_private else 'C'}0EMU{self._next_channel:05d}"
                self._next_channel += 1
            ch = _Channel(id=id, name=name.lstrip("#"), is_private=is_private, is_member=is_member,
                          members=set(members or []))
            if is_member:
                ch.members.add(self.bot_user_id)
            self._channels[id] = ch
            return id

    def add_user(self, id: str, name: str, *, real_name: str | None = None, is_bot: bool = False,  # noqa: A002
                 deleted: bool = False, tz: str = "Europe/Amsterdam") -> dict[str, Any]:
        """Add a user as ``users.info`` returns it."""
        real = real_name or name
        user = {
            "id": id, "team_id": self.team_id, "name": name, "deleted": deleted, "real_name": real,
            "tz": tz, "is_bot": is_bot, "is_admin": False, "is_app_user": False,
            "profile": {"real_name": real, "display_name": name, "team": self.team_id},
        }
        with self._lock:
            self._users[id] = user
        return user

    def add_usergroup(self, id: str, handle: str, users: list[str], *, name: str | None = None,  # noqa: A002
                      disabled: bool = False) -> None:
        """Add a user group (``S...``) with its members, for ``usergroups.users.list``."""
        with self._lock:
            self._usergroups[id] = {"id": id, "handle": handle, "name": name or handle,
                                    "users": list(users), "disabled": disabled}

    def set_usergroup_users(self, id: str, users: list[str]) -> None:  # noqa: A002
        with self._lock:
            self._usergroups[id]["users"] = list(users)

    # ------------------------------------------------------------------ inspection

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call received (faulted ones included), oldest first, optionally of one method."""
        with self._lock:
            return [Call(c.method, c.params, c.at) for c in self._calls if method is None or c.method == method]

    def recorded(self, method: str | None = None) -> list[RecordedCall]:
        """Like ``calls`` with the HTTP status and Slack error answered."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every message of a channel (ID or name), oldest first, thread replies included, with metadata."""
        with self._lock:
            return json.loads(json.dumps(self._channel(channel, names=True).messages))

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """One stored message (a copy); KeyError when absent."""
        with self._lock:
            for m in self._channel(channel, names=True).messages:
                if m["ts"] == ts:
                    return json.loads(json.dumps(m))
        raise KeyError(f"no message {ts} in {channel}")

    def ephemeral_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._ephemeral)

    def response_posts(self) -> list[ResponsePost]:
        """POSTs received on ``response_url`` paths, oldest first."""
        with self._lock:
            return list(self._response_posts)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # ------------------------------------------------------------------ faults

    def rate_limit(self, method: str, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with HTTP 429, ``Retry-After: retry_after``
        and ``{"ok": false, "error": "ratelimited"}``, as Slack's rate limiter does."""
        with self._lock:
            self._faults.append(_Fault(method, count, 429, retry_after))

    def outage(self, method: str | None = None, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` calls (of ``method``, or of any method) with HTTP ``status``."""
        with self._lock:
            self._faults.append(_Fault(method, count, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ------------------------------------------------------------------ interactions

    def response_url(self) -> str:
        """A fresh ``response_url`` on this emulator (``/actions/T.../N/secret``), as Slack issues."""
        with self._lock:
            n = len(self._response_posts) + secrets.randbelow(10**9)
        return f"{self.base}/actions/{self.team_id}/{n}/{secrets.token_urlsafe(12)}"

    def click(self, user_id: str, channel: str, message_ts: str, action_id: str,
              timestamp: int | float | None = None) -> tuple[bytes, dict[str, str]]:
        """The signed request Slack would send when ``user_id`` clicks the button ``action_id`` of a
        posted message: the button's ``value`` and ``block_id`` are read from the stored blocks.
        Returns ``(body, headers)`` for a POST to the app's interactivity endpoint.

        Raises KeyError when the message or the button does not exist (Slack shows no button)."""
        with self._lock:
            ch = self._channel(channel, names=True)
            msg = self.message(ch.id, message_ts)
            user = self._users.get(user_id, {"name": user_id.lower()})
        for block in msg.get("blocks", []):
            for e in block.get("elements", []) if block.get("type") == "actions" else []:
                if e.get("action_id") == action_id:
                    payload = block_actions_payload(
                        user_id, action_id, e.get("value", ""), ch.id, message_ts, self.response_url(),
                        user_name=user["name"], team_id=self.team_id, team_domain=self.team_domain,
                        channel_name=ch.name, api_app_id=self.app_id, block_id=block.get("block_id", ""),
                        message=msg, button_text=e.get("text", {}).get("text", ""), style=e.get("style"),
                    )
                    return signed_interaction(payload, self.signing_secret, timestamp)
        raise KeyError(f"message {message_ts} has no button {action_id!r}")

    # ------------------------------------------------------------------ request handling

    def handle_api(self, method: str, params: dict[str, Any], token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one Web API call: ``(status, json body, extra headers)``; records it."""
        at = time.time()
        headers: dict[str, str] = {}
        with self._lock:
            fault = next((f for f in self._faults if f.remaining > 0 and f.method in (None, method)), None)
            if fault is not None:
                fault.remaining -= 1
                if fault.status == 429:
                    status, body = 429, {"ok": False, "error": "ratelimited"}
                    headers["Retry-After"] = str(fault.retry_after or 1)
                else:
                    error = "internal_error" if fault.status == 500 else "service_unavailable"
                    status, body = fault.status, {"ok": False, "error": error}
            else:
                status = 200
                try:
                    handler = _METHODS.get(method)
                    if handler is None:
                        raise SlackApiFailure("unknown_method")
                    token = token or params.get("token")
                    if not token:
                        raise SlackApiFailure("not_authed")
                    if token != self.bot_token:
                        raise SlackApiFailure("invalid_auth")
                    body = {"ok": True, **handler(self, params)}
                except SlackApiFailure as e:
                    body = {"ok": False, "error": e.error, **e.extra}
            self._calls.append(RecordedCall(method, params, at, status,
                                            None if body.get("ok") else body.get("error"), headers))
        return status, body, headers

    def handle_response_url(self, path: str, body: Any) -> None:
        with self._lock:
            self._response_posts.append(ResponsePost(path, body, time.time()))

    # ------------------------------------------------------------------ internals

    def _channel(self, ref: Any, *, names: bool = False) -> _Channel:
        ref = str(ref or "")
        if ref in self._channels:
            return self._channels[ref]
        if names and not _CHANNEL_ID.match(ref):
            name = ref.lstrip("#")
            for ch in self._channels.values():
                if ch.name == name:
                    return ch
        raise SlackApiFailure("channel_not_found")

    def _next_ts(self) -> str:
        t = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = t
        return f"{t:.6f}"

    def _find(self, ch: _Channel, ts: Any) -> dict[str, Any] | None:
        return next((m for m in ch.messages if m["ts"] == str(ts)), None)

    def _permalink(self, ch: _Channel, msg: dict[str, Any]) -> str:
        link = f"https://{self.team_domain}.slack.com/archives/{ch.id}/p{msg['ts'].replace('.', '')}"
        if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
            link += f"?thread_ts={msg['thread_ts']}&cid={ch.id}"
        return link


# --------------------------------------------------------------------------- parameters


def _json_param(params: dict[str, Any], name: str) -> Any:
    """A structured parameter: as sent in a JSON body, or a JSON string in a form field."""
    v = params.get(name)
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError as e:
            raise SlackApiFailure(f"invalid_{name}" if name != "metadata" else "invalid_metadata_format") from e
    return v


def _flag(params: dict[str, Any], name: str) -> bool:
    v = params.get(name)
    if isinstance(v, str):
        return v.lower() in ("1", "true")
    return bool(v)


def _int(params: dict[str, Any], name: str, default: int, maximum: int) -> int:
    try:
        n = int(params.get(name) or default)
    except (TypeError, ValueError) as e:
        raise SlackApiFailure("invalid_arguments") from e
    return max(1, min(n, maximum))


def _cursor_encode(n: int) -> str:
    return base64.b64encode(f"next:{n}".encode()).decode()


def _cursor_decode(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(str(cursor)).decode().split(":", 1)[1])
    except (ValueError, IndexError) as e:
        raise SlackApiFailure("invalid_cursor") from e


def _page(items: list[Any], params: dict[str, Any], default: int, maximum: int) -> tuple[list[Any], dict[str, Any]]:
    start = _cursor_decode(params.get("cursor"))
    limit = _int(params, "limit", default, maximum)
    page = items[start:start + limit]
    more = start + limit < len(items)
    return page, {"has_more": more, "response_metadata": {"next_cursor": _cursor_encode(start + limit) if more else ""}}


def _in_window(ts: str, params: dict[str, Any]) -> bool:
    t = float(ts)
    inclusive = _flag(params, "inclusive")
    if params.get("oldest") not in (None, ""):
        oldest = float(params["oldest"])
        if t < oldest or (t == oldest and not inclusive):
            return False
    if params.get("latest") not in (None, ""):
        latest = float(params["latest"])
        if t > latest or (t == latest and not inclusive):
            return False
    return True


def _public(msg: dict[str, Any], include_metadata: bool) -> dict[str, Any]:
    out = json.loads(json.dumps(msg))
    if not include_metadata:
        out.pop("metadata", None)
    return out


# --------------------------------------------------------------------------- methods


def _auth_test(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    return {"url": f"https://{emu.team_domain}.slack.com/", "team": emu.team_domain, "user": "remediator",
            "team_id": emu.team_id, "user_id": emu.bot_user_id, "bot_id": emu.bot_id,
            "is_enterprise_install": False}


def _message_content(params: dict[str, Any], *, required: bool) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if "blocks" in params and params["blocks"] is not None:
        blocks = _json_param(params, "blocks")
        errors = validate_blocks(blocks)
        if errors:
            raise SlackApiFailure("invalid_blocks", errors=errors,
                                  response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
        content["blocks"] = blocks
    if params.get("text") is not None:
        if len(str(params["text"])) > MESSAGE_TEXT_MAX:
            raise SlackApiFailure("msg_too_long")
        content["text"] = str(params["text"])
    if required and not content.get("text") and not content.get("blocks"):
        raise SlackApiFailure("no_text")
    if "metadata" in params and params["metadata"] is not None:
        md = _json_param(params, "metadata")
        if md == {}:
            content["metadata"] = None
        elif (not isinstance(md, dict) or not _EVENT_TYPE.match(str(md.get("event_type", "")))
              or not isinstance(md.get("event_payload", {}), dict)):
            raise SlackApiFailure("invalid_metadata_format")
        else:
            content["metadata"] = {"event_type": md["event_type"], "event_payload": md.get("event_payload", {})}
    return content


def _check_member(emu: SlackEmulator, ch: _Channel) -> None:
    if not ch.is_member:
        raise SlackApiFailure("not_in_channel")


def _chat_post_message(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    ch = emu._channel(params.get("channel"), names=True)
    _check_member(emu, ch)
    content = _message_content(params, required=True)
    ts = emu._next_ts()
    msg: dict[str, Any] = {
        "type": "message", "user": emu.bot_user_id, "bot_id": emu.bot_id, "app_id": emu.app_id,
        "team": emu.team_id, "text": content.get("text", ""), "ts": ts,
    }
    if "blocks" in content:
        msg["blocks"] = content["blocks"]
    if content.get("metadata"):
        msg["metadata"] = content["metadata"]
    thread_ts = params.get("thread_ts")
    if thread_ts:
        parent = emu._find(ch, thread_ts)
        if parent is None or (parent.get("thread_ts") and parent["thread_ts"] != parent["ts"]):
            raise SlackApiFailure("thread_not_found")
        msg["thread_ts"] = parent["ts"]
        msg["parent_user_id"] = parent.get("user", "")
        if _flag(params, "reply_broadcast"):
            msg["subtype"] = "thread_broadcast"
        parent["thread_ts"] = parent["ts"]
        parent["reply_count"] = parent.get("reply_count", 0) + 1
        parent["reply_users"] = sorted(set(parent.get("reply_users", [])) | {emu.bot_user_id})
        parent["reply_users_count"] = len(parent["reply_users"])
        parent["latest_reply"] = ts
    ch.messages.append(msg)
    return {"channel": ch.id, "ts": ts, "message": _public(msg, False)}


def _chat_update(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    ch = emu._channel(params.get("channel"))
    msg = emu._find(ch, params.get("ts"))
    if msg is None:
        raise SlackApiFailure("message_not_found")
    if msg.get("user") != emu.bot_user_id:
        raise SlackApiFailure("cant_update_message")
    content = _message_content(params, required=False)
    if not content:
        raise SlackApiFailure("no_text")
    # As chat.update documents: omitted blocks/metadata are kept; metadata {} removes it.
    for k, v in content.items():
        if k == "metadata" and v is None:
            msg.pop("metadata", None)
        else:
            msg[k] = v
    msg["edited"] = {"user": emu.bot_user_id, "ts": emu._next_ts()}
    return {"channel": ch.id, "ts": msg["ts"], "text": msg.get("text", ""), "message": _public(msg, False)}


def _chat_post_ephemeral(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    ch = emu._channel(params.get("channel"), names=True)
    _check_member(emu, ch)
    user = str(params.get("user") or "")
    if user not in emu._users:
        raise SlackApiFailure("user_not_found")
    if ch.members - {emu.bot_user_id} and user not in ch.members:
        raise SlackApiFailure("user_not_in_channel")
    content = _message_content(params, required=True)
    ts = emu._next_ts()
    emu._ephemeral.append({"channel": ch.id, "user": user, "ts": ts, "thread_ts": params.get("thread_ts"), **content})
    return {"message_ts": ts}


def _chat_get_permalink(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    ch = emu._channel(params.get("channel"))
    msg = emu._find(ch, params.get("message_ts"))
    if msg is None:
        raise SlackApiFailure("message_not_found")
    return {"channel": ch.id, "permalink": emu._permalink(ch, msg)}


def _conversations_history(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    ch = emu._channel(params.get("channel"))
    _check_member(emu, ch)
    meta = _flag(params, "include_all_metadata")
    top = [m for m in reversed(ch.messages)
           if (not m.get("thread_ts") or m["thread_ts"] == m["ts"] or m.get("subtype") == "thread_broadcast")
           and _in_window(m["ts"], params)]
    page, more = _page(top, params, 100, 999)
    return {"messages": [_public(m, meta) for m in page], "pin_count": 0,
            "channel_actions_ts": None, "channel_actions_count": 0, **more}


def _conversations_replies(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    ch = emu._channel(params.get("channel"))
    _check_member(emu, ch)
    msg = emu._find(ch, params.get("ts"))
    if msg is None:
        raise SlackApiFailure("thread_not_found")
    root = msg.get("thread_ts") or msg["ts"]
    meta = _flag(params, "include_all_metadata")
    thread = [m for m in ch.messages if m["ts"] == root or m.get("thread_ts") == root]
    window = [m for m in thread if m["ts"] == root or _in_window(m["ts"], params)]
    page, more = _page(window, params, 1000, 1000)
    return {"messages": [_public(m, meta) for m in page], **more}


def _conversations_list(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    types = set(str(params.get("types") or "public_channel").split(","))
    chans = [c for c in emu._channels.values()
             if ("private_channel" if c.is_private else "public_channel") in types
             and (c.is_member or not c.is_private)]
    page, more = _page(chans, params, 100, 1000)
    return {"channels": [{"id": c.id, "name": c.name, "is_channel": not c.is_private, "is_group": False,
                          "is_private": c.is_private, "is_member": c.is_member, "is_archived": False,
                          "num_members": len(c.members)} for c in page], **more}


def _usergroups_users_list(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    group = emu._usergroups.get(str(params.get("usergroup") or ""))
    if group is None or (group["disabled"] and not _flag(params, "include_disabled")):
        raise SlackApiFailure("no_such_subteam")
    return {"users": list(group["users"])}


def _users_info(emu: SlackEmulator, params: dict[str, Any]) -> dict[str, Any]:
    user = emu._users.get(str(params.get("user") or ""))
    if user is None:
        raise SlackApiFailure("user_not_found")
    return {"user": user}


_METHODS: dict[str, Callable[[SlackEmulator, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": _auth_test,
    "chat.postMessage": _chat_post_message,
    "chat.update": _chat_update,
    "chat.postEphemeral": _chat_post_ephemeral,
    "chat.getPermalink": _chat_get_permalink,
    "conversations.history": _conversations_history,
    "conversations.replies": _conversations_replies,
    "conversations.list": _conversations_list,
    "usergroups.users.list": _usergroups_users_list,
    "users.info": _users_info,
}


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it each small response waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server_version = "slack-emulator/1"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        emu = self.server.emulator
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if parts.path.startswith("/actions/") and self.command == "POST":
            try:
                body: Any = json.loads(raw or b"null")
            except json.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
            emu.handle_response_url(parts.path, body)
            self._send(200, {"ok": True})
            return
        if not parts.path.startswith("/api/"):
            self._send(404, {"ok": False, "error": "not_found"})
            return
        method = parts.path[len("/api/"):]
        params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        if ctype == "application/json" and raw:
            try:
                data = json.loads(raw)
            except json.JSONDecodeError:
                self._send(200, {"ok": False, "error": "invalid_json"})
                return
            if isinstance(data, dict):
                params.update(data)
        elif raw:
            params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None
        status, answer, headers = emu.handle_api(method, params, token)
        self._send(status, answer, headers)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
