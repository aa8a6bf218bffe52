"""DATA received into a temporary file, and a budget on how many message bytes sit in memory at once.

aiosmtpd collects DATA as a list of lines, joins them, and lets each session's stream buffer grow to the
line limit, which for us is the message size: about four times the message per session, so 50 senders of
10 MB messages needed ~2 GB (issue 10 asks for < 600 MB). Here each session reads with a 64 KB stream
limit (a longer line arrives in fragments, never refused: issue 7), writes the unstuffed bytes to a
`SpooledTemporaryFile` that stays in memory up to 256 KB and moves to an unlinked file beyond, and the
bytes come back into memory only when the inbox is about to commit them, under `MemoryBudget`. The temp
file is anonymous (O_TMPFILE) in the spool directory: on the state disk, not in a tmpfs, and gone with
the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO

IN_MEMORY = 256 * 1024
STREAM_LIMIT = 64 * 1024


@dataclass(slots=True)
class ReceivedData:
    """One message's DATA as received (dot-unstuffed), `size` bytes, or `too_big` (its bytes discarded)."""

    file: IO[bytes]
    size: int = 0
    too_big: bool = False

    @property
    def on_disk(self) -> bool:
        return bool(getattr(self.file, "_rolled", False))

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()


async def receive(reader: asyncio.StreamReader, limit: int | None, directory: str | None) -> ReceivedData:
    """Read DATA up to the lone dot. Over `limit` the rest is read and dropped (552 comes after the dot,
    RFC 5321 §4.2.5 as aiosmtpd does). Raises IncompleteReadError if the client goes away mid-DATA."""
    data = ReceivedData(tempfile.SpooledTemporaryFile(max_size=IN_MEMORY, dir=directory))
    try:
        await _read_into(reader, data, limit)
    except BaseException:
        data.close()
        raise
    return data


async def _read_into(reader: asyncio.StreamReader, data: ReceivedData, limit: int | None) -> None:
    at_line_start = True
    write = data.file.write
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
            complete = True
        except asyncio.LimitOverrunError as exc:
            # No CRLF within the limit: take what is buffered as a fragment. `consumed` stops one byte
            # short of the buffer, so a CR that may start the CRLF stays for the next read.
            line = await reader.readexactly(exc.consumed)
            complete = False
        if at_line_start:
            if complete and line == b".\r\n":
                return
            if line[:1] == b".":  # transparency (RFC 5321 §4.5.2)
                line = line[1:]
        at_line_start = complete
        data.size += len(line)
        if data.too_big:
            continue
        if limit and data.size > limit:
            data.too_big = True
            data.file.close()  # drop what we had at once; keep reading to the dot
            data.file = io.BytesIO()
            continue
        write(line)


@dataclass
class MemoryBudget:
    """At most `limit` bytes of received messages in memory between disk and the inbox commit; one message
    is always let through, whatever its size, so nothing waits forever."""

    limit: int
    used: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size
        try:
            yield
        finally:
            async with self._changed:
                self.used -= size
                self._changed.notify_all()
