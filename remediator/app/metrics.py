"""Prometheus metrics of the HTTP intake, served as text on ``GET /metrics``.

The intake (remediator.app.intake) counts every request and every alert it handles here;
the counters live in prometheus-client's default registry so the worker process exposes
one ``/metrics`` page whatever else registers on it.

Names follow the Prometheus conventions (``_total`` counters, ``_seconds`` histograms).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from remediator.audit.brakes import REFUSALS

INTAKE_REQUESTS = Counter(
    "remediator_intake_requests_total",
    "Webhook requests answered by the intake, by HTTP status code.",
    ["code"],
)

ALERTS = Counter(
    "remediator_alerts_total",
    "Alerts received in webhook notifications, by alert status (firing/resolved) and what the intake did "
    "(started, attached, handed_off, duplicate, cooling_down, queued, paused, refused_namespace, unmatched, "
    "render_failed, unknown_cluster, resolved_signalled, resolved_no_run, failed).",
    ["status", "disposition"],
)

OTHER_ALERTNAME = "other"
"""The ``alertname`` label value of unmatched alerts whose name no playbook matches on: alert
names come from the monitored workloads, so one series each would grow the page without bound."""

ALERTS_UNMATCHED = Counter(
    "remediator_alerts_unmatched_total",
    "Firing alerts that no playbook matched, by alertname when a playbook matches on that alertname "
    '(alertname="X") but not on the alert\'s other labels, else alertname="other".',
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


BRAKE_REFUSALS = REFUSALS
"""remediator_brake_refusals_total, counted where the brakes decide (remediator.audit.brakes)."""

RUNS_WAITING = Gauge(
    "remediator_runs_waiting_for_slot",
    "Runs waiting for a concurrency slot (limits.concurrent_remediations), read from the audit store at scrape.",
)

PAUSED_SCOPES = Gauge(
    "remediator_paused_scopes",
    "Pause scopes in force (remediator pause), read from the audit store at scrape.",
)

FROZEN_RUNS = Gauge(
    "remediator_frozen_runs",
    "Runs frozen at a step boundary by a pause, read from the audit store at scrape.",
)


def refresh_brakes(waiting: int, paused: int, frozen: int) -> None:
    """Set the brake gauges before a scrape (their truth is the audit store, shared by every worker)."""
    RUNS_WAITING.set(waiting)
    PAUSED_SCOPES.set(paused)
    FROZEN_RUNS.set(frozen)
