"""Optional `--profile`: sample the gateway with py-spy while it is under load, then summarise the
collapsed stacks (self and inclusive share per function, by thread role)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Sampler:
    """`py-spy record --format raw` on a pid for a bounded time, started before and joined after a phase."""

    def __init__(self, pid: int, out: Path, duration: float, rate: int = 200) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not installed (.venv/bin/pip install py-spy)"
            return
        self.error = None
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--duration",
                str(max(1, int(duration))),
                "--format",
                "raw",
                "--threads",
                "--subprocesses",  # the intake processes and their preparation children: where the CPU goes
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout: float = 60.0) -> str | None:
        if self.proc is None:
            return self.error
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        if not self.out.exists():
            return f"py-spy failed: {err.decode(errors='replace')[-300:]}"
        return None


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" → "file.py:func"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    keep = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{keep}:{name}"


def summarise(collapsed: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample counts per function; threads split into loop (MainThread) and workers."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith(("thread ", "process ")):
            thread, frames = frames[0], frames[1:]
        frames = [f for f in frames if " (" in f]
        if not frames:
            continue
        total += n
        threads[thread.partition("): ")[2] or thread] += n
        self_c[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl[f] += n

    def pct(c: Counter[str], ours_only: bool = False) -> list[tuple[str, float]]:
        items = [
            (k, v)
            for k, v in c.most_common()
            if not ours_only or k.split("/")[0] in ("gateway", "parsers", "storage")
        ]
        return [(k, round(100 * v / total, 1)) for k, v in items[:top]] if total else []

    return {
        "samples": total,
        "threads": pct(threads),
        "self": pct(self_c),
        "inclusive_ours": pct(incl, ours_only=True),
        "inclusive_all": pct(incl),
    }
