"""What remediator posted to Slack, remembered in a small SQLite file (``<state_dir>/slack.db``).

Used by the Slack activities (activities/slack.py) so that retries and restarts post nothing
twice, and each target's notices fold into one thread.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import NamedTuple


class PostedMessage(NamedTuple):
    channel: str
    ts: str
    thread_ts: str | None


class SlackThreads:
    """What remediator posted to Slack, in SQLite (``<state_dir>/slack.db``), safe across threads.

    * messages: ``key`` (``approval:<request_id>``, ``escalation:<request_id>``,
      ``notice:<event_key>``) -> channel ID, ``ts``, ``thread_ts``; written right after a post so
      a retried activity returns it instead of posting again;
    * threads: (channel ID, target key) -> the ``ts`` of the target's notice thread;
    * channels: name -> ID, cached from ``conversations.list`` and post answers;
    * approval status: the most final status written to each approval message, so an older
      update arriving late does not bring buttons back.

    The file is a cache of what Slack holds: when it is lost the activities find the same
    messages through ``conversations.history`` / ``conversations.replies`` metadata.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        with self._lock:
            if str(path) != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript("""
                CREATE TABLE IF NOT EXISTS messages (
                    key TEXT PRIMARY KEY, channel TEXT NOT NULL, ts TEXT NOT NULL, thread_ts TEXT);
                CREATE TABLE IF NOT EXISTS threads (
                    channel TEXT NOT NULL, target TEXT NOT NULL, thread_ts TEXT NOT NULL,
                    PRIMARY KEY (channel, target));
                CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, id TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS approval_status (request_id TEXT PRIMARY KEY, rank INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS approval_requests (request_id TEXT PRIMARY KEY, request TEXT NOT NULL);
            """)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def message(self, key: str) -> PostedMessage | None:
        with self._lock:
            row = self._conn.execute("SELECT channel, ts, thread_ts FROM messages WHERE key = ?", (key,)).fetchone()
        return PostedMessage(*row) if row else None

    def record_message(self, key: str, channel: str, ts: str, thread_ts: str | None = None) -> PostedMessage:
        """Remember a posted message; the first record of a key wins. Returns the record kept."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO messages (key, channel, ts, thread_ts) VALUES (?, ?, ?, ?)",
                               (key, channel, ts, thread_ts))
            row = self._conn.execute("SELECT channel, ts, thread_ts FROM messages WHERE key = ?", (key,)).fetchone()
        return PostedMessage(*row)

    def thread(self, channel: str, target: str) -> str | None:
        """``ts`` of the notice thread for ``target`` (a ``TargetRef.key``) in ``channel``, or None."""
        with self._lock:
            row = self._conn.execute("SELECT thread_ts FROM threads WHERE channel = ? AND target = ?",
                                     (channel, target)).fetchone()
        return row[0] if row else None

    def set_thread(self, channel: str, target: str, thread_ts: str) -> str:
        """Remember a target's thread; an existing one is kept. Returns the thread kept."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO threads (channel, target, thread_ts) VALUES (?, ?, ?)",
                               (channel, target, thread_ts))
            row = self._conn.execute("SELECT thread_ts FROM threads WHERE channel = ? AND target = ?",
                                     (channel, target)).fetchone()
        return row[0]

    def forget_thread(self, channel: str, target: str) -> None:
        """Drop a target's thread (its root message was deleted); the next notice starts a new one."""
        with self._lock:
            self._conn.execute("DELETE FROM threads WHERE channel = ? AND target = ?", (channel, target))

    def channel_id(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT id FROM channels WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_channel_id(self, name: str, channel_id: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO channels (name, id) VALUES (?, ?)", (name, channel_id))

    def record_request(self, request_id: str, request_json: str) -> None:
        """Remember the approval request as posted (JSON), so updates of its message need only
        its ID; the first record wins."""
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO approval_requests (request_id, request) VALUES (?, ?)",
                               (request_id, request_json))

    def request(self, request_id: str) -> str | None:
        """The approval request recorded at post time (JSON), or None."""
        with self._lock:
            row = self._conn.execute("SELECT request FROM approval_requests WHERE request_id = ?", (request_id,)).fetchone()
        return row[0] if row else None

    def advance_status(self, request_id: str, rank: int) -> bool:
        """Record ``rank`` for an approval message if it is not lower than the one recorded.
        Returns False when a more final status was already written (the caller skips its update)."""
        with self._lock:
            row = self._conn.execute("SELECT rank FROM approval_status WHERE request_id = ?", (request_id,)).fetchone()
            if row and row[0] > rank:
                return False
            self._conn.execute("INSERT OR REPLACE INTO approval_status (request_id, rank) VALUES (?, ?)",
                               (request_id, rank))
            return True


CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
"""Slack conversation IDs: public ``C...``, private (legacy) ``G...``, direct ``D...``."""
