"""Inbox → case: claim inbox entries, prepare each (gateway/prepare.py), thread and commit them in bounded
transactions, off the SMTP path.

Idempotent per inbox entry (the store keys messages by inbox id). A message whose processing raises is
retried; after `max_attempts` it is stored anyway, raw bytes and all, in a case of its own with the flag
`processing_failed` (Mailman's shunt queue, except that the desk sees it and `reprocess` retries it).
The worker is built by the composition root (gateway/assembly.py); preparation runs on a thread here or,
`isolated`, in a killable child (gateway/preparer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from gateway import metrics
from gateway.config import Config
from gateway.known_material import CsamSignals
from gateway.mailauth import Authenticator
from gateway.prepare import ParseFn, prepare
from gateway.preparer import ProcessingTimeout, ProcessPreparer
from gateway.threader import Threader
from parsers.message import parse_message
from parsers.types import ParsedMessage
from storage.errors import is_outage
from storage.records import ClaimedEntry, Committed, PreparedMessage
from storage.store import CaseStore

log = logging.getLogger("abuse_gateway.intake")


def failed(entry: ClaimedEntry, error: str) -> PreparedMessage:
    """What is stored when processing keeps failing: the raw bytes (already in the inbox) and why."""
    return PreparedMessage(
        entry=entry,
        parsed=ParsedMessage(defects=(f"processing_failed: {error}",)),
        kind="report",
        kind_rule="processing_failed",
        escaped_subject="",
        escaped_text="",
        escaped_filenames=(),
        indicators=(),
        defects=(f"processing_failed: {error}",),
        flags=("processing_failed",),
    )


# One case transaction holds at most this much work. On SQLite it holds the single write lock, which the
# listener's inbox commits (and so the senders' 250s) wait for: a batch of 64 reports with a thousand
# indicators each would hold it for seconds. Messages are never split, so one huge message is one transaction.
# 16 messages, not 64: SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between retries, so
# a longer hold costs the senders more than its length. In the full benchmark the 50-session p99 went from
# 102 / 145 ms to 51 / 116 ms (100 / 1 messages per connection), processing rate within the noise; 8 cost
# processing rate. On PostgreSQL writers do not take turns and the bound only limits a transaction's size.
_TRANSACTION_MESSAGES = 16
_TRANSACTION_INDICATORS = 1_000
_TRANSACTION_BYTES = 1 << 20


def transactions(prepared: Iterable[PreparedMessage]) -> Iterator[list[PreparedMessage]]:
    """Consecutive runs of `prepared`, each within the limits above (or a single message); each run is
    yielded as soon as the item after it is known not to fit, so a stream commits as it is prepared."""
    part: list[PreparedMessage] = []
    indicators = size = 0
    for item in prepared:
        weight, bytes_ = len(item.indicators), len(item.entry.raw)
        if part and (
            len(part) >= _TRANSACTION_MESSAGES
            or indicators + weight > _TRANSACTION_INDICATORS
            or size + bytes_ > _TRANSACTION_BYTES
        ):
            yield part
            part, indicators, size = [], 0, 0
        part.append(item)
        indicators += weight
        size += bytes_
    if part:
        yield part


class _Preparer:
    """Runs `prepare` on one daemon thread with a deadline. A call that overruns is abandoned with its
    thread (Python cannot kill a thread; a daemon one at least cannot hold up shutdown) and a fresh
    thread takes over, so one hanging message never stalls the messages behind it (issue 7)."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], PreparedMessage], Future[PreparedMessage]]]
        self._jobs = queue.SimpleQueue()
        threading.Thread(target=self._loop, args=(self._jobs,), name="prepare", daemon=True).start()

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[tuple[Callable[[], PreparedMessage], Future[PreparedMessage]]]) -> None:
        while True:
            job, future = jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def run(self, job: Callable[[], PreparedMessage], timeout: float) -> PreparedMessage:
        future: Future[PreparedMessage] = Future()
        self._jobs.put((job, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._start()  # the stuck thread keeps its old queue and is forgotten
            raise ProcessingTimeout(f"over {timeout:.0f}s") from None


class IntakeWorker:
    """Claims inbox entries and processes them in a thread, so the event loop keeps serving SMTP."""

    def __init__(
        self,
        config: Config,
        store: CaseStore,
        threader: Threader,
        parse: ParseFn = parse_message,
        batch: int = 64,
        on_committed: Callable[[Sequence[Committed]], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        isolated: bool = False,
    ) -> None:
        """`isolated`: prepare in a child process with a memory cap, killed when it overruns (the intake
        processes of `serve`); otherwise on a thread (in-process use, tests with a parser hook)."""
        self.config = config
        self.store = store
        self.threader = threader
        self.parse = parse
        self.batch = batch
        self.on_committed = on_committed
        self.on_failure = on_failure
        self._csam: CsamSignals | None = None  # built at first use: `serve`'s own worker may never run
        self._auth: Authenticator | None = None  # SPF/DKIM/DMARC (issue 22), also built at first use
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._preparer = _Preparer()
        self._process: ProcessPreparer | None = None
        if isolated:
            self._process = ProcessPreparer(
                config.intake.prepare_memory_mb * 1024 * 1024, config.intake.max_text_chars, config.log.level
            )

    @property
    def csam(self) -> CsamSignals:
        """The term list and the hash index, loaded when first needed: in `process` mode the listener's
        own worker never prepares, and must not hold hundreds of MB of index it never reads."""
        if self._csam is None:
            self._csam = CsamSignals.from_config(self.config.csam)
        return self._csam

    @property
    def auth(self) -> Authenticator:
        if self._auth is None:
            self._auth = Authenticator(self.config)
        return self._auth

    def use_config(self, config: Config) -> None:
        """SIGHUP in `thread` mode: the new configuration; its term list and hash lists are re-read."""
        self.config = config
        if self._auth is not None:
            self._auth.close()
            self._auth = None
        if self._csam is not None:
            self._csam = None
            self._csam = CsamSignals.from_config(config.csam)

    def close(self) -> None:
        if self._auth is not None:
            self._auth.close()
        if self._process is not None:
            self._process.close()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="intake-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                done = await asyncio.to_thread(self.process_once)
            except Exception as exc:  # the store is down: back off, the entries stay pending
                log.warning("intake pass failed: error=%s", type(exc).__name__)
                metrics.STORE_ERRORS.labels("intake").inc()
                done = 0
                await asyncio.sleep(1.0)
            if done == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow the stop's cancel
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()

    def process_once(self) -> int:
        """Claim, prepare and commit one batch; returns how many entries it handled."""
        entries = self.store.claim_inbox(
            self.batch, lease=max(60.0, self.config.intake.processing_timeout * 4)
        )
        if not entries:
            return 0
        for part in transactions(self._prepared(entries)):
            self._commit(part)
        return len(entries)

    def _prepared(self, entries: Sequence[ClaimedEntry]) -> Iterator[PreparedMessage]:
        """Each entry prepared (or, after its last attempt, `failed`), in order and as soon as it is ready,
        so the first transactions of a batch commit while the preparation child works on the rest."""
        timeout, max_text = self.config.intake.processing_timeout, self.config.intake.max_text_chars
        # SPF and DKIM start now, on the checker's pool, while the entries are prepared (issue 22).
        self.auth.start(entries)
        if self._process is not None:
            outcomes: Iterator[PreparedMessage | Exception] = self._process.run_batch(entries, timeout)
        else:
            outcomes = (self._in_thread(entry, timeout, max_text) for entry in entries)
        started = time.monotonic()
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, PreparedMessage):
                ms = (time.monotonic() - started) * 1000
                log.debug("prepared: inbox_id=%d ms=%.1f", entry.inbox_id, ms)
                # Signals need the hash index, which lives here, not in the bounded preparation child;
                # authentication needs DNS, which the child never has.
                yield self.auth.apply(self.csam.apply(outcome))
                started = time.monotonic()  # a commit in between is not the next message's preparation
                continue
            error = type(outcome).__name__
            if self.on_failure is not None:
                self.on_failure()
            if entry.attempts >= self.config.intake.max_attempts:
                log.error(
                    "processing failed for good: inbox_id=%d attempts=%d error=%s",
                    entry.inbox_id,
                    entry.attempts,
                    error,
                )
                yield self.auth.apply(failed(entry, error))
            else:
                self.auth.forget([entry.inbox_id])
                log.warning(
                    "processing failed: inbox_id=%d attempt=%d error=%s",
                    entry.inbox_id,
                    entry.attempts,
                    error,
                )
                self.store.release_failed(entry.inbox_id, error)
            started = time.monotonic()

    def _in_thread(self, entry: ClaimedEntry, timeout: float, max_text: int) -> PreparedMessage | Exception:
        try:
            return self._preparer.run(functools.partial(prepare, entry, self.parse, max_text), timeout)
        except Exception as exc:
            return exc

    def _commit(self, prepared: Sequence[PreparedMessage]) -> None:
        try:
            committed = self.store.commit_processed(prepared, self.threader.resolve)
        except Exception as exc:
            if len(prepared) == 1 and self._is_outage(exc):
                raise
            committed = self._commit_one_by_one(prepared)
        for item in committed:
            log.info(
                "stored: inbox_id=%d case_id=%s index=%d kind=%s signal=%s opened=%s duplicate=%s",
                item.inbox_id,
                item.case_id,
                item.message_index,
                item.kind,
                item.signal,
                item.opened,
                item.duplicate,
            )
        if self.on_committed is not None:
            self.on_committed(committed)

    @staticmethod
    def _is_outage(exc: Exception) -> bool:
        return is_outage(exc)

    def _commit_one_by_one(self, prepared: Sequence[PreparedMessage]) -> list[Committed]:
        """A batch failed: find the entry that breaks the commit so it cannot hold up the others. The one
        that fails alone counts an attempt and, after the last, is stored as `processing_failed`."""
        committed: list[Committed] = []
        for item in prepared:
            try:
                committed += self.store.commit_processed([item], self.threader.resolve)
            except Exception as exc:
                entry, error = item.entry, type(exc).__name__
                log.warning(
                    "commit failed: inbox_id=%d attempt=%d error=%s", entry.inbox_id, entry.attempts, error
                )
                if entry.attempts >= self.config.intake.max_attempts and not self._is_outage(exc):
                    committed += self.store.commit_processed([failed(entry, error)], self.threader.resolve)
                else:
                    with contextlib.suppress(Exception):
                        self.store.release_failed(entry.inbox_id, error)
        return committed

    def drain(self) -> None:
        """Process until the inbox is empty (ingest, reprocess and tests use this synchronously)."""
        while self.process_once():
            pass
