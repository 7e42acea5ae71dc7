"""A real PostgreSQL server for the tests, started from Debian's ``postgresql`` package into a
temporary directory (``initdb`` then ``pg_ctl``), once per test session (once per xdist
worker), on a free loopback port; each test gets a database of its own (``CREATE DATABASE``).

Durability is traded for speed (``fsync=off``, ``synchronous_commit=off``,
``full_page_writes=off``): the server's data directory is thrown away at the end.

initdb refuses to run as root: as root, the server runs as the ``postgres`` system user (the
package creates it) through ``runuser``, in a directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from remediator.sim.alerting import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
"""Debian installs the server binaries off PATH, one directory per major version."""


def pg_binary(name: str) -> str:
    """The newest ``initdb``/``pg_ctl`` of Debian's ``postgresql`` package (or on PATH); fails
    the test with the install hint when absent (``make system-deps`` installs it)."""
    for directory in PG_BIN_DIRS:
        if (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} was not found in /usr/lib/postgresql/*/bin or on PATH; "
                    "install it with `apt-get install postgresql` (make system-deps)")
    return found


class PostgresServer:
    """One server: ``url(database)`` gives a ``postgresql://`` URL, ``new_database()`` makes an
    empty database and returns its URL."""

    def __init__(self) -> None:
        self.port = free_port()
        self._as: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="remediator-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.user = "remediator"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(pg_binary("initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self, *, upgraded: bool = True) -> str:
        """A new database's URL: at this remediator's schema revision (copied from a template
        upgraded once, which takes milliseconds) or, ``upgraded=False``, empty."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        template = ""
        if upgraded:
            if self._template is None:
                self._template = self._upgraded_template()
            template = f' TEMPLATE "{self._template}"'
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{template}')
        return self.url(name)

    _template: str | None = None

    def _upgraded_template(self) -> str:
        from remediator.db import Database
        from remediator.db.migrate import upgrade

        name = "remediator_template"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        db = Database(self.url(name))
        try:
            upgrade(db)
        finally:
            db.dispose()
        return name
