"""Time `python -m gateway ingest --config F DIR` over a generated directory of varied ~2 KB reports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import messages
from bench.servers import ROOT


def run(config: Path, workdir: Path, count: int, timeout: float) -> dict[str, Any]:
    directory = workdir / f"ingest-{count}"
    messages.write_ingest_dir(directory, count)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(config), "ingest", str(directory)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"messages": count, "timeout_s": timeout, "msgs_per_s": None, "error": "timeout"}
    seconds = time.monotonic() - started
    cases = [line for line in result.stdout.decode(errors="replace").splitlines() if line.strip()]
    return {
        "messages": count,
        "exit": result.returncode,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(count / seconds, 1) if result.returncode == 0 else None,
        "printed": len(cases),
        "distinct_cases": len(set(cases)),
    }
