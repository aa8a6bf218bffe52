"""Raw throughput with Postfix's `smtp-source`, when installed (apt-get install postfix)."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

SMTP_SOURCE = "/usr/sbin/smtp-source"


def available() -> str | None:
    return shutil.which("smtp-source") or (
        SMTP_SOURCE if shutil.os.access(SMTP_SOURCE, shutil.os.X_OK) else None
    )


def run(port: int, sessions: int, size: int, count: int, persistent: bool, timeout: float) -> dict[str, Any]:
    exe = available()
    if exe is None:
        return {"skipped": "smtp-source not installed"}
    argv = [
        exe,
        "-s",
        str(sessions),
        "-l",
        str(size),
        "-m",
        str(count),
        "-f",
        "reporter@reporter.example.net",
        "-t",
        "abuse@example.org",
        "-M",
        "bench.client.test",
    ]
    if persistent:
        argv.append("-d")
    argv.append(f"127.0.0.1:{port}")
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s", "messages": count}
    seconds = time.monotonic() - started
    return {
        "messages": count,
        "exit": result.returncode,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(count / seconds, 1) if result.returncode == 0 else None,
        "stderr": result.stderr.decode(errors="replace")[-200:] if result.returncode else "",
    }
