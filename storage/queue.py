"""The desk's queue (issue 20): cases newest first, filtered, one page at a time, as fast deep as on top.

Why keyset pagination: an OFFSET makes the database walk and discard every earlier row, so page 2,000 of
a million-message store costs 2,000 pages. Here a page is "the next `limit` cases before this one" in
(created_at, id) order: one range read on `ix_cases_created_id` (or `ix_cases_status_created`,
`ix_cases_assignee_created` when filtered), the same cost on every page. `id` breaks ties between cases
opened in the same microsecond, so no case is skipped or shown twice across pages.

The cursor is opaque to callers (base64 of the last row's instant and key); a tampered one is refused
(`QueueError`), never interpreted. `since`/`until` bound when the case was opened (`created_at`, the
queue's order), unlike `cases list --since`, which reads last activity.

Rows carry the stored escaped subject and the reporter as stored: what a role may see of them is the
caller's rule (a support user sees neither; a CSAM case's subject is content).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, String, cast, func, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from storage.models import Case, Message
from storage.search import CASE_STATUSES, MESSAGE_KINDS, CaseFilter, _conditions, _utc
from storage.util import _aware

QUEUE_FLAGS = ("csam", "possible_csam", "unverified_sender", "processing_failed")
MAX_LIMIT = 500


class QueueError(ValueError):
    """A filter or cursor the queue refuses (unknown status, kind or flag, a cursor it did not make)."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    case_id: str
    status: str
    kind: str  # of the case's first message
    flags: tuple[str, ...]  # those of QUEUE_FLAGS the case has, in that order
    messages: int
    reporter: str | None
    subject: str  # the stored escaped subject
    created_at: datetime
    updated_at: datetime
    assignee: str | None
    hold: bool
    cursor: str  # pass as `before` to get the rows after this one


@dataclass(frozen=True, slots=True)
class QueuePage:
    rows: list[QueueRow]
    has_more: bool
    next_cursor: str | None  # the last row's cursor when `has_more`


def encode_cursor(created_at: datetime, pk: int) -> str:
    stamp = _utc(created_at).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return base64.urlsafe_b64encode(f"{stamp}|{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        stamp, pk = raw.split("|")
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC), int(pk)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise QueueError("not a queue cursor") from exc


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """What one page of the queue asks for: the filters, the cursor (`before`, the `next_cursor` of the
    page above) and the page size. The one list of the queue's parameters: `Desk.queue` takes them as
    keywords."""

    status: str | None = None
    kind: str | None = None
    flag: str | None = None
    assignee: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None
    limit: int = 50
    unassigned: bool = False


def _where(engine: Engine, query: QueueQuery) -> list[ColumnElement[bool]]:
    status, kind, flag = query.status, query.kind, query.flag
    if status is not None and status not in CASE_STATUSES:
        raise QueueError(f"status {status!r} is not one of {', '.join(CASE_STATUSES)}")
    if kind is not None and kind not in MESSAGE_KINDS:
        raise QueueError(f"kind {kind!r} is not one of {', '.join(MESSAGE_KINDS)}")
    if flag is not None and flag not in QUEUE_FLAGS:
        raise QueueError(f"flag {flag!r} is not one of {', '.join(QUEUE_FLAGS)}")
    # Status and flag mean exactly what they mean for `cases list` (one definition, storage/search.py).
    where = _conditions(engine, CaseFilter(status=status, flag=flag))
    if kind is not None:
        where.append(Case.kind == kind)
    if query.unassigned:
        where.append(Case.assignee.is_(None))
    elif query.assignee is not None:
        where.append(Case.assignee == query.assignee)
    if query.since is not None:
        where.append(Case.created_at >= _utc(query.since))
    if query.until is not None:
        where.append(Case.created_at <= _utc(query.until))
    if query.before is not None:
        at, pk = decode_cursor(query.before)
        where.append(tuple_(Case.created_at, Case.id) < tuple_(at, pk))
    return where


def _message_facts(session: Session, case_pks: Sequence[int]) -> dict[int, tuple[int, set[str]]]:
    """Per case of the page: how many messages, and which message-level queue flags any of them has."""
    facts: dict[int, tuple[int, set[str]]] = {pk: (0, set()) for pk in case_pks}
    if not case_pks:
        return facts
    rows = session.execute(
        select(Message.case_pk, func.count(Message.id))
        .where(Message.case_pk.in_(case_pks))
        .group_by(Message.case_pk)
    ).all()
    for pk, count in rows:
        facts[int(pk)] = (int(count), set())
    flagged = session.execute(
        select(Message.case_pk, Message.flags).where(
            Message.case_pk.in_(case_pks), cast(Message.flags, String) != "[]"
        )
    ).all()
    for pk, flags in flagged:
        for value in flags or ():
            name = str(value).split(":", 1)[0]
            if name in QUEUE_FLAGS:
                facts[int(pk)][1].add(name)
    return facts


def queue(engine: Engine, query: QueueQuery) -> QueuePage:
    """One page of the queue, newest first."""
    limit = max(1, min(int(query.limit), MAX_LIMIT))
    where = _where(engine, query)
    rows_query = (
        select(
            Case.id,
            Case.case_id,
            Case.status,
            Case.kind,
            Case.csam,
            Case.possible_csam,
            Case.reporter,
            Case.escaped_subject,
            Case.created_at,
            Case.updated_at,
            Case.assignee,
            Case.hold,
        )
        .where(*where)
        .order_by(Case.created_at.desc(), Case.id.desc())
        .limit(limit + 1)
    )
    with Session(engine) as session:
        found = session.execute(rows_query).all()
        has_more = len(found) > limit
        found = found[:limit]
        facts = _message_facts(session, [int(r.id) for r in found])
    rows = []
    for r in found:
        count, message_flags = facts.get(int(r.id), (0, set()))
        present = set(message_flags)
        if r.csam:
            present.add("csam")
        if r.possible_csam:
            present.add("possible_csam")
        created = _aware(r.created_at) or datetime.min.replace(tzinfo=UTC)
        rows.append(
            QueueRow(
                case_id=r.case_id,
                status=r.status,
                kind=r.kind,
                flags=tuple(f for f in QUEUE_FLAGS if f in present),
                messages=count,
                reporter=r.reporter,
                subject=r.escaped_subject,
                created_at=created,
                updated_at=_aware(r.updated_at) or created,
                assignee=r.assignee,
                hold=bool(r.hold),
                cursor=encode_cursor(created, int(r.id)),
            )
        )
    return QueuePage(rows, has_more, rows[-1].cursor if has_more and rows else None)
