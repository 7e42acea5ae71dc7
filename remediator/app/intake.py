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

Each alert of the group is handled on its own ``status``. A firing alert that matches a
playbook is handed over with signal-with-start on ``remediation/<target key>``: Temporal
either starts the run or delivers the ``alert`` signal to the one already running, in one
atomic call, so Alertmanager HA pairs and resends race safely. A resolved alert is signalled
to the running workflow of its target, if any. The answer is 2xx only once every alert is
durably with Temporal; any Temporal failure answers 503, which Alertmanager retries (it does
not retry 4xx). At most ``HANDOFF_CONCURRENCY`` alerts of a group are with Temporal at once,
so a group of 1,000 does not time itself out; on the resend after a 503, a firing this
intake already handed over is answered ``duplicate`` from its record, without a Temporal call
(``_HandedOver``), so only what is missing is handed over.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import logging
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from temporalio.api.workflowservice.v1 import SignalWithStartWorkflowExecutionResponse
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from remediator.app import metrics
from remediator.app.config import Settings
from remediator.app.settle import Settler
from remediator.audit.brakes import REFUSALS, Brakes
from remediator.audit.store import AuditStore, RunRow
from remediator.domain.alertmanager import (
    GO_ZERO_TIME,
    PayloadRefused,
    WebhookAlert,
    WebhookMessage,
    field_path,
    parse_webhook,
)
from remediator.domain.messages import AlertRef, AlertSignal, RemediationInput
from remediator.domain.policy import Policy
from remediator.domain.runs import (
    SA_ALERTNAME,
    SA_NAMESPACE,
    SA_OUTCOME,
    SA_PLAYBOOK,
    SA_TARGET,
    workflow_id_for,
)
from remediator.playbook.loader import PlaybookSet, RenderError, render
from workflows.remediation import ALERT_SIGNAL, RemediationWorkflow

log = logging.getLogger("remediator.app.intake")

WEBHOOK_PATH = "/api/v1/alerts"
MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted webhook body (1 MiB). Alertmanager's ``max_alerts`` bounds a real one."""

DEFAULT_RPC_TIMEOUT = timedelta(seconds=5)

DEFAULT_READ_TIMEOUT = 10.0
"""Seconds a request body may take to arrive (``Settings.read_timeout``); slower: 408."""

HANDOFF_CONCURRENCY = 64
"""Alerts of one request handled at once. A group of 1,000 alerts handed over all at once
queues 1,000 calls at the Temporal client and each waits out its own rpc_timeout; 64 keeps
the server busy on 2 cores and every call short (tools/bench.py measures a 1,000-alert group)."""

HANDED_OVER_MEMORY = 50_000
"""Firings remembered as handed over (``_HandedOver``), newest kept."""

Disposition = Literal[
    "started",
    "attached",
    "handed_off",
    "duplicate",
    "cooling_down",
    "queued",
    "paused",
    "refused_namespace",
    "unmatched",
    "render_failed",
    "resolved_signalled",
    "resolved_no_run",
]
"""What the intake did with one alert (the answer per alert tells the truth).

``started``: signal-with-start started a new run. ``attached``: the alert went to the run
already remediating that target with the same playbook. ``queued``: a run of another playbook
remediates the target; the alert went to it and its own playbook runs after that run ends, if
the alert still fires. ``paused``: a pause covers the target's namespace or the playbook; the
alert was handed over (run started or attached) and the run freezes before any change until
``remediator resume``. ``handed_off``: signal-with-start succeeded but the server did not say
which of started/attached happened. ``duplicate``: the audit trail shows a run already took
this firing (same fingerprint and startsAt); nothing sent. ``cooling_down``: the target's last
run ended (whatever ended it) less than its playbook's ``cooldown`` ago; recorded, nothing
started. ``refused_namespace``: the policy does not allow the target's namespace; recorded,
nothing started. ``unmatched`` / ``render_failed``: recorded in the audit trail, nothing
started. ``resolved_signalled``: a resolved alert went to the running workflow of its target.
``resolved_no_run``: no workflow runs for that target. A resolved alert that matches no
playbook, fails to render or is outside the policy's namespaces is answered ``unmatched`` /
``render_failed`` / ``refused_namespace`` without a new audit record.
"""


class TemporalUnavailable(Exception):
    """A Temporal call failed or timed out; the request is answered 503 so Alertmanager retries."""


@dataclass
class _Outcome:
    alert: AlertRef
    disposition: Disposition
    workflow_id: str | None = None
    run_id: str | None = None
    playbook: str | None = None
    target: str | None = None
    message: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.alert.fingerprint,
            "startsAt": self.alert.starts_at.isoformat(),
            "status": self.alert.status,
            "alertname": self.alert.alertname,
            "disposition": self.disposition,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "playbook": self.playbook,
            "target": self.target,
            "message": self.message,
        }


class _HandedOver:
    """The firings this intake handed to a run: (workflow ID, dedup key) -> run ID, the newest ``size`` kept.

    After a 503 Alertmanager resends the whole group; a firing already with its run would be
    handed over again (one Temporal call each, which the run then ignores as seen). This
    record answers it instead, while the audit trail still shows that run running (or no run
    yet): once the run has ended, the audit trail decides (a firing a run recorded only during
    its cooldown may start a new run later). Only firings a run took to remediate are kept
    (``started``, ``attached``, ``paused``, ``handed_off``), not ``queued`` ones. Process
    memory: after a restart the workflow's own dedup still holds.
    """

    def __init__(self, size: int) -> None:
        self._runs: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._size = size

    def run_of(self, workflow_id: str, dedup_key: str, latest: RunRow | None) -> str | None:
        """The run of ``workflow_id`` (whose newest audited run is ``latest``) this firing was
        handed to, if that run may still hold it, else None."""
        run_id = self._runs.get((workflow_id, dedup_key))
        if run_id is None:
            return None
        if latest is not None and (latest.outcome != "running" or latest.run_id != run_id):
            return None
        return run_id

    def add(self, workflow_id: str, dedup_key: str, run_id: str) -> None:
        self._runs[(workflow_id, dedup_key)] = run_id
        self._runs.move_to_end((workflow_id, dedup_key))
        while len(self._runs) > self._size:
            self._runs.popitem(last=False)


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


def _signal_with_start_disposition(handle: WorkflowHandle[Any, Any]) -> Disposition:
    """``started`` or ``attached`` from ``SignalWithStartWorkflowExecutionResponse.started``.

    The SDK keeps the response on the handle but exposes no public accessor for ``started``,
    and ``first_execution_run_id`` is set by the server in both cases, so the response is read
    directly; if a later SDK drops it the answer is ``handed_off`` (still true, less precise).
    Servers older than the ``started`` field report every call as ``attached``.
    """
    resp = getattr(handle, "_start_workflow_response", None)
    if not isinstance(resp, SignalWithStartWorkflowExecutionResponse):
        return "handed_off"
    return "started" if resp.started else "attached"


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
) -> FastAPI:
    """Build the intake application.

    Args:
        settings: auth (``auth_token``, ``basic_auth``, ``no_auth``) and ``simulate``.
        client: connected Temporal client (pydantic data converter, remediator.app.temporal.connect).
        playbooks: loaded once by remediator.playbook.loader.load_directory.
        audit: where unmatched, unrenderable and duplicate alerts are recorded.
        task_queue: task queue of the worker that runs ``RemediationWorkflow``.
        ui_url: base URL of the Temporal UI, passed to the workflow for links in notifications.
        rpc_timeout: bound of each Temporal call; a hung server answers 503 after this long.
        settler: records the outcome of a target's last run when Temporal ended it without
            one (so its cooldown counts); built from ``client`` and ``audit`` when not given.
        brakes: the policy's namespaces and the pauses in force (remediator.audit.brakes);
            the default policy on ``audit`` when not given.
    """
    brakes = brakes or Brakes(audit, Policy())
    auth = _Authenticator(settings)
    handed_over = _HandedOver(HANDED_OVER_MEMORY)
    handoff_slots = asyncio.Semaphore(HANDOFF_CONCURRENCY)
    read_timeout = settings.read_timeout.total_seconds()
    # Unmatched alerts are counted by alertname only for the names a playbook matches on
    # (a bounded set); any other name, which the monitored workloads choose, is "other".
    known_alertnames = {
        m.value for p in playbooks.playbooks for m in p.matchers if m.name == "alertname" and m.type == "="
    }
    settler = settler or Settler(client, audit)
    timeout_s = rpc_timeout.total_seconds()
    public_url = settings.public_url or f"http://{settings.listen}"
    app = FastAPI(title="remediator intake", docs_url=None, redoc_url=None, openapi_url=None)

    async def temporal_call(what: str, coro_factory: Callable[[], Awaitable[Any]], *, not_found_ok: bool = False) -> Any:
        """Run one Temporal RPC bounded by rpc_timeout; any failure becomes TemporalUnavailable.

        With ``not_found_ok`` an RPCError NOT_FOUND (no such workflow) is raised as is."""
        started = time.perf_counter()
        try:
            # asyncio.wait_for bounds the whole call, including the connection attempt of a
            # lazy client, which rpc_timeout alone does not cover.
            return await asyncio.wait_for(coro_factory(), timeout=timeout_s)
        except RPCError as err:
            if not_found_ok and err.status == RPCStatusCode.NOT_FOUND:
                raise
            status = err.status.name if err.status is not None else "an error"
            raise TemporalUnavailable(f"{what}: Temporal answered {status}: {err.message}") from err
        except (asyncio.TimeoutError, TimeoutError) as err:
            raise TemporalUnavailable(f"{what}: no answer from Temporal within {timeout_s:g}s") from err
        except (RuntimeError, ConnectionError) as err:
            # The SDK's core bridge raises RuntimeError("Failed client connect: ...") when the
            # frontend cannot be reached; anything else is a bug and surfaces as a 500.
            raise TemporalUnavailable(f"{what}: {type(err).__name__}: {err}") from err
        finally:
            metrics.HANDOFF_SECONDS.observe(time.perf_counter() - started)

    # AuditStore is synchronous SQLite (fsync on every write); its calls run on the default
    # thread pool so one slow disk write does not stall every other webhook request.
    async def handle_firing(alert: AlertRef, received_at: datetime, pauses_in_force: list[Any]) -> _Outcome:
        loaded = playbooks.match(alert.labels)
        if loaded is None:
            msg = "no playbook matches this alert's labels"
            await asyncio.to_thread(audit.record_intake, "unmatched", alert, msg)
            metrics.ALERTS_UNMATCHED.labels(
                alertname=alert.alertname if alert.alertname in known_alertnames else metrics.OTHER_ALERTNAME
            ).inc()
            log.info("alert %s (%s) unmatched: %s", alert.alertname, alert.dedup_key, msg)
            return _Outcome(alert, "unmatched", message=msg)
        name = loaded.ref.name
        try:
            target, playbook = render(loaded, alert)
        except RenderError as err:
            await asyncio.to_thread(audit.record_intake, "render_failed", alert, str(err), playbook=name)
            log.warning("alert %s: playbook %s could not be rendered: %s", alert.alertname, name, err)
            return _Outcome(alert, "render_failed", playbook=name, message=str(err))
        refused = brakes.policy.namespaces.refusal(target.namespace)
        if refused is not None:
            await asyncio.to_thread(audit.record_intake, "refused_namespace", alert, refused, playbook=name)
            REFUSALS.labels(limit="namespace").inc()
            log.info("alert %s (%s) refused: %s", alert.alertname, alert.dedup_key, refused)
            return _Outcome(alert, "refused_namespace", playbook=name, target=target.key, message=refused)
        wf_id = workflow_id_for(target.key)
        # One thread hop for both reads: with a group of 1,000 alerts the hops add up.
        run_id, latest = await asyncio.to_thread(lambda: (audit.handled_by(alert.dedup_key), audit.latest_run(wf_id)))
        if run_id is not None:
            msg = f"this firing was already handled by run {run_id}"
            await asyncio.to_thread(audit.record_intake, "duplicate", alert, msg, playbook=name, run_id=run_id)
            return _Outcome(alert, "duplicate", wf_id, run_id, name, target.key, msg)
        cooling = await cooldown_of(latest, alert, name, wf_id, target.key)
        if cooling is not None:
            return cooling
        run_id = handed_over.run_of(wf_id, alert.dedup_key, latest)
        if run_id is not None:
            msg = f"this firing was already handed to run {run_id}; not sent again"
            log.info("alert %s (%s): %s", alert.alertname, alert.dedup_key, msg)
            return _Outcome(alert, "duplicate", wf_id, run_id, name, target.key, msg)
        attrs = [
            SearchAttributePair(SA_ALERTNAME, alert.alertname),
            SearchAttributePair(SA_TARGET, target.key),
            SearchAttributePair(SA_PLAYBOOK, name),
            SearchAttributePair(SA_OUTCOME, "running"),
        ]
        if target.namespace:
            attrs.append(SearchAttributePair(SA_NAMESPACE, target.namespace))

        def signal_with_start(reuse: WorkflowIDReusePolicy) -> Awaitable[WorkflowHandle[Any, Any]]:
            return temporal_call(
                f"signal-with-start {wf_id}",
                lambda: client.start_workflow(
                    RemediationWorkflow.run,
                    RemediationInput(
                        target=target,
                        playbook=playbook,
                        playbook_ref=loaded.ref,
                        simulate=settings.simulate,
                        ui_url=ui_url,
                        public_url=public_url,
                        heartbeat_timeout=settings.heartbeat_timeout,
                        kube_retry_budget=settings.kube_retry_budget,
                        dry_run=settings.dry_run or playbook.dry_run,
                        gitops=brakes.policy.gitops,
                    ),
                    id=wf_id,
                    task_queue=task_queue,
                    start_signal=ALERT_SIGNAL,
                    start_signal_args=[AlertSignal(alert=alert, playbook=name, received_at=received_at)],
                    search_attributes=TypedSearchAttributes(attrs),
                    id_reuse_policy=reuse,
                    rpc_timeout=rpc_timeout,
                ),
            )

        # While the audit trail shows the target's last run still running, the alert may only
        # join that run: if Temporal has ended it without an outcome (terminated, timed out),
        # it must not start a new one inside the ended run's cooldown.
        believed_running = latest is not None and latest.outcome == "running"
        try:
            handle = await signal_with_start(
                WorkflowIDReusePolicy.REJECT_DUPLICATE if believed_running else WorkflowIDReusePolicy.ALLOW_DUPLICATE
            )
        except WorkflowAlreadyStartedError:
            assert latest is not None
            try:
                latest = await asyncio.wait_for(settler.settle(latest), timeout=timeout_s)
            except (RPCError, asyncio.TimeoutError, TimeoutError, RuntimeError) as err:
                raise TemporalUnavailable(f"settle the ended run {latest.run_id}: {err}") from err
            cooling = await cooldown_of(latest, alert, name, wf_id, target.key)
            if cooling is not None:
                return cooling
            handle = await signal_with_start(WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        run_id = handle.result_run_id
        disposition = _signal_with_start_disposition(handle)
        message = ""
        if disposition == "attached" and latest is not None and latest.outcome == "running" and latest.playbook != name:
            disposition = "queued"
            message = (
                f"run {latest.run_id} of playbook {latest.playbook} remediates {target.key}; playbook {name} runs "
                "after it ends if this alert still fires"
            )
        pauses = [p for p in pauses_in_force if p.covers(target.namespace, name)]
        if pauses and disposition in ("started", "attached", "handed_off"):
            message = (
                f"{'started' if disposition == 'started' else 'handed to'} run {run_id}, which freezes before any "
                f"change: paused ({pauses[0]}) by {pauses[0].paused_by}: {pauses[0].reason}"
            )
            disposition = "paused"
        if disposition != "queued":
            handed_over.add(wf_id, alert.dedup_key, run_id)
        log.info("alert %s (%s) %s %s run %s", alert.alertname, alert.dedup_key, disposition, wf_id, run_id)
        return _Outcome(alert, disposition, wf_id, run_id, name, target.key, message)

    async def cooldown_of(latest: RunRow | None, alert: AlertRef, name: str, wf_id: str, target_key: str) -> _Outcome | None:
        """A ``cooling_down`` answer (recorded as ``cooldown``) when the target's last run ended less than its
        cooldown ago, else None."""
        now = datetime.now(timezone.utc)
        if latest is None or latest.outcome == "running" or latest.cooldown_until is None or latest.cooldown_until <= now:
            return None
        msg = (
            f"run {latest.run_id} of {target_key} ended {latest.outcome}; no new remediation before "
            f"its cooldown ends at {latest.cooldown_until.isoformat()}"
        )
        await asyncio.to_thread(audit.record_intake, "cooldown", alert, msg, playbook=name, run_id=latest.run_id)
        log.info("alert %s (%s): %s", alert.alertname, alert.dedup_key, msg)
        return _Outcome(alert, "cooling_down", wf_id, latest.run_id, name, target_key, msg)

    async def handle_resolved(alert: AlertRef, received_at: datetime) -> _Outcome:
        loaded = playbooks.match(alert.labels)
        if loaded is None:
            return _Outcome(alert, "unmatched", message="no playbook matches this alert's labels")
        name = loaded.ref.name
        try:
            target, _ = render(loaded, alert)
        except RenderError as err:
            return _Outcome(alert, "render_failed", playbook=name, message=str(err))
        refused = brakes.policy.namespaces.refusal(target.namespace)
        if refused is not None:
            return _Outcome(alert, "refused_namespace", playbook=name, target=target.key, message=refused)
        wf_id = workflow_id_for(target.key)
        handle = client.get_workflow_handle(wf_id)
        try:
            await temporal_call(
                f"signal {wf_id}",
                lambda: handle.signal(
                    RemediationWorkflow.alert,
                    AlertSignal(alert=alert, playbook=name, received_at=received_at),
                    rpc_timeout=rpc_timeout,
                ),
                not_found_ok=True,
            )
        except RPCError as err:  # NOT_FOUND: no run, or the last run already completed
            msg = f"no remediation runs for {target.key}: {err.message}"
            log.info("resolved alert %s (%s): %s", alert.alertname, alert.dedup_key, msg)
            return _Outcome(alert, "resolved_no_run", wf_id, None, name, target.key, msg)
        log.info("resolved alert %s (%s) signalled to %s", alert.alertname, alert.dedup_key, wf_id)
        return _Outcome(alert, "resolved_signalled", wf_id, None, name, target.key)

    async def handle_one(alert: AlertRef, received_at: datetime, pauses: list[Any]) -> _Outcome | TemporalUnavailable:
        try:
            async with handoff_slots:
                if alert.status == "firing":
                    outcome = await handle_firing(alert, received_at, pauses)
                else:
                    outcome = await handle_resolved(alert, received_at)
        except TemporalUnavailable as err:
            metrics.ALERTS.labels(status=alert.status, disposition="failed").inc()
            return err
        metrics.ALERTS.labels(status=alert.status, disposition=outcome.disposition).inc()
        return outcome

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
        received_at = datetime.now(timezone.utc)
        # The pauses in force, read once for the group (remediator pause/resume act between groups).
        pauses = await asyncio.to_thread(brakes.pauses) if message.alerts else []
        results = await asyncio.gather(
            *(handle_one(_alert_ref(a, message), received_at, pauses) for a in message.alerts)
        )
        failures = [r for r in results if isinstance(r, TemporalUnavailable)]
        if failures:
            log.error("could not hand %d of %d alerts to Temporal: %s", len(failures), len(results), failures[0])
            return _error(
                503,
                f"{len(failures)} of {len(results)} alerts could not be handed to Temporal ({failures[0]}); "
                "Alertmanager will resend the group, alerts already handed over are deduplicated",
            )
        metrics.INTAKE_REQUESTS.labels(code="200").inc()
        return JSONResponse({"alerts": [r.as_json() for r in results if isinstance(r, _Outcome)]})

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
        try:
            ok = await asyncio.wait_for(
                client.service_client.check_health(timeout=rpc_timeout), timeout=timeout_s
            )
        except Exception as err:  # any failure means the intake cannot hand alerts over
            return JSONResponse({"status": "unavailable", "error": f"Temporal: {type(err).__name__}: {err}"}, 503)
        if not ok:
            return JSONResponse({"status": "unavailable", "error": "Temporal frontend reports not serving"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        try:
            waiting, paused, frozen = await asyncio.to_thread(
                lambda: (brakes.waiting(), len(brakes.pauses()), len(brakes.frozen_runs()))
            )
            metrics.refresh_brakes(waiting, paused, frozen)
        except sqlite3.Error as err:  # the page still serves the counters
            log.warning("brake gauges not refreshed: %s", err)
        body, content_type = metrics.render_latest()
        return Response(body, media_type=content_type)

    return app
