"""Alembic, run from code: the PostgreSQL schema's revision, its check at start, its upgrade.

Called by remediator.cli (``remediator db upgrade``) and remediator.audit.store (the check when
a store opens a PostgreSQL database). The migrations are ``remediator/db/migrations/versions``;
the Config is built here, so an installed package needs no ``alembic.ini``.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sqlalchemy import text

from remediator.db import WRITE_LOCK, Database, SchemaError


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "remediator.db:migrations")
    return cfg


def head_revision() -> str:
    """The newest revision this remediator ships (``0001``...)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The revision stamped in the PostgreSQL database, or None when it has none (empty)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_command(db: Database) -> str:
    """The command a person runs to bring ``db`` to this remediator's schema."""
    return f"remediator db upgrade --database-url {db.display}"


def check_schema(db: Database) -> None:
    """Refuse a PostgreSQL database whose schema is not this remediator's head revision.

    Raises:
        SchemaError: no schema, an older or a newer (unknown) revision; one line, naming the
            command.
    """
    head = head_revision()
    current = current_revision(db)
    if current == head:
        return
    script = ScriptDirectory.from_config(_config())
    known = {s.revision for s in script.walk_revisions()}
    if current is None:
        state = "has no remediator schema"
    elif current in known:
        state = f"has schema revision {current}, older than this remediator's {head}"
    else:
        raise SchemaError(
            f"database {db.display} has schema revision {current}, unknown to this remediator (newest {head}): "
            f"it was upgraded by a newer remediator; run that version, `{upgrade_command(db)}` cannot go back"
        )
    raise SchemaError(f"database {db.display} {state}: run `{upgrade_command(db)}` first")


def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the PostgreSQL database to the head revision in one transaction (alembic
    ``upgrade head``); returns (revision before, revision after).

    Raises:
        SchemaError: the database has a revision this remediator does not know.
        DatabaseError: a statement failed (nothing is changed).
    """
    before = current_revision(db)
    head = head_revision()
    if before is not None and before != head:
        known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
        if before not in known:
            check_schema(db)
    cfg = _config()
    with db.engine.begin() as conn:
        # Two upgrades started together (two replicas' init containers): the second waits for
        # the first to commit, then finds the database at head and does nothing.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head
