"""Working a case (issue 20): who it is assigned to, and the desk's internal notes on it.

The CLI (`cases assign`, `cases note`) and the web desk call the same two functions, so both write the
same rows: the change itself, an event in the case's timeline, and an audit row naming who did it. A note
is stored exactly as written (up to `NOTE_MAX_BYTES`); whoever shows it escapes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from storage.desk_models import CaseNote, DeskUser
from storage.models import AuditEvent, Case, CaseEvent
from storage.util import _aware, _now

NOTE_MAX_BYTES = 64 * 1024


class DeskWorkError(Exception):
    """An assignment or note the store refuses; messages starting with "no " mean not found."""


def _case(session: Session, case_id: str) -> Case:
    case = session.execute(select(Case).where(Case.case_id == case_id.upper())).scalar_one_or_none()
    if case is None:
        raise DeskWorkError(f"no case {case_id.upper()}")
    return case


def _record(session: Session, case: Case, now: datetime, actor: str, kind: str, detail: str, target: str):
    session.add(CaseEvent(case_pk=case.id, at=now, kind=kind, detail=detail))
    session.add(AuditEvent(at=now, actor=actor[:64], action=kind, target=target, case_id=case.case_id))


def assign(engine: Engine, case_id: str, assignee: str | None, actor: str) -> str:
    """Assign the case to `assignee` (an enabled desk user) or to nobody (None); returns the case ID."""
    now = _now()
    with Session(engine) as session, session.begin():
        case = _case(session, case_id)
        if assignee is not None:
            user = session.execute(select(DeskUser).where(DeskUser.name == assignee)).scalar_one_or_none()
            if user is None:
                raise DeskWorkError(f"no user {assignee!r}")
            if user.disabled:
                raise DeskWorkError(f"user {assignee!r} is disabled")
        session.execute(update(Case).where(Case.id == case.id).values(assignee=assignee, updated_at=now))
        if assignee is None:
            _record(session, case, now, actor, "unassigned", f"by {actor}", case.case_id)
        else:
            _record(
                session,
                case,
                now,
                actor,
                "assigned",
                f"to {assignee} by {actor}",
                f"{case.case_id} to {assignee}",
            )
        return case.case_id


def add_note(engine: Engine, case_id: str, author: str, body: str) -> str:
    """An internal note by `author`; returns the case ID. Empty and oversized notes are refused."""
    if not body.strip():
        raise DeskWorkError("the note is empty")
    if len(body.encode("utf-8")) > NOTE_MAX_BYTES:
        raise DeskWorkError(f"the note is longer than {NOTE_MAX_BYTES // 1024} KiB")
    now = _now()
    with Session(engine) as session, session.begin():
        case = _case(session, case_id)
        session.add(CaseNote(case_pk=case.id, author=author[:64], body=body, created_at=now))
        session.execute(update(Case).where(Case.id == case.id).values(updated_at=now))
        _record(session, case, now, author, "note", f"by {author}", case.case_id)
        return case.case_id


def notes_view(session: Session, case_pk: int | None) -> list[dict[str, Any]]:
    rows = session.execute(
        select(CaseNote.author, CaseNote.body, CaseNote.created_at)
        .where(CaseNote.case_pk == case_pk)
        .order_by(CaseNote.id)
    ).all()
    return [{"author": a, "body": b, "created_at": _iso(c)} for a, b, c in rows]


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value is not None else None
