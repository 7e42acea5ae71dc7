"""The ``remediator`` command line (typer).

``remediator worker`` runs the engine (same as ``python worker.py``); ``validate`` and
``schema`` check and describe playbooks; ``audit show|list`` read the audit trail;
``demo`` runs the local end-to-end demonstration. User mistakes end with a message and exit
code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from temporalio.service import RPCError

from remediator.app.approvals import (
    DecisionRefused,
    TemporalUnavailable,
    submit_decision,
)
from remediator.app.config import ConfigError, Settings
from remediator.app.runtime import StartupError, serve, setup_logging
from remediator.app.temporal import connect
from remediator.audit.store import AuditStore
from remediator.audit.view import render_run, render_runs, run_as_dict
from remediator.domain.durations import parse_duration
from remediator.domain.messages import ApprovalDecision, RemediationStatus
from remediator.k8s.client import KubeConfigError, load_api_client
from remediator.playbook.loader import json_schema, validate_path
from remediator.sim.demo import DemoError, run_demo
from remediator.sim.kube import Emulator

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-healing remediation engine for Kubernetes on Temporal.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit trail.")
app.add_typer(audit_app, name="audit")

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("remediator")

STATE_DIR = typer.Option(Path(".state"), "--state-dir", envvar="REMEDIATOR_STATE_DIR", help="Directory for the audit database and the embedded Temporal's SQLite file.")


def fail(message: str, code: int = 2) -> "typer.Exit":
    err_console.print("[bold red]error:[/] ", end="")
    err_console.print(message, highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def worker(
    temporal_address: Optional[str] = typer.Option(None, envvar="REMEDIATOR_TEMPORAL_ADDRESS", help="host:port of Temporal; unset starts the embedded dev server."),
    temporal_namespace: str = typer.Option("default", envvar="REMEDIATOR_TEMPORAL_NAMESPACE"),
    task_queue: str = typer.Option("remediator", envvar="REMEDIATOR_TASK_QUEUE"),
    temporal_port: int = typer.Option(7233, envvar="REMEDIATOR_TEMPORAL_PORT", help="Port of the embedded dev server."),
    temporal_ui_port: int = typer.Option(8233, envvar="REMEDIATOR_TEMPORAL_UI_PORT", help="Port of the embedded dev server's UI."),
    listen: str = typer.Option("127.0.0.1:9095", envvar="REMEDIATOR_LISTEN", help="host:port of the HTTP intake."),
    auth_token: Optional[str] = typer.Option(None, envvar="REMEDIATOR_AUTH_TOKEN", help="Bearer token Alertmanager must send."),
    basic_auth: Optional[str] = typer.Option(None, envvar="REMEDIATOR_BASIC_AUTH", help="user:password Alertmanager must send."),
    no_auth: bool = typer.Option(False, "--no-auth", envvar="REMEDIATOR_NO_AUTH", help="Accept alerts without credentials (local demo only)."),
    kubeconfig: Optional[str] = typer.Option(None, envvar="KUBECONFIG", help="kubeconfig file (default ~/.kube/config)."),
    context: Optional[str] = typer.Option(None, envvar="REMEDIATOR_CONTEXT", help="kubeconfig context (default: current)."),
    in_cluster: Optional[bool] = typer.Option(None, "--in-cluster/--no-in-cluster", envvar="REMEDIATOR_IN_CLUSTER", help="Use the pod's service account."),
    simulate: bool = typer.Option(False, "--simulate", envvar="REMEDIATOR_SIMULATE", help="Act on the built-in EMULATED cluster (seeded with a demo workload), never a real one."),
    prometheus_url: Optional[str] = typer.Option(None, envvar="REMEDIATOR_PROMETHEUS_URL", help="Prometheus base URL for promql health checks."),
    alertmanager_url: Optional[str] = typer.Option(None, envvar="REMEDIATOR_ALERTMANAGER_URL", help="Alertmanager base URL for the alert_resolved check."),
    state_dir: Path = STATE_DIR,
    playbook_dir: Path = typer.Option(Path("playbooks"), envvar="REMEDIATOR_PLAYBOOK_DIR", help="Directory of playbook YAML files."),
    public_url: Optional[str] = typer.Option(None, envvar="REMEDIATOR_PUBLIC_URL", help="Base URL people use to reach the intake (audit links in Slack)."),
    slack_bot_token: Optional[str] = typer.Option(None, envvar="SLACK_BOT_TOKEN", help="Slack bot token (xoxb-...) for approvals and escalations."),
    slack_signing_secret: Optional[str] = typer.Option(None, envvar="SLACK_SIGNING_SECRET", help="Slack signing secret: enables POST /slack/interactivity."),
    slack_app_token: Optional[str] = typer.Option(None, envvar="SLACK_APP_TOKEN", help="Slack app-level token (xapp-...): receive clicks over Socket Mode."),
    slack_api_url: str = typer.Option("https://slack.com/api/", envvar="REMEDIATOR_SLACK_API_URL", help="Slack Web API base URL."),
    heartbeat_timeout: str = typer.Option("10s", envvar="REMEDIATOR_HEARTBEAT_TIMEOUT", help="How long a silent worker is given before its work is retried on another (activity heartbeat and sticky task timeout)."),
    kube_retry_budget: str = typer.Option("3m", envvar="REMEDIATOR_KUBE_RETRY_BUDGET", help="How long Kubernetes calls are retried through an API server outage before the step fails."),
    settle_interval: str = typer.Option("10s", envvar="REMEDIATOR_SETTLE_INTERVAL", help="How often runs Temporal ended without an outcome (terminated, timed out) are given one."),
) -> None:
    """Run the Temporal worker and the Alertmanager webhook intake in one process."""

    try:
        settings = Settings(
            temporal_address=temporal_address,
            temporal_namespace=temporal_namespace,
            task_queue=task_queue,
            temporal_port=temporal_port,
            temporal_ui_port=temporal_ui_port,
            listen=listen,
            auth_token=auth_token,
            basic_auth=basic_auth,
            no_auth=no_auth,
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=in_cluster,
            simulate=simulate,
            prometheus_url=prometheus_url,
            alertmanager_url=alertmanager_url,
            state_dir=state_dir,
            playbook_dir=playbook_dir,
            public_url=public_url,
            slack_bot_token=slack_bot_token,
            slack_signing_secret=slack_signing_secret,
            slack_app_token=slack_app_token,
            slack_api_url=slack_api_url,
            heartbeat_timeout=heartbeat_timeout,
            kube_retry_budget=kube_retry_budget,
            settle_interval=settle_interval,
        )
    except (ConfigError, ValueError) as err:
        raise fail(_first_error(err))
    setup_logging(settings.simulate)
    api_client, emulator = _cluster(settings)
    try:
        asyncio.run(serve(settings, api_client))
    except StartupError as err:
        raise fail(str(err))
    except KeyboardInterrupt:
        pass
    finally:
        if emulator is not None:
            emulator.stop()


def _cluster(settings: Settings) -> tuple[Any, Emulator | None]:
    """The cluster the worker acts on: the one of the kubeconfig (or in-cluster), or the
    emulator, only when ``--simulate`` asks for it. Never one for the other."""
    if settings.simulate:
        emulator = Emulator().start()
        emulator.seed_demo()
        kubeconfig = emulator.write_kubeconfig(settings.state_dir / "simulated-kubeconfig")
        log.info("using the EMULATED cluster at %s (kubeconfig %s)", emulator.url, kubeconfig)
        return emulator.api_client(), emulator
    try:
        return load_api_client(settings.kubeconfig, settings.context, settings.in_cluster), None
    except KubeConfigError as err:
        raise fail(
            f"refusing to start: {err}\n"
            "remediator acts on a real cluster only when one is configured (--kubeconfig/--context or "
            "in-cluster). To try it without a cluster, run `make demo`, or `remediator worker --simulate "
            "--no-auth` for the emulated cluster."
        ) from None


@app.command()
def validate(path: Path = typer.Argument(Path("playbooks"), help="A playbook file or a directory of them.")) -> None:
    """Check playbooks; print every problem as file:line: field: message."""

    if not path.exists():
        raise fail(f"{path}: no such file or directory")
    problems = validate_path(path)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        raise typer.Exit(1)
    console.print(f"{path}: ok", highlight=False)


@app.command()
def schema() -> None:
    """Print the playbook JSON Schema (for editor autocompletion)."""

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@audit_app.command("show")
def audit_show(
    run: str = typer.Argument(..., help="Run ID (a unique prefix is enough)."),
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
    state_dir: Path = STATE_DIR,
) -> None:
    """Print one run as a readable timeline."""

    store = _open_store(state_dir, AuditStore)
    try:
        if output == "json":
            sys.stdout.write(json.dumps(run_as_dict(store, run), indent=2, default=str) + "\n")
        else:
            console.print(render_run(store, run))
    except LookupError as err:
        raise fail(str(err.args[0] if err.args else err))


@audit_app.command("list")
def audit_list(
    alertname: Optional[str] = typer.Option(None, help="Only runs started by this alertname."),
    target: Optional[str] = typer.Option(None, help="Only this target, e.g. deployment/prod/checkout."),
    playbook: Optional[str] = typer.Option(None, help="Only this playbook."),
    outcome: Optional[str] = typer.Option(None, help="healed, not_healed, failed, refused, rolled_back, resolved, needs_human, running."),
    since: Optional[str] = typer.Option(None, help="Started at or after: a duration ago (1h) or an RFC 3339 time."),
    until: Optional[str] = typer.Option(None, help="Started before: a duration ago or an RFC 3339 time."),
    limit: int = typer.Option(50, min=1),
    state_dir: Path = STATE_DIR,
) -> None:
    """List runs, newest first, filtered."""

    store = _open_store(state_dir, AuditStore)
    rows = store.list_runs(
        alertname=alertname, target=target, playbook=playbook, outcome=outcome,
        since=_when(since, "--since"), until=_when(until, "--until"), limit=limit,
    )
    console.print(render_runs(rows))


def _decide(run: str, decision: str, identity: str, comment: str, temporal_address: str, temporal_namespace: str, state_dir: Path) -> None:
    """Shared body of ``approve`` and ``reject``: the same Update, validator and audit as a Slack click."""


    store = _open_store(state_dir, AuditStore)
    try:
        row = store.get_run(run)
    except LookupError as err:
        raise fail(str(err.args[0] if err.args else err))

    async def go():
        client = await connect(temporal_address, temporal_namespace)
        handle = client.get_workflow_handle(row.workflow_id, run_id=row.run_id)
        status = await handle.query("status", result_type=RemediationStatus)
        if status.waiting is None:
            raise fail(f"run {row.run_id} ({row.target}) is not waiting for approval (phase {status.phase}, outcome {status.outcome})")
        request = status.waiting
        result = await submit_decision(
            client,
            row.workflow_id,
            row.run_id,
            ApprovalDecision(request_id=request.request_id, decision=decision, user_id=identity, via="cli", comment=comment),  # type: ignore[arg-type]
            audit=store,
        )
        return request, result

    try:
        request, result = asyncio.run(go())
    except DecisionRefused as err:
        raise fail(f"refused: {err}", code=3)
    except (TemporalUnavailable, RPCError, RuntimeError, OSError) as err:
        raise fail(f"cannot reach Temporal at {temporal_address}: {err}")
    console.print(f"step {request.step_index + 1} ({request.step_name}) of {row.target}: {result.message}", highlight=False, soft_wrap=True)


TEMPORAL_ADDRESS = typer.Option("127.0.0.1:7233", "--temporal-address", envvar="REMEDIATOR_TEMPORAL_ADDRESS", help="host:port of Temporal (the worker's).")
TEMPORAL_NAMESPACE = typer.Option("default", "--temporal-namespace", envvar="REMEDIATOR_TEMPORAL_NAMESPACE")
IDENTITY = typer.Option(..., "--as", help="Your Slack user ID (U...): the same approvers as in Slack count.")


@app.command()
def approve(
    run: str = typer.Argument(..., help="Run ID (a unique prefix is enough)."),
    identity: str = IDENTITY,
    comment: str = typer.Option("", help="Why, for the audit trail."),
    temporal_address: str = TEMPORAL_ADDRESS,
    temporal_namespace: str = TEMPORAL_NAMESPACE,
    state_dir: Path = STATE_DIR,
) -> None:
    """Approve the step a run is waiting on (when Slack is down)."""
    _decide(run, "approve", identity, comment, temporal_address, temporal_namespace, state_dir)


@app.command()
def reject(
    run: str = typer.Argument(..., help="Run ID (a unique prefix is enough)."),
    identity: str = IDENTITY,
    comment: str = typer.Option("", help="Why, for the audit trail."),
    temporal_address: str = TEMPORAL_ADDRESS,
    temporal_namespace: str = TEMPORAL_NAMESPACE,
    state_dir: Path = STATE_DIR,
) -> None:
    """Reject the step a run is waiting on: it does not run and the run ends needs_human."""
    _decide(run, "reject", identity, comment, temporal_address, temporal_namespace, state_dir)


@app.command()
def demo(
    state_dir: Path = typer.Option(Path(".state/demo"), "--state-dir", help="Where the demo keeps its state (wiped first)."),
    keep_running: bool = typer.Option(False, help="Keep everything running after the demo until Ctrl-C."),
    auto_approve: Optional[bool] = typer.Option(None, "--auto-approve/--no-auto-approve", help="Run the approval command for you (default: when not attached to a terminal)."),
) -> None:
    """Run the local demo: emulated cluster, embedded Temporal, real Prometheus and Alertmanager."""

    try:
        code = run_demo(state_dir, keep_running=keep_running, auto_approve=auto_approve)
    except DemoError as err:
        raise fail(str(err))
    raise typer.Exit(code)


def _open_store(state_dir: Path, cls):
    path = state_dir / "audit.db"
    if not path.exists():
        raise fail(f"no audit trail at {path} (set --state-dir or REMEDIATOR_STATE_DIR to the worker's state directory)")
    return cls(path)


def _when(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None

    try:
        return datetime.now(timezone.utc) - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{flag}: expected a duration such as 1h or an RFC 3339 time, got {text!r}")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _first_error(err: Exception) -> str:

    if isinstance(err, ValidationError):
        e = err.errors()[0]
        msg = str(e.get("msg", err))
        return msg.removeprefix("Value error, ")
    return str(err)


def main() -> None:  # pragma: no cover - console entry
    app()





if __name__ == "__main__":  # python -m remediator.cli
    app()
