"""Message preparation in a process that can be killed (issue 15).

Why: a thread cannot be stopped. A message that made `prepare` run past `processing_timeout` used to be
abandoned with its thread, which kept running (and allocating); each retry started another copy, and
three such mails took the intake process to 12.5 GB. Here one long-lived child per intake process does the
preparing, fed over a pipe (a fork per message would cost the hot path a process start), with its
address space capped (RLIMIT_AS: a bomb ends in MemoryError or death, not in the OOM killer choosing a
victim). When a message overruns its wall-clock limit or the child dies, the intake process kills it,
waits for it to be gone, and starts a fresh one: at most one copy of any entry's preparation ever runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
from collections.abc import Iterator, Sequence
from typing import Any

from gateway import children
from storage.records import ClaimedEntry, PreparedMessage

log = logging.getLogger("abuse_gateway.preparer")
_START_PATIENCE = 120.0


class ProcessingTimeout(Exception):
    """Preparing one message took longer than `intake.processing_timeout`."""


class PreparerDied(Exception):
    """The preparation child died on a message (its memory cap, the OOM killer, a crash)."""


def _child(conn: Any, memory: int, max_text: int, level: str, parent_pid: int) -> None:
    children.begin(parent_pid, level)
    from gateway.prepare import prepare

    if memory:
        # Soft and hard: the child cannot raise it back. Set after the imports, which are not the bomb.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    conn.send(None)  # ready: the imports are not part of the first message's time limit
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):  # the intake process is gone or replaced us
            os._exit(0)
        for entry in batch:
            try:
                result: tuple[bool, Any] = (True, _without_entry(prepare(entry, max_text=max_text)))
            except MemoryError:
                result = (False, "MemoryError")
            except Exception as exc:
                result = (False, type(exc).__name__)
            try:
                conn.send(result)
            except MemoryError:
                os._exit(3)  # the result itself does not fit: the parent sees the death and counts an attempt
            if result == (False, "MemoryError"):
                break  # the parent kills us (our heap may be in any state) and sends the rest to a successor


def _without_entry(prepared: PreparedMessage) -> dict[str, Any]:
    """The fields but the entry: the parent has it already, and its raw bytes (up to the size limit)
    would otherwise be pickled back across the pipe."""
    return {f.name: getattr(prepared, f.name) for f in dataclasses.fields(prepared) if f.name != "entry"}


class ProcessPreparer:
    """The intake process's handle on its preparation child. Not thread-safe: one caller (the worker)."""

    def __init__(self, memory: int, max_text: int, level: str = "INFO") -> None:
        self.memory, self.max_text, self.level = memory, max_text, level
        self._process: Any = None
        self._conn: Any = None
        self._ready = False
        self._owed = 0
        self._start()  # its imports run now, overlapping the intake process's own start

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        parent, child = children.CONTEXT.Pipe()
        self._process = children.CONTEXT.Process(
            target=_child,
            args=(child, self.memory, self.max_text, self.level, os.getpid()),
            name="abuse-gateway-prepare",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._conn = parent
        self._ready = False
        self._owed = 0  # results of the batch sent that have not been read yet
        log.info("preparation process started: pid=%s", self._process.pid)

    def run_batch(
        self, entries: Sequence[ClaimedEntry], timeout: float
    ) -> Iterator[PreparedMessage | Exception]:
        """One outcome per entry, in order: the message prepared, or the exception that stopped it.

        The batch crosses the pipe in one message and the results stream back as each is ready, so the
        child does not wait on this process between messages (a round trip per message cost the intake
        a third of its rate: two wake-ups of processes that share the cores with the listener). Each
        message keeps its own deadline, counted from the result before it; one that overruns, dies or runs
        out of memory has its child killed (that message's outcome says why) and the rest of the batch
        goes to the successor. A caller that stops iterating early leaves results in the pipe: the next
        batch starts with a fresh child rather than read a stale result."""
        rest = list(entries)
        while rest:
            if self._owed or self._process is None or not self._process.is_alive():
                self.close()  # dead, or holding results of a batch its caller abandoned
                self._start()
            try:
                if not self._ready:
                    # A fresh child spends a second or two on imports: not the message's fault, not its time.
                    if not self._conn.poll(_START_PATIENCE):
                        raise EOFError
                    self._conn.recv()
                    self._ready = True
                self._conn.send(rest)
            except (EOFError, OSError, BrokenPipeError):
                yield self._died(rest[0])
                rest = rest[1:]
                continue
            self._owed, child = len(rest), self._process
            for position, entry in enumerate(rest):
                yield self._result(entry, timeout)
                if self._process is not child:  # killed on this one: the rest go to its successor
                    rest = rest[position + 1 :]
                    break
            else:
                rest = []

    def _result(self, entry: ClaimedEntry, timeout: float) -> PreparedMessage | Exception:
        try:
            if not self._conn.poll(timeout):
                self._kill(f"inbox_id={entry.inbox_id} over {timeout:.0f}s")
                return ProcessingTimeout(f"over {timeout:.0f}s")
            ok, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            return self._died(entry)
        self._owed -= 1
        if not ok:
            if value == "MemoryError":  # its heap may be in any state: start clean
                self._kill(f"inbox_id={entry.inbox_id} MemoryError")
                return MemoryError("preparation over its memory limit")
            return RuntimeError(value)
        return PreparedMessage(entry=entry, **value)

    def _died(self, entry: ClaimedEntry) -> PreparerDied:
        code = self._process.exitcode if self._process is not None else None
        self._kill(f"inbox_id={entry.inbox_id} died exitcode={code}")
        return PreparerDied(f"exitcode={code}")

    def _kill(self, why: str) -> None:
        log.warning("preparation process killed: pid=%s %s", self.pid, why)
        self.close()
        self._start()  # the successor's imports overlap the commit of what was prepared

    def close(self) -> None:
        """Kill and reap the child: when this returns it no longer runs (no second copy, no zombie)."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(10)
            self._process = None
