"""The plain typed records that cross the storage boundary: what intake claims and prepares, what threading
is told and decides, what the outbox sender gets back. No SQL here: `gateway/` imports these freely."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from parsers.types import ContentHashes, Indicator, ParsedMessage


@dataclass(frozen=True, slots=True)
class ClaimedEntry:
    inbox_id: int
    raw: bytes
    mail_from: str | None  # None: not known (a file imported without envelope), unlike "" the null sender
    rcpt_tos: tuple[str, ...]
    received_at: datetime
    sha256: str
    attempts: int
    confirm: bool = True  # False: imported with `ingest --no-confirm`, no confirmation may go out
    client_addr: str | None = None  # the per-network confirmation cap counts by it
    helo: str | None = None  # what the client said in HELO/EHLO (SPF's HELO identity, issue 22)


# issue 22: when a deferred confirmation's sender is checked again after intake's check (~30 min in all);
# still undecided after the last, the confirmation is suppressed `unauthenticated` (never sent unchecked).
AUTH_RECHECK = (timedelta(minutes=2), timedelta(minutes=8), timedelta(minutes=20))


@dataclass(frozen=True, slots=True)
class Authentication:
    """SPF, DKIM and DMARC of one inbound message (issue 22), as the intake found them."""

    summary: str  # RFC 8601 style: `mx.example.org; spf=pass smtp.mailfrom=…; dkim=…; dmarc=…`
    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"
    # Does SPF, or a passing DKIM signature aligned with it, vouch for the envelope sender's domain?
    # pass | fail | temperror (a DNS failure: the confirmation waits and the check is made again)
    sender: str = "fail"
    source: str = "checked"  # checked | trusted:<authserv-id> (an upstream MTA's result was used)
    queries: int = 0  # DNS queries the checks made


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """One inbox entry after the pure stages; the store's input."""

    entry: ClaimedEntry
    parsed: ParsedMessage
    kind: str  # report | machine_report | automatic (threading may turn a report into an amendment)
    kind_rule: str
    escaped_subject: str
    escaped_text: str
    escaped_filenames: tuple[str | None, ...]
    indicators: tuple[tuple[Indicator, str | None], ...]  # (indicator, host)
    report: dict[str, Any] | None = None
    defects: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    group_key: str | None = None
    returned_message_ids: tuple[str, ...] = ()  # what a bounce says it returns
    embedded_texts: tuple[str, ...] = ()  # subject and opening text of attached messages
    evidence: tuple[dict[str, Any], ...] = ()  # forwarded messages, display form
    csam: bool = False  # a report of child sexual abuse material: the case is kept at least 365 days
    # sources of a possible-CSAM signal: terms:<lang>, hash_match:<label>:<alg>:<distance>
    csam_signals: tuple[str, ...] = ()
    content_hashes: ContentHashes | None = None  # digests of the attachments and what is inside (issue 19)
    authentication: Authentication | None = None  # issue 22; None: not checked (intake without checks)


@dataclass(frozen=True, slots=True)
class CaseInfo:
    case_id: str
    status: str
    reporter: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    recipient: str
    kind: str  # confirmation | acknowledgement
    suppressed_reason: str | None = None
    message_id: str | None = None  # ours, minted when queued so a reply can thread by header at once
    rate_mailbox: str | None = None  # what the caps count by (gateway/confirm.py)
    rate_domain: str | None = None
    client_net: str | None = None
    # Authentication could not be decided (DNS temporary failure): queued `deferred`, checked again later.
    deferred: bool = False
    language: str | None = None  # what the mail is written in (issue 21)
    language_is_default: bool = False  # the message gave no clue: a case's earlier language wins
    # Counts and digests only (issue 21): {"links": n, "attachments": [sha256, …]}; the store adds "messages".
    receipt: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeskMail:
    """A mail the desk wrote to one reporter (issue 21), queued as it is; the worker adds the headers."""

    recipient: str
    subject: str
    body: str
    language: str
    message_id: str
    in_reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxJob:
    """A claimed outbox row with what the sender needs to build the mail (and nothing of the report)."""

    outbox_id: int
    case_id: str
    kind: str
    recipient: str
    message_id: str | None
    in_reply_to: str | None
    attempts: int
    created_at: datetime
    state: str = "queued"  # deferred: its sender's authentication is to be checked again first
    message_pk: int | None = None
    language: str | None = None
    receipt: dict[str, Any] | None = None
    subject: str | None = None  # a desk reply or state notice: what the desk wrote (issue 21)
    body: str | None = None
    status_generation: int = 0  # the case's, for the status link the mail carries
    received_at: datetime | None = None  # when the case opened


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    case_id: str | None  # an existing case to join; None opens a new one
    signal: str = "none"
    ref: str | None = None  # the reference that matched, or the unknown one that did not
    flags: tuple[str, ...] = ()
    confirm: ConfirmRequest | None = None
    duplicate: bool = False  # the same bytes were stored before: keep the inbox entry, add no message
    bounced: tuple[str, ...] = ()  # Message-IDs of our confirmations this bounce returns
    reopen: bool = True  # may this message reopen a closed case (not when unverified or automatic)


class Lookup(Protocol):
    def case(self, case_id: str) -> CaseInfo | None: ...
    def case_for_message_ids(self, message_ids: Sequence[str]) -> str | None: ...
    def participants(self, case_id: str) -> set[str]: ...
    def confirmations_since(self, recipient: str, since: datetime) -> int: ...
    def confirmations_to_domain_since(self, domain: str, since: datetime) -> int: ...
    def confirmation_counts(
        self, mailbox: str, domain: str, network: str, since: datetime
    ) -> tuple[int, int, int]: ...
    def seen_message(self, message_id: str | None, sha256: str) -> tuple[str, bool] | None: ...
    def open_group_case(self, group_key: str, since: datetime) -> str | None: ...


Resolver = Callable[[PreparedMessage, Lookup], ThreadDecision]


@dataclass(frozen=True, slots=True)
class Committed:
    inbox_id: int
    case_id: str
    message_index: int
    opened: bool
    kind: str
    signal: str
    duplicate: bool = False
    received_at: datetime | None = None
