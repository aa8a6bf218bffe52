"""The desk's read model (list, show, export, raw bytes) and its one small write, a case's status."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy.orm import defer
from sqlmodel import Session, select

from storage import casenotes, csam_views
from storage import queue as case_queue
from storage.links import links_view
from storage.models import (
    AttachmentItemRow,
    AttachmentRow,
    Case,
    CaseEvent,
    InboxEntry,
    IndicatorRow,
    Message,
    OutboxRow,
)
from storage.outbox import _outbox_view
from storage.search import CaseFilter, find_cases, summary
from storage.util import _iso, _now, _scalar


@dataclass(slots=True)
class Desk:
    engine: Engine

    def list_cases(
        self,
        *,
        status: str | None = None,
        host_or_value: tuple[str, str | None] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        return find_cases(self.engine, CaseFilter(status=status, indicator=host_or_value), limit).rows

    def queue(self, **query: Any) -> case_queue.QueuePage:
        """The web desk's queue, keyset-paginated: keywords are the fields of `storage.queue.QueueQuery`
        (an unknown one is a TypeError, as for any call)."""
        return case_queue.queue(self.engine, case_queue.QueueQuery(**query))

    def assign(self, case_id: str, assignee: str | None, actor: str) -> str:
        return casenotes.assign(self.engine, case_id, assignee, actor)

    def add_note(self, case_id: str, author: str, body: str) -> str:
        return casenotes.add_note(self.engine, case_id, author, body)

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
                        "authentication": m.authentication,  # issue 22: SPF, DKIM, DMARC as intake found
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
                # Issue 21: what the reporter sees, and the desk's own mails as they were sent (our text).
                "reporter_state": case.reporter_state,
                "reporter_state_at": _iso(case.reporter_state_at),
                "desk_mail": {
                    str(row_id): bytes(raw).decode("utf-8", "replace")  # 7bit by construction
                    for row_id, raw in session.exec(
                        select(OutboxRow.id, OutboxRow.raw).where(
                            OutboxRow.case_pk == case.id,
                            OutboxRow.kind.in_(("reply", "state")),
                            OutboxRow.raw.is_not(None),
                        )
                    ).all()
                },
                "events": [{"at": _iso(at), "kind": k, "detail": d} for at, k, d in events],
                "notes": casenotes.notes_view(session, case.id),  # issue 20
            }
        )
        csam_views.decorate_case_view(session, case, view, [m.id or 0 for m in messages])  # issue 19
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

    def case_exists(self, case_id: str) -> bool:
        with Session(self.engine) as session:
            return session.exec(select(Case.id).where(Case.case_id == case_id.upper())).first() is not None
