"""The engine's metrics, recorded from workflow code through the Temporal SDK's metric meter.

``workflow.metric_meter()`` reports through the worker's Runtime: with ``--metrics-listen``
they are served by the SDK's Prometheus exporter beside its own worker metrics (pollers, task
slots, schedule-to-start latencies), with the labels ``namespace``, ``task_queue`` and
``workflow_type``; without it they go nowhere. The SDK records nothing while a workflow task
replays history, so a run replayed after a worker restart is not counted twice. Nothing here
is a command: adding or changing a metric never breaks the replay of a run in flight.

Series (the exporter appends ``_total`` to counters; durations are seconds):

* ``remediator_runs_started_total{playbook}``: runs that began remediating (``run_started``);
* ``remediator_runs_ended_total{playbook, outcome}``;
* ``remediator_step_duration_seconds{action, result}``: one step, from its gate to its
  health check's verdict (``result``: succeeded, failed, skipped, refused);
* ``remediator_approvals_total{decision}`` and ``remediator_approval_wait_seconds{decision}``:
  ``decision`` approve, reject, expired, resolved;
* ``remediator_escalations_total{playbook}``: approval requests escalated to the on-call.

Label values come only from bounded sets: the loaded playbooks' names, the action registry,
the outcomes and decisions the engine defines. Never from alert labels.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

STEP_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
APPROVAL_BUCKETS = (30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
HISTOGRAM_BUCKETS = {
    "remediator_step_duration_seconds": STEP_BUCKETS,
    "remediator_approval_wait_seconds": APPROVAL_BUCKETS,
}
"""Bucket boundaries (seconds) of the engine's histograms, for the exporter's configuration."""


def run_started(playbook: str) -> None:
    workflow.metric_meter().create_counter(
        "remediator_runs_started", "Remediation runs that began, by playbook."
    ).add(1, {"playbook": playbook})


def run_ended(playbook: str, outcome: str) -> None:
    workflow.metric_meter().create_counter(
        "remediator_runs_ended", "Remediation runs that ended, by playbook and outcome."
    ).add(1, {"playbook": playbook, "outcome": outcome})


def step_done(action: str, result: str, took: timedelta) -> None:
    workflow.metric_meter().create_histogram_float(
        "remediator_step_duration_seconds", "Seconds one step took, by action and result."
    ).record(max(took.total_seconds(), 0.0), {"action": action, "result": result})


def approval_decided(decision: str, waited: timedelta) -> None:
    meter = workflow.metric_meter()
    meter.create_counter(
        "remediator_approvals", "Approval requests that ended, by decision (approve, reject, expired, resolved)."
    ).add(1, {"decision": decision})
    meter.create_histogram_float(
        "remediator_approval_wait_seconds", "Seconds an approval request waited for its end, by decision."
    ).record(max(waited.total_seconds(), 0.0), {"decision": decision})


def escalated(playbook: str) -> None:
    workflow.metric_meter().create_counter(
        "remediator_escalations", "Approval requests escalated to the on-call, by playbook."
    ).add(1, {"playbook": playbook})
