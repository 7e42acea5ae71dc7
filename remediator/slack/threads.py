"""What remediator posted to Slack, remembered in the deployment's database (remediator.db:
the SQLite file ``<state_dir>/audit.db`` by default, PostgreSQL shared by replicas), beside the
audit trail.

Used by the Slack activities (activities/slack.py) so that retries and restarts post nothing
twice, and each target's notices fold into one thread, whichever replica runs the activity.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import text

from remediator.db import Database

_SQLITE_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS slack_messages ("
    " key TEXT PRIMARY KEY, channel TEXT NOT NULL, ts TEXT NOT NULL, thread_ts TEXT)",
    "CREATE TABLE IF NOT EXISTS slack_threads ("
    " channel TEXT NOT NULL, target TEXT NOT NULL, thread_ts TEXT NOT NULL, PRIMARY KEY (channel, target))",
    "CREATE TABLE IF NOT EXISTS slack_channels (name TEXT PRIMARY KEY, id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slack_approval_status (request_id TEXT PRIMARY KEY, rank INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slack_approval_requests (request_id TEXT PRIMARY KEY, request TEXT NOT NULL)",
]
"""The tables in an SQLite database, created when missing; PostgreSQL's are made by its
migrations (remediator/db/migrations, ``remediator db upgrade``)."""


class PostedMessage(NamedTuple):
    channel: str
    ts: str
    thread_ts: str | None


class SlackThreads:
    """What remediator posted to Slack, safe across threads and processes.

    * ``slack_messages``: ``key`` (``approval:<request_id>``, ``escalation:<request_id>``,
      ``notice:<event_key>``) -> channel ID, ``ts``, ``thread_ts``; written right after a post
      so a retried activity returns it instead of posting again;
    * ``slack_threads``: (channel ID, target key) -> the ``ts`` of the target's notice thread;
    * ``slack_channels``: name -> ID, cached from ``conversations.list`` and post answers;
    * ``slack_approval_status``: the most final status written to each approval message, so an
      older update arriving late does not bring buttons back.

    The tables are a cache of what Slack holds: when they are lost the activities find the same
    messages through ``conversations.history`` / ``conversations.replies`` metadata.

    Args:
        db: the deployment's database (shared with remediator.audit.store by the worker), a
            ``--database-url``, or an SQLite file path (``:memory:`` for a private one).

    Raises:
        DatabaseError: the SQLite file cannot be opened or its tables created.
    """

    def __init__(self, db: Database | str | Path) -> None:
        self._owns_db = not isinstance(db, Database)
        self.db = Database(db) if not isinstance(db, Database) else db
        if self.db.dialect == "sqlite":
            with self.db.write() as conn:
                for statement in _SQLITE_SCHEMA:
                    conn.exec_driver_sql(statement)

    def close(self) -> None:
        """Close the pool's connections when this object opened the database."""
        if self._owns_db:
            self.db.dispose()

    def _one(self, sql: str, **params: str) -> tuple | None:
        with self.db.read() as conn:
            row = conn.execute(text(sql), params).first()
        return tuple(row) if row else None

    def message(self, key: str) -> PostedMessage | None:
        row = self._one("SELECT channel, ts, thread_ts FROM slack_messages WHERE key = :key", key=key)
        return PostedMessage(*row) if row else None

    def record_message(self, key: str, channel: str, ts: str, thread_ts: str | None = None) -> PostedMessage:
        """Remember a posted message; the first record of a key wins. Returns the record kept."""
        with self.db.write() as conn:
            conn.execute(
                text("INSERT INTO slack_messages (key, channel, ts, thread_ts) VALUES (:key, :channel, :ts, :thread_ts)"
                     " ON CONFLICT (key) DO NOTHING"),
                {"key": key, "channel": channel, "ts": ts, "thread_ts": thread_ts},
            )
            row = conn.execute(text("SELECT channel, ts, thread_ts FROM slack_messages WHERE key = :key"), {"key": key}).one()
        return PostedMessage(*row)

    def thread(self, channel: str, target: str) -> str | None:
        """``ts`` of the notice thread for ``target`` (a ``TargetRef.key``) in ``channel``, or None."""
        row = self._one("SELECT thread_ts FROM slack_threads WHERE channel = :channel AND target = :target",
                        channel=channel, target=target)
        return row[0] if row else None

    def set_thread(self, channel: str, target: str, thread_ts: str) -> str:
        """Remember a target's thread; an existing one is kept. Returns the thread kept."""
        params = {"channel": channel, "target": target, "thread_ts": thread_ts}
        with self.db.write() as conn:
            conn.execute(
                text("INSERT INTO slack_threads (channel, target, thread_ts) VALUES (:channel, :target, :thread_ts)"
                     " ON CONFLICT (channel, target) DO NOTHING"),
                params,
            )
            return conn.execute(
                text("SELECT thread_ts FROM slack_threads WHERE channel = :channel AND target = :target"), params
            ).scalar_one()

    def forget_thread(self, channel: str, target: str) -> None:
        """Drop a target's thread (its root message was deleted); the next notice starts a new one."""
        with self.db.write() as conn:
            conn.execute(text("DELETE FROM slack_threads WHERE channel = :channel AND target = :target"),
                         {"channel": channel, "target": target})

    def channel_id(self, name: str) -> str | None:
        row = self._one("SELECT id FROM slack_channels WHERE name = :name", name=name)
        return row[0] if row else None

    def set_channel_id(self, name: str, channel_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                text("INSERT INTO slack_channels (name, id) VALUES (:name, :id) ON CONFLICT (name) DO UPDATE SET id = excluded.id"),
                {"name": name, "id": channel_id},
            )

    def record_request(self, request_id: str, request_json: str) -> None:
        """Remember the approval request as posted (JSON), so updates of its message need only
        its ID; the first record wins."""
        with self.db.write() as conn:
            conn.execute(
                text("INSERT INTO slack_approval_requests (request_id, request) VALUES (:request_id, :request)"
                     " ON CONFLICT (request_id) DO NOTHING"),
                {"request_id": request_id, "request": request_json},
            )

    def request(self, request_id: str) -> str | None:
        """The approval request recorded at post time (JSON), or None."""
        row = self._one("SELECT request FROM slack_approval_requests WHERE request_id = :request_id", request_id=request_id)
        return row[0] if row else None

    def advance_status(self, request_id: str, rank: int) -> bool:
        """Record ``rank`` for an approval message if it is not lower than the one recorded.
        Returns False when a more final status was already written (the caller skips its update).
        One write transaction: two replicas updating the same message are serialised."""
        with self.db.write() as conn:
            old = conn.execute(
                text("SELECT rank FROM slack_approval_status WHERE request_id = :request_id"), {"request_id": request_id}
            ).scalar()
            if old is not None and old > rank:
                return False
            conn.execute(
                text("INSERT INTO slack_approval_status (request_id, rank) VALUES (:request_id, :rank)"
                     " ON CONFLICT (request_id) DO UPDATE SET rank = excluded.rank"),
                {"request_id": request_id, "rank": rank},
            )
            return True


CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
"""Slack conversation IDs: public ``C...``, private (legacy) ``G...``, direct ``D...``."""
