"""`db upgrade` and the check `serve` makes before it accepts mail.

Migrations live in `storage/migrations` and run through alembic for SQLite and PostgreSQL alike; the
configuration is built in code so an installed package needs no alembic.ini beside it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def needs_upgrade(engine: Engine) -> bool:
    return current_revision(engine) != head_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _alembic_config()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild tables (copy, drop, rename); with foreign keys enforced the drop of a
            # referenced table fails. Off for the migration, on again after (alembic's batch-mode advice).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()  # the PRAGMA autobegan a transaction; SQLite ignores it inside one anyway
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                if sqlite:
                    _restore_fts_triggers(connection)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _restore_fts_triggers(connection: Connection) -> None:
    """A batch migration that rebuilds `messages` on SQLite drops its triggers silently, and full-text search
    would then miss every later message; put them back (a no-op when they are there)."""
    from storage.search import SQLITE_FTS_TRIGGERS

    exists = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'"
    ).first()
    if exists:
        for statement in SQLITE_FTS_TRIGGERS:
            connection.exec_driver_sql(statement)


def autogenerate(engine: Engine, message: str) -> None:
    """Developer helper: write a new migration from the models (`python -m storage.schema MESSAGE`)."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    import sys
    import tempfile

    from storage.engine import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        scratch = make_engine(f"sqlite:///{tmp}/scratch.db")
        upgrade(scratch)
        autogenerate(scratch, " ".join(sys.argv[1:]) or "schema change")
