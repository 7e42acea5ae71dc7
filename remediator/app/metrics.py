"""Prometheus metrics of the HTTP intake, served as text on ``GET /metrics``.

The intake (remediator.app.intake) counts every request and every alert it handles here;
the counters live in prometheus-client's default registry so the worker process exposes
one ``/metrics`` page whatever else registers on it.

Names follow the Prometheus conventions (``_total`` counters, ``_seconds`` histograms).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

INTAKE_REQUESTS = Counter(
    "remediator_intake_requests_total",
    "Webhook requests answered by the intake, by HTTP status code.",
    ["code"],
)

ALERTS = Counter(
    "remediator_alerts_total",
    "Alerts received in webhook notifications, by alert status (firing/resolved) and what the intake did "
    "(started, attached, handed_off, duplicate, unmatched, render_failed, resolved_signalled, resolved_no_run, "
    "failed).",
    ["status", "disposition"],
)

ALERTS_UNMATCHED = Counter(
    "remediator_alerts_unmatched_total",
    "Firing alerts that no playbook matched, by alertname.",
    ["alertname"],
)

HANDOFF_SECONDS = Histogram(
    "remediator_intake_handoff_seconds",
    "Seconds one Temporal call of the intake took (signal-with-start for a firing alert, signal for a "
    "resolved one), successful or not.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def render_latest() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format: ``(body, content_type)``."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
