"""Read-only views of the gateway's SQLite store: counts, processing lag, drain waits.

Lag is `inbox.processed_at − inbox.received_at` for rows the intake worker has finished (state done,
duplicate or failed); `received_at` is stamped by `Inbox.append` just before the group commit that stands
behind the 250, so the lag is "250 → stored as a case" plus the commit itself.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.client import percentile

FINISHED = ("done", "duplicate", "failed")


class StoreProbe:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _one(self, sql: str, *params: Any) -> Any:
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchone()[0]
        finally:
            conn.close()

    def max_inbox_id(self) -> int:
        return int(self._one("SELECT coalesce(max(id), 0) FROM inbox"))

    def messages(self) -> int:
        return int(self._one("SELECT count(*) FROM messages"))

    def pending(self, after_id: int = 0) -> int:
        return int(self._one("SELECT count(*) FROM inbox WHERE state='pending' AND id > ?", after_id))

    def wait_drained(self, after_id: int, timeout: float, poll: float = 0.25) -> tuple[bool, float]:
        """Until no inbox row after `after_id` is pending, at most `timeout` s. Returns (drained, seconds)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                if self.pending(after_id) == 0:
                    return True, time.monotonic() - started
            except sqlite3.OperationalError:
                pass  # busy: try again
            if time.monotonic() >= deadline:
                return False, time.monotonic() - started
            time.sleep(poll)

    def lag(self, after_id: int, upto_id: int | None = None) -> dict[str, Any]:
        """Processing lag and end-to-end rate for inbox rows in (after_id, upto_id]."""
        conn = self._connect()
        try:
            q = "SELECT received_at, processed_at, state FROM inbox WHERE id > ?"
            params: list[Any] = [after_id]
            if upto_id is not None:
                q += " AND id <= ?"
                params.append(upto_id)
            rows = conn.execute(q, params).fetchall()
        finally:
            conn.close()
        lags, first_rx, last_done, pending = [], None, None, 0
        for received, processed, state in rows:
            rx = _dt(received)
            first_rx = rx if first_rx is None or rx < first_rx else first_rx
            if state in FINISHED and processed:
                done = _dt(processed)
                lags.append((done - rx).total_seconds())
                last_done = done if last_done is None or done > last_done else last_done
            else:
                pending += 1
        lags.sort()
        span = (last_done - first_rx).total_seconds() if lags and first_rx and last_done else 0.0
        return {
            "rows": len(rows),
            "processed": len(lags),
            "pending": pending,
            "lag_p50_s": _r(percentile(lags, 50)),
            "lag_p99_s": _r(percentile(lags, 99)),
            "lag_max_s": _r(lags[-1] if lags else None),
            "e2e_msgs_per_s": round(len(lags) / span, 1) if span > 0 else None,
            "span_s": round(span, 2),
        }


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
