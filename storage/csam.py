"""The CSAM compartment's records: marks and signals, and the preservation they place (views: csam_views).

Why a module (issue 19): a provider that learns of child sexual abuse material must preserve the report for a
year (18 U.S.C. §2258A(h)), limit access, and be able to say truthfully whether a person viewed each file
(US v. Wilson, 9th Cir. 2021). Those three duties share one set of rows and one set of rules, kept here:

- A mark is a row in `csam_marks`, never deleted; clearing one records who cleared it and why. `csam` is a
  verdict (the desk's `cases csam`, a machine report that says so); `possible_csam` is a signal (term list,
  hash list) the desk confirms or clears.
- `cases.preserve_until` is derived, never set by hand: the latest `preserve_until` of the case's marks that
  still preserve — every `csam` row (cleared or not: a confirmed mark's year cannot be shortened) and every
  `possible_csam` row not cleared. `purge` removes nothing before it.
- Merges and splits carry marks with the messages: the receiving case gets copies of the rows that still
  preserve (`carried:` in the reason), so no move shortens a preservation.
- A view of a marked case's content is an `audit_events` row with action `viewed`, naming the operator, the
  case, the message (by key, which survives merges), the attachment and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.orm import Session, object_session

from storage.models import AuditEvent, Case, CaseEvent, CsamMark, Message
from storage.util import _aware, _now

CSAM, POSSIBLE = "csam", "possible_csam"
DEFAULT_PRESERVE = timedelta(days=365)
# Attachment keys that are digests of the bytes (shown by `cases show --metadata`); whichever the store has.
class CsamError(Exception):
    """A request the compartment refuses (no such case, nothing to clear); the message says why."""


def _preserves(mark: CsamMark | Any) -> bool:
    return mark.kind == CSAM or mark.cleared_at is None


def recompute(session: Session, case_pk: int) -> datetime | None:
    """Set the case's flags and `preserve_until` from its marks, and return the preservation's end."""
    marks = list(session.execute(select(CsamMark).where(CsamMark.case_pk == case_pk)).scalars())
    ends = [_aware(m.preserve_until) for m in marks if _preserves(m)]
    until = max((e for e in ends if e is not None), default=None)
    active = [m for m in marks if m.cleared_at is None]
    session.execute(
        update(Case)
        .where(Case.id == case_pk)
        .values(
            csam=any(m.kind == CSAM for m in active),
            possible_csam=any(m.kind == POSSIBLE for m in active),
            preserve_until=until,
        )
    )
    return until


def record_intake_marks(
    session: Session,
    case_pk: int,
    *,
    csam: bool,
    signals: Sequence[str],
    at: datetime,
    preserve: timedelta = DEFAULT_PRESERVE,
) -> None:
    """The intake's marks for one message, in its transaction: a machine report that says CSAM is a `csam`
    mark (source `machine_report`); every other signal is `possible_csam` with its source, never a verdict."""
    rows = [{"kind": CSAM, "source": "machine_report"}] if csam else []
    rows += [{"kind": POSSIBLE, "source": source} for source in dict.fromkeys(signals)]
    if not rows:
        return
    session.execute(
        insert(CsamMark.__table__),
        [{**row, "case_pk": case_pk, "at": at, "preserve_until": at + preserve} for row in rows],
    )
    recompute(session, case_pk)


def _case(session: Session, case_id: str) -> Case:
    from storage.casework import follow_merges

    case = session.execute(select(Case).where(Case.case_id == case_id.upper())).scalar_one_or_none()
    if case is None:
        raise CsamError(f"no case {case_id.upper()}")
    if case.merged_into_pk is not None:  # the evidence is in the case it was merged into: mark that one
        case = session.get(Case, follow_merges(session, case.id or 0)) or case
    return case


@dataclass(frozen=True, slots=True)
class MarkResult:
    case_id: str
    preserve_until: datetime | None
    cleared: int = 0  # how many marks a --clear cleared


def mark(
    engine: Engine, case_id: str, actor: str, reason: str, preserve: timedelta, kind: str = CSAM
) -> MarkResult:
    """The desk confirms: a `csam` mark by `actor` with `reason`, preserving the case `preserve` from now.
    `kind=POSSIBLE` is a person raising the signal instead (a verdict is for the csam role, issue 20)."""
    if kind not in (CSAM, POSSIBLE):
        raise CsamError(f"no mark kind {kind!r}")
    now = _now()
    with Session(engine) as session, session.begin():
        case = _case(session, case_id)
        assert case.id is not None
        session.add(
            CsamMark(
                case_pk=case.id,
                kind=kind,
                source="desk",
                at=now,
                actor=actor,
                reason=reason,
                preserve_until=now + preserve,
            )
        )
        session.flush()
        until = recompute(session, case.id)
        event, action = ("csam_marked", "csam_mark")
        if kind == POSSIBLE:
            event, action = "possible_csam_marked", "possible_csam_mark"
        _record(session, case, now, actor, reason, event, action)
        return MarkResult(case.case_id, until)


def _record(
    session: Session, case: Case, now: datetime, actor: str, reason: str, event: str, action: str
) -> None:
    """A desk decision on a case's marks: in its history (who) and in the audit trail (who and why)."""
    session.add(CaseEvent(case_pk=case.id, at=now, kind=event, detail=f"by {actor}"))
    session.add(
        AuditEvent(
            at=now, actor=actor, action=action, target=case.case_id, case_id=case.case_id, reason=reason
        )
    )


def clear_marks(engine: Engine, case_id: str, actor: str, reason: str) -> MarkResult:
    """The desk clears every mark and signal on the case. A cleared signal no longer preserves the case; a
    cleared `csam` mark still does until its year is out (recorded, not shortened)."""
    now = _now()
    with Session(engine) as session, session.begin():
        case = _case(session, case_id)
        assert case.id is not None
        result = session.execute(
            update(CsamMark)
            .where(CsamMark.case_pk == case.id, CsamMark.cleared_at.is_(None))
            .values(cleared_at=now, cleared_by=actor, clear_reason=reason)
        )
        cleared = int(result.rowcount or 0)
        if not cleared:
            raise CsamError(f"{case.case_id} has no CSAM mark or signal to clear")
        until = recompute(session, case.id)
        _record(session, case, now, actor, reason, "csam_cleared", "csam_clear")
        return MarkResult(case.case_id, until, cleared)


def carry_preservation(case: Case, holder: Case) -> None:
    """`holder` receives messages of `case` (merge, split, undo of either): it gets copies of the marks of
    `case` that still preserve, so the move shortens nothing. Both must be attached to one session."""
    session = object_session(holder) or object_session(case)
    if session is None or case.id is None or holder.id is None:
        return
    session.flush()
    marks = [m for m in session.execute(select(CsamMark).where(CsamMark.case_pk == case.id)).scalars()]
    # An undo (unsplit, a second merge) hands back marks the holder already has a copy of: not again.
    have = {
        (m.kind, m.source, _aware(m.at), _aware(m.preserve_until))
        for m in session.execute(select(CsamMark).where(CsamMark.case_pk == holder.id)).scalars()
    }
    marks = [m for m in marks if (m.kind, m.source, _aware(m.at), _aware(m.preserve_until)) not in have]
    copies = [
        {
            "case_pk": holder.id,
            "kind": m.kind,
            "source": m.source,
            "at": m.at,
            "actor": m.actor,
            "reason": f"carried from {case.case_id}" + (f": {m.reason}" if m.reason else ""),
            "preserve_until": m.preserve_until,
            "cleared_at": m.cleared_at,
            "cleared_by": m.cleared_by,
            "clear_reason": m.clear_reason,
        }
        for m in marks
        if _preserves(m)
    ]
    if copies:
        session.execute(insert(CsamMark.__table__), copies)
    ends = [e for e in (_aware(holder.preserve_until), _aware(case.preserve_until)) if e is not None]
    holder.preserve_until = max(ends) if ends else None
    holder.possible_csam = bool(holder.possible_csam or case.possible_csam)
    holder.csam = bool(holder.csam or case.csam)


def preserved_now(now: datetime) -> Any:
    """The condition for "no purge may remove this case now": legal hold, or a preservation not yet over."""
    return or_(Case.hold.is_(True), and_(Case.preserve_until.is_not(None), Case.preserve_until >= now))


def purge_survivors(
    engine: Engine, older_than: timedelta, now: datetime | None = None
) -> list[tuple[str, str]]:
    """Cases old enough for `purge --older-than` that it keeps anyway, each with why (for `--dry-run`)."""
    now = now or _now()
    with Session(engine) as session:
        rows = session.execute(
            select(Case).where(Case.updated_at < now - older_than, Case.status != "merged").order_by(Case.id)
        ).scalars()
        kept: list[tuple[str, str]] = []
        for case in rows:
            reasons = list(_survival_reasons(case, now))
            if reasons:
                kept.append((case.case_id, "; ".join(reasons)))
        return kept


def _survival_reasons(case: Case, now: datetime) -> Iterable[str]:
    if case.status != "closed":
        yield f"status {case.status} (only closed cases are purged)"
    if case.hold:
        yield "legal hold (`cases release` ends it)"
    until = _aware(case.preserve_until)
    if until is not None and until >= now:
        what = (
            "CSAM mark"
            if case.csam
            else "possible-CSAM signal"
            if case.possible_csam
            else "CSAM preservation"
        )
        yield f"{what}: preserved until {until.isoformat()}"


def roots_kept(session: Session, doomed: Sequence[Case], now: datetime) -> set[int]:
    """Of the cases a purge would remove (closed roots and the cases merged into them), the keys it must keep:
    every member of a merge chain in which any case is on hold or under preservation. A merge carries marks
    forward, but a mark placed on a merged case later must still hold its chain."""
    by_pk = {c.id: c for c in doomed}

    def root(case: Case) -> int:
        seen: set[int | None] = set()
        while case.merged_into_pk in by_pk and case.id not in seen:
            seen.add(case.id)
            case = by_pk[case.merged_into_pk]
        return int(case.id or 0)

    def preserved(case: Case) -> bool:
        until = _aware(case.preserve_until)
        return bool(case.hold) or (until is not None and until >= now)

    held_roots = {root(c) for c in doomed if preserved(c)}
    return {int(c.id or 0) for c in doomed if root(c) in held_roots}


def unshared_digests(session: Session, digests: Sequence[str], case_pks: Sequence[int | None]) -> list[str]:
    """The digests no message outside `case_pks` has: the redelivered copies purge removes with a case must
    never be the bytes of a case that stays. Asked in chunks (SQLite binds at most 32,766 values)."""
    leaving = set(case_pks)
    wanted = list(dict.fromkeys(digests))
    shared: set[str] = set()
    for start in range(0, len(wanted), 500):
        rows = session.execute(
            select(Message.sha256, Message.case_pk).where(Message.sha256.in_(wanted[start : start + 500]))
        ).all()
        shared.update(digest for digest, case_pk in rows if case_pk not in leaving)
    return [d for d in digests if d not in shared]


def forget_marks(session: Session, case_pks: Sequence[int | None]) -> None:
    """A purge removes a case whose preservation is over: its marks go with it (the audit trail stays)."""
    from sqlalchemy import delete

    session.execute(delete(CsamMark).where(CsamMark.case_pk.in_(list(case_pks))))
