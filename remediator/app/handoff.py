"""The hand-over of alerts to their runs: what the intake does with each alert of a group.

``Handoff`` is built once per process (remediator.app.runtime) and shared by the HTTP intake
(remediator.app.intake) and the ``hand_over_alerts`` activity (activities/handoff.py), so both
use one record of what was handed over and one bound on the Temporal calls in flight.

Each alert is handled in two phases:

* ``plan``: the alert's cluster (with ``--cluster``), matching, rendering, the policy's
  namespaces, the audit trail's dedup and the target's cooldown, the intake's own record.
  Everything that needs no Temporal call; an alert answered here (``unknown_cluster``,
  ``unmatched``, ``render_failed``, ``refused_namespace``, ``duplicate``, ``cooling_down``) is
  recorded in the audit trail as today.
* ``send``: one Temporal call. A firing is handed over with signal-with-start on
  ``remediation/<target key>`` (``remediation/<cluster>/<target key>`` with ``--cluster``,
  on the cluster's task queue): Temporal either starts the run or delivers the ``alert`` signal
  to the one already running, in one atomic call, so Alertmanager HA pairs and resends race
  safely. A resolved alert is signalled to the running workflow of its target, if any.

A group with at most ``HANDOFF_DIRECT_MAX`` alerts to send is sent alert by alert, at most
``HANDOFF_CONCURRENCY`` calls at once, and each alert's answer says what Temporal did. A larger
group goes to Temporal in one call (``start_group``): an ``AlertHandoffWorkflow`` carrying the
group, whose activity then sends each alert (``hand_over_group``) and is retried until every
alert is with its run. Signal-with-start costs the dev server ~10 ms of CPU per alert on 2
cores, so 1,000 one-by-one calls take about Alertmanager's whole 10 s webhook timeout; one call
takes well under a second (``make bench`` (5)).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Literal

from temporalio.api.workflowservice.v1 import SignalWithStartWorkflowExecutionResponse
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from remediator.app import metrics
from remediator.app.config import Settings
from remediator.app.settle import Settler
from remediator.audit.brakes import REFUSALS, Brakes
from remediator.audit.store import AuditStore, RunRow
from remediator.domain.messages import (
    AlertRef,
    AlertSignal,
    HandoffInput,
    HandoffSummary,
    RemediationInput,
    TargetRef,
)
from remediator.domain.playbook import Playbook
from remediator.domain.policy import Policy
from remediator.domain.runs import (
    SA_ALERTNAME,
    SA_CLUSTER,
    SA_NAMESPACE,
    SA_OUTCOME,
    SA_PLAYBOOK,
    SA_TARGET,
    cluster_of,
    cluster_task_queue,
    workflow_id_for,
)
from remediator.playbook.loader import LoadedPlaybook, PlaybookSet, RenderError, render
from workflows.handoff import HANDOFF_WORKFLOW_ID_PREFIX, AlertHandoffWorkflow, handoff_task_queue
from workflows.remediation import ALERT_SIGNAL, RemediationWorkflow

log = logging.getLogger("remediator.app.intake")

DEFAULT_RPC_TIMEOUT = timedelta(seconds=5)

HANDOFF_CONCURRENCY = 64
"""Temporal calls of one process's hand-overs in flight at once. A group of 1,000 alerts
handed over all at once queues 1,000 calls at the Temporal client and each waits out its own
rpc_timeout; 64 keeps the server busy on 2 cores and every call short."""

HANDOFF_DIRECT_MAX = 100
"""Alerts of one group sent one by one by the intake (about 1 s of the dev server's time on 2
cores); a group with more alerts to send is handed to an ``AlertHandoffWorkflow`` in one call."""

GROUP_CHUNK_BYTES = 512 * 1024
"""Largest encoded ``HandoffInput`` of one hand-off workflow (Temporal warns above 512 KiB per
payload and refuses above 2 MiB); a larger group is split over several."""

HANDED_OVER_MEMORY = 50_000
"""Firings remembered as handed over (``_HandedOver``), newest kept."""

Disposition = Literal[
    "started",
    "attached",
    "handed_off",
    "duplicate",
    "cooling_down",
    "queued",
    "paused",
    "refused_namespace",
    "unmatched",
    "render_failed",
    "unknown_cluster",
    "resolved_signalled",
    "resolved_no_run",
]
"""What the intake did with one alert (the answer per alert tells the truth).

``started``: signal-with-start started a new run. ``attached``: the alert went to the run
already remediating that target with the same playbook. ``queued``: a run of another playbook
remediates the target; the alert went to it and its own playbook runs after that run ends, if
the alert still fires. ``paused``: a pause covers the target's namespace or the playbook; the
alert was handed over (run started or attached) and the run freezes before any change until
``remediator resume``. ``handed_off``: the alert is durably with Temporal, which starts its run
or gives it to the one running (the run's audit trail says which): either the alert was part
of a group too large to hand over one by one (``workflow_id`` names the ``AlertHandoffWorkflow``
that hands it over, within seconds while a worker runs), or signal-with-start succeeded and the
server did not say which of started/attached happened. ``duplicate``: the audit trail shows a
run already took this firing (same fingerprint and startsAt); nothing sent.
``cooling_down``: the target's last run ended (whatever ended it) less than its playbook's
``cooldown`` ago; recorded, nothing started. ``refused_namespace``: the policy does not allow
the target's namespace; recorded, nothing started. ``unmatched`` / ``render_failed``: recorded
in the audit trail, nothing started. ``unknown_cluster`` (engines started with ``--cluster``):
the alert's cluster label (``--cluster-label``) names another cluster than the engine's;
recorded in the audit trail (firing and resolved alike), nothing started or signalled; its
engine is reached by its own Alertmanager route. ``resolved_signalled``: a resolved alert went to the
running workflow of its target. ``resolved_no_run``: no workflow runs for that target. A
resolved alert that matches no playbook, fails to render or is outside the policy's namespaces
is answered ``unmatched`` / ``render_failed`` / ``refused_namespace`` without a new audit record.
"""


class TemporalUnavailable(Exception):
    """A Temporal call failed or timed out; the request is answered 503 so Alertmanager retries."""


@dataclass
class Outcome:
    """What was done with one alert: the per-alert answer of the webhook. ``cluster``: the
    cluster the alert was taken for (the engine's ``--cluster``) or, for ``unknown_cluster``,
    the one it names; None without ``--cluster``."""

    alert: AlertRef
    disposition: Disposition
    workflow_id: str | None = None
    run_id: str | None = None
    playbook: str | None = None
    target: str | None = None
    message: str = ""
    cluster: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.alert.fingerprint,
            "startsAt": self.alert.starts_at.isoformat(),
            "status": self.alert.status,
            "alertname": self.alert.alertname,
            "disposition": self.disposition,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "playbook": self.playbook,
            "target": self.target,
            "cluster": self.cluster,
            "message": self.message,
        }


@dataclass
class Planned:
    """An alert that needs its one Temporal call (``Handoff.send``)."""

    alert: AlertRef
    received_at: datetime
    loaded: LoadedPlaybook
    target: TargetRef
    playbook: Playbook
    latest: RunRow | None = None
    cluster: str | None = None

    @property
    def name(self) -> str:
        return self.loaded.ref.name

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.target.key, self.cluster)


class _HandedOver:
    """The firings this process handed to a run: (workflow ID, dedup key) -> run ID, the newest ``size`` kept.

    After a 503 Alertmanager resends the whole group; a firing already with its run would be
    handed over again (one Temporal call each, which the run then ignores as seen). This
    record answers it instead, while the audit trail still shows that run running (or no run
    yet): once the run has ended, the audit trail decides (a firing a run recorded only during
    its cooldown may start a new run later). Only firings a run took to remediate are kept
    (``started``, ``attached``, ``paused``, ``handed_off``), not ``queued`` ones. Process
    memory: after a restart the workflow's own dedup still holds.
    """

    def __init__(self, size: int) -> None:
        self._runs: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._size = size

    def run_of(self, workflow_id: str, dedup_key: str, latest: RunRow | None) -> str | None:
        """The run of ``workflow_id`` (whose newest audited run is ``latest``) this firing was
        handed to, if that run may still hold it, else None."""
        run_id = self._runs.get((workflow_id, dedup_key))
        if run_id is None:
            return None
        if latest is not None and (latest.outcome != "running" or latest.run_id != run_id):
            return None
        return run_id

    def add(self, workflow_id: str, dedup_key: str, run_id: str) -> None:
        self._runs[(workflow_id, dedup_key)] = run_id
        self._runs.move_to_end((workflow_id, dedup_key))
        while len(self._runs) > self._size:
            self._runs.popitem(last=False)


def _signal_with_start_disposition(handle: WorkflowHandle[Any, Any]) -> Disposition:
    """``started`` or ``attached`` from ``SignalWithStartWorkflowExecutionResponse.started``.

    The SDK keeps the response on the handle but exposes no public accessor for ``started``,
    and ``first_execution_run_id`` is set by the server in both cases, so the response is read
    directly; if a later SDK drops it the answer is ``handed_off`` (still true, less precise).
    Servers older than the ``started`` field report every call as ``attached``.
    """
    resp = getattr(handle, "_start_workflow_response", None)
    if not isinstance(resp, SignalWithStartWorkflowExecutionResponse):
        return "handed_off"
    return "started" if resp.started else "attached"


def group_chunks(alerts: list[AlertRef], limit: int = GROUP_CHUNK_BYTES) -> list[list[AlertRef]]:
    """``alerts`` split, in order, into chunks whose JSON encoding stays under ``limit`` bytes
    (a chunk holds at least one alert: one alert is bounded by ``AlertRef.bounded``)."""
    chunks: list[list[AlertRef]] = [[]]
    size = 0
    for alert in alerts:
        n = len(alert.model_dump_json()) + 1
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(alert)
        size += n
    return chunks if chunks[0] else []


def group_workflow_id(group_key: str, alerts: list[AlertRef], cluster: str | None = None) -> str:
    """``alert-handoff/<digest>`` (``alert-handoff/<cluster>/<digest>`` with ``--cluster``): the
    same for every delivery of the same alerts of a group, so a resend while the hand-off runs
    joins it instead of starting another; the engines of two clusters never share one."""
    digest = hashlib.sha256(group_key.encode("utf-8", "surrogatepass"))
    for key in sorted(f"{a.status}|{a.dedup_key}" for a in alerts):
        digest.update(b"\n" + key.encode("utf-8", "surrogatepass"))
    return HANDOFF_WORKFLOW_ID_PREFIX + (f"{cluster}/" if cluster else "") + digest.hexdigest()[:40]


class Handoff:
    """Hands alerts to their runs (see the module docstring).

    Args:
        settings: ``simulate``, ``dry_run``, ``heartbeat_timeout``, ``kube_retry_budget``,
            ``public_url``/``listen``: what each run is started with; ``cluster`` and
            ``cluster_label``: which alerts are this engine's and how its runs are named.
        client: connected Temporal client (pydantic data converter, remediator.app.temporal.connect).
        playbooks: loaded once by remediator.playbook.loader.load_directory.
        audit: where unmatched, unrenderable, refused and duplicate alerts are recorded.
        task_queue: task queue of the worker that runs ``RemediationWorkflow``
            (``settings.engine_task_queue``); hand-off workflows run on
            ``handoff_task_queue(task_queue)``.
        ui_url: base URL of the Temporal UI, passed to the workflow for links in notifications.
        rpc_timeout: bound of each Temporal call; a hung server is ``TemporalUnavailable`` after
            this long.
        settler: records the outcome of a target's last run when Temporal ended it without
            one (so its cooldown counts); built from ``client`` and ``audit`` when not given.
        brakes: the policy's namespaces and the pauses in force (remediator.audit.brakes);
            the default policy on ``audit`` when not given.
    """

    def __init__(
        self,
        settings: Settings,
        client: Client,
        playbooks: PlaybookSet,
        audit: AuditStore,
        *,
        task_queue: str,
        ui_url: str = "",
        rpc_timeout: timedelta = DEFAULT_RPC_TIMEOUT,
        settler: Settler | None = None,
        brakes: Brakes | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.playbooks = playbooks
        self.audit = audit
        self.task_queue = task_queue
        self.cluster = settings.cluster
        self.clusters = settings.routed_clusters
        self.cluster_label = settings.cluster_label
        self.ui_url = ui_url
        self.rpc_timeout = rpc_timeout
        self.settler = settler or Settler(client, audit)
        self.brakes = brakes or Brakes(audit, Policy())
        self.public_url = settings.public_url or f"http://{settings.listen}"
        self._timeout_s = rpc_timeout.total_seconds()
        self._handed_over = _HandedOver(HANDED_OVER_MEMORY)
        self._slots = asyncio.Semaphore(HANDOFF_CONCURRENCY)
        # Unmatched alerts are counted by alertname only for the names a playbook matches on
        # (a bounded set); any other name, which the monitored workloads choose, is "other".
        self._known_alertnames = {
            m.value for p in playbooks.playbooks for m in p.matchers if m.name == "alertname" and m.type == "="
        }

    # ------------------------------------------------------------------ Temporal calls

    async def temporal_call(self, what: str, coro_factory: Callable[[], Awaitable[Any]], *, not_found_ok: bool = False) -> Any:
        """Run one Temporal RPC bounded by rpc_timeout; any failure becomes TemporalUnavailable.

        With ``not_found_ok`` an RPCError NOT_FOUND (no such workflow) is raised as is."""
        started = time.perf_counter()
        try:
            # asyncio.wait_for bounds the whole call, including the connection attempt of a
            # lazy client, which rpc_timeout alone does not cover.
            return await asyncio.wait_for(coro_factory(), timeout=self._timeout_s)
        except RPCError as err:
            if not_found_ok and err.status == RPCStatusCode.NOT_FOUND:
                raise
            status = err.status.name if err.status is not None else "an error"
            raise TemporalUnavailable(f"{what}: Temporal answered {status}: {err.message}") from err
        except (asyncio.TimeoutError, TimeoutError) as err:
            raise TemporalUnavailable(f"{what}: no answer from Temporal within {self._timeout_s:g}s") from err
        except (RuntimeError, ConnectionError) as err:
            # The SDK's core bridge raises RuntimeError("Failed client connect: ...") when the
            # frontend cannot be reached; anything else is a bug and surfaces as a 500.
            raise TemporalUnavailable(f"{what}: {type(err).__name__}: {err}") from err
        finally:
            metrics.HANDOFF_SECONDS.observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ plan

    async def plan(self, alert: AlertRef, received_at: datetime) -> Outcome | Planned:
        """What can be decided without Temporal: an ``Outcome`` (recorded in the audit trail
        where the disposition says so), or a ``Planned`` alert for ``send``."""
        async with self._slots:
            cluster, unknown = self.route(alert)
            if unknown is not None:
                named = alert.labels.get(self.cluster_label) or None
                await asyncio.to_thread(self.audit.record_intake, "unknown_cluster", alert, unknown)
                log.warning("alert %s (%s) %s: %s", alert.alertname, alert.dedup_key, alert.status, unknown)
                return Outcome(alert, "unknown_cluster", message=unknown, cluster=named)
            if alert.status == "firing":
                return await self._plan_firing(alert, received_at, cluster)
            return self._plan_resolved(alert, received_at, cluster)

    def route(self, alert: AlertRef) -> tuple[str | None, str | None]:
        """The cluster ``alert`` is remediated on: ``(cluster, None)``, or ``(None, why)`` when
        this intake routes to no cluster of that name (``unknown_cluster``).

        Without ``--cluster``/``--clusters`` every alert is taken with no cluster, whatever its
        labels (as before clusters existed): ``(None, None)``. Otherwise the ``cluster_label``
        label names the cluster, one of ``routed_clusters`` (the engine's own ``--cluster`` and
        the ``--clusters`` listed); an alert without it (or with it empty, which Prometheus
        treats as absent) goes to the engine's own cluster, or to the only one routed to.
        """
        if not self.clusters:
            return None, None
        served = ", ".join(repr(c) for c in self.clusters)
        named = alert.labels.get(self.cluster_label) or None
        if named is None:
            home = self.cluster or (self.clusters[0] if len(self.clusters) == 1 else None)
            if home is not None:
                return home, None
            return None, (f"the alert has no label {self.cluster_label} and this intake routes to several clusters "
                          f"({served}); set it (Prometheus external_labels) or send the alert to one cluster's intake")
        if named in self.clusters:
            return named, None
        return None, (f"label {self.cluster_label}={named!r} names a cluster this intake does not route to "
                      f"(it routes to {served}); send the alert to the intake of cluster {named!r}, or add it to "
                      "--clusters")

    # AuditStore is synchronous SQLite (fsync on every write); its calls run on the default
    # thread pool so one slow disk write does not stall every other webhook request.
    async def _plan_firing(self, alert: AlertRef, received_at: datetime, cluster: str | None) -> Outcome | Planned:
        audit = self.audit
        loaded = self.playbooks.match(alert.labels)
        if loaded is None:
            msg = "no playbook matches this alert's labels"
            await asyncio.to_thread(audit.record_intake, "unmatched", alert, msg)
            metrics.ALERTS_UNMATCHED.labels(
                alertname=alert.alertname if alert.alertname in self._known_alertnames else metrics.OTHER_ALERTNAME
            ).inc()
            log.info("alert %s (%s) unmatched: %s", alert.alertname, alert.dedup_key, msg)
            return Outcome(alert, "unmatched", message=msg)
        name = loaded.ref.name
        try:
            target, playbook = render(loaded, alert)
        except RenderError as err:
            await asyncio.to_thread(audit.record_intake, "render_failed", alert, str(err), playbook=name)
            log.warning("alert %s: playbook %s could not be rendered: %s", alert.alertname, name, err)
            return Outcome(alert, "render_failed", playbook=name, message=str(err))
        refused = self.brakes.policy.namespaces.refusal(target.namespace)
        if refused is not None:
            await asyncio.to_thread(audit.record_intake, "refused_namespace", alert, refused, playbook=name)
            REFUSALS.labels(limit="namespace").inc()
            log.info("alert %s (%s) refused: %s", alert.alertname, alert.dedup_key, refused)
            return Outcome(alert, "refused_namespace", playbook=name, target=target.key, message=refused)
        wf_id = workflow_id_for(target.key, cluster)
        # One thread hop for both reads: with a group of 1,000 alerts the hops add up.
        run_id, latest = await asyncio.to_thread(lambda: (audit.handled_by(alert.dedup_key), audit.latest_run(wf_id)))
        if run_id is not None:
            msg = f"this firing was already handled by run {run_id}"
            await asyncio.to_thread(audit.record_intake, "duplicate", alert, msg, playbook=name, run_id=run_id)
            return Outcome(alert, "duplicate", wf_id, run_id, name, target.key, msg)
        cooling = await self._cooldown_of(latest, alert, name, wf_id, target.key)
        if cooling is not None:
            return cooling
        run_id = self._handed_over.run_of(wf_id, alert.dedup_key, latest)
        if run_id is not None:
            msg = f"this firing was already handed to run {run_id}; not sent again"
            log.info("alert %s (%s): %s", alert.alertname, alert.dedup_key, msg)
            return Outcome(alert, "duplicate", wf_id, run_id, name, target.key, msg)
        return Planned(alert, received_at, loaded, target, playbook, latest, cluster)

    def _plan_resolved(self, alert: AlertRef, received_at: datetime, cluster: str | None) -> Outcome | Planned:
        loaded = self.playbooks.match(alert.labels)
        if loaded is None:
            return Outcome(alert, "unmatched", message="no playbook matches this alert's labels")
        name = loaded.ref.name
        try:
            target, playbook = render(loaded, alert)
        except RenderError as err:
            return Outcome(alert, "render_failed", playbook=name, message=str(err))
        refused = self.brakes.policy.namespaces.refusal(target.namespace)
        if refused is not None:
            return Outcome(alert, "refused_namespace", playbook=name, target=target.key, message=refused)
        return Planned(alert, received_at, loaded, target, playbook, cluster=cluster)

    async def _cooldown_of(self, latest: RunRow | None, alert: AlertRef, name: str, wf_id: str, target_key: str) -> Outcome | None:
        """A ``cooling_down`` answer (recorded as ``cooldown``) when the target's last run ended less than its
        cooldown ago, else None."""
        now = datetime.now(timezone.utc)
        if latest is None or latest.outcome == "running" or latest.cooldown_until is None or latest.cooldown_until <= now:
            return None
        msg = (
            f"run {latest.run_id} of {target_key} ended {latest.outcome}; no new remediation before "
            f"its cooldown ends at {latest.cooldown_until.isoformat()}"
        )
        await asyncio.to_thread(self.audit.record_intake, "cooldown", alert, msg, playbook=name, run_id=latest.run_id)
        log.info("alert %s (%s): %s", alert.alertname, alert.dedup_key, msg)
        return Outcome(alert, "cooling_down", wf_id, latest.run_id, name, target_key, msg)

    # ------------------------------------------------------------------ send

    async def send(self, planned: Planned, pauses_in_force: list[Any]) -> Outcome:
        """The planned alert's one Temporal call.

        Raises:
            TemporalUnavailable: the call failed or timed out.
        """
        async with self._slots:
            if planned.alert.status == "firing":
                return await self._send_firing(planned, pauses_in_force)
            return await self._send_resolved(planned)

    async def _send_firing(self, p: Planned, pauses_in_force: list[Any]) -> Outcome:
        alert, target, name, wf_id, latest = p.alert, p.target, p.name, p.workflow_id, p.latest
        settings = self.settings
        attrs = [
            SearchAttributePair(SA_ALERTNAME, alert.alertname),
            SearchAttributePair(SA_TARGET, target.key),
            SearchAttributePair(SA_PLAYBOOK, name),
            SearchAttributePair(SA_OUTCOME, "running"),
        ]
        if target.namespace:
            attrs.append(SearchAttributePair(SA_NAMESPACE, target.namespace))
        if p.cluster:
            attrs.append(SearchAttributePair(SA_CLUSTER, p.cluster))

        def signal_with_start(reuse: WorkflowIDReusePolicy) -> Awaitable[WorkflowHandle[Any, Any]]:
            return self.temporal_call(
                f"signal-with-start {wf_id}",
                lambda: self.client.start_workflow(
                    RemediationWorkflow.run,
                    RemediationInput(
                        target=target,
                        playbook=p.playbook,
                        playbook_ref=p.loaded.ref,
                        simulate=settings.simulate,
                        ui_url=self.ui_url,
                        public_url=self.public_url,
                        heartbeat_timeout=settings.heartbeat_timeout,
                        kube_retry_budget=settings.kube_retry_budget,
                        dry_run=settings.dry_run or p.playbook.dry_run,
                        gitops=self.brakes.policy.gitops,
                    ),
                    id=wf_id,
                    task_queue=self._task_queue_of(p.cluster),
                    start_signal=ALERT_SIGNAL,
                    start_signal_args=[AlertSignal(alert=alert, playbook=name, received_at=p.received_at)],
                    search_attributes=TypedSearchAttributes(attrs),
                    id_reuse_policy=reuse,
                    rpc_timeout=self.rpc_timeout,
                ),
            )

        # While the audit trail shows the target's last run still running, the alert may only
        # join that run: if Temporal has ended it without an outcome (terminated, timed out),
        # it must not start a new one inside the ended run's cooldown.
        believed_running = latest is not None and latest.outcome == "running"
        try:
            handle = await signal_with_start(
                WorkflowIDReusePolicy.REJECT_DUPLICATE if believed_running else WorkflowIDReusePolicy.ALLOW_DUPLICATE
            )
        except WorkflowAlreadyStartedError:
            assert latest is not None
            try:
                latest = await asyncio.wait_for(self.settler.settle(latest), timeout=self._timeout_s)
            except (RPCError, asyncio.TimeoutError, TimeoutError, RuntimeError) as err:
                raise TemporalUnavailable(f"settle the ended run {latest.run_id}: {err}") from err
            cooling = await self._cooldown_of(latest, alert, name, wf_id, target.key)
            if cooling is not None:
                return cooling
            handle = await signal_with_start(WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        run_id = handle.result_run_id
        disposition = _signal_with_start_disposition(handle)
        message = ""
        if disposition == "attached" and latest is not None and latest.outcome == "running" and latest.playbook != name:
            disposition = "queued"
            message = (
                f"run {latest.run_id} of playbook {latest.playbook} remediates {target.key}; playbook {name} runs "
                "after it ends if this alert still fires"
            )
        pauses = [pause for pause in pauses_in_force if pause.covers(target.namespace, name)]
        if pauses and disposition in ("started", "attached", "handed_off"):
            message = (
                f"{'started' if disposition == 'started' else 'handed to'} run {run_id}, which freezes before any "
                f"change: paused ({pauses[0]}) by {pauses[0].paused_by}: {pauses[0].reason}"
            )
            disposition = "paused"
        if disposition != "queued":
            self._handed_over.add(wf_id, alert.dedup_key, run_id)
        log.info("alert %s (%s) %s %s run %s", alert.alertname, alert.dedup_key, disposition, wf_id, run_id)
        return Outcome(alert, disposition, wf_id, run_id, name, target.key, message, cluster=p.cluster)

    async def _send_resolved(self, p: Planned) -> Outcome:
        alert, name, wf_id, target = p.alert, p.name, p.workflow_id, p.target
        handle = self.client.get_workflow_handle(wf_id)
        try:
            await self.temporal_call(
                f"signal {wf_id}",
                lambda: handle.signal(
                    RemediationWorkflow.alert,
                    AlertSignal(alert=alert, playbook=name, received_at=p.received_at),
                    rpc_timeout=self.rpc_timeout,
                ),
                not_found_ok=True,
            )
        except RPCError as err:  # NOT_FOUND: no run, or the last run already completed
            msg = f"no remediation runs for {target.key}: {err.message}"
            log.info("resolved alert %s (%s): %s", alert.alertname, alert.dedup_key, msg)
            return Outcome(alert, "resolved_no_run", wf_id, None, name, target.key, msg, cluster=p.cluster)
        log.info("resolved alert %s (%s) signalled to %s", alert.alertname, alert.dedup_key, wf_id)
        return Outcome(alert, "resolved_signalled", wf_id, None, name, target.key, cluster=p.cluster)

    async def one(self, alert: AlertRef, received_at: datetime, pauses: list[Any]) -> Outcome | TemporalUnavailable:
        """``plan`` then, if needed, ``send``; a Temporal failure is returned, not raised."""
        try:
            planned = await self.plan(alert, received_at)
            if isinstance(planned, Outcome):
                return self.named(planned)
            return self.named(await self.send(planned, pauses))
        except TemporalUnavailable as err:
            return err

    def _task_queue_of(self, cluster: str | None) -> str:
        """The task queue of ``cluster``'s workers: this engine's own for its cluster, else
        ``<task queue>-<cluster>`` (remediator.domain.runs.cluster_task_queue)."""
        if cluster == self.cluster:
            return self.task_queue
        return cluster_task_queue(self.settings.task_queue, cluster)

    def named(self, outcome: Outcome) -> Outcome:
        """``outcome`` with its ``cluster``: the one it names already, else the one of its
        remediation's workflow ID, else this engine's."""
        if outcome.cluster is None:
            outcome.cluster = (cluster_of(outcome.workflow_id) if outcome.workflow_id else None) or self.cluster
        return outcome

    # ------------------------------------------------------------------ large groups

    async def start_group(
        self, planned: list[Planned], *, receiver: str, group_key: str, external_url: str
    ) -> list[Outcome]:
        """Hand ``planned`` (one group's alerts) to Temporal in as few calls as payload size
        allows (``GROUP_CHUNK_BYTES`` each): ``AlertHandoffWorkflow``s on
        ``handoff_task_queue``, whose activity sends each alert. An identical resend while a
        hand-off runs joins it (same workflow ID, ``USE_EXISTING``). One ``handed_off`` answer
        per alert, naming the hand-off workflow.

        Raises:
            TemporalUnavailable: a hand-off workflow could not be started (nothing of its chunk
                was handed over; the resend hands it over).
        """
        if not planned:
            return []
        received_at = planned[0].received_at
        bare = {"receiver": "", "group_key": "", "external_url": ""}
        chunks = group_chunks([p.alert.model_copy(update=bare) for p in planned])
        # group_chunks keeps the order: map the chunks back to the planned alerts by position.
        outcomes: list[Outcome] = []
        position = 0

        async def start(chunk: list[AlertRef]) -> tuple[str, str]:
            wf_id = group_workflow_id(group_key, chunk, self.cluster)
            async with self._slots:
                handle = await self.temporal_call(
                    f"start hand-off {wf_id}",
                    lambda: self.client.start_workflow(
                        AlertHandoffWorkflow.run,
                        HandoffInput(
                            received_at=received_at, receiver=receiver, group_key=group_key,
                            external_url=external_url, alerts=chunk,
                        ),
                        id=wf_id,
                        task_queue=handoff_task_queue(self.task_queue),
                        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        rpc_timeout=self.rpc_timeout,
                    ),
                )
            return wf_id, handle.result_run_id

        started = await asyncio.gather(*(start(c) for c in chunks))
        for chunk, (wf_id, run_id) in zip(chunks, started):
            for _ in chunk:
                p = planned[position]
                position += 1
                msg = (
                    f"handed to {wf_id} (run {run_id}) with the {len(chunk)} alerts of this group it carries; "
                    f"it {'signals' if p.alert.status == 'resolved' else 'starts or signals'} {p.workflow_id}"
                )
                outcomes.append(Outcome(p.alert, "handed_off", wf_id, None, p.name, p.target.key, msg))
        log.info("group %s: %d alerts handed to %s", group_key, len(planned), ", ".join(w for w, _ in started))
        return outcomes

    async def hand_over_group(self, inp: HandoffInput) -> HandoffSummary:
        """The ``hand_over_alerts`` activity's work: every alert of ``inp`` planned and sent as
        the intake would (the pauses in force read now); the alerts by disposition.

        Raises:
            ApplicationError: some alerts could not be handed to Temporal (retryable; a retry
                finds the others already handed over).
        """
        pauses = await asyncio.to_thread(self.brakes.pauses)
        alerts = inp.group_alerts()
        results = await asyncio.gather(*(self.one(a, inp.received_at, pauses) for a in alerts))
        failures = [r for r in results if isinstance(r, TemporalUnavailable)]
        counts: dict[str, int] = {}
        for r in results:
            if isinstance(r, Outcome):
                counts[r.disposition] = counts.get(r.disposition, 0) + 1
        if failures:
            raise ApplicationError(
                f"{len(failures)} of {len(results)} alerts could not be handed to Temporal ({failures[0]}); "
                "retrying, alerts already handed over are deduplicated",
                type="TemporalUnavailable",
                # An outage, not a bug: the SDK logs a benign failure without a traceback.
                category=ApplicationErrorCategory.BENIGN,
            )
        log.info("group %s handed over: %s", inp.group_key, counts)
        return HandoffSummary(dispositions=counts)
