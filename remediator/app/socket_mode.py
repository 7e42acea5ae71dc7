"""Slack Socket Mode: receive Approve/Reject clicks over a WebSocket, for clusters with no public URL.

Built and started by the worker process (remediator.app.runtime) when ``SLACK_APP_TOKEN`` (an
app-level ``xapp-`` token with the ``connections:write`` scope) is set. slack_sdk's builtin
``SocketModeClient`` calls ``apps.connections.open`` with that token, connects to the
``wss://`` URL it returns, answers pings and reconnects when Slack asks (``disconnect``) or the
connection goes quiet; see https://api.slack.com/apis/socket-mode.

Every envelope is acknowledged at once (``{"envelope_id": ...}``): Slack retries an envelope
that is not acknowledged within 3 seconds. ``interactive`` envelopes carrying ``block_actions``
are then handed to remediator.slack_interactivity.handle_block_actions (the same code as the
HTTP endpoint, ``via="socket_mode"``) on the worker's asyncio loop, where the Temporal client
lives; a refused decision is explained to the clicker in an ephemeral message and audited.
Other envelope types (``events_api``, ``slash_commands``, ``hello``) are acknowledged and ignored.

No signature check here: the WebSocket is opened by us, to Slack, with the app token.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web import WebClient
from temporalio.client import Client

from remediator.audit.store import AuditStore
from remediator.app.config import ConfigError, Settings
from remediator.app.slack_interactivity import UPDATE_TIMEOUT_S, ClickOutcome, handle_block_actions

log = logging.getLogger("remediator.socket_mode")

DECISION_TIMEOUT_S = 10.0
"""Seconds a decision may take to reach the run. Longer than the HTTP endpoint's: the envelope
is already acknowledged, so Slack's 3 s do not apply."""


class SocketModeRunner:
    """Receives interactions over Socket Mode and turns clicks into decisions.

    Args:
        settings: ``slack_app_token`` (xapp-) is required; ``slack_api_url`` is where
            ``apps.connections.open`` is called (tests point it at an emulator).
        client: connected Temporal client.
        audit: where refused decisions are recorded.
        slack_client: slack_sdk WebClient with the bot token, for ephemeral explanations
            (None: the payload's ``response_url`` is used).
        loop: the running asyncio loop of the worker; slack_sdk calls back on its own threads and
            decisions are run on this loop with ``asyncio.run_coroutine_threadsafe``.

    ``start()`` connects (blocking network I/O: from async code call it with
    ``await asyncio.to_thread(runner.start)``); ``stop()`` closes the connection and its threads.

    Raises:
        ConfigError: no app token, or one that is not an app-level ``xapp-`` token.
    """

    def __init__(
        self,
        settings: Settings,
        client: Client,
        audit: AuditStore | None,
        slack_client: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        decision_timeout: float = DECISION_TIMEOUT_S,
    ) -> None:
        token = settings.slack_app_token
        if not token:
            raise ConfigError("Socket Mode needs the Slack app-level token: set SLACK_APP_TOKEN (xapp-...)")
        if not token.startswith("xapp-"):
            raise ConfigError(
                "SLACK_APP_TOKEN must be an app-level token (xapp-...), created under Basic Information -> "
                "App-Level Tokens with the connections:write scope; a bot token (xoxb-) goes in SLACK_BOT_TOKEN"
            )
        self._settings = settings
        self._client = client
        self._audit = audit
        self._slack_client = slack_client
        self._loop = loop
        self._decision_timeout = max(decision_timeout, UPDATE_TIMEOUT_S)
        self._socket: SocketModeClient | None = None

    @property
    def connected(self) -> bool:
        """True while the WebSocket to Slack is open."""
        return self._socket is not None and self._socket.is_connected()

    def start(self) -> None:
        """Open the Socket Mode connection (``apps.connections.open`` then the WebSocket).

        Raises:
            slack_sdk.errors.SlackApiError: Slack refused the app token (``invalid_auth``,
                ``not_allowed_token_type``); the message carries Slack's error code.
        """
        if self._socket is not None:
            return
        # The builtin client starts its threads in __init__; creating it here keeps a runner
        # that was built but never started free of threads.
        socket = SocketModeClient(
            app_token=self._settings.slack_app_token or "",
            web_client=WebClient(base_url=self._settings.slack_api_url),
            logger=logging.getLogger("remediator.socket_mode.client"),
        )
        socket.socket_mode_request_listeners.append(self._on_request)
        try:
            socket.connect()
        except BaseException:
            socket.close()
            raise
        self._socket = socket
        if socket.is_connected():
            log.info("Slack Socket Mode connected (session %s)", socket.session_id())
        else:
            # slack_sdk logs the cause and its session monitor keeps reconnecting.
            log.warning("Slack Socket Mode could not connect yet; retrying every %ss", socket.ping_interval)

    def stop(self) -> None:
        """Close the connection and stop slack_sdk's threads; decisions in flight still finish
        on the loop."""
        socket, self._socket = self._socket, None
        if socket is None:
            return
        try:
            socket.close()
        except AttributeError:
            # slack_sdk 3.x race: when Slack hangs up while we close, its receive thread drops
            # the socket between close()'s check and its use. A second close() finds no socket
            # and goes on to stop the client's threads, which the first one did not reach.
            socket.close()

    # Called by slack_sdk on one of its worker threads, once per envelope.
    def _on_request(self, socket: SocketModeClient, req: SocketModeRequest) -> None:
        socket.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        payload = req.payload if isinstance(req.payload, dict) else {}
        if req.type != "interactive" or payload.get("type") != "block_actions":
            log.debug("acknowledged and ignored Socket Mode envelope %s of type %s", req.envelope_id, req.type)
            return
        future = asyncio.run_coroutine_threadsafe(self._decide(payload), self._loop)
        future.add_done_callback(lambda f, env=req.envelope_id: self._done(env, f))

    async def _decide(self, payload: dict[str, Any]) -> ClickOutcome:
        outcome = await handle_block_actions(
            payload,
            via="socket_mode",
            client=self._client,
            audit=self._audit,
            slack_client=self._slack_client,
            timeout=self._decision_timeout,
        )
        if outcome.ephemeral_task is not None:
            await outcome.ephemeral_task
        return outcome

    @staticmethod
    def _done(envelope_id: str, future: Future[ClickOutcome]) -> None:
        try:
            outcome = future.result()
        except Exception:
            log.exception("Socket Mode envelope %s: the decision failed", envelope_id)
            return
        level = logging.INFO if outcome.status == 200 else logging.WARNING
        log.log(level, "Socket Mode envelope %s: %s %s", envelope_id, outcome.status, outcome.message)
