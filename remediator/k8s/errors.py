"""How Kubernetes API errors are classified.

Used by remediator.k8s.client, which wraps every API call in ``api_errors(...)``.

Errors by reason, as the API server names them (``NotFound``, ``Conflict``,
``TooManyRequests``...), apart from what retrying can do, as kopf separates its
``_cogs/clients/errors.py`` from its permanent/temporary errors:

* ``KubePermanentError`` - 400, 401, 403, 404, 422 and other 4xx: the request itself is
  wrong or refused, retrying cannot help (``BadRequest``, ``Unauthorized``, ``Forbidden``,
  ``NotFound``, ``Invalid``);
* ``KubeTemporaryError`` - 409, 429, 5xx, connection errors and timeouts: retry with a
  delay, Retry-After honoured (``Conflict``, ``TooManyRequests``, ``ServerError``,
  ``Unreachable``);
* ``SafetyRefusal`` - an action refused before anything was sent because it could hurt
  the cluster (paused rollout, no history, unmanaged pods...).

Code catches the reason (``except NotFound``); at the activity boundary every one becomes a
``temporalio.exceptions.ApplicationError`` whose ``type`` is its retry class
(``KubePermanentError`` / ``KubeTemporaryError`` / ``SafetyRefusal``, remediator.domain.errors),
with the original exception chained as the cause.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from remediator.domain.errors import (
    DRAIN_TIMEOUT,
    KUBE_PERMANENT,
    KUBE_TEMPORARY,
    NON_RETRYABLE_KUBE,
    SAFETY_REFUSAL,
    ClassifiedError,
)

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 410, 413, 415, 422})
"""HTTP statuses after which the same request can never succeed."""

TEMPORARY_STATUSES = frozenset({409, 429})
"""4xx statuses that may succeed later (conflict on resourceVersion, API throttling / PDB);
every 5xx is temporary too."""

__all__ = ["DRAIN_TIMEOUT", "NON_RETRYABLE_KUBE"]


class KubeError(ClassifiedError):
    """Base of the classified Kubernetes API errors. ``type_name`` is the ApplicationError type;
    ``causes``: the ``reason`` of each cause in the Status the API server sent
    (``NamespaceTerminating``, ``DisruptionBudget``...)."""

    causes: tuple[str, ...] = ()


class KubePermanentError(KubeError):
    """404, 403, 401, 400, 422...: retrying the same request cannot help."""

    non_retryable = True
    error_type = KUBE_PERMANENT


class KubeTemporaryError(KubeError):
    """409, 429, 5xx, connection errors: retry after a delay."""

    non_retryable = False
    error_type = KUBE_TEMPORARY


class SafetyRefusal(KubeError):
    """An action refused for safety before anything was changed (kubectl's own refusals)."""

    non_retryable = True
    error_type = SAFETY_REFUSAL


class BadRequest(KubePermanentError):
    """400."""


class Unauthorized(KubePermanentError):
    """401: the credentials were refused."""


class Forbidden(KubePermanentError):
    """403: RBAC refused it, or the namespace is terminating."""


class NotFound(KubePermanentError):
    """404: no such object (or resource)."""


class Invalid(KubePermanentError):
    """422: the object as sent fails validation."""


class Conflict(KubeTemporaryError):
    """409: the object changed since it was read (resourceVersion), or already exists."""


class TooManyRequests(KubeTemporaryError):
    """429: throttled, or an eviction a PodDisruptionBudget does not allow now."""


class ServerError(KubeTemporaryError):
    """5xx."""


class Unreachable(KubeTemporaryError):
    """The API server could not be reached, or did not answer in time."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: Invalid,
    429: TooManyRequests,
}


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


def _causes(exc: ApiException) -> tuple[str, ...]:
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
    try:
        status = json.loads(body) if body else {}
    except ValueError:
        return ()
    causes = ((status.get("details") or {}).get("causes") or []) if isinstance(status, dict) else []
    return tuple(str(c.get("reason") or c.get("type") or "") for c in causes if isinstance(c, dict))


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(exc: BaseException, what: str = "") -> KubeError:
    """Map an exception from the kubernetes client to its reason (``NotFound``, ``Conflict``,
    ``TooManyRequests``, ``ServerError``, ``Unreachable``...), each a ``KubePermanentError`` or a
    ``KubeTemporaryError``.

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
        if status == 0:
            return Unreachable(f"{prefix}cannot reach the Kubernetes API server: {exc.reason or exc}")
        reason = _BY_STATUS.get(status)
        if reason is None:
            reason = ServerError if status >= 500 else (KubeTemporaryError if status in TEMPORARY_STATUSES else KubePermanentError)
        err = reason(text, status=status, retry_after=None if reason.non_retryable else _retry_after(exc))
        err.causes = _causes(exc)
        return err
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return Unreachable(f"{prefix}cannot reach the Kubernetes API server: {exc}")
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


