"""Store URL → SQLAlchemy engine, with the SQLite settings that make a 250 a promise.

SQLite runs in WAL mode with `synchronous=FULL`: in WAL mode NORMAL may lose the last transactions on power
loss, and a message we answered 250 for must survive that (RFC 5321 §4.5.4.1). `busy_timeout` lets a second
process (the CLI, a reprocess) wait for the writer instead of failing at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # PostgreSQL: pre-ping so a restarted server costs one failed checkout, not a failed commit.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
