"""Raw first: the inbox write that stands behind every 250.

    SMTP DATA ──append()──▶ queue ──writer task──▶ one transaction + one fsync for the whole group
                                         │ store fails past its budget
                                         ▼
                                    spool dir (write, fsync, rename, fsync dir) ──replayer──▶ store

Group commit (issue 2): sessions that finish DATA within a few milliseconds of each other share one
transaction, so durable intake is bounded by the disk's fsync rate per *group*, not per message.
Spooling (issue 7): when the store cannot commit within `commit_budget` seconds (tenacity retries inside
a hard timeout, because a cancelled await does not cancel a database thread), each message is written to
a local spool file and the client still gets 250; only when that fails too does `append` raise
`TransientError` (451). Each message carries an `intake_uid` minted before the first attempt, so a commit
that went through after its timeout and a replay of its spool file meet on a unique key and store once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from storage.errors import TransientError
from storage.models import InboxEntry

log = logging.getLogger("abuse_gateway.inbox")


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str | None  # "" the null sender; None not known (a file imported without envelope)
    rcpt_tos: tuple[str, ...]
    client_addr: str | None = None
    confirm: bool = True  # False: `ingest --no-confirm`, processed without mailing anyone
    helo: str | None = None  # the client's HELO/EHLO name: SPF's HELO identity (issue 22)


@dataclass(slots=True)
class _Pending:
    uid: str
    raw: bytes
    envelope: Envelope
    received_at: datetime
    sha256: str
    future: asyncio.Future[AppendResult] = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where the message is now: committed to the store (`inbox_id`) or spooled to disk."""

    uid: str
    inbox_id: int | None
    spooled: bool


def new_uid() -> str:
    # Time-ordered so spool files replay in arrival order.
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def _storable(value: str) -> str:
    """Envelope text as both stores can hold it. aiosmtpd decodes command arguments with surrogateescape,
    so `MAIL FROM:<\xff@x>` arrives with a lone surrogate that no UTF-8 database driver can encode (it
    raised UnicodeEncodeError, which killed the inbox writer: every later client hung), and PostgreSQL text
    refuses NUL. Bytes that are not UTF-8, and NUL, are kept visibly as backslash escapes."""
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = value.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _row(uid: str, raw: bytes, envelope: Envelope, received_at: datetime, sha256: str) -> dict[str, object]:
    return {
        "intake_uid": uid,
        "received_at": received_at,
        "mail_from": _storable(envelope.mail_from) if envelope.mail_from is not None else None,
        "confirm": envelope.confirm,
        "rcpt_tos": [_storable(r) for r in envelope.rcpt_tos],
        "client_addr": _storable(envelope.client_addr) if envelope.client_addr is not None else None,
        "helo": _storable(envelope.helo)[:255] if envelope.helo is not None else None,
        "size": len(raw),
        "sha256": sha256,
        "raw": raw,
        "state": "pending",
        "attempts": 0,
    }


def commit_rows(engine: Engine, rows: list[dict[str, object]]) -> dict[str, int]:
    """Insert inbox rows in one transaction, skipping uids already stored; return uid → inbox id."""
    uids = [str(r["intake_uid"]) for r in rows]
    with engine.begin() as conn:
        existing = dict(
            conn.execute(
                select(InboxEntry.intake_uid, InboxEntry.id).where(InboxEntry.intake_uid.in_(uids))
            ).all()
        )
        fresh = [r for r in rows if r["intake_uid"] not in existing]
        if fresh:
            conn.execute(insert(InboxEntry), fresh)
            stored = conn.execute(
                select(InboxEntry.intake_uid, InboxEntry.id).where(
                    InboxEntry.intake_uid.in_([str(r["intake_uid"]) for r in fresh])
                )
            ).all()
            existing.update(dict(stored))
    return {str(k): int(v) for k, v in existing.items()}


class Spool:
    """A directory of messages the store could not take yet. One file each, made durable before 250."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def write(self, uid: str, raw: bytes, envelope: Envelope, received_at: datetime) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        meta = json.dumps(
            {
                "uid": uid,
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "client_addr": envelope.client_addr,
                "confirm": envelope.confirm,
                "helo": envelope.helo,
                "received_at": received_at.isoformat(),
            }
        ).encode()
        final = self.directory / f"{uid}.msg"
        tmp = self.directory / f".{uid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, meta + b"\n")
            view = memoryview(raw)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def entries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.msg"))

    def depth(self) -> int:
        return len(self.entries())

    def writable(self) -> bool:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK)

    @staticmethod
    def read(path: Path) -> tuple[str, bytes, Envelope, datetime]:
        data = path.read_bytes()
        meta_line, _, raw = data.partition(b"\n")
        meta = json.loads(meta_line)
        envelope = Envelope(
            meta["mail_from"],
            tuple(meta["rcpt_tos"]),
            meta.get("client_addr"),
            meta.get("confirm", True),
            meta.get("helo"),
        )
        return meta["uid"], raw, envelope, datetime.fromisoformat(meta["received_at"])

    def replay(self, engine: Engine, batch: int = 200) -> int:
        """Move spooled messages into the store, oldest first; idempotent by uid. Returns how many moved."""
        moved = 0
        paths = self.entries()
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            rows, readable = [], []
            for path in chunk:
                try:
                    uid, raw, envelope, received_at = self.read(path)
                except (OSError, ValueError, KeyError) as exc:
                    # A damaged file must not block every replay pass: set it aside, keep its bytes.
                    log.error(
                        "spool file unreadable: file=%s error=%s; renamed .corrupt",
                        path.name,
                        type(exc).__name__,
                    )
                    path.rename(path.with_suffix(".corrupt"))
                    continue
                readable.append(path)
                rows.append(_row(uid, raw, envelope, received_at, _sha256(raw)))
            chunk = readable
            if not rows:
                continue
            try:
                commit_rows(engine, rows)
            except (DataError, IntegrityError):  # the store is up but refuses a row (not an outage)
                if len(chunk) == 1:
                    raise
                # One file the store refuses must not hold the others hostage: one at a time, keep
                # whatever still fails in the spool (logged by uid) and move the rest.
                moved += self._replay_one_by_one(engine, chunk, rows)
                continue
            for path in chunk:
                path.unlink(missing_ok=True)
            moved += len(chunk)
        return moved

    @staticmethod
    def _replay_one_by_one(engine: Engine, chunk: list[Path], rows: list[dict[str, object]]) -> int:
        moved = 0
        for path, row in zip(chunk, rows, strict=True):
            try:
                commit_rows(engine, [row])
            except SQLAlchemyError as exc:
                uid, error = row["intake_uid"], type(exc).__name__
                log.error("spool replay: uid=%s refused by the store: error=%s", uid, error)
                continue
            path.unlink(missing_ok=True)
            moved += 1
        return moved


def _sha256(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


class Inbox:
    """The async front of the inbox: `await append(raw, envelope)` returns once the bytes are durable."""

    def __init__(
        self,
        engine: Engine,
        spool: Spool,
        *,
        commit_budget: float = 10.0,
        group_window: float = 0.002,
        max_group: int = 256,
        on_stored: Callable[[Iterable[int]], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.spool = spool
        self.commit_budget = commit_budget
        self.group_window = group_window
        self.max_group = max_group
        self.on_stored = on_stored
        self.on_error = on_error
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._store_lock = threading.Lock()
        # Threads of its own, not the loop's default executor (issue 7): `wait_for` abandons a commit stuck
        # in the database (a table lock, a hung server) but cannot stop its thread. On the shared executor
        # each new group then parked one more thread behind `_store_lock` until the executor was full, and
        # the spool writes meant to answer those clients queued behind them: sessions got no reply at all
        # for as long as the store hung. One commit thread (a group queued behind a stuck one is cancelled
        # unstarted when its budget ends), and spool writes that never wait for the database.
        self._commit_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-commit")
        self._spool_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inbox-spool")

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._run(), name="inbox-writer")

    async def close(self) -> None:
        """Flush what is queued, then stop the writer (a sentinel, so no group is cut off mid-commit)."""
        if self._writer is None:
            return
        await self._queue.put(None)
        await self._writer
        self._writer = None

    def alive(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def pending(self) -> int:
        return self._queue.qsize()

    async def append(self, raw: bytes, envelope: Envelope) -> AppendResult:
        self.start()
        loop = asyncio.get_running_loop()
        item = _Pending(new_uid(), raw, envelope, datetime.now(UTC), _sha256(raw), loop.create_future())
        await self._queue.put(item)
        return await item.future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            if self.group_window:
                await asyncio.sleep(self.group_window)
            closing = False
            while len(group) < self.max_group and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    closing = True
                    break
                group.append(item)
            try:
                await self._flush(group)
            except Exception as exc:  # never let the writer die: every later append would hang forever
                log.error(
                    "inbox writer error: group=%d error=%s; answering 451", len(group), type(exc).__name__
                )
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(TransientError("inbox writer error"))
            if closing:
                return

    async def _flush(self, group: list[_Pending]) -> None:
        rows = [_row(p.uid, p.raw, p.envelope, p.received_at, p.sha256) for p in group]
        started = time.monotonic()
        try:
            commit = asyncio.get_running_loop().run_in_executor(
                self._commit_executor, self._commit_with_retry, rows
            )
            ids = await asyncio.wait_for(commit, self.commit_budget)
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            log.warning(
                "inbox commit failed: group=%d error=%s budget=%.1fs; spooling",
                len(group),
                type(exc).__name__,
                self.commit_budget,
            )
            if self.on_error is not None:
                self.on_error("inbox_commit")
            await self._spool_group(group)
            return
        log.debug("inbox commit: group=%d ms=%.1f", len(group), (time.monotonic() - started) * 1000)
        for item in group:
            if not item.future.done():
                item.future.set_result(AppendResult(item.uid, ids[item.uid], spooled=False))
        if self.on_stored is not None:
            self.on_stored(ids.values())

    def _commit_with_retry(self, rows: list[dict[str, object]]) -> dict[str, int]:
        retrying = Retrying(
            retry=retry_if_exception_type(SQLAlchemyError),
            stop=stop_after_delay(max(self.commit_budget - 0.5, 0.1)),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        )
        with self._store_lock:
            return retrying(commit_rows, self.engine, rows)

    async def _spool_group(self, group: list[_Pending]) -> None:
        for item in group:
            try:
                write = (self.spool.write, item.uid, item.raw, item.envelope, item.received_at)
                await asyncio.get_running_loop().run_in_executor(self._spool_executor, *write)
            except OSError as exc:
                log.error("spool write failed: uid=%s error=%s; answering 451", item.uid, type(exc).__name__)
                if not item.future.done():
                    item.future.set_exception(TransientError("store and spool both unavailable"))
                continue
            if not item.future.done():
                item.future.set_result(AppendResult(item.uid, None, spooled=True))


def spool_now(spool: Spool, raw: bytes, envelope: Envelope) -> AppendResult:
    """Straight to the spool (the store is known to be down); OSError when the spool fails too."""
    uid = new_uid()
    spool.write(uid, raw, envelope, datetime.now(UTC))
    return AppendResult(uid, None, spooled=True)


def store_now(
    engine: Engine, spool: Spool, raws: list[bytes], envelope: Envelope | Sequence[Envelope], budget: float
) -> list[AppendResult]:
    """The synchronous twin of `Inbox.append`, for `ingest`: a batch in one transaction (one fsync for a
    whole backlog chunk), else each message to the spool, else TransientError. One envelope for all, or
    one per message (a backlog's files each name their own sender in Return-Path)."""
    received_at = datetime.now(UTC)
    envelopes = [envelope] * len(raws) if isinstance(envelope, Envelope) else list(envelope)
    rows = [
        _row(new_uid(), raw, env, received_at, _sha256(raw)) for raw, env in zip(raws, envelopes, strict=True)
    ]
    retrying = Retrying(
        retry=retry_if_exception_type(SQLAlchemyError),
        stop=stop_after_delay(budget),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    )
    try:
        ids = retrying(commit_rows, engine, rows)
        return [AppendResult(str(r["intake_uid"]), ids[str(r["intake_uid"])], spooled=False) for r in rows]
    except SQLAlchemyError as exc:
        log.warning("ingest commit failed: error=%s; spooling", type(exc).__name__)
    results = []
    for row, raw, env in zip(rows, raws, envelopes, strict=True):
        uid = str(row["intake_uid"])
        try:
            spool.write(uid, raw, env, received_at)
        except OSError as exc:
            raise TransientError("store and spool both unavailable") from exc
        results.append(AppendResult(uid, None, spooled=True))
    return results
