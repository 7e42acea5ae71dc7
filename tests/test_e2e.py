"""End to end, exactly as ``make demo`` runs it: emulated cluster, embedded Temporal (SQLite),
real Prometheus evaluating the kube-prometheus KubePodCrashLooping rule, real Alertmanager
delivering to the intake, the shipped playbook rolling the bad release back, the alert
resolving, and the audit timeline at the end."""

from __future__ import annotations

import pytest

from remediator.audit.store import AuditStore

# Debian's prometheus and prometheus-alertmanager (make system-deps): missing, the test fails.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("alerting_binaries")]


def test_demo_heals_both_releases_the_low_confidence_one_after_a_cli_approval(tmp_path, capsys):
    from remediator.sim.demo import run_demo

    state = tmp_path / "demo"
    code = run_demo(state, timeout=240, auto_approve=True)
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]

    store = AuditStore(state / "audit.db")
    runs = store.list_runs(target="deployment/prod/checkout")
    assert len(runs) == 1
    run = runs[0]
    assert run.outcome == "healed"
    assert run.alertname == "KubePodCrashLooping"
    assert run.playbook == "kube-pod-crashlooping"
    events = store.events(run.run_id)
    alert = next(e for e in events if e.kind == "alert")
    assert alert.data["alert"]["labels"]["namespace"] == "prod"
    mutations = [e for e in events if e.kind == "mutation" and e.data.get("changed")]
    assert len(mutations) == 1
    request = mutations[0].data["requests"][0]
    assert request["method"] == "PATCH" and request["content_type"] == "application/json-patch+json"
    assert any(e.kind == "health" and e.data.get("healthy") for e in events)
    assert all(e.data.get("simulated_cluster") for e in events)
    # High confidence from the evidence: nobody was asked.
    assert not any(e.kind == "approval" for e in events)
    assert [e.data["name"] for e in events if e.kind == "evidence"] == ["recent_rollout", "container_status", "kube_events"]

    # Scenario 2: an OOMKilled release of prod/cart; low confidence, the rollback waited for a
    # human and was approved from the CLI.
    (cart,) = store.list_runs(target="deployment/prod/cart")
    assert cart.outcome == "healed" and cart.alertname == "KubePodCrashLooping"
    events = store.events(cart.run_id)
    confidence = next(e for e in events if e.kind == "decision" and "confidence" in e.data)
    assert confidence.data["confidence"] == pytest.approx(0.6)
    approvals = [e for e in events if e.kind == "approval"]
    decided = [e for e in approvals if e.data.get("decision")]
    assert [(e.data["decision"], e.data["user_id"], e.data["via"]) for e in decided] == [("approve", "U0DEMO", "cli")]
    assert sum(1 for e in approvals if e.data.get("ts")) == 1  # one Slack message for the request
    first_mutation = next(i for i, e in enumerate(events) if e.kind == "mutation")
    assert events.index(decided[0]) < first_mutation  # nothing changed before the approval
    # The readable timelines were printed.
    assert "rollback" in out and "approved by U0DEMO" in out and "both healed" in out
    assert "confidence 0.60 is below 0.70" in out
