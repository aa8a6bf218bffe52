"""What every child process of `serve` shares: it dies with its gateway, and the gateway restarts it.

The intake processes (gateway/intake_process.py) and the extra listener processes (gateway/listeners.py)
are both spawned, never forked: `serve` holds a loop, threads and sockets, none of which survive a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger("abuse_gateway.children")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CONTEXT = multiprocessing.get_context("spawn")


def die_with_parent(parent_pid: int) -> None:
    """A child must never outlive its gateway: an orphan would keep working with a stale config (a
    SIGKILLed parent leaves one otherwise). Linux: the kernel sends SIGKILL when the parent dies; callers
    also check the parent pid in their loops, for the race before prctl and for other systems. Dying
    abruptly is safe: the inbox is durable, an open transaction rolls back, and the next start frees the
    claims."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def begin(parent_pid: int, level: str) -> None:
    """A child's first steps: tied to its parent, logging like it, deaf to Ctrl-C (the parent decides
    when children stop, and tells them)."""
    die_with_parent(parent_pid)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def supervise(
    processes: list[Any], spawn: Callable[[int], Any], closing: Callable[[], bool], what: str
) -> None:
    """Start again, in place, any of `processes` that died, with a backoff (1 s doubling to 60 s) so a
    child that cannot start (the store is down, a bad config after reload) does not spin."""
    backoff = 1.0
    while not closing():
        await asyncio.sleep(1.0)
        dead = [n for n, p in enumerate(processes) if not p.is_alive()]
        if closing() or not dead:
            backoff = 1.0
            continue
        for n in dead:
            log.error(
                "%s process died: pid=%s exitcode=%s; restarting in %.0fs",
                what,
                processes[n].pid,
                processes[n].exitcode,
                backoff,
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 60.0)
        if not closing():
            for n in dead:
                processes[n] = spawn(n)


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Stop a supervising task (before stopping its children, so it does not start them again)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Wakeup:
    """A wake-up signal any process may send and the intake children wait on: one byte in a pipe.

    Not a multiprocessing Event: its set() waits for every sleeper to acknowledge (a semaphore round
    trip), so a child SIGKILLed while waiting (what the OOM killer does) left the parent's event loop
    blocked in set() for good: no banner, no watchdog, SIGTERM ignored (issue 15). A write to a
    non-blocking pipe cannot block: a full pipe means a wake-up is already pending. Nothing in it is
    owned by a child, so a respawned child needs only the read end again, which this object carries."""

    def __init__(self) -> None:
        self._reader, self._writer = CONTEXT.Pipe(duplex=False)
        # O_NONBLOCK lives on the open file description, which every process receiving these shares.
        os.set_blocking(self._reader.fileno(), False)
        os.set_blocking(self._writer.fileno(), False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.write(self._writer.fileno(), b"\0")

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds for a wake-up; True if there was one (all pending ones are consumed)."""
        if not self._reader.poll(timeout):
            return False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._reader.fileno(), 4096):
                pass
        return True


def flag() -> Any:
    """A stop flag shared with the children: a byte of shared memory without a lock (a multiprocessing
    Event has one, and a child killed while holding it would block whoever sets the flag next)."""
    return CONTEXT.RawValue("b", 0)
