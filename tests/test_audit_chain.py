"""The tamper-evident audit trail: the hash chain (remediator.audit.chain), ``remediator audit
verify|export|intake`` and ``audit list -o json|yaml``.

Each kind of tampering is done as someone who can write the file would do it (sqlite3 on the
file, triggers dropped where they stand in the way), and ``verify``'s exact words and exit code
are asserted. The last test SIGKILLs a real worker mid-run and verifies what it left.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus
from typer.testing import CliRunner

from remediator.audit.brakes import Brakes
from remediator.audit.chain import AuditKeyError, canonical, key_id
from remediator.audit.store import AuditStore
from remediator.cli import app
from remediator.domain.messages import AlertRef, PauseScope
from remediator.domain.policy import Policy
from tests.test_audit import HEALED, REJECTED, T0, full_run, recorded

KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state):
    s = AuditStore(state / "audit.db")
    yield s
    s.close()


def cli(*args: str, env: dict[str, str] | None = None):
    """``remediator ARGS`` in-process; the result has ``exit_code``, ``stdout``, ``stderr``."""
    return CliRunner().invoke(app, list(args), env=env or {}, catch_exceptions=False)


def verify(state: Path, *args: str):
    return cli("audit", "verify", "--state-dir", str(state), *args)


def raw(state: Path) -> sqlite3.Connection:
    """The file as a person with write access opens it."""
    return sqlite3.connect(state / "audit.db", isolation_level=None)


def seq_of(state: Path, kind: str, record: str) -> int:
    return raw(state).execute(
        "SELECT max(seq) FROM ledger WHERE kind = ? AND record = ?", (kind, record)
    ).fetchone()[0]


def head(state: Path) -> tuple[int, str]:
    return tuple(raw(state).execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone())


def without_trigger(state: Path, trigger: str, sql: str, *args) -> None:
    """Drop ``trigger``, run ``sql``, put the trigger back (as a careful intruder would)."""
    db = raw(state)
    [definition] = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (trigger,)).fetchone()
    db.execute(f"DROP TRIGGER {trigger}")
    db.execute(sql, args)
    db.execute(definition)


def alert(alertname: str = "KubePodCrashLooping", fingerprint: str = "c0ffee") -> AlertRef:
    return AlertRef(fingerprint=fingerprint, starts_at=T0, status="firing", labels={"alertname": alertname, "namespace": "prod"})


def two_runs(store: AuditStore) -> None:
    """A healed run, a rejected one (needs_human), an intake record, a pause and its resume."""
    full_run(store, "run-a", HEALED)
    full_run(store, "run-r", REJECTED, relabel={"c0ffee": "beef01", "checkout": "payments"})
    store.record_intake("unmatched", alert(alertname="DiskFull", fingerprint="d15c"), "no playbook matches", at=T0)
    brakes = Brakes(store, Policy())
    brakes.pause(PauseScope(namespace="prod"), "change freeze", "U0ALICE", at=T0)
    brakes.resume(PauseScope(namespace="prod"), "freeze over", "U0ALICE", at=T0)


# --------------------------------------------------------------------------- intact


def test_an_intact_trail_verifies(store, state):
    two_runs(store)
    n = raw(state).execute("SELECT count(*) FROM ledger").fetchone()[0]
    # 12 + 9 events, 2 + 2 run states (running, then ended), 1 intake record, 2 brake records.
    assert n == 12 + 9 + 2 + 2 + 1 + 2
    seq, digest = head(state)
    result = verify(state)
    assert (result.exit_code, result.stdout) == (0, f"audit trail intact: {n} records; head record {seq} hash {digest}\n")
    result = verify(state, "--run", "run-r")
    assert (result.exit_code, result.stdout) == (0, f"audit trail intact: run run-r: 10 records checked against a chain of {n}\n")


def test_retried_writes_add_nothing_to_the_chain(store, state):
    writes = recorded(HEALED, "run-a")
    for w in writes + writes:
        store.write(w)
    kinds = [r[0] for r in raw(state).execute("SELECT kind FROM ledger ORDER BY seq")]
    assert kinds.count("event") == 12
    assert kinds.count("run") == 2  # running, then ended: each state once, however often written
    assert verify(state).exit_code == 0


# --------------------------------------------------------------------------- tampering


def test_a_changed_field_is_named_with_both_values(store, state):
    """The approver of a rejection rewritten, the trigger put back afterwards."""
    two_runs(store)
    without_trigger(
        state, "events_no_update",
        "UPDATE events SET data = replace(data, 'U0BOB', 'U0EVE') WHERE run_id = 'run-r' AND key = '00006-approval'",
    )
    seq = seq_of(state, "event", "run-r#00006-approval")
    result = verify(state)
    assert result.exit_code == 1
    assert result.stdout == f"record {seq} (event run-r#00006-approval): changed: data.user_id is 'U0EVE', the chain says 'U0BOB'\n"
    assert result.stderr == "error: the audit trail is not intact: 1 problem\n"


def test_a_dropped_trigger_then_an_edit(store, state):
    two_runs(store)
    original = store.events("run-a")[5]
    assert (original.key, original.message) == ("00006-mutation", "deployment.apps/checkout restarted")
    db = raw(state)
    db.execute("DROP TRIGGER events_no_update")
    db.execute("UPDATE events SET message = 'nothing happened' WHERE run_id = 'run-a' AND key = '00006-mutation'")
    seq = seq_of(state, "event", "run-a#00006-mutation")
    result = verify(state)
    assert result.exit_code == 1
    assert result.stdout == (
        f"record {seq} (event run-a#00006-mutation): changed: message is 'nothing happened', "
        "the chain says 'deployment.apps/checkout restarted'\n"
        "trigger events_no_update is missing: its table is no longer append-only\n"
    )


def test_an_inserted_record(store, state):
    """No trigger stands in the way of an INSERT: a forged mutation event."""
    two_runs(store)
    raw(state).execute(
        "INSERT INTO events (run_id, key, at, kind, message, data, dedup_key, written_at)"
        " VALUES ('run-a', '00013-mutation', '2026-11-21T05:40:00.000000Z', 'mutation', 'scaled to 0', '{}', NULL,"
        " '2026-11-21T05:40:00.000000Z')"
    )
    result = verify(state)
    assert (result.exit_code, result.stdout) == (1, "inserted: event run-a#00013-mutation is not in the chain\n")


def test_a_deleted_record(store, state):
    two_runs(store)
    without_trigger(state, "events_no_delete", "DELETE FROM events WHERE run_id = 'run-a' AND key = '00006-mutation'")
    seq = seq_of(state, "event", "run-a#00006-mutation")
    result = verify(state)
    assert (result.exit_code, result.stdout) == (1, f"record {seq} (event run-a#00006-mutation): removed: not in the events table\n")


def test_a_changed_outcome(store, state):
    """``UPDATE runs SET outcome = 'healed'`` passes the triggers (outcome is mutable); the chain
    holds the state the run wrote last."""
    two_runs(store)
    raw(state).execute("UPDATE runs SET outcome = 'healed' WHERE run_id = 'run-r'")
    seq = seq_of(state, "run", "run-r")
    result = verify(state)
    assert (result.exit_code, result.stdout) == (1, f"record {seq} (run run-r): changed: outcome is 'healed', the chain says 'needs_human'\n")
    # Only that run's records are compared with --run; the other run reads intact.
    assert verify(state, "--run", "run-r").exit_code == 1
    assert verify(state, "--run", "run-a").exit_code == 0


def test_a_changed_pause_record(store, state):
    two_runs(store)
    without_trigger(state, "brake_log_no_update", "UPDATE brake_log SET actor = 'U0EVE' WHERE kind = 'pause'")
    seq = seq_of(state, "brake", "1")
    result = verify(state)
    assert (result.exit_code, result.stdout) == (1, f"record {seq} (brake 1): changed: actor is 'U0EVE', the chain says 'U0ALICE'\n")


def test_grants_are_chained_and_a_rewritten_override_is_found(store, state):
    from tests.test_limits import gate_input, policy

    brakes = Brakes(store, policy(actions={"rollout_restart": {"max": 1, "per": "1h"}}))
    assert brakes.gate(gate_input("run-a")).verdict == "granted"
    assert brakes.gate(gate_input("run-a")).verdict == "granted"  # a retried gate: granted earlier
    assert brakes.gate(gate_input("run-b", override_by="U0ALICE")).verdict == "granted"
    assert [r[0] for r in raw(state).execute("SELECT record FROM ledger WHERE kind = 'grant' ORDER BY seq")] == [
        "run-a/0/1", "run-b/0/1",
    ]
    assert verify(state).exit_code == 0
    without_trigger(state, "grants_no_update", "UPDATE grants SET override_by = 'U0EVE' WHERE run_id = 'run-b'")
    seq = seq_of(state, "grant", "run-b/0/1")
    result = verify(state)
    assert (result.exit_code, result.stdout) == (
        1, f"record {seq} (grant run-b/0/1): changed: override_by is 'U0EVE', the chain says 'U0ALICE'\n"
    )


def test_a_removed_chain_entry(store, state):
    two_runs(store)
    seq = seq_of(state, "intake", "1")
    without_trigger(state, "ledger_no_delete", "DELETE FROM ledger WHERE seq = ?", seq)
    result = verify(state)
    assert result.exit_code == 1
    assert result.stdout == (
        f"chain broken at record {seq + 1}: record {seq} removed from the chain\n"
        "inserted: intake 1 is not in the chain\n"
    )


def test_an_unkeyed_chain_can_be_recomputed_a_keyed_one_cannot(state):
    """Without a key, someone who rewrites a record and its chain entry, recomputing every hash
    after it, goes unnoticed. With a key the recomputed hash does not match."""
    store = AuditStore(state / "audit.db", key=KEY)
    two_runs(store)
    key_file = state.parent / "audit.key"
    key_file.write_bytes(KEY + b"\n")
    assert verify(state, "--audit-key-file", str(key_file)).exit_code == 0
    seq = seq_of(state, "run", "run-r")
    db = raw(state)
    db.execute("DROP TRIGGER ledger_no_update")
    db.execute("UPDATE runs SET outcome = 'healed' WHERE run_id = 'run-r'")
    row = db.execute("SELECT seq, at, kind, record, run_id, body, key_id, prev FROM ledger WHERE seq = ?", (seq,)).fetchone()
    body = canonical({**json.loads(row[5]), "outcome": "healed"})
    forged = hashlib.sha256(canonical([*row[:5], body, row[6], row[7]]).encode()).hexdigest()
    db.execute("UPDATE ledger SET body = ?, hash = ? WHERE seq = ?", (body, forged, seq))
    db.execute("UPDATE ledger SET prev = ? WHERE seq = ?", (forged, seq + 1))
    result = verify(state, "--audit-key-file", str(key_file))
    assert result.exit_code == 1
    assert result.stdout == (
        f"chain broken at record {seq} (run run-r): hash does not match (the chain was rewritten or the key differs)\n"
        f"chain broken at record {seq + 1} ({_kind_record(state, seq + 1)}): hash does not match (the chain was "
        "rewritten or the key differs)\n"
        "trigger ledger_no_update is missing: its table is no longer append-only\n"
    )
    store.close()


def _kind_record(state: Path, seq: int) -> str:
    return " ".join(raw(state).execute("SELECT kind, record FROM ledger WHERE seq = ?", (seq,)).fetchone())


def test_a_keyed_chain_needs_its_key(state, tmp_path):
    store = AuditStore(state / "audit.db", key=KEY)
    full_run(store, "run-a", HEALED)
    n = raw(state).execute("SELECT count(*) FROM ledger").fetchone()[0]
    result = verify(state)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cannot verify: {n} records are keyed (HMAC-SHA256, key id {key_id(KEY)}): give the key with "
        "--audit-key-file (REMEDIATOR_AUDIT_KEY_FILE) to verify them\n"
    )
    other = tmp_path / "other.key"
    other.write_bytes(b"another key of 32 bytes, or so..")
    result = verify(state, "--audit-key-file", str(other))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"chain broken at record 1 (run run-a): keyed with key id {key_id(KEY)}, not the key given (key id "
        f"{key_id(b'another key of 32 bytes, or so..')})"
    )
    # The key also comes from the environment, as the worker reads it.
    (tmp_path / "k").write_bytes(KEY)
    assert cli("audit", "verify", "--state-dir", str(state), env={"REMEDIATOR_AUDIT_KEY_FILE": str(tmp_path / "k")}).exit_code == 0
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    result = verify(state, "--audit-key-file", str(short))
    assert (result.exit_code, result.stderr) == (
        2, f"error: audit key file {short}: holds 3 bytes; a key needs at least 16 (e.g. `openssl rand -hex 32`)\n"
    )
    # A writer without the key is refused rather than breaking the chain.
    unkeyed = AuditStore(state / "audit.db")
    with pytest.raises(AuditKeyError, match=f"the audit trail is keyed \\(key id {key_id(KEY)}\\); this process has no key"):
        unkeyed.record_intake("unmatched", alert(), "no playbook matches")
    assert raw(state).execute("SELECT count(*) FROM intake").fetchone()[0] == 0
    # A chain written without the key, verified with it, is refused as a whole.
    plain = tmp_path / "plain"
    full_run(AuditStore(plain / "audit.db"), "run-a", HEALED)
    result = verify(plain, "--audit-key-file", str(tmp_path / "k"))
    assert (result.exit_code, result.stdout) == (
        1, "no record is keyed, but a key was given: the chain was written, or rewritten, without the key\n"
    )


def test_a_version_3_database_is_chained_at_migration(store, state):
    two_runs(store)
    store.close()
    db = raw(state)
    db.execute("DROP TABLE ledger")
    db.execute("PRAGMA user_version=3")
    rows = sum(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "runs", "intake", "brake_log", "grants"))
    migrated = AuditStore(state / "audit.db")
    assert raw(state).execute("SELECT count(*) FROM ledger").fetchone()[0] == rows
    assert raw(state).execute("PRAGMA user_version").fetchone()[0] == 4
    assert verify(state).exit_code == 0
    full_run(migrated, "run-b", HEALED, relabel={"c0ffee": "0ddba11"})
    assert verify(state).exit_code == 0
    migrated.close()


# --------------------------------------------------------------------------- export, list, intake


def test_export_is_json_lines_with_each_hash(store, state, tmp_path):
    two_runs(store)
    result = cli("audit", "export", "--state-dir", str(state))
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1))
    assert lines[-1]["hash"] == head(state)[1]
    # Anyone can recompute an unkeyed chain from the export alone (README: the hash).
    prev = "0" * 64
    for r in lines:
        message = canonical([r["seq"], r["at"], r["kind"], r["record"], r["run_id"], canonical(r["body"]), r["key_id"], r["prev"]])
        assert r["prev"] == prev and hashlib.sha256(message.encode()).hexdigest() == r["hash"]
        prev = r["hash"]
    mutation = next(r for r in lines if r["record"] == "run-a#00006-mutation")
    assert mutation["body"]["kind"] == "mutation" and json.loads(mutation["body"]["data"])["requests"]
    out = tmp_path / "trail.jsonl"
    result = cli("audit", "export", "--state-dir", str(state), "--run", "run-r", "-o", str(out))
    assert (result.exit_code, result.stdout) == (0, f"11 records written to {out}\n")  # 9 events, 2 run states
    assert {json.loads(line)["run_id"] for line in out.read_text().splitlines()} == {"run-r"}
    assert cli("audit", "export", "--state-dir", str(state), "--since", "1h").stdout.count("\n") == len(lines)
    assert cli("audit", "export", "--state-dir", str(state), "--until", "2020-01-01T00:00:00Z").stdout == ""
    result = cli("audit", "export", "--state-dir", str(state), "--since", "yesterday")
    assert (result.exit_code, result.stderr) == (2, "error: --since: expected a duration such as 1h or an RFC 3339 time, got 'yesterday'\n")


def test_keyed_export_carries_the_key_id(state):
    store = AuditStore(state / "audit.db", key=KEY)
    full_run(store, "run-a", HEALED)
    lines = [json.loads(line) for line in cli("audit", "export", "--state-dir", str(state)).stdout.splitlines()]
    assert {r["key_id"] for r in lines} == {key_id(KEY)}
    first = lines[0]
    message = canonical([first["seq"], first["at"], first["kind"], first["record"], first["run_id"],
                         canonical(first["body"]), first["key_id"], first["prev"]])
    assert hmac.new(KEY, message.encode(), hashlib.sha256).hexdigest() == first["hash"]


def test_audit_list_json_and_yaml_or_refused(store, state):
    two_runs(store)
    as_json = json.loads(cli("audit", "list", "--state-dir", str(state), "-o", "json").stdout)
    assert [(r["run_id"], r["outcome"]) for r in as_json] == [("run-r", "needs_human"), ("run-a", "healed")]
    as_yaml = yaml.safe_load(cli("audit", "list", "--state-dir", str(state), "-o", "yaml").stdout)
    assert as_yaml == as_json
    shown = yaml.safe_load(cli("audit", "show", "run-r", "--state-dir", str(state), "-o", "yaml").stdout)
    assert shown["run"]["outcome"] == "needs_human" and len(shown["events"]) == 9
    for command in (["list"], ["show", "run-r"], ["intake"]):
        result = cli("audit", *command, "--state-dir", str(state), "-o", "xml")
        assert (result.exit_code, result.stderr) == (2, "error: --output: expected text, json or yaml, got 'xml'\n")


def test_alerts_handled_without_a_run_are_listed_and_filtered(store, state):
    store.record_intake("unmatched", alert(alertname="DiskFull", fingerprint="d15c"), "no playbook matches", at=T0)
    store.record_intake("duplicate", alert(), "already taken", playbook="restart", run_id="run-a", at=T0 + timedelta(seconds=1))
    store.record_intake("render_failed", alert(fingerprint="bad"), "labels.deployment is undefined", playbook="restart",
                        at=T0 + timedelta(seconds=2))
    store.record_intake("refused_namespace", alert(fingerprint="ks"), "namespace kube-system is denied", playbook="restart",
                        at=T0 + timedelta(seconds=3))
    rows = json.loads(cli("audit", "intake", "--state-dir", str(state), "-o", "json").stdout)
    assert [r["kind"] for r in rows] == ["refused_namespace", "render_failed", "duplicate", "unmatched"]
    rows = json.loads(cli("audit", "intake", "--state-dir", str(state), "--kind", "duplicate", "-o", "json").stdout)
    assert [(r["kind"], r["run_id"], r["alertname"]) for r in rows] == [("duplicate", "run-a", "KubePodCrashLooping")]
    rows = json.loads(cli("audit", "intake", "--state-dir", str(state), "--alertname", "DiskFull", "-o", "json").stdout)
    assert [r["fingerprint"] for r in rows] == ["d15c"]
    rows = json.loads(cli("audit", "intake", "--state-dir", str(state), "--until", "2026-11-21T05:37:16.500000Z", "-o", "json").stdout)
    assert [r["kind"] for r in rows] == ["duplicate", "unmatched"]
    text = cli("audit", "intake", "--state-dir", str(state), "--kind", "render_failed").stdout
    assert text.split()[:6] == ["AT", "(UTC)", "KIND", "ALERTNAME", "/", "PLAYBOOK"]
    assert text.count("render_failed") == 1 and "refused_namespace" not in text and "fingerprint bad" in text
    result = cli("audit", "intake", "--state-dir", str(state), "--kind", "dup")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --kind: expected one of unmatched, render_failed, duplicate, cooldown, approval_refused, "
        "refused_namespace, unknown_cluster, got 'dup'\n"
    )
    assert verify(state).exit_code == 0


# --------------------------------------------------------------------------- a SIGKILLed worker


async def test_an_intact_trail_after_a_sigkilled_worker_verifies(tmp_path, cluster, temporal):
    """The worker is SIGKILLed the instant its change lands on the API server, between audit
    commits; the trail it left verifies, and so does the trail once another worker has finished
    the run."""
    from remediator.app.temporal import connect
    from remediator.domain.runs import workflow_id_for
    from tests.support import WorkerProcess
    from tests.test_crash_timing import HEARTBEAT, wait_closed

    emu, kubeconfig = cluster
    (tmp_path / "playbooks" / "p.yaml").write_text(yaml.safe_dump({
        "name": "one-change", "match": ['alertname="OneChange"'],
        "target": {"kind": "Deployment", "namespace": "{{ labels.namespace }}", "name": "{{ labels.deployment }}"},
        "steps": [{"name": "restart", "rollout_restart": {}}], "verification_window": "1s", "cooldown": "0s",
    }))
    workers: list[WorkerProcess] = []

    def kill_when_it_lands(request) -> None:
        if request.method == "PATCH" and 200 <= request.status < 300 and len(workers) == 1:
            workers[0].kill()

    emu.on_request(kill_when_it_lands)
    workers.append(WorkerProcess(tmp_path, temporal.address, kubeconfig, HEARTBEAT))
    client = await connect(temporal.address)
    state = tmp_path / "state"
    try:
        assert workers[0].post("firing", alertname="OneChange").status_code == 200
        deadline = time.monotonic() + 30
        while workers[0].proc.poll() is None:
            assert time.monotonic() < deadline, "the change never landed"
            await asyncio.sleep(0.05)
        result = verify(state)
        assert result.exit_code == 0, result.stdout + result.stderr
        assert result.stdout.startswith("audit trail intact: ")
        workers.append(WorkerProcess(tmp_path, temporal.address, kubeconfig, HEARTBEAT))
        assert await wait_closed(client, workflow_id_for("deployment/prod/checkout"), timeout=60) == WorkflowExecutionStatus.COMPLETED
    finally:
        for w in workers:
            w.stop()
    result = verify(state)
    assert result.exit_code == 0, result.stdout + result.stderr
    events = raw(state).execute("SELECT count(*) FROM events").fetchone()[0]
    assert raw(state).execute("SELECT count(*) FROM ledger WHERE kind = 'event'").fetchone()[0] == events
