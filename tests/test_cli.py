"""The command line as a user runs it: real processes, exit codes and the exact messages read.

A user's mistake ends with a message and exit code 2 (1 for ``validate`` finding problems),
never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from remediator.audit.store import AuditStore
from remediator.domain.messages import AuditEvent, AuditWriteInput, RunInfo

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "remediator.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr


def test_validate_accepts_the_shipped_playbooks():
    p = run("validate", "playbooks")
    assert p.returncode == 0 and p.stdout.strip() == "playbooks: ok"


def test_validate_prints_file_line_field_and_fails():
    p = run("validate", "tests/fixtures/playbooks/invalid/bad-duration.yaml")
    assert p.returncode == 1
    assert p.stderr.strip() == (
        "tests/fixtures/playbooks/invalid/bad-duration.yaml:13: steps[0].health.timeout: "
        "expected a duration such as 30s, 5m or 1h, got 'soon'"
    )


def test_validate_missing_path():
    p = run("validate", "no/such/dir")
    assert p.returncode == 2
    assert "no/such/dir: no such file or directory" in p.stderr
    no_traceback(p)


def test_schema_is_json_schema_for_playbooks():
    p = run("schema")
    assert p.returncode == 0
    schema = json.loads(p.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"match", "target", "steps", "slack", "diagnosis"} <= set(schema["properties"])


def worker(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # HOME without ~/.kube/config and no KUBECONFIG: no cluster is configured.
    base = {"HOME": str(tmp_path), "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": ""}
    return subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--state-dir", str(tmp_path / "state"), *args],
        cwd=ROOT, env={**os.environ, "COLUMNS": "200", **base, **(env or {})}, capture_output=True, text=True, timeout=120,
    )


def test_worker_without_a_cluster_refuses_and_says_how_to_run_the_demo(tmp_path):
    p = worker(tmp_path, "--no-auth")
    assert p.returncode == 2
    assert "refusing to start" in p.stderr
    assert "make demo" in p.stderr and "--simulate" in p.stderr
    no_traceback(p)
    assert not (tmp_path / "state" / "temporal.db").exists()  # refused before starting Temporal


def test_worker_refuses_an_invalid_playbook_and_names_it(tmp_path):
    bad = tmp_path / "playbooks"
    bad.mkdir()
    (bad / "broken.yaml").write_text((ROOT / "tests/fixtures/playbooks/invalid/bad-duration.yaml").read_text())
    p = worker(tmp_path, "--no-auth", "--simulate", "--playbook-dir", str(bad))
    assert p.returncode == 2
    assert f"{bad / 'broken.yaml'}:13: steps[0].health.timeout" in p.stderr
    no_traceback(p)


def test_worker_requires_credentials_unless_told_otherwise(tmp_path):
    p = worker(tmp_path)
    assert p.returncode == 2
    assert "the intake needs credentials" in p.stderr
    no_traceback(p)
    p = worker(tmp_path, env={"REMEDIATOR_NO_AUTH": "true", "REMEDIATOR_LISTEN": "nowhere"})
    assert p.returncode == 2
    assert p.stderr.strip() == "error: --listen must be host:port, got 'nowhere'"  # past the credentials check


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--no-auth", "--temporal-port", "seven"], {},
         "--temporal-port (REMEDIATOR_TEMPORAL_PORT): input should be a valid integer, unable to parse string as an integer, got 'seven'"),
        (["--no-auth"], {"REMEDIATOR_HEARTBEAT_TIMEOUT": "soon"},
         "--heartbeat-timeout (REMEDIATOR_HEARTBEAT_TIMEOUT): expected a duration such as 30s, 5m or 1h, got 'soon'"),
        (["--no-auth", "--heartbeat-timeout", "500ms"], {}, "--heartbeat-timeout must be at least 1s, got 0.5s"),
        ([], {"REMEDIATOR_NO_AUTH": "maybe"},
         "--no-auth (REMEDIATOR_NO_AUTH): input should be a valid boolean, unable to interpret input, got 'maybe'"),
        (["--no-auth", "--log-format", "xml"], {}, "--log-format (REMEDIATOR_LOG_FORMAT): input should be 'text' or 'json', got 'xml'"),
    ],
)
def test_worker_invalid_values_from_flags_or_environment(tmp_path, args, env, message):
    p = worker(tmp_path, *args, env=env)
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {message}"
    no_traceback(p)


@pytest.fixture
def store(tmp_path):
    s = AuditStore(tmp_path / "audit.db")
    t0 = datetime(2026, 11, 21, 5, 0, tzinfo=timezone.utc)
    for run_id, alertname, outcome in (("aaaa1111-run", "KubePodCrashLooping", "healed"), ("bbbb2222-run", "KubeNodeNotReady", "needs_human")):
        s.write(
            AuditWriteInput(
                run_id=run_id,
                run=RunInfo(
                    run_id=run_id, workflow_id=f"remediation/x/{run_id}", alertname=alertname, namespace="prod",
                    target="deployment/prod/checkout", playbook="p", playbook_path="playbooks/p.yaml",
                    playbook_sha256="ab" * 32, simulate=False, started_at=t0, outcome=outcome, ended_at=t0,
                ),
                events=[AuditEvent(key="00001-outcome", at=t0, kind="outcome", message=f"{outcome}: because", data={"outcome": outcome})],
            )
        )
    return tmp_path


def test_audit_list_filters_and_show_prints_the_timeline(store):
    p = run("audit", "list", "--outcome", "needs_human", "--state-dir", str(store))
    assert p.returncode == 0
    assert "bbbb2222" in p.stdout and "aaaa1111" not in p.stdout
    p = run("audit", "show", "aaaa", "--state-dir", str(store))
    assert p.returncode == 0 and "healed: because" in p.stdout
    p = run("audit", "show", "aaaa", "-o", "json", "--state-dir", str(store))
    assert json.loads(p.stdout)["run"]["outcome"] == "healed"
    p = run("audit", "show", "zzzz", "--state-dir", str(store))
    assert p.returncode == 2 and "no audited run matches 'zzzz'" in p.stderr
    no_traceback(p)


def test_audit_without_a_state_dir_says_where_it_looked(tmp_path):
    p = run("audit", "list", "--state-dir", str(tmp_path / "nothing"))
    assert p.returncode == 2 and "no audit trail at" in p.stderr
    no_traceback(p)


def test_approve_finds_runs_through_temporal_and_names_what_it_could_not_find(client, tmp_path):
    """No local database is needed (``--state-dir`` names an empty directory): the run is looked
    up in Temporal, by run ID prefix or workflow ID, and a miss is said plainly."""
    common = ("--as", "U1", "--temporal-address", client.service_client.config.target_host, "--state-dir", str(tmp_path))
    p = run("approve", "0123abcd", *common)
    assert p.returncode == 2 and "no remediation run matches '0123abcd' in Temporal namespace default" in p.stderr
    p = run("reject", "remediation/deployment/prod/nothing", *common)
    assert p.returncode == 2 and "no remediation run has workflow ID 'remediation/deployment/prod/nothing'" in p.stderr
    p = run("approve", "zzzz' OR 'a'='a", *common)
    assert p.returncode == 2 and "is neither a workflow ID (remediation/...) nor a run ID" in p.stderr
    no_traceback(p)


# --------------------------------------------------------------------------- the kill switch

KILL_SWITCH_PLAYBOOK = """\
name: restart-on-errors
match: ['alertname="HighErrorRate"']
target: {kind: Deployment, namespace: '{{ labels.namespace }}', name: '{{ labels.service }}'}
steps:
  - name: restart
    rollout_restart: {}
slack: {channel: "#sre-oncall"}
"""


@pytest.fixture
def worker_state(tmp_path):
    """A worker's state directory (its audit store) and playbook directory; no policy file."""
    AuditStore(tmp_path / "state" / "audit.db").close()
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "restart-on-errors.yaml").write_text(KILL_SWITCH_PLAYBOOK)
    return tmp_path


def kill_switch(tmp: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(*args, "--state-dir", str(tmp / "state"), "--policy", str(tmp / "no-policy.yaml"), env=env)


def test_pause_status_and_resume_from_the_cli_without_temporal(worker_state, slack):
    from remediator.sim.alerting import free_port

    tmp = worker_state
    where = ["--playbook-dir", str(tmp / "playbooks")]
    env = {"SLACK_BOT_TOKEN": slack.bot_token, "REMEDIATOR_SLACK_API_URL": slack.url}
    # Pause needs only the audit store: no Temporal runs here.
    p = kill_switch(tmp, "pause", "--namespace", "prod", "--reason", "deploy freeze [CHG-12]", "--as", "U0ALICE", *where, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "paused namespace prod (by U0ALICE: deploy freeze [CHG-12]); 0 runs in flight in scope freeze at their next step boundary",
        "slack: posted to #sre-oncall",
    ]
    assert [m["text"] for m in slack.messages("sre-oncall")] == [
        ":octagonal_sign: remediator paused namespace prod — by <@U0ALICE>: deploy freeze [CHG-12]"
    ]

    p = kill_switch(tmp, "status")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "Paused (1):" and lines[2] == "No run is frozen."
    assert re.fullmatch(r"  namespace prod — by U0ALICE at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: deploy freeze \[CHG-12\]", lines[1])
    status = json.loads(kill_switch(tmp, "status", "-o", "json").stdout)
    assert [(s["namespace"], s["playbook"], s["paused_by"]) for s in status["pauses"]] == [("prod", None, "U0ALICE")]

    # Resume with Temporal unreachable: the pause is lifted, the frozen runs continue at their next poll.
    p = kill_switch(
        tmp, "resume", "--namespace", "prod", "--reason", "freeze over", "--as", "U0BOB", *where,
        "--temporal-address", f"127.0.0.1:{free_port()}", env=env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "resumed namespace prod (by U0BOB: freeze over); 0 frozen runs continue"
    assert p.stderr.startswith("warning: cannot reach Temporal at 127.0.0.1:")
    assert p.stderr.rstrip().endswith("the pause is lifted; frozen runs continue at their next poll, within 5 minutes")
    assert slack.messages("sre-oncall")[1]["text"] == ":arrow_forward: remediator resumed namespace prod — by <@U0BOB>: freeze over"
    no_traceback(p)

    status = json.loads(kill_switch(tmp, "status", "-o", "json").stdout)
    assert status["pauses"] == []
    assert [(r["kind"], r["actor"], r["reason"]) for r in status["log"]] == [
        ("resume", "U0BOB", "freeze over"), ("pause", "U0ALICE", "deploy freeze [CHG-12]"),
    ]
    assert kill_switch(tmp, "status").stdout.splitlines()[0] == "Nothing is paused."


@pytest.mark.parametrize(
    "args, message",
    [
        (["pause", "--reason", " ", "--as", "U1"], "error: --reason: must not be empty: say why, for the audit trail and the Slack notice"),
        (["pause", "--namespace", "Prod", "--reason", "r", "--as", "U1"], "error: --namespace: must be a namespace name"),
        (["pause", "--playbook", "restart", "--reason", "r", "--as", "U1"],
         "error: --playbook: no playbook named 'restart'; known: restart-on-errors"),
        (["resume", "--namespace", "prod", "--reason", "r", "--as", "U1", "--temporal-address", "127.0.0.1:1"],
         "error: no pause of exactly namespace prod to lift; pauses in force: none"),
        (["status", "-o", "yaml"], "error: --output: expected text or json, got 'yaml'"),
        (["pause", "--reason", "r"], "Missing option '--as'"),
    ],
)
def test_kill_switch_mistakes_exit_2_with_the_message(worker_state, args, message):
    where = ["--playbook-dir", str(worker_state / "playbooks")] if args[0] != "status" else []
    p = kill_switch(worker_state, *args, *where)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr
    no_traceback(p)
    assert json.loads(kill_switch(worker_state, "status", "-o", "json").stdout)["pauses"] == []


def test_pause_refuses_a_state_dir_without_an_audit_store(tmp_path):
    # A pause written where no worker reads it would pause nothing.
    p = kill_switch(tmp_path, "pause", "--reason", "r", "--as", "U1")
    assert p.returncode == 2
    assert f"no audit trail at {tmp_path / 'state' / 'audit.db'}" in p.stderr
    assert not (tmp_path / "state").exists()
    no_traceback(p)


def test_pause_of_a_playbook_needs_the_playbooks(worker_state):
    p = kill_switch(worker_state, "pause", "--playbook", "restart-on-errors", "--reason", "r", "--as", "U1",
                    "--playbook-dir", str(worker_state / "nowhere"))
    assert p.returncode == 2
    assert p.stderr.startswith(f"error: --playbook cannot be checked: the playbooks in {worker_state / 'nowhere'} cannot be loaded")
    no_traceback(p)
    # Without --playbook the pause goes ahead (a kill switch must work), and says no notice was posted.
    p = kill_switch(worker_state, "pause", "--reason", "r", "--as", "U1", "--playbook-dir", str(worker_state / "nowhere"))
    assert p.returncode == 0, p.stderr
    assert "so no Slack notice is posted" in p.stderr
