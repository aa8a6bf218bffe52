"""The process: one asyncio loop holding the listener, the inbox writer, the intake worker, the spool
replayer and the confirmation worker; start-up checks, signals and systemd notification. The intake
worker runs in processes of its own by default (gateway/intake_process.py), and `[smtp] workers` adds
listener processes beside this one (gateway/listeners.py).

Start-up order is what makes READY=1 true: the store is reachable and at the current schema, the
listeners are bound, then the workers start and systemd is told (sd_notify, `Type=notify`).

This module runs parts, it does not build them: every store, inbox, handler and worker comes from the
composition root (gateway/assembly.py), as it does in the child processes, which never import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway import listeners, metrics, sdnotify
from gateway.assembly import (
    build_confirm_worker,
    build_engine,
    build_handler,
    build_inbox,
    build_intake_worker,
    build_spool,
    build_store,
    build_threader,
    check_store,
    release_dead_claims,
)
from gateway.config import Config
from gateway.confirm import ConfirmWorker, confirm_policy
from gateway.intake_process import IntakeProcess
from gateway.listeners import ListenerProcesses
from gateway.mailauth import Checker
from gateway.prepare import ParseFn, default_parser
from gateway.signing import reloaded_signer
from gateway.smtp import ConnectionLimits, reread, start_listeners
from storage.records import Committed

log = logging.getLogger("abuse_gateway.service")


@dataclass
class Service:
    config: Config
    parse: ParseFn | None = None
    servers: list[asyncio.Server] = field(default_factory=list)
    limits: ConnectionLimits | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    on_ready: Callable[[Service], None] | None = None
    # How often the spool is looked at for messages to move into the store (tests look more often).
    spool_replay_every: float = 2.0

    def __post_init__(self) -> None:
        self.engine = build_engine(self.config)
        self.store = build_store(self.config, self.engine)
        self.spool = build_spool(self.config)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listeners: ListenerProcesses | None = None

    @property
    def ports(self) -> list[int]:
        return [s.sockets[0].getsockname()[1] for s in self.servers if s.sockets]

    async def run(self) -> None:
        await asyncio.to_thread(check_store, self.engine)
        await asyncio.to_thread(release_dead_claims, self.store)
        self.threader = build_threader(self.config)
        loop = asyncio.get_running_loop()
        self.confirmer: ConfirmWorker | None = None
        # A parser hook (tests) cannot cross into a spawned process, so it implies the thread mode.
        self.intake_process: IntakeProcess | None = None
        if self.config.intake.mode == "process" and self.parse is None:
            self.intake_process = IntakeProcess(
                self.config, lambda done: self._committed(loop, done), self.config.log.level
            )
        self.worker = build_intake_worker(
            self.config,
            self.store,
            self.threader,
            parse=self.parse or default_parser(),
            # Commits happen in the worker thread; wake the confirmation sender in the loop, thread-safely.
            on_committed=lambda done: self._committed(loop, done),
            on_failure=metrics.PROCESSING_FAILED.inc,
        )
        self.inbox = build_inbox(
            self.config, self.engine, self.spool, on_stored=lambda _ids: self._wake_intake()
        )
        self.inbox.start()
        self.handler = build_handler(self.config, self.inbox)
        workers = self.config.smtp.workers
        activated = sdnotify.listen_fds()
        sockets = activated or (listeners.bind(self.config.smtp.listen) if workers > 1 else None)
        self.servers, self.limits = await start_listeners(
            self.config, self.handler, sockets, processes=workers
        )
        if self.intake_process is not None:
            self.intake_process.start()
        else:
            self.worker.start()
        if workers > 1 and sockets:
            # Their inboxes wake the intake processes directly; the thread worker finds their mail by polling.
            wake = self.intake_process.wake_event if self.intake_process is not None else None
            self.listeners = ListenerProcesses(self.config, sockets, inherited=bool(activated), wake=wake)
            await self.listeners.start()
        self._tasks.append(
            asyncio.get_running_loop().create_task(self._replay_spool(), name="spool-replayer")
        )
        if self.config.confirm.enabled:
            self.confirmer = build_confirm_worker(self.config, self.store)
            self._tasks.append(
                asyncio.get_running_loop().create_task(
                    supervise_task("confirm", self.confirmer.run), name="confirm"
                )
            )
        if self.config.metrics.listen:
            metrics.serve_metrics(self.config.metrics.listen)
            self._tasks.append(loop.create_task(self._refresh_gauges(), name="metrics"))
        self._install_signals()
        log.info(
            "serving: listen=%s store=%s workers=%d",
            ",".join(self.config.smtp.listen),
            self.engine.dialect.name,
            workers,
        )
        sdnotify.notify("READY=1")
        self.ready.set()
        if self.on_ready is not None:
            self.on_ready(self)
        watchdog = sdnotify.watchdog_interval()
        if watchdog:
            self._tasks.append(asyncio.get_running_loop().create_task(self._watchdog(watchdog)))
        await self._stop.wait()
        await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> list[str]:
        """SIGHUP: re-read the configuration and apply what can change safely in a running gateway: the TLS
        certificate and key (re-read even when the paths are unchanged: that is how a renewal lands),
        the accepted addresses, the confirmation caps, the log level. Returns (and logs) what changed."""
        old = self.config
        fresh = reread(old)
        if fresh is None:
            return []
        new, tls = fresh
        changed = []
        if tls is not None or self.handler.tls is not None:
            changed.append("tls")
        for name, before, after in (
            ("intake.addresses", old.intake.addresses, new.intake.addresses),
            (
                "confirm caps",
                (
                    old.confirm.per_address_per_hour,
                    old.confirm.per_domain_per_hour,
                    old.confirm.per_network_per_hour,
                ),
                (
                    new.confirm.per_address_per_hour,
                    new.confirm.per_domain_per_hour,
                    new.confirm.per_network_per_hour,
                ),
            ),
            ("log.level", old.log.level, new.log.level),
            (
                "smtp limits",
                (old.smtp.max_message_bytes, old.smtp.max_recipients, old.smtp.require_tls),
                (new.smtp.max_message_bytes, new.smtp.max_recipients, new.smtp.require_tls),
            ),
        ):
            if before != after:
                changed.append(name)
        for name, before, after in (
            ("smtp.listen", old.smtp.listen, new.smtp.listen),
            ("store.url", old.store.url, new.store.url),
            ("store.spool_dir", old.store.spool_dir, new.store.spool_dir),
        ):
            if before != after:
                log.warning("reload: %s changed; it takes effect on restart", name)
        self.config = new
        self.handler.config, self.handler.tls = new, tls
        self.worker.use_config(new)  # its hash lists re-read too (issue 19)
        if self.intake_process is not None:
            self.intake_process.reload()
        if self.listeners is not None:
            self.listeners.reload()
        self.threader.prefix = new.intake.case_prefix
        if new.confirm.enabled:
            self.threader.confirm_policy = confirm_policy(new)
        if self.confirmer is not None:
            self.confirmer.config = new
            # issue 22: rotated DKIM keys and a changed [dns] take effect on reload
            self.confirmer.signer = reloaded_signer(new, self.confirmer.signer)
            self.confirmer.checker = Checker(new)
        logging.getLogger().setLevel(new.log.level)
        log.info("reloaded: changed=%s", ",".join(changed) or "nothing")
        return changed

    def _committed(self, loop: asyncio.AbstractEventLoop, done: Sequence[Committed]) -> None:
        """Runs in the intake worker's thread after each batch commit."""
        now = datetime.now(UTC)
        for item in done:
            if item.duplicate:
                continue
            if item.opened:
                metrics.CASES_OPENED.labels(item.kind).inc()
            else:
                metrics.MESSAGES_THREADED.labels(item.signal).inc()
            if item.received_at is not None:
                metrics.PROCESSING_LATENCY.observe((now - item.received_at).total_seconds())
        loop.call_soon_threadsafe(self._wake_confirmer)

    async def _refresh_gauges(self, every: float = 5.0) -> None:
        while True:
            try:
                depth, oldest = await asyncio.to_thread(self.store.inbox_stats)
                metrics.INBOX_DEPTH.set(depth)
                metrics.INBOX_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)
                for state, count in (await asyncio.to_thread(self.store.outbox_counts)).items():
                    metrics.CONFIRMATIONS.labels(state).set(count)
                metrics.SPOOL_DEPTH.set(await asyncio.to_thread(self.spool.depth))
            except Exception:
                metrics.STORE_ERRORS.labels("metrics").inc()
            await asyncio.sleep(every)

    def _wake_intake(self) -> None:
        if self.intake_process is not None:
            self.intake_process.wake()
        else:
            self.worker.wake()

    def _wake_confirmer(self) -> None:
        if self.confirmer is not None:
            self.confirmer.wake()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, self.stop)
            loop.add_signal_handler(signal.SIGINT, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting, let sessions finish their DATA (bounded), flush the inbox, stop the workers."""
        sdnotify.notify("STOPPING=1")
        for server in self.servers:
            server.close()
        # The other listener processes wind down at the same time; their inboxes are flushed before the
        # intake processes are told to drain, so what they accepted is processed too.
        others = None
        if self.listeners is not None:
            others = asyncio.get_running_loop().create_task(self.listeners.stop(grace))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sessions_done(), grace)
        if others is not None:
            await others
        await self.inbox.close()
        if self.intake_process is not None:
            await self.intake_process.stop(grace)
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self.worker.drain), grace)
            await self.worker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.engine.dispose()
        log.info("stopped")

    async def _sessions_done(self) -> None:
        if self.limits is not None:
            await self.limits.idle.wait()

    async def _replay_spool(self) -> None:
        while True:
            if self.spool.depth():
                try:
                    moved = await asyncio.to_thread(self.spool.replay, self.engine)
                    log.info("spool replayed: messages=%d", moved)
                    self._wake_intake()
                except Exception as exc:
                    log.warning("spool replay failed: error=%s", type(exc).__name__)
            await asyncio.sleep(self.spool_replay_every)

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 at half of WatchdogSec while the gateway can keep its promise: the loop runs (this
        coroutine is scheduled), the inbox writer lives, and mail can be made durable — the store answers,
        or, during a store outage, the spool is writable. A store outage alone must not get the service
        killed: that would take the port down exactly when spooling is what keeps mail flowing."""
        while True:
            await asyncio.sleep(interval / 2)
            if not self.inbox.alive():
                log.error("watchdog: inbox writer stopped, withholding WATCHDOG=1")
                continue
            dead = [t.get_name() for t in self._tasks if t.get_name() == "confirm" and t.done()]
            if dead:  # its supervisor itself is gone: nothing will send confirmations again
                log.error("watchdog: task %s stopped, withholding WATCHDOG=1", dead[0])
                continue
            try:
                async with asyncio.timeout(interval / 4):  # not wait_for: it can swallow the stop's cancel
                    await asyncio.to_thread(self.store.inbox_depth)
            except Exception:
                if not await asyncio.to_thread(self.spool.writable):
                    log.error("watchdog: store and spool both unavailable, withholding WATCHDOG=1")
                    continue
                log.warning("watchdog: store unreachable, spooling")
            sdnotify.notify("WATCHDOG=1")


async def supervise_task(
    name: str, run: Callable[[], Awaitable[None]], backoff: float = 1.0, max_backoff: float = 60.0
) -> None:
    """Run `run` for ever: if it dies, log it, count it (`abuse_gateway_task_restarts`, and
    `abuse_gateway_task_up` drops to 0 while it waits) and start it again after a backoff that doubles,
    so a task that cannot start does not spin (issue 15: a dead confirmation worker was silent)."""
    delay = backoff
    while True:
        metrics.TASK_UP.labels(name).set(1)
        started = time.monotonic()
        try:
            await run()
            log.error("task ended: task=%s; restarting in %.0fs", name, delay)
        except asyncio.CancelledError:
            metrics.TASK_UP.labels(name).set(0)
            raise
        except Exception as exc:
            log.error("task died: task=%s error=%s; restarting in %.0fs", name, type(exc).__name__, delay)
        metrics.TASK_UP.labels(name).set(0)
        metrics.TASK_RESTARTS.labels(name).inc()
        await asyncio.sleep(delay)
        delay = backoff if time.monotonic() - started > max_backoff else min(delay * 2, max_backoff)


def run_service(config: Config) -> None:
    asyncio.run(Service(config).run())
