"""Alembic's environment for remediator's PostgreSQL schema: run by remediator.db.migrate
(``remediator db upgrade``) with the connection it opened, never from an alembic.ini."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
