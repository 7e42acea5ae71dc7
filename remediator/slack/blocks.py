"""Slack Block Kit messages of remediator: the approval request and its updates, notices.

Pure text building, no I/O: the Slack activities (activities/slack.py) post what these build;
the interactivity endpoint and Socket Mode handler use ``APPROVE_ACTION_ID`` /
``REJECT_ACTION_ID`` and ``parse_action_value``.

* ``approval_blocks`` / ``approval_text``: the approval request (alert, target, the change,
  evidence, confidence, links, Approve/Reject buttons) and, after a decision, the same message
  without buttons and with the outcome line. ``notice_blocks`` / ``notice_text``: a run's
  outcome, or an escalation. Every builder keeps within Block Kit's limits (``fit_blocks``) by
  cutting text with "…".
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, NamedTuple

from remediator.domain.actions import ACTIONS
from remediator.domain.messages import ApprovalDecision, ApprovalOutcome, ApprovalRequest, Evidence, Notice
from remediator.domain.runs import cluster_of, qualified_target

APPROVE_ACTION_ID = "remediator_approve"
REJECT_ACTION_ID = "remediator_reject"
APPROVAL_EVENT_TYPE = "remediator_approval_request"
ESCALATION_EVENT_TYPE = "remediator_approval_escalation"
NOTICE_EVENT_TYPE = "remediator_notice"

# Block Kit limits (docs.slack.dev/reference/block-kit/blocks, .../composition-objects).
MAX_BLOCKS = 50
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
BUTTON_VALUE_MAX = 2000
CONFIRM_TITLE_MAX = 100
CONFIRM_TEXT_MAX = 300
# chat.postMessage's ``text`` is cut by Slack at 40 000 characters; as a notification fallback
# far less is useful, and Slack recommends staying under 4 000.
FALLBACK_TEXT_MAX = 4000
EVIDENCE_LINE_MAX = 400
ELLIPSIS = "…"

# --------------------------------------------------------------------------- text helpers


def escape(text: str) -> str:
    """Escape ``&``, ``<``, ``>`` for Slack mrkdwn (docs.slack.dev/messaging/formatting-message-text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_USER_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


def escape_keep_mentions(text: str) -> str:
    """``escape`` that keeps user mentions (``<@U123>``): for lines remediator writes about people
    (outcome, timeline) that may quote user input; ``<!channel>`` and the like stay inert."""
    return _USER_MENTION.sub(r"<@\1>", escape(text))


def link(url: str, label: str) -> str:
    """A mrkdwn link ``<url|label>``; characters that would end the link are escaped."""
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{escape(label)}>"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with "…" when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def mention(ref: str) -> str:
    """Slack mention syntax: ``S...`` -> ``<!subteam^S...>``, ``U.../W...`` -> ``<@U...>``;
    ``here``/``channel`` -> ``<!here>``/``<!channel>``."""
    ref = ref.strip().lstrip("@")
    if ref in ("here", "channel", "everyone"):
        return f"<!{ref}>"
    if ref.startswith("S"):
        return f"<!subteam^{ref}>"
    return f"<@{ref}>"


def slack_date(at: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """A date Slack shows in each reader's time zone (``<!date^unix^format|fallback>``).

    Never raises: a date that cannot be converted to UTC (``9999-12-31T23:00:00-05:00`` is past
    ``datetime.max`` in UTC; ``0001-01-01T00:00:00+05:00`` before ``datetime.min``) is shown as
    written, in ISO 8601, without Slack's date formatting.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    try:
        fallback = at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return f"<!date^{int(at.timestamp())}^{fmt}|{fallback}>"
    except (OverflowError, ValueError, OSError):
        return at.isoformat()


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "section", "text": _mrkdwn(text)}
    if block_id:
        b["block_id"] = block_id
    return b


def _context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(p) for p in parts if p]}


def fit_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks cut to Block Kit's limits: header text 150, section text 3000, fields 2000,
    context 10 elements, 50 blocks (the last block — the buttons — is kept when cutting)."""
    out: list[dict[str, Any]] = []
    for b in blocks:
        b = json.loads(json.dumps(b))
        if b["type"] == "header":
            b["text"]["text"] = truncate(b["text"]["text"], HEADER_TEXT_MAX)
        elif b["type"] == "section":
            if "text" in b:
                b["text"]["text"] = truncate(b["text"]["text"], SECTION_TEXT_MAX)
            for f in b.get("fields", []):
                f["text"] = truncate(f["text"], FIELD_TEXT_MAX)
        elif b["type"] == "context":
            b["elements"] = b["elements"][:CONTEXT_ELEMENTS_MAX]
            for e in b["elements"]:
                if "text" in e:
                    e["text"] = truncate(e["text"], SECTION_TEXT_MAX)
        out.append(b)
    if len(out) > MAX_BLOCKS:
        out = out[: MAX_BLOCKS - 1] + [out[-1]]
    return out


# --------------------------------------------------------------------------- approval message


class ActionValue(NamedTuple):
    """What an Approve/Reject button carries back: enough to send the ``decide`` Update."""

    workflow_id: str
    run_id: str
    request_id: str


def action_value(req: ApprovalRequest) -> str:
    """The buttons' ``value``: compact JSON ``{"workflow_id", "run_id", "request_id"}``.

    Raises:
        ValueError: longer than Slack's 2000 characters (IDs that long are not Kubernetes names).
    """
    value = json.dumps({"workflow_id": req.workflow_id, "run_id": req.run_id, "request_id": req.request_id},
                       separators=(",", ":"))
    if len(value) > BUTTON_VALUE_MAX:
        raise ValueError(f"button value is {len(value)} characters, Slack allows {BUTTON_VALUE_MAX}")
    return value


def parse_action_value(value: str) -> ActionValue:
    """Decode a button ``value`` made by ``action_value``.

    Raises:
        ValueError: not JSON, or a field is missing or not a non-empty string.
    """
    try:
        data = json.loads(value)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"button value is not JSON: {value!r:.100}") from e
    if not isinstance(data, dict):
        raise ValueError("button value must be a JSON object")
    fields = []
    for k in ActionValue._fields:
        v = data.get(k)
        if not isinstance(v, str) or not v:
            raise ValueError(f"button value has no {k}")
        fields.append(v)
    return ActionValue(*fields)


_SIGNAL = {True: ":white_check_mark:", False: ":x:"}
_STATUS = {
    "approved": (":white_check_mark:", "Approved"),
    "rejected": (":no_entry:", "Rejected"),
    "escalated": (":rotating_light:", "Escalated"),
    "expired": (":hourglass:", "Expired"),
    "executed": (":heavy_check_mark:", "Done"),
    "failed": (":x:", "Failed"),
    "resolved": (":white_check_mark:", "Resolved"),
}
DECIDED_STATUSES = frozenset({"approved", "rejected", "expired", "executed", "failed", "resolved"})
"""Statuses after which the message has no buttons."""


def evidence_line(e: Evidence) -> str:
    """One evidence line: signal emoji (``:warning:`` when it could not be gathered), name, check
    and summary, e.g. ``:white_check_mark: *recent_rollout* (recent_rollout) — revision 7, 4m ago``."""
    icon = ":warning:" if e.error else _SIGNAL[bool(e.signal)]
    summary = f"could not gather: {e.error}" if e.error else e.summary
    return truncate(f"{icon} *{escape(e.name)}* ({escape(e.check)}) — {escape(summary)}", EVIDENCE_LINE_MAX)


def _params_text(params: Any) -> str:
    if params is not None and not isinstance(params, dict):
        params = params.model_dump(mode="json")
    if not params:
        return ""
    lines = [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in params.items()]
    return "```" + escape("\n".join(lines)).replace("```", "'''") + "```"


def _links(*pairs: tuple[str, str]) -> str:
    return " · ".join(link(url, label) for url, label in pairs if url)


def _alert_line(req_alert: Any) -> str:
    if req_alert is None:
        return ""
    since = slack_date(req_alert.starts_at)
    return f"*Alert* `{escape(req_alert.alertname or req_alert.fingerprint)}` {req_alert.status} since {since}"


def change_text(req: ApprovalRequest) -> str:
    """What the step will change, in the words of the kubectl command it mirrors (the action
    registry's description), e.g. "scale deployment prod/web by +1 replicas, within 2..10
    (kubectl scale)"."""
    if req.change:
        return req.change
    spec = ACTIONS.get(req.action)
    return spec.describe(req.params, req.target) if spec and req.params is not None else f"run {req.action}"


def decided_line(decision: ApprovalDecision) -> str:
    """``approved by <@U1> at 2026-11-21 05:56:13Z via slack``: who decided, when and how."""
    verb = "approved" if decision.decision == "approve" else "rejected"
    at = decision.decided_at.strftime("%Y-%m-%d %H:%M:%SZ") if decision.decided_at else "?"
    return f"{verb} by <@{decision.user_id}> at {at} via {decision.via}"


def outcome_text(req: ApprovalRequest, outcome: ApprovalOutcome) -> str:
    """The outcome line of an approval message: who decided and what happened next (or, for
    runs started before the workflow sent structured outcomes, the text it sent)."""
    if outcome.text:
        return outcome.text
    who = decided_line(outcome.decision) if outcome.decision else ""
    step = f"step {req.step_index + 1}"
    tail = {
        "approved": f"running {step}",
        "rejected": "the step did not run",
        "executed": f"the step ran: {outcome.result}",
        "failed": f"the step ran and failed: {outcome.result}",
        "escalated": outcome.result or "escalated to the on-call",
        "expired": outcome.result or "no decision by the deadline; the step did not run",
        "resolved": outcome.result or "resolved before a decision; nothing ran",
    }[outcome.status]
    return f"{who}; {tail}" if who else tail


def where(msg: ApprovalRequest | Notice) -> str:
    """The message's target as people name it across clusters: ``east/deployment/prod/checkout``
    for a run of an engine started with ``--cluster east`` (from its workflow ID), else the
    target key."""
    return qualified_target(msg.target.key, cluster_of(msg.workflow_id))


def _target_line(msg: ApprovalRequest | Notice) -> str:
    cluster = cluster_of(msg.workflow_id)
    head = f"*Cluster* `{escape(cluster)}` · " if cluster else ""
    return f"{head}*Target* `{escape(msg.target.key)}` · playbook `{escape(msg.playbook)}`"


def approval_blocks(req: ApprovalRequest, outcome: ApprovalOutcome | None = None) -> list[dict[str, Any]]:
    """The approval message as Block Kit blocks.

    Header; the outcome line when ``outcome`` is given; alert and target; the step and what it
    will change (``req.change`` and its params); the evidence, one line each; confidence and
    why approval is needed; who may approve and when it escalates / expires; links (alert
    source = ``generatorURL``, Temporal run = ``req.temporal_url``, audit timeline =
    ``req.audit_url``); and, unless the outcome is a decision (``DECIDED_STATUSES``), an
    actions block with Approve (``primary``, ``APPROVE_ACTION_ID``, with a confirm dialog) and
    Reject (``danger``, ``REJECT_ACTION_ID``), both with ``value`` = ``action_value(req)``.
    Within Block Kit's limits (``fit_blocks``).

    All text from the request and ``outcome.text`` is escaped for mrkdwn except user mentions
    (``<@U123>``), so an approver's comment quoted there cannot ping ``<!channel>``.
    """
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{DRY_RUN_TAG if req.dry_run else ''}Approval needed: {req.step_name} on {where(req)}")},
    ]
    if req.dry_run:
        blocks.append(_section(":test_tube: *DRY RUN*: the step is sent with `dryRun=All`; the API server validates it and nothing changes."))
    if outcome is not None:
        icon, label = _STATUS[outcome.status]
        blocks.append(_section(f"{icon} *{label}* — {escape_keep_mentions(outcome_text(req, outcome))}", "remediator_status"))
    target = _target_line(req)
    alert = _alert_line(req.alert)
    blocks.append(_section("\n".join(x for x in (alert, target) if x)))
    step = f"*Step {req.step_index + 1}: {escape(req.step_name)}* (`{escape(req.action)}`) will {escape(change_text(req))}"
    params = _params_text(req.params)
    blocks.append(_section(step + ("\n" + params if params else "")))
    if req.limits:
        lines = "\n".join(f"• {escape(limit)}" for limit in req.limits)
        blocks.append(_section(f":octagonal_sign: *Over the policy's limits*: approving means exceeding them\n{lines}"))
    if req.gitops:
        blocks.append(_section(
            f":arrows_counterclockwise: *Managed by {escape(req.gitops)}*: the controller will revert this change "
            "unless it is fixed in Git or sync is suspended"
        ))
    if req.evidence:
        lines = "\n".join(evidence_line(e) for e in req.evidence)
        blocks.append(_section(f"*Evidence*\n{lines}"))
    conf = "not assessed" if req.confidence is None else f"{round(req.confidence * 100)}%"
    why = f"\n*Why approval:* {escape(req.reason)}" if req.reason else ""
    blocks.append(_section(f"*Confidence:* {conf}{why}"))
    approvers = " ".join([mention(u) for u in req.approvers] + [mention(g) for g in req.approver_groups])
    timing = f"escalates {slack_date(req.escalate_at)} · expires {slack_date(req.deadline)}"
    blocks.append(_context(f"Approvers: {approvers or 'anyone in this channel'} · {timing}"))
    links = _links(
        (req.alert.generator_url if req.alert else "", "Alert source"),
        (req.temporal_url, "Temporal run"),
        (req.audit_url, "Audit timeline"),
    )
    if links:
        blocks.append(_context(links))
    if outcome is None or outcome.status not in DECIDED_STATUSES:
        value = action_value(req)
        blocks.append({
            "type": "actions",
            "block_id": "remediator_decision",
            "elements": [
                {
                    "type": "button", "action_id": APPROVE_ACTION_ID, "style": "primary",
                    "text": _plain("Approve"), "value": value,
                    "confirm": {
                        "title": _plain(truncate(f"Run {req.step_name}?", CONFIRM_TITLE_MAX)),
                        "text": _plain(truncate(f"This will {req.change}.", CONFIRM_TEXT_MAX)),
                        "confirm": _plain("Approve"), "deny": _plain("Cancel"),
                    },
                },
                {"type": "button", "action_id": REJECT_ACTION_ID, "style": "danger",
                 "text": _plain("Reject"), "value": value},
            ],
        })
    return fit_blocks(blocks)


def approval_text(req: ApprovalRequest, outcome: ApprovalOutcome | None = None) -> str:
    """Plain-text fallback of the approval message (notifications, screen readers)."""
    head = f"{DRY_RUN_TAG if req.dry_run else ''}Approval needed: {req.step_name} on {where(req)} will {change_text(req)}"
    if req.limits:
        head += " — over the limits: " + "; ".join(req.limits)
    conf = "" if req.confidence is None else f" (confidence {round(req.confidence * 100)}%)"
    if outcome is not None:
        head = f"[{_STATUS[outcome.status][1]}] {head} — {outcome_text(req, outcome)}"
    # ``text`` is mrkdwn too: escaped so nothing in it pings a channel.
    return truncate(escape_keep_mentions(head + conf), FALLBACK_TEXT_MAX)


def approval_metadata(req: ApprovalRequest) -> dict[str, Any]:
    """Message metadata that finds the approval message again (``conversations.history``)."""
    return {"event_type": APPROVAL_EVENT_TYPE,
            "event_payload": {"request_id": req.request_id, "workflow_id": req.workflow_id, "run_id": req.run_id}}


def escalation_text(req: ApprovalRequest) -> str:
    """The thread reply that pages the on-call group when nobody answered in time."""
    who = req.oncall_usergroup or (req.approver_groups[0] if req.approver_groups else None)
    tag = mention(who) if who else " ".join(mention(u) for u in req.approvers)
    return (f"{tag} no answer yet: *{escape(req.step_name)}* on `{escape(where(req))}` is waiting for approval "
            f"(asked {slack_date(req.requested_at)}). If nobody decides by {slack_date(req.deadline)} "
            f"the step will not run.").strip()


# --------------------------------------------------------------------------- notices

_NOTICE_ICON = {
    "health_failed": ":x:", "not_healed": ":warning:", "approval_rejected": ":no_entry:",
    "approval_timeout": ":hourglass:", "approval_escalation": ":rotating_light:",
    "safety_refusal": ":octagonal_sign:", "failed": ":x:", "healed": ":white_check_mark:",
    "refused": ":octagonal_sign:", "rolled_back": ":leftwards_arrow_with_hook:", "resolved": ":white_check_mark:",
    "needs_human": ":raising_hand:", "terminated": ":skull:", "timed_out": ":hourglass:", "cancelled": ":no_entry:",
    "dry_run": ":test_tube:", "limit_refused": ":octagonal_sign:",
}

DRY_RUN_TAG = "DRY RUN: "
"""Starts the header and fallback text of every message of a dry run."""


def notice_title(n: Notice) -> str:
    """The notice's headline, from its kind, target, playbook, step and reason (or the title a
    run started before structured notices sent)."""
    title = _notice_title(n)
    return DRY_RUN_TAG + title if n.dry_run and not title.startswith(DRY_RUN_TAG) else title


def _notice_title(n: Notice) -> str:
    if n.title:
        return n.title
    target, playbook, step = where(n), n.playbook, n.step
    if n.kind == "dry_run":
        return f"{target}: dry run of playbook {playbook} done; nothing changed ({n.reason})"
    if n.kind == "healed":
        return f"{target} healed by playbook {playbook}"
    if n.kind == "not_healed":
        return f"{target} is not healed: {n.reason}"
    if n.kind == "approval_escalation":
        return f"{step} of {playbook} on {target} still waits for approval"
    if n.kind == "health_failed":
        return f"{step} of {playbook} on {target} failed: {n.reason}"
    return f"remediation of {target} with playbook {playbook} ended {n.kind}: {n.reason}"


def notice_blocks(n: Notice) -> list[dict[str, Any]]:
    """A notice (a run's outcome, or an escalation mid-run): header (title), the mention and target/alert, the run's timeline
    (one line each) and links (alert source, Temporal run, audit timeline). Within limits."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(notice_title(n))},
    ]
    head = " ".join(x for x in (
        mention(n.mention) if n.mention else "",
        f"{_NOTICE_ICON.get(n.kind, '')} {_target_line(n)}",
    ) if x)
    alert = _alert_line(n.alert)
    blocks.append(_section("\n".join(x for x in (head, alert) if x)))
    if n.timeline:
        blocks.append(_section("\n".join(f"• {escape_keep_mentions(line)}" for line in n.timeline)))
    links = _links(
        (n.alert.generator_url if n.alert else "", "Alert source"),
        (n.temporal_url, "Temporal run"),
        (n.audit_url, "Audit timeline"),
    )
    if links:
        blocks.append(_context(links))
    return fit_blocks(blocks)


def notice_text(n: Notice) -> str:
    """Plain-text fallback of a notice; starts with the mention so the group is notified."""
    tag = f"{mention(n.mention)} " if n.mention else ""
    return truncate(f"{tag}{escape(notice_title(n))} ({escape(where(n))})", FALLBACK_TEXT_MAX)


def notice_metadata(n: Notice) -> dict[str, Any]:
    return {"event_type": NOTICE_EVENT_TYPE,
            "event_payload": {"event_key": n.event_key, "target": where(n), "run_id": n.run_id, "kind": n.kind}}
