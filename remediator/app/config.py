"""Configuration of the worker process, from flags and environment variables.

One ``Settings`` object is built by the CLI (``remediator worker`` / ``python worker.py``)
from typer options, each of which also reads the ``REMEDIATOR_*`` environment variable
listed in the README's configuration table. Everything else receives the object.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from remediator.domain.durations import Duration
from remediator.domain.runs import TASK_QUEUE


class ConfigError(ValueError):
    """A setting is missing or contradicts another; the message says which and what to do."""


class Settings(BaseModel):
    """Worker and intake settings.

    ``temporal_address`` None starts the embedded dev server (SQLite file in ``state_dir``).
    ``listen``: ``host:port`` of the HTTP intake. Auth: ``auth_token`` (bearer) and/or
    ``basic_auth`` (``user:password``), both as Alertmanager's ``http_config`` sends them;
    one is required unless ``no_auth`` (local demo only).

    Slack: ``slack_bot_token`` (xoxb-, for chat.postMessage/update and usergroups), and for the
    Approve/Reject buttons either ``slack_signing_secret`` (HTTP interactivity endpoint
    ``POST /slack/interactivity``) or ``slack_app_token`` (xapp-, Socket Mode, no public URL).
    ``slack_api_url`` points slack-sdk's WebClient elsewhere (tests use a local emulator).
    ``public_url``: how people reach the intake, for audit-timeline links in Slack.

    Durability: ``heartbeat_timeout`` is how long a worker may go silent before Temporal takes
    it for dead (activity heartbeat timeout, and sticky workflow-task timeout): its work is
    retried on another worker that much later. ``kube_retry_budget``: how long a Kubernetes
    call is retried with backoff (an API server outage) before its step fails.
    ``settle_interval``: how often runs that Temporal ended without an outcome (terminated,
    timed out) are looked for and given one (remediator.app.settle).
    """

    model_config = ConfigDict(frozen=True)

    temporal_address: str | None = None
    temporal_namespace: str = "default"
    task_queue: str = TASK_QUEUE
    temporal_ui_port: int = 8233
    temporal_port: int = 7233
    listen: str = "127.0.0.1:9095"
    auth_token: str | None = None
    basic_auth: str | None = None
    no_auth: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    simulate: bool = False
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    state_dir: Path = Path(".state")
    playbook_dir: Path = Path("playbooks")
    public_url: str | None = None
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    heartbeat_timeout: Duration = timedelta(seconds=10)
    kube_retry_budget: Duration = timedelta(minutes=3)
    settle_interval: Duration = timedelta(seconds=10)

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
        if self.settle_interval <= timedelta(0):
            raise ConfigError("--settle-interval must be more than 0s")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--listen must be host:port, got {self.listen!r}")
        return self

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
    def temporal_db_path(self) -> Path:
        return self.state_dir / "temporal.db"
