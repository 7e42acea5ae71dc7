"""End to end, exactly as ``make demo`` runs it: emulated cluster, embedded Temporal (SQLite),
real Prometheus evaluating the kube-prometheus KubePodCrashLooping rule, real Alertmanager
delivering to the intake, the shipped playbook rolling the bad release back, the alert
resolving, and the audit timeline at the end."""

from __future__ import annotations

import shutil

import pytest

from remediator.audit import AuditStore

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
        reason="needs Debian's prometheus and prometheus-alertmanager (make system-deps)",
    ),
]


def test_demo_heals_the_crashlooping_deployment_from_a_real_alert(tmp_path, capsys):
    from remediator.demo import run_demo

    state = tmp_path / "demo"
    code = run_demo(state, timeout=240)
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
    # The readable timeline was printed at the end of the demo.
    assert "audit trail" in out and "rollback" in out
