"""Retention and audit: legal holds, the purge (with its CSAM floor), and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, update
from sqlmodel import Session, select

from storage import csam, csam_views
from storage.desk_models import CaseNote
from storage.models import (
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
from storage.util import _now


@dataclass(slots=True)
class Retention:
    engine: Engine

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
        self,
        older_than: timedelta,
        actor: str,
        csam_minimum: timedelta = timedelta(days=365),
        dry_run: bool = False,
    ) -> list[str]:
        """Delete closed cases not on hold and untouched for `older_than`, raw bytes included. A CSAM case
        is kept at least `csam_minimum` from its creation whatever `older_than` says, and no case under
        preservation (`preserve_until`, issue 19) is removed at all. `dry_run`: name them, remove nothing."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            doomed = list(
                session.exec(
                    select(Case).where(
                        Case.status == "closed",
                        Case.hold.is_(False),
                        Case.updated_at < now - older_than,
                        or_(Case.csam.is_(False), Case.created_at < now - csam_minimum),
                        ~csam.preserved_now(now),  # issue 19
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
            # -- issue 19: a merge chain that reaches a preserved case keeps its root (and so the chain) --
            kept_roots = csam.roots_kept(session, doomed, now)
            if kept_roots:
                doomed = [c for c in doomed if c.id not in kept_roots]
            if dry_run or not doomed:
                return [c.case_id for c in doomed]
            # -- end issue 19 --
            case_pks = [c.id for c in doomed]
            message_pks = list(session.exec(select(Message.id).where(Message.case_pk.in_(case_pks))))
            inbox_ids = list(session.exec(select(Message.inbox_id).where(Message.case_pk.in_(case_pks))))
            sha256s = list(session.exec(select(Message.sha256).where(Message.case_pk.in_(case_pks))))
            sha256s = csam.unshared_digests(session, sha256s, case_pks)  # issue 19: never a survivor's bytes
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
            session.execute(delete(CaseNote).where(CaseNote.case_pk.in_(case_pks)))  # issue 20
            csam.forget_marks(session, case_pks)  # issue 19: only ever of cases whose preservation is over
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
            # issue 19: with case, message, attachment, reason
            return [csam_views.audit_row(r) for r in rows]
