"""Alembic migrations, applied in process at start."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

_HERE = Path(__file__).parent / "migrations"


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest migration this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The migration the database is at."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# The advisory lock that serialises migrations of one PostgreSQL database (any fixed number; this spells "vidq").
_PG_LOCK = 0x76696471


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the newest migration (a no-op when it is there already)."""
    if current_revision(engine) == head_revision():
        return
    # One migrator at a time, so processes starting together do not race to create the same tables: on SQLite the
    # store's connections begin IMMEDIATE; on PostgreSQL a transaction-scoped advisory lock queues them. Either
    # way the later ones find the database already at head.
    with engine.connect() as conn:
        conn = conn.execution_options(immediate=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
                if MigrationContext.configure(conn).get_current_revision() == head_revision():
                    return
            command.upgrade(_config(conn), "head")
