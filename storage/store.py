"""The CaseStore API: everything the gateway and the CLI ask of the store.

Processing is split so SQL stays here and decisions stay in `gateway/`: the gateway prepares each inbox
entry without the store (parse, classify, escape), then `commit_processed` opens one transaction, asks the
gateway's `Resolver` where each message belongs through a `Lookup` bound to that transaction (so a reply in
the same batch as its report finds the case just opened), writes case, message, attachments, indicators and
the confirmation row, and marks the inbox entry done.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, and_, func, insert, or_, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, select

from parsers.content_hashes import ContentHashes
from parsers.types import Attachment, Indicator, ParsedMessage
from storage.casework import follow_merges, link_same_reporter, links_view
from storage.models import (
    AttachmentItemRow,
    AttachmentRow,
    AuditEvent,
    Case,
    CaseEvent,
    CaseLink,
    CaseMove,
    InboxEntry,
    IndicatorRow,
    Message,
    OutboxRow,
)
from storage.search import CaseFilter, find_cases, summary


def _worker_id() -> str:
    """Unique per process, across hosts: claims are matched by it, so two workers must never share one.
    Minted when a Store is built, not at import: `ingest`'s intake children are forked from the CLI, and an
    id minted at import was inherited by both, so each selected the other's claims too and every entry was
    prepared (and logged `stored:`) twice, the second time as a duplicate (issue 16.4)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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


_MAX_LOOKUP_IDS = 500
# The advisory lock key that serialises confirmation-cap decisions across gateways (any constant; "ABUC").
_QUOTA_LOCK = 0x41425543


class _SessionLookup:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._quota_locked = False
        # Earlier messages by ("mid", Message-ID) or ("sha", sha256 of a message without one), filled for a
        # whole batch by `prefetch_seen` and kept current by `remember`; keys not in it are asked one by one.
        self._seen: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def prefetch_seen(self, keys: Sequence[tuple[str | None, str]]) -> None:
        """The redelivery check for a whole batch in two queries instead of one per message."""
        message_ids = sorted({mid for mid, _ in keys if mid})
        digests = sorted({sha for mid, sha in keys if not mid})
        seen: dict[tuple[str, str], list[tuple[str, str]]] = {("mid", m): [] for m in message_ids}
        seen.update({("sha", d): [] for d in digests})
        base = select(Message.message_id, Message.sha256, Case.case_id).join(Case, Message.case_pk == Case.id)
        if message_ids:
            for mid, digest, case_id in self.session.exec(
                base.where(Message.message_id.in_(message_ids)).order_by(Message.id)
            ).all():
                seen[("mid", mid)].append((case_id, digest))
        if digests:
            for _mid, digest, case_id in self.session.exec(
                base.where(Message.sha256.in_(digests), Message.message_id.is_(None)).order_by(Message.id)
            ).all():
                seen[("sha", digest)].append((case_id, digest))
        self._seen = seen

    def remember(self, message_id: str | None, sha256: str, case_id: str) -> None:
        """A message just stored in this transaction, so a copy later in the same batch finds it."""
        rows = self._seen.get(("mid", message_id) if message_id else ("sha", sha256))
        if rows is not None:
            rows.append((case_id, sha256))

    def case(self, case_id: str) -> CaseInfo | None:
        """The case that holds what `case_id` names: a case the desk merged answers for its target."""
        case = self.session.exec(select(Case).where(Case.case_id == case_id)).first()
        if case is None:
            return None
        if case.merged_into_pk is not None:
            case = self.session.get(Case, follow_merges(self.session, case.id or 0)) or case
        return CaseInfo(case.case_id, case.status, case.reporter, case.kind)

    def case_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        if not message_ids:
            return None
        # Bounded whatever the caller passes: SQLite allows 32,766 bound variables per statement.
        ids = list(dict.fromkeys(message_ids))[:_MAX_LOOKUP_IDS]
        found = self.session.exec(
            select(Case.case_id)
            .join(Message, Message.case_pk == Case.id)
            .where(Message.message_id.in_(ids))
            .order_by(Message.id)
            .limit(1)
        ).first()
        if found is None:
            found = self.session.exec(
                select(Case.case_id)
                .join(OutboxRow, OutboxRow.case_pk == Case.id)
                .where(OutboxRow.message_id.in_(ids))
                .limit(1)
            ).first()
        return _scalar(found)

    def participants(self, case_id: str) -> set[str]:
        """Envelope senders of the case's first message and of its verified messages (issue 15): never a
        `From:` header (anyone can write one), never the sender of an automatic or unverified message, so
        a stranger cannot become a participant by replying to a stranger."""
        rows = self.session.exec(
            select(Message.envelope_sender, Message.kind, Message.flags, Message.index)
            .join(Case, Message.case_pk == Case.id)
            .where(Case.case_id == case_id, Message.envelope_sender != "")
        ).all()
        people: set[str] = set()
        for sender, kind, flags, index in rows:
            if index == 1 or (kind != "automatic" and "unverified_sender" not in (flags or ())):
                people.add(sender.strip().lower())
        return people

    def confirmations_since(self, recipient: str, since: datetime) -> int:
        return int(
            self.session.exec(
                select(func.count(OutboxRow.id)).where(
                    OutboxRow.recipient == recipient.lower(),
                    OutboxRow.created_at >= since,
                    OutboxRow.state != "suppressed",
                )
            ).one()
        )

    def confirmations_to_domain_since(self, domain: str, since: datetime) -> int:
        return int(
            self.session.exec(
                select(func.count(OutboxRow.id)).where(
                    OutboxRow.recipient.like(f"%@{domain.lower()}"),
                    OutboxRow.created_at >= since,
                    OutboxRow.state != "suppressed",
                )
            ).one()
        )

    def confirmation_counts(
        self, mailbox: str, domain: str, network: str, since: datetime
    ) -> tuple[int, int, int]:
        """Confirmations (not suppressed) since `since`: to this mailbox, to this registrable domain for
        mail from this client network, and for mail from this network at all.

        Atomic across gateways: on PostgreSQL a transaction-scoped advisory lock (one key, so no lock-order
        deadlock) is taken first and held until the transaction that queues the row commits, so a second
        gateway counts after the first's row is visible (READ COMMITTED takes a snapshot per statement).
        Before it, two gateways with cap 5 sent 8 (issue 15). SQLite has one writer at a time already."""
        if self.session.get_bind().dialect.name == "postgresql" and not self._quota_locked:
            self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _QUOTA_LOCK})
            self._quota_locked = True
        sent = and_(OutboxRow.created_at >= since, OutboxRow.state != "suppressed")

        def count(*where: Any) -> int:
            return int(self.session.exec(select(func.count(OutboxRow.id)).where(sent, *where)).one())

        return (
            count(OutboxRow.rate_mailbox == mailbox),
            count(OutboxRow.rate_domain == domain, OutboxRow.client_net == network),
            count(OutboxRow.client_net == network),
        )

    def seen_message(self, message_id: str | None, sha256: str) -> tuple[str, bool] | None:
        """An earlier message with this Message-ID (or, without one, these bytes): (case_id, same bytes)."""
        rows = self._seen.get(("mid", message_id) if message_id else ("sha", sha256))
        if rows is None:
            query = select(Case.case_id, Message.sha256).join(Case, Message.case_pk == Case.id)
            if message_id:
                query = query.where(Message.message_id == message_id)
            else:
                query = query.where(Message.sha256 == sha256, Message.message_id.is_(None))
            rows = [(case_id, digest) for case_id, digest in self.session.exec(query.order_by(Message.id))]
        if not rows:
            return None
        for case_id, digest in rows:
            if digest == sha256:
                return case_id, True
        return rows[0][0], False

    def open_group_case(self, group_key: str, since: datetime) -> str | None:
        found = self.session.exec(
            select(Case.case_id)
            .where(Case.group_key == group_key, Case.status == "open", Case.updated_at >= since)
            .order_by(Case.id.desc())
            .limit(1)
        ).first()
        return _scalar(found)


def _outbox_view(row: OutboxRow, case_id: str, size: int | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "case_id": case_id,
        "kind": row.kind,
        "recipient": row.recipient,
        "state": row.state,
        "suppressed_reason": row.suppressed_reason,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "message_id": row.message_id,
        "created_at": _iso(row.created_at),
        "next_attempt_at": _iso(row.next_attempt_at),
        "sent_at": _iso(row.sent_at),
        "bytes": size,
    }


def _scalar(row: Any) -> Any:
    """sqlmodel returns scalars for one-column selects; keep call sites indifferent to that."""
    if row is not None and (isinstance(row, tuple) or hasattr(row, "_mapping")):
        return row[0]
    return row


_INSERT_MESSAGE = insert(Message.__table__).returning(Message.__table__.c.id)
_INSERT_CASE = insert(Case.__table__).returning(Case.__table__.c.id)


def _confirm_flags(decision: ThreadDecision) -> list[str]:
    if decision.confirm is not None and decision.confirm.suppressed_reason:
        return [f"confirmation_suppressed:{decision.confirm.suppressed_reason}"]
    return []


# "Has a lease", written as a range: SQLite's planner (without ANALYZE) uses the claimed_until index for
# `> epoch` but scans the table for `IS NOT NULL`.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns; they are UTC by construction."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value is not None else None


@dataclass(slots=True)
class _BatchRows:
    """Indicator rows of a whole batch, inserted with one statement at its end. Which (kind, value) each
    case already has is asked once per case and batch, then kept here as rows are added."""

    indicators: list[dict[str, Any]] = field(default_factory=list)
    known: dict[int, set[tuple[str, str]]] = field(default_factory=dict)

    def add_indicators(
        self,
        session: Session,
        case_pk: int,
        indicators: Sequence[tuple[Indicator, str | None]],
        new_case: bool,
    ) -> None:
        if not indicators:
            return
        known = self.known.get(case_pk)
        if known is None:
            known = self.known[case_pk] = set() if new_case else _case_indicators(session, case_pk)
        for indicator, host in indicators:
            key = (indicator.kind, indicator.value)
            if key not in known:
                known.add(key)
                self.indicators.append(
                    {
                        "case_pk": case_pk,
                        "kind": indicator.kind,
                        "value": indicator.value,
                        "host": host,
                        "host_rev": host[::-1] if host else None,
                    }
                )

    def insert(self, session: Session) -> None:
        if self.indicators:
            session.execute(insert(IndicatorRow.__table__), self.indicators)


def _case_indicators(session: Session, case_pk: int | None) -> set[tuple[str, str]]:
    rows = session.exec(
        select(IndicatorRow.kind, IndicatorRow.value).where(IndicatorRow.case_pk == case_pk)
    ).all()
    return {(kind, value) for kind, value in rows}


@dataclass(slots=True)
class CaseStore:
    engine: Engine
    new_case_id: Callable[[], str]
    worker_id: str = field(default_factory=_worker_id)
    # A new report from a reporter with open cases opened this recently is linked to them (issue 16).
    related_window: timedelta = field(default=timedelta(days=14))

    # ---- intake: claim, commit, fail -------------------------------------------------------------------

    def claim_inbox(
        self, limit: int = 64, lease: float = 60.0, max_bytes: int = 1 << 20
    ) -> list[ClaimedEntry]:
        """Claim pending entries for this worker. The conditional UPDATE is the claim, so two workers (or
        two gateways on one PostgreSQL, where SKIP LOCKED keeps them off each other's rows) never process
        the same entry at once; a worker that dies leaves a lease that expires. At most `max_bytes` of raw
        messages (but always one), so a run of large messages is not all parsed before the first is
        stored, and a second worker can take the next ones."""
        now = _now()
        claimable = and_(
            InboxEntry.state == "pending",
            or_(InboxEntry.claimed_until.is_(None), InboxEntry.claimed_until < now),
        )
        with Session(self.engine) as session, session.begin():
            query = (
                select(InboxEntry.id, InboxEntry.size).where(claimable).order_by(InboxEntry.id).limit(limit)
            )
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids: list[int] = []
            total = 0
            for inbox_id, size in session.exec(query).all():
                total += size or 0
                if ids and total > max_bytes:
                    break
                ids.append(inbox_id)
            if not ids:
                return []
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id.in_(ids), claimable)
                .values(
                    claimed_by=self.worker_id,
                    claimed_until=now + timedelta(seconds=lease),
                    attempts=InboxEntry.attempts + 1,
                )
            )
            rows = session.exec(
                select(
                    InboxEntry.id,
                    InboxEntry.raw,
                    InboxEntry.mail_from,
                    InboxEntry.rcpt_tos,
                    InboxEntry.received_at,
                    InboxEntry.sha256,
                    InboxEntry.attempts,
                    InboxEntry.confirm,
                    InboxEntry.client_addr,
                )
                .where(InboxEntry.id.in_(ids), InboxEntry.claimed_by == self.worker_id)
                .order_by(InboxEntry.id)
            ).all()
        return [
            ClaimedEntry(
                r[0], r[1], r[2], tuple(r[3] or ()), _aware(r[4]) or now, r[5], r[6], bool(r[7]), r[8]
            )
            for r in rows
        ]

    def release_dead_claims(self, is_alive: Callable[[int], bool]) -> int:
        """At start: hand back claims held by processes of this host that no longer run (a SIGKILL, an OOM
        kill), instead of waiting for their leases to run out. Claims of other hosts are left to expire."""
        host = f"{socket.gethostname()}:"
        released = 0
        with Session(self.engine) as session, session.begin():
            for table in (InboxEntry, OutboxRow):
                holders = session.exec(
                    select(table.claimed_by)
                    .where(table.claimed_by.like(f"{host}%"), table.claimed_until > _EPOCH)
                    .distinct()
                ).all()
                for holder in holders:
                    pid = holder.split(":")[1] if holder.count(":") >= 2 else ""
                    if holder == self.worker_id or not pid.isdigit() or is_alive(int(pid)):
                        continue
                    result = session.execute(
                        update(table)
                        .where(table.claimed_by == holder, table.claimed_until > _EPOCH)
                        .values(claimed_until=None, claimed_by=None)
                    )
                    released += int(result.rowcount or 0)
        return released

    def release_failed(self, inbox_id: int, error: str) -> None:
        """Processing raised: note why and let the entry be claimed again."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id == inbox_id)
                .values(last_error=error[:500], claimed_until=None, claimed_by=None)
            )

    def inbox_stats(self) -> tuple[int, datetime | None]:
        """How many entries wait, and since when the oldest has."""
        with Session(self.engine) as session:
            depth, oldest = session.exec(
                select(func.count(InboxEntry.id), func.min(InboxEntry.received_at)).where(
                    InboxEntry.state == "pending"
                )
            ).one()
            return int(depth), _aware(oldest)

    def outbox_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(OutboxRow.state, func.count(OutboxRow.id)).group_by(OutboxRow.state)
            ).all()
            return {state: int(n) for state, n in rows}

    def inbox_depth(self) -> int:
        with Session(self.engine) as session:
            return int(
                session.exec(select(func.count(InboxEntry.id)).where(InboxEntry.state == "pending")).one()
            )

    def commit_processed(self, prepared: Sequence[PreparedMessage], resolve: Resolver) -> list[Committed]:
        """Store a batch of processed messages in one transaction (threading decided inside it)."""
        results: list[Committed] = []
        finished: dict[str, list[int]] = {}
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            lookup = _SessionLookup(session)
            # Processed before (a crash after commit, a second worker): idempotent, one query per batch.
            prior = {
                row[0]: row[1:]
                for row in session.exec(
                    select(Message.inbox_id, Case.case_id, Message.index, Message.kind, Message.thread_signal)
                    .join(Case, Message.case_pk == Case.id)
                    .where(Message.inbox_id.in_([p.entry.inbox_id for p in prepared]))
                ).all()
            }
            lookup.prefetch_seen(
                [(p.parsed.message_id, p.entry.sha256) for p in prepared if p.entry.inbox_id not in prior]
            )
            batch = _BatchRows()
            for item in prepared:
                inbox_id = item.entry.inbox_id
                if inbox_id in prior:
                    case_id, index, kind, signal = prior[inbox_id]
                    results.append(Committed(inbox_id, case_id, index, False, kind, signal))
                    finished.setdefault("done", []).append(inbox_id)
                    continue
                committed, state = self._store_one(session, item, resolve(item, lookup), batch)
                if not committed.duplicate:
                    lookup.remember(item.parsed.message_id, item.entry.sha256, committed.case_id)
                results.append(committed)
                finished.setdefault(state, []).append(inbox_id)
            batch.insert(session)
            now = _now()
            for state, inbox_ids in finished.items():
                session.execute(
                    update(InboxEntry)
                    .where(InboxEntry.id.in_(inbox_ids))
                    .values(state=state, processed_at=now, claimed_until=None, last_error=None)
                )
        return results

    def _store_one(
        self, session: Session, item: PreparedMessage, decision: ThreadDecision, batch: _BatchRows
    ) -> tuple[Committed, str]:
        """Write one message (and its case, when it opens one); returns what happened and the inbox state.

        Core statements on the tables, not ORM objects: this runs for every message on intake, and the
        unit of work (identity map, a flush per object) cost more than the parsing.
        """
        entry = item.entry
        if decision.duplicate and decision.case_id is not None:
            duplicate = Committed(
                entry.inbox_id, decision.case_id, 0, False, item.kind, decision.signal, True
            )
            return duplicate, "duplicate"
        now = _now()
        cases = Case.__table__
        existing = None
        if decision.case_id is not None:
            existing = session.execute(
                select(cases.c.id, cases.c.status, cases.c.merged_into_pk).where(
                    cases.c.case_id == decision.case_id
                )
            ).first()
            if existing is not None and existing[2] is not None:
                # Named a case the desk merged: the message joins the case that now holds its messages.
                existing = session.execute(
                    select(cases.c.id, cases.c.status, cases.c.case_id).where(
                        cases.c.id == follow_merges(session, existing[0])
                    )
                ).first()
                assert existing is not None
                decision = dataclasses.replace(decision, case_id=existing[2])
        opened = existing is None
        if existing is None:
            case_id = self.new_case_id()
            case_pk = self._open_case(session, item, case_id, now)
            index, kind = 1, item.kind
            if item.kind == "report":
                link_same_reporter(session, case_pk, self._reporter(item), self.related_window, now)
        else:
            case_id, (case_pk, status) = str(decision.case_id), existing[:2]
            kind = "amendment" if item.kind == "report" else item.kind
            values: dict[str, Any] = {"updated_at": now}
            if status == "closed" and decision.reopen:
                values["status"] = "open"
                session.execute(
                    insert(CaseEvent.__table__).values(
                        case_pk=case_pk, at=now, kind="reopened", detail=f"by inbox entry {entry.inbox_id}"
                    )
                )
            if item.csam:
                values["csam"] = True
            session.execute(update(cases).where(cases.c.id == case_pk).values(**values))
            messages = Message.__table__
            index = 1 + int(
                session.execute(
                    select(func.coalesce(func.max(messages.c.index), 0)).where(messages.c.case_pk == case_pk)
                ).scalar_one()
            )
        parsed = item.parsed
        # Values go as execution parameters, not .values(): the compiled statement is then cached instead
        # of rebuilt (bind objects, cache key) for every message.
        message_pk = session.execute(
            _INSERT_MESSAGE,
            dict(
                case_pk=case_pk,
                index=index,
                inbox_id=entry.inbox_id,
                kind=kind,
                kind_rule=item.kind_rule,
                envelope_sender=entry.mail_from,
                from_addr=parsed.from_addr,
                subject=parsed.subject,
                escaped_subject=item.escaped_subject,
                received_at=entry.received_at,
                message_id=parsed.message_id,
                in_reply_to=list(parsed.in_reply_to),
                references=list(parsed.references),
                sha256=entry.sha256,
                thread_signal=decision.signal,
                thread_ref=decision.ref,
                text=parsed.text,
                escaped_text=item.escaped_text,
                defects=list(item.defects),
                flags=list(dict.fromkeys([*item.flags, *decision.flags, *_confirm_flags(decision)])),
                report=item.report,
                evidence=list(item.evidence) or None,
            ),
        ).scalar_one()
        self._add_attachments(
            session, message_pk, parsed.attachments, item.escaped_filenames, item.content_hashes
        )
        batch.add_indicators(session, case_pk, item.indicators, new_case=opened)
        if decision.confirm is not None:
            suppressed = decision.confirm.suppressed_reason
            session.execute(
                insert(OutboxRow.__table__),
                dict(
                    case_pk=case_pk,
                    message_pk=message_pk,
                    kind=decision.confirm.kind,
                    recipient=decision.confirm.recipient.lower(),
                    state="suppressed" if suppressed else "queued",
                    suppressed_reason=suppressed,
                    attempts=0,
                    created_at=now,
                    next_attempt_at=None if suppressed else now,
                    message_id=decision.confirm.message_id,
                    rate_mailbox=decision.confirm.rate_mailbox,
                    rate_domain=decision.confirm.rate_domain,
                    client_net=decision.confirm.client_net,
                ),
            )
        if decision.bounced:
            session.execute(
                update(OutboxRow.__table__)
                .where(OutboxRow.__table__.c.message_id.in_(list(decision.bounced)))
                .values(state="bounced", last_error=f"bounce received: case {case_id} message {index}")
            )
        state = "failed" if "processing_failed" in item.flags else "done"
        committed = Committed(
            entry.inbox_id, case_id, index, opened, kind, decision.signal, received_at=entry.received_at
        )
        return committed, state

    @staticmethod
    def _reporter(item: PreparedMessage) -> str | None:
        reporter = item.parsed.from_addr or item.entry.mail_from or None
        return reporter.lower() if reporter else None

    @classmethod
    def _open_case(cls, session: Session, item: PreparedMessage, case_id: str, now: datetime) -> int:
        """Insert the case and return its key. The ID is random (35 bits): a collision is rare enough that
        the unique constraint is the check; if it fires, the batch is retried entry by entry, minting anew."""
        reporter = cls._reporter(item)
        return int(
            session.execute(
                _INSERT_CASE,
                dict(
                    case_id=case_id,
                    status="open",
                    reporter=reporter,
                    subject=item.parsed.subject,
                    escaped_subject=item.escaped_subject,
                    kind=item.kind,
                    group_key=item.group_key,
                    hold=False,
                    csam=item.csam,
                    created_at=now,
                    updated_at=now,
                ),
            ).scalar_one()
        )

    @staticmethod
    def _add_attachments(
        session: Session,
        message_pk: int | None,
        attachments: Sequence[Attachment],
        escaped: Sequence[str | None],
        hashes: ContentHashes | None = None,
    ) -> None:
        if not attachments:
            return
        digests = {h.sha256: h for h in hashes.attachments} if hashes is not None else {}
        rows = []
        for position, attachment in enumerate(attachments):
            digest = digests.get(attachment.sha256)
            rows.append(
                {
                    "message_pk": message_pk,
                    "filename": attachment.filename,
                    "escaped_filename": escaped[position] if position < len(escaped) else attachment.filename,
                    "content_type": attachment.content_type,
                    "size": attachment.size,
                    "sha256": attachment.sha256,
                    "md5": digest.md5 if digest else None,
                    "sha1": digest.sha1 if digest else None,
                    "pdq": digest.pdq if digest else None,
                }
            )
        if hashes is None or not hashes.nested:
            session.execute(insert(AttachmentRow.__table__), rows)
            return
        ids = session.execute(
            insert(AttachmentRow.__table__).returning(
                AttachmentRow.__table__.c.id, sort_by_parameter_order=True
            ),
            rows,
        ).scalars().all()
        first_pk: dict[str, int] = {}
        for row, pk in zip(rows, ids, strict=True):
            first_pk.setdefault(row["sha256"], pk)
        items = [
            {
                "attachment_pk": first_pk[n.parent_sha256],
                "path": n.path,
                "size": n.hashes.size,
                "sha256": n.hashes.sha256,
                "md5": n.hashes.md5,
                "sha1": n.hashes.sha1,
                "pdq": n.hashes.pdq,
            }
            for n in hashes.nested
            if n.parent_sha256 in first_pk
        ]
        if items:
            session.execute(insert(AttachmentItemRow.__table__), items)

    @staticmethod
    def _mark_done(session: Session, inbox_id: int, state: str) -> None:
        session.execute(
            update(InboxEntry)
            .where(InboxEntry.id == inbox_id)
            .values(state=state, processed_at=_now(), claimed_until=None, last_error=None)
        )

    # ---- reprocess -------------------------------------------------------------------------------------

    def messages_for_reprocess(
        self, *, failed_only: bool, case_id: str | None
    ) -> list[tuple[int, ClaimedEntry]]:
        query = (
            select(Message.id, InboxEntry)
            .join(InboxEntry, InboxEntry.id == Message.inbox_id)
            .join(Case, Case.id == Message.case_pk)
            .order_by(Message.id)
        )
        if failed_only:
            query = query.where(InboxEntry.state == "failed")
        if case_id is not None:
            query = query.where(Case.case_id == case_id)
        with Session(self.engine) as session:
            rows = session.exec(query).all()
            return [
                (
                    mid,
                    ClaimedEntry(
                        e.id,
                        e.raw,
                        e.mail_from,
                        tuple(e.rcpt_tos or ()),
                        _aware(e.received_at) or _now(),
                        e.sha256,
                        e.attempts,
                    ),
                )
                for mid, e in rows
            ]

    def update_reprocessed(self, message_pk: int, item: PreparedMessage) -> None:
        """Refresh a message's derived fields in place; its case (and index) stay what they were."""
        with Session(self.engine) as session, session.begin():
            message = session.get(Message, message_pk)
            if message is None:
                return
            parsed = item.parsed
            kind = item.kind
            if message.kind == "amendment" and kind == "report":
                kind = "amendment"
            message.kind, message.kind_rule = kind, item.kind_rule
            message.from_addr, message.subject = parsed.from_addr, parsed.subject
            message.escaped_subject, message.text, message.escaped_text = (
                item.escaped_subject,
                parsed.text,
                item.escaped_text,
            )
            message.message_id = parsed.message_id
            message.in_reply_to, message.references = list(parsed.in_reply_to), list(parsed.references)
            message.defects = list(item.defects)
            message.flags = [
                f for f in dict.fromkeys([*message.flags, *item.flags]) if f != "processing_failed"
            ]
            message.report = item.report
            message.evidence = list(item.evidence) or None
            session.add(message)
            for old in session.exec(
                select(AttachmentRow).where(AttachmentRow.message_pk == message_pk)
            ).all():
                session.delete(old)
            self._add_attachments(
                session, message_pk, parsed.attachments, item.escaped_filenames, item.content_hashes
            )
            rows = _BatchRows()
            rows.add_indicators(session, message.case_pk, item.indicators, new_case=False)
            rows.insert(session)
            self._mark_done(session, message.inbox_id, "done")

    # ---- the desk's views ------------------------------------------------------------------------------

    def list_cases(
        self,
        *,
        status: str | None = None,
        host_or_value: tuple[str, str | None] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        return find_cases(self.engine, CaseFilter(status=status, indicator=host_or_value), limit).rows

    def show_case(self, case_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None:
                return None
            return self._case_view(session, case)

    def _case_view(self, session: Session, case: Case) -> dict[str, Any]:
        messages = list(
            session.exec(select(Message).where(Message.case_pk == case.id).order_by(Message.index))
        )
        attachments: dict[int, list[dict[str, Any]]] = {}
        if messages:
            rows = session.exec(
                select(AttachmentRow).where(AttachmentRow.message_pk.in_([m.id for m in messages]))
            ).all()
            inside: dict[int, list[dict[str, Any]]] = {}
            if rows:
                for item in session.exec(
                    select(AttachmentItemRow)
                    .where(AttachmentItemRow.attachment_pk.in_([att.id for att in rows]))
                    .order_by(AttachmentItemRow.id)
                ).all():
                    inside.setdefault(item.attachment_pk, []).append(
                        {k: getattr(item, k) for k in ("path", "size", "sha256", "md5", "sha1", "pdq")}
                    )
            for att in rows:
                attachments.setdefault(att.message_pk, []).append(
                    {
                        "filename": att.escaped_filename,
                        "content_type": att.content_type,
                        "size": att.size,
                        "sha256": att.sha256,
                        "md5": att.md5,
                        "sha1": att.sha1,
                        "pdq": att.pdq,
                        "contents": inside.get(att.id or 0, []),  # ZIP members, parts of attached messages
                    }
                )
        envelopes = {
            inbox_id: (size, client_addr, list(rcpts or []))
            for inbox_id, size, client_addr, rcpts in session.exec(
                select(InboxEntry.id, InboxEntry.size, InboxEntry.client_addr, InboxEntry.rcpt_tos).where(
                    InboxEntry.id.in_([m.inbox_id for m in messages])
                )
            ).all()
        }
        indicators = session.exec(
            select(IndicatorRow.kind, IndicatorRow.value)
            .where(IndicatorRow.case_pk == case.id)
            .order_by(IndicatorRow.id)
        ).all()
        events = session.exec(
            select(CaseEvent.at, CaseEvent.kind, CaseEvent.detail)
            .where(CaseEvent.case_pk == case.id)
            .order_by(CaseEvent.id)
        ).all()
        flags = sorted({f for m in messages for f in m.flags})
        view = summary(case, len(messages))
        view.pop("subject")
        view.update(
            {
                "subject": case.escaped_subject,
                "flags": flags,
                "messages": [
                    {
                        "index": m.index,
                        "kind": m.kind,
                        "kind_rule": m.kind_rule,
                        "sender": m.envelope_sender,
                        "from": m.from_addr,
                        "subject": m.escaped_subject,
                        "received_at": _iso(m.received_at),
                        "message_id": m.message_id,
                        "sha256": m.sha256,
                        "size": envelopes.get(m.inbox_id, (None,))[0],
                        "client_addr": envelopes.get(m.inbox_id, (None, None))[1],
                        "recipients": envelopes.get(m.inbox_id, (None, None, []))[2],
                        "thread_signal": m.thread_signal,
                        "thread_ref": m.thread_ref,
                        "text": m.escaped_text,
                        "attachments": attachments.get(m.id or 0, []),
                        "defects": list(m.defects),
                        "flags": list(m.flags),
                        **({"report": m.report} if m.report is not None else {}),
                        **({"evidence": m.evidence} if m.evidence else {}),
                    }
                    for m in messages
                ],
                "indicators": [{"kind": k, "value": v} for k, v in indicators],
                **links_view(session, case),
                "outbox": [
                    _outbox_view(row, case.case_id, size)
                    for row, size in session.exec(
                        select(OutboxRow, func.length(OutboxRow.raw))
                        .options(defer(OutboxRow.raw))
                        .where(OutboxRow.case_pk == case.id)
                        .order_by(OutboxRow.id)
                    ).all()
                ],
                "events": [{"at": _iso(at), "kind": k, "detail": d} for at, k, d in events],
            }
        )
        return view

    def export_cases(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        query = select(Case).order_by(Case.id)
        if since is not None:
            # UTC first: SQLite compares the stored text, which has no offset (issue 17).
            query = query.where(Case.updated_at >= since.astimezone(UTC))
        with Session(self.engine) as session:
            for case in session.exec(query).all():
                yield self._case_view(session, case)

    def raw_message(self, case_id: str, index: int) -> bytes | None:
        with Session(self.engine) as session:
            found = session.exec(
                select(InboxEntry.raw)
                .join(Message, Message.inbox_id == InboxEntry.id)
                .join(Case, Case.id == Message.case_pk)
                .where(Case.case_id == case_id.upper(), Message.index == index)
            ).first()
            return _scalar(found)

    def set_status(self, case_id: str, status: str, detail: str) -> bool:
        with Session(self.engine) as session, session.begin():
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None:
                return False
            case.status = status
            case.updated_at = _now()
            session.add(case)
            session.add(CaseEvent(case_pk=case.id, kind=status, detail=detail))
        return True

    def case_ids_for_inbox(self, inbox_ids: Sequence[int]) -> dict[int, str]:
        if not inbox_ids:
            return {}
        found: dict[int, str] = {}
        with Session(self.engine) as session:
            ids = list(inbox_ids)
            for start in range(0, len(ids), 500):
                rows = session.exec(
                    select(Message.inbox_id, Case.case_id)
                    .join(Case, Case.id == Message.case_pk)
                    .where(Message.inbox_id.in_(ids[start : start + 500]))
                ).all()
                found.update({int(i): c for i, c in rows})
            missing = [i for i in ids if i not in found]
            for inbox_id in missing:  # a redelivered duplicate: name the case its first copy joined
                entry = session.get(InboxEntry, inbox_id)
                if entry is not None and entry.state == "duplicate":
                    row = session.exec(
                        select(Case.case_id)
                        .join(Message, Message.case_pk == Case.id)
                        .where(Message.sha256 == entry.sha256)
                        .order_by(Message.id)
                    ).first()
                    if row is not None:
                        found[inbox_id] = _scalar(row)
        return found

    # ---- outbox ----------------------------------------------------------------------------------------

    def claim_outbox(self, limit: int = 20, lease: float = 120.0) -> list[OutboxJob]:
        """Claim due rows for sending. The conditional UPDATE is the claim (SKIP LOCKED on PostgreSQL), so
        no row is sent by two workers; a worker that dies mid-send leaves a lease that expires."""
        now = _now()
        due = and_(
            OutboxRow.state.in_(("queued", "retrying", "sending")),
            OutboxRow.next_attempt_at <= now,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
        )
        with Session(self.engine) as session, session.begin():
            query = select(OutboxRow.id).where(due).order_by(OutboxRow.id).limit(limit)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.exec(query).all())
            if not ids:
                return []
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids), due)
                .values(
                    state="sending", claimed_by=self.worker_id, claimed_until=now + timedelta(seconds=lease)
                )
            )
            rows = session.exec(
                select(OutboxRow, Case.case_id, Message.message_id)
                .join(Case, Case.id == OutboxRow.case_pk)
                .join(Message, Message.id == OutboxRow.message_pk, isouter=True)
                .where(OutboxRow.id.in_(ids), OutboxRow.claimed_by == self.worker_id)
                .order_by(OutboxRow.id)
            ).all()
            return [
                OutboxJob(
                    row.id,
                    case_id,
                    row.kind,
                    row.recipient,
                    row.message_id,
                    report_mid,
                    row.attempts,
                    _aware(row.created_at) or now,
                )
                for row, case_id, report_mid in rows
            ]

    def finish_outbox(
        self,
        outbox_id: int,
        state: str,
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        raw: bytes | None = None,
    ) -> None:
        """Record an attempt's outcome and, when given, the exact bytes that attempt sent."""
        values: dict[str, Any] = {
            "state": state,
            "last_error": error[:500] if error else None,
            "claimed_until": None,
            "claimed_by": None,
            "attempts": OutboxRow.attempts + 1,
            "next_attempt_at": next_attempt_at,
        }
        if state == "sent":
            values["sent_at"] = _now()
        if raw is not None:
            values["raw"] = raw
        with Session(self.engine) as session, session.begin():
            session.execute(update(OutboxRow).where(OutboxRow.id == outbox_id).values(**values))

    def mark_bounced(self, message_ids: Sequence[str], detail: str) -> int:
        """A DSN for one of our confirmations came back: record it on the row."""
        if not message_ids:
            return 0
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(OutboxRow)
                .where(OutboxRow.message_id.in_(list(message_ids)))
                .values(state="bounced", last_error=detail[:500])
            )
            return int(result.rowcount or 0)

    def list_outbox(self, limit: int = 500, case_id: str | None = None) -> list[dict[str, Any]]:
        query = (
            select(OutboxRow, Case.case_id, func.length(OutboxRow.raw))
            .join(Case, Case.id == OutboxRow.case_pk)
            .options(defer(OutboxRow.raw))
            .order_by(OutboxRow.id.desc())
            .limit(limit)
        )
        if case_id is not None:
            query = query.where(Case.case_id == case_id.upper())
        with Session(self.engine) as session:
            return [_outbox_view(row, cid, size) for row, cid, size in session.exec(query).all()]

    def outbox_message(self, outbox_id: int) -> tuple[dict[str, Any], bytes | None] | None:
        """One outbox row and the exact bytes it sent (None: not sent yet, or suppressed)."""
        with Session(self.engine) as session:
            found = session.exec(
                select(OutboxRow, Case.case_id)
                .join(Case, Case.id == OutboxRow.case_pk)
                .where(OutboxRow.id == outbox_id)
            ).first()
            if found is None:
                return None
            row, case_id = found
            return _outbox_view(row, case_id, len(row.raw) if row.raw else None), row.raw

    # ---- retention and audit -----------------------------------------------------------------------------

    def set_hold(self, case_id: str, hold: bool, actor: str) -> bool:
        with Session(self.engine) as session, session.begin():
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None:
                return False
            case.hold = hold
            session.add(case)
            session.add(CaseEvent(case_pk=case.id, kind="hold" if hold else "released", detail=f"by {actor}"))
            session.add(AuditEvent(actor=actor, action="hold" if hold else "release", target=case.case_id))
        return True

    def purge(
        self, older_than: timedelta, actor: str, csam_minimum: timedelta = timedelta(days=365)
    ) -> list[str]:
        """Delete closed cases not on hold and untouched for `older_than`, raw bytes included. A CSAM case
        is kept at least `csam_minimum` from its creation whatever `older_than` says."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            doomed = list(
                session.exec(
                    select(Case).where(
                        Case.status == "closed",
                        Case.hold.is_(False),
                        Case.updated_at < now - older_than,
                        or_(Case.csam.is_(False), Case.created_at < now - csam_minimum),
                    )
                )
            )
            if not doomed:
                return []
            # Cases merged into a doomed case hold no messages of their own any more; they go with it, so
            # no row is left pointing at a case that no longer exists.
            frontier = [c.id for c in doomed]
            while frontier:
                merged = list(session.exec(select(Case).where(Case.merged_into_pk.in_(frontier))))
                merged = [m for m in merged if m not in doomed]
                doomed += merged
                frontier = [m.id for m in merged]
            case_pks = [c.id for c in doomed]
            message_pks = list(session.exec(select(Message.id).where(Message.case_pk.in_(case_pks))))
            inbox_ids = list(session.exec(select(Message.inbox_id).where(Message.case_pk.in_(case_pks))))
            sha256s = list(session.exec(select(Message.sha256).where(Message.case_pk.in_(case_pks))))
            from sqlalchemy import delete

            session.execute(delete(AttachmentRow).where(AttachmentRow.message_pk.in_(message_pks)))
            session.execute(delete(OutboxRow).where(OutboxRow.case_pk.in_(case_pks)))
            session.execute(delete(Message).where(Message.case_pk.in_(case_pks)))
            # Redelivered copies (state duplicate) carry the same bytes; they go with the case.
            session.execute(
                delete(InboxEntry).where(
                    or_(
                        InboxEntry.id.in_(inbox_ids),
                        and_(InboxEntry.state == "duplicate", InboxEntry.sha256.in_(sha256s)),
                    )
                )
            )
            session.execute(delete(IndicatorRow).where(IndicatorRow.case_pk.in_(case_pks)))
            session.execute(delete(CaseEvent).where(CaseEvent.case_pk.in_(case_pks)))
            session.execute(
                delete(CaseLink).where(or_(CaseLink.case_pk.in_(case_pks), CaseLink.other_pk.in_(case_pks)))
            )
            session.execute(
                delete(CaseMove).where(
                    or_(CaseMove.source_pk.in_(case_pks), CaseMove.target_pk.in_(case_pks))
                )
            )
            session.execute(update(Case).where(Case.id.in_(case_pks)).values(merged_into_pk=None))
            session.execute(delete(Case).where(Case.id.in_(case_pks)))
            removed = [c.case_id for c in doomed]
            session.add(AuditEvent(actor=actor, action="purge", target=",".join(removed)[:10_000]))
        return removed

    def audit(self, actor: str, action: str, target: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(AuditEvent(actor=actor, action=action, target=target))

    def list_audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.exec(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
            return [
                {"at": _iso(r.at), "actor": r.actor, "action": r.action, "target": r.target} for r in rows
            ]

    def case_exists(self, case_id: str) -> bool:
        with Session(self.engine) as session:
            return session.exec(select(Case.id).where(Case.case_id == case_id.upper())).first() is not None


def is_integrity_error(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError)
