"""Small value helpers every storage part shares: the clock, and datetimes and rows as either backend hands
them back (SQLite drops the zone, sqlmodel unwraps one-column rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns; they are UTC by construction."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value is not None else None


def _scalar(row: Any) -> Any:
    """sqlmodel returns scalars for one-column selects; keep call sites indifferent to that."""
    if row is not None and (isinstance(row, tuple) or hasattr(row, "_mapping")):
        return row[0]
    return row


def is_integrity_error(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError)
