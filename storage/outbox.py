"""The outbox: confirmations claimed for sending, their outcomes and bounces, and the desk's view of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, update
from sqlalchemy.orm import defer
from sqlmodel import Session, select

from storage.claims import new_worker_id
from storage.models import Case, InboxEntry, Message, OutboxRow
from storage.records import OutboxJob
from storage.util import _aware, _iso, _now


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
        "language": row.language,
    }


@dataclass(slots=True)
class Outbox:
    engine: Engine
    worker_id: str = field(default_factory=new_worker_id)  # claims are matched by it

    def claim_outbox(self, limit: int = 20, lease: float = 120.0) -> list[OutboxJob]:
        """Claim due rows for sending. The conditional UPDATE is the claim (SKIP LOCKED on PostgreSQL), so
        no row is sent by two workers; a worker that dies mid-send leaves a lease that expires."""
        now = _now()
        due = and_(
            OutboxRow.state.in_(("queued", "retrying", "sending", "deferred")),
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
                    # a deferred row stays deferred while claimed: if its worker dies, the next one
                    # checks its sender again instead of sending unchecked (issue 22)
                    state=case((OutboxRow.state == "deferred", "deferred"), else_="sending"),
                    claimed_by=self.worker_id,
                    claimed_until=now + timedelta(seconds=lease),
                )
            )
            rows = session.exec(
                select(OutboxRow, Case, Message.message_id)
                .join(Case, Case.id == OutboxRow.case_pk)
                .join(Message, Message.id == OutboxRow.message_pk, isouter=True)
                .where(OutboxRow.id.in_(ids), OutboxRow.claimed_by == self.worker_id)
                .order_by(OutboxRow.id)
            ).all()
            return [
                OutboxJob(
                    row.id,
                    case_row.case_id,
                    row.kind,
                    row.recipient,
                    row.message_id,
                    row.in_reply_to or report_mid,
                    row.attempts,
                    _aware(row.created_at) or now,
                    row.state,
                    row.message_pk,
                    language=row.language,
                    receipt=row.receipt,
                    subject=row.subject,
                    body=row.body,
                    status_generation=case_row.status_generation,
                    received_at=_aware(case_row.created_at),
                )
                for row, case_row, report_mid in rows
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

    def auth_inputs(
        self, outbox_id: int
    ) -> tuple[bytes, str | None, str | None, str | None, str | None] | None:
        """What a deferred row's sender is checked again with (issue 22): the report's raw bytes, envelope
        sender, client address, HELO and From: address."""
        with Session(self.engine) as session:
            found = session.exec(
                select(
                    InboxEntry.raw,
                    InboxEntry.mail_from,
                    InboxEntry.client_addr,
                    InboxEntry.helo,
                    Message.from_addr,
                )
                .join(Message, Message.inbox_id == InboxEntry.id)
                .join(OutboxRow, OutboxRow.message_pk == Message.id)
                .where(OutboxRow.id == outbox_id)
            ).first()
            return None if found is None else (found[0], found[1], found[2], found[3], found[4])

    def settle_deferred(
        self,
        outbox_id: int,
        state: str,
        *,
        authentication: str | None,
        reason: str | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """A deferred row's sender checked again: `queued` (authenticated, sent next), `deferred` again,
        or `suppressed` with `reason`; the message shows the latest result."""
        with Session(self.engine) as session, session.begin():
            row = session.get(OutboxRow, outbox_id)
            if row is None:
                return
            values: dict[str, Any] = {
                "state": state,
                "suppressed_reason": reason,
                "last_error": error[:500] if error else None,
                "next_attempt_at": next_attempt_at if state != "queued" else _now(),
                "attempts": 0 if state == "queued" else OutboxRow.attempts + 1,
            }
            if state != "queued":
                values |= {"claimed_by": None, "claimed_until": None}
            session.execute(update(OutboxRow).where(OutboxRow.id == outbox_id).values(**values))
            if authentication is not None and row.message_pk is not None:
                session.execute(
                    update(Message).where(Message.id == row.message_pk).values(authentication=authentication)
                )

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

    def outbox_counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(OutboxRow.state, func.count(OutboxRow.id)).group_by(OutboxRow.state)
            ).all()
            return {state: int(n) for state, n in rows}
