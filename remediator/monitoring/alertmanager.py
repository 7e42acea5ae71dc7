"""Alertmanager's v2 HTTP API: is an alert still active?

The one module that queries Alertmanager. Caller: the ``alert_resolved`` health check
(activities/health.py ``check_alert_resolved``), through ``Alertmanager.find_active``.
(Alertmanager sends its notifications to remediator.app's intake; nothing here receives them.)

``find_active(fingerprint, alertname)`` asks ``GET /api/v2/alerts?active=true`` filtered by
``alertname="..."`` and looks for the fingerprint among the answer. Alertmanager's API lists no
resolved alert, so absent means resolved.

Errors:

* ``AlertmanagerUnavailable`` (a ``ClassifiedError``, retryable, ApplicationError type
  ``AlertmanagerUnavailable``): unreachable, HTTP 5xx, or an answer that is not its JSON;
* ``QueryRefused``: any other answer than 200 (a 4xx): asking again will not help. The health
  check turns it into a final failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from remediator.domain.errors import ALERTMANAGER_UNAVAILABLE, ClassifiedError

HTTP_TIMEOUT = 10.0
"""Seconds for one Alertmanager request."""

SHOWN = 300
"""At most this many characters of an error answer's body are quoted in a message."""


class AlertmanagerUnavailable(ClassifiedError):
    """Alertmanager could not answer this time (unreachable, 5xx, not its API): retry."""

    non_retryable = False
    error_type = ALERTMANAGER_UNAVAILABLE


class QueryRefused(Exception):
    """Alertmanager refused the query (HTTP 4xx); ``str()`` says so with its answer."""


@dataclass(frozen=True)
class AlertStatus:
    """What Alertmanager lists about one alert.

    ``alert``: the active alert with the fingerprint as Alertmanager lists it (``status``
    ``{state, silencedBy, inhibitedBy}``, ``endsAt``...), None when none is active;
    ``active_with_same_name``: how many active alerts were listed (those with the alertname).
    """

    alert: dict[str, Any] | None
    active_with_same_name: int

    @property
    def active(self) -> bool:
        return self.alert is not None

    @property
    def state(self) -> str:
        """``active``, ``suppressed`` or ``unprocessed``; ``active`` when not stated."""
        return ((self.alert or {}).get("status") or {}).get("state", "active")


class Alertmanager:
    """One Alertmanager. ``url``: its base URL (``http://alertmanager:9093``)."""

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def active_alerts(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts?active=true`` (``&filter=alertname="..."`` when given).

        Raises:
            AlertmanagerUnavailable: unreachable, HTTP 5xx, or not a JSON list.
            QueryRefused: another status than 200.
        """
        params: list[tuple[str, str]] = [("active", "true")]
        if alertname:
            params.append(("filter", f"alertname={json.dumps(alertname, ensure_ascii=False)}"))
        try:
            response = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise AlertmanagerUnavailable(f"Alertmanager at {self.url} unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise AlertmanagerUnavailable(
                f"Alertmanager answered HTTP {response.status_code}: {response.text.strip()[:SHOWN]}",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise QueryRefused(
                f"Alertmanager refused the query (HTTP {response.status_code}): {response.text.strip()[:SHOWN]}"
            )
        try:
            alerts = response.json()
        except ValueError as exc:
            raise AlertmanagerUnavailable("Alertmanager answered something that is not JSON") from exc
        if not isinstance(alerts, list):
            raise AlertmanagerUnavailable(f"Alertmanager answered a JSON {type(alerts).__name__}, not a list of alerts")
        return [a for a in alerts if isinstance(a, dict)]

    def find_active(self, fingerprint: str, alertname: str | None = None) -> AlertStatus:
        """The active alert with ``fingerprint`` among those named ``alertname``.

        Raises:
            AlertmanagerUnavailable, QueryRefused: as ``active_alerts``.
        """
        alerts = self.active_alerts(alertname)
        match = next((a for a in alerts if a.get("fingerprint") == fingerprint), None)
        return AlertStatus(alert=match, active_with_same_name=len(alerts))
