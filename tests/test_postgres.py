"""The shared database on a real PostgreSQL (tests/postgres.py): its schema and
``remediator db upgrade``, the worker's refusal of a schema it does not know, the append-only
triggers, the chain giving the same verdict and export as on SQLite, and two stores (two
replicas) on one database seeing each other's runs, dedup and Slack state.

The behaviour tests of the store, the brakes and the Slack state run on both backends through
the ``database_url`` fixture (tests/test_limits.py, tests/test_slack.py, and here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from remediator.audit.brakes import Brakes
from remediator.audit.store import AuditStore
from remediator.cli import app
from remediator.db import Database, DatabaseUnavailable, DatabaseUrlError, SchemaError
from remediator.db import database_url as sqlalchemy_url
from remediator.db.migrate import current_revision, head_revision
from remediator.domain.messages import PauseScope
from remediator.domain.policy import Policy
from remediator.sim.alerting import free_port
from remediator.slack.threads import SlackThreads
from tests.test_audit_chain import HEALED, KEY, REJECTED, T0, alert, full_run, two_runs

ROOT = Path(__file__).resolve().parent.parent

APPEND_ONLY = {
    "UPDATE events SET message = 'edited'": "audit events are append-only: UPDATE refused",
    "DELETE FROM events": "audit events are append-only: DELETE refused",
    "TRUNCATE events": "audit events are append-only: TRUNCATE refused",
    "UPDATE intake SET message = 'edited'": "audit intake records are append-only: UPDATE refused",
    "DELETE FROM intake": "audit intake records are append-only: DELETE refused",
    "DELETE FROM runs": "audit runs are append-only: DELETE refused",
    "UPDATE runs SET target = 'deployment/prod/other'": "audit runs: only outcome and ended_at may change",
    "UPDATE brake_log SET reason = 'nothing'": "audit brake_log is append-only: UPDATE refused",
    "TRUNCATE grants": "audit grants are append-only: TRUNCATE refused",
    "UPDATE ledger SET hash = 'x'": "audit ledger is append-only: UPDATE refused",
    "DELETE FROM ledger": "audit ledger is append-only: DELETE refused",
}


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def psql(url: str) -> psycopg.Connection:
    """A plain connection as a person with the database's password would open it."""
    return psycopg.connect(url, autocommit=True)


# --------------------------------------------------------------------------- URLs


def test_database_urls():
    assert sqlalchemy_url("postgresql://u:p@db:5432/remediator").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("postgres://u@db/remediator").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("sqlite:////var/lib/remediator/audit.db").database == "/var/lib/remediator/audit.db"
    assert sqlalchemy_url(Path("state/audit.db")).database == "state/audit.db"
    with pytest.raises(DatabaseUrlError, match="unsupported scheme 'mysql'; expected sqlite:///PATH or postgresql://"):
        sqlalchemy_url("mysql://u@db/remediator")
    with pytest.raises(DatabaseUrlError, match="unsupported scheme 'postgresql\\+psycopg2'"):
        sqlalchemy_url("postgresql+psycopg2://u@db/remediator")
    with pytest.raises(DatabaseUrlError, match="no database name"):
        sqlalchemy_url("postgresql://u@db")


def test_an_unreachable_postgresql_is_an_error_not_a_fallback(tmp_path):
    url = f"postgresql://remediator:secret@127.0.0.1:{free_port()}/remediator"
    with pytest.raises(DatabaseUnavailable, match=r"cannot connect to postgresql://remediator:\*\*\*@127\.0\.0\.1:\d+/remediator: "):
        Database(url)


# --------------------------------------------------------------------------- schema


def test_db_upgrade_creates_the_schema_on_an_empty_database(postgres):
    url = postgres.new_database(upgraded=False)
    shown = url  # no password in the test server's URLs
    with pytest.raises(SchemaError, match=f"has no remediator schema: run `remediator db upgrade --database-url {shown}` first"):
        AuditStore(url)
    result = cli("db", "upgrade", "--database-url", url)
    assert (result.exit_code, result.stdout) == (0, f"{shown}: schema revision {head_revision()} (was empty)\n")
    result = cli("db", "upgrade", "--database-url", url)
    assert (result.exit_code, result.stdout) == (0, f"{shown}: schema revision {head_revision()} (already)\n")
    db = Database(url)
    try:
        assert current_revision(db) == head_revision()
        store = AuditStore(db)
        full_run(store, "run-a", HEALED)
        assert store.verify().intact
    finally:
        db.dispose()


def test_db_upgrade_on_sqlite_creates_the_file(tmp_path):
    result = cli("db", "upgrade", "--state-dir", str(tmp_path / "state"))
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path / 'state' / 'audit.db'}: schema version 4\n")
    assert AuditStore(tmp_path / "state" / "audit.db").list_runs() == []


def worker(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": "", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--no-auth", "--simulate", "--state-dir", str(tmp_path / "state"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_worker_refuses_a_schema_it_does_not_know(postgres, tmp_path):
    url = postgres.new_database(upgraded=False)
    # An external Temporal (never reached: the database is checked first), as replicas need.
    p = worker(tmp_path, "--database-url", url, "--temporal-address", "127.0.0.1:1")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: refusing to start: database {url} has no remediator schema: "
        f"run `remediator db upgrade --database-url {url}` first"
    )
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "state" / "audit.db").exists()  # no fallback to SQLite
    assert not (tmp_path / "state" / "temporal.db").exists()  # refused before starting Temporal



def test_a_revision_this_remediator_does_not_know_is_refused(postgres):
    """A newer release upgraded the database: the store (and so the worker) refuses it."""
    url = postgres.new_database()
    with psql(url) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(SchemaError) as err:
        AuditStore(url)
    assert str(err.value) == (
        f"database {url} has schema revision f00d, unknown to this remediator "
        f"(newest {head_revision()}): it was upgraded by a newer remediator; run that version, "
        f"`remediator db upgrade --database-url {url}` cannot go back"
    )
    result = cli("db", "upgrade", "--database-url", url)
    assert result.exit_code == 2 and "unknown to this remediator" in result.stderr


# --------------------------------------------------------------------------- append-only


def test_postgresql_refuses_update_and_delete_of_the_append_only_tables(pg_url):
    store = AuditStore(pg_url)
    two_runs(store)
    Brakes(store, Policy()).pause(PauseScope(namespace="prod"), "freeze", "U0ALICE")
    for sql, message in APPEND_ONLY.items():
        with psql(pg_url) as conn, pytest.raises(psycopg.errors.IntegrityConstraintViolation, match=message):
            conn.execute(sql)
    with psql(pg_url) as conn:
        conn.execute("UPDATE runs SET outcome = 'failed' WHERE run_id = 'run-a'")  # a run's state may change
    verdict = store.verify()
    assert [p.text for p in verdict.problems] == [
        f"record {_seq(pg_url, 'run', 'run-a')} (run run-a): changed: outcome is 'failed', the chain says 'healed'"
    ]
    store.close()


def _seq(url: str, kind: str, record: str) -> int:
    with psql(url) as conn:
        return conn.execute("SELECT max(seq) FROM ledger WHERE kind = %s AND record = %s", (kind, record)).fetchone()[0]


# --------------------------------------------------------------------------- same chain on both


def _comparable(records: list[dict]) -> list[dict]:
    """Export records without what depends on the wall clock of the write (``at``,
    ``written_at``, and so the hashes)."""
    out = []
    for r in records:
        body = {k: v for k, v in r["body"].items() if k != "written_at"}
        out.append({**{k: v for k, v in r.items() if k not in ("at", "hash", "prev")}, "body": body})
    return out


def test_verify_and_export_are_the_same_on_sqlite_and_postgresql(tmp_path, pg_url):
    stores = {"sqlite": AuditStore(tmp_path / "audit.db", key=KEY), "postgresql": AuditStore(pg_url, key=KEY)}
    for store in stores.values():
        two_runs(store)
    exports = {name: list(store.export()) for name, store in stores.items()}
    assert _comparable(exports["sqlite"]) == _comparable(exports["postgresql"])
    assert [r["seq"] for r in exports["postgresql"]] == list(range(1, len(exports["sqlite"]) + 1))
    assert [r["key_id"] for r in exports["postgresql"]] == [r["key_id"] for r in exports["sqlite"]]
    verdicts = {name: store.verify() for name, store in stores.items()}
    assert verdicts["sqlite"].intact and verdicts["postgresql"].intact
    assert verdicts["sqlite"].records == verdicts["postgresql"].records

    # The same tampering (the trigger taken away, then an edit) gives the same verdict.
    edit = "UPDATE events SET message = 'nothing happened' WHERE run_id = 'run-a' AND key = '00006-mutation'"
    with stores["sqlite"].transaction() as db:
        db.execute(text("DROP TRIGGER events_no_update"))
        db.execute(text(edit))
    with psql(pg_url) as conn:
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
        conn.execute(edit)
    problems = {name: [p.text for p in store.verify().problems] for name, store in stores.items()}
    assert problems["sqlite"] == problems["postgresql"]
    assert problems["postgresql"][-1] == "trigger events_no_update is missing: its table is no longer append-only"
    assert "changed: message is 'nothing happened', the chain says 'deployment.apps/checkout restarted'" in problems["postgresql"][0]
    # And the CLI reads PostgreSQL as it reads the file.
    result = CliRunner().invoke(app, ["audit", "verify", "--database-url", pg_url, "--audit-key-file", str(_key_file(tmp_path))])
    assert result.exit_code == 1 and result.stdout.splitlines() == problems["postgresql"]
    for store in stores.values():
        store.close()


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(KEY)
    return path


# --------------------------------------------------------------------------- two replicas, one database


def test_two_stores_on_one_database_see_each_others_runs_dedup_and_slack_state(pg_url):
    one, two = Database(pg_url), Database(pg_url)
    a, b = AuditStore(one), AuditStore(two)
    full_run(a, "run-a", HEALED)
    full_run(b, "run-r", REJECTED, relabel={"c0ffee": "beef01", "checkout": "payments"})
    # Each sees the whole trail: both runs, one chain.
    assert {r.run_id for r in a.list_runs()} == {r.run_id for r in b.list_runs()} == {"run-a", "run-r"}
    assert [e.key for e in b.events("run-a")] == [e.key for e in a.events("run-a")]
    assert a.verify().intact and b.verify().intact
    # A repeated alert reaching the other replica after the run ended is recognised.
    [first] = [e for e in a.events("run-a") if e.kind == "alert"][:1]
    assert b.handled_by(first.data["dedup_key"]) == "run-a"
    b.record_intake("duplicate", alert(), "already handled", run_id="run-a")
    assert [r.kind for r in a.intake_records()] == ["duplicate"]
    # Slack: a thread and a message one replica posted are the other's.
    ta, tb = SlackThreads(one), SlackThreads(two)
    assert ta.set_thread("C0ONCALL", "deployment/prod/checkout", "1700000000.000100") == "1700000000.000100"
    assert tb.set_thread("C0ONCALL", "deployment/prod/checkout", "1700000000.000999") == "1700000000.000100"
    tb.record_message("approval:req-1", "C0ONCALL", "1700000000.000200")
    assert ta.message("approval:req-1") == ("C0ONCALL", "1700000000.000200", None)
    assert ta.advance_status("req-1", 2) and not tb.advance_status("req-1", 1)
    # The kill switch one replica sets is the other's.
    Brakes(a, Policy()).pause(PauseScope(), "incident", "U0ALICE")
    assert [p.reason for p in Brakes(b, Policy()).pauses()] == ["incident"]
    one.dispose()
    two.dispose()


def test_the_store_behaves_the_same_on_both_backends(database_url):
    store = AuditStore(database_url)
    two_runs(store)
    with pytest.raises(LookupError, match="run ID prefix 'run-' is ambiguous: it matches run-a, run-r"):
        store.get_run("run-")
    assert store.get_run("run-a").outcome == "healed"
    assert store.latest_run(store.get_run("run-a").workflow_id).run_id == "run-a"
    assert [r.run_id for r in store.list_runs(alertname="KubePodCrashLooping")] == ["run-r", "run-a"]
    assert store.list_runs(alertname="DiskFull") == []
    assert [r.kind for r in store.intake_records()] == ["unmatched"]
    assert [(r.kind, r.reason) for r in Brakes(store, Policy()).log()] == [("resume", "freeze over"), ("pause", "change freeze")]
    assert store.verify().intact
    assert store.events("run-a")[0].at >= T0
    store.close()


def test_the_slack_state_behaves_the_same_on_both_backends(database_url):
    threads = SlackThreads(database_url)
    assert threads.record_message("notice:e1", "C0ONCALL", "1.0001") == ("C0ONCALL", "1.0001", None)
    assert threads.record_message("notice:e1", "C0OTHER", "2.0002", "1.0001") == ("C0ONCALL", "1.0001", None)
    assert threads.set_thread("C0ONCALL", "deployment/prod/checkout", "1.0001") == "1.0001"
    assert threads.set_thread("C0ONCALL", "deployment/prod/checkout", "9.0009") == "1.0001"
    threads.forget_thread("C0ONCALL", "deployment/prod/checkout")
    assert threads.thread("C0ONCALL", "deployment/prod/checkout") is None
    threads.set_channel_id("sre-oncall", "C0ONCALL")
    threads.set_channel_id("sre-oncall", "C0MOVED")
    assert threads.channel_id("sre-oncall") == "C0MOVED"
    threads.record_request("req-1", '{"a": 1}')
    threads.record_request("req-1", '{"a": 2}')
    assert threads.request("req-1") == '{"a": 1}'
    assert threads.advance_status("req-1", 1) and threads.advance_status("req-1", 3)
    assert not threads.advance_status("req-1", 2)
    threads.close()
