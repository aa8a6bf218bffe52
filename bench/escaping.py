"""In-process timing of `escape_text` and `extract_indicators` on pathological 1 MB inputs.

Each input runs in a child process with a hard time limit, so a quadratic case is reported as a timeout
instead of stalling the benchmark."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from bench.messages import pathological


def _time_one(kind: str, text: str, out: Any) -> None:
    if kind == "escape":
        from parsers.escape import escape_text as fn
    else:
        from parsers.indicators import extract_indicators as fn  # type: ignore[assignment]
    started = time.perf_counter()
    result = fn(text)
    out.put((time.perf_counter() - started, len(result)))


def run(size: int = 1_000_000, limit: float = 20.0) -> list[dict[str, Any]]:
    ctx = mp.get_context("fork")
    rows = []
    for name, text in pathological(size).items():
        row: dict[str, Any] = {"input": name, "bytes": len(text)}
        for kind in ("escape", "indicators"):
            out = ctx.Queue()
            proc = ctx.Process(target=_time_one, args=(kind, text, out), daemon=True)
            proc.start()
            proc.join(limit)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
                row[f"{kind}_s"] = None
                row[f"{kind}_timeout"] = True
            else:
                try:
                    seconds, _n = out.get(timeout=5)
                    row[f"{kind}_s"] = round(seconds, 4)
                except Exception:
                    row[f"{kind}_s"] = None
                    row[f"{kind}_error"] = f"exit {proc.exitcode}"
        rows.append(row)
    return rows
