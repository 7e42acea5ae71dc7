"""Prometheus' HTTP API: one instant query, and the verdict of its samples against a threshold.

The one module that talks to Prometheus. Callers: the ``promql`` health check
(activities/health.py ``check_promql``) and the ``promql`` evidence (activities/diagnosis.py
``diagnose_promql``), both through ``Prometheus.evaluate``.

* ``Prometheus(url).query(q)``: ``GET /api/v1/query?query=q``, the ``data`` of a successful
  answer (``{"resultType": ..., "result": ...}``);
* ``judge(check, data)``: every sample of an instant vector (or the scalar) must satisfy
  ``<op> threshold`` (a ``PromQLCheck``); an empty result passes only with ``on_empty: pass``.

Errors:

* ``PrometheusUnavailable`` (a ``ClassifiedError``, retryable, ApplicationError type
  ``PrometheusUnavailable``): Prometheus unreachable, answering 5xx/422 or something that is not
  its API - it may answer next time;
* ``QueryRejected``: Prometheus answered and would answer the same again - a query it rejects
  (HTTP 400 ``bad_data``, with its own error text) or a result that is neither an instant vector
  nor a scalar. The activities turn it into a final failure (health) or evidence not gathered.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from remediator.domain.errors import PROMETHEUS_UNAVAILABLE, ClassifiedError
from remediator.domain.playbook import PromQLCheck

HTTP_TIMEOUT = 10.0
"""Seconds for one Prometheus request."""

NOT_CONFIGURED = "the promql check needs a Prometheus: set --prometheus-url (REMEDIATOR_PROMETHEUS_URL)"
"""Why a ``promql`` check or evidence cannot run when no Prometheus URL is configured."""

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
"""The comparison of each ``op`` a check may name (sample ``op`` threshold)."""

LISTED = 5
"""At most this many failing samples are named in a verdict's message."""


class PrometheusUnavailable(ClassifiedError):
    """Prometheus could not answer this time (unreachable, 5xx/422, not its API): retry."""

    non_retryable = False
    error_type = PROMETHEUS_UNAVAILABLE


class QueryRejected(Exception):
    """Prometheus answered and will answer the same again: the query is invalid, or its result
    is not an instant vector or scalar. ``str()`` is the message for people."""


@dataclass(frozen=True)
class Verdict:
    """The samples judged against the threshold. ``passed``: every sample satisfies it (an empty
    result: ``on_empty == "pass"``); ``observed``: ``samples`` [{metric, value}], ``op``,
    ``threshold``."""

    passed: bool
    message: str
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> list[dict[str, Any]]:
        return self.observed.get("samples") or []


def format_value(value: float) -> str:
    """A sample value as Prometheus prints it: ``3``, ``0.5``, ``NaN``, ``+Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def series(metric: dict[str, str]) -> str:
    """A sample's labels as Prometheus prints them: ``name{a="b"}``."""
    name = metric.get("__name__", "")
    labels = ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}"


class Prometheus:
    """One Prometheus server. ``url``: its base URL (``http://prometheus:9090``)."""

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, query: str) -> dict[str, Any]:
        """``GET /api/v1/query``: the ``data`` of the answer (``resultType``, ``result``).

        Raises:
            PrometheusUnavailable: unreachable, an answer that is not the API's JSON, or a
                failure other than a rejected query (5xx, 422 execution errors, timeouts).
            QueryRejected: the query is invalid (HTTP 400 / ``bad_data``), with Prometheus'
                own error text.
        """
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} unreachable: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or "status" not in payload:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} answered HTTP {response.status_code} without its API's JSON",
                status=response.status_code,
            )
        if payload["status"] != "success":
            error = f"{payload.get('errorType', 'error')}: {payload.get('error', '')}"
            if response.status_code == 400 or payload.get("errorType") == "bad_data":
                raise QueryRejected(f"Prometheus rejected the query {query!r}: {error}")
            raise PrometheusUnavailable(
                f"Prometheus query {query!r} failed (HTTP {response.status_code}): {error}",
                status=response.status_code,
            )
        return payload.get("data") or {}

    def evaluate(self, check: PromQLCheck) -> Verdict:
        """``query`` then ``judge``.

        Raises:
            PrometheusUnavailable, QueryRejected: as ``query`` and ``judge``.
        """
        return judge(check, self.query(check.query))


def judge(check: PromQLCheck, data: dict[str, Any]) -> Verdict:
    """Every sample of ``data`` (an instant query's answer) against ``check.op check.threshold``.

    Messages: ``all 3 samples >= 3``; ``2 of 3 samples not > 0: name{a="b"} = 1, ...`` (at most
    5 named); ``query 'q' returned no samples (on_empty: fail)``.

    Raises:
        QueryRejected: the result is neither an instant vector nor a scalar.
    """
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        samples = [({}, result)]
    elif result_type == "vector":
        samples = [(s.get("metric") or {}, s.get("value")) for s in result or []]
    else:
        raise QueryRejected(f"query {check.query!r} returned a {result_type}; an instant vector or scalar is needed")
    observed = {
        "samples": [{"metric": m, "value": v[1] if v else None} for m, v in samples],
        "op": check.op,
        "threshold": check.threshold,
    }
    condition = f"{check.op} {format_value(check.threshold)}"
    if not samples:
        return Verdict(
            passed=check.on_empty == "pass",
            message=f"query {check.query!r} returned no samples (on_empty: {check.on_empty})",
            observed=observed,
        )
    compare = OPS[check.op]
    failing = []
    for metric, value in samples:
        number = float(value[1])  # Prometheus sends "NaN", "+Inf" as strings float() reads
        if not compare(number, check.threshold):
            failing.append(f"{series(metric)} = {format_value(number)}")
    if failing:
        return Verdict(
            passed=False,
            message=f"{len(failing)} of {len(samples)} samples not {condition}: " + ", ".join(failing[:LISTED])
            + (" ..." if len(failing) > LISTED else ""),
            observed=observed,
        )
    return Verdict(passed=True, message=f"all {len(samples)} samples {condition}", observed=observed)
