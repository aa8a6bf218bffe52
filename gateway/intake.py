"""Inbox → case: parse, classify, escape, thread and store each inbox entry, off the SMTP path.

Idempotent per inbox entry (the store keys messages by inbox id). A message whose processing raises is
retried; after `max_attempts` it is stored anyway, raw bytes and all, in a case of its own with the flag
`processing_failed` (Mailman's shunt queue, except that the desk sees it and `reprocess` retries it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from gateway import metrics
from gateway.config import Config
from gateway.known_material import CsamSignals
from gateway.preparer import ProcessingTimeout, ProcessPreparer
from gateway.threader import Threader
from parsers.auto import classify
from parsers.bounce import embedded_texts, returned_message_ids
from parsers.content_hashes import content_hashes
from parsers.defang import defang
from parsers.escape import escape_text
from parsers.forward import ForwardedMessage, forwarded_messages
from parsers.indicators import extract_indicators, indicator_host
from parsers.message import ParseLimits, parse_message
from parsers.reports import is_csam, parse_machine_report
from parsers.types import Indicator, MachineReport, ParsedMessage
from storage.errors import is_outage
from storage.store import CaseStore, ClaimedEntry, Committed, PreparedMessage

log = logging.getLogger("abuse_gateway.intake")

ParseFn = Callable[[bytes], ParsedMessage]
_KIND = {"person": "report", "machine_report": "machine_report", "automatic": "automatic"}
# Inbound headers that imitate ours are evidence of an attempt, never a signal (issue 7).
_OUR_HEADER_PREFIX = "x-abuse-gateway-"


def default_parser(limits: ParseLimits | None = None) -> ParseFn:
    if limits is None:
        return parse_message
    return lambda raw: parse_message(raw, limits)


def _display(value: object) -> object:
    """Report fields are shown to people: every string in them escaped, however deeply nested."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, dict):
        return {str(k): _display(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_display(v) for v in value]
    return value


def _report_fields(report: MachineReport) -> dict[str, object]:
    """The report as the desk sees it (escaped); the refanged values live on as indicators."""
    return {
        "format": report.format,
        "category": report.category,
        "source_ip": _display(report.source_ip),
        "domains": _display(list(report.domains)),
        "urls": _display(list(report.urls)),
        "fields": _display(report.fields),
        "original_headers": _display([list(pair) for pair in report.original_headers]),
    }


def _indicators(
    first: Sequence[Indicator],
    parsed: ParsedMessage,
    report: MachineReport | None,
    forwards: tuple[ForwardedMessage, ...] = (),
) -> tuple[tuple[Indicator, str | None], ...]:
    """`first` (from the subject and text, found while escaping them), then the rest, deduplicated."""
    texts = list(parsed.html_links)
    for forward in forwards:
        texts += [forward.subject, forward.text, forward.sender_ip or ""]
    if report is not None:
        texts += [*report.urls, *report.domains, report.source_ip or ""]
    found: dict[Indicator, None] = dict.fromkeys(first)
    for text in texts:
        if text:
            for indicator in extract_indicators(text):
                found.setdefault(indicator)
    return tuple((i, indicator_host(i)) for i in found)


def _group_key(report: MachineReport | None) -> str | None:
    if report is None:
        return None
    source = report.source_ip or (report.domains[0] if report.domains else None)
    if not source:
        return None
    return f"{report.category or 'unknown'}|{source.lower()}"


def _evidence(forward: ForwardedMessage) -> dict[str, object]:
    return {
        "source": forward.source,
        "from": _display(forward.from_addr),
        "subject": _display(forward.subject),
        "date": forward.date,
        "message_id": forward.message_id,
        "sender_ip": _display(forward.sender_ip),
        "received": _display([dict(hop) for hop in forward.received]),
        "text": _display(forward.text),
        "defects": list(forward.defects),
    }


_INLINE_FORWARD_HINT = (
    "forwarded message",
    "original message",
    "begin forwarded",
    "weitergeleitete",
    "ursprüngliche nachricht",
    "message transféré",
    "mensaje reenviado",
)


def _may_forward(parsed: ParsedMessage) -> bool:
    """Cheap pre-check so the forward parser (and mail-parser) only runs where a forward can be."""
    if any(a.content_type == "message/rfc822" for a in parsed.attachments):
        return True
    head = parsed.text[:200_000].lower()
    return any(hint in head for hint in _INLINE_FORWARD_HINT)


def _has_embedded_message(parsed: ParsedMessage) -> bool:
    return any(a.content_type in ("message/rfc822", "text/rfc822-headers") for a in parsed.attachments)


# Decoded text beyond this is not escaped, defanged or searched for indicators (issue 15: 24 MB of
# `http://a.` took 73 s and 1.8 GB); the raw bytes keep all of it, and a defect says it was cut.
DEFAULT_MAX_TEXT = 1024 * 1024


def _bounded(parsed: ParsedMessage, max_text: int) -> ParsedMessage:
    if len(parsed.text) <= max_text:
        return parsed
    return dataclasses.replace(
        parsed,
        text=parsed.text[:max_text],
        defects=(*parsed.defects, f"text_truncated: {len(parsed.text)} chars, {max_text} kept"),
    )


def prepare(
    entry: ClaimedEntry, parse: ParseFn = parse_message, max_text: int = DEFAULT_MAX_TEXT
) -> PreparedMessage:
    """The pure stages for one entry. May raise only if `parse` (a test hook, a future parser) does."""
    parsed = _bounded(parse(entry.raw), max_text)
    report = parse_machine_report(entry.raw)
    classification = classify(parsed, entry.mail_from, report)
    # A JMRP complaint is the complained-about message itself: it is the evidence, as a person's forward is.
    takes_forwards = report is None or report.format == "jmrp"
    forwards = forwarded_messages(entry.raw, parsed.text) if takes_forwards and _may_forward(parsed) else ()
    flags = []
    if any(name.lower().startswith(_OUR_HEADER_PREFIX) for name, _ in parsed.headers):
        flags.append("untrusted_gateway_headers")
    subject, text = defang(parsed.subject), defang(parsed.text)
    # Hashed here, in the bounded child (a hostile image can only kill it); matched in the worker (issue 19).
    hashes = content_hashes(entry.raw) if parsed.attachments else None
    return PreparedMessage(
        entry=entry,
        parsed=parsed,
        kind=_KIND[classification.kind],
        kind_rule=classification.rule,
        escaped_subject=subject.escaped,
        escaped_text=text.escaped,
        escaped_filenames=tuple(
            escape_text(a.filename) if a.filename else a.filename for a in parsed.attachments
        ),
        indicators=_indicators(subject.indicators + text.indicators, parsed, report, forwards),
        report=_report_fields(report) if report is not None else None,
        defects=(*parsed.defects, *hashes.defects) if hashes else parsed.defects,
        flags=tuple(flags),
        group_key=_group_key(report),
        returned_message_ids=returned_message_ids(entry.raw) if classification.kind == "automatic" else (),
        embedded_texts=embedded_texts(entry.raw) if _has_embedded_message(parsed) else (),
        evidence=tuple(_evidence(f) for f in forwards),
        csam=report is not None and is_csam(report),
        content_hashes=hashes,
    )


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


def transactions(prepared: Sequence[PreparedMessage]) -> Iterator[list[PreparedMessage]]:
    """Consecutive runs of `prepared`, each within the limits above (or a single message)."""
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

    def use_config(self, config: Config) -> None:
        """SIGHUP in `thread` mode: the new configuration; its term list and hash lists are re-read."""
        self.config = config
        if self._csam is not None:
            self._csam = None
            self._csam = CsamSignals.from_config(config.csam)

    def close(self) -> None:
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def process_once(self) -> int:
        """Claim, prepare and commit one batch; returns how many entries it handled."""
        entries = self.store.claim_inbox(
            self.batch, lease=max(60.0, self.config.intake.processing_timeout * 4)
        )
        if not entries:
            return 0
        prepared: list[PreparedMessage] = []
        for entry in entries:
            started = time.monotonic()
            timeout, max_text = self.config.intake.processing_timeout, self.config.intake.max_text_chars
            try:
                if self._process is not None:
                    prepared.append(self._process.run(entry, timeout))
                else:
                    job = functools.partial(prepare, entry, self.parse, max_text)
                    prepared.append(self._preparer.run(job, timeout))
            except Exception as exc:
                error = type(exc).__name__
                if self.on_failure is not None:
                    self.on_failure()
                if entry.attempts >= self.config.intake.max_attempts:
                    log.error(
                        "processing failed for good: inbox_id=%d attempts=%d error=%s",
                        entry.inbox_id,
                        entry.attempts,
                        error,
                    )
                    prepared.append(failed(entry, error))
                else:
                    log.warning(
                        "processing failed: inbox_id=%d attempt=%d error=%s",
                        entry.inbox_id,
                        entry.attempts,
                        error,
                    )
                    self.store.release_failed(entry.inbox_id, error)
                continue
            # Signals need the hash index, which lives here, not in the bounded preparation child.
            prepared[-1] = self.csam.apply(prepared[-1])
            log.debug("prepared: inbox_id=%d ms=%.1f", entry.inbox_id, (time.monotonic() - started) * 1000)
        for part in transactions(prepared):
            self._commit(part)
        return len(entries)

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
