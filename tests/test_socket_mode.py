"""Socket Mode (remediator.socket_mode) end to end: slack_sdk's builtin SocketModeClient against a
local stand-in for Slack's Socket Mode service, deciding on the real ``RemediationWorkflow``.

Slack's side is two real servers on loopback: ``apps.connections.open`` over HTTP (the app-level
token in ``Authorization: Bearer``, answering a ``ws://`` URL as Slack answers a ``wss://`` one)
and a WebSocket server (the ``websockets`` package) that says ``hello`` and then sends
``interactive`` envelopes exactly as Slack does, reading back the acknowledgements. Ephemeral
explanations go to the Slack Web API emulator. The run and the Slack emulator are those of
tests/test_slack_interactivity.py, the worker the shared one of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from remediator.app.config import ConfigError, Settings
from remediator.sim.slack import block_actions_payload
from remediator.app.socket_mode import SocketModeRunner

# Shared with the HTTP endpoint's tests: the same run, Slack emulator and assertions; the worker is
# tests/conftest.py's, with this Slack.
from tests.test_slack_interactivity import (  # noqa: F401 - fixtures are used by name
    ALICE,
    BOT_TOKEN,
    MALLORY,
    accepted_decisions,
    assert_untouched,
    slack,
    slack_client,
    until,
    waiting_run,
)

APP_TOKEN = "xapp-1-A0REMED001-1234-abcdef"


class FakeSocketModeService:
    """``apps.connections.open`` and the WebSocket it points at.

    ``opened``: the Authorization headers ``apps.connections.open`` received. ``connections``:
    WebSocket connections as they arrive (after ``hello``). ``send`` an envelope and ``ack`` to
    read the next acknowledgement.
    """

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.ws_url = ""
        self.live: set[ServerConnection] = set()
        self.refuse = False
        self._http: ThreadingHTTPServer | None = None

    async def __aenter__(self) -> "FakeSocketModeService":
        async def session(conn: ServerConnection) -> None:
            await conn.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0REMED001"}}))
            self.live.add(conn)
            await self.connections.put(conn)
            await conn.wait_closed()
            self.live.discard(conn)

        self._ws = await serve(session, "127.0.0.1", 0).__aenter__()
        port = self._ws.sockets[0].getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{port}/link/?ticket={uuid.uuid4()}&app_id=A0REMED001"
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization") or ""
                service.opened.append(auth)
                if self.path != "/api/apps.connections.open":
                    body = {"ok": False, "error": "unknown_method"}
                elif auth != f"Bearer {APP_TOKEN}":
                    body = {"ok": False, "error": "invalid_auth"}
                elif service.refuse:
                    body = {"ok": False, "error": "service_unavailable"}
                else:
                    body = {"ok": True, "url": service.ws_url}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    @property
    def api_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}/api/"

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        self._http.shutdown()
        self._http.server_close()
        await self._ws.__aexit__(None, None, None)

    async def hang_up(self) -> None:
        """Close every WebSocket from Slack's side and refuse new ones."""
        self.refuse = True
        for conn in list(self.live):
            await conn.close()

    @staticmethod
    async def ack(conn: ServerConnection) -> dict[str, Any]:
        """The next acknowledgement the client sent on ``conn``."""
        return json.loads(await asyncio.wait_for(conn.recv(), timeout=10))


@pytest.fixture
async def service() -> AsyncIterator[FakeSocketModeService]:
    async with FakeSocketModeService() as svc:
        yield svc


@pytest.fixture
async def runner(client, service, audit, slack_client) -> AsyncIterator[SocketModeRunner]:
    settings = Settings(no_auth=True, slack_bot_token=BOT_TOKEN, slack_app_token=APP_TOKEN, slack_api_url=service.api_url)
    r = SocketModeRunner(settings, client, audit, slack_client, asyncio.get_running_loop())
    # start() does blocking network I/O against servers on this very loop: off the loop.
    await asyncio.to_thread(r.start)
    try:
        yield r
    finally:
        # slack_sdk's builtin client holds its socket's lock in a blocking recv (up to 3 s)
        # that close() waits for; hanging up from Slack's side ends that recv at once.
        stopping = asyncio.ensure_future(asyncio.to_thread(r.stop))
        await service.hang_up()
        await stopping


def interactive(payload: dict[str, Any]) -> tuple[str, str]:
    envelope_id = str(uuid.uuid4())
    return envelope_id, json.dumps(
        {"envelope_id": envelope_id, "payload": payload, "type": "interactive", "accepts_response_payload": False}
    )


def click(request, user_id: str, action_id: str, ts: str) -> dict[str, Any]:
    value = json.dumps({"workflow_id": request.workflow_id, "run_id": request.run_id, "request_id": request.request_id})
    return block_actions_payload(user_id, action_id, value, "C0ONCALL01", ts)


async def test_click_over_socket_mode_reaches_the_run(client, worker, slack, service, runner, emulator):
    handle, request, ts = await waiting_run(client, worker, slack)
    assert service.opened == [f"Bearer {APP_TOKEN}"]
    conn = await service.connections.get()
    assert runner.connected

    envelope_id, envelope = interactive(click(request, ALICE, "remediator_reject", ts))
    await conn.send(envelope)

    assert await service.ack(conn) == {"envelope_id": envelope_id}
    result = await handle.result()
    assert result.outcome == "needs_human"
    assert result.reason == f"step 1 (restart) was rejected by {ALICE}; it did not run"
    [decision] = await accepted_decisions(handle, client)
    assert (decision.request_id, decision.decision, decision.user_id, decision.user_name, decision.via) == (
        request.request_id, "reject", ALICE, ALICE.lower(), "socket_mode",
    )
    assert emulator.requests(method="PATCH") == []
    assert slack.ephemeral_messages() == []


async def test_refused_click_over_socket_mode_is_acked_told_and_audited(client, worker, slack, service, runner, audit):
    handle, request, ts = await waiting_run(client, worker, slack)
    conn = await service.connections.get()

    # Not ours first: acknowledged and ignored.
    events_id = str(uuid.uuid4())
    await conn.send(json.dumps({"envelope_id": events_id, "type": "events_api", "payload": {"event": {"type": "app_mention"}}}))
    assert await service.ack(conn) == {"envelope_id": events_id}

    envelope_id, envelope = interactive(click(request, MALLORY, "remediator_approve", ts))
    await conn.send(envelope)

    assert await service.ack(conn) == {"envelope_id": envelope_id}
    reason = f"{MALLORY} is not an approver of playbook restart-with-approval"
    [ephemeral] = await until(slack.ephemeral_messages, "the ephemeral explanation")
    assert (ephemeral["channel"], ephemeral["user"]) == ("C0ONCALL01", MALLORY)
    assert ephemeral["text"] == f":no_entry: Your Approve was not applied to `{request.request_id}`: {reason}"
    [record] = audit.intake_records(kind="approval_refused")
    assert record.message == f"approve of {request.request_id} by {MALLORY} ({MALLORY.lower()}) via socket_mode refused: {reason}"
    await assert_untouched(handle, client, request)
    await handle.terminate("test done")


async def test_runner_refuses_a_bot_token(client):
    settings = Settings(no_auth=True, slack_app_token="xoxb-not-an-app-token")
    with pytest.raises(ConfigError) as err:
        SocketModeRunner(settings, client, None, None, asyncio.get_running_loop())
    assert str(err.value).startswith("SLACK_APP_TOKEN must be an app-level token (xapp-...)")
