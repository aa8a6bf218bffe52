"""The intake worker in processes of their own (`[intake] mode = "process"`, the default for `serve`;
`[intake] processes` of them).

Why: parsing, escaping and the case transaction are CPU work, and in the listener's process they compete
with the SMTP event loop for the GIL; the benchmark's profile showed 250 replies waiting behind them. In a
child process they run on the other core. The parent wakes the child when the inbox has new entries (a
byte in a non-blocking pipe, children.Wakeup: nothing a dead child held can block the loop); each child
reports each committed batch back over a queue of its own (case opened, thread signal, received time) so
the parent's metrics and confirmation worker see what happened. Each child prepares messages in a child of
its own (gateway/preparer.py), killed and replaced when one message overruns its time or memory. A child
that dies is started again; the inbox lease design means nothing it had claimed is lost, and on restart
its claims are released (its pid is gone).

A child builds its store and worker from the composition root (gateway/assembly.py), as the parent does;
it never imports gateway/service.py, which imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from gateway import children
from gateway.assembly import build_engine, build_intake_worker, build_store, release_dead_claims
from gateway.config import Config, load_config
from storage.records import Committed

log = logging.getLogger("abuse_gateway.intake_process")

_CONTEXT = children.CONTEXT
_EXTRA_NICENESS = 10
Summary = tuple[int, str, int, bool, str, str, bool, datetime | None]


def _child(
    config: Config,
    wake: children.Wakeup,
    stop: Any,
    results: Any,
    level: str,
    parent_pid: int,
    niceness: int = 0,
) -> None:
    """The child's whole life: claim, process, report; until told to stop and the inbox is drained."""
    children.begin(parent_pid, level)
    # Its preparation child (gateway/preparer.py) needs a non-daemonic parent; this process still dies
    # with the gateway (children.begin) and kills its preparation child on the way out.
    multiprocessing.current_process().daemon = False
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)
    # Everything this process writes can be derived again from the inbox: see storage/engine.py. Its
    # claims carry its gateway's mark, so a stopping sibling waits for them and for nobody else's.
    group = _group(parent_pid)
    store = build_store(config, build_engine(config, durable=False), worker_group=group)
    release_dead_claims(store)
    log.info("intake worker ready: pid=%d", os.getpid())

    def report(done: Sequence[Committed]) -> None:
        if results is None:  # a backlog import reads its outcome from the store
            return
        results.put(
            [
                (
                    c.inbox_id,
                    c.case_id,
                    c.message_index,
                    c.opened,
                    c.kind,
                    c.signal,
                    c.duplicate,
                    c.received_at,
                )
                for c in done
            ]
        )

    worker = build_intake_worker(config, store, on_committed=report, isolated=True)
    reload_requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload_requested.set())
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        if reload_requested.is_set():  # the parent forwards SIGHUP: caps and addresses live here too
            reload_requested.clear()
            worker = _reloaded(config, store, worker, report)
        try:
            handled = worker.process_once()
        except Exception as exc:  # the store is down: back off; entries stay pending
            log.warning("intake pass failed: error=%s", type(exc).__name__)
            handled = 0
            wake.wait(1.0)
        if handled:
            continue
        if stop.value:
            # Nothing to claim is not yet a drained inbox: a sibling may hold claims it could give back
            # (a failure releases its entry). Another gateway's claims on a shared store are not waited for.
            if _drained(store, group):
                break
            time.sleep(0.1)
            continue
        wake.wait(1.0)
    worker.close()
    store.engine.dispose()


def _group(parent_pid: int) -> str:
    """The mark of one gateway's intake workers in their claims (storage.claims.new_worker_id)."""
    return f"g{parent_pid}."


def _drained(store: Any, group: str) -> bool:
    try:
        return bool(store.undrained(group) == 0)
    except Exception:  # the store is down: leave, the entries stay pending for the next start
        return True


def _reloaded(config: Config, store: Any, worker: Any, report: Any) -> Any:
    try:
        fresh = load_config(config.source)
    except Exception as exc:
        log.error("intake reload refused: %s", exc)
        return worker
    log.info("intake process reloaded its configuration")
    worker.close()
    return build_intake_worker(fresh, store, on_committed=report, isolated=True)


class IntakeProcess:
    """The parent's handle on the children: start, wake, restart on death, stop with a drain. They share
    one wake-up pipe (each wakes and claims what it can); each has a results queue of its own, created
    with it, so a child killed while writing to one cannot wedge its successor or its siblings."""

    def __init__(
        self, config: Config, on_committed: Callable[[Sequence[Committed]], None], level: str = "INFO"
    ) -> None:
        self.config = config
        self.on_committed = on_committed
        self.level = level
        self._wake = children.Wakeup()
        self._stop = children.flag()
        self._processes: list[Any] = []
        self._readers: list[threading.Thread] = []
        # Held for each child's life: a queue dropped early unlinks its semaphores under a child still
        # starting (it opens them by name while unpickling its arguments).
        self._queues: dict[int, Any] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._processes = [self._spawn(n) for n in range(self.config.intake.processes)]
        self._monitor = asyncio.get_running_loop().create_task(
            children.supervise(self._processes, self._spawn, lambda: self._closing, "intake"),
            name="intake-monitor",
        )

    def _spawn(self, index: int) -> Any:
        # The first child runs at the listener's priority; the others only take CPU the listener and the
        # first child leave (os.nice): under a flood they must not slow the 250s down.
        niceness = 0 if index == 0 else _EXTRA_NICENESS
        results: Any = _CONTEXT.Queue()
        process = _CONTEXT.Process(
            target=_child,
            args=(self.config, self._wake, self._stop, results, self.level, os.getpid(), niceness),
            name="abuse-gateway-intake",
            daemon=True,
        )
        process.start()
        self._queues[index] = results
        reader = threading.Thread(
            target=self._read_results, args=(results, process), name="intake-results", daemon=True
        )
        reader.start()
        self._readers = [r for r in self._readers if r.is_alive()] + [reader]
        log.info("intake process started: pid=%s", process.pid)
        return process

    def wake(self) -> None:
        self._wake.set()

    @property
    def wake_event(self) -> children.Wakeup:
        """For the other listener processes, whose inboxes wake the intake children themselves."""
        return self._wake

    def reload(self) -> None:
        for process in self._processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def alive(self) -> bool:
        """All of them run (the watchdog and the tests ask)."""
        return bool(self._processes) and all(p.is_alive() for p in self._processes)

    def _read_results(self, results: Any, process: Any) -> None:
        """One thread per child: until the child is gone and its queue empty (or the gateway closes)."""
        while True:
            try:
                batch = results.get(timeout=1.0)
            except queue.Empty:
                if self._closing or not process.is_alive():
                    return
                continue
            except (EOFError, OSError):
                return
            self.on_committed([Committed(*item) for item in batch])

    async def stop(self, grace: float = 30.0) -> None:
        """Let the child drain the inbox and exit; past `grace`, terminate it (its work stays pending)."""
        self._closing = True
        await children.cancel(self._monitor)
        self._stop.value = 1
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for process in self._processes:
            await asyncio.to_thread(process.join, max(0.0, deadline - loop.time()))
        for process in self._processes:
            if process.is_alive():
                log.warning("intake process did not drain in %.0fs; terminating: pid=%s", grace, process.pid)
                process.terminate()
                await asyncio.to_thread(process.join, 5)
        for reader in self._readers:
            await asyncio.to_thread(reader.join, 5)


@contextlib.contextmanager
def helpers(config: Config, count: int, level: str = "WARNING") -> Iterator[Callable[[], None]]:
    """Intake children for a backlog import (`ingest` of a directory): the caller stores raw messages and
    calls the yielded `wake`; on leaving, the children finish every pending entry and exit. A batch job
    may use every core: here parsing runs beside the caller's inbox writes instead of after them.

    Forked, not spawned: a spawned child spends a second importing what the CLI has already imported,
    which was a fifth of a 5,000-message import. Forking is safe here because the caller is the CLI's
    single thread and holds no database connection (it must dispose its engine first: an SQLite
    connection must never cross a fork); each child opens its own. `serve` keeps spawning (it forks from
    a process with a loop, threads and sockets)."""
    context = multiprocessing.get_context("fork")
    wake, stop = children.Wakeup(), children.flag()
    processes = [
        context.Process(
            target=_child,
            args=(config, wake, stop, None, level, os.getpid()),
            name="abuse-gateway-ingest",
            daemon=True,
        )
        for _ in range(count)
    ]
    for child in processes:
        child.start()
    try:
        yield wake.set
    finally:
        stop.value = 1
        wake.set()
        for child in processes:
            child.join()
