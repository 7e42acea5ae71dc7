"""Slack as Temporal activities: the approval message, its in-place updates, escalation notices.

``SlackActivities`` is built once by the worker (remediator.app.runtime) with
``remediator.slack.client.make_client(token, api_url)``
(None when no bot token is configured) and a ``SlackThreads`` in the state dir; its bound methods
are registered as activities (name = method name, sync ``def`` on the worker's thread pool, as
slack-sdk's WebClient blocks). Called by workflows/remediation.py:

========================  =====================================================================
post_approval_request     the approval message with Approve/Reject; exactly one per request
update_approval_message   rewrite it in place (outcome line, no buttons once decided); when
                          ``escalated`` also page the on-call group in its thread, once
post_notice               an escalation notice, one per ``event_key``, in the target's thread
resolve_approvers         expand approver user groups (``usergroups.users.list``)
========================  =====================================================================

Exactly once under retries and worker crashes: every message carries Slack message metadata
naming what it is for (``remediator_approval_request`` + ``request_id`` ...). Before posting, an
activity looks for it in the local ``SlackThreads`` record, then in Slack itself
(``conversations.history`` / ``conversations.replies`` with ``include_all_metadata``), so a
post that went through just before a crash is found rather than repeated.

Errors (``ApplicationError`` types): ``SlackNotConfigured`` and ``SlackPermanentError`` are
non-retryable (``SLACK_NON_RETRYABLE``); ``SlackTemporaryError`` (rate limited beyond
slack-sdk's own waits, 5xx, network) is retried by the workflow's policy, with Slack's
``Retry-After`` as the next delay when it gave one.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError, FailureError

from remediator.domain.messages import (
    ApprovalMessage,
    ApprovalOutcome,
    ApprovalRequest,
    Notice,
    NoticeResult,
    ResolveApproversInput,
    ResolveApproversResult,
)
from remediator.slack.blocks import (
    APPROVAL_EVENT_TYPE,
    ESCALATION_EVENT_TYPE,
    NOTICE_EVENT_TYPE,
    approval_blocks,
    approval_metadata,
    approval_text,
    escalation_text,
    notice_blocks,
    notice_metadata,
    notice_text,
    where,
)
from remediator.slack.client import (
    AUTH_API_ERRORS,
    SLACK_NON_RETRYABLE,
    SlackError,
    SlackPermanentError,
    classify,
)
from remediator.slack.threads import CHANNEL_ID, SlackThreads

__all__ = ["SLACK_NON_RETRYABLE", "SlackActivities"]

HISTORY_PAGE = 200
HISTORY_MAX_PAGES = 10
"""At most 2000 recent top-level messages are searched for an earlier post."""
CLOCK_SKEW = timedelta(minutes=10)
"""How far before the workflow's ``requested_at`` Slack's own clock may have stamped the post."""
NOTICE_THREAD_WINDOW = timedelta(days=7)
"""A target's notice thread is looked up in Slack this far back when the local record is gone;
older threads are not reopened."""

_STATUS_RANK = {"escalated": 1, "approved": 2, "rejected": 2, "expired": 2, "resolved": 2, "executed": 3, "failed": 3}


@contextmanager
def _slack_errors(what: str) -> Iterator[None]:
    """Turn slack-sdk and connection errors into the activity's classified ApplicationError.

    Anything else (a local SQLite error, a bug) is left as it is: Temporal retries it, which is
    safe because every activity here looks before it posts."""
    try:
        yield
    except FailureError:
        raise
    except (SlackError, SlackClientError, URLError, OSError, http.client.HTTPException) as e:
        raise classify(e, what).to_application_error() from e


def _payload(msg: dict[str, Any], event_type: str) -> dict[str, Any] | None:
    md = msg.get("metadata") or {}
    if md.get("event_type") != event_type:
        return None
    return md.get("event_payload") or {}


class SlackActivities:
    """Activities bound to one WebClient and one ``SlackThreads``:
    ``SlackActivities(make_client(token, api_url), SlackThreads(database))`` (the worker's database,
    remediator.db, shared with the audit trail).

    ``client`` None: Slack is not configured; every activity fails non-retryably with
    ``SlackNotConfigured`` (the workflow ends ``needs_human`` rather than waiting forever).
    """

    def __init__(self, client: WebClient | None, threads_store: SlackThreads) -> None:
        self._client = client
        self._store = threads_store

    # ------------------------------------------------------------------ activities

    @activity.defn
    def post_approval_request(self, req: ApprovalRequest) -> ApprovalMessage:
        """Post the approval message (``approval_blocks``) to ``req.channel``; exactly one per
        ``req.request_id``.

        Looks first in the local record, then in ``conversations.history`` (since
        ``requested_at`` minus ``CLOCK_SKEW``) for a message whose metadata is
        ``remediator_approval_request`` with this ``request_id``; when found returns it with
        ``posted=False``. Otherwise ``chat.postMessage`` with that metadata, then records it.

        Raises:
            ApplicationError: ``SlackNotConfigured``; ``SlackPermanentError`` (channel_not_found,
                not_in_channel, invalid_auth, invalid_blocks...); ``SlackTemporaryError``.
        """
        client = self._require_client()
        key = f"approval:{req.request_id}"
        with _slack_errors(f"approval request {req.request_id} to {req.channel}"):
            self._store.record_request(req.request_id, req.model_dump_json())
            rec = self._store.message(key)
            if rec is not None:
                return ApprovalMessage(request_id=req.request_id, channel=rec.channel, ts=rec.ts, posted=False)
            channel = self._channel_id(req.channel)
            oldest = req.requested_at - CLOCK_SKEW
            found = self._find_top_level(channel, APPROVAL_EVENT_TYPE,
                                         lambda p: p.get("request_id") == req.request_id, oldest)
            if found is not None:
                rec = self._store.record_message(key, channel, found["ts"])
                activity.logger.info("approval request %s was already posted (ts %s)", req.request_id, rec.ts)
                return ApprovalMessage(request_id=req.request_id, channel=rec.channel, ts=rec.ts, posted=False)
            resp = client.chat_postMessage(
                channel=channel, text=approval_text(req), blocks=approval_blocks(req),
                metadata=approval_metadata(req), unfurl_links=False, unfurl_media=False,
            )
            rec = self._store.record_message(key, resp["channel"], resp["ts"])
        return ApprovalMessage(request_id=req.request_id, channel=rec.channel, ts=rec.ts, posted=True)

    def _request(self, outcome: ApprovalOutcome) -> ApprovalRequest:
        """The request the message shows: sent along by older runs, else recorded at post time."""
        if outcome.request is not None:
            return outcome.request
        recorded = self._store.request(outcome.id)
        if recorded is None:
            raise SlackPermanentError(f"approval request {outcome.id} was not posted from this worker's state dir")
        return ApprovalRequest.model_validate_json(recorded)

    @activity.defn
    def update_approval_message(self, outcome: ApprovalOutcome) -> None:
        """Rewrite the approval message in place (``chat.update``): the outcome line
        (who decided and what happened next, ``outcome_text``), and no buttons once the status is
        a decision, an expiry or a result. The message is rebuilt from the request as posted
        (recorded by ``post_approval_request``; runs started earlier send it along).

        ``escalated`` keeps the buttons and also replies in the message's thread mentioning the
        on-call user group (``<!subteam^S...>``, ``reply_broadcast`` so the channel sees it);
        that reply is posted once per request, found again through its metadata like the
        approval message. An update less final than one already written (a late ``escalated``
        after ``approved``) is skipped so the buttons never come back.

        Raises:
            ApplicationError: as ``post_approval_request`` (``message_not_found`` is permanent).
        """
        client = self._require_client()
        msg = outcome.message
        with _slack_errors(f"update of approval message {outcome.id}"):
            req = self._request(outcome)
            if not self._store.advance_status(req.request_id, _STATUS_RANK[outcome.status]):
                activity.logger.info("approval %s: a later status was already written; %s skipped",
                                     req.request_id, outcome.status)
                return
            client.chat_update(channel=msg.channel, ts=msg.ts, text=approval_text(req, outcome),
                               blocks=approval_blocks(req, outcome), metadata=approval_metadata(req))
            if outcome.status == "escalated":
                self._escalate(req, msg)

    @activity.defn
    def post_notice(self, notice: Notice) -> NoticeResult:
        """Post an escalation notice (``notice_blocks``); one message per ``event_key``.

        Notices for one target fold into one thread per (channel, target): the first
        starts it, later ones reply in it. The thread and the event are found in the local
        record, else in Slack (top-level notices of the last ``NOTICE_THREAD_WINDOW`` by
        metadata ``target``, then the thread's replies by ``event_key``); a thread whose root
        was deleted is replaced by a new one.

        Raises:
            ApplicationError: as ``post_approval_request``.
        """
        client = self._require_client()
        key = f"notice:{notice.event_key}"
        target = where(notice)  # the cluster's own thread for a target of the same name elsewhere
        with _slack_errors(f"notice {notice.event_key} to {notice.channel}"):
            rec = self._store.message(key)
            if rec is not None:
                return NoticeResult(channel=rec.channel, ts=rec.ts, thread_ts=rec.thread_ts, posted=False)
            channel = self._channel_id(notice.channel)
            is_this = lambda p: p.get("event_key") == notice.event_key  # noqa: E731
            thread_ts = self._store.thread(channel, target)
            if thread_ts is None:
                oldest = datetime.now(timezone.utc) - NOTICE_THREAD_WINDOW
                root = self._find_top_level(channel, NOTICE_EVENT_TYPE, lambda p: p.get("target") == target,
                                            oldest, oldest_match=True)
                if root is not None:
                    thread_ts = self._store.set_thread(channel, target, root["ts"])
            if thread_ts is not None:
                try:
                    found = self._find_in_thread(channel, thread_ts, NOTICE_EVENT_TYPE, is_this)
                except SlackApiError as e:
                    if e.response.get("error") != "thread_not_found":
                        raise
                    activity.logger.info("notice thread %s for %s is gone; starting a new one", thread_ts, target)
                    self._store.forget_thread(channel, target)
                    thread_ts, found = None, None
                if found is not None:
                    rec = self._store.record_message(key, channel, found["ts"],
                                                     None if found["ts"] == thread_ts else thread_ts)
                    return NoticeResult(channel=rec.channel, ts=rec.ts, thread_ts=rec.thread_ts, posted=False)
            kwargs: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
            resp = client.chat_postMessage(
                channel=channel, text=notice_text(notice), blocks=notice_blocks(notice),
                metadata=notice_metadata(notice), unfurl_links=False, unfurl_media=False, **kwargs,
            )
            rec = self._store.record_message(key, resp["channel"], resp["ts"], thread_ts)
            if thread_ts is None:
                self._store.set_thread(resp["channel"], target, resp["ts"])
        return NoticeResult(channel=rec.channel, ts=rec.ts, thread_ts=rec.thread_ts, posted=True)

    @activity.defn
    def resolve_approvers(self, inp: ResolveApproversInput) -> ResolveApproversResult:
        """Members of each user group (``usergroups.users.list``), asked at request time.

        A group Slack does not know or lets us not read (``no_such_subteam``...) is listed in
        ``errors`` as ``"S123: no_such_subteam"`` and has no members — nobody is an approver
        through it (fail closed).

        Raises:
            ApplicationError: ``SlackNotConfigured``; ``SlackPermanentError`` for token errors
                (invalid_auth, missing_scope...); ``SlackTemporaryError``.
        """
        client = self._require_client()
        members: dict[str, list[str]] = {}
        errors: list[str] = []
        for group in dict.fromkeys(inp.usergroups):
            with _slack_errors(f"usergroups.users.list {group}"):
                try:
                    resp = client.usergroups_users_list(usergroup=group)
                except SlackApiError as e:
                    err = classify(e)
                    if not err.non_retryable or err.error in AUTH_API_ERRORS:
                        raise
                    errors.append(f"{group}: {err.error}")
                    continue
                members[group] = [str(u) for u in resp.get("users", [])]
        return ResolveApproversResult(members=members, errors=errors)

    # ------------------------------------------------------------------ helpers

    def _require_client(self) -> WebClient:
        if self._client is None:
            raise ApplicationError(
                "Slack is not configured: set --slack-bot-token (SLACK_BOT_TOKEN)",
                type="SlackNotConfigured", non_retryable=True,
            )
        return self._client

    def _channel_id(self, ref: str) -> str:
        """A channel ID for ``ref`` (an ID, ``#name`` or ``name``), as conversations.history and
        chat.update need; names are looked up once with ``conversations.list`` and cached."""
        if CHANNEL_ID.match(ref):
            return ref
        name = ref.lstrip("#")
        cached = self._store.channel_id(name)
        if cached:
            return cached
        client = self._require_client()
        cursor = None
        for _ in range(HISTORY_MAX_PAGES):
            args: dict[str, Any] = {"types": "public_channel,private_channel", "exclude_archived": True,
                                    "limit": HISTORY_PAGE}
            if cursor:
                args["cursor"] = cursor
            resp = client.conversations_list(**args)
            for ch in resp.get("channels", []):
                if ch.get("name") == name:
                    self._store.set_channel_id(name, ch["id"])
                    return str(ch["id"])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        raise SlackPermanentError(
            f"channel #{name} not found (invite the bot to private channels, or give the channel ID)",
            error="channel_not_found",
        )

    def _history(self, channel: str, oldest: datetime) -> Iterator[dict[str, Any]]:
        client = self._require_client()
        cursor = None
        for _ in range(HISTORY_MAX_PAGES):
            args: dict[str, Any] = {"channel": channel, "include_all_metadata": True, "limit": HISTORY_PAGE,
                                    "oldest": f"{oldest.timestamp():.6f}"}
            if cursor:
                args["cursor"] = cursor
            resp = client.conversations_history(**args)
            yield from resp.get("messages", [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not resp.get("has_more") or not cursor:
                return

    def _find_top_level(self, channel: str, event_type: str, match: Callable[[dict[str, Any]], bool],
                        oldest: datetime, *, oldest_match: bool = False) -> dict[str, Any] | None:
        """A top-level message of ours whose metadata matches (newest first, or the oldest match)."""
        found = None
        for m in self._history(channel, oldest):
            p = _payload(m, event_type)
            if p is not None and match(p):
                found = m
                if not oldest_match:
                    break
        return found

    def _find_in_thread(self, channel: str, thread_ts: str, event_type: str,
                        match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """A message of the thread (root included) whose metadata matches. SlackApiError
        ``thread_not_found`` when the root is gone."""
        client = self._require_client()
        cursor = None
        for _ in range(HISTORY_MAX_PAGES):
            args: dict[str, Any] = {"channel": channel, "ts": thread_ts, "include_all_metadata": True,
                                    "limit": HISTORY_PAGE}
            if cursor:
                args["cursor"] = cursor
            resp = client.conversations_replies(**args)
            for m in resp.get("messages", []):
                p = _payload(m, event_type)
                if p is not None and match(p):
                    return m
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not resp.get("has_more") or not cursor:
                return None
        return None

    def _escalate(self, req: ApprovalRequest, msg: ApprovalMessage) -> None:
        key = f"escalation:{req.request_id}"
        if self._store.message(key) is not None:
            return
        found = self._find_in_thread(msg.channel, msg.ts, ESCALATION_EVENT_TYPE,
                                     lambda p: p.get("request_id") == req.request_id)
        if found is not None:
            self._store.record_message(key, msg.channel, found["ts"], msg.ts)
            return
        resp = self._require_client().chat_postMessage(
            channel=msg.channel, thread_ts=msg.ts, reply_broadcast=True, text=escalation_text(req),
            metadata={"event_type": ESCALATION_EVENT_TYPE, "event_payload": {"request_id": req.request_id}},
            unfurl_links=False, unfurl_media=False,
        )
        self._store.record_message(key, resp["channel"], resp["ts"], msg.ts)
