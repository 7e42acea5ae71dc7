"""How Kubernetes API errors are classified.

Used by remediator.k8s.client, which wraps every API call in ``api_errors(...)``.

Errors are classified by what retrying can do, as kopf does (kopf/_cogs/clients/errors.py):

* ``KubePermanentError`` - 400, 401, 403, 404, 422 and other 4xx: the request itself is
  wrong or refused, retrying cannot help;
* ``KubeTemporaryError`` - 409 (conflict), 429 (throttled), 5xx, connection errors and
  timeouts: retry with a delay (Retry-After is honoured);
* ``SafetyRefusal`` - an action refused before anything was sent because it could hurt
  the cluster (paused rollout, no history, unmanaged pods...).

At the activity boundary they become ``temporalio.exceptions.ApplicationError`` whose
``type`` is the class name, ``non_retryable`` set for permanent errors and refusals, and
the original exception chained as the cause, so the workflow's ``RetryPolicy`` can list
``NON_RETRYABLE_ERROR_TYPES``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from remediator.domain.errors import ClassifiedError

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 410, 413, 415, 422})
"""HTTP statuses after which the same request can never succeed."""

TEMPORARY_STATUSES = frozenset({409, 429})
"""4xx statuses that may succeed later (conflict on resourceVersion, API throttling / PDB);
every 5xx is temporary too."""

DRAIN_TIMEOUT = "DrainTimeout"
"""ApplicationError type of a drain whose evictions were still refused when its timeout ran out."""


class KubeError(ClassifiedError):
    """Base of the classified Kubernetes API errors. ``type_name`` is the ApplicationError type."""


class KubePermanentError(KubeError):
    """404, 403, 401, 400, 422...: retrying the same request cannot help."""

    non_retryable = True


class KubeTemporaryError(KubeError):
    """409, 429, 5xx, connection errors: retry after a delay."""

    non_retryable = False


class SafetyRefusal(KubeError):
    """An action refused for safety before anything was changed (kubectl's own refusals)."""

    non_retryable = True


NON_RETRYABLE_ERROR_TYPES: tuple[str, ...] = (
    KubePermanentError.__name__,
    SafetyRefusal.__name__,
    DRAIN_TIMEOUT,
)
"""ApplicationError types the workflow's RetryPolicy lists in ``non_retryable_error_types``."""

RETRYABLE_ERROR_TYPES: tuple[str, ...] = (KubeTemporaryError.__name__,)


# --------------------------------------------------------------------------- errors


def status_message(exc: ApiException) -> str:
    """The ``message`` of the ``Status`` object the API server sent, or the HTTP reason."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            return body.strip()[:500]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(exc.reason or "")


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(exc: BaseException, what: str = "") -> KubeError:
    """Map an exception from the kubernetes client to ``KubePermanentError`` / ``KubeTemporaryError``.

    ``what`` prefixes the message, e.g. ``"PATCH deployment prod/web"``. An existing
    ``KubeError`` is returned unchanged. Anything that is neither an ``ApiException`` nor a
    urllib3/OS-level connection error is treated as permanent: it is a bug or bad data, and
    retrying a mutation blindly is what this module exists to avoid.
    """
    if isinstance(exc, KubeError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        text = f"{prefix}{status} {exc.reason or ''}".rstrip() + f": {status_message(exc)}"
        if status in TEMPORARY_STATUSES or status >= 500 or status == 0:
            return KubeTemporaryError(text, status=status, retry_after=_retry_after(exc))
        return KubePermanentError(text, status=status)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return KubeTemporaryError(f"{prefix}cannot reach the Kubernetes API server: {exc}")
    return KubePermanentError(f"{prefix}{type(exc).__name__}: {exc}")


@contextmanager
def api_errors(what: str = "") -> Iterator[None]:
    """Turn client errors raised inside the block into ``ApplicationError``.

    ``KubeError`` subclasses (including ``SafetyRefusal``) raised in the block are converted
    as they are; ``ApiException`` and urllib3 errors are classified first. The original
    exception is chained as ``__cause__``. ``ApplicationError`` passes through untouched.
    """
    try:
        yield
    except ApplicationError:
        raise
    except KubeError as exc:
        raise exc.to_application_error() from exc
    except (ApiException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise classify(exc, what).to_application_error() from exc


def is_not_found(exc: BaseException) -> bool:
    """True for an ``ApiException`` with status 404."""
    return isinstance(exc, ApiException) and exc.status == 404
