"""What the desk tells reporters (issue 21): replies and state notices queued in the outbox, the
reporter-facing state, and the facts the status page may show.

Replies go through the outbox like confirmations, so they share its worker, retries, bounce tracking and the
stored bytes. The recipients are envelope senders the case already trusts (the first message's, and those of
verified messages: `_SessionLookup.participants`), never a `From:` header. What the status page reads is
limited here, at the query: counts, dates and the state, never a subject, text or address to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from storage.links import follow_merges
from storage.lookups import _SessionLookup
from storage.models import AuditEvent, Case, CaseEvent, Message, OutboxRow
from storage.records import DeskMail
from storage.util import _aware, _now

REPORTER_STATES = ("received", "in_review", "action_taken", "closed")


def _recipients(session: Session, case: Case) -> tuple[str | None, list[str]]:
    """The reporter (envelope sender of message 1) and the other verified participants."""
    first = session.exec(
        select(Message.envelope_sender).where(Message.case_pk == case.id).order_by(Message.index).limit(1)
    ).first()
    reporter = first.strip().lower() if first else None
    others = _SessionLookup(session).participants(case.case_id) - {reporter or ""}
    return reporter, sorted(others)


@dataclass(slots=True)
class Reporters:
    engine: Engine

    def reply_context(self, case_id: str) -> dict[str, Any] | None:
        """Everything a desk mail to a case's reporters is built from: counts, dates, state, recipients,
        and per recipient our last Message-ID (to answer) and the language we last wrote in."""
        with Session(self.engine) as session:
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None:
                return None
            reporter, others = _recipients(session, case)
            count = session.exec(select(func.count(Message.id)).where(Message.case_pk == case.id)).one()
            last: dict[str, str] = {}
            languages: dict[str, str] = {}
            for recipient, message_id, language in session.exec(
                select(OutboxRow.recipient, OutboxRow.message_id, OutboxRow.language)
                .where(OutboxRow.case_pk == case.id, OutboxRow.state != "suppressed")
                .order_by(OutboxRow.id)
            ).all():
                if message_id:
                    last[recipient] = message_id
                if language:
                    languages[recipient] = language
            return {
                "case_id": case.case_id,
                "csam": bool(case.csam or case.possible_csam),
                "created_at": _aware(case.created_at),
                "messages": int(count),
                "reporter_state": case.reporter_state,
                "reporter_state_at": _aware(case.reporter_state_at) or _aware(case.created_at),
                "status_generation": case.status_generation,
                "reporter": reporter,
                "participants": others,
                "last_message_id": last,
                "languages": languages,
            }

    def queue_desk_mail(self, case_id: str, kind: str, mails: Sequence[DeskMail], actor: str) -> list[int]:
        """Queue desk-written mails (one row each) with a case event and an audit row, in one transaction."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None or not mails:
                return []
            rows = [
                OutboxRow(
                    case_pk=case.id or 0,
                    kind=kind,
                    recipient=mail.recipient.lower(),
                    state="queued",
                    created_at=now,
                    next_attempt_at=now,
                    message_id=mail.message_id,
                    in_reply_to=mail.in_reply_to,
                    subject=mail.subject,
                    body=mail.body,
                    language=mail.language,
                )
                for mail in mails
            ]
            session.add_all(rows)
            session.flush()
            ids = [row.id or 0 for row in rows]
            listed = ", ".join(f"#{i}" for i in ids)
            session.add(CaseEvent(case_pk=case.id, at=now, kind=kind, detail=f"by {actor}: outbox {listed}"))
            session.add(AuditEvent(at=now, actor=actor, action=f"sent_{kind}", target=case.case_id))
            return ids

    def set_reporter_state(self, case_id: str, state: str, actor: str) -> datetime | None:
        """Set what the reporter sees (audited); the time it was set, or None for no such case."""
        if state not in REPORTER_STATES:
            raise ValueError(f"unknown reporter state {state!r}")
        now = _now()
        with Session(self.engine) as session, session.begin():
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None:
                return None
            before = case.reporter_state
            case.reporter_state, case.reporter_state_at = state, now
            session.add(case)
            detail = f"by {actor}: {before} -> {state}"
            session.add(CaseEvent(case_pk=case.id, at=now, kind="reporter_state", detail=detail))
            session.add(
                AuditEvent(at=now, actor=actor, action="reporter_state", target=f"{case.case_id} {state}")
            )
            return now

    def revoke_status_links(self, case_id: str, actor: str) -> int | None:
        """Every status link given out for the case stops working (audited); the new generation."""
        with Session(self.engine) as session, session.begin():
            case = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if case is None:
                return None
            case.status_generation += 1
            session.add(case)
            session.add(CaseEvent(case_pk=case.id, kind="status_links_revoked", detail=f"by {actor}"))
            session.add(AuditEvent(actor=actor, action="revoke_status_links", target=case.case_id))
            return case.status_generation

    def status_view(self, case_id: str) -> dict[str, Any] | None:
        """The status page's facts, and the addresses a token may have been minted for (to verify its
        MAC, never to show). A link to a case merged since shows the case that holds its messages now; it
        is verified against the case it names (its generation, its reporters)."""
        with Session(self.engine) as session:
            named = session.exec(select(Case).where(Case.case_id == case_id.upper())).first()
            if named is None:
                return None
            case = session.get(Case, follow_merges(session, named.id or 0)) or named
            # A merged case's messages (and so its reporters, now participants) are in the target.
            reporter, others = _recipients(session, case)
            count = session.exec(select(func.count(Message.id)).where(Message.case_pk == case.id)).one()
            language = session.exec(
                select(OutboxRow.language)
                .where(OutboxRow.case_pk == case.id, OutboxRow.language.is_not(None))
                .order_by(OutboxRow.id)
                .limit(1)
            ).first()
            return {
                "case_id": case.case_id,
                "language": language,
                "received_at": _aware(case.created_at),
                "messages": int(count),
                "state": case.reporter_state,
                "state_at": _aware(case.reporter_state_at or case.created_at),
                "generation": named.status_generation,
                "recipients": [r for r in [reporter, *others] if r],
            }
