"""Tests of the audit trail (remediator.audit), its rendering (remediator.audit.view) and the
``audit_write`` activity run by a real Temporal worker on the dev server.

The events written here are those real runs of the workflow wrote: the ``audit_write`` inputs
recorded in their histories (tests/histories/, recorded by tests/histories/record.py), made out
for the test's run IDs and times. ``test_the_recorded_runs_are_what_the_workflow_writes_now``
runs the real workflow again and checks that it still writes events of the same keys, kinds and
fields, so the fixtures cannot drift from what the workflow writes.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow

# The sandbox re-imports this module to run AuditTwiceWorkflow: everything else passes through.
with workflow.unsafe.imports_passed_through():
    import pytest
    from rich.console import Console
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import WorkflowHistory
    from temporalio.common import RetryPolicy
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Worker

    from activities.audit import AuditActivities
    from remediator.audit.store import (
        SCHEMA_VERSION,
        AuditEventInvalid,
        AuditSchemaError,
        AuditStore,
        format_time,
        parse_time_bound,
    )
    from remediator.audit.view import (
        render_intake,
        render_run,
        render_runs,
        run_as_dict,
    )
    from remediator.db import DatabaseError
    from remediator.domain.messages import AuditEvent, AuditWriteInput
    from tests.support import (
        SLACK,
        alert,
        alert_signal,
        playbook,
        start_run,
        wait_phase,
    )

HISTORIES = Path(__file__).parent / "histories"
HEALED = "v2-restart-healed"
"""restart, rollout_status passes, the alert resolves: healed, Slack notice (12 events)."""
NOT_HEALED = "v2-scale-rolled-back"
"""scale up by one, rollout_status passes, the alert keeps firing: not_healed (11 events)."""
REJECTED = "v2-reject"
"""approval always, rejected in Slack: needs_human."""
STORM = "v2-storm-then-cooldown"
"""alerts attached while running, resolved one by one, one more recorded during the cooldown."""
LATEST_HEALED = "v4-restart-healed"
"""The same scenario recorded by the workflow as it is now (the brakes)."""
T0 = datetime(2026, 11, 21, 5, 37, 15, 250000, tzinfo=UTC)
FIRST = "c0ffee@2026-11-21T05:00:00+00:00"
"""dedup key of the recorded runs' first alert."""


@functools.cache
def _recorded(name: str) -> tuple[AuditWriteInput, ...]:
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    writes = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name == "audit_write":
            [inp] = pydantic_data_converter.payload_converter.from_payloads(attrs.input.payloads, [AuditWriteInput])
            writes.append(inp)
    return tuple(writes)


def recorded(name: str = HEALED, run_id: str = "run-a", *, started: datetime = T0,
             relabel: dict[str, str] | None = None, **run: Any) -> list[AuditWriteInput]:
    """The ``audit_write`` inputs of a recorded run, in the order it wrote them, made out for
    ``run_id`` and shifted in time so that the run starts at ``started``.

    ``relabel``: text replaced everywhere (alert names, fingerprints, targets), as if the same run
    had been started by another alert or for another object. ``run``: RunInfo columns set on
    every write that carries them (``simulate``, ``playbook_path``...)."""
    writes = list(_recorded(name))
    delta = started - writes[0].run.started_at
    text = json.dumps([w.model_dump(mode="json") for w in writes])
    for old, new in (relabel or {}).items():
        text = text.replace(old, new)
    out = []
    # A run on a simulated cluster marks every event (workflows/trail.py AuditTrail.event).
    marks = {"simulated_cluster": True} if run.get("simulate") else {}
    for w in (AuditWriteInput.model_validate(d) for d in json.loads(text)):
        events = [e.model_copy(update={"at": e.at + delta, "data": {**e.data, **marks}}) for e in w.events]
        info = None
        if w.run is not None:
            info = w.run.model_copy(update={
                "run_id": run_id,
                "started_at": w.run.started_at + delta,
                "ended_at": w.run.ended_at + delta if w.run.ended_at else None,
                "cooldown_until": w.run.cooldown_until + delta if w.run.cooldown_until else None,
                **run,
            })
        out.append(w.model_copy(update={"run_id": run_id, "run": info, "events": events}))
    return out


def recorded_event(name: str, key: str) -> AuditEvent:
    """One event of a recorded run, by key (``00023-alert``)."""
    return next(e for w in _recorded(name) for e in w.events if e.key == key)


def full_run(store: AuditStore, run_id: str, name: str = HEALED, **kw: Any) -> list[AuditWriteInput]:
    """Write a recorded run for ``run_id`` as the workflow wrote it (see ``recorded``)."""
    writes = recorded(name, run_id, **kw)
    for w in writes:
        store.write(w)
    return writes


def keys(name: str = HEALED) -> list[str]:
    return [e.key for w in _recorded(name) for e in w.events]


@pytest.fixture
def store(tmp_path):
    s = AuditStore(tmp_path / "state" / "audit.db")
    yield s
    s.close()


def raw(store: AuditStore) -> sqlite3.Connection:
    """A second connection to the same file, as another process or a person would open it."""
    return sqlite3.connect(store.path, isolation_level=None)


# --------------------------------------------------------------------------- the fixtures are real


async def test_the_recorded_runs_are_what_the_workflow_writes_now(client, worker, audit):
    """The restart-healed scenario of tests/histories/record.py on today's workflow writes the
    events of the recorded run: same keys, kinds and data fields, in the same writes."""
    pb = playbook([{"name": "restart", "rollout_restart": {}, "health": {"rollout_status": {}, "timeout": "20s", "interval": "200ms"}}],
                  name="restart-healed", slack=SLACK, verification_window="2s")
    first = alert()
    handle = await start_run(client, worker, pb, first)
    await wait_phase(handle, "verifying")
    await handle.signal("alert", alert_signal(first.model_copy(update={"status": "resolved"}), pb))
    assert (await handle.result()).outcome == "healed"

    def shape(events) -> list[tuple[str, str, list[str]]]:
        return [(e.key, e.kind, sorted(e.data)) for e in events]

    assert shape(audit.events(handle.result_run_id)) == shape(e for w in _recorded(LATEST_HEALED) for e in w.events)


# --------------------------------------------------------------------------- writes


def test_schema_versioned_and_wal(store):
    conn = raw(store)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
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
    assert [e.key for e in s.events("run-a")][:2] == ["00001-run_started", "00002-alert"]
    s.close()
    sqlite3.connect(path, isolation_level=None).execute("PRAGMA user_version=7")
    with pytest.raises(
        AuditSchemaError,
        match="audit schema version 7 is newer than this remediator supports \\(4\\)",
    ):
        AuditStore(path)


def test_not_a_database_is_refused(tmp_path):
    path = tmp_path / "audit.db"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(DatabaseError, match="file is not a database"):
        AuditStore(path)


def test_same_events_twice_are_stored_once(store):
    """A retried or replayed ``audit_write`` sends the very same input again: stored once."""
    writes = recorded()
    for w in writes + writes:
        store.write(w)
    stored = store.events("run-a")
    assert [e.key for e in stored] == keys() == [
        "00001-run_started", "00002-alert", "00003-decision", "00004-step_intent", "00005-plan",
        "00006-mutation", "00007-health", "00008-decision", "00009-alert", "00010-decision",
        "00011-outcome", "00012-notice",
    ]
    assert raw(store).execute("SELECT count(*) FROM events").fetchone()[0] == 12
    sent = next(e for w in writes for e in w.events if e.key == "00006-mutation")
    mutation = stored[5]
    assert mutation.at == sent.at
    assert mutation.data["requests"] == sent.data["requests"]
    assert mutation.data["requests"][0]["content_type"] == "application/strategic-merge-patch+json"
    outcome = next(e for e in stored if e.key == "00011-outcome")
    assert raw(store).execute("SELECT at FROM events WHERE key='00011-outcome'").fetchone()[0] == format_time(outcome.at)


def test_reused_key_keeps_the_first_write_and_never_fails(store, caplog):
    first, second, *_ = recorded()
    store.write(first)
    changed = first.events[0].model_copy(update={"message": "something else"})
    store.write(second.model_copy(update={"events": [*second.events, changed]}))
    events = store.events("run-a")
    assert [e.key for e in events] == keys()[:7]
    assert events[0].message == "remediation of deployment/prod/checkout with playbook restart-healed"
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
    assert raw(store).execute("PRAGMA user_version").fetchone()[0] == 4
    old = store.get_run("run-old")
    assert old.outcome == "healed" and old.cooldown_until is None
    # The end of the run, as today's workflow writes it (outcome, ended_at, cooldown_until).
    final = recorded(run_id="run-old")[2].run
    until = T0 + timedelta(hours=1)
    store.write(AuditWriteInput(run_id="run-old", run=final.model_copy(
        update={"workflow_id": old.workflow_id, "playbook": "p", "playbook_path": "p.yaml", "playbook_sha256": "ab",
                "started_at": old.started_at, "cooldown_until": until})))
    assert store.latest_run("remediation/deployment/prod/checkout").cooldown_until == until


def test_alert_event_needs_dedup_key(store):
    started = recorded_event(HEALED, "00002-alert")
    bad = started.model_copy(update={"data": {k: v for k, v in started.data.items() if k != "dedup_key"}})
    with pytest.raises(AuditEventInvalid, match="kind alert needs data.dedup_key"):
        store.write(AuditWriteInput(run_id="run-a", events=[bad]))
    assert store.events("run-a") == []


def test_run_upsert_updates_outcome_and_never_back_to_running(store):
    first, _, final, _ = recorded()
    store.write(AuditWriteInput(run_id="run-a", run=first.run))
    assert store.get_run("run-a").outcome == "running"
    assert store.get_run("run-a").ended_at is None
    store.write(AuditWriteInput(run_id="run-a", run=final.run))
    # a late duplicate of the start write (same input as the first) changes nothing
    store.write(AuditWriteInput(run_id="run-a", run=first.run))
    row = store.get_run("run-a")
    assert (row.outcome, row.ended_at, row.started_at, row.simulate) == ("healed", final.run.ended_at, T0, False)
    assert row.cooldown_until == final.run.cooldown_until
    assert raw(store).execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_database_refuses_update_and_delete(store):
    full_run(store, "run-a")
    store.record_intake("unmatched", alert(), "no playbook matches")
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
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 12
    assert conn.execute("SELECT message FROM intake").fetchall() == [("no playbook matches",)]


def test_handled_by_uses_dedup_key_index(store):
    assert store.handled_by(FIRST) is None
    full_run(store, "run-a")
    # a second run that attaches the same firing later does not take it over
    store.write(recorded(run_id="run-b", started=T0 + timedelta(hours=1))[0])
    assert store.handled_by(FIRST) == "run-a"
    assert store.handled_by("c0ffee@2026-11-21T06:00:00+00:00") is None
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
    cooling = recorded_event(STORM, "00023-alert")
    assert cooling.data["disposition"] == "cooldown"
    store.write(AuditWriteInput(run_id="run-a", events=[cooling]))
    dedup_key = cooling.data["dedup_key"]
    assert store.handled_by(dedup_key) is None
    fingerprint = dedup_key.split("@")[0]
    store.write(recorded(run_id="run-b", started=T0 + timedelta(hours=1), relabel={"c0ffee": fingerprint})[0])
    assert store.handled_by(dedup_key) == "run-b"


def test_record_intake_and_query(store):
    a = alert(fingerprint="aaaa", alertname="HighErrorRate")
    b = alert(fingerprint="bbbb")
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

    def work(i: int) -> str | None:
        fingerprint = f"fp{i:02d}"
        writes = recorded(run_id=f"run-{i:02d}", relabel={"c0ffee": fingerprint})
        for w in writes + writes:
            store.write(w)
        store.record_intake("duplicate", alert(fingerprint=fingerprint), "already handled", run_id=f"run-{i:02d}")
        return store.handled_by(alert(fingerprint=fingerprint).dedup_key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        handled = list(pool.map(work, range(16)))
    assert handled == [f"run-{i:02d}" for i in range(16)]
    conn = raw(store)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 16 * 12
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 16
    assert conn.execute("SELECT count(*) FROM intake").fetchone()[0] == 16


# --------------------------------------------------------------------------- queries


def test_get_run_by_prefix_and_errors(store):
    full_run(store, "7f3a9c1e-0001")
    full_run(store, "7f3a9c1e-0002", started=T0 + timedelta(hours=1))
    full_run(store, "b0b0b0b0-0001", started=T0 + timedelta(hours=2), relabel={"prod/checkout": "prod/other"})
    assert store.get_run("7f3a9c1e-0002").run_id == "7f3a9c1e-0002"
    assert store.get_run("b0b").run_id == "b0b0b0b0-0001"
    # by workflow ID: its latest run (the recorded runs' IDs carry a suffix, see record.py)
    workflow_id = store.get_run("7f3a9c1e-0002").workflow_id
    assert workflow_id.startswith("remediation/deployment/prod/checkout-")
    assert store.get_run(workflow_id).run_id == "7f3a9c1e-0002"
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
    full_run(store, "r1", HEALED, started=T0)
    full_run(store, "r2", REJECTED, started=T0 + timedelta(hours=1))
    full_run(store, "r3", NOT_HEALED, started=T0 + timedelta(hours=2),
             relabel={"KubePodCrashLooping": "HighLatency", "prod/checkout": "prod/cart"})
    # r1 gets a second firing with another name attached while it runs, as the storm run did
    attached = recorded_event(STORM, "00003-alert")
    assert attached.data["disposition"] == "attached"
    relabelled = json.loads(attached.model_dump_json().replace("KubePodCrashLooping", "HighErrorRate"))
    store.write(AuditWriteInput(run_id="r1", events=[
        AuditEvent.model_validate({**relabelled, "key": "00013-alert", "at": T0 + timedelta(seconds=30)})
    ]))

    def ids(**kw):
        return [r.run_id for r in store.list_runs(**kw)]

    assert ids() == ["r3", "r2", "r1"]
    assert ids(limit=2) == ["r3", "r2"]
    assert ids(alertname="KubePodCrashLooping") == ["r2", "r1"]
    assert ids(alertname="HighErrorRate") == ["r1"]
    assert ids(alertname="HighLatency") == ["r3"]
    assert ids(alertname="NoSuchAlert") == []
    assert ids(target="deployment/prod/cart") == ["r3"]
    assert ids(playbook="reject") == ["r2"]
    assert ids(outcome="needs_human") == ["r2"]
    assert ids(outcome="healed") == ["r1"]
    assert ids(outcome="not_healed") == ["r3"]
    assert ids(since=T0 + timedelta(hours=1)) == ["r3", "r2"]
    assert ids(until=T0 + timedelta(hours=1)) == ["r1"]
    assert ids(since=T0 + timedelta(minutes=30), until=T0 + timedelta(minutes=90)) == ["r2"]
    # a since given in another timezone means the same instant
    cet = datetime(2026, 11, 21, 7, 37, 15, 250000).astimezone().tzinfo
    assert ids(since=(T0 + timedelta(hours=2)).astimezone(cet)) == ["r3"]
    assert ids(namespace="prod", outcome="needs_human") == ["r2"]


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


TIMELINE = [  # as `remediator audit show` prints the recorded run
    '+0.0s  run_started  remediation of deployment/prod/checkout with playbook restart-healed',
    '                    steps: restart',
    '+0.0s  alert        alert KubePodCrashLooping c0ffee firing since 2026-11-21T05:00:00+00:00',
    '                    alertname="KubePodCrashLooping",namespace="prod",pod="checkout-abc-xyz"',
    '+0.1s  decision     target deployment/prod/checkout: deployment prod/checkout: 3/3 ready, revision',
    '                    2, rolled out 2026-12-01T05:30:48Z',
    '+0.1s  step_intent  step 1 (restart): rollout_restart deployment/prod/checkout, then check',
    '                    rollout_status',
    '                    rollout_restart',
    '+0.1s  plan         restart every pod of deployment/prod/checkout:',
    '                    kubectl.kubernetes.io/restartedAt=2026-12-01T05:30:50Z on its pod template',
    '                    (kubectl rollout restart)',
    '                    precondition {"restartedAt":null}',
    '                    will send PATCH /apis/apps/v1/namespaces/prod/deployments/checkout',
    '                    {"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restarte',
    '                    dAt":"2026-12-01T05:30:50Z"}}}}}',
    '+0.1s  mutation     deployment.apps/checkout restarted',
    '                    PATCH /apis/apps/v1/namespaces/prod/deployments/checkout',
    '                    Content-Type: application/strategic-merge-patch+json',
    '                    {"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restarte',
    '                    dAt":"2026-12-01T05:30:50Z"}}}}}',
    '                    resourceVersion 80 -> 119',
    '+1.2s  health       PASS rollout_status: deployment "checkout" successfully rolled out',
    '+1.2s  decision     steps done; verifying for up to 2s that the alert resolves',
    '+1.3s  alert        alert KubePodCrashLooping c0ffee resolved',
    '+1.3s  decision     run ends healed: every step succeeded and the alert resolved',
    '+1.3s  outcome      healed: every step succeeded and the alert resolved',
    '+1.3s  notice       Slack notice (healed) posted: deployment/prod/checkout healed by playbook',
    '                    restart-healed',
]


def test_render_run_timeline(store):
    writes = full_run(store, "7f3a9c1e-5b6d-4e2f-9a1b-0c2d3e4f5a6b")
    out = render(render_run(store, "7f3a"))
    assert "SIMULATED" not in out
    lines = out.splitlines()

    def line_with(text):
        return next(line for line in lines if text in line)

    assert "7f3a9c1e-5b6d-4e2f-9a1b-0c2d3e4f5a6b" in line_with("Run ")
    assert "deployment/prod/checkout" in line_with("Target")
    assert line_with("Playbook").split()[1:5] == ["Playbook", "restart-healed", "restart-healed.yaml", "sha256:abababababab"]
    assert f"KubePodCrashLooping firing  {FIRST}" in line_with("Alerts")
    assert "2026-11-21 05:37:15Z" in line_with("Started")
    assert "2026-11-21 05:37:16Z  (took 1s)" in line_with("Ended")
    assert "healed  every step succeeded and the alert resolved" in line_with("Outcome")
    timeline = [line.rstrip() for line in lines[lines.index(line_with("TIME  KIND")) + 2 :]]
    assert timeline == TIMELINE
    # the body, unfolded, is exactly the JSON sent
    [mutation] = [e for w in writes for e in w.events if e.kind == "mutation"]
    body = json.dumps(mutation.data["requests"][0]["body"], separators=(",", ":"))
    start = timeline.index(next(line for line in timeline if "Content-Type: application/strategic" in line)) + 1
    assert "".join(line.strip() for line in timeline[start : start + 2]) == body


def test_render_run_simulated_and_markup_is_literal(store):
    """A simulated run, with text from outside (an API server's answer) that looks like console
    markup, and a change planned as already in place (nothing sent)."""
    writes = recorded(run_id="sim-1", simulate=True)
    first = writes[0]
    describe = next(e for e in first.events if e.key == "00003-decision")
    marked = describe.model_copy(update={"message": "target deployment/prod/checkout: [bold]paused[/bold] by [red]someone[/red]"})
    store.write(first.model_copy(update={"events": [e if e.key != "00003-decision" else marked for e in first.events]}))
    mutation = next(e for e in writes[1].events if e.kind == "mutation")
    unchanged = mutation.model_copy(update={
        "message": "deployment/prod/checkout already at 3 replicas",
        "data": {**mutation.data, "changed": False, "requests": [], "resource_version_after": ""},
    })
    store.write(writes[1].model_copy(update={"events": [unchanged]}))
    out = render(render_run(store, "sim-1"))
    assert "SIMULATED CLUSTER: this run acted on a simulated cluster, not a real one" in out
    assert "[bold]paused[/bold] by [red]someone[/red]" in out
    assert next(line for line in out.splitlines() if "Ended" in line).split()[1:] == ["Ended", "-", "│"]
    lines = out.splitlines()
    i = lines.index(next(line for line in lines if " mutation " in line))
    assert [line.strip() for line in lines[i : i + 3]] == [
        "+0.1s  mutation     deployment/prod/checkout already at 3 replicas",
        "no change sent (already in the desired state)",
        f"resourceVersion {mutation.data['resource_version_before']}",
    ]


RUNS_TABLE = [
    ['RUN', 'STARTED', '(UTC)', 'TOOK', 'OUTCOME', 'ALERTNAME', '/', 'PLAYBOOK', 'TARGET'],
    ['<rule>'],
    ['b0b0b0b0', '2026-11-21', '06:37:15', '-', 'running', 'KubePodCrashLooping', 'deployment/prod/checkout'],
    ['simulated', 'restart-healed'],
    ['7f3a9c1e', '2026-11-21', '05:37:15', '1s', 'healed', 'KubePodCrashLooping', 'deployment/prod/checkout'],
    ['restart-healed'],
]


def test_render_runs_and_intake_tables(store):
    full_run(store, "7f3a9c1e-0001")
    store.write(recorded(run_id="b0b0b0b0-0002", started=T0 + timedelta(hours=1), simulate=True)[0])
    out = render(render_runs(store.list_runs()))
    lines = out.splitlines()
    assert [["<rule>"] if i == 1 else line.split() for i, line in enumerate(lines[0:6])] == RUNS_TABLE
    assert set(lines[1].strip()) == {"─"}
    store.record_intake(
        "duplicate",
        alert(),
        "already handled",
        playbook="restart-healed",
        run_id="7f3a9c1e-0001",
        at=T0,
    )
    out = render(render_intake(store.intake_records()))
    assert [line.split() for line in out.splitlines()[2:4]] == [
        ["2026-11-21", "05:37:15", "duplicate", "KubePodCrashLooping", "already", "handled"],
        ["restart-healed", "fingerprint", "c0ffee", "run", "7f3a9c1e"],
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
        "run_started", "alert", "decision", "step_intent", "plan", "mutation", "health",
        "decision", "alert", "decision", "outcome", "notice",
    ]
    assert d["events"][5]["data"]["requests"][0]["method"] == "PATCH"


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
    first = recorded(run_id=run_id)[0]
    other = AuditWriteInput(run_id=run_id, events=[first.events[0].model_copy(update={"message": "changed"})])
    with ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[AuditTwiceWorkflow],
            activities=[AuditActivities(store).audit_write],
            activity_executor=pool,
        ):
            await client.execute_workflow(
                AuditTwiceWorkflow.run, first, id=f"audit-test-{uuid.uuid4()}", task_queue=queue
            )
            # A key written again with other content never fails the caller: the first stays.
            await client.execute_workflow(
                AuditTwiceWorkflow.run, other, id=f"audit-test-{uuid.uuid4()}", task_queue=queue
            )
    events = store.events(run_id)
    assert [e.key for e in events] == [e.key for e in first.events] == keys()[:5]
    assert events[0].message == first.events[0].message
    assert events[1].data["dedup_key"] == FIRST
    assert store.handled_by(FIRST) == run_id
    assert raw(store).execute("SELECT count(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()[0] == 5
