"""Helpers shared by the tests that serve the intake app over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import AsyncIterator

import uvicorn


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
