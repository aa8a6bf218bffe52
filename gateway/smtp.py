"""The SMTP listener: checks the envelope, hands the bytes to the inbox, answers.

Refuse only what SMTP itself should refuse, at the earliest step: an unknown recipient at RCPT
(550 5.1.1), too many recipients (452 4.5.3), a message over the size limit (552 5.3.4), too many
connections (421 4.7.0). Content is never refused: a 250 comes once the raw bytes are committed (or
spooled), a 451 when neither store nor spool can take them, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import data, metrics
from gateway.config import Config, ConfigError, load_config
from parsers.address import client_key, has_control
from storage.errors import TransientError
from storage.inbox import AppendResult, Inbox
from storage.inbox import Envelope as InboxEnvelope

log = logging.getLogger("abuse_gateway.smtp")

# Reply codes, shared by code and tests (RFC 5321 §4.2, enhanced codes RFC 3463).
OK = "250 2.0.0 OK: queued as {uid}"
RCPT_OK = "250 2.1.5 OK"
MAIL_OK = "250 2.1.0 OK"
# RFC 3463 §3.2 X.1.7: bad sender's mailbox address syntax (issue 15: it broke the confirmation worker).
SENDER_CONTROL_CHARACTERS = "553 5.1.7 Sender address contains control or line-break characters"
UNKNOWN_RECIPIENT = "550 5.1.1 No such recipient here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_BIG = "552 5.3.4 Message too big for system"
TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
SESSION_EXPIRED = "421 4.4.2 Session time limit exceeded, closing"
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"

# aiosmtpd's own wording for the size refusal at MAIL FROM (SIZE=); rewritten to carry the enhanced code
# (RFC 3463 §3.5). DATA is ours (gateway/data.py) and answers TOO_BIG itself.
_AIOSMTPD_TOO_BIG = (b"552 Error: message size exceeds fixed maximum message size",)
# Received messages read back into memory for their inbox commit, at most this many bytes at a time
# (gateway/data.py): 50 sessions finishing 10 MB messages together wait their turn instead of all
# holding their bytes at once.
MEMORY_BUDGET = 64 * 1024 * 1024
# The stream buffer limit outside DATA: aiosmtpd's own default line limit, well above the longest command
# it accepts (512 plus the SIZE/SMTPUTF8 allowances). aiosmtpd uses one StreamReader limit for both command
# lines and DATA lines; left at the DATA limit (the message size) it lets each session park up to
# max_message_bytes of a never-ending "command" in memory before the 512 check runs.
_COMMAND_STREAM_LIMIT = 1001


# Longest piece of client text a log line carries (an unknown command word, a peer string).
_LOGGED_CLIENT_TEXT = 40


def loggable(value: object) -> str:
    """Client text as a log may hold it: control and non-ASCII characters as visible escapes, truncated
    (issue 15: aiosmtpd logs an unknown command word as the client sent it, ESC sequences and all)."""
    shown = repr(value if isinstance(value, str) else str(value))[1:-1]
    if len(shown) > _LOGGED_CLIENT_TEXT:
        shown = shown[:_LOGGED_CLIENT_TEXT] + f"...({len(shown)} chars)"
    return shown


class _EscapeClientText(logging.Filter):
    """On aiosmtpd's logger: every string argument escaped and truncated before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(loggable(a) if isinstance(a, (str, bytes)) else a for a in record.args)
        return True


_ESCAPE_CLIENT_TEXT = _EscapeClientText()


@dataclass
class ConnectionLimits:
    """Counts of live sessions, in total and per client (`client_key`); the only shared state of the
    listener. When the listener is full, a newcomer whose client holds fewer sessions than the busiest
    one takes the slot of that client's session idle the longest (issue 15: 200 idle sessions from 10
    addresses must not lock out an eleventh client)."""

    max_sessions: int
    max_per_ip: int
    total: int = 0
    per_ip: Counter[str] = field(default_factory=Counter)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: dict[GatewaySMTP, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.idle.set()

    def admit(self, ip: str, session: GatewaySMTP | None = None) -> bool:
        key = client_key(ip)
        if self.per_ip[key] >= self.max_per_ip:
            return False
        if self.total >= self.max_sessions:
            victim = self._evictable(key)
            if victim is None:
                return False
            victim.evict()
        self.total += 1
        self.per_ip[key] += 1
        if session is not None:
            self.sessions[session] = key
        self.idle.clear()
        metrics.SESSIONS.set(self.total)
        return True

    def _evictable(self, newcomer: str) -> GatewaySMTP | None:
        """The session idle the longest (not inside DATA) of the client with the most sessions, if that
        client has more than the newcomer's would have."""
        candidates = [s for s in self.sessions if not s.busy]
        if not candidates:
            return None
        victim = max(candidates, key=lambda s: (self.per_ip[self.sessions[s]], -s.progress_at))
        if self.per_ip[self.sessions[victim]] <= self.per_ip[newcomer] + 1:
            return None
        return victim

    def release(self, ip: str, session: GatewaySMTP | None = None) -> None:
        if session is not None:
            self.sessions.pop(session, None)
        key = client_key(ip)
        self.total -= 1
        self.per_ip[key] -= 1
        if self.per_ip[key] <= 0:
            del self.per_ip[key]
        metrics.SESSIONS.set(self.total)
        if self.total <= 0:
            self.idle.set()


# Commands that move a transaction forward (RFC 5321 §4.1.1); NOOP, RSET, HELP, VRFY and EXPN do not, and
# a client that only sends those is idle (issue 15: NOOP every 299 s held a session for the whole deadline).
_PROGRESS_COMMANDS = ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "STARTTLS", "AUTH", "QUIT")
SESSION_EVICTED = "421 4.7.0 Too many connections, closing the longest idle session"


class GatewaySMTP(SMTP):
    """aiosmtpd's state machine with our limits.

    - DATA is read by `gateway.data.receive` into a temporary file, not aiosmtpd's list of lines. Lines
      may be as long as the whole message: RFC 5321 §4.5.3.1.6 caps lines at 1000 octets, but a 10 MB
      single-line report is still a report, and refusing it would be a 5xx for content. Command lines keep
      their own limit (`command_size_limit`, 512 per RFC 5321 §4.5.3.1.4).
    - a session deadline on top of aiosmtpd's idle timeout, which is not reset during DATA and has no cap
      on a session that keeps talking.
    """

    def __init__(
        self, handler: GatewayHandler, *, limits: ConnectionLimits, session_deadline: float, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._data_dir = handler.data_dir
        self._limits = limits
        self._deadline = session_deadline
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._admitted_ip: str | None = None
        self.started = time.monotonic()
        self.progress_at = self.started  # the idle limit counts from here
        self.busy = False  # inside DATA: never evicted
        self._evicted = False
        for command in _PROGRESS_COMMANDS:
            method = self._smtp_methods.get(command)
            if method is not None:
                self._smtp_methods[command] = self._progressing(method)

    def _progressing(self, method: Callable[[str], Any]) -> Callable[[str], Any]:
        async def run(arg: str) -> None:
            self._progress()
            await method(arg)

        return run

    def _progress(self) -> None:
        self.progress_at = time.monotonic()
        self._reset_timeout()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd resets its idle timer on every command; ours runs from the last one that moved the
        transaction, so NOOP/RSET/HELP cannot keep a session open."""
        if duration is None:
            remaining = self.progress_at + self._timeout_duration - time.monotonic()
            duration = max(remaining, 0.001)  # aiosmtpd reads 0 as "the full timeout"
        super()._reset_timeout(duration)

    def evict(self) -> None:
        """Make room for a new client (ConnectionLimits): this session's slot is given up at once."""
        if self._admitted_ip is None:
            return
        log.warning("evicted: reason=longest_idle client=%s", self._admitted_ip)
        metrics.REFUSED.labels("evicted_idle").inc()
        self._limits.release(self._admitted_ip, self)
        self._admitted_ip = None
        self._evicted = True
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        if self.transport is not None:
            self.transport.write(SESSION_EVICTED.encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else "?"
            if not self._limits.admit(ip, self):
                log.warning("refused: reason=too_many_connections client=%s", ip)
                metrics.REFUSED.labels("too_many_connections").inc()
                transport.write(TOO_MANY_CONNECTIONS.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted_ip = ip
            self._deadline_handle = self.loop.call_later(self._deadline, self._expire)
        super().connection_made(transport)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        reader._limit = _COMMAND_STREAM_LIMIT  # type: ignore[attr-defined]  # raised only inside DATA

    async def smtp_DATA(self, arg: str) -> None:
        """A session inside DATA (or its commit) is busy, never evicted as idle."""
        self.busy = True
        try:
            await self._receive_data(arg)
        finally:
            self.busy = False

    async def _receive_data(self, arg: str) -> None:
        """aiosmtpd's DATA (same checks, same order, same hook), receiving into `gateway.data`."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        reader._limit = data.STREAM_LIMIT  # type: ignore[attr-defined]
        try:
            received = await data.receive(reader, self.data_size_limit, self._data_dir)
        except asyncio.IncompleteReadError:  # the client went away mid-DATA: nothing to answer
            self._writer.close()
            return
        except asyncio.CancelledError:
            self._writer.close()
            raise
        finally:
            reader._limit = _COMMAND_STREAM_LIMIT  # type: ignore[attr-defined]
        if received.too_big:
            received.close()
            log.info("refused: reason=too_big client=%s size=%d", self._admitted_ip, received.size)
            metrics.REFUSED.labels("too_big").inc()
            self._set_post_data_state()
            await self.push(TOO_BIG)
            return
        self.envelope.received = received  # type: ignore[attr-defined]  # read by GatewayHandler
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            received.close()
        self._set_post_data_state()
        self._progress()  # the end of DATA moved the transaction too
        await self.push(status)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted_ip is None:
            if self._evicted:
                super().connection_lost(error)
            return  # refused at the door: aiosmtpd never set up this session
        self._limits.release(self._admitted_ip, self)
        self._admitted_ip = None
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        super().connection_lost(error)

    def _expire(self) -> None:
        if self.transport is not None:
            log.warning("session deadline reached: client=%s seconds=%.0f", self._admitted_ip, self._deadline)
            self.transport.write(SESSION_EXPIRED.encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    async def push(self, status: bytes | str) -> None:
        raw = status.encode("utf-8") if isinstance(status, str) else status
        if raw in _AIOSMTPD_TOO_BIG:
            log.info("refused: reason=too_big client=%s", self._admitted_ip)
            metrics.REFUSED.labels("too_big").inc()
            raw = TOO_BIG.encode()
        await super().push(raw)


class GatewayHandler:
    """The aiosmtpd handler: RCPT policy and raw-first DATA. Holds no per-session state."""

    def __init__(
        self,
        config: Config,
        inbox: Inbox,
        on_accepted: Callable[[], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self.inbox = inbox
        self.on_accepted = on_accepted
        self.memory = data.MemoryBudget(MEMORY_BUDGET)
        # Where DATA beyond data.IN_MEMORY waits for its commit: in the spool directory, on the state disk
        # (the system's temporary directory if the spool is unusable: that is answered when spooling).
        self.data_dir: str | None = config.store.spool_dir
        try:
            Path(config.store.spool_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            self.data_dir = None

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO reply without AUTH: the gateway authenticates nobody, and offering AUTH after
        STARTTLS invites password guessing against a mechanism that cannot succeed (issue 15)."""
        session.host_name = hostname
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        """Envelope syntax only (an SMTP-level refusal, not one for content): a sender with control or
        line-break characters cannot be replied to and broke the confirmation worker (issue 15)."""
        if has_control(address):
            log.info("refused: reason=sender_control_characters client=%s", _ip(session))
            metrics.REFUSED.labels("sender_control_characters").inc()
            return SENDER_CONTROL_CHARACTERS
        envelope.mail_from = address  # a hook that handles MAIL must record it itself
        envelope.mail_options.extend(mail_options)
        return MAIL_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.config.accepts_recipient(address):
            log.info("refused: reason=unknown_recipient client=%s", _ip(session))
            metrics.REFUSED.labels("unknown_recipient").inc()
            return UNKNOWN_RECIPIENT
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            log.info("refused: reason=too_many_recipients client=%s", _ip(session))
            metrics.REFUSED.labels("too_many_recipients").inc()
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)  # a hook that handles RCPT must record it itself
        envelope.rcpt_options.extend(rcpt_options)
        return RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received: data.ReceivedData = envelope.received  # type: ignore[attr-defined]
        started = time.monotonic()
        try:
            if received.on_disk:
                async with self.memory.reserve(received.size):
                    raw = await asyncio.to_thread(received.read)
                    result = await self._append(raw, envelope, session)
            else:
                raw = received.read()
                result = await self._append(raw, envelope, session)
        except TransientError:
            log.error("refused: reason=store_unavailable client=%s size=%d", _ip(session), len(raw))
            metrics.REFUSED.labels("store_unavailable").inc()
            return TRY_LATER
        log.info(
            "accepted: inbox_id=%s uid=%s size=%d spooled=%s commit_ms=%.1f client=%s",
            result.inbox_id,
            result.uid,
            len(raw),
            result.spooled,
            (time.monotonic() - started) * 1000,
            _ip(session),
        )
        metrics.ACCEPTED.labels("spool" if result.spooled else "store").inc()
        if self.on_accepted is not None:
            self.on_accepted()
        return OK.format(uid=result.uid)

    async def _append(self, raw: bytes, envelope: Envelope, session: Session) -> AppendResult:
        return await self.inbox.append(
            raw,
            InboxEnvelope(
                envelope.mail_from or "", tuple(envelope.rcpt_tos), _ip(session), helo=session.host_name
            ),
        )

    async def handle_exception(self, error: Exception) -> str:
        # Never 500: a 5xx tells the sender to give up on a message we simply failed to take.
        log.error("smtp hook error: %s", type(error).__name__)
        return TRY_LATER


def _ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "?")


def tls_context(config: Config) -> ssl.SSLContext | None:
    if not (config.smtp.tls_cert and config.smtp.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.smtp.tls_cert, config.smtp.tls_key)
    return context


def reread(config: Config) -> tuple[Config, ssl.SSLContext | None] | None:
    """SIGHUP, in every listener process: the configuration file again and the TLS pair it names (read
    even when the paths are unchanged: that is how a renewal lands). None, logged, when either fails: the
    running configuration stays."""
    try:
        new = load_config(config.source)
        return new, tls_context(new)
    except (ConfigError, OSError, ssl.SSLError) as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return None


def protocol_factory(handler: GatewayHandler, limits: ConnectionLimits) -> Callable[[], GatewaySMTP]:
    """Each session is built from the handler's settings *now*, so a reload (SIGHUP) reaches new sessions
    while the ones in progress finish with what they started with."""

    def make() -> GatewaySMTP:
        config, tls = handler.config, handler.tls
        return GatewaySMTP(
            handler,
            limits=limits,
            session_deadline=config.smtp.session_deadline,
            data_size_limit=config.smtp.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=config.smtp.hostname,  # otherwise each connection does a blocking getfqdn()
            ident="abuse-gateway",
            tls_context=tls,
            require_starttls=config.smtp.require_tls and tls is not None,
            timeout=config.smtp.idle_timeout,
        )

    return make


async def start_listeners(
    config: Config,
    handler: GatewayHandler,
    sockets: list[socket.socket] | None = None,
    *,
    processes: int = 1,
) -> tuple[list[asyncio.Server], ConnectionLimits]:
    """Bind every `listen` address in the running loop (no aiosmtpd Controller: one loop, no thread), or
    serve the given sockets (socket activation, or a SO_REUSEPORT group of `processes` listener
    processes: each admits its share of `max_sessions`)."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # its INFO lines cost ~25 % of throughput
    logging.getLogger("mail.log").addFilter(_ESCAPE_CLIENT_TEXT)
    limits = ConnectionLimits(-(-config.smtp.max_sessions // processes), config.smtp.max_sessions_per_ip)
    factory = protocol_factory(handler, limits)
    loop = asyncio.get_running_loop()
    servers = []
    for inherited in sockets or []:
        servers.append(await loop.create_server(factory, sock=inherited))
    for address in [] if sockets else config.smtp.listen:
        host, _, port = address.rpartition(":")
        servers.append(await loop.create_server(factory, host.strip("[]") or None, int(port)))
    return servers, limits
