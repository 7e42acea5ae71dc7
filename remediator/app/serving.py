"""How the intake is served: uvicorn with bounded connections and a request-head timeout.

Built by the worker process (remediator.app.runtime) and by the tests and benchmark that serve
the intake the same way (``intake_server``).

uvicorn bounds the time between requests on a kept-alive connection (``timeout_keep_alive``)
and, with ``limit_concurrency``, answers 503 to requests beyond that many connections, but it
waits for a request's head for ever: a client that opens a connection and sends its headers a
byte at a time holds it. ``HeadTimeoutH11Protocol`` closes such a connection ``read_timeout``
after it opened (or after the first byte of its next request): with a 408 when part of a head
arrived, silently when nothing did. The body is bounded in the app, where it is read
(remediator.app.intake.read_body answers 408).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from remediator.app.config import Settings

log = logging.getLogger("remediator.app.serving")

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request head has not arrived
    within ``head_timeout`` seconds of the connection opening, or of the first byte after the
    previous response (data that arrives while no request is being read, such as the unread
    rest of a body that the app answered without reading, starts the clock too)."""

    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head was complete: the app has the request now
            self._stop_head_timer()
        elif self.cycle is None or self.cycle.response_complete:
            self._head_bytes += len(data)
            self._start_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = 0

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; read_body bounds its body
        if self._head_bytes and self.conn.our_state is h11.IDLE:
            body = b'{"error": "request headers not received within %gs"}' % self._head_timeout
            self.transport.write(_REQUEST_TIMEOUT % (len(body), body))
        log.info(
            "closed connection from %s: no complete request head within %gs (%d bytes arrived)",
            "%s:%d" % self.client if self.client else "?", self._head_timeout, self._head_bytes,
        )
        self.transport.close()


def intake_server(app: Any, settings: Settings, **config: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the intake's bounds from ``settings``: ``read_timeout``
    for request heads (``HeadTimeoutH11Protocol``) and idle kept-alive connections,
    ``max_connections`` as ``limit_concurrency`` (503 beyond). ``config``: more
    ``uvicorn.Config`` arguments (``host``, ``port``, ``log_level``...)."""
    read_timeout = settings.read_timeout.total_seconds()
    return uvicorn.Server(
        uvicorn.Config(
            app,
            http=functools.partial(HeadTimeoutH11Protocol, head_timeout=read_timeout),  # type: ignore[arg-type]
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=min(5, max(1, int(read_timeout))),
            lifespan="off",
            **config,
        )
    )


async def temporal_unhealthy(client: Any, rpc_timeout_s: float) -> str | None:
    """Why the Temporal frontend of ``client`` cannot serve (its gRPC health check failed, timed
    out after ``rpc_timeout_s`` seconds, or said not serving), or None when it serves. The one
    check behind every ``GET /healthz``."""
    from datetime import timedelta

    try:
        ok = await asyncio.wait_for(
            client.service_client.check_health(timeout=timedelta(seconds=rpc_timeout_s)), timeout=rpc_timeout_s
        )
    except Exception as err:  # any failure means Temporal cannot be used from here
        return f"Temporal: {type(err).__name__}: {err}"
    return None if ok else "Temporal frontend reports not serving"


def worker_health_app(client: Any, worker_failed: Any, rpc_timeout_s: float = 5.0) -> Any:
    """The HTTP app of a worker without the intake (``remediator worker --no-intake``), for the
    kubelet's probes: ``GET /healthz`` is 200 ``{"status": "ok"}`` when the Temporal frontend
    answers its health check and the Worker is still running, else 503 with the reason.

    Args:
        client: the connected ``temporalio.client.Client``.
        worker_failed: a callable returning the Worker's failure (an exception) or None while it runs.
        rpc_timeout_s: seconds the health check may take before 503.
    """
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> Any:
        failed = worker_failed()
        if failed is not None:
            return JSONResponse({"status": "unavailable", "error": f"worker stopped: {failed}"}, 503)
        unhealthy = await temporal_unhealthy(client, rpc_timeout_s)
        if unhealthy is not None:
            return JSONResponse({"status": "unavailable", "error": unhealthy}, 503)
        return JSONResponse({"status": "ok"})

    return app
