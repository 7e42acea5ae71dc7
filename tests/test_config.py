"""Settings are declared once (remediator.app.config.Settings): the environment variables, the
``remediator worker`` flags and the README's configuration table all come from that model."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from remediator import cli
from remediator.app.config import Settings, env_var, flags, is_switch, markdown_table

ROOT = Path(__file__).resolve().parent.parent

KEYS = Path(__file__).parent / "fixtures" / "audit"

# A value for every field, as written in the environment or on the command line, and what it
# must become. None of them is the default, so each one shows its variable was read.
SAMPLES: dict[str, tuple[str, object]] = {
    "temporal_address": ("temporal.example:7233", "temporal.example:7233"),
    "temporal_namespace": ("ops", "ops"),
    "temporal_tls": ("true", True),
    "temporal_tls_ca": ("/etc/temporal/ca.pem", Path("/etc/temporal/ca.pem")),
    "temporal_tls_cert": ("/etc/temporal/client.pem", Path("/etc/temporal/client.pem")),
    "temporal_tls_key": ("/etc/temporal/client.key", Path("/etc/temporal/client.key")),
    "temporal_tls_server_name": ("temporal.internal", "temporal.internal"),
    "temporal_api_key": ("key-1", "key-1"),
    "temporal_ui_url": ("https://temporal-ui.example", "https://temporal-ui.example"),
    "task_queue": ("remediator-2", "remediator-2"),
    "cluster": ("prod-eu-1", "prod-eu-1"),
    "cluster_label": ("k8s_cluster", "k8s_cluster"),
    "clusters": ("prod-us-1,prod-ap-1", "prod-us-1,prod-ap-1"),
    "temporal_port": ("17233", 17233),
    "temporal_ui_port": ("18233", 18233),
    "listen": ("0.0.0.0:9999", "0.0.0.0:9999"),
    "auth_token": ("s3cret", "s3cret"),
    "basic_auth": ("alertmanager:pw", "alertmanager:pw"),
    "no_auth": ("true", True),
    "read_timeout": ("30s", timedelta(seconds=30)),
    "metrics_listen": ("0.0.0.0:9464", "0.0.0.0:9464"),
    "max_connections": ("500", 500),
    "kubeconfig": ("/etc/kube/config", "/etc/kube/config"),
    "context": ("prod-eu", "prod-eu"),
    "in_cluster": ("false", False),
    "simulate": ("1", True),
    "intake": ("false", False),
    "prometheus_url": ("http://prometheus:9090", "http://prometheus:9090"),
    "alertmanager_url": ("http://alertmanager:9093", "http://alertmanager:9093"),
    "state_dir": ("/var/lib/remediator", Path("/var/lib/remediator")),
    "database_url": ("postgresql://remediator:pw@db:5432/remediator", "postgresql://remediator:pw@db:5432/remediator"),
    "audit_key_file": (str(KEYS / "sample.key"), KEYS / "sample.key"),
    "playbook_dir": ("/etc/remediator/playbooks", Path("/etc/remediator/playbooks")),
    "policy": ("/etc/remediator/policy.yaml", Path("/etc/remediator/policy.yaml")),
    "dry_run": ("1", True),
    "public_url": ("https://remediator.example", "https://remediator.example"),
    "slack_bot_token": ("xoxb-1", "xoxb-1"),
    "slack_signing_secret": ("signing", "signing"),
    "slack_app_token": ("xapp-1", "xapp-1"),
    "slack_api_url": ("http://127.0.0.1:1/api/", "http://127.0.0.1:1/api/"),
    "heartbeat_timeout": ("30s", timedelta(seconds=30)),
    "kube_retry_budget": ("1h", timedelta(hours=1)),
    "settle_interval": ("2m", timedelta(minutes=2)),
    "log_format": ("json", "json"),
}

# Other values, for the flags that must win over SAMPLES in the environment.
FLAG_VALUES: dict[str, tuple[str, object]] = {
    "temporal_address": ("flag.example:7233", "flag.example:7233"),
    "temporal_namespace": ("flagged", "flagged"),
    "temporal_tls_ca": ("/flag/ca.pem", Path("/flag/ca.pem")),
    "temporal_tls_cert": ("/flag/client.pem", Path("/flag/client.pem")),
    "temporal_tls_key": ("/flag/client.key", Path("/flag/client.key")),
    "temporal_tls_server_name": ("flag.internal", "flag.internal"),
    "temporal_api_key": ("key-flag", "key-flag"),
    "temporal_ui_url": ("https://flag-ui.example", "https://flag-ui.example"),
    "task_queue": ("q-flag", "q-flag"),
    "cluster": ("east", "east"),
    "cluster_label": ("region", "region"),
    "clusters": ("west", "west"),
    "temporal_port": ("27233", 27233),
    "temporal_ui_port": ("28233", 28233),
    "listen": ("127.0.0.2:1234", "127.0.0.2:1234"),
    "auth_token": ("flag-token", "flag-token"),
    "basic_auth": ("flag:pw", "flag:pw"),
    "read_timeout": ("5s", timedelta(seconds=5)),
    "metrics_listen": ("127.0.0.1:19464", "127.0.0.1:19464"),
    "max_connections": ("50", 50),
    "kubeconfig": ("/flag/kubeconfig", "/flag/kubeconfig"),
    "context": ("flag-ctx", "flag-ctx"),
    "prometheus_url": ("http://flag-prom", "http://flag-prom"),
    "alertmanager_url": ("http://flag-am", "http://flag-am"),
    "state_dir": ("/flag/state", Path("/flag/state")),
    "database_url": ("sqlite:////flag/state/audit.db", "sqlite:////flag/state/audit.db"),
    "audit_key_file": (str(KEYS / "flag.key"), KEYS / "flag.key"),
    "playbook_dir": ("/flag/playbooks", Path("/flag/playbooks")),
    "policy": ("/flag/policy.yaml", Path("/flag/policy.yaml")),
    "public_url": ("https://flag.example", "https://flag.example"),
    "slack_bot_token": ("xoxb-flag", "xoxb-flag"),
    "slack_signing_secret": ("flag-signing", "flag-signing"),
    "slack_app_token": ("xapp-flag", "xapp-flag"),
    "slack_api_url": ("http://flag/api/", "http://flag/api/"),
    "heartbeat_timeout": ("45s", timedelta(seconds=45)),
    "kube_retry_budget": ("5m", timedelta(minutes=5)),
    "settle_interval": ("3s", timedelta(seconds=3)),
    "log_format": ("text", "text"),
}
# Settings that exclude another (given together: a ConfigError), sampled on their own:
# name -> (the setting it excludes, environment sample, flag sample).
EXCLUSIVE: dict[str, tuple[str, tuple[str, object], tuple[str, object]]] = {
    "temporal_api_key_file": (
        "temporal_api_key",
        ("/etc/temporal/api-key", Path("/etc/temporal/api-key")),
        ("/flag/api-key", Path("/flag/api-key")),
    ),
}
# Switches: the environment says the opposite of the flag.
SWITCH_ENV_AND_FLAG: dict[str, tuple[str, str, bool]] = {
    "temporal_tls": ("false", "--temporal-tls", True),
    "no_auth": ("false", "--no-auth", True),
    "simulate": ("false", "--simulate", True),
    "dry_run": ("false", "--dry-run", True),
    "intake": ("false", "--intake", True),
    "in_cluster": ("true", "--no-in-cluster", False),
}


@pytest.fixture
def clean_env(monkeypatch):
    """No setting comes from the environment of whoever runs the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(env_var(name), raising=False)
    return monkeypatch


class Parsed(Exception):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


def parse_worker_command_line(monkeypatch, *args: str) -> Settings:
    """``remediator worker ARGS`` up to the Settings it builds (nothing is started)."""
    def stop(settings):
        raise Parsed(settings)

    monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(cli, "_cluster", stop)
    result = CliRunner().invoke(cli.app, ["worker", *args])
    assert isinstance(result.exception, Parsed), result.output
    return result.exception.settings


def readme_table() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| Flag | Environment variable | Default | Meaning |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def test_readme_configuration_table_is_generated_from_the_model():
    assert readme_table() == markdown_table(), (
        "README.md's configuration table is out of date; replace it with the output of "
        "`python -m remediator.app.config`"
    )


def test_the_samples_cover_every_field():
    assert set(SAMPLES) | set(EXCLUSIVE) == set(Settings.model_fields)
    assert set(FLAG_VALUES) | set(SWITCH_ENV_AND_FLAG) | set(EXCLUSIVE) == set(Settings.model_fields)
    for name, (_, value) in SAMPLES.items():
        assert Settings.model_fields[name].default != value, f"{name}: the sample is the default"


def test_every_field_is_settable_by_its_environment_variable(clean_env):
    for name, (text, _) in SAMPLES.items():
        clean_env.setenv(env_var(name), text)
    settings = Settings()
    for name, (_, value) in SAMPLES.items():
        assert getattr(settings, name) == value, f"{env_var(name)}={SAMPLES[name][0]!r} did not arrive"


def test_every_environment_variable_reaches_the_worker_command(clean_env):
    for name, (text, _) in SAMPLES.items():
        clean_env.setenv(env_var(name), text)
    settings = parse_worker_command_line(clean_env)
    for name, (_, value) in SAMPLES.items():
        assert getattr(settings, name) == value, f"{env_var(name)}={SAMPLES[name][0]!r} did not arrive"


@pytest.mark.parametrize("name", sorted(EXCLUSIVE))
def test_an_exclusive_setting_is_read_from_its_variable_and_its_flag_wins(clean_env, name: str) -> None:
    excluded, (env_text, env_value), (flag_text, flag_value) = EXCLUSIVE[name]
    for other, (text, _) in SAMPLES.items():
        if other != excluded:
            clean_env.setenv(env_var(other), text)
    clean_env.setenv(env_var(name), env_text)
    assert getattr(Settings(), name) == env_value
    assert getattr(parse_worker_command_line(clean_env, flags(name)[0], flag_text), name) == flag_value
    clean_env.setenv(env_var(excluded), SAMPLES[excluded][0])
    with pytest.raises(ValueError, match="not both"):
        Settings()


def test_the_established_variable_names_are_kept():
    assert env_var("kubeconfig") == "KUBECONFIG"
    assert [env_var(n) for n in ("slack_bot_token", "slack_signing_secret", "slack_app_token")] == [
        "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
    ]
    assert env_var("temporal_ui_port") == "REMEDIATOR_TEMPORAL_UI_PORT"


def test_a_flag_overrides_its_environment_variable(clean_env):
    args: list[str] = []
    for name, (text, _) in SAMPLES.items():
        clean_env.setenv(env_var(name), text)
    for name, (text, _) in FLAG_VALUES.items():
        args += [flags(name)[0], text]
    for name, (env_text, flag, _) in SWITCH_ENV_AND_FLAG.items():
        clean_env.setenv(env_var(name), env_text)
        args.append(flag)
    clean_env.setenv("REMEDIATOR_AUTH_TOKEN", "from-env")  # credentials that do not depend on no_auth
    settings = parse_worker_command_line(clean_env, *args)
    for name, (_, value) in FLAG_VALUES.items():
        assert getattr(settings, name) == value, f"{flags(name)[0]} lost to {env_var(name)}"
    for name, (_, flag, value) in SWITCH_ENV_AND_FLAG.items():
        assert getattr(settings, name) is value, f"{flag} lost to {env_var(name)}"


def test_defaults_without_environment_or_flags(clean_env):
    settings = parse_worker_command_line(clean_env, "--no-auth")
    assert settings == Settings(no_auth=True)
    assert settings.heartbeat_timeout == timedelta(seconds=10) and settings.log_format == "text"
    assert settings.in_cluster is None and settings.state_dir == Path(".state")


def test_an_empty_variable_is_unset(clean_env):
    clean_env.setenv("KUBECONFIG", "")
    clean_env.setenv("REMEDIATOR_TEMPORAL_PORT", "")
    settings = Settings(no_auth=True)
    assert settings.kubeconfig is None and settings.temporal_port == 7233


def test_flag_names_follow_the_fields():
    for name in Settings.model_fields:
        assert flags(name)[0] == "--" + name.replace("_", "-")
    assert flags("in_cluster") == ["--in-cluster", "--no-in-cluster"]
    assert flags("no_auth") == ["--no-auth"] and flags("simulate") == ["--simulate"]
    assert flags("intake") == ["--intake", "--no-intake"]  # on by default: its negative form
    assert {n for n in Settings.model_fields if is_switch(n)} == {
        "no_auth", "in_cluster", "simulate", "dry_run", "temporal_tls", "intake"}
    assert flags("temporal_tls") == ["--temporal-tls", "--no-temporal-tls"]


@pytest.mark.parametrize("command", [["worker.py"], ["-m", "remediator.cli", "worker"]])
def test_help_lists_every_flag_with_its_variable_and_default(command):
    p = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"},
    )
    assert p.returncode == 0, p.stderr
    for name in Settings.model_fields:
        for flag in flags(name):
            assert flag in p.stdout, flag
        assert f"[env var: {env_var(name)}]" in p.stdout, name
    for shown in ("[default: 7233]", "[default: 10s]", "[default: text]", "[default: (auto)]", "[default: .state]"):
        assert shown in p.stdout, shown


# --------------------------------------------------------------------------- several clusters


def test_without_cluster_the_task_queue_and_ids_are_as_before(clean_env):
    settings = parse_worker_command_line(clean_env, "--no-auth")
    assert settings.cluster is None and settings.cluster_label == "cluster"
    assert settings.engine_task_queue == "remediator"


def test_cluster_names_the_task_queue(clean_env):
    settings = parse_worker_command_line(clean_env, "--no-auth", "--cluster", "prod-eu-1", "--task-queue", "rem")
    assert (settings.cluster, settings.engine_task_queue) == ("prod-eu-1", "rem-prod-eu-1")
    clean_env.setenv("REMEDIATOR_CLUSTER", "west")
    assert Settings(no_auth=True).engine_task_queue == "remediator-west"


@pytest.mark.parametrize(("value", "message"), [
    ("East", "--cluster (REMEDIATOR_CLUSTER): 'East' is not a DNS-1123 label: use lower-case letters, digits and '-', "
             "starting and ending with a letter or digit (e.g. 'prod-eu-1')"),
    ("eu/1", "--cluster (REMEDIATOR_CLUSTER): 'eu/1' is not a DNS-1123 label"),
    ("-east", "--cluster (REMEDIATOR_CLUSTER): '-east' is not a DNS-1123 label"),
    ("", "--cluster (REMEDIATOR_CLUSTER): '' is not a DNS-1123 label"),
    ("a" * 41, f"--cluster (REMEDIATOR_CLUSTER): '{'a' * 41}' is 41 characters long; at most 40"),
    ("node", "--cluster (REMEDIATOR_CLUSTER): 'node' is a target kind (deployment, statefulset, daemonset, node); "
             "workflow IDs would be ambiguous"),
])
def test_a_bad_cluster_name_is_refused_with_what_to_write(clean_env, value, message):
    result = CliRunner().invoke(cli.app, ["worker", "--no-auth", "--cluster", value])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_a_bad_cluster_label_is_refused(clean_env):
    clean_env.setenv("REMEDIATOR_CLUSTER_LABEL", "k8s-cluster")
    with pytest.raises(ValueError, match=r"--cluster-label \(REMEDIATOR_CLUSTER_LABEL\) must be a Prometheus label name"):
        Settings(no_auth=True)


def test_a_database_url_of_another_kind_is_refused(clean_env) -> None:
    with pytest.raises(ValueError, match="--database-url 'mysql://u@db/remediator': unsupported scheme 'mysql'; "
                       "expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE \\(REMEDIATOR_DATABASE_URL\\)"):
        Settings(no_auth=True, database_url="mysql://u@db/remediator")
    assert Settings(no_auth=True, state_dir=Path("/var/lib/remediator")).database == "sqlite:////var/lib/remediator/audit.db"
