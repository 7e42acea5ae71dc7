"""The engine process: Temporal worker and HTTP intake, together or as separate roles.

``Engine`` is built once from ``Settings`` and a Kubernetes ApiClient by the composition root
(remediator.cli: ``remediator worker`` / ``python worker.py``, which chooses the real cluster or,
with ``--simulate``, the emulator; and the demo): it validates the playbooks, starts the embedded
Temporal dev server when no address is configured, and runs the Worker and the intake
(uvicorn) side by side until SIGINT/SIGTERM.

Roles: the default runs both; ``remediator intake`` (``run_worker=False``) serves HTTP only (the
webhook, Slack interactivity, the control API, and the hand-off workflows' worker, which needs no
cluster); ``remediator worker --no-intake`` runs the Temporal worker only, with ``GET /healthz``
on ``--listen`` for the kubelet's probes. Separate roles share one external Temporal.

Start-up refuses, with a message and no traceback, on: an invalid playbook or policy file, a Temporal server
that cannot be reached, separate roles without ``--temporal-address``, and a second engine with an
embedded Temporal on the same state directory (several replicas need an external Temporal: each
embedded one would start its own run of every alert).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import uvicorn
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.brakes import BrakesActivities
from activities.diagnosis import DiagnosisActivities
from activities.handoff import HandoffActivities
from activities.health import HealthActivities
from activities.kube import KubeActivities
from activities.playbooks import PlaybookActivities
from activities.slack import SlackActivities
from remediator.app import control, slack_interactivity
from remediator.app.config import ConfigError, Settings
from remediator.app.devserver import DevServer
from remediator.app.handoff import Handoff
from remediator.app.intake import create_app
from remediator.app.serving import intake_server, worker_health_app
from remediator.app.settle import Settler
from remediator.app.socket_mode import SocketModeRunner
from remediator.app.temporal import HeartbeatInterceptor, TemporalConnectError, TemporalConnection, metrics_runtime
from remediator.audit.brakes import Brakes
from remediator.audit.store import AuditStore
from remediator.db import Database, DatabaseError, DatabaseUnavailable, DatabaseUrlError, SchemaError
from remediator.domain.policy import Policy
from remediator.domain.runs import SEARCH_ATTRIBUTES, workflow_id_for
from remediator.k8s.client import KubeClient
from remediator.playbook.loader import PlaybookError, load_directory
from remediator.playbook.policy_loader import PolicyError, load_policy
from remediator.slack.client import make_client
from remediator.slack.threads import SlackThreads
from workflows.handoff import AlertHandoffWorkflow, handoff_task_queue
from workflows.remediation import RemediationWorkflow

log = logging.getLogger("remediator")


class StartupError(RuntimeError):
    """The engine cannot start; the message says why and what to do."""


async def ensure_search_attributes(client: Client) -> None:
    """Register the remediator search attributes (Keyword) on the client's namespace if missing.

    Idempotent. A server that does not let this client add them (Temporal Cloud refuses the
    operator API; a self-hosted server may deny it by authorization) gets a refusal naming the
    missing attributes and the commands that add them.

    Raises:
        StartupError: attributes are missing and the server refused to add them.
        temporalio.service.RPCError: listing them failed for another reason.
    """
    namespace = client.namespace
    try:
        existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        present = set(existing.custom_attributes)
    except RPCError as err:
        if err.status not in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED):
            raise
        # The operator API is closed to this client: check through visibility instead.
        present = set()
        for key in SEARCH_ATTRIBUTES:
            try:
                await client.count_workflows(f"{key.name} = 'probe'")
                present.add(key.name)
            except RPCError:
                pass
        missing_names = [k.name for k in SEARCH_ATTRIBUTES if k.name not in present]
        if missing_names:
            raise StartupError(_missing_attributes(namespace, missing_names, err.message)) from None
        return
    missing = {k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in SEARCH_ATTRIBUTES if k.name not in present}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED):
            raise StartupError(_missing_attributes(namespace, sorted(missing), err.message)) from None
        raise


def _missing_attributes(namespace: str, names: list[str], why: str) -> str:
    self_hosted = " && ".join(
        f"temporal operator search-attribute create --namespace {namespace} --name {n} --type Keyword" for n in names
    )
    cloud = " ".join(f"--sa '{n}=Keyword'" for n in names)
    return (
        f"refusing to start: the search attributes {', '.join(names)} are missing on Temporal namespace {namespace} "
        f"and this client may not add them ({why}). Add them once, then start again:\n"
        f"  self-hosted:     {self_hosted}\n"
        f"  Temporal Cloud:  tcld namespace search-attributes add --namespace {namespace} {cloud}"
    )


def build_activities(
    api_client: Any,
    prometheus_url: str | None,
    alertmanager_url: str | None,
    audit_store: Any,
    slack_client: Any = None,
    slack_threads: Any = None,
    brakes: Brakes | None = None,
    playbooks: Any = None,
    dry_run: bool = False,
) -> list:
    """Every activity the workflow calls, bound to one Kubernetes client, one audit store and
    (optionally) one Slack WebClient. ``slack_client`` None: the Slack activities fail with
    ``SlackNotConfigured`` (approvals still work from the CLI). ``brakes`` None: the brakes of
    the default policy (remediator.domain.policy) on ``audit_store``. ``playbooks``: the
    loaded playbooks, for handing a target over to a queued alert's playbook (None: no
    hand-over; the run records why). ``dry_run``: the worker's --dry-run, for those hand-overs.

    Sync activities: the Worker needs an ``activity_executor`` (a thread pool).
    """
    kube_client = KubeClient(api_client)
    kube = KubeActivities(kube_client)
    health = HealthActivities(kube_client, prometheus_url, alertmanager_url)
    diagnosis = DiagnosisActivities(kube_client, prometheus_url)
    audit = AuditActivities(audit_store)
    slack = SlackActivities(slack_client, slack_threads)
    gate = BrakesActivities(brakes or Brakes(audit_store, Policy()), kube_client)
    return [
        gate.acquire_slot,
        gate.release_brakes,
        gate.gate_mutation,
        gate.rolled_away_from,
        PlaybookActivities(playbooks, dry_run).render_playbook,
        kube.describe_target,
        kube.plan_mutation,
        kube.rollout_restart,
        kube.scale,
        kube.rollback,
        kube.cordon,
        kube.uncordon,
        kube.drain,
        kube.delete_pod,
        health.check_rollout_status,
        health.check_node_ready,
        health.check_node_cordoned,
        health.check_node_drained,
        health.check_promql,
        health.check_alert_resolved,
        diagnosis.diagnose_recent_rollout,
        diagnosis.diagnose_container_status,
        diagnosis.diagnose_kube_events,
        diagnosis.diagnose_node_conditions,
        diagnosis.diagnose_promql,
        diagnosis.assess,
        slack.post_approval_request,
        slack.update_approval_message,
        slack.post_notice,
        slack.resolve_approvers,
        audit.audit_write,
    ]


def new_worker(
    client: Client,
    task_queue: str,
    activities: list,
    executor: ThreadPoolExecutor,
    *,
    heartbeat_timeout: timedelta = timedelta(seconds=10),
) -> Worker:
    """The one Worker of the process (tests build theirs here too): ``RemediationWorkflow``,
    ``activities`` (``build_activities``) on ``executor``, every activity heartbeated
    (``HeartbeatInterceptor``), and a workflow task left on this worker's sticky queue taken
    back after ``heartbeat_timeout`` when the worker is gone."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[RemediationWorkflow],
        activities=activities,
        activity_executor=executor,
        interceptors=[HeartbeatInterceptor()],
        sticky_queue_schedule_to_start_timeout=heartbeat_timeout,
    )


def new_handoff_worker(client: Client, task_queue: str, handoff: Handoff) -> Worker:
    """The Worker of the hand-off workflows (workflows/handoff.py) of the engine on
    ``task_queue``: it polls ``handoff_task_queue(task_queue)`` and its one activity is
    ``handoff``'s (async, on the worker's event loop), so a large group never waits behind
    remediation work."""
    return Worker(
        client,
        task_queue=handoff_task_queue(task_queue),
        workflows=[AlertHandoffWorkflow],
        activities=[HandoffActivities(handoff.hand_over_group).hand_over_alerts],
        interceptors=[HeartbeatInterceptor()],
    )


@dataclass
class Engine:
    """Everything the process holds: built by ``start()``, released by ``stop()``."""

    settings: Settings
    api_client: Any
    run_worker: bool = True
    dev_server: DevServer | None = None
    client: Client | None = None
    database: Database | None = None
    audit: Any = None
    playbooks: Any = None
    slack_client: Any = None
    slack_threads: Any = None
    settler: Any = None
    policy: Any = None
    brakes: Any = None
    temporal_address: str = ""
    ui_url: str = ""
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _worker: Worker | None = field(default=None, repr=False)
    _handoff_worker: Worker | None = field(default=None, repr=False)
    _worker_task: asyncio.Task | None = field(default=None, repr=False)
    _lock: Any = field(default=None, repr=False)

    async def start(self) -> "Engine":
        """Load, connect and build; raises StartupError with a user-facing message."""
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.playbooks = load_directory(s.playbook_dir)
        except PlaybookError as err:
            raise StartupError(f"refusing to start: invalid playbook\n{err}") from None
        except FileNotFoundError as err:
            raise StartupError(f"refusing to start: playbook directory not found: {err}") from None
        try:
            self.policy = load_policy(s.policy)
        except PolicyError as err:
            raise StartupError(f"refusing to start: invalid policy\n{err}") from None
        if not (s.intake and self.run_worker) and not s.temporal_address:
            role = "remediator worker --no-intake" if self.run_worker else "remediator intake"
            raise StartupError(
                f"refusing to start: {role} runs one role of the engine, and its other role runs in another process "
                "that must share its Temporal: set --temporal-address (the embedded dev server serves only the "
                "process that starts it)"
            )
        if not s.temporal_address and (s.database_url or "").startswith("postgresql"):
            raise StartupError(
                "refusing to start: a shared database (--database-url postgresql://...) is for several replicas, and "
                "several replicas need one external Temporal (--temporal-address): with the embedded dev server each "
                "replica would start its own Temporal, and its own run of every alert"
            )
        self._open_database()
        if s.temporal_address:
            self.temporal_address = s.temporal_address
            self.ui_url = s.temporal_ui_url or ""
        else:
            self._lock = _lock_state_dir(s)
            self.dev_server = DevServer(
                s.temporal_db_path,
                port=s.temporal_port,
                ui_port=s.temporal_ui_port,
                log_path=s.state_dir / "temporal.log",
            )
            try:
                await asyncio.to_thread(self.dev_server.start)
            except (RuntimeError, FileNotFoundError) as err:
                raise StartupError(f"refusing to start: embedded Temporal: {err}") from None
            self.temporal_address = self.dev_server.address
            self.ui_url = s.temporal_ui_url or self.dev_server.ui_url
            log.info("embedded Temporal dev server at %s (state in %s)", self.temporal_address, s.temporal_db_path)
            log.info("Temporal UI: %s", self.ui_url)
        try:
            connection = TemporalConnection.from_settings(s, self.temporal_address)
            runtime = metrics_runtime(s.metrics_listen) if s.metrics_listen else None
        except ConfigError as err:
            raise StartupError(f"refusing to start: {err}") from None
        if runtime is not None:
            log.info("worker and engine metrics: http://%s/metrics", s.metrics_listen)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(20), wait=wait_fixed(0.5), reraise=True,
                retry=retry_if_exception(lambda e: isinstance(e, TemporalConnectError) and e.retryable),
            ):
                with attempt:
                    self.client = await connection.connect(runtime)
        except TemporalConnectError as err:
            raise StartupError(f"refusing to start: {err}") from None
        try:
            await ensure_search_attributes(self.client)
        except RPCError as err:
            raise StartupError(f"refusing to start: Temporal at {self.temporal_address}: {err.message}") from None
        self.brakes = Brakes(self.audit, self.policy)
        self._slack()
        if self.run_worker:
            self._worker = self._build_worker(self.api_client)
        self.settler = self._build_settler()
        handoff = self._build_handoff()
        self._handoff_worker = new_handoff_worker(self.client, s.engine_task_queue, handoff)
        if s.intake:
            self._server = self._build_intake(handoff)
        else:
            self._server = intake_server(
                worker_health_app(self.client, self._worker_failure), s, host=s.listen_host, port=s.listen_port,
                log_level="warning", log_config=None,
            )
        return self

    def _worker_failure(self) -> BaseException | str | None:
        """Why the remediation Worker stopped, or None while it runs (``/healthz`` of ``--no-intake``)."""
        task = self._worker_task
        if task is None or not task.done():
            return None
        return task.exception() if not task.cancelled() and task.exception() else "stopped"

    def _open_database(self) -> None:
        """The audit trail, the brakes and the Slack state, in ``--database-url``'s database:
        before Temporal, so a database that cannot be used stops the start at once. An SQLite
        file is created or upgraded here; a PostgreSQL database must be at this remediator's
        schema (``remediator db upgrade``), and one that cannot be reached is an error, never a
        reason to fall back to SQLite."""
        s = self.settings
        try:
            self.database = Database(s.database)
            self.audit = AuditStore(self.database, key=s.audit_key)
        except (DatabaseUrlError, DatabaseUnavailable, SchemaError) as err:
            raise StartupError(f"refusing to start: {err}") from None
        except DatabaseError as err:
            raise StartupError(f"refusing to start: the database {Database(s.database).display} cannot be used: "
                               f"{str(getattr(err, 'orig', None) or err).splitlines()[0]}") from None
        log.info("audit trail, brakes and Slack state in %s", self.database.display)

    def _slack(self) -> None:
        """Slack is optional: without a bot token approvals are given from the CLI, and the
        playbooks that ask for approval say so in their audit trail."""
        s = self.settings
        self.slack_threads = SlackThreads(self.database)
        if s.slack_bot_token:
            self.slack_client = make_client(s.slack_bot_token, s.slack_api_url)
            log.info("Slack Web API at %s", s.slack_api_url)
        else:
            needs = [p.playbook.name for p in self.playbooks.playbooks if p.playbook.slack is not None]
            if needs:
                log.warning(
                    "no Slack bot token: approval requests and notices of %s cannot be posted; "
                    "approve or reject from the CLI (remediator approve RUN --as USER)",
                    ", ".join(needs),
                )

    def _build_worker(self, api_client: Any) -> Worker:
        s = self.settings
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity")
        assert self.client is not None
        activities = build_activities(
            api_client, s.prometheus_url, s.alertmanager_url, self.audit, self.slack_client, self.slack_threads,
            self.brakes, self.playbooks, s.dry_run,
        )
        return new_worker(self.client, s.engine_task_queue, activities, self._executor, heartbeat_timeout=s.heartbeat_timeout)

    def _build_settler(self) -> Settler:
        assert self.client is not None
        post = SlackActivities(self.slack_client, self.slack_threads).post_notice if self.slack_client else None
        return Settler(self.client, self.audit, post)

    def _build_handoff(self) -> Handoff:
        """One hand-over for the intake and the hand-off activity: one record of what was
        handed over, one bound on the Temporal calls in flight."""
        assert self.client is not None
        return Handoff(
            self.settings, self.client, self.playbooks, self.audit, task_queue=self.settings.engine_task_queue,
            ui_url=self.ui_url, settler=self.settler, brakes=self.brakes,
        )

    def _build_intake(self, handoff: Handoff) -> uvicorn.Server:
        s = self.settings
        assert self.client is not None
        app = create_app(
            s, self.client, self.playbooks, self.audit, task_queue=s.engine_task_queue, ui_url=self.ui_url, handoff=handoff,
        )
        app.include_router(control.router(s, control.Controller(self.brakes, self.client, self.playbooks, self.slack_client)))
        if s.slack_signing_secret:
            app.include_router(slack_interactivity.router(s, self.client, self.audit, self.slack_client))
            log.info("Slack interactivity endpoint: POST /slack/interactivity")
        return intake_server(app, s, host=s.listen_host, port=s.listen_port, log_level="warning", log_config=None)

    async def run(self) -> None:
        """Run this process's roles until told to exit (SIGINT/SIGTERM)."""
        assert self._server is not None and self._handoff_worker is not None
        s = self.settings
        queue = s.engine_task_queue
        if s.intake:
            log.info("intake listening on http://%s (POST /api/v1/alerts)", s.listen)
        else:
            log.info("no intake here (--no-intake): GET /healthz on http://%s", s.listen)
        if s.cluster:
            log.info("engine of cluster %r: takes alerts whose label %r names it or is absent; workflow IDs %s<target>",
                     s.cluster, s.cluster_label, workflow_id_for("", s.cluster))
        if self._worker is not None:
            log.info("worker polling task queues %r and %r on %s", queue, handoff_task_queue(queue), self.temporal_address)
            self._worker_task = asyncio.create_task(self._worker.run())
        else:
            log.info("intake only: remediation runs on the workers of task queue %r; hand-offs polled on %r at %s",
                     queue, handoff_task_queue(queue), self.temporal_address)
        handoff_task = asyncio.create_task(self._handoff_worker.run())
        settle_task = asyncio.create_task(self.settler.run_forever(s.settle_interval))
        socket_mode = None
        if s.intake and s.slack_app_token:
            socket_mode = SocketModeRunner(self.settings, self.client, self.audit, self.slack_client, asyncio.get_running_loop())
            await asyncio.to_thread(socket_mode.start)
            log.info("Slack Socket Mode connected")
        try:
            await self._server.serve()
        finally:
            if socket_mode is not None:
                await asyncio.to_thread(socket_mode.stop)
            settle_task.cancel()
            workers = [w for w in (self._worker, self._handoff_worker) if w is not None]
            await asyncio.gather(*(w.shutdown() for w in workers))
            tasks = [t for t in (self._worker_task, handoff_task, settle_task) if t is not None]
            await asyncio.gather(*tasks, return_exceptions=True)

    def request_exit(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def stop(self) -> None:
        if self.dev_server is not None:
            await asyncio.to_thread(self.dev_server.stop)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._lock is not None:
            self._lock.close()
        if self.database is not None:
            self.database.dispose()


def _lock_state_dir(settings: Settings) -> Any:
    """Hold ``STATE_DIR/engine.lock`` (``flock``, released by the kernel when the process dies)
    while the embedded Temporal runs, so a second engine on the same state directory refuses
    instead of starting a second Temporal on the same files.

    Raises:
        StartupError: another process holds it; the message names its PID and what to do.
    """
    path = settings.state_dir / "engine.lock"
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise StartupError(
            f"refusing to start: another remediator engine (pid {holder}) runs an embedded Temporal on state directory "
            f"{settings.state_dir}. Several replicas need one external Temporal (--temporal-address) and a shared "
            "database; embedded, each replica would start its own run of every alert"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


async def serve(settings: Settings, api_client: Any, *, run_worker: bool = True) -> None:
    """Start the engine on the cluster of ``api_client`` and run it until SIGINT/SIGTERM;
    ``run_worker`` False: the intake role only (``api_client`` unused, may be None).
    Raises StartupError."""
    engine = Engine(settings, api_client, run_worker=run_worker)
    try:
        await engine.start()
        await engine.run()
    finally:
        await engine.stop()
