"""The ``remediator`` command line (typer).

``remediator worker`` runs the engine (same as ``python worker.py``); its options are made
from ``remediator.app.config.Settings``, one per field (flag, environment variable, default and
help from the model), and only those given on the command line are passed on: ``Settings``
reads the environment for the rest. ``validate`` and ``schema`` check and describe playbooks;
``audit show|list|intake|export`` read the audit trail and ``audit verify`` checks its hash
chain; ``pause``, ``resume`` and ``status`` are the kill
switch (remediator.app.control, the same Controller as ``POST /api/v1/pause``); ``demo`` runs
the local end-to-end demonstration.
User mistakes end with ``error: ...`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import atexit
import getpass
import inspect
import json
import logging
import os
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, Optional, get_args

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from temporalio.service import RPCError
from typer.core import TyperCommand

from remediator.app.approvals import (
    DecisionRefused,
    TemporalUnavailable,
    find_run,
    submit_decision,
)
from remediator.app.config import (
    ConfigError,
    Settings,
    TemporalSettings,
    base_type,
    choices,
    cli_default,
    default_text,
    env_var,
    field_named,
    flags,
    is_switch,
)
from remediator.app.control import Controller, InvalidRequest, NotPaused, status_text
from remediator.app.logs import setup_logging
from remediator.app.runtime import StartupError, serve
from remediator.app.temporal import TemporalConnection
from remediator.audit.brakes import Brakes
from remediator.audit.chain import AuditKeyError, read_key
from remediator.audit.store import SCHEMA_VERSION, AuditStore, IntakeKind
from remediator.audit.view import render_intake, render_run, render_runs, run_as_dict
from remediator.db import Database, DatabaseError, DatabaseUnavailable, DatabaseUrlError, SchemaError, reason
from remediator.db import database_url as database_url_of
from remediator.db.migrate import upgrade as upgrade_schema
from remediator.domain.durations import parse_duration
from remediator.domain.messages import ApprovalDecision, PauseScope
from remediator.domain.policy import Policy
from remediator.domain.runs import cluster_of, qualified_target
from remediator.k8s.client import KubeConfigError, load_api_client
from remediator.playbook.loader import PlaybookError, PlaybookSet, json_schema, load_directory, validate_path
from remediator.playbook.policy_loader import PolicyError, load_policy, policy_json_schema, validate_policy
from remediator.sim.demo import DemoError, engine_api_client, run_demo
from remediator.sim.kube import Emulator
from remediator.slack.client import make_client
from remediator.slack.threads import SlackThreads
from workflows.remediation import RemediationWorkflow

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-healing remediation engine for Kubernetes on Temporal.")
audit_app = typer.Typer(no_args_is_help=True, help="Read, verify and export the audit trail.")
app.add_typer(audit_app, name="audit")
db_app = typer.Typer(no_args_is_help=True, help="The database's schema (audit trail, brakes, Slack state).")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("remediator")

STATE_DIR = typer.Option(Path(".state"), "--state-dir", envvar="REMEDIATOR_STATE_DIR", help="Directory for the audit database and the embedded Temporal's SQLite file.")
DATABASE_URL = typer.Option(
    None, "--database-url", envvar="REMEDIATOR_DATABASE_URL", show_default="sqlite:///STATE_DIR/audit.db",
    help="The worker's database (audit trail, brakes, Slack state): sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB.",
)


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
    """Run the Temporal worker and the Alertmanager webhook intake in one process
    (``--no-intake``: the worker only, its other half being ``remediator intake``).

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


def intake(ctx: typer.Context, **options: Any) -> None:
    """Run the HTTP intake only: the Alertmanager webhook, Slack interactivity, the control API.

    Remediation runs on the workers (``remediator worker --no-intake``) of the same Temporal
    (--temporal-address) and task queue; this process needs no cluster credentials. Takes the
    worker's options; those of the worker alone (--kubeconfig...) are ignored here."""
    given = {name: value for name, value in options.items() if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    try:
        settings = Settings(**given)
    except ValueError as err:  # ValidationError and ConfigError
        raise fail(_first_error(err))
    if not settings.intake:
        raise fail("remediator intake with --no-intake would serve nothing; run `remediator worker --no-intake` for the worker alone")
    if settings.simulate:
        raise fail("--simulate acts on the emulated cluster of a worker; `remediator intake` runs no worker "
                   "(use `remediator worker --simulate`)")
    setup_logging(False, log_format=settings.log_format)
    try:
        asyncio.run(serve(settings, None, run_worker=False))
    except StartupError as err:
        raise fail(str(err))
    except KeyboardInterrupt:
        pass


intake.__signature__ = inspect.Signature(_settings_options())  # type: ignore[attr-defined]
app.command(cls=_OptionsFromSettings)(intake)


def _cluster(settings: Settings) -> tuple[Any, Emulator | None]:
    """The cluster the worker acts on: the one of the kubeconfig (or in-cluster), or the
    emulator, only when ``--simulate`` asks for it. Never one for the other."""
    if settings.simulate:
        emulator = Emulator().start()
        emulator.seed_demo()
        kubeconfig = emulator.write_kubeconfig(settings.state_dir / "simulated-kubeconfig")
        log.info("using the EMULATED cluster at %s (kubeconfig %s)", emulator.url, kubeconfig)
        return engine_api_client(emulator), emulator
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
def validate(
    path: Path = typer.Argument(Path("playbooks"), help="A playbook file or a directory of them."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Also check this policy file (e.g. policy.yaml)."),
) -> None:
    """Check playbooks (and a policy file); print every problem as file:line: field: message."""

    if not path.exists():
        raise fail(f"{path}: no such file or directory")
    problems = validate_path(path)
    if policy is not None:
        problems += validate_policy(policy)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        raise typer.Exit(1)
    console.print(f"{path}: ok", highlight=False)
    if policy is not None:
        console.print(f"{policy}: ok", highlight=False)


@app.command()
def schema(
    policy: bool = typer.Option(False, "--policy", help="The policy file's schema instead of the playbooks'."),
) -> None:
    """Print the playbook (or, with --policy, the policy) JSON Schema, for editor autocompletion."""

    sys.stdout.write(json.dumps(policy_json_schema() if policy else json_schema(), indent=2) + "\n")


AUDIT_OUTPUT = typer.Option("text", "--output", "-o", help="text, json or yaml")
AUDIT_KEY_FILE = typer.Option(
    None, "--audit-key-file", envvar=env_var("audit_key_file"), show_default=False,
    help="The key file the worker signs the audit chain with (HMAC-SHA256); needed to verify a keyed chain.",
)


@db_app.command("upgrade")
def db_upgrade(
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """Create or upgrade the database's schema to this remediator's; run it before the workers of a new release start.

    PostgreSQL: the alembic migrations up to this release's revision, in one transaction
    (workers refuse a database at another revision). SQLite: the file is created or
    upgraded, as a worker starting on it does anyway."""

    try:
        db = Database(database_url or state_dir / "audit.db")
    except (DatabaseUrlError, DatabaseUnavailable) as err:
        raise fail(str(err))
    try:
        if db.dialect == "postgresql":
            before, after = upgrade_schema(db)
            _say(f"{db.display}: schema revision {after}" + (" (already)" if before == after else f" (was {before or 'empty'})"))
        else:
            AuditStore(db).close()
            SlackThreads(db).close()
            _say(f"{db.path}: schema version {SCHEMA_VERSION}")
    except SchemaError as err:
        raise fail(str(err))
    except DatabaseError as err:
        raise fail(f"{db.display}: the schema cannot be upgraded: {reason(err)}")
    finally:
        db.dispose()


@audit_app.command("show")
def audit_show(
    run: str = typer.Argument(..., help="Run ID (a unique prefix is enough)."),
    output: str = AUDIT_OUTPUT,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """Print one run as a readable timeline."""

    _check_audit_output(output)
    store = _open_store(state_dir, database_url, AuditStore)
    try:
        if not _print_data(output, lambda: run_as_dict(store, run)):
            console.print(render_run(store, run))
    except LookupError as err:
        raise fail(str(err.args[0] if err.args else err))


@audit_app.command("list")
def audit_list(
    alertname: Optional[str] = typer.Option(None, help="Only runs started by this alertname."),
    target: Optional[str] = typer.Option(None, help="Only this target, e.g. deployment/prod/checkout."),
    cluster: Optional[str] = typer.Option(None, help="Only runs of this cluster (engines started with --cluster)."),
    playbook: Optional[str] = typer.Option(None, help="Only this playbook."),
    outcome: Optional[str] = typer.Option(None, help="healed, not_healed, failed, refused, rolled_back, resolved, needs_human, running."),
    since: Optional[str] = typer.Option(None, help="Started at or after: a duration ago (1h) or an RFC 3339 time."),
    until: Optional[str] = typer.Option(None, help="Started before: a duration ago or an RFC 3339 time."),
    limit: int = typer.Option(50, min=1),
    output: str = AUDIT_OUTPUT,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """List runs, newest first, filtered."""

    _check_audit_output(output)
    store = _open_store(state_dir, database_url, AuditStore)
    rows = store.list_runs(
        alertname=alertname, target=target, playbook=playbook, outcome=outcome,
        since=_when(since, "--since"), until=_when(until, "--until"), limit=limit, cluster=cluster,
    )
    if not _print_data(output, lambda: [r.model_dump(mode="json") for r in rows]):
        console.print(render_runs(rows))


@audit_app.command("intake")
def audit_intake(
    kind: Optional[str] = typer.Option(None, help="Only this kind: " + ", ".join(get_args(IntakeKind)) + "."),
    alertname: Optional[str] = typer.Option(None, help="Only alerts of this alertname."),
    playbook: Optional[str] = typer.Option(None, help="Only records naming this playbook."),
    run: Optional[str] = typer.Option(None, "--run", help="Only records naming this run (full run ID)."),
    since: Optional[str] = typer.Option(None, help="At or after: a duration ago (1h) or an RFC 3339 time."),
    until: Optional[str] = typer.Option(None, help="Before: a duration ago or an RFC 3339 time."),
    limit: int = typer.Option(50, min=1),
    output: str = AUDIT_OUTPUT,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """List alerts handled without a run, and refused approval decisions, newest first.

    Kinds: unmatched, render_failed, duplicate, cooldown, refused_namespace, approval_refused, unknown_cluster."""

    _check_audit_output(output)
    if kind is not None and kind not in get_args(IntakeKind):
        raise fail(f"--kind: expected one of {', '.join(get_args(IntakeKind))}, got {kind!r}")
    store = _open_store(state_dir, database_url, AuditStore)
    rows = store.intake_records(
        kind=kind, alertname=alertname, since=_when(since, "--since"), until=_when(until, "--until"), limit=limit,  # type: ignore[arg-type]
        playbook=playbook, run_id=run,
    )
    if not _print_data(output, lambda: [r.model_dump(mode="json") for r in rows]):
        console.print(render_intake(rows))


@audit_app.command("verify")
def audit_verify(
    run: Optional[str] = typer.Option(None, "--run", help="Compare only this run's records with the chain (a unique prefix is enough); the whole chain's hashes are checked either way."),
    audit_key_file: Optional[Path] = AUDIT_KEY_FILE,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """Check the audit trail against its hash chain: exit 0 when intact.

    Exit 1 naming each record changed, inserted or removed (the first first), and each missing
    append-only trigger; exit 2 when it cannot be checked (a keyed chain and no key)."""

    key = _audit_key(audit_key_file)
    store = _open_store(state_dir, database_url, AuditStore, key=key)
    run_id = None
    if run is not None:
        try:
            run_id = store.get_run(run).run_id
        except LookupError as err:
            raise fail(str(err.args[0] if err.args else err))
    verdict = store.verify(run_id)
    for problem in verdict.problems:
        _say(problem.text)
    if verdict.problems:
        n = len(verdict.problems)
        if verdict.missing_key:
            _warn(verdict.missing_key)
        raise fail(f"the audit trail is not intact: {n} problem{'s' if n > 1 else ''}", code=1)
    if verdict.missing_key:
        raise fail(f"cannot verify: {verdict.missing_key}")
    if run_id is not None:
        _say(f"audit trail intact: run {run_id}: {verdict.checked} records checked against a chain of {verdict.records}")
    elif verdict.head is None:
        _say("audit trail intact: 0 records")
    else:
        _say(f"audit trail intact: {verdict.records} records; head record {verdict.head[0]} hash {verdict.head[1]}")


@audit_app.command("export")
def audit_export(
    since: Optional[str] = typer.Option(None, help="Chained at or after: a duration ago (1h) or an RFC 3339 time."),
    until: Optional[str] = typer.Option(None, help="Chained before: a duration ago or an RFC 3339 time."),
    run: Optional[str] = typer.Option(None, "--run", help="Only this run's records (a unique prefix is enough)."),
    output: str = typer.Option("-", "--output", "-o", help="File to write (- for stdout)."),
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
) -> None:
    """Write the audit trail as JSON Lines (one record per line, with its chain hash).

    Oldest first; each line holds seq, at, kind, record, run_id, body (every column as stored),
    key_id, prev and hash, for a SIEM or an archive."""

    store = _open_store(state_dir, database_url, AuditStore)
    run_id = None
    if run is not None:
        try:
            run_id = store.get_run(run).run_id
        except LookupError as err:
            raise fail(str(err.args[0] if err.args else err))
    records = store.export(_when(since, "--since"), _when(until, "--until"), run_id)
    try:
        out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")
    except OSError as err:
        raise fail(f"--output {output}: {err.strerror or err}")
    n = 0
    try:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if output != "-":
        _say(f"{n} records written to {output}")


def _check_audit_output(output: str) -> None:
    if output not in ("text", "json", "yaml"):
        raise fail(f"--output: expected text, json or yaml, got {output!r}")


def _print_data(output: str, data: Callable[[], Any]) -> bool:
    """Print ``data()`` as JSON or YAML when ``output`` asks for it; False for text."""
    if output == "json":
        sys.stdout.write(json.dumps(data(), indent=2, default=str, ensure_ascii=False) + "\n")
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump(data(), sort_keys=False, allow_unicode=True))
    else:
        return False
    return True


def _audit_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return read_key(path)
    except AuditKeyError as err:
        raise fail(str(err))


def _os_user() -> str:
    """The operating-system account running this command (``getpass.getuser()``, else the UID)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _decide(run: str, decision: Literal["approve", "reject"], identity: str, comment: str, temporal_address: str, temporal_namespace: str, state_dir: Path,
            database_url: str | None) -> None:
    """Shared body of ``approve`` and ``reject``: the same Update, validator and audit as a Slack click.

    The run is found through Temporal (``find_run``), not a local database, so the command works
    from any replica or laptop that reaches Temporal. A refusal is also recorded in the audit
    trail when the worker's database is given (``--database-url``) or is the SQLite file of
    ``--state-dir`` here."""
    store = (_open_store(state_dir, database_url, AuditStore)
             if database_url or (state_dir / "audit.db").exists() else None)

    async def go():
        client = await connect(temporal_address, temporal_namespace)
        try:
            found = await find_run(client, run)
        except LookupError as err:
            raise fail(str(err.args[0] if err.args else err))
        handle = client.get_workflow_handle(found.workflow_id, run_id=found.run_id)
        status = await handle.query(RemediationWorkflow.status)
        if status.waiting is None:
            raise fail(f"run {found.run_id} ({found.qualified_target}) is not waiting for approval (phase {status.phase}, outcome {status.outcome})")
        request = status.waiting
        result = await submit_decision(
            client,
            found.workflow_id,
            found.run_id,
            ApprovalDecision(
                request_id=request.request_id, decision=decision, user_id=identity, via="cli", comment=comment,
                os_user=_os_user(), os_host=socket.gethostname(),
            ),
            audit=store,
        )
        return found, request, result

    try:
        found, request, result = asyncio.run(go())
    except DecisionRefused as err:
        raise fail(f"refused: {err}", code=3)
    except (TemporalUnavailable, RPCError, RuntimeError, OSError) as err:
        raise fail(f"cannot reach Temporal at {temporal_address}: {err}")
    console.print(f"step {request.step_index + 1} ({request.step_name}) of {found.qualified_target}: {result.message}", highlight=False, soft_wrap=True)


TEMPORAL_ADDRESS = typer.Option("127.0.0.1:7233", "--temporal-address", envvar="REMEDIATOR_TEMPORAL_ADDRESS", help="host:port of Temporal (the worker's). TLS and API key: the worker's REMEDIATOR_TEMPORAL_TLS_* and REMEDIATOR_TEMPORAL_API_KEY[_FILE] variables.")
TEMPORAL_NAMESPACE = typer.Option("default", "--temporal-namespace", envvar="REMEDIATOR_TEMPORAL_NAMESPACE")


async def connect(temporal_address: str, temporal_namespace: str) -> Any:
    """The worker's Temporal from a CLI command: the address and namespace given, TLS and the
    API key from the environment as the worker reads them (REMEDIATOR_TEMPORAL_TLS_CA...).

    Raises:
        typer.Exit: (2) a TLS or API key setting is invalid or its file unreadable.
        RuntimeError: Temporal cannot be reached (TemporalConnectError says why).
    """
    try:
        settings = TemporalSettings(temporal_address=temporal_address, temporal_namespace=temporal_namespace)
        conn = TemporalConnection.from_settings(settings)
    except (ConfigError, ValidationError) as err:
        raise fail(_first_error(err))
    return await conn.connect()
IDENTITY = typer.Option(..., "--as", help="Your Slack user ID (U...): the same approvers as in Slack count. It is a claim: the audit records it beside your OS user and host; anyone who can reach Temporal can claim any ID.")


def _decision_command(decision: Literal["approve", "reject"], doc: str):
    """The ``approve`` and ``reject`` commands: one body, the decision as their only difference."""

    def command(
        run: str = typer.Argument(..., help="Run ID (a unique prefix of 4+ hex digits is enough) or workflow ID (remediation/...: its latest run), looked up in Temporal."),
        identity: str = IDENTITY,
        comment: str = typer.Option("", help="Why, for the audit trail."),
        temporal_address: str = TEMPORAL_ADDRESS,
        temporal_namespace: str = TEMPORAL_NAMESPACE,
        state_dir: Path = STATE_DIR,
        database_url: Optional[str] = DATABASE_URL,
    ) -> None:
        _decide(run, decision, identity, comment, temporal_address, temporal_namespace, state_dir, database_url)

    command.__doc__ = doc
    return command


app.command("approve")(_decision_command("approve", "Approve the step a run is waiting on (when Slack is down)."))
app.command("reject")(
    _decision_command("reject", "Reject the step a run is waiting on: it does not run and the run ends needs_human.")
)


# --------------------------------------------------------------------------- the kill switch

POLICY = typer.Option(
    Path(cli_default("policy") or "policy.yaml"), "--policy", envvar=env_var("policy"),
    help="The worker's policy file (pause, resume and status use the defaults when it is missing).",
)
PLAYBOOK_DIR = typer.Option(
    Path(cli_default("playbook_dir") or "playbooks"), "--playbook-dir", envvar=env_var("playbook_dir"),
    help="The worker's playbooks: --playbook must name one; their slack.channel is where the notice goes.",
)
SLACK_BOT_TOKEN = typer.Option(None, "--slack-bot-token", envvar=env_var("slack_bot_token"), show_default=False,
                               help="Bot token (xoxb-) for the Slack notice; none: no notice.")
SLACK_API_URL = typer.Option(cli_default("slack_api_url"), "--slack-api-url", envvar=env_var("slack_api_url"), help="Slack Web API base URL.")
SCOPE_NAMESPACE = typer.Option(None, "--namespace", "-n", help="Only runs whose target is in this namespace (default: every namespace).")
SCOPE_PLAYBOOK = typer.Option(None, "--playbook", help="Only runs of this playbook (default: every playbook).")
REASON = typer.Option(..., "--reason", help="Why, for the audit trail and the Slack notice (at most 500 characters).")
ACTOR = typer.Option(..., "--as", help="Who you are: your Slack user ID (U...), mentioned in the notice.")
OUTPUT = typer.Option("text", "--output", "-o", help="text or json")
CONNECT_TIMEOUT_S = 5.0


@app.command()
def pause(
    namespace: Optional[str] = SCOPE_NAMESPACE,
    playbook: Optional[str] = SCOPE_PLAYBOOK,
    reason: str = REASON,
    identity: str = ACTOR,
    output: str = OUTPUT,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
    policy: Path = POLICY,
    playbook_dir: Path = PLAYBOOK_DIR,
    slack_bot_token: Optional[str] = SLACK_BOT_TOKEN,
    slack_api_url: str = SLACK_API_URL,
) -> None:
    """Pause remediation: every run in scope, new or in flight, freezes before its next change.

    Writes the pause to the audit store only (Temporal is not needed); the runs read it at their next step boundary. New alerts are still received and attached. Announced in Slack."""

    _check_output(output)
    controller = _controller(state_dir, database_url, policy, playbook_dir, slack_bot_token, slack_api_url, None, need_playbooks=playbook is not None)
    result = _brake_call(controller.pause(PauseScope(namespace=namespace, playbook=playbook), reason, identity))
    if output == "json":
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
        return
    _say(result.message)
    if result.slack:
        _say(f"slack: {result.slack}")


@app.command()
def resume(
    namespace: Optional[str] = SCOPE_NAMESPACE,
    playbook: Optional[str] = SCOPE_PLAYBOOK,
    reason: str = REASON,
    identity: str = ACTOR,
    output: str = OUTPUT,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
    policy: Path = POLICY,
    playbook_dir: Path = PLAYBOOK_DIR,
    temporal_address: str = TEMPORAL_ADDRESS,
    temporal_namespace: str = TEMPORAL_NAMESPACE,
    slack_bot_token: Optional[str] = SLACK_BOT_TOKEN,
    slack_api_url: str = SLACK_API_URL,
) -> None:
    """Lift the pause of exactly this scope; the runs it froze continue where they stopped.

    The pause is lifted in the audit store first, then the frozen runs are signalled. When Temporal cannot be reached the pause is still lifted and the runs continue at their next poll (within 5 minutes)."""

    _check_output(output)

    async def go():
        client, why = None, None
        try:
            client = await asyncio.wait_for(connect(temporal_address, temporal_namespace), CONNECT_TIMEOUT_S)
        except (RuntimeError, OSError, asyncio.TimeoutError, TimeoutError) as err:
            why = str(err) or f"no answer within {CONNECT_TIMEOUT_S:g}s"
        controller = _controller(state_dir, database_url, policy, playbook_dir, slack_bot_token, slack_api_url, client, need_playbooks=False)
        return await controller.resume(PauseScope(namespace=namespace, playbook=playbook), reason, identity), why

    result, unreachable = _brake_call(go())
    if output == "json":
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
    else:
        _say(result.message)
        for r in result.runs:
            _say(f"  {qualified_target(r.target, cluster_of(r.workflow_id))}  playbook {r.playbook}  before step {r.step + 1}  run {r.run_id}: {r.state}"
                 + (f" ({r.message})" if r.message else ""))
        if result.slack:
            _say(f"slack: {result.slack}")
    if unreachable is not None:
        _warn(f"cannot reach Temporal at {temporal_address} ({unreachable}): the pause is lifted; frozen runs continue "
              "at their next poll, within 5 minutes")
    elif result.warning:
        _warn(result.warning)


@app.command()
def status(
    output: str = OUTPUT,
    state_dir: Path = STATE_DIR,
    database_url: Optional[str] = DATABASE_URL,
    policy: Path = POLICY,
) -> None:
    """Show the pauses in force, the runs they froze, and the runs waiting for a slot."""

    _check_output(output)
    controller = Controller(_brakes(state_dir, database_url, policy), None, PlaybookSet([]))
    result = _brake_call(controller.status())
    if output == "json":
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
    else:
        _say(status_text(result))


def _check_output(output: str) -> None:
    if output not in ("text", "json"):
        raise fail(f"--output: expected text or json, got {output!r}")


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _warn(text: str) -> None:
    err_console.print(f"warning: {text}", highlight=False, markup=False, soft_wrap=True)


def _brakes(state_dir: Path, database_url: str | None, policy: Path) -> Brakes:
    """The brakes on the worker's audit store. They are not created here: a pause written to
    a state directory no worker reads would pause nothing. Pause, resume and status use no
    limit, so a missing or invalid policy file means the defaults (a kill switch must work
    when someone has just broken the policy)."""
    store = _open_store(state_dir, database_url, AuditStore)
    if not policy.exists():
        return Brakes(store, Policy())
    try:
        return Brakes(store, load_policy(policy))
    except PolicyError as err:
        _warn(f"the policy file is invalid; pause, resume and status do not use it:\n{err}")
        return Brakes(store, Policy())


def _controller(state_dir: Path, database_url: str | None, policy: Path, playbook_dir: Path, token: str | None, api_url: str, client: Any,
                *, need_playbooks: bool) -> Controller:
    brakes = _brakes(state_dir, database_url, policy)
    try:
        playbooks = load_directory(playbook_dir)
    except PlaybookError as err:
        if need_playbooks:
            raise fail(f"--playbook cannot be checked: the playbooks in {playbook_dir} cannot be loaded "
                       f"(set --playbook-dir or REMEDIATOR_PLAYBOOK_DIR):\n{err}")
        _warn(f"the playbooks in {playbook_dir} cannot be loaded, so no Slack notice is posted:\n{err}")
        playbooks = PlaybookSet([])
    return Controller(brakes, client, playbooks, make_client(token, api_url) if token else None)


def _brake_call(coro: Any) -> Any:
    """Run a Controller call; its refusals end with ``error: ...`` and exit code 2."""
    try:
        return asyncio.run(coro)
    except InvalidRequest as err:
        raise fail("; ".join(f"--{field}: {message}" for field, message in err.problems))
    except NotPaused as err:
        raise fail(str(err))
    except DatabaseError as err:
        raise fail(f"the audit store cannot be written: {reason(err)}")
    except AuditKeyError as err:
        raise fail(f"the audit store cannot be written: {err}")


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


def _open_store(state_dir: Path, database_url: str | None, cls, key: bytes | None = None):
    """The worker's audit store, in ``--database-url``'s database (default: the SQLite file
    ``<state_dir>/audit.db``, which must exist: a command never creates a trail no worker
    reads). Commands that write to it (pause, resume, approve, reject) sign with the key of
    REMEDIATOR_AUDIT_KEY_FILE when set, as the worker does."""
    try:
        url = database_url_of(database_url or state_dir / "audit.db")
    except DatabaseUrlError as err:
        raise fail(str(err))
    if url.drivername == "sqlite" and not Path(url.database or "").exists():
        where = ("set --state-dir or REMEDIATOR_STATE_DIR to the worker's state directory" if database_url is None
                 else "set --database-url or REMEDIATOR_DATABASE_URL to the worker's")
        raise fail(f"no audit trail at {url.database} ({where})")
    try:
        db = Database(url)
    except DatabaseUnavailable as err:
        raise fail(str(err))
    if key is None and os.environ.get(env_var("audit_key_file")):
        key = _audit_key(Path(os.environ[env_var("audit_key_file")]))
    try:
        return cls(db, key=key)
    except SchemaError as err:
        raise fail(str(err))
    except DatabaseError as err:
        raise fail(f"the audit store {db.display} cannot be opened: {reason(err)}")


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


def main(args: list[str] | None = None) -> None:
    """The ``remediator`` console entry (``args``: instead of ``sys.argv[1:]``; worker.py's): the command's exit code, without interpreter finalisation.

    The Temporal client's Rust threads can still hold a Python thread state when CPython
    finalises, which aborts a finished command with "Fatal Python error: PyGILState_Release"
    (temporalio/sdk-python#300). So once the command has returned, the ``atexit`` handlers run
    (logging is flushed), stdout and stderr are flushed, and the process ends with ``os._exit``.
    """
    try:
        app(args)
        code: int = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if exit.code is not None and not isinstance(exit.code, int):
            print(exit.code, file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":  # python -m remediator.cli
    main()
