"""Confirmations: decided with the case, queued in its transaction, sent by a worker, never abusable.

The policy (RFC 3834 §2, §4) runs inside the case transaction and returns either a queued confirmation to
the *envelope sender* or a suppression with its reason; both are recorded. The mail itself carries only
what we wrote: the case ID, what happens next, a signed reply address. Never a word of the report, not
even its subject, so nobody can make us mail attacker-chosen text to a forged address (the 2025
helpdesk relay-spam attacks).

The worker claims due rows, sends through the smarthost (aiosmtplib; STARTTLS/AUTH when configured) or,
with no smarthost, writes an .eml under `outbox_dir`. 4xx and connection errors retry — a few quick tries
with tenacity, then a row-level exponential backoff with jitter for up to two days; a 5xx fails the row
with the server's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import hashlib
import hmac
import logging
import os
import random
import secrets
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from gateway import metrics
from gateway.auth_defer import recheck
from gateway.config import Config, ConfigError
from gateway.mailauth import Checker
from gateway.reporter_mail import compose, receipt_of
from gateway.reporter_texts import report_language
from gateway.signing import Signer, UnsignedMail, is_signed
from parsers.address import (
    client_network,
    has_control,
    is_plain_mailbox,
    is_plain_message_id,
    mailbox_key,
    registrable_domain,
)
from parsers.auto import is_bulk_or_list
from parsers.reply_token import make_reply_token
from storage.outbox import Outbox
from storage.records import ConfirmRequest, Lookup, OutboxJob, PreparedMessage

log = logging.getLogger("abuse_gateway.confirm")

LOOP_HEADER = "X-Abuse-Gateway-Loop"
GIVE_UP_AFTER = timedelta(days=2)
_SYSTEM_LOCALPARTS = {
    "mailer-daemon",
    "postmaster",
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "bounce",
    "bounces",
}


# ---- keys ------------------------------------------------------------------------------------------------


def _read_or_create_key(path: Path) -> bytes:
    try:
        _refuse_shared(path)
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    log.info("created reply-token key: path=%s", path)
    return key


class KeyFileError(ConfigError):
    """A reply-token key others can read: anyone on the host could forge reply addresses."""


def _refuse_shared(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        raise KeyFileError(
            f"confirm.secret_file {path} is readable by others (mode {path.stat().st_mode & 0o777:o}); "
            f"anyone who reads it can forge reply addresses: chmod 600 {path}"
        )


def load_token_keys(config: Config) -> list[bytes]:
    """Current key first (signs), then old keys (still verify), so keys rotate without breaking replies."""
    keys = [_read_or_create_key(Path(config.confirm.secret_file))]
    for old in config.confirm.old_secret_files:
        with contextlib.suppress(OSError):
            keys.append(Path(old).read_bytes().strip())
    return [k for k in keys if k]


def loop_signature(key: bytes, message_id: str) -> str:
    return hmac.new(key, b"loop:" + message_id.encode(), hashlib.sha256).hexdigest()[:32]


# ---- policy ----------------------------------------------------------------------------------------------


def _suppression(item: PreparedMessage, sender: str) -> str | None:
    """Why no auto-reply may go to this message, in RFC 3834's order of concerns; None when one may."""
    parsed = item.parsed
    if not item.entry.confirm:  # `ingest --no-confirm`: the operator chose to mail nobody
        return "not_requested"
    if item.entry.mail_from is None:  # imported without envelope or Return-Path: nobody to answer
        return "unknown_sender"
    if "processing_failed" in item.flags:
        return "unparsed"
    if "untrusted_gateway_headers" in item.flags:
        return "untrusted_gateway_headers"
    if not sender or sender == "<>":
        return "null_sender"
    # SMTP refuses these at MAIL FROM; `ingest --sender`, the spool and older stores still bring them.
    if has_control(sender):
        return "invalid_sender"
    # Only `dot-atom@host`: a quoted local part would put attacker-chosen text in the To: (issue 15).
    if not is_plain_mailbox(sender):
        return "non_plain_address"
    if sender.partition("@")[0].lower() in _SYSTEM_LOCALPARTS:
        return "system_sender"
    if item.kind == "machine_report":
        return "machine_report"
    if item.kind == "automatic":
        return "automatic"
    auto_submitted = (parsed.header("Auto-Submitted") or "no").strip().lower()
    if not auto_submitted.startswith("no"):
        return "auto_submitted"
    bulk = is_bulk_or_list(parsed)
    if bulk:
        return "bulk_or_list"
    suppress = (parsed.header("X-Auto-Response-Suppress") or "").lower()
    if "all" in suppress or "autoreply" in suppress:
        return "x_auto_response_suppress"
    return None


def _own_mail(item: PreparedMessage, lookup: Lookup, domain: str) -> bool:
    """Our loop header, or a Message-ID we minted: our own mail came back (checked first, so the
    recorded reason names the loop rather than the Auto-Submitted header our mail also carries)."""
    if item.parsed.header(LOOP_HEADER) is not None:
        return True
    message_id = item.parsed.message_id or ""
    return message_id.endswith(f"@{domain}") and lookup.case_for_message_ids([message_id]) is not None


def confirm_policy(config: Config) -> object:
    domain = config.confirm.from_.partition("@")[2] or "localhost"
    per_address = config.confirm.per_address_per_hour
    per_domain = config.confirm.per_domain_per_hour
    per_network = config.confirm.per_network_per_hour
    prefixes = (config.confirm.network_prefix_v4, config.confirm.network_prefix_v6)
    # `abuse@localhost`, the built-in development default, is exempt (the tour); a real from is not.
    require_authenticated = config.confirm.require_authenticated and domain != "localhost"
    language = config.confirm.default_language

    def decide(item: PreparedMessage, lookup: Lookup, opening: bool) -> ConfirmRequest | None:
        sender = (item.entry.mail_from or "").strip(" \t").lower()
        kind = "confirmation" if opening else "acknowledgement"
        reason = "own_mail" if _own_mail(item, lookup, domain) else _suppression(item, sender)
        deferred = False
        if reason is None and require_authenticated:  # issue 22: no backscatter to forged senders
            verdict = item.authentication.sender if item.authentication is not None else "fail"
            reason = "unauthenticated" if verdict == "fail" else None
            deferred = verdict == "temperror"  # DNS could not say: the outbox checks again, later
        keys: dict[str, str] = {}
        if reason is None:
            keys = {
                "rate_mailbox": mailbox_key(sender),
                "rate_domain": registrable_domain(sender.rpartition("@")[2]),
                "client_net": client_network(item.entry.client_addr, *prefixes),
            }
            since = datetime.now(UTC) - timedelta(hours=1)
            to_mailbox, to_domain, from_network = lookup.confirmation_counts(
                keys["rate_mailbox"], keys["rate_domain"], keys["client_net"], since
            )
            if to_mailbox >= per_address:
                reason = "rate_limited_address"
            elif to_domain >= per_domain:
                reason = "rate_limited_domain"
            elif from_network >= per_network:
                reason = "rate_limited_network"
        if reason is not None:
            return ConfirmRequest(recipient=sender, kind=kind, suppressed_reason=reason, **keys)
        # Issue 21: the report's language; else the case's (the store keeps that of its first mail to the
        # reporter, so a bare "here is the password" gets the case's language), else the default.
        told = report_language(item.parsed)
        return ConfirmRequest(
            recipient=sender,
            kind=kind,
            message_id=make_msgid(domain=domain)[1:-1],
            language=told or language,
            language_is_default=told is None,
            receipt=receipt_of(item.parsed, item.indicators),  # counts and digests, never names or text
            deferred=deferred,
            **keys,
        )

    return decide


# ---- the mail --------------------------------------------------------------------------------------------

# Non-ASCII text goes out quoted-printable or base64 (whichever is shorter), never 8bit (issue 21).
_SEVEN_BIT = email.policy.default.clone(cte_type="7bit")


class UnsendableJob(Exception):
    """A row no confirmation can be built for (a recipient an older version queued unchecked): the row
    fails, the worker goes on."""


def build_message(config: Config, job: OutboxJob, key: bytes) -> EmailMessage:
    """The confirmation, from our own text only (no byte of the report reaches it). The recipient is
    checked again here, not only by the policy: rows also come from older versions sharing the store."""
    if not is_plain_mailbox(job.recipient):
        raise UnsendableJob("recipient is not a plain address")
    sender = config.confirm.from_
    local, _, domain = sender.partition("@")
    reply_to = f"{local}+{make_reply_token(job.case_id, key)}@{domain}"
    subject, body = compose(config, job, key, reply_to)  # our words only, in the job's language (issue 21)
    message = EmailMessage(policy=_SEVEN_BIT)
    message["From"] = sender
    message["To"] = job.recipient
    message["Subject"] = subject  # RFC 2047-encoded by the policy when not ASCII
    message["Date"] = format_datetime(datetime.now(UTC))
    message_id = job.message_id or make_msgid(domain=domain)[1:-1]
    message["Message-ID"] = f"<{message_id}>"
    # A foreign Message-ID is copied only when plain and short: otherwise it is attacker text (issue 15).
    if job.in_reply_to and is_plain_message_id(job.in_reply_to):
        message["In-Reply-To"] = f"<{job.in_reply_to}>"
        message["References"] = f"<{job.in_reply_to}>"
    message["Reply-To"] = reply_to
    if job.kind != "reply":  # a desk reply is written by a person; everything else is automatic
        message["Auto-Submitted"] = "auto-generated" if job.kind == "state" else "auto-replied"  # RFC 3834 §5
    message["X-Auto-Response-Suppress"] = "All"  # Exchange: no out-of-office back to us
    message[LOOP_HEADER] = loop_signature(key, message_id)
    # ASCII goes out 7bit; anything else as UTF-8, quoted-printable or base64 (_SEVEN_BIT picks).
    message.set_content(body, charset="utf-8")
    return message


# ---- delivery --------------------------------------------------------------------------------------------


class TransientSendError(Exception):
    pass


class PermanentSendError(Exception):
    pass


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientSendError)


def backoff(attempts: int) -> timedelta:
    """Exponential with jitter: about 1, 2, 4 … minutes, capped at 2 hours between tries."""
    base = min(7200.0, 60.0 * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=base * random.uniform(0.75, 1.25))


class ConfirmWorker:
    def __init__(
        self, config: Config, store: Outbox, poll_seconds: float = 1.0, checker: Checker | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.poll_seconds = poll_seconds
        self.key = load_token_keys(config)[0]
        self.signer = Signer.from_config(config)  # None: no [dkim] selector (check-config warns)
        self.checker = checker or Checker(config)  # re-checks deferred senders (issue 22)
        self._wake = asyncio.Event()

    def outbound_bytes(self, message: EmailMessage) -> bytes:
        """THE signing point (issue 22): every mail the gateway sends is flattened and DKIM-signed here,
        once; these bytes go to the smarthost (or the .eml) and into the outbox row."""
        raw = message.as_bytes(policy=email.policy.SMTP)
        return self.signer.sign(raw) if self.signer is not None else raw

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                jobs = await asyncio.to_thread(self.store.claim_outbox)
            except Exception as exc:
                log.warning("outbox claim failed: error=%s", type(exc).__name__)
                jobs = []
            for job in jobs:
                await self.send_isolated(job)
            if not jobs:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as the wake
                # does, and the worker ran on with the gateway's stop awaiting it for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wake.wait()

    async def send_isolated(self, job: OutboxJob) -> str:
        """One job, whatever it holds: an error building or sending it fails that row (logged) and the
        worker goes on with the next (issue 15: one bad row used to stop confirmations for good)."""
        try:
            if job.state == "deferred":  # issue 22: the sender's authentication is checked again first
                outcome = await asyncio.to_thread(recheck, job, self.store, self.checker)
                if outcome != "send":
                    return outcome
            return await self.send(job)
        except Exception as exc:
            known = isinstance(exc, UnsendableJob | UnsignedMail)
            reason = str(exc) if known else f"internal error: {type(exc).__name__}"
            log.error(
                "confirmation failed: outbox_id=%d case_id=%s error=%s", job.outbox_id, job.case_id, reason
            )
            metrics.CONFIRM_JOB_ERRORS.inc()
            with contextlib.suppress(Exception):  # the store may be what failed; the lease then expires
                await asyncio.to_thread(self.store.finish_outbox, job.outbox_id, "failed", error=reason)
            return "failed"

    async def send(self, job: OutboxJob) -> str:
        message = build_message(self.config, job, self.key)
        # Flattened and signed once: these bytes go to the smarthost (or the .eml) and into the outbox row,
        # so what the desk shows is exactly what the reporter was sent (issue 17).
        raw = self.outbound_bytes(message)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                stop=stop_after_attempt(3),
                wait=wait_random_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            ):
                with attempt:
                    await self._deliver(raw, str(message["Message-ID"]), job.recipient)
        except PermanentSendError as exc:
            await asyncio.to_thread(
                self.store.finish_outbox, job.outbox_id, "failed", error=str(exc), raw=raw
            )
            log.warning(
                "confirmation failed: outbox_id=%d case_id=%s reply=%s",
                job.outbox_id,
                job.case_id,
                str(exc)[:3],
            )
            return "failed"
        except TransientSendError as exc:
            if datetime.now(UTC) - job.created_at > GIVE_UP_AFTER:
                await asyncio.to_thread(
                    self.store.finish_outbox,
                    job.outbox_id,
                    "failed",
                    error=f"gave up after 2 days: {exc}",
                    raw=raw,
                )
                return "failed"
            due = datetime.now(UTC) + backoff(job.attempts + 1)
            await asyncio.to_thread(
                self.store.finish_outbox,
                job.outbox_id,
                "retrying",
                error=str(exc),
                next_attempt_at=due,
                raw=raw,
            )
            log.info(
                "confirmation deferred: outbox_id=%d case_id=%s attempts=%d",
                job.outbox_id,
                job.case_id,
                job.attempts + 1,
            )
            return "retrying"
        await asyncio.to_thread(self.store.finish_outbox, job.outbox_id, "sent", raw=raw)
        log.info("confirmation sent: outbox_id=%d case_id=%s", job.outbox_id, job.case_id)
        return "sent"

    async def _deliver(self, raw: bytes, message_id: str, recipient: str) -> None:
        if self.signer is not None and not is_signed(raw):
            raise UnsignedMail("unsigned mail refused: build it with outbound_bytes")
        config = self.config.confirm
        if not config.smarthost:
            await asyncio.to_thread(self._write_eml, raw, message_id)
            return
        host, _, port = config.smarthost.rpartition(":")
        try:
            # Envelope sender = our From, not <>: RFC 3834 §3.3 prefers null, but a bounce of a confirmation
            # must reach us so `outbox list` can show it (issue 5); loops are stopped by our loop header.
            client = aiosmtplib.SMTP(
                hostname=host.strip("[]"),
                port=int(port),
                start_tls=config.starttls,
                username=config.smarthost_user,
                password=config.smarthost_password,
                timeout=30,
            )
            async with client:
                try:
                    await client.sendmail(config.from_, [recipient], raw)
                except asyncio.CancelledError:
                    # A stopping gateway hangs up at once. Left open, leaving the `async with` sends QUIT
                    # and waits for its reply up to the timeout: a smarthost that stalled mid-DATA held
                    # `serve`'s stop for 30 s. The row stays claimed; it is sent again when its lease ends.
                    client.close()
                    raise
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal is not None else 550
            text = f"{code} {refusal.message if refusal is not None else exc}"
            raise (PermanentSendError if 500 <= code < 600 else TransientSendError)(text) from exc
        except aiosmtplib.SMTPResponseException as exc:
            text = f"{exc.code} {exc.message}"
            raise (PermanentSendError if 500 <= exc.code < 600 else TransientSendError)(text) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(f"connection: {type(exc).__name__}") from exc

    def _write_eml(self, raw: bytes, message_id: str) -> None:
        directory = Path(self.config.confirm.outbox_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # confirmations name reporters
        name = message_id.strip("<>").replace("/", "_")
        target = directory / f"{name}.eml"
        tmp = directory / f".{name}.tmp"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(raw)
        os.replace(tmp, target)
