"""Configuration of the worker process: one declaration, three readers.

``Settings`` (pydantic-settings) declares every setting once: its type, default, meaning
(``description``) and environment variable (``REMEDIATOR_<FIELD>``, or the established name
given as its ``validation_alias``: ``KUBECONFIG``, ``SLACK_BOT_TOKEN``, ...). From it:

* ``Settings()`` reads the environment, and keyword arguments override it, so the CLI passes
  only the flags given on the command line (a flag beats its environment variable);
* ``remediator worker`` / ``python worker.py`` build one option per field (remediator.cli),
  named by ``flags``, with ``env_var`` and ``default_text`` in ``--help``;
* ``markdown_table`` writes the README's configuration table (a test keeps them equal).

Everything else receives the built object.
"""

from __future__ import annotations

import re
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from remediator.audit.chain import AuditKeyError, read_key
from remediator.db import DatabaseUrlError, database_url
from remediator.domain.durations import Duration, format_duration
from remediator.domain.runs import TASK_QUEUE, check_cluster_name, cluster_task_queue

ENV_PREFIX = "REMEDIATOR_"

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class ConfigError(ValueError):
    """A setting is missing or contradicts another; the message says which and what to do."""


def _setting(default: Any, meaning: str, *, env: str | None = None, shown: str | None = None) -> Any:
    """A field: ``meaning`` (markdown) for the README and ``--help``; ``env`` when the variable
    is not ``REMEDIATOR_<FIELD>``; ``shown``: what an unset default means, for people."""
    return Field(
        default,
        description=meaning,
        validation_alias=env,
        json_schema_extra={"default_text": shown} if shown else None,
    )


class TemporalSettings(BaseSettings):
    """How to reach Temporal: the worker's settings (``Settings``) and the CLI commands that talk
    to Temporal (``remediator approve``...) read these the same way, flags or environment.

    ``temporal_address`` unset starts the embedded dev server (the worker only). TLS is on with
    any ``temporal_tls_*`` file, a server name or an API key, unless ``temporal_tls`` says
    otherwise; remediator.app.temporal.TemporalConnection reads the files.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # KUBECONFIG= is unset, as for kubectl
        populate_by_name=True,  # Settings(kubeconfig=...) as well as Settings(KUBECONFIG=...)
    )

    temporal_address: str | None = _setting(None, "`host:port` of the Temporal frontend", shown="unset: embedded dev server")
    temporal_namespace: str = _setting("default", "Temporal namespace")
    temporal_tls: bool | None = _setting(
        None,
        "connect to Temporal over TLS (the system's CA roots unless `--temporal-tls-ca`)",
        shown="auto: on with any `--temporal-tls-*` file or an API key",
    )
    temporal_tls_ca: Path | None = _setting(None, "PEM file of the CA(s) that signed the Temporal frontend's certificate")
    temporal_tls_cert: Path | None = _setting(None, "PEM client certificate for mutual TLS (with `--temporal-tls-key`)")
    temporal_tls_key: Path | None = _setting(None, "PEM private key of `--temporal-tls-cert`")
    temporal_tls_server_name: str | None = _setting(
        None, "name the frontend's certificate must carry (SNI)", shown="the host of `--temporal-address`"
    )
    temporal_api_key: str | None = _setting(None, "API key sent as `Authorization: Bearer` (Temporal Cloud)")
    temporal_api_key_file: Path | None = _setting(None, "file holding the API key (instead of `--temporal-api-key`)")
    temporal_ui_url: str | None = _setting(
        None, "base URL of the Temporal UI for links in Slack and the audit trail",
        shown="the embedded server's UI; none for an external Temporal",
    )

    @model_validator(mode="after")
    def _check_temporal(self) -> "TemporalSettings":
        tls_files = {
            "--temporal-tls-ca": self.temporal_tls_ca,
            "--temporal-tls-cert": self.temporal_tls_cert,
            "--temporal-tls-key": self.temporal_tls_key,
        }
        given = [flag for flag, v in tls_files.items() if v is not None]
        if self.temporal_tls_server_name:
            given.append("--temporal-tls-server-name")
        if self.temporal_api_key or self.temporal_api_key_file:
            given.append("--temporal-api-key" if self.temporal_api_key else "--temporal-api-key-file")
        if self.temporal_tls:
            given.append("--temporal-tls")
        if given and not self.temporal_address:
            raise ConfigError(
                f"{', '.join(given)} need --temporal-address (REMEDIATOR_TEMPORAL_ADDRESS): the embedded dev server "
                "is plain gRPC on loopback"
            )
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ConfigError("--temporal-tls-cert and --temporal-tls-key go together (mutual TLS needs both)")
        if self.temporal_api_key and self.temporal_api_key_file:
            raise ConfigError("give --temporal-api-key or --temporal-api-key-file, not both")
        contradicting = [g for g in given if g.startswith("--temporal-tls-")]
        if self.temporal_tls is False and contradicting:
            raise ConfigError(f"--no-temporal-tls contradicts {', '.join(contradicting)}")
        return self

    @property
    def temporal_tls_on(self) -> bool:
        """TLS to Temporal: ``temporal_tls`` when set, else on with any TLS file, server name or API key."""
        if self.temporal_tls is not None:
            return self.temporal_tls
        return any((
            self.temporal_tls_ca, self.temporal_tls_cert, self.temporal_tls_server_name,
            self.temporal_api_key, self.temporal_api_key_file,
        ))


class Settings(TemporalSettings):
    """Worker and intake settings, from the environment and then the command line.

    ``temporal_address`` unset starts the embedded dev server (SQLite file in ``state_dir``).
    The intake needs credentials (``auth_token`` and/or ``basic_auth``, as Alertmanager's
    ``http_config`` sends them) unless ``no_auth`` (local demo only). Slack approvals need
    ``slack_bot_token`` and, for the buttons, ``slack_signing_secret`` (HTTP) or
    ``slack_app_token`` (Socket Mode, no public URL).
    """

    task_queue: str = _setting(
        TASK_QUEUE, "Temporal task queue; with `--cluster NAME` the engine polls `TASK_QUEUE-NAME`"
    )
    cluster: str | None = _setting(
        None,
        "name of the Kubernetes cluster this engine remediates (a DNS-1123 label, e.g. `prod-eu-1`): workflow IDs "
        "become `remediation/NAME/<kind>/<ns>/<name>` and the task queue `TASK_QUEUE-NAME`, so engines of several "
        "clusters share one Temporal namespace; the intake takes alerts whose `--cluster-label` names it or is absent",
        shown="unset: one cluster, IDs without a cluster",
    )
    cluster_label: str = _setting(
        "cluster",
        "alert label that names an alert's cluster (with `--cluster` or `--clusters`; Prometheus `external_labels`); "
        "an alert naming a cluster the intake does not route to is answered `unknown_cluster`",
    )
    clusters: str | None = _setting(
        None,
        "comma-separated clusters this intake routes alerts to, by `--cluster-label`, besides `--cluster`: each "
        "alert's run goes to `remediation/CLUSTER/...` on task queue `TASK_QUEUE-CLUSTER`, polled by that cluster's "
        "workers (`remediator worker --no-intake --cluster CLUSTER`); needs the database they share",
        shown="`--cluster` alone",
    )
    temporal_port: int = _setting(7233, "port of the embedded dev server")
    temporal_ui_port: int = _setting(8233, "port of the embedded dev server's UI")
    listen: str = _setting("127.0.0.1:9095", "`host:port` of the HTTP intake")
    intake: bool = _setting(
        True,
        "serve the Alertmanager webhook, Slack interactivity and the control API in this process; `--no-intake` runs "
        "the Temporal worker only, with `GET /healthz` on `--listen` for probes (needs `--temporal-address`)",
    )
    auth_token: str | None = _setting(None, "bearer token Alertmanager must send")
    basic_auth: str | None = _setting(None, "`user:password` Alertmanager must send")
    no_auth: bool = _setting(False, "accept alerts without credentials (local demo only)")
    read_timeout: Duration = _setting(
        timedelta(seconds=10),
        "how long the intake waits for a request's headers, and then for its body; a slower client gets 408 or is "
        "disconnected",
    )
    metrics_listen: str | None = _setting(
        None,
        "`host:port` where the Temporal SDK's Prometheus exporter serves the worker's metrics and the engine's "
        "(runs, steps, approvals, escalations); the intake's are on `--listen` `/metrics`",
        shown="off",
    )
    max_connections: int = _setting(
        200, "HTTP connections the intake serves at once; a request on a connection beyond them gets 503"
    )
    kubeconfig: str | None = _setting(None, "kubeconfig file", env="KUBECONFIG", shown="`~/.kube/config`")
    context: str | None = _setting(None, "kubeconfig context", shown="current context")
    in_cluster: bool | None = _setting(None, "use the pod's service account", shown="auto")
    simulate: bool = _setting(False, "act on the built-in emulated cluster, never a real one")
    prometheus_url: str | None = _setting(None, "Prometheus for `promql` health checks")
    alertmanager_url: str | None = _setting(None, "Alertmanager API for the `alert_resolved` check")
    state_dir: Path = _setting(
        Path(".state"), "audit database (`audit.db`, unless `--database-url`) and embedded Temporal's `temporal.db`"
    )
    database_url: str | None = _setting(
        None,
        "database of the audit trail, the brakes (pauses, kill switch, limits) and the Slack state: "
        "`sqlite:///PATH` (one worker; created and upgraded at start) or `postgresql://USER:PASSWORD@HOST:PORT/DB` "
        "(shared by replicas; schema by `remediator db upgrade`)",
        shown="`sqlite:///STATE_DIR/audit.db`",
    )
    audit_key_file: Path | None = _setting(
        None,
        "file holding the key (at least 16 bytes) that signs the audit trail's hash chain (HMAC-SHA256); "
        "`remediator audit verify` needs the same file",
        shown="unset: SHA-256, unkeyed",
    )
    playbook_dir: Path = _setting(Path("playbooks"), "directory of playbook YAML files")
    policy: Path = _setting(
        Path("policy.yaml"),
        "policy file: namespaces, cluster-wide limits, GitOps rule (validated at start; `remediator schema --policy`)",
    )
    dry_run: bool = _setting(
        False, "send every mutation with `dryRun=All`: the API server validates and answers, nothing changes"
    )
    public_url: str | None = _setting(
        None, "how people reach the intake (audit-timeline links in Slack)", shown="`http://LISTEN`"
    )
    slack_bot_token: str | None = _setting(
        None, "bot token (`xoxb-`) for approval requests and notices", env="SLACK_BOT_TOKEN"
    )
    slack_signing_secret: str | None = _setting(
        None, "enables the interactivity endpoint `POST /slack/interactivity`", env="SLACK_SIGNING_SECRET"
    )
    slack_app_token: str | None = _setting(
        None, "app-level token (`xapp-`): receive button clicks over Socket Mode instead", env="SLACK_APP_TOKEN"
    )
    slack_api_url: str = _setting("https://slack.com/api/", "Slack Web API base URL")
    heartbeat_timeout: Duration = _setting(
        timedelta(seconds=10),
        "how long a silent worker is given before its activity (and its sticky workflow task) is retried on another",
    )
    kube_retry_budget: Duration = _setting(
        timedelta(minutes=3),
        "how long Kubernetes calls are retried with backoff through an API server outage before the step fails",
    )
    settle_interval: Duration = _setting(
        timedelta(seconds=10),
        "how often runs that Temporal ended without an outcome (terminated, timed out) are looked for and given one",
    )
    log_format: Literal["text", "json"] = _setting(
        "text",
        "`text`: one line per event, for people; `json`: one JSON object per line (time, level, logger, "
        "message, and the run's `workflow_id`, `run_id`, `activity_type`, `attempt`...), for log pipelines",
    )

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if not self.no_auth and not (self.auth_token or self.basic_auth):
            raise ConfigError(
                "the intake needs credentials: set --auth-token (REMEDIATOR_AUTH_TOKEN) or --basic-auth "
                "user:password (REMEDIATOR_BASIC_AUTH), or pass --no-auth for a local demo"
            )
        if self.basic_auth is not None and ":" not in self.basic_auth:
            raise ConfigError("--basic-auth must be user:password")
        if self.heartbeat_timeout < timedelta(seconds=1):
            raise ConfigError(f"--heartbeat-timeout must be at least 1s, got {self.heartbeat_timeout.total_seconds():g}s")
        if self.read_timeout <= timedelta(0):
            raise ConfigError("--read-timeout must be more than 0s")
        if self.max_connections < 1:
            raise ConfigError(f"--max-connections must be at least 1, got {self.max_connections}")
        if self.audit_key_file is not None:
            self.audit_key  # noqa: B018  (read now: a bad key file stops the start, not a run)
        if self.database_url is not None:
            try:
                database_url(self.database_url)
            except DatabaseUrlError as err:
                raise ConfigError(f"{err} (REMEDIATOR_DATABASE_URL)") from None
        if self.settle_interval <= timedelta(0):
            raise ConfigError("--settle-interval must be more than 0s")
        if self.cluster is not None:
            refused = check_cluster_name(self.cluster)
            if refused is not None:
                raise ConfigError(f"--cluster (REMEDIATOR_CLUSTER): {refused}")
        for name in self.routed_clusters:
            refused = check_cluster_name(name)
            if refused is not None:
                raise ConfigError(f"--clusters (REMEDIATOR_CLUSTERS): {refused}")
        if not _LABEL_NAME.fullmatch(self.cluster_label):
            raise ConfigError(
                f"--cluster-label (REMEDIATOR_CLUSTER_LABEL) must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*), "
                f"got {self.cluster_label!r}"
            )
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--listen must be host:port, got {self.listen!r}")
        if self.metrics_listen is not None:
            host, _, port = self.metrics_listen.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"--metrics-listen must be host:port, got {self.metrics_listen!r}")
        return self

    @property
    def routed_clusters(self) -> tuple[str, ...]:
        """The clusters the intake routes alerts to: ``--cluster`` first, then those of
        ``--clusters`` (no repeats); empty without either (no cluster in workflow IDs)."""
        listed = [c.strip() for c in (self.clusters or "").split(",") if c.strip()]
        return tuple(dict.fromkeys([*([self.cluster] if self.cluster else []), *listed]))

    @property
    def engine_task_queue(self) -> str:
        """The task queue of this engine's remediations: ``task_queue``, or ``task_queue-cluster``
        with ``--cluster`` (remediator.domain.runs.cluster_task_queue)."""
        return cluster_task_queue(self.task_queue, self.cluster)

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.db"

    @property
    def database(self) -> str:
        """``database_url``, else the SQLite file ``sqlite:///<state_dir>/audit.db``."""
        return self.database_url or f"sqlite:///{self.audit_path}"

    @property
    def audit_key(self) -> bytes | None:
        """The audit chain's HMAC key read from ``audit_key_file``, or None when unset.

        Raises:
            ConfigError: the file cannot be read or holds fewer than 16 bytes.
        """
        if self.audit_key_file is None:
            return None
        try:
            return read_key(self.audit_key_file)
        except AuditKeyError as err:
            raise ConfigError(f"--audit-key-file (REMEDIATOR_AUDIT_KEY_FILE): {err}") from None

    @property
    def temporal_db_path(self) -> Path:
        return self.state_dir / "temporal.db"


def field_named(key: str) -> str | None:
    """The field a validation error's location names: a field name or its variable's name."""
    for name, field in Settings.model_fields.items():
        if key in (name, field.validation_alias):
            return name
    return None


def env_var(name: str) -> str:
    """The environment variable of a field: ``REMEDIATOR_TEMPORAL_PORT``, ``KUBECONFIG``..."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + name.upper()


def is_switch(name: str) -> bool:
    """A yes/no setting: its flag takes no value (``--simulate``)."""
    return base_type(name) is bool


def flags(name: str) -> list[str]:
    """The flag of a field, ``--`` + its name with ``-``; a switch without a default (yes, no or
    auto) or on by default has its negative form too: ``["--in-cluster", "--no-in-cluster"]``."""
    flag = "--" + name.replace("_", "-")
    if is_switch(name) and Settings.model_fields[name].default is not False:
        return [flag, "--no-" + flag.removeprefix("--")]
    return [flag]


def default_text(name: str) -> str | None:
    """The default as a person reads it (markdown): ``10s``, ``off``, ``current context``; None
    when unset means nothing more than unset."""
    return _described_default(name) or cli_default(name)


def _described_default(name: str) -> str | None:
    extra = Settings.model_fields[name].json_schema_extra
    return extra.get("default_text") if isinstance(extra, dict) else None  # type: ignore[return-value]


def cli_default(name: str) -> str | None:
    """The default as it is written on the command line (``10s``, ``7233``, ``.state``), or
    ``off`` for a switch; None when the field has no default value."""
    value = Settings.model_fields[name].default
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)


def choices(name: str) -> tuple[str, ...]:
    """The values a ``Literal`` field accepts (``text``, ``json``); () for other fields."""
    base = base_type(name)
    return tuple(typing.get_args(base)) if typing.get_origin(base) is Literal else ()


def base_type(name: str) -> Any:
    """The type of a field without ``| None`` (``Duration`` is ``timedelta``)."""
    annotation = Settings.model_fields[name].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    return annotation


def markdown_table() -> str:
    """The README's configuration table: one row per field (flag, variable, default, meaning)."""
    rows = ["| Flag | Environment variable | Default | Meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        value = cli_default(name)
        shown = _described_default(name) or ("—" if value is None else value if is_switch(name) else f"`{value}`")
        cells = [
            " / ".join(f"`{f}`" for f in flags(name)),
            f"`{env_var(name)}`",
            shown,
            (field.description or "").replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m remediator.app.config: print the README table
    print(markdown_table(), end="")
