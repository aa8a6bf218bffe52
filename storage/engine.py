"""Store URL → SQLAlchemy engine, with the SQLite settings that make a 250 a promise.

SQLite runs in WAL mode with `synchronous=FULL`: in WAL mode NORMAL may lose the last transactions on power
loss, and a message we answered 250 for must survive that (RFC 5321 §4.5.4.1). `busy_timeout` lets a second
process (the CLI, a reprocess) wait for the writer instead of failing at once.

`durable=False` is for the intake process alone, whose transactions hold only what can be derived again
from the inbox (cases, messages, indicators, outbox rows, and the inbox entry marked done in the same
transaction). It commits without waiting for the disk (SQLite `synchronous=NORMAL`, PostgreSQL
`synchronous_commit=off`). A power loss can then roll back the last few of those transactions as a unit, so
their entries are pending again and are processed again; nothing a sender was told 250 for is in them. And
such a transaction is durable before anything acts on it outside the store: the confirmation sender's
claim is an ordinary durable commit, which flushes the log up to and past it (one WAL, in order). What it
buys: the case transaction stops paying an fsync (~10 ms here) while it holds SQLite's single write lock,
which the listener's inbox commits wait for.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def store_location(url: str) -> str:
    """Where the store is, as an operator needs to see it: a SQLite file's absolute path, or the URL with
    its password masked."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return str(Path(parsed.database).resolve())
    return parsed.render_as_string(hide_password=True)


def store_missing(url: str) -> bool:
    """A SQLite store whose file does not exist: opening it would create an empty one (issue 17)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return False
    return not Path(parsed.database).exists()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, synchronous: str = "FULL") -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _private_file(path: Path) -> None:
    """The store holds evidence (and CSAM reports): its directory is created 0700 and the file 0600
    before SQLite opens it, whatever the umask (issue 15). SQLite gives its -wal and -shm files the
    database file's mode. Existing files keep the mode their owner chose."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str, *, durable: bool = True) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            _private_file(Path(database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
        pragmas = _sqlite_pragmas if durable else functools.partial(_sqlite_pragmas, synchronous="NORMAL")
        event.listen(engine, "connect", pragmas)
        return engine
    # PostgreSQL: pre-ping so a restarted server costs one failed checkout, not a failed commit.
    connect_args = {} if durable else {"options": "-c synchronous_commit=off"}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=connect_args)
