"""The ``remediator`` command line (typer).

``remediator worker`` runs the engine (same as ``python worker.py``); its options are made
from ``remediator.app.config.Settings``, one per field (flag, environment variable, default and
help from the model), and only those given on the command line are passed on: ``Settings``
reads the environment for the rest. ``validate`` and ``schema`` check and describe playbooks;
``audit show|list`` read the audit trail; ``demo`` runs the local end-to-end demonstration.
User mistakes end with ``error: ...`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from temporalio.service import RPCError
from typer.core import TyperCommand

from remediator.app.approvals import (
    DecisionRefused,
    TemporalUnavailable,
    submit_decision,
)
from remediator.app.config import (
    Settings,
    base_type,
    choices,
    cli_default,
    default_text,
    env_var,
    field_named,
    flags,
    is_switch,
)
from remediator.app.logs import setup_logging
from remediator.app.runtime import StartupError, serve
from remediator.app.temporal import connect
from remediator.audit.store import AuditStore
from remediator.audit.view import render_run, render_runs, run_as_dict
from remediator.domain.durations import parse_duration
from remediator.domain.messages import ApprovalDecision
from remediator.k8s.client import KubeConfigError, load_api_client
from remediator.playbook.loader import json_schema, validate_path
from remediator.sim.demo import DemoError, run_demo
from remediator.sim.kube import Emulator
from workflows.remediation import RemediationWorkflow

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


class _OptionsFromSettings(TyperCommand):
    """``remediator worker``: its options come from ``Settings`` (``_settings_options``) and click
    reads no environment variable for them (they name theirs for ``--help`` only): ``Settings``
    reads the environment, so a value means the same, and fails the same, from either place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            param.value_from_envvar = lambda ctx: None  # type: ignore[method-assign]


def _settings_options() -> list[inspect.Parameter]:
    """One option per ``Settings`` field: ``--field-name``, its variable and default in ``--help``,
    its description as the help. Options are parsed as text and validated by ``Settings``."""
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    for name, field in Settings.model_fields.items():
        help_text = (field.description or "").replace("`", "")
        shown = (default_text(name) or "").replace("`", "")
        if is_switch(name):
            option = typer.Option(
                field.default, "/".join(flags(name)), envvar=env_var(name), help=help_text,
                show_default=shown if field.default is None else False,
            )
            annotation: Any = Optional[bool]
        else:
            value = cli_default(name)
            option = typer.Option(
                value, flags(name)[0], envvar=env_var(name), help=help_text, metavar=_metavar(name),
                show_default=True if value is not None else (shown or False),
            )
            annotation = Optional[str]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def _metavar(name: str) -> str:
    if choices(name):
        return "[" + "|".join(choices(name)) + "]"
    kind = base_type(name)
    return {int: "INTEGER", Path: "PATH", timedelta: "DURATION"}.get(kind, "TEXT")


def worker(ctx: typer.Context, **options: Any) -> None:
    """Run the Temporal worker and the Alertmanager webhook intake in one process.

    Every option can also be set by its environment variable; an option given here wins."""

    # Typer vendors click: its ParameterSource is not click's, so compare by name.
    given = {name: value for name, value in options.items() if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    try:
        settings = Settings(**given)
    except ValueError as err:  # ValidationError and ConfigError
        raise fail(_first_error(err))
    setup_logging(settings.simulate, log_format=settings.log_format)
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


worker.__signature__ = inspect.Signature(_settings_options())  # type: ignore[attr-defined]
app.command(cls=_OptionsFromSettings)(worker)


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


def _decide(run: str, decision: Literal["approve", "reject"], identity: str, comment: str, temporal_address: str, temporal_namespace: str, state_dir: Path) -> None:
    """Shared body of ``approve`` and ``reject``: the same Update, validator and audit as a Slack click."""


    store = _open_store(state_dir, AuditStore)
    try:
        row = store.get_run(run)
    except LookupError as err:
        raise fail(str(err.args[0] if err.args else err))

    async def go():
        client = await connect(temporal_address, temporal_namespace)
        handle = client.get_workflow_handle(row.workflow_id, run_id=row.run_id)
        status = await handle.query(RemediationWorkflow.status)
        if status.waiting is None:
            raise fail(f"run {row.run_id} ({row.target}) is not waiting for approval (phase {status.phase}, outcome {status.outcome})")
        request = status.waiting
        result = await submit_decision(
            client,
            row.workflow_id,
            row.run_id,
            ApprovalDecision(request_id=request.request_id, decision=decision, user_id=identity, via="cli", comment=comment),
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


def _decision_command(decision: Literal["approve", "reject"], doc: str):
    """The ``approve`` and ``reject`` commands: one body, the decision as their only difference."""

    def command(
        run: str = typer.Argument(..., help="Run ID (a unique prefix is enough)."),
        identity: str = IDENTITY,
        comment: str = typer.Option("", help="Why, for the audit trail."),
        temporal_address: str = TEMPORAL_ADDRESS,
        temporal_namespace: str = TEMPORAL_NAMESPACE,
        state_dir: Path = STATE_DIR,
    ) -> None:
        _decide(run, decision, identity, comment, temporal_address, temporal_namespace, state_dir)

    command.__doc__ = doc
    return command


app.command("approve")(_decision_command("approve", "Approve the step a run is waiting on (when Slack is down)."))
app.command("reject")(
    _decision_command("reject", "Reject the step a run is waiting on: it does not run and the run ends needs_human.")
)


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
    """The message of the first problem, naming the flag and variable a value came from:
    ``--temporal-port (REMEDIATOR_TEMPORAL_PORT): input should be a valid integer, ..., got 'x'``."""
    if not isinstance(err, ValidationError):
        return str(err)
    e = err.errors()[0]
    msg = str(e.get("msg", err)).removeprefix("Value error, ")
    name = field_named(str(e["loc"][0])) if e.get("loc") else None
    if name is None:
        return msg
    got = e.get("input")
    if isinstance(got, str) and "got " not in msg:
        msg = f"{msg}, got {got!r}"
    return f"{flags(name)[0]} ({env_var(name)}): {msg[:1].lower()}{msg[1:]}"


def main() -> None:  # pragma: no cover - console entry
    app()





if __name__ == "__main__":  # python -m remediator.cli
    app()
