"""Instants as the desk types them: ISO 8601 with or without an offset, or a duration back from now.

Why one function: `cases list --since`, `cases export --since` and the web desk's date range must read
`2026-12-01T20:45:00+01:00`, `2026-12-01T14:45:00-05:00` and `2026-12-01T19:45Z` as the same instant. The
store keeps UTC; a time without an offset is taken as UTC (said in every `--help` that takes one), never as
the machine's local zone, which differs between an operator's laptop and the server.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# 90m, 24h, 7d, 2w (and s for tests and scripts); a bare number is not a duration: is it days or hours?
_DURATION = re.compile(r"(?i)^\s*(\d{1,7})\s*(s|m|min|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


class InstantError(ValueError):
    """The text is neither an ISO 8601 date/time nor a duration; the message says what is accepted."""


def parse_instant(text: str, now: datetime) -> datetime:
    """An aware UTC datetime for `text`: `2026-12-01`, `2026-12-01T20:45`, `…+01:00`, `…Z`, or `7d` ago."""
    value = text.strip()
    duration = _DURATION.match(value)
    if duration:
        seconds = int(duration.group(1)) * _UNITS[duration.group(2).lower()]
        return (now - timedelta(seconds=seconds)).astimezone(UTC)
    try:
        instant = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InstantError(
            f"{text!r} is not a time: use ISO 8601 (2026-12-01, 2026-12-01T20:45+01:00; no offset = UTC) "
            "or a duration back from now (90m, 24h, 7d)"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)
