"""Tests of the audit trail (remediator.audit), its rendering (remediator.audit.view) and the
``audit_write`` activity run by a real Temporal worker on the dev server."""

from __future__ import annotations

import json
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from temporalio import workflow

# The sandbox re-imports this module to run AuditTwiceWorkflow: everything else passes through.
with workflow.unsafe.imports_passed_through():
    import pytest
    from rich.console import Console
    from temporalio.common import RetryPolicy
    from temporalio.worker import Worker

    from activities.audit import AuditActivities
    from remediator.audit.store import (
        AuditEventInvalid,
        SCHEMA_VERSION,
        AuditSchemaError,
        AuditStore,
        format_time,
        parse_time_bound,
    )
    from remediator.audit.view import render_intake, render_run, render_runs, run_as_dict
    from remediator.domain.messages import AlertRef, AuditEvent, AuditWriteInput, RunInfo

T0 = datetime(2026, 11, 21, 5, 37, 15, 250000, tzinfo=UTC)
RESTART_BODY = {
    "spec": {
        "template": {
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-21T05:37:16Z"}
            }
        }
    }
}


def alert_ref(
    fingerprint: str = "32c16fb6eca3387b", alertname: str = "KubePodCrashLooping"
) -> AlertRef:
    return AlertRef(
        fingerprint=fingerprint,
        starts_at=datetime(2026, 11, 21, 5, 37, 14, 576395, tzinfo=UTC),
        status="firing",
        labels={"alertname": alertname, "namespace": "prod", "deployment": "checkout"},
    )


def run_info(
    run_id: str,
    *,
    started: datetime = T0,
    outcome: str = "running",
    ended: datetime | None = None,
    alertname: str = "KubePodCrashLooping",
    target: str = "deployment/prod/checkout",
    playbook: str = "restart-crashlooping",
    simulate: bool = False,
) -> RunInfo:
    return RunInfo(
        run_id=run_id,
        workflow_id="remediation/" + target,
        alertname=alertname,
        namespace="prod",
        target=target,
        playbook=playbook,
        playbook_path="playbooks/restart-crashlooping.yaml",
        playbook_sha256="1a2b3c4d5e6f7a8b9c0d" + "0" * 44,
        simulate=simulate,
        started_at=started,
        outcome=outcome,
        ended_at=ended,
    )


def start_events(alert: AlertRef, started: datetime = T0) -> list[AuditEvent]:
    """Events as workflows/remediation.py writes them at the start of a run."""
    return [
        AuditEvent(
            key="run_started",
            at=started,
            kind="run_started",
            message="remediation of deployment/prod/checkout with playbook restart-crashlooping",
            data={"steps": ["restart", "scale-up"]},
        ),
        AuditEvent(
            key=f"alert/{alert.dedup_key}",
            at=started,
            kind="alert",
            message=f"alert {alert.alertname} firing",
            data={
                "dedup_key": alert.dedup_key,
                "status": "firing",
                "disposition": "started",
                "playbook": "restart-crashlooping",
                "alert": alert.model_dump(mode="json"),
            },
        ),
    ]


def step_events(started: datetime = T0) -> list[AuditEvent]:
    return [
        AuditEvent(
            key="decision/0",
            at=started + timedelta(milliseconds=300),
            kind="decision",
            message="remediate: last rollout 3h ago",
            data={"decision": "remediate", "reason": "no rollout in the last 30m, not paused"},
        ),
        AuditEvent(
            key="step/0/intent",
            at=started + timedelta(milliseconds=400),
            kind="step_intent",
            message="step 1 restart: rollout restart deployment/prod/checkout",
            data={"step": 0, "action": "rollout_restart", "params": {}},
        ),
        AuditEvent(
            key="step/0/attempt/1/mutation",
            at=started + timedelta(seconds=1.2),
            kind="mutation",
            message="restarted deployment/prod/checkout",
            data={
                "changed": True,
                "requests": [
                    {
                        "method": "PATCH",
                        "path": "/apis/apps/v1/namespaces/prod/deployments/checkout",
                        "content_type": "application/strategic-merge-patch+json",
                        "body": RESTART_BODY,
                    }
                ],
                "resource_version_before": "1234",
                "resource_version_after": "1240",
            },
        ),
        AuditEvent(
            key="step/0/attempt/1/health/1",
            at=started + timedelta(seconds=9.8),
            kind="health",
            message="rollout_status: failed: 1 of 3 updated replicas are available",
            data={"check": "rollout_status", "healthy": False, "final": False},
        ),
        AuditEvent(
            key="step/0/attempt/1/health/2",
            at=started + timedelta(seconds=75.5),
            kind="health",
            message='rollout_status: passed: deployment "checkout" successfully rolled out',
            data={"check": "rollout_status", "healthy": True},
        ),
        AuditEvent(
            key="outcome",
            at=started + timedelta(seconds=190),
            kind="outcome",
            message="healed: every step succeeded and the alert resolved",
            data={"outcome": "healed", "reason": "every step succeeded and the alert resolved"},
        ),
    ]


def full_run(store: AuditStore, run_id: str, **kw) -> None:
    started = kw.pop("started", T0)
    alert = kw.pop("alert", alert_ref())
    store.write(
        AuditWriteInput(
            run_id=run_id,
            run=run_info(run_id, started=started, **kw),
            events=start_events(alert, started),
        )
    )
    outcome = kw.pop("outcome", "healed")
    store.write(
        AuditWriteInput(
            run_id=run_id,
            run=run_info(
                run_id,
                started=started,
                outcome=outcome,
                ended=started + timedelta(seconds=190),
                **kw,
            ),
            events=step_events(started),
        )
    )


@pytest.fixture
def store(tmp_path):
    s = AuditStore(tmp_path / "state" / "audit.db")
    yield s
    s.close()


def raw(store: AuditStore) -> sqlite3.Connection:
    """A second connection to the same file, as another process or a person would open it."""
    return sqlite3.connect(store.path, isolation_level=None)


# --------------------------------------------------------------------------- writes


def test_schema_versioned_and_wal(store):
    conn = raw(store)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "runs",
        "events",
        "intake",
    }


def test_reopen_keeps_data_and_newer_schema_refused(tmp_path):
    path = tmp_path / "audit.db"
    s = AuditStore(path)
    full_run(s, "run-a")
    s.close()
    s = AuditStore(path)
    assert [e.key for e in s.events("run-a")][:2] == [
        "run_started",
        "alert/32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00",
    ]
    s.close()
    sqlite3.connect(path, isolation_level=None).execute("PRAGMA user_version=7")
    with pytest.raises(
        AuditSchemaError,
        match="audit schema version 7 is newer than this remediator supports \\(2\\)",
    ):
        AuditStore(path)


def test_not_a_database_is_refused(tmp_path):
    path = tmp_path / "audit.db"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        AuditStore(path)


def test_same_events_twice_are_stored_once(store):
    inp = AuditWriteInput(
        run_id="run-a", run=run_info("run-a"), events=start_events(alert_ref()) + step_events()
    )
    store.write(inp)
    store.write(inp)
    keys = [e.key for e in store.events("run-a")]
    assert keys == [
        "run_started",
        "alert/32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00",
        "decision/0",
        "step/0/intent",
        "step/0/attempt/1/mutation",
        "step/0/attempt/1/health/1",
        "step/0/attempt/1/health/2",
        "outcome",
    ]
    assert raw(store).execute("SELECT count(*) FROM events").fetchone()[0] == 8
    mutation = store.events("run-a")[4]
    assert mutation.at == T0 + timedelta(seconds=1.2)
    assert mutation.data["requests"][0]["body"] == RESTART_BODY
    assert (
        raw(store).execute("SELECT at FROM events WHERE key='outcome'").fetchone()[0]
        == "2026-11-21T05:40:25.250000Z"
    )


def test_reused_key_keeps_the_first_write_and_never_fails(store, caplog):
    store.write(
        AuditWriteInput(run_id="run-a", run=run_info("run-a"), events=start_events(alert_ref()))
    )
    changed = AuditEvent(key="run_started", at=T0, kind="run_started", message="something else")
    extra = AuditEvent(key="later", at=T0, kind="decision", message="x")
    store.write(AuditWriteInput(run_id="run-a", events=[extra, changed]))
    events = store.events("run-a")
    assert [e.key for e in events] == [
        "run_started",
        "alert/32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00",
        "later",
    ]
    assert events[0].message != "something else"
    assert "already recorded with other content; the first write stays" in caplog.text


def test_a_version_1_database_is_migrated_in_place(tmp_path):
    path = tmp_path / "audit.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, alertname TEXT NOT NULL,
            namespace TEXT, target TEXT NOT NULL, playbook TEXT NOT NULL, playbook_path TEXT NOT NULL,
            playbook_sha256 TEXT NOT NULL, simulate INTEGER NOT NULL, started_at TEXT NOT NULL,
            outcome TEXT NOT NULL, ended_at TEXT);
        INSERT INTO runs VALUES ('run-old', 'remediation/deployment/prod/checkout', 'KubePodCrashLooping',
            'prod', 'deployment/prod/checkout', 'p', 'p.yaml', 'ab', 0, '2026-11-21T05:37:15.250000Z',
            'healed', '2026-11-21T05:40:25.250000Z');
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, key TEXT NOT NULL,
            at TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL, dedup_key TEXT,
            written_at TEXT NOT NULL, UNIQUE (run_id, key));
        CREATE TABLE intake (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL,
            message TEXT NOT NULL, playbook TEXT, run_id TEXT, alertname TEXT NOT NULL, fingerprint TEXT NOT NULL,
            starts_at TEXT NOT NULL, dedup_key TEXT NOT NULL, status TEXT NOT NULL, alert TEXT NOT NULL);
        PRAGMA user_version=1;
        """
    )
    conn.close()
    store = AuditStore(path)
    assert raw(store).execute("PRAGMA user_version").fetchone()[0] == 2
    old = store.get_run("run-old")
    assert old.outcome == "healed" and old.cooldown_until is None
    until = T0 + timedelta(hours=1)
    store.write(AuditWriteInput(run_id="run-old", run=run_info("run-old", outcome="healed").model_copy(
        update={"workflow_id": old.workflow_id, "alertname": old.alertname, "target": old.target, "playbook": "p",
                "playbook_path": "p.yaml", "playbook_sha256": "ab", "cooldown_until": until})))
    assert store.latest_run("remediation/deployment/prod/checkout").cooldown_until == until


def test_alert_event_needs_dedup_key(store):
    bad = AuditEvent(key="alert/x", at=T0, kind="alert", message="alert", data={"fingerprint": "x"})
    with pytest.raises(AuditEventInvalid, match="kind alert needs data.dedup_key"):
        store.write(AuditWriteInput(run_id="run-a", events=[bad]))
    assert store.events("run-a") == []


def test_run_upsert_updates_outcome_and_never_back_to_running(store):
    store.write(AuditWriteInput(run_id="run-a", run=run_info("run-a")))
    assert store.get_run("run-a").outcome == "running"
    assert store.get_run("run-a").ended_at is None
    end = T0 + timedelta(minutes=3)
    store.write(AuditWriteInput(run_id="run-a", run=run_info("run-a", outcome="healed", ended=end)))
    # a late duplicate of the start write (same input as the first) changes nothing
    store.write(AuditWriteInput(run_id="run-a", run=run_info("run-a")))
    row = store.get_run("run-a")
    assert (row.outcome, row.ended_at, row.started_at, row.simulate) == ("healed", end, T0, False)
    assert raw(store).execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_database_refuses_update_and_delete(store):
    full_run(store, "run-a")
    store.record_intake("unmatched", alert_ref(), "no playbook matches")
    conn = raw(store)
    intake_refused = "audit intake records are append-only: "
    run_frozen = "audit runs: only outcome and ended_at may change"
    refusals = {
        "UPDATE events SET message = 'edited'": "audit events are append-only: UPDATE refused",
        "DELETE FROM events": "audit events are append-only: DELETE refused",
        "UPDATE intake SET message = 'edited'": intake_refused + "UPDATE refused",
        "DELETE FROM intake": intake_refused + "DELETE refused",
        "DELETE FROM runs": "audit runs are append-only: DELETE refused",
        "UPDATE runs SET target = 'deployment/prod/other'": run_frozen,
        "UPDATE runs SET started_at = '2020-01-01T00:00:00.000000Z'": run_frozen,
    }
    for sql, message in refusals.items():
        with pytest.raises(sqlite3.IntegrityError, match=message):
            conn.execute(sql)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 8
    assert conn.execute("SELECT message FROM intake").fetchall() == [("no playbook matches",)]


def test_handled_by_uses_dedup_key_index(store):
    alert = alert_ref()
    assert store.handled_by(alert.dedup_key) is None
    full_run(store, "run-a", alert=alert)
    # a second run that attaches the same firing later does not take it over
    store.write(
        AuditWriteInput(run_id="run-b", events=start_events(alert, T0 + timedelta(hours=1)))
    )
    assert store.handled_by(alert.dedup_key) == "run-a"
    assert store.handled_by("32c16fb6eca3387b@2026-11-21T06:00:00+00:00") is None
    plan = (
        raw(store)
        .execute(
            "EXPLAIN QUERY PLAN SELECT run_id FROM events WHERE dedup_key = ? ORDER BY seq LIMIT 1",
            ("x",),
        )
        .fetchall()
    )
    assert "USING INDEX events_dedup_key" in " ".join(r[-1] for r in plan)


def test_a_firing_only_recorded_during_cooldown_is_not_handled(store):
    """Suppressed by a run's cooldown is not remediated: after the cooldown it may start one."""
    alert = alert_ref()
    store.write(
        AuditWriteInput(
            run_id="run-a",
            events=[
                AuditEvent(
                    key="00007-alert", at=T0, kind="alert", message="recorded, no new remediation: cooling down",
                    data={"dedup_key": alert.dedup_key, "status": "firing", "disposition": "cooldown"},
                )
            ],
        )
    )
    assert store.handled_by(alert.dedup_key) is None
    store.write(AuditWriteInput(run_id="run-b", events=start_events(alert, T0 + timedelta(hours=1))))
    assert store.handled_by(alert.dedup_key) == "run-b"


def test_record_intake_and_query(store):
    a = alert_ref("aaaa", "HighErrorRate")
    b = alert_ref("bbbb", "KubePodCrashLooping")
    store.record_intake("unmatched", a, "no playbook matches alertname=HighErrorRate", at=T0)
    store.record_intake(
        "render_failed",
        b,
        "playbook restart: target.name: 'deployment' is undefined",
        playbook="restart",
        at=T0 + timedelta(minutes=1),
    )
    store.record_intake(
        "duplicate",
        b,
        "already handled",
        playbook="restart",
        run_id="run-a",
        at=T0 + timedelta(minutes=2),
    )
    rows = store.intake_records()
    assert [(r.kind, r.alertname, r.playbook, r.run_id) for r in rows] == [
        ("duplicate", "KubePodCrashLooping", "restart", "run-a"),
        ("render_failed", "KubePodCrashLooping", "restart", None),
        ("unmatched", "HighErrorRate", None, None),
    ]
    assert rows[2].dedup_key == a.dedup_key
    assert rows[2].alert["labels"]["alertname"] == "HighErrorRate"
    assert [r.kind for r in store.intake_records(kind="unmatched")] == ["unmatched"]
    assert [r.kind for r in store.intake_records(alertname="KubePodCrashLooping")] == [
        "duplicate",
        "render_failed",
    ]
    assert [
        r.kind
        for r in store.intake_records(
            since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=2)
        )
    ] == ["render_failed"]


def test_concurrent_writers_and_readers_share_one_store(store):
    """The activity thread pool and the intake share one store: nothing lost, nothing doubled."""
    alerts = [alert_ref(f"fp{i:02d}") for i in range(16)]

    def work(i: int) -> str | None:
        inp = AuditWriteInput(
            run_id=f"run-{i:02d}",
            run=run_info(f"run-{i:02d}"),
            events=start_events(alerts[i]) + step_events(),
        )
        store.write(inp)
        store.write(inp)
        store.record_intake("duplicate", alerts[i], "already handled", run_id=f"run-{i:02d}")
        return store.handled_by(alerts[i].dedup_key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        handled = list(pool.map(work, range(16)))
    assert handled == [f"run-{i:02d}" for i in range(16)]
    conn = raw(store)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 16 * 8
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 16
    assert conn.execute("SELECT count(*) FROM intake").fetchone()[0] == 16


# --------------------------------------------------------------------------- queries


def test_get_run_by_prefix_and_errors(store):
    full_run(store, "7f3a9c1e-0001")
    full_run(store, "7f3a9c1e-0002", started=T0 + timedelta(hours=1))
    full_run(
        store, "b0b0b0b0-0001", started=T0 + timedelta(hours=2), target="deployment/prod/other"
    )
    assert store.get_run("7f3a9c1e-0002").run_id == "7f3a9c1e-0002"
    assert store.get_run("b0b").run_id == "b0b0b0b0-0001"
    assert store.get_run("remediation/deployment/prod/checkout").run_id == "7f3a9c1e-0002"
    with pytest.raises(
        LookupError,
        match="run ID prefix '7f3a' is ambiguous: it matches 7f3a9c1e-0001, 7f3a9c1e-0002; "
        "give more characters",
    ):
        store.get_run("7f3a")
    with pytest.raises(LookupError, match="no audited run matches 'ffff'"):
        store.get_run("ffff")
    with pytest.raises(LookupError, match="no run ID given"):
        store.get_run("  ")
    # LIKE wildcards are not wildcards here
    with pytest.raises(LookupError, match="no audited run matches '7f3a%'"):
        store.get_run("7f3a%")


def test_list_runs_filters_newest_first(store):
    full_run(store, "r1", started=T0)
    full_run(
        store,
        "r2",
        started=T0 + timedelta(hours=1),
        target="deployment/prod/other",
        outcome="failed",
    )
    full_run(
        store,
        "r3",
        started=T0 + timedelta(hours=2),
        playbook="scale-up",
        alertname="HighLatency",
        alert=alert_ref("cccc", "HighLatency"),
    )
    # r1 got a second alert with another name attached later
    store.write(
        AuditWriteInput(
            run_id="r1",
            events=[
                AuditEvent(
                    key="alert/dddd",
                    at=T0 + timedelta(seconds=30),
                    kind="alert",
                    message="alert attached",
                    data={
                        "dedup_key": "dddd@x",
                        "status": "firing",
                        "disposition": "attached",
                        "alert": alert_ref("dddd", "HighErrorRate").model_dump(mode="json"),
                    },
                )
            ],
        )
    )
    # r2 got one recorded with a flat AlertRef dump
    store.write(
        AuditWriteInput(
            run_id="r2",
            events=[
                AuditEvent(
                    key="alert/eeee",
                    at=T0 + timedelta(hours=1, seconds=30),
                    kind="alert",
                    message="alert attached",
                    data={"dedup_key": "eeee@x", "labels": {"alertname": "FlatAlert"}},
                )
            ],
        )
    )

    def ids(**kw):
        return [r.run_id for r in store.list_runs(**kw)]

    assert ids() == ["r3", "r2", "r1"]
    assert ids(limit=2) == ["r3", "r2"]
    assert ids(alertname="KubePodCrashLooping") == ["r2", "r1"]
    assert ids(alertname="HighErrorRate") == ["r1"]
    assert ids(alertname="HighLatency") == ["r3"]
    assert ids(alertname="FlatAlert") == ["r2"]
    assert ids(alertname="NoSuchAlert") == []
    assert ids(target="deployment/prod/other") == ["r2"]
    assert ids(playbook="scale-up") == ["r3"]
    assert ids(outcome="failed") == ["r2"]
    assert ids(outcome="healed") == ["r3", "r1"]
    assert ids(since=T0 + timedelta(hours=1)) == ["r3", "r2"]
    assert ids(until=T0 + timedelta(hours=1)) == ["r1"]
    assert ids(since=T0 + timedelta(minutes=30), until=T0 + timedelta(minutes=90)) == ["r2"]
    # a since given in another timezone means the same instant
    cet = datetime(2026, 11, 21, 7, 37, 15, 250000).astimezone().tzinfo
    assert ids(since=(T0 + timedelta(hours=2)).astimezone(cet)) == ["r3"]
    assert ids(namespace="prod", outcome="failed") == ["r2"]


def test_time_bounds():
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_time_bound("1h", now) == datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
    assert parse_time_bound("1h30m", now) == datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
    assert parse_time_bound("2026-11-21T05:00:00+02:00") == datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    assert parse_time_bound("2026-11-21T05:00:00Z") == datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
    with pytest.raises(
        ValueError,
        match="expected a duration such as 30m or 1h, or an RFC 3339 time such as "
        "2026-11-21T05:00:00Z, got 'yesterday'",
    ):
        parse_time_bound("yesterday")
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000000Z"


# --------------------------------------------------------------------------- rendering


def render(renderable) -> str:
    console = Console(record=True, width=100, color_system=None)
    console.print(renderable)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    return text


def test_render_run_timeline(store):
    full_run(store, "7f3a9c1e-5b6d-4e2f-9a1b-0c2d3e4f5a6b")
    out = render(render_run(store, "7f3a"))
    assert "SIMULATED" not in out
    lines = out.splitlines()

    def line_with(text):
        return next(line for line in lines if text in line)

    assert "7f3a9c1e-5b6d-4e2f-9a1b-0c2d3e4f5a6b" in line_with("Run ")
    assert "deployment/prod/checkout" in line_with("Target")
    assert line_with("Playbook").split()[1:5] == [
        "Playbook",
        "restart-crashlooping",
        "playbooks/restart-crashlooping.yaml",
        "sha256:1a2b3c4d5e6f",
    ]
    assert (
        "KubePodCrashLooping firing  32c16fb6eca3387b@2026-11-21T05:37:14.576395+00:00"
        in line_with("Alerts")
    )
    assert "2026-11-21 05:37:15Z" in line_with("Started")
    assert "2026-11-21 05:40:25Z  (took 3m10s)" in line_with("Ended")
    assert "healed  every step succeeded and the alert resolved" in line_with("Outcome")
    timeline = [line.rstrip() for line in lines[lines.index(line_with("TIME  KIND")) + 2 :]]
    assert timeline == [
        "   +0.0s  run_started  remediation of deployment/prod/checkout with playbook restart-crashlooping",
        "                       steps: restart, scale-up",
        "   +0.0s  alert        alert KubePodCrashLooping firing",
        '                       alertname="KubePodCrashLooping",deployment="checkout",namespace="prod"',
        "   +0.3s  decision     remediate: last rollout 3h ago",
        "                       because: no rollout in the last 30m, not paused",
        "   +0.4s  step_intent  step 1 restart: rollout restart deployment/prod/checkout",
        "                       rollout_restart",
        "   +1.2s  mutation     restarted deployment/prod/checkout",
        "                       PATCH /apis/apps/v1/namespaces/prod/deployments/checkout",
        "                       Content-Type: application/strategic-merge-patch+json",
        '                       {"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/resta',
        '                       rtedAt":"2026-11-21T05:37:16Z"}}}}}',
        "                       resourceVersion 1234 -> 1240",
        "   +9.8s  health       FAIL rollout_status: failed: 1 of 3 updated replicas are available",
        '+1m15.5s  health       PASS rollout_status: passed: deployment "checkout" successfully rolled out',
        "+3m10.0s  outcome      healed: every step succeeded and the alert resolved",
    ]
    # the body, unfolded, is exactly the JSON sent
    body = json.dumps(RESTART_BODY, separators=(",", ":"))
    assert "".join(line.strip() for line in timeline[11:13]) == body


def test_render_run_simulated_and_markup_is_literal(store):
    store.write(
        AuditWriteInput(
            run_id="sim-1",
            run=run_info("sim-1", simulate=True),
            events=[
                AuditEvent(
                    key="d",
                    at=T0 + timedelta(seconds=2),
                    kind="decision",
                    message="skip [bold]step[/bold] 2",
                    data={"reason": "[red]not[/red] needed"},
                ),
                AuditEvent(
                    key="m",
                    at=T0 + timedelta(seconds=3),
                    kind="mutation",
                    message="scale: already 3 replicas",
                    data={"changed": False, "requests": [], "resource_version_before": "1240"},
                ),
            ],
        )
    )
    out = render(render_run(store, "sim-1"))
    assert "SIMULATED CLUSTER: this run acted on a simulated cluster, not a real one" in out
    assert "skip [bold]step[/bold] 2" in out
    assert "because: [red]not[/red] needed" in out
    assert next(line for line in out.splitlines() if "Ended" in line).split()[1:] == [
        "Ended",
        "-",
        "│",
    ]
    lines = out.splitlines()
    i = lines.index(next(line for line in lines if "+3.0s" in line))
    assert [line.strip() for line in lines[i : i + 3]] == [
        "+3.0s  mutation  scale: already 3 replicas",
        "no change sent (already in the desired state)",
        "resourceVersion 1240",
    ]


def test_render_runs_and_intake_tables(store):
    full_run(store, "7f3a9c1e-0001")
    store.write(
        AuditWriteInput(
            run_id="b0b0b0b0-0002",
            run=run_info("b0b0b0b0-0002", started=T0 + timedelta(hours=1), simulate=True),
        )
    )
    out = render(render_runs(store.list_runs()))
    lines = out.splitlines()
    assert [line.split() for line in lines[0:7]] == [
        ["RUN", "STARTED", "(UTC)", "TOOK", "OUTCOME", "ALERTNAME", "/", "PLAYBOOK", "TARGET"],
        [lines[1].strip()],
        [
            "b0b0b0b0",
            "2026-11-21",
            "06:37:15",
            "-",
            "running",
            "KubePodCrashLooping",
            "deployment/prod/checkout",
        ],
        ["simulated", "restart-crashlooping"],
        [
            "7f3a9c1e",
            "2026-11-21",
            "05:37:15",
            "3m10s",
            "healed",
            "KubePodCrashLooping",
            "deployment/prod/checkout",
        ],
        ["restart-crashlooping"],
    ]
    assert set(lines[1].strip()) == {"─"}
    store.record_intake(
        "duplicate",
        alert_ref(),
        "already handled",
        playbook="restart",
        run_id="7f3a9c1e-0001",
        at=T0,
    )
    out = render(render_intake(store.intake_records()))
    assert [line.split() for line in out.splitlines()[2:4]] == [
        [
            "2026-11-21",
            "05:37:15",
            "duplicate",
            "KubePodCrashLooping",
            "32c16fb6eca3387b",
            "restart",
            "already",
            "handled",
        ],
        ["(run", "7f3a9c1e)"],
    ]


def test_run_as_dict(store):
    # the CLI imports the renderings from remediator.audit
    from remediator.audit.view import run_as_dict as from_audit

    full_run(store, "run-a")
    d = from_audit(store, "run-a")
    assert d == run_as_dict(store, "run-a")
    json.dumps(d)
    assert d["run"]["outcome"] == "healed"
    assert d["run"]["started_at"] == "2026-11-21T05:37:15.250000Z"
    assert [e["kind"] for e in d["events"]] == [
        "run_started",
        "alert",
        "decision",
        "step_intent",
        "mutation",
        "health",
        "health",
        "outcome",
    ]
    assert d["events"][4]["data"]["requests"][0]["method"] == "PATCH"


# --------------------------------------------------------------------------- through Temporal


@workflow.defn(sandboxed=True)
class AuditTwiceWorkflow:
    """Calls ``audit_write`` twice with the same input, as a retry after a lost completion would."""

    @workflow.run
    async def run(self, inp: AuditWriteInput) -> None:
        for _ in range(2):
            await workflow.execute_activity(
                "audit_write",
                inp,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )


async def test_audit_write_through_temporal_worker(temporal_env, store):
    client = temporal_env.client
    queue = f"audit-{uuid.uuid4()}"
    run_id = str(uuid.uuid4())
    inp = AuditWriteInput(
        run_id=run_id, run=run_info(run_id), events=start_events(alert_ref()) + step_events()
    )
    other = AuditWriteInput(
        run_id=run_id,
        events=[AuditEvent(key="run_started", at=T0, kind="run_started", message="changed")],
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[AuditTwiceWorkflow],
            activities=[AuditActivities(store).audit_write],
            activity_executor=pool,
        ):
            await client.execute_workflow(
                AuditTwiceWorkflow.run, inp, id=f"audit-test-{uuid.uuid4()}", task_queue=queue
            )
            # A key written again with other content never fails the caller: the first stays.
            await client.execute_workflow(
                AuditTwiceWorkflow.run, other, id=f"audit-test-{uuid.uuid4()}", task_queue=queue
            )
    events = store.events(run_id)
    assert [e.key for e in events] == [e.key for e in inp.events]
    assert events[0].message == inp.events[0].message
    assert events[1].data["dedup_key"] == alert_ref().dedup_key
    assert store.handled_by(alert_ref().dedup_key) == run_id
    assert (
        raw(store).execute("SELECT count(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()[0]
        == 8
    )
