"""Reprocess: stored messages parsed again by a newer release, their derived fields refreshed in place."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, update
from sqlmodel import Session, select

from storage.intake_commit import IntakeCommit, _BatchRows
from storage.models import AttachmentRow, Case, InboxEntry, Message
from storage.records import ClaimedEntry, PreparedMessage
from storage.util import _aware, _now


@dataclass(slots=True)
class Reprocess:
    engine: Engine
    # Attachments are written as on first intake.
    _add_attachments = staticmethod(IntakeCommit._add_attachments)

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

    @staticmethod
    def _mark_done(session: Session, inbox_id: int, state: str) -> None:
        session.execute(
            update(InboxEntry)
            .where(InboxEntry.id == inbox_id)
            .values(state=state, processed_at=_now(), claimed_until=None, last_error=None)
        )
