"""More listener processes (`serve --workers N`, `[smtp] workers`): N processes accept on the same
addresses, each with its own SMTP loop and its own inbox writer; the first (the parent) also runs the
intake processes, the confirmation worker, the spool replay and the metrics.

Why: one asyncio loop answers SMTP on one core. With SO_REUSEPORT each process has a listening socket of
its own on the same address and the kernel spreads new connections over them (by a hash of the
connection's addresses and ports), so N loops can answer on N cores. What that gives on the 2-core
development machine is in the README's "Benchmark" section: there the cores are already busy with the
intake process, so it mostly trades 250 latency for processing throughput.

What changes with N > 1:
- `max_sessions` is split between the processes (each admits its share, rounded up), so sessions x size
  still bounds memory; `max_sessions_per_ip` holds per process, and since the kernel spreads one client's
  connections by source port, a client may get up to N times as many.
- each process group-commits its own sessions; on SQLite the writers take turns on the database lock.
- the parent's metrics count the parent's sessions only.
- under socket activation (abuse-gateway.socket) every process accepts from the inherited sockets
  themselves: one queue, each process takes what it is ready for.
A listener process that dies is started again on a fresh socket (connections queued on the old one are
reset, and their senders retry); when the gateway stops, each finishes its sessions and flushes its inbox.

Each child builds its engine, spool, inbox and SMTP handler from the composition root
(gateway/assembly.py), exactly as the parent does; it never imports gateway/service.py, which imports
this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

from gateway import children
from gateway.assembly import build_engine, build_handler, build_inbox, build_spool
from gateway.config import Config
from gateway.smtp import reread, start_listeners

log = logging.getLogger("abuse_gateway.listeners")

_BACKLOG = 128


def bind(listen: tuple[str, ...]) -> list[socket.socket]:
    """Listening sockets for the configured addresses, each open to a SO_REUSEPORT group."""
    sockets = []
    for address in listen:
        host, _, port = address.rpartition(":")
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _name, sockaddr in dict.fromkeys(infos):
            sockets.append(_listening(family, kind, proto, sockaddr))
    return sockets


def bind_like(template: socket.socket) -> socket.socket:
    """Another socket of `template`'s SO_REUSEPORT group: same family, same bound address and port (so a
    configured port 0 is resolved once, by the first socket)."""
    return _listening(template.family, template.type, template.proto, template.getsockname())


def _listening(family: int, kind: int, proto: int, sockaddr: Any) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _child(
    config: Config,
    sockets: list[socket.socket],
    wake: Any,
    ready: Any,
    level: str,
    parent_pid: int,
) -> None:
    children.begin(parent_pid, level)
    asyncio.run(_serve(config, sockets, wake, ready, parent_pid))


async def _serve(
    config: Config, sockets: list[socket.socket], wake: Any, ready: Any, parent_pid: int
) -> None:
    engine = build_engine(config)
    inbox = build_inbox(config, engine, build_spool(config), on_stored=lambda _ids: _set(wake))
    inbox.start()
    handler = build_handler(config, inbox)
    servers, limits = await start_listeners(config, handler, sockets, processes=config.smtp.workers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(handler))
    log.info("listener process ready: pid=%d", os.getpid())
    _set(ready)
    while not stop.is_set() and os.getppid() == parent_pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for server in servers:
        server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(limits.idle.wait(), 30.0)
    await inbox.close()
    engine.dispose()
    log.info("listener process stopped: pid=%d", os.getpid())


def _set(event: Any) -> None:
    if event is not None:
        event.set()


def _reload(handler: Any) -> None:
    """SIGHUP, forwarded by the parent: what a listener applies without a restart (addresses, limits,
    the TLS certificate). What needs a restart is logged by the parent."""
    fresh = reread(handler.config)
    if fresh is not None:
        handler.config, handler.tls = fresh
        logging.getLogger().setLevel(fresh[0].log.level)


def _ready(process: Any, ready: Any, patience: float) -> bool:
    deadline = time.monotonic() + patience
    while not ready.wait(0.1):
        if not process.is_alive() or time.monotonic() > deadline:
            return False
    return True


class ListenerProcesses:
    """The parent's handle on the other `workers - 1` listener processes: start (and wait until they
    accept), restart on death, forward SIGHUP, stop with a drain."""

    def __init__(self, config: Config, template: list[socket.socket], inherited: bool, wake: Any) -> None:
        """`template`: the parent's own sockets. Fresh ones of the same groups are bound for each child,
        unless they were `inherited` from systemd, which every process then shares."""
        self.config = config
        self.template = template
        self.inherited = inherited
        self.wake = wake
        self._processes: list[Any] = []
        self._monitor: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.is_alive()]

    async def start(self, patience: float = 30.0) -> None:
        """Start them and wait until each accepts: READY=1 must mean every process serves."""
        for _ in range(self.config.smtp.workers - 1):
            # Held here until the child has set it: the child opens the event's semaphore by name, and
            # the parent dropping it first would unlink it under the child.
            ready = children.CONTEXT.Event()
            process = self._spawn(ready)
            if not await asyncio.to_thread(_ready, process, ready, patience):
                process.kill()
                raise RuntimeError(
                    f"a listener process did not start in {patience:.0f}s: exitcode={process.exitcode}"
                )
            self._processes.append(process)
        self._monitor = asyncio.get_running_loop().create_task(
            children.supervise(self._processes, self._respawn, lambda: self._closing, "listener"),
            name="listener-monitor",
        )

    def _respawn(self, n: int) -> Any:
        """No wait for readiness here (it runs in the loop): the new socket already queues connections."""
        try:
            return self._spawn(None)
        except OSError as exc:  # could not bind: the monitor tries again after its backoff
            log.error("listener process not restarted: error=%s", exc)
            return self._processes[n]

    def _spawn(self, ready: Any) -> Any:
        sockets = self.template if self.inherited else [bind_like(s) for s in self.template]
        process = children.CONTEXT.Process(
            target=_child,
            args=(self.config, sockets, self.wake, ready, self.config.log.level, os.getpid()),
            name="abuse-gateway-listener",
            daemon=True,
        )
        try:
            process.start()  # the child has its own copies of the sockets from here on
        finally:
            if not self.inherited:
                for sock in sockets:
                    sock.close()
        log.info("listener process started: pid=%s", process.pid)
        return process

    def reload(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    async def stop(self, grace: float = 30.0) -> None:
        """Each finishes its sessions (up to `grace`) and flushes its inbox before it exits."""
        self._closing = True
        await children.cancel(self._monitor)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace + 5.0
        for process in self._processes:
            await asyncio.to_thread(process.join, max(0.0, deadline - loop.time()))
            if process.is_alive():
                log.warning("listener process did not stop; killing: pid=%s", process.pid)
                process.kill()
