"""HTTP intake: the Alertmanager webhook receiver that hands alerts to Temporal.

Built once by the worker process (``create_app``) with an already connected Temporal
client, the loaded playbooks and the audit store; served by uvicorn. Nothing is re-read or
reconnected per request.

Endpoints:

* ``POST /api/v1/alerts``: Alertmanager webhook payload version "4" (``notify/webhook``);
* ``GET /healthz``: 200 when the Temporal frontend answers its health check, else 503;
* ``GET /metrics``: Prometheus text (remediator.metrics).

Alertmanager receiver configuration (bearer token; ``basic_auth: {username, password}``
works the same way)::

    receivers:
      - name: remediator
        webhook_configs:
          - url: http://remediator:9095/api/v1/alerts
            send_resolved: true          # resolved notifications stop remaining steps
            http_config:
              authorization:
                credentials: <REMEDIATOR_AUTH_TOKEN>   # sent as "Authorization: Bearer ..."

Checks, in this order, each answered with ``{"error": "..."}`` and nothing started:
401 bad or missing credentials (before the body is read), 415 not ``application/json``,
413 body over 1 MiB, 408 body not received within ``read_timeout``, 400 not UTF-8 JSON,
422 not a version "4" message as Alertmanager sends it (duplicate keys, times that are not
RFC 3339 with a zone, label names Prometheus refuses, lone surrogates, nesting or numbers
out of bounds: remediator.domain.alertmanager.parse_webhook), with the field path. A refused
body is a sender's mistake: logged as one line, never a traceback.

Each alert of the group is handled on its own ``status`` by remediator.app.handoff.Handoff:
checks that need no Temporal call first (with ``--cluster``, the alert's cluster label: an
alert of another cluster is answered ``unknown_cluster`` and recorded; matching, rendering, the
policy's namespaces, dedup, cooldown), then one Temporal call per alert to hand over (signal-with-start of the target's
run for a firing, the ``alert`` signal for a resolved one). A group with more than
``HANDOFF_DIRECT_MAX`` alerts to hand over goes to Temporal in one call instead, as an
``AlertHandoffWorkflow`` that makes the per-alert calls (workflows/handoff.py), so a group of
1,000 is answered well within Alertmanager's 10 s webhook timeout. The answer is 2xx only once
every alert is durably with Temporal; any Temporal failure answers 503, which Alertmanager
retries (it does not retry 4xx). On the resend after a 503, a firing this process already
handed over is answered ``duplicate`` from its record, without a Temporal call, so only what
is missing is handed over.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import logging
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from temporalio.client import Client

from remediator.app import metrics
from remediator.app.config import Settings
from remediator.app.handoff import (
    DEFAULT_RPC_TIMEOUT,
    HANDOFF_CONCURRENCY,
    HANDOFF_DIRECT_MAX,
    Disposition,
    Handoff,
    Outcome,
    Planned,
    TemporalUnavailable,
)
from remediator.app.serving import temporal_unhealthy
from remediator.app.settle import Settler
from remediator.audit.brakes import Brakes
from remediator.audit.store import AuditStore
from remediator.db import DatabaseError, reason
from remediator.domain.alertmanager import (
    GO_ZERO_TIME,
    PayloadRefused,
    WebhookAlert,
    WebhookMessage,
    field_path,
    parse_webhook,
)
from remediator.domain.messages import AlertRef
from remediator.playbook.loader import PlaybookSet

__all__ = [
    "DEFAULT_READ_TIMEOUT", "HANDOFF_CONCURRENCY", "HANDOFF_DIRECT_MAX", "MAX_BODY_BYTES", "WEBHOOK_PATH",
    "BodyRefused", "Disposition", "TemporalUnavailable", "create_app", "read_body",
]

log = logging.getLogger("remediator.app.intake")

WEBHOOK_PATH = "/api/v1/alerts"
MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted webhook body (1 MiB). Alertmanager's ``max_alerts`` bounds a real one."""

DEFAULT_READ_TIMEOUT = 10.0
"""Seconds a request body may take to arrive (``Settings.read_timeout``); slower: 408."""


class BodyRefused(Exception):
    """A request body refused before parsing: ``status`` 400 (bad Content-Length), 408 (not
    received in time) or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int, timeout: float = DEFAULT_READ_TIMEOUT) -> bytes:
    """Read a request body of at most ``limit`` bytes within ``timeout`` seconds, checking
    Content-Length first and counting while streaming (chunked bodies too), so an oversized
    body is never held in memory and a client sending slowly does not hold the connection.

    Raises:
        BodyRefused: 400 for a malformed Content-Length, 413 over ``limit``, 408 when the whole
            body has not arrived ``timeout`` seconds after the request head.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BodyRefused(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise BodyRefused(413, f"body of {int(declared)} bytes is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyRefused(413, f"body is over the limit of {limit} bytes")
    except TimeoutError:
        raise BodyRefused(408, f"body not received within {timeout:g}s ({len(body)} bytes arrived)") from None
    return bytes(body)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    metrics.INTAKE_REQUESTS.labels(code=str(status)).inc()
    if status == 408:  # the rest of the body may still be on its way: do not wait for it
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Authenticator:
    """Checks ``Authorization`` as Alertmanager's ``http_config`` sends it.

    ``authorization: {credentials: T}`` (or the older ``bearer_token``) sends
    ``Bearer T``; ``basic_auth: {username, password}`` sends ``Basic base64(user:password)``
    as Go's ``Request.SetBasicAuth``. When both are configured either is accepted.
    Comparisons are constant-time (``hmac.compare_digest``).
    """

    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.no_auth
        self.token = settings.auth_token.encode() if settings.auth_token else None
        self.basic = settings.basic_auth.encode() if settings.basic_auth else None
        self.schemes = [s for s, v in (("Bearer", self.token), ("Basic", self.basic)) if v is not None]
        self.challenge = ", ".join(f'{s} realm="remediator"' for s in self.schemes)

    def check(self, header: str | None) -> str | None:
        """None when the request may proceed, else the reason it may not."""
        if self.disabled:
            return None
        if not header:
            return "missing Authorization header; configure http_config in the Alertmanager receiver"
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self.token is not None:
            if hmac.compare_digest(credentials.encode(), self.token):
                return None
            return "bearer token does not match --auth-token"
        if scheme == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(credentials.encode(), validate=True)
            except (binascii.Error, ValueError):
                return "Basic credentials are not valid base64"
            if hmac.compare_digest(decoded, self.basic):
                return None
            return "basic auth user or password does not match --basic-auth"
        return f"Authorization scheme {scheme!r} not accepted; use {' or '.join(self.schemes)}"


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json"


_field_path = field_path  # remediator.app.control names its fields the same way


def _alert_ref(alert: WebhookAlert, message: WebhookMessage) -> AlertRef:
    ref = AlertRef(
        fingerprint=alert.fingerprint,
        starts_at=alert.starts_at,
        status=alert.status,
        labels=alert.labels,
        annotations=alert.annotations,
        generator_url=alert.generator_url,
        ends_at=None if alert.ends_at == GO_ZERO_TIME else alert.ends_at,  # Go's zero time: "no end yet"
        receiver=message.receiver,
        group_key=message.group_key,
        external_url=message.external_url,
    )
    # A run keeps what it needs of an alert, bounded, whatever Alertmanager sends: the signal
    # is part of the run's history.
    return ref.bounded()


def create_app(
    settings: Settings,
    client: Client,
    playbooks: PlaybookSet,
    audit: AuditStore,
    *,
    task_queue: str,
    ui_url: str = "",
    rpc_timeout: timedelta = DEFAULT_RPC_TIMEOUT,
    settler: Settler | None = None,
    brakes: Brakes | None = None,
    handoff: Handoff | None = None,
    direct_max: int = HANDOFF_DIRECT_MAX,
) -> FastAPI:
    """Build the intake application.

    Args:
        settings: auth (``auth_token``, ``basic_auth``, ``no_auth``), ``read_timeout`` and what
            runs are started with (remediator.app.handoff.Handoff).
        client: connected Temporal client (pydantic data converter, remediator.app.temporal.connect).
        playbooks: loaded once by remediator.playbook.loader.load_directory.
        audit: where unmatched, unrenderable and duplicate alerts are recorded.
        task_queue: task queue of the worker that runs ``RemediationWorkflow``
            (``settings.engine_task_queue``: ``<task queue>-<cluster>`` with ``--cluster``).
        ui_url: base URL of the Temporal UI, passed to the workflow for links in notifications.
        rpc_timeout: bound of each Temporal call; a hung server answers 503 after this long.
        settler: records the outcome of a target's last run when Temporal ended it without
            one (so its cooldown counts); built from ``client`` and ``audit`` when not given.
        brakes: the policy's namespaces and the pauses in force (remediator.audit.brakes);
            the default policy on ``audit`` when not given.
        handoff: the process's hand-over (shared with the ``hand_over_alerts`` activity);
            built from the arguments above when not given (then they must match it).
        direct_max: a group with more alerts to hand over than this goes to an
            ``AlertHandoffWorkflow`` in one call (``HANDOFF_DIRECT_MAX``).
    """
    handoff = handoff or Handoff(
        settings, client, playbooks, audit, task_queue=task_queue, ui_url=ui_url, rpc_timeout=rpc_timeout,
        settler=settler, brakes=brakes,
    )
    brakes = handoff.brakes
    auth = _Authenticator(settings)
    read_timeout = settings.read_timeout.total_seconds()
    timeout_s = rpc_timeout.total_seconds()
    app = FastAPI(title="remediator intake", docs_url=None, redoc_url=None, openapi_url=None)

    async def hand_over(message: WebhookMessage, received_at: datetime) -> list[Outcome] | TemporalUnavailable:
        """Every alert of the group planned, then sent one by one or, for a large group, in one
        hand-off workflow; a Temporal failure is returned (the group is answered 503)."""
        alerts = [_alert_ref(a, message) for a in message.alerts]
        plans = await asyncio.gather(*(handoff.plan(a, received_at) for a in alerts))
        to_send = [p for p in plans if isinstance(p, Planned)]
        if len(to_send) > direct_max:
            try:
                sent: list[Outcome | TemporalUnavailable] = list(await handoff.start_group(
                    to_send, receiver=message.receiver, group_key=message.group_key,
                    external_url=message.external_url,
                ))
            except TemporalUnavailable as err:
                sent = [err] * len(to_send)
        else:
            # The pauses in force, read once for the group (remediator pause/resume act between groups).
            pauses = await asyncio.to_thread(brakes.pauses) if to_send else []

            async def send(p: Planned) -> Outcome | TemporalUnavailable:
                try:
                    return await handoff.send(p, pauses)
                except TemporalUnavailable as err:
                    return err

            sent = list(await asyncio.gather(*(send(p) for p in to_send)))
        answers = iter(sent)
        results = [next(answers) if isinstance(p, Planned) else p for p in plans]
        results = [handoff.named(r) if isinstance(r, Outcome) else r for r in results]
        for alert, r in zip(alerts, results):
            disposition = r.disposition if isinstance(r, Outcome) else "failed"
            metrics.ALERTS.labels(status=alert.status, disposition=disposition).inc()
        failures = [r for r in results if isinstance(r, TemporalUnavailable)]
        if failures:
            log.error("could not hand %d of %d alerts to Temporal: %s", len(failures), len(results), failures[0])
            return TemporalUnavailable(
                f"{len(failures)} of {len(results)} alerts could not be handed to Temporal ({failures[0]}); "
                "Alertmanager will resend the group, alerts already handed over are deduplicated"
            )
        return [r for r in results if isinstance(r, Outcome)]

    @app.post(WEBHOOK_PATH)
    async def receive_alerts(request: Request) -> Response:
        # A raw Request handler: FastAPI would parse a declared body before any dependency,
        # and credentials must be checked before the body is read.
        refused = auth.check(request.headers.get("authorization"))
        if refused is not None:
            log.warning("refused webhook from %s: %s", request.client.host if request.client else "?", refused)
            return _error(401, refused, {"WWW-Authenticate": auth.challenge})

        content_type = request.headers.get("content-type")
        if not _is_json(content_type):
            return _error(415, f"Content-Type must be application/json, got {content_type or 'none'}")

        try:
            body = await read_body(request, MAX_BODY_BYTES, read_timeout)
            message = parse_webhook(body)
        except (BodyRefused, PayloadRefused) as err:
            # A sender's mistake, not the intake's: one line, no traceback.
            log.warning("refused webhook from %s: %d %s", request.client.host if request.client else "?", err.status, err.message)
            return _error(err.status, err.message)

        if message.truncated_alerts:
            log.warning(
                "Alertmanager left %d alerts out of group %s (max_alerts of the receiver): those are not handled; raise max_alerts",
                message.truncated_alerts, message.group_key,
            )
        outcomes = await hand_over(message, datetime.now(timezone.utc))
        if isinstance(outcomes, TemporalUnavailable):
            return _error(503, str(outcomes))
        metrics.INTAKE_REQUESTS.labels(code="200").inc()
        return JSONResponse({"alerts": [r.as_json() for r in outcomes]})

    @app.get("/runs/{run_id}")
    async def run_timeline(run_id: str, request: Request) -> Response:
        """The audit timeline of one run as text (linked from Slack); same credentials as the webhook."""
        refused = auth.check(request.headers.get("authorization"))
        if refused is not None:
            return _error(401, refused, {"WWW-Authenticate": auth.challenge})
        from rich.console import Console

        from remediator.audit.view import render_run

        try:
            console = Console(record=True, width=110, file=io.StringIO())
            console.print(await asyncio.to_thread(render_run, audit, run_id))
        except LookupError as err:
            return _error(404, str(err.args[0] if err.args else err))
        return Response(console.export_text(), media_type="text/plain; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> Response:
        # any failure means the intake cannot hand alerts over
        unhealthy = await temporal_unhealthy(client, timeout_s)
        if unhealthy is not None:
            return JSONResponse({"status": "unavailable", "error": unhealthy}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        try:
            waiting, paused, frozen = await asyncio.to_thread(
                lambda: (brakes.waiting(), len(brakes.pauses()), len(brakes.frozen_runs()))
            )
            metrics.refresh_brakes(waiting, paused, frozen)
        except DatabaseError as err:  # the page still serves the counters
            log.warning("brake gauges not refreshed: %s", reason(err))
        body, content_type = metrics.render_latest()
        return Response(body, media_type=content_type)

    return app
