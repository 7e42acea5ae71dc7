"""The kill switch: pause and resume remediation, and the brakes' status.

One ``Controller`` serves both ways in: the CLI (``remediator pause|resume|status``,
remediator.cli) and the HTTP API (``router``, mounted on the intake app by
remediator.app.runtime).

A pause is a row of the audit store's ``pauses`` table, written in one transaction with its
``brake_log`` record (remediator.audit.brakes). Nothing is sent to Temporal: every run asks the
brakes before each mutation (``gate_mutation``) and freezes at that step boundary while a pause
covers it, so a pause needs only the state directory, survives worker and Temporal restarts,
and reaches runs in flight at their next gate. New alerts are still received and attached to
the (frozen) run of their target. A resume deletes the row, then sends the ``brakes`` signal
(``RemediationWorkflow.brakes_changed``) to every run frozen under the lifted scope, which then
continues where it stopped; a run the signal does not reach (Temporal down) continues at its
next poll, within ``FROZEN_POLL_MAX`` (5 minutes).

Pause and resume are announced, with who and why, in the Slack channel of every playbook in
scope (``slack.channel``, once per channel). A Slack failure is logged and reported in the
answer (``slack: "could not post: ..."``); it never undoes or fails the pause.

HTTP API, with the webhook's credentials (remediator.app.intake ``_Authenticator``)::

    POST /api/v1/pause   {"namespace": "prod", "playbook": null, "reason": "deploy freeze", "as": "U0ALICE"}
    POST /api/v1/resume  (same body; the exact scope that was paused)
    GET  /api/v1/status

Answers ``{"error": "..."}`` and change nothing on: 401 bad or missing credentials (before the
body is read, with ``WWW-Authenticate``), 415 not ``application/json``, 413 body over 64 KiB,
400 not JSON, 422 a field missing or invalid (``problems`` gives each field's path; an unknown
playbook lists the known ones), 404 resume of a scope that is not paused (``paused`` lists the
scopes in force), 503 the audit store cannot be written. 200 with the result otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from remediator.app.config import Settings
from remediator.app.intake import BodyRefused, _Authenticator, _field_path, _is_json, read_body
from remediator.audit.brakes import BrakeRecord, Brakes, FrozenRun
from remediator.db import DatabaseError, reason
from remediator.domain.durations import format_duration
from remediator.domain.messages import Pause, PauseScope
from remediator.playbook.loader import LoadedPlaybook, PlaybookSet
from remediator.slack.blocks import escape, fit_blocks, mention, slack_date, truncate
from remediator.slack.client import classify
from workflows.remediation import FROZEN_POLL_MAX, RemediationWorkflow

log = logging.getLogger("remediator.app.control")

PAUSE_PATH = "/api/v1/pause"
RESUME_PATH = "/api/v1/resume"
STATUS_PATH = "/api/v1/status"
MAX_BODY_BYTES = 64 * 1024
"""Largest accepted request body; a real one is a few hundred bytes."""

REASON_MAX = 500
ACTOR_MAX = 100
SIGNAL_TIMEOUT = timedelta(seconds=5)
"""Bound of each ``brakes`` signal (connection included)."""
SLACK_TIMEOUT_S = 10.0
"""Seconds the answer waits for the Slack notices; a slower Slack is reported, not waited for."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


# --------------------------------------------------------------------------- requests and errors


class BrakeRequest(BaseModel):
    """The body of ``POST /api/v1/pause`` and ``/resume`` (the CLI's options, the same checks).

    ``namespace`` / ``playbook`` left out (or null): every namespace / every playbook.
    ``as``: who asks (a Slack user ID such as U0ALICE is mentioned in the notice). Unknown
    fields are refused: a misspelt ``namespace`` must not widen a pause to every namespace.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str | None = None
    playbook: str | None = None
    reason: str
    actor: str = Field(alias="as")

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        # As Kubernetes validates namespace names (apimachinery validation.IsDNS1123Label).
        if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
            raise ValueError(
                "must be a namespace name (DNS-1123 label: at most 63 lower-case letters, digits and '-', "
                f"starting and ending with a letter or digit), or left out for every namespace; got {value!r}"
            )
        return value

    @field_validator("playbook")
    @classmethod
    def _playbook_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a playbook name, or left out for every playbook; got an empty name")
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty: say why, for the audit trail and the Slack notice")
        if len(value) > REASON_MAX:
            raise ValueError(f"must be at most {REASON_MAX} characters, got {len(value)}")
        return value

    @field_validator("actor")
    @classmethod
    def _actor(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty: who asks (your Slack user ID, e.g. U0ALICE)")
        if len(value) > ACTOR_MAX or any(c.isspace() for c in value):
            raise ValueError(f"must be one ID without spaces, at most {ACTOR_MAX} characters (e.g. U0ALICE); got {value!r}")
        return value

    @property
    def scope(self) -> PauseScope:
        return PauseScope(namespace=self.namespace, playbook=self.playbook)


class ControlError(Exception):
    """A request the kill switch refuses; nothing was changed. ``status``: the HTTP answer."""

    status = 400


class InvalidRequest(ControlError):
    """A field is missing or invalid. ``problems``: ``(field, message)`` pairs, the field as the
    JSON body names it (``namespace``, ``playbook``, ``reason``, ``as``)."""

    status = 422

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems

    @classmethod
    def of(cls, err: ValidationError) -> "InvalidRequest":
        return cls([
            (_field_path(tuple(e["loc"])), str(e["msg"]).removeprefix("Value error, "))
            for e in err.errors(include_url=False)
        ])


class NotPaused(ControlError):
    """``resume`` of a scope that is not paused (only the exact scope of a pause lifts it).
    ``paused``: the pauses in force."""

    status = 404

    def __init__(self, scope: PauseScope, paused: list[Pause]) -> None:
        in_force = "; ".join(f"{p} (by {p.paused_by}: {p.reason})" for p in paused) or "none"
        super().__init__(f"no pause of exactly {scope} to lift; pauses in force: {in_force}")
        self.scope = scope
        self.paused = paused


def check_request(scope: PauseScope, reason: str, actor: str) -> BrakeRequest:
    """The request of ``scope``, ``reason`` and ``actor``, checked as the HTTP body is.

    Raises:
        InvalidRequest: with every problem found.
    """
    try:
        return BrakeRequest.model_validate(
            {"namespace": scope.namespace, "playbook": scope.playbook, "reason": reason, "as": actor}
        )
    except ValidationError as err:
        raise InvalidRequest.of(err) from None


# --------------------------------------------------------------------------- results


class PauseResult(BaseModel):
    """The pause in force for the scope. ``created``: False when the scope was already paused
    (its first reason and author stand; nothing was logged or announced again).
    ``in_flight``: runs in scope the audit trail shows running (they freeze at their next
    step boundary); ``frozen``: runs in scope frozen now. ``slack``: what became of the notice
    (None: no playbook in scope has a Slack channel)."""

    scope: str
    pause: Pause
    created: bool
    in_flight: int
    frozen: int
    slack: str | None = None
    message: str


class WokenRun(BaseModel):
    """A run frozen under the lifted scope, and what the resume did for it: ``signalled``
    (it continues now), ``ended`` (NOT_FOUND: the run is over), ``unreached`` (Temporal did not
    answer: it continues at its next poll), ``still_paused`` (another pause covers it;
    ``message`` names it)."""

    workflow_id: str
    run_id: str
    target: str
    playbook: str
    step: int
    since: datetime
    state: Literal["signalled", "ended", "unreached", "still_paused"]
    message: str = ""


class ResumeResult(BaseModel):
    """The lifted pause, who lifted it and why, and the runs it froze (``runs``; ``woken``
    of them signalled). ``warning``: set when some runs could not be signalled."""

    scope: str
    pause: Pause
    resumed_by: str
    reason: str
    runs: list[WokenRun] = Field(default_factory=list)
    woken: int = 0
    warning: str | None = None
    slack: str | None = None
    message: str


class BrakesStatus(BaseModel):
    """``pauses`` in force, runs ``frozen`` by them (target, playbook, step, since), runs
    ``waiting`` for a concurrency slot, and the latest pauses and resumes (``log``, newest first)."""

    pauses: list[Pause]
    frozen: list[FrozenRun]
    waiting: int
    log: list[BrakeRecord]


# --------------------------------------------------------------------------- the controller


class Controller:
    """Pause, resume and status of the brakes of one cluster.

    Args:
        brakes: the brakes on the cluster's audit store (remediator.audit.brakes).
        client: connected Temporal client, to signal frozen runs on resume; None: nothing is
            signalled (the runs continue at their next poll, within 5 minutes).
        playbooks: the loaded playbooks: ``playbook`` must name one of them, and their
            ``slack.channel`` is where pause and resume are announced.
        slack: a slack-sdk WebClient (remediator.slack.client.make_client); None: no notice.
        signal_timeout: bound of each signal.
    """

    def __init__(
        self,
        brakes: Brakes,
        client: Client | None,
        playbooks: PlaybookSet,
        slack: Any = None,
        *,
        signal_timeout: timedelta = SIGNAL_TIMEOUT,
    ) -> None:
        self.brakes = brakes
        self.client = client
        self.playbooks = playbooks
        self.slack = slack
        self.signal_timeout = signal_timeout

    async def pause(self, scope: PauseScope, reason: str, actor: str) -> PauseResult:
        """Pause every run in ``scope``, new or in flight, at its next step boundary.

        Idempotent: pausing a paused scope changes nothing and answers ``created`` False.

        Raises:
            InvalidRequest: a field is invalid, or ``scope.playbook`` names no loaded playbook.
            DatabaseError: the audit store cannot be written (nothing is paused).
        """
        req = check_request(scope, reason, actor)
        self._known_playbook(req.playbook)
        scope = req.scope
        pause, created = await asyncio.to_thread(self.brakes.pause, scope, req.reason, req.actor)
        in_flight, frozen = await asyncio.to_thread(self._counts, scope)
        if not created:
            message = (f"{scope} was already paused by {pause.paused_by} at {_time(pause.paused_at)}: "
                       f"{pause.reason}; nothing changed")
            return PauseResult(scope=str(scope), pause=pause, created=False, in_flight=in_flight, frozen=frozen, message=message)
        log.info("paused %s by %s: %s (%d runs in flight in scope)", scope, req.actor, req.reason, in_flight)
        runs = f"{in_flight} run{'' if in_flight == 1 else 's'} in flight in scope"
        text = (f":octagonal_sign: remediator paused {escape(str(scope))} — by {_who(req.actor)}: {escape(req.reason)}")
        detail = (f"{runs} freeze at their next step boundary, before any change; new alerts are still received "
                  "and attached. Nothing changes until `remediator resume"
                  + "".join(f" --{k} {v}" for k, v in (("namespace", scope.namespace), ("playbook", scope.playbook)) if v)
                  + "`.")
        slack = await self._announce(scope, f"remediator paused {scope}", text, detail)
        message = f"paused {scope} (by {req.actor}: {req.reason}); {runs} freeze at their next step boundary"
        return PauseResult(scope=str(scope), pause=pause, created=True, in_flight=in_flight, frozen=frozen, slack=slack, message=message)

    async def resume(self, scope: PauseScope, reason: str, actor: str) -> ResumeResult:
        """Lift the pause of exactly ``scope`` and signal every run it froze to continue where
        it stopped (a run still covered by another pause stays frozen).

        The pause is lifted first: a run the signal does not reach continues at its next
        poll. A pause of a playbook no longer loaded can still be lifted.

        Raises:
            InvalidRequest: a field is invalid, or (``scope`` not paused) an unknown playbook.
            NotPaused: ``scope`` is not paused; lists the pauses in force.
            DatabaseError: the audit store cannot be written (nothing is resumed).
        """
        req = check_request(scope, reason, actor)
        scope = req.scope
        lifted = await asyncio.to_thread(self.brakes.resume, scope, req.reason, req.actor)
        if lifted is None:
            self._known_playbook(req.playbook)
            raise NotPaused(scope, await asyncio.to_thread(self.brakes.pauses))
        log.info("resumed %s by %s: %s (paused by %s: %s)", scope, req.actor, req.reason, lifted.paused_by, lifted.reason)
        frozen, pauses = await asyncio.to_thread(lambda: (self.brakes.frozen_runs(), self.brakes.pauses()))
        runs = await asyncio.gather(
            *(self._wake(run, pauses) for run in frozen if scope.covers(run.namespace, run.playbook))
        )
        woken = sum(r.state == "signalled" for r in runs)
        unreached = sum(r.state == "unreached" for r in runs)
        warning = None
        if unreached:
            warning = (f"{unreached} frozen run{'' if unreached == 1 else 's'} could not be signalled: "
                       f"{'they continue' if unreached > 1 else 'it continues'} at the next poll, within "
                       f"{format_duration(FROZEN_POLL_MAX)}")
        counted = f"{woken} frozen run{'' if woken == 1 else 's'} continue{'s' if woken == 1 else ''}"
        text = (f":arrow_forward: remediator resumed {escape(str(scope))} — by {_who(req.actor)}: {escape(req.reason)}")
        detail = (f"{counted} where {'it' if woken == 1 else 'they'} stopped. Paused by {_who(lifted.paused_by)} "
                  f"{slack_date(lifted.paused_at)}: {escape(lifted.reason)}")
        slack = await self._announce(scope, f"remediator resumed {scope}", text, detail)
        message = f"resumed {scope} (by {req.actor}: {req.reason}); {counted}"
        return ResumeResult(
            scope=str(scope), pause=lifted, resumed_by=req.actor, reason=req.reason, runs=list(runs), woken=woken,
            warning=warning, slack=slack, message=message,
        )

    async def status(self, log_limit: int = 20) -> BrakesStatus:
        """The pauses in force, the runs they froze, the runs waiting for a slot, and the
        latest ``log_limit`` pauses and resumes. Reads only; needs neither Temporal nor Slack."""
        b = self.brakes
        return await asyncio.to_thread(
            lambda: BrakesStatus(pauses=b.pauses(), frozen=b.frozen_runs(), waiting=b.waiting(), log=b.log(log_limit))
        )

    # ------------------------------------------------------------------ helpers

    def _known_playbook(self, name: str | None) -> None:
        if name is not None and self.playbooks.by_name(name) is None:
            known = ", ".join(p.ref.name for p in self.playbooks) or "none loaded"
            raise InvalidRequest([("playbook", f"no playbook named {name!r}; known: {known}")])

    def _counts(self, scope: PauseScope) -> tuple[int, int]:
        running = self.brakes.store.list_runs(
            outcome="running", namespace=scope.namespace, playbook=scope.playbook, limit=1_000_000
        )
        frozen = [r for r in self.brakes.frozen_runs() if scope.covers(r.namespace, r.playbook)]
        return len(running), len(frozen)

    async def _wake(self, run: FrozenRun, pauses: list[Pause]) -> WokenRun:
        fields = run.model_dump(include={"workflow_id", "run_id", "target", "playbook", "step", "since"})
        other = next((p for p in pauses if p.covers(run.namespace, run.playbook)), None)
        if other is not None:
            return WokenRun(**fields, state="still_paused", message=f"also paused: {other} by {other.paused_by}")
        if self.client is None:
            return WokenRun(**fields, state="unreached", message="no Temporal client")
        handle = self.client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        timeout = self.signal_timeout.total_seconds()
        try:
            # wait_for bounds the connection attempt of a lazy client too; rpc_timeout does not.
            await asyncio.wait_for(handle.signal(RemediationWorkflow.brakes_changed, rpc_timeout=self.signal_timeout), timeout)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return WokenRun(**fields, state="ended", message=err.message)
            log.warning("could not signal %s run %s: %s", run.workflow_id, run.run_id, err)
            return WokenRun(**fields, state="unreached", message=f"Temporal answered {err.status.name if err.status else 'an error'}: {err.message}")
        except (asyncio.TimeoutError, TimeoutError):
            return WokenRun(**fields, state="unreached", message=f"no answer from Temporal within {timeout:g}s")
        except (RuntimeError, ConnectionError) as err:  # the core bridge's "Failed client connect"
            return WokenRun(**fields, state="unreached", message=f"{type(err).__name__}: {err}")
        return WokenRun(**fields, state="signalled")

    def channels(self, scope: PauseScope) -> list[str]:
        """The Slack channels of the playbooks in ``scope``, each once, in playbook name order."""
        return list(dict.fromkeys(
            lp.playbook.slack.channel for lp in self.playbooks if lp.playbook.slack is not None and _in_scope(lp, scope)
        ))

    async def _announce(self, scope: PauseScope, title: str, text: str, detail: str) -> str | None:
        channels = self.channels(scope)
        if not channels:
            return None
        if self.slack is None:
            return f"not posted to {', '.join(channels)}: Slack is not configured (SLACK_BOT_TOKEN)"
        blocks = fit_blocks([
            {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": detail}]},
        ])
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(asyncio.to_thread(self._post, ch, text, blocks) for ch in channels)), SLACK_TIMEOUT_S
            )
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("Slack notice of %s: no answer within %gs", title, SLACK_TIMEOUT_S)
            return f"could not post: no answer from Slack within {SLACK_TIMEOUT_S:g}s"
        posted = [ch for ch, err in zip(channels, results) if err is None]
        failed = [err for err in results if err is not None]
        parts = ([f"posted to {', '.join(posted)}"] if posted else []) + ([f"could not post: {'; '.join(failed)}"] if failed else [])
        return "; ".join(parts)

    def _post(self, channel: str, text: str, blocks: list[dict[str, Any]]) -> str | None:
        try:
            self.slack.chat_postMessage(
                channel=channel, text=truncate(text, 4000), blocks=blocks, unfurl_links=False, unfurl_media=False
            )
        except Exception as exc:  # any failure of Slack is reported; the pause stands
            err = classify(exc, f"chat.postMessage to {channel}")
            log.warning("Slack notice not posted: %s", err)
            return str(err)
        return None


def _in_scope(loaded: LoadedPlaybook, scope: PauseScope) -> bool:
    """Whether runs of ``loaded`` can fall under ``scope``: its name, and a target namespace that
    is templated or equal to the scope's (a Node playbook has none, so no namespace covers it)."""
    pb = loaded.playbook
    if scope.playbook is not None and pb.name != scope.playbook:
        return False
    if scope.namespace is None:
        return True
    ns = pb.target.namespace
    return ns is not None and ("{" in ns or ns == scope.namespace)


def _who(actor: str) -> str:
    """A Slack mention for a user ID, else the ID as text."""
    return mention(actor) if _SLACK_USER.match(actor) else f"`{escape(actor)}`"


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- HTTP


def router(settings: Settings, controller: Controller) -> APIRouter:
    """``POST /api/v1/pause``, ``POST /api/v1/resume`` and ``GET /api/v1/status`` on
    ``controller``, with the credentials of ``settings`` (``auth_token``, ``basic_auth``,
    ``no_auth``: the webhook's). Mounted by remediator.app.runtime with
    ``app.include_router(router(...))``."""
    auth = _Authenticator(settings)
    api = APIRouter()

    def refused(request: Request) -> Response | None:
        why = auth.check(request.headers.get("authorization"))
        if why is None:
            return None
        log.warning("refused %s %s from %s: %s", request.method, request.url.path,
                    request.client.host if request.client else "?", why)
        return _error(401, why, headers={"WWW-Authenticate": auth.challenge})

    async def body(request: Request) -> BrakeRequest | Response:
        content_type = request.headers.get("content-type")
        if not _is_json(content_type):
            return _error(415, f"Content-Type must be application/json, got {content_type or 'none'}")
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except BodyRefused as err:
            return _error(err.status, err.message)
        try:
            return BrakeRequest.model_validate_json(raw)
        except ValidationError as err:
            if any(e["type"] == "json_invalid" for e in err.errors()):
                return _error(400, f"body is not valid JSON: {err.errors()[0]['msg']}")
            return _invalid(InvalidRequest.of(err))

    async def act(request: Request, what: Literal["pause", "resume"]) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        req = await body(request)
        if isinstance(req, Response):
            return req
        try:
            if what == "pause":
                result: BaseModel = await controller.pause(req.scope, req.reason, req.actor)
            else:
                result = await controller.resume(req.scope, req.reason, req.actor)
        except InvalidRequest as err:
            return _invalid(err)
        except NotPaused as err:
            return _error(404, str(err), paused=[p.model_dump(mode="json") for p in err.paused])
        except DatabaseError as err:
            log.error("%s of %s not done: audit store: %s", what, req.scope, reason(err))
            return _error(503, f"{what} not done: the audit store cannot be written: {reason(err)}")
        return JSONResponse(result.model_dump(mode="json"))

    @api.post(PAUSE_PATH)
    async def pause(request: Request) -> Response:
        # Raw Request handlers, as the webhook's: credentials are checked before the body is read.
        return await act(request, "pause")

    @api.post(RESUME_PATH)
    async def resume(request: Request) -> Response:
        return await act(request, "resume")

    @api.get(STATUS_PATH)
    async def status(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        try:
            result = await controller.status()
        except DatabaseError as err:
            return _error(503, f"the audit store cannot be read: {reason(err)}")
        return JSONResponse(result.model_dump(mode="json"))

    return api


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _invalid(err: InvalidRequest) -> JSONResponse:
    return _error(422, str(err), problems=[{"field": f, "message": m} for f, m in err.problems])


def pauses_text(pauses: Iterable[Pause]) -> list[str]:
    """One line per pause: scope, who, when, why (``remediator status``)."""
    return [f"{p} — by {p.paused_by} at {_time(p.paused_at)}: {p.reason}" for p in pauses]


def status_text(status: BrakesStatus, now: datetime | None = None) -> str:
    """``remediator status`` as text: the pauses, the frozen runs, the slot queue, the latest log."""
    now = now or datetime.now(UTC)
    lines: list[str] = []
    if status.pauses:
        lines.append(f"Paused ({len(status.pauses)}):")
        lines += [f"  {line}" for line in pauses_text(status.pauses)]
    else:
        lines.append("Nothing is paused.")
    if status.frozen:
        lines.append(f"Frozen runs ({len(status.frozen)}):")
        for r in status.frozen:
            waited = format_duration(timedelta(seconds=max(0, int((now - r.since).total_seconds()))))
            lines.append(
                f"  {r.target}  playbook {r.playbook}  before step {r.step + 1}  since {_time(r.since)} ({waited})"
                f"  run {r.run_id}  [{r.scope}]"
            )
    else:
        lines.append("No run is frozen.")
    lines.append(f"Runs waiting for a concurrency slot: {status.waiting}")
    if status.log:
        lines.append("Latest pauses and resumes:")
        for rec in status.log[:5]:
            scope = PauseScope(namespace=rec.namespace, playbook=rec.playbook)
            lines.append(f"  {_time(rec.at)}  {rec.kind:<6}  {scope} — by {rec.actor}: {rec.reason}")
    return "\n".join(lines)
