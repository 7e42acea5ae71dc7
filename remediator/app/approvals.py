"""Approval decisions: one place that turns a human's Approve/Reject into the ``decide`` Update.

Called by the three ways a decision arrives: the Slack interactivity endpoint
(remediator.slack_interactivity, ``via="slack"``), Socket Mode (remediator.socket_mode,
``via="socket_mode"``) and the CLI (``remediator approve|reject RUN --as U123``, ``via="cli"``).

The run decides, not this module: ``RemediationWorkflow``'s ``decide`` Update validator refuses
an unauthorised user, a decision for a request other than the one waiting (stale message) and a
second decision, *before* anything is written to the workflow's history. A refusal is raised
here as ``DecisionRefused`` (with the validator's message, which says which of those it was)
and recorded in the audit trail as an ``approval_refused`` intake record, so the trail shows
every attempt, including the ones that changed nothing.

Also ``parse_button_value``: the ``value`` of the Approve/Reject buttons remediator.slack puts
on the approval message, ``{"workflow_id": ..., "run_id": ..., "request_id": ...}`` as JSON,
read with remediator.slack.parse_action_value.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from remediator.app.intake import TemporalUnavailable
from remediator.audit.store import AuditStore
from remediator.domain.messages import ApprovalDecision, DecisionResult
from remediator.domain.runs import SA_TARGET, cluster_of, qualified_target
from remediator.slack.blocks import parse_action_value
from workflows.remediation import RemediationWorkflow

log = logging.getLogger("remediator.app.approvals")

"""Name of the Temporal Update on ``RemediationWorkflow`` that carries an ``ApprovalDecision``."""

DEFAULT_TIMEOUT = 10.0
"""Seconds ``submit_decision`` waits for the run to accept a decision when no timeout is given
(the CLI); the Slack endpoint passes a shorter one to answer within Slack's 3 seconds."""

__all__ = [
    "BadButtonValue",
    "DecisionRefused",
    "FoundRun",
    "TemporalUnavailable",
    "find_run",
    "parse_button_value",
    "submit_decision",
]


_RUN_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{3,35}")


@dataclass(frozen=True)
class FoundRun:
    """A remediation run as Temporal knows it: ``workflow_id`` (``remediation/...``), ``run_id``,
    ``target`` (its ``Target`` search attribute, ``kind/namespace/name``; "" when unset)."""

    workflow_id: str
    run_id: str
    target: str

    @property
    def qualified_target(self) -> str:
        """The target with its cluster, as people name it (``east/deployment/prod/checkout``)."""
        return qualified_target(self.target, cluster_of(self.workflow_id))


async def find_run(client: Client, ref: str) -> FoundRun:
    """The remediation run ``ref`` names, found through Temporal, so any replica (or a laptop
    that reaches Temporal) finds it without the engine's database.

    ``ref`` is a workflow ID (``remediation/...``: its latest run) or a run ID or a unique
    prefix of one (at least 4 hex digits; a visibility query ``RunId STARTS_WITH``, as
    ``temporal workflow list --query`` takes it). A run that has just started can take a moment
    to be visible.

    Raises:
        LookupError: ``ref`` is neither form, no run matches, or several do (they are named).
        temporalio.service.RPCError: Temporal refused the query for another reason.
    """
    ref = ref.strip()
    if ref.startswith("remediation/"):
        try:
            desc = await client.get_workflow_handle(ref).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise LookupError(f"no remediation run has workflow ID {ref!r} in Temporal namespace {client.namespace}") from None
            raise
        return FoundRun(desc.id, desc.run_id, desc.typed_search_attributes.get(SA_TARGET) or "")
    prefix = ref.lower()
    if not _RUN_ID_PREFIX.fullmatch(prefix):
        raise LookupError(
            f"{ref!r} is neither a workflow ID (remediation/...) nor a run ID or its prefix (at least 4 hex digits)"
        )
    query = f"WorkflowType = '{RemediationWorkflow.__name__}' AND RunId STARTS_WITH '{prefix}'"
    found = [w async for w in client.list_workflows(query, limit=5)]
    if not found:
        raise LookupError(f"no remediation run matches {ref!r} in Temporal namespace {client.namespace}")
    if len({w.run_id for w in found}) > 1:
        names = ", ".join(f"{w.run_id} ({w.id})" for w in found)
        raise LookupError(f"{ref!r} matches several runs: {names}; give more of the run ID")
    w = found[0]
    return FoundRun(w.id, w.run_id, w.typed_search_attributes.get(SA_TARGET) or "")


class BadButtonValue(ValueError):
    """A button ``value`` is not the JSON remediator.slack writes; the message says what is wrong."""


class DecisionRefused(Exception):
    """The run refused the decision; nothing was written to its history.

    ``reason``: the validator's message as a person reads it (unauthorised user, stale request,
    already decided) or why the run could not take it (ended, unknown). ``kind``: the refusal's
    ``ApplicationError.type`` when the validator gave one (else the exception class name the SDK
    reports), ``not_found`` when the run has ended or does not exist.
    """

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def parse_button_value(value: object) -> tuple[str, str, str]:
    """``(workflow_id, run_id, request_id)`` from an Approve/Reject button's ``value``.

    The format is remediator.slack's (``action_value`` writes it, ``parse_action_value`` reads
    it): a JSON object with non-empty string fields ``workflow_id``, ``run_id``, ``request_id``.

    Raises:
        BadButtonValue: missing, not JSON, not an object, or a field missing/empty/not a string;
            the message names the field.
    """
    if not isinstance(value, str) or not value:
        raise BadButtonValue("button value is missing; expected a JSON object with workflow_id, run_id, request_id")
    try:
        parsed = parse_action_value(value)
    except ValueError as err:
        raise BadButtonValue(str(err)) from None
    return parsed.workflow_id, parsed.run_id, parsed.request_id


async def submit_decision(
    client: Client,
    workflow_id: str,
    run_id: str | None,
    decision: ApprovalDecision,
    *,
    audit: AuditStore | None,
    timeout: float | None = None,
) -> DecisionResult:
    """Send ``decision`` to the run as the ``decide`` Update and return the run's answer.

    Waits until the run has *accepted* the Update (its validator passed; the decision is then
    in history and survives any restart), then for its result within what is left of
    ``timeout``. A run that accepted but did not finish the handler in time still counts: the
    returned result then says so, and the approval message is rewritten by the run itself.

    Args:
        client: connected Temporal client (pydantic data converter).
        workflow_id: ``remediation/[<cluster>/]<target key>``.
        run_id: the run the approval request belongs to; None targets the latest run (CLI).
            A specific run is what makes a click on an old message land on that old run (and be
            refused there) rather than on a newer run of the same target.
        decision: the decision; ``decided_at`` is filled with now (UTC) when None.
        audit: where a refusal is recorded (``approval_refused``); None records nothing.
        timeout: seconds for the whole call, connection included; default ``DEFAULT_TIMEOUT``.

    Returns:
        The ``DecisionResult`` of the Update.

    Raises:
        DecisionRefused: the validator refused (unauthorised, stale, already decided), the
            handler failed, or the run has ended / does not exist. Recorded in ``audit``.
        TemporalUnavailable: Temporal did not answer, or the run did not accept the decision,
            within ``timeout`` (worker down or busy); nothing is known to be decided, so the
            person may try again (a decision that did land makes the retry "already decided").
    """
    if decision.decided_at is None:
        decision = decision.model_copy(update={"decided_at": datetime.now(UTC)})
    budget = DEFAULT_TIMEOUT if timeout is None else timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
    what = f"{decision.decision} of {decision.request_id} by {decision.user_id} (via {decision.via})"
    try:
        # asyncio.wait_for bounds the connection attempt of a lazy client too; rpc_timeout alone
        # does not. Each Update gets the SDK's random ID: a second click is a second decision,
        # which the validator refuses, rather than a silent repeat of the first one's result.
        update = await asyncio.wait_for(
            handle.start_update(
                RemediationWorkflow.decide,
                decision,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                rpc_timeout=timedelta(seconds=budget),
            ),
            timeout=budget,
        )
    except WorkflowUpdateFailedError as err:
        reason, kind = _failure_reason(err)
        await _refused(audit, workflow_id, run_id, decision, reason)
        raise DecisionRefused(reason, kind) from err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            reason = f"run {run_id or '(latest)'} of {workflow_id} has ended or does not exist: {err.message}"
            await _refused(audit, workflow_id, run_id, decision, reason)
            raise DecisionRefused(reason, "not_found") from err
        status = err.status.name if err.status is not None else "an error"
        raise TemporalUnavailable(f"{what}: Temporal answered {status}: {err.message}") from err
    except (asyncio.TimeoutError, TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
        raise TemporalUnavailable(
            f"{what}: the run did not accept the decision within {budget:g}s (Temporal or the worker is unavailable)"
        ) from err
    except (RuntimeError, ConnectionError) as err:
        # The SDK's core bridge raises RuntimeError("Failed client connect: ...") when the
        # frontend cannot be reached.
        raise TemporalUnavailable(f"{what}: {type(err).__name__}: {err}") from err

    try:
        result = await asyncio.wait_for(update.result(), timeout=max(0.05, deadline - loop.time()))
    except WorkflowUpdateFailedError as err:
        # A validator refusal comes back as an already-known outcome of the start call.
        reason, kind = _failure_reason(err)
        await _refused(audit, workflow_id, run_id, decision, reason)
        raise DecisionRefused(reason, kind) from err
    except (asyncio.TimeoutError, TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
        log.warning("%s accepted by %s but its result did not arrive within %gs", what, workflow_id, budget)
        return DecisionResult(
            request_id=decision.request_id,
            decision=decision.decision,
            user_id=decision.user_id,
            message="accepted; the run is carrying it out",
        )
    log.info("%s accepted by %s run %s: %s", what, workflow_id, run_id or "(latest)", result.message)
    return result


def _failure_reason(err: WorkflowUpdateFailedError) -> tuple[str, str | None]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message or str(cause), cause.type
    return str(cause) or type(cause).__name__, type(cause).__name__


async def _refused(
    audit: AuditStore | None, workflow_id: str, run_id: str | None, decision: ApprovalDecision, reason: str
) -> None:
    log.warning(
        "%s of %s by %s (via %s) refused by %s: %s",
        decision.decision, decision.request_id, decision.user_id, decision.via, workflow_id, reason,
    )
    if audit is None:
        return
    who = decision.user_id + (f" ({decision.user_name})" if decision.user_name else "")
    if decision.os_user:
        who += f" (as OS user {decision.os_user} on {decision.os_host})"
    message = f"{decision.decision} of {decision.request_id} by {who} via {decision.via} refused: {reason}"
    try:
        # The audit store is synchronous SQLite (fsync per write): off the event loop.
        await asyncio.to_thread(
            audit.record_intake, "approval_refused", None, message, run_id=run_id or None, at=decision.decided_at
        )
    except Exception:
        # The refusal itself stands (nothing was decided); losing its record must not turn it
        # into a different answer for the person who clicked.
        log.exception("could not record the refused decision in the audit trail: %s", message)
