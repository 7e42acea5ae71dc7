"""Slack's Web API client for remediator, and how its errors are classified.

The one module that builds slack-sdk's ``WebClient`` (kopf's habit: third-party clients in one
place); the Slack activities (activities/slack.py) and the interactivity handlers use it.

* ``make_client(token, api_url)``: a ``slack_sdk.WebClient`` with slack-sdk's rate-limit retry
  handler (it sleeps ``Retry-After`` as Slack asks), bounded, so a long wait becomes a Temporal
  retry with that delay instead of a blocked activity.
* ``classify``: slack-sdk and connection errors -> ``SlackPermanentError`` (retrying cannot help)
  or ``SlackTemporaryError`` (rate limit, 5xx, network).
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from remediator.domain.errors import ClassifiedError

RATE_LIMIT_MAX_WAIT = 10
"""Seconds slack-sdk may sleep in-process for a ``Retry-After``; longer waits fail the attempt
with ``SlackTemporaryError`` carrying that delay, so Temporal waits instead of a worker thread."""
RATE_LIMIT_RETRIES = 3

TEMPORARY_API_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org",
})
"""Slack ``error`` codes documented as transient; every other ``ok: false`` is permanent."""

AUTH_API_ERRORS = frozenset({
    "not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
    "no_permission", "missing_scope", "org_login_required", "ekm_access_denied",
})
"""Errors about the token itself: nothing posted or resolved with it can succeed."""


# --------------------------------------------------------------------------- errors


class SlackNotConfigured(Exception):
    """No bot token was configured; the message says which setting to set."""


class SlackError(ClassifiedError):
    """Base of the classified Slack errors. ``error``: Slack's code (``channel_not_found``);
    the ApplicationError's details are ``{"error", "status"}``."""

    def __init__(self, message: str, *, error: str | None = None, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.error = error

    def details(self) -> list[Any]:
        return [{"error": self.error, "status": self.status}]


class SlackPermanentError(SlackError):
    """invalid_auth, channel_not_found, not_in_channel, invalid_blocks...: retrying cannot help."""

    non_retryable = True


class SlackTemporaryError(SlackError):
    """Rate limited beyond slack-sdk's own retries, HTTP 5xx, connection errors: retry later."""

    non_retryable = False


SLACK_NON_RETRYABLE: tuple[str, ...] = ("SlackNotConfigured", SlackPermanentError.__name__)
"""ApplicationError types the workflow's RetryPolicy lists in ``non_retryable_error_types``."""


def _header(headers: Any, name: str) -> str | None:
    for k, v in dict(headers or {}).items():
        if k.lower() == name.lower():
            return v[0] if isinstance(v, list) else str(v)
    return None


def classify(exc: BaseException, what: str = "") -> SlackError:
    """Map an exception from slack-sdk to ``SlackPermanentError`` / ``SlackTemporaryError``.

    ``what`` prefixes the message (``"chat.postMessage to #oncall"``). ``SlackApiError``: HTTP 429
    or 5xx, or a code in ``TEMPORARY_API_ERRORS``, is temporary (``retry_after`` from the
    ``Retry-After`` header, seconds); any other ``ok: false`` is permanent, the message naming
    Slack's code and, for ``invalid_blocks``, its per-block errors. Connection errors and
    timeouts are temporary. Anything else (slack-sdk refusing its arguments, a bug) is permanent.
    """
    if isinstance(exc, SlackError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, SlackApiError):
        resp = exc.response
        status = int(getattr(resp, "status_code", 0) or 0)
        data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
        error = str(data.get("error") or f"HTTP {status}")
        detail = "; ".join(str(e) for e in data.get("errors", []) or [])
        text = f"{prefix}Slack answered {error}" + (f" ({detail})" if detail else "")
        if status == 429 or status >= 500 or error in TEMPORARY_API_ERRORS:
            ra = _header(getattr(resp, "headers", {}), "Retry-After")
            retry_after = float(ra) if ra and ra.strip().isdigit() else None
            return SlackTemporaryError(text, error=error, status=status, retry_after=retry_after)
        return SlackPermanentError(text, error=error, status=status)
    if isinstance(exc, (URLError, OSError, http.client.HTTPException)):
        return SlackTemporaryError(f"{prefix}cannot reach Slack: {exc}", error="connection_error")
    if isinstance(exc, SlackClientError):
        return SlackPermanentError(f"{prefix}{exc}", error="client_error")
    return SlackPermanentError(f"{prefix}{type(exc).__name__}: {exc}", error="unexpected")


# --------------------------------------------------------------------------- client


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack-sdk's ``RateLimitErrorRetryHandler`` (sleeps ``Retry-After`` then retries), except
    when Slack asks for more than ``max_wait`` seconds: then the 429 is returned to the caller,
    which fails the activity with that delay rather than holding a worker thread."""

    def __init__(self, max_retry_count: int = RATE_LIMIT_RETRIES, max_wait: float = RATE_LIMIT_MAX_WAIT) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        ra = _header(response.headers if response is not None else {}, "Retry-After")
        return ra is None or not ra.strip().isdigit() or int(ra) <= self.max_wait


def make_client(token: str | None, api_url: str = "https://slack.com/api/", timeout: int = 15) -> WebClient:
    """A WebClient for ``api_url`` (``--slack-api-url``) with the bot token ``token``.

    Retries inside slack-sdk only what is safe to repeat: HTTP 429 (Slack did not process the
    request; ``BoundedRateLimitRetryHandler``). Connection errors and 5xx are not retried here,
    because chat.postMessage is not idempotent — the activity fails with ``SlackTemporaryError``
    and its next attempt looks for the message before posting again. ``timeout``: seconds per
    HTTP request.

    Raises:
        SlackNotConfigured: no bot token.
    """
    if not token:
        raise SlackNotConfigured(
            "Slack is not configured: set --slack-bot-token (SLACK_BOT_TOKEN) to a bot token (xoxb-...)"
        )
    return WebClient(
        token=token,
        base_url=api_url,
        timeout=timeout,
        retry_handlers=[BoundedRateLimitRetryHandler()],
    )
