"""The monitoring of remediator itself: the Prometheus rules (deploy/prometheus/remediator-rules.yml,
checked and unit-tested with promtool) and the Grafana dashboard (deploy/grafana/remediator-dashboard.json).

Every expression may name only the series remediator serves: the intake's ``/metrics``
(remediator/app/metrics.py) and the Temporal SDK exporter's (workflows/metrics.py and the SDK's
own worker series), so a renamed metric breaks this test rather than a panel or an alert in silence.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.support import debian_binary

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "remediator-rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "remediator-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "remediator-dashboard.json"

ALERTS = {
    "RemediatorWorkerNotPolling": "critical",
    "RemediatorRunsNeedHuman": "warning",
    "RemediatorIntakeErrors": "critical",
    "RemediatorAlertsFailedHandoff": "warning",
    "RemediatorRunsWaitingForSlot": "warning",
    "RemediatorPaused": "info",
}


def _histogram(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


ALLOWED_SERIES = {
    # the intake's GET /metrics (prometheus_client)
    "remediator_intake_requests_total",
    "remediator_alerts_total",
    "remediator_alerts_unmatched_total",
    *_histogram("remediator_intake_handoff_seconds"),
    "remediator_brake_refusals_total",
    "remediator_runs_waiting_for_slot",
    "remediator_paused_scopes",
    "remediator_frozen_runs",
    # the worker's --metrics-listen (Temporal SDK exporter): the engine's series
    "remediator_runs_started_total",
    "remediator_runs_ended_total",
    *_histogram("remediator_step_duration_seconds"),
    "remediator_approvals_total",
    *_histogram("remediator_approval_wait_seconds"),
    "remediator_escalations_total",
    # ... and the SDK's worker series
    "temporal_num_pollers",
    "temporal_worker_task_slots_available",
    *_histogram("temporal_workflow_task_schedule_to_start_latency_seconds"),
    *_histogram("temporal_activity_schedule_to_start_latency_seconds"),
    "temporal_request_failure_total",
}

METRIC_NAME = re.compile(r"\b(?:remediator|temporal)_[a-z_]+")


def _unknown_series(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr)) - ALLOWED_SERIES


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, cwd=ROOT)


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [g["name"] for g in groups] == ["remediator"]
    return groups[0]["rules"]


def _dashboard_targets() -> list[tuple[str, dict]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


# --------------------------------------------------------------------------- rules


def test_rules_pass_promtool_check():
    promtool = debian_binary("promtool", "prometheus")
    result = _run(promtool, "check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_rules_unit_tests_pass_promtool():
    promtool = debian_binary("promtool", "prometheus")
    result = _run(promtool, "test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_rules_are_the_documented_alerts_with_severity_for_and_annotations():
    rules = _rules()
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == ALERTS
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert not _unknown_series(rule["expr"]), (rule["alert"], _unknown_series(rule["expr"]))
        assert METRIC_NAME.search(rule["expr"]), rule["alert"]


def test_rule_unit_tests_see_every_alert_fire_and_not_fire():
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    fired: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
        for series in group["input_series"]:
            assert not _unknown_series(series["series"]), series["series"]
    assert fired == set(ALERTS)
    assert silent == set(ALERTS)


# --------------------------------------------------------------------------- dashboard


def test_dashboard_is_importable_and_uses_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "remediator"
    assert dashboard["schemaVersion"] == 39
    assert dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_exprs_name_only_served_series():
    targets = _dashboard_targets()
    assert len(targets) >= 15
    referenced: set[str] = set()
    for title, target in targets:
        expr = target["expr"]
        assert expr.strip(), title
        assert not _unknown_series(expr), (title, expr, _unknown_series(expr))
        referenced |= set(METRIC_NAME.findall(expr))
    # every series of the brief has a panel (the _sum/_count of histograms aside)
    assert {s for s in ALLOWED_SERIES if not s.endswith(("_sum", "_count"))} <= referenced


def test_dashboard_exprs_parse(tmp_path):
    """promtool parses each expression (as a recording rule), Grafana's interval variables set to 5m."""
    promtool = debian_binary("promtool", "prometheus")
    rules = [
        {
            "record": f"dashboard:target_{i}",
            "expr": target["expr"].replace("$__rate_interval", "5m").replace("$__interval", "5m"),
        }
        for i, (_, target) in enumerate(_dashboard_targets())
    ]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout
