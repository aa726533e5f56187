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


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the newest migration (a no-op when it is there already)."""
    if current_revision(engine) == head_revision():
        return
    # One writer at a time: on SQLite the store's connections begin IMMEDIATE, so concurrent starters queue up
    # and the later ones find the database already at head.
    with engine.connect() as conn:
        conn = conn.execution_options(immediate=True)
        with conn.begin():
            command.upgrade(_config(conn), "head")
