"""A timestamping SMTP load generator: plain asyncio sockets, no pipelining, in N worker processes.

Each session: connect, read 220, EHLO, then per message MAIL / RCPT / DATA / body + "." / reply, then QUIT.
Latency is measured from the moment the final "\\r\\n.\\r\\n" has been handed to the kernel (write + drain)
to the moment the reply line arrives: end of DATA → 250. Every loop is bounded by a message budget and a
deadline, every read by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import messages

READ_TIMEOUT = 120.0


@dataclass
class LoadSpec:
    port: int
    sessions: int  # concurrent sessions, over all processes
    per_conn: int  # messages per connection before QUIT
    size: int  # bytes per message (approximately)
    max_messages: int  # budget over all processes
    duration: float  # seconds; the run stops at whichever limit comes first
    rate: float | None = None  # offered messages/s over all processes (None: as fast as possible)
    procs: int = 2
    host: str = "127.0.0.1"


@dataclass
class LoadResult:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, end of DATA → reply
    behind: list[float] = field(default_factory=list)  # fixed rate: how late each send started
    elapsed: float = 0.0
    bytes: int = 0

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed, 3),
            "msgs_per_s": round(self.rate, 1),
            "mbytes_per_s": round(self.bytes / self.elapsed / 1e6, 2) if self.elapsed else 0.0,
            "p50_ms": _ms(percentile(lat, 50)),
            "p99_ms": _ms(percentile(lat, 99)),
            "max_ms": _ms(lat[-1] if lat else None),
            "start_behind_p99_ms": _ms(percentile(sorted(self.behind), 99)),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


class SMTPError(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (possibly multi-line) reply; returns (code, last line)."""
    for _ in range(100):
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        if not line:
            raise SMTPError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            try:
                return int(line[:3]), line
            except ValueError as exc:
                raise SMTPError(f"bad reply {line[:40]!r}") from exc
    raise SMTPError("reply too long")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, want: int
) -> None:
    writer.write(line)
    await writer.drain()
    code, _text = await _reply(reader)
    if code != want:
        raise SMTPError(f"{code}")


def _body(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    text = messages.body_text(rng, max(size - 420, 64))  # ~420 bytes of headers per message
    return messages.wire(text.encode() + b"\r\n")


def _head(run: str, proc: int, n: int, size: int) -> bytes:
    # Unique Message-ID and subject per message: every message is a new report, never a duplicate.
    return (
        f"From: Reporter {n % 97} <reporter{n % 97}@reporter.example.net>\r\n"
        f"To: {messages.RECIPIENT}\r\n"
        f"Subject: Phishing at https://login-{proc}-{n}.bad-bank.example/verify ({size} bytes)\r\n"
        "Date: Mon, 24 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <bench.{run}.{proc}.{n}@reporter.example.net>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()


async def _worker(
    spec: LoadSpec, proc: int, sessions: int, budget: int, rate: float | None, start_barrier: Any
) -> LoadResult:
    bodies = [_body(spec.size, seed) for seed in range(1 if spec.size > 1_000_000 else 4)]
    run = uuid.uuid4().hex[:8]
    res = LoadResult()
    errors: Counter[str] = Counter()
    left = [budget]
    counter = [0]
    tokens: asyncio.Queue[float] | None = asyncio.Queue() if rate else None
    await asyncio.to_thread(start_barrier.wait, 60)
    t_start = time.monotonic()
    deadline = t_start + spec.duration

    async def ticker() -> None:
        assert tokens is not None and rate
        for i in range(budget):
            due = t_start + i / rate
            if due >= deadline:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tokens.put_nowait(due)

    async def session(idx: int) -> None:
        while left[0] > 0 and time.monotonic() < deadline:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(spec.host, spec.port), READ_TIMEOUT
                )
                code, _ = await _reply(reader)
                if code != 220:
                    raise SMTPError(f"{code}")
                await _command(reader, writer, b"EHLO bench.client.test\r\n", 250)
                for _ in range(spec.per_conn):
                    if left[0] <= 0 or time.monotonic() >= deadline:
                        break
                    if tokens is not None:
                        remaining = deadline - time.monotonic()
                        try:
                            due = await asyncio.wait_for(tokens.get(), max(remaining, 0.001))
                        except TimeoutError:
                            break
                        res.behind.append(max(0.0, time.monotonic() - due))
                    if left[0] <= 0:
                        break
                    left[0] -= 1
                    n = counter[0]
                    counter[0] += 1
                    await _command(reader, writer, b"MAIL FROM:<reporter@reporter.example.net>\r\n", 250)
                    await _command(reader, writer, f"RCPT TO:<{messages.RECIPIENT}>\r\n".encode(), 250)
                    await _command(reader, writer, b"DATA\r\n", 354)
                    head, body = _head(run, proc, n, spec.size), bodies[n % len(bodies)]
                    writer.write(head)
                    writer.write(body)
                    await writer.drain()
                    t0 = time.monotonic()
                    code, _ = await _reply(reader)
                    t1 = time.monotonic()
                    if code == 250:
                        res.ok += 1
                        res.bytes += len(head) + len(body)
                        res.latencies.append(t1 - t0)
                    else:
                        errors[str(code)] += 1
                writer.write(b"QUIT\r\n")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), 5)
                    await asyncio.wait_for(_reply(reader), 5)
            except (OSError, SMTPError, TimeoutError, asyncio.IncompleteReadError) as exc:
                errors[f"{type(exc).__name__}:{exc}"[:60]] += 1
                await asyncio.sleep(0.05)
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(writer.wait_closed(), 5)

    tasks = [asyncio.create_task(session(i)) for i in range(sessions)]
    if tokens is not None:
        tasks.append(asyncio.create_task(ticker()))
    # Hard stop: everything is bounded already, this is the belt to those braces.
    await asyncio.wait(tasks, timeout=spec.duration + 2 * READ_TIMEOUT)
    for t in tasks:
        t.cancel()
    res.elapsed = time.monotonic() - t_start
    res.errors = dict(errors)
    return res


def _proc_main(
    spec: LoadSpec, proc: int, sessions: int, budget: int, rate: float | None, barrier: Any, out: Any
) -> None:
    try:
        res = asyncio.run(_worker(spec, proc, sessions, budget, rate, barrier))
        out.put(asdict(res))
    except BaseException as exc:  # report, never hang the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        out.put(
            {
                "ok": 0,
                "errors": {f"worker:{type(exc).__name__}:{exc}"[:80]: 1},
                "latencies": [],
                "behind": [],
                "elapsed": 0.0,
                "bytes": 0,
            }
        )


def run_load(spec: LoadSpec) -> LoadResult:
    """Run `spec` across worker processes; wall time is measured here from a common start barrier."""
    procs = max(1, min(spec.procs, spec.sessions))
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    workers = []
    for p in range(procs):
        sessions = spec.sessions // procs + (1 if p < spec.sessions % procs else 0)
        budget = spec.max_messages // procs + (1 if p < spec.max_messages % procs else 0)
        rate = spec.rate / procs if spec.rate else None
        w = ctx.Process(target=_proc_main, args=(spec, p, sessions, budget, rate, barrier, out), daemon=True)
        w.start()
        workers.append(w)
    total = LoadResult()
    try:
        barrier.wait(120)
    except Exception:
        pass
    t_start = time.monotonic()
    parts = []
    limit = time.monotonic() + spec.duration + 2 * READ_TIMEOUT + 30
    for _ in workers:
        try:
            parts.append(out.get(timeout=max(1.0, limit - time.monotonic())))
        except Exception:
            break
    elapsed = time.monotonic() - t_start
    for w in workers:
        w.join(5)
        if w.is_alive():
            w.kill()  # our own child, by handle
    errors: Counter[str] = Counter()
    for part in parts:
        total.ok += part["ok"]
        total.bytes += part["bytes"]
        total.latencies += part["latencies"]
        total.behind += part["behind"]
        errors.update(part["errors"])
    total.errors = dict(errors)
    total.elapsed = elapsed
    return total


def client_procs_default() -> int:
    return max(2, min(8, os.cpu_count() or 2))
