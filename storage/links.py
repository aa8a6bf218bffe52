"""Links between cases and merge chains: what intake and the desk's views read of the desk's structural work.

Intake links a new report to the same reporter's recent open cases (issue 16) and follows merges when mail
names a merged case; `cases show` lists both. The moves themselves (merge, split and their undo) are
`storage.casework`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from storage.models import Case, CaseLink

# A case merged into a case that was then merged again: the chain is followed this far, no further, so a
# cycle written by hand into the store cannot loop the intake.
MAX_MERGE_CHAIN = 16
# A new report is linked to at most this many of the reporter's recent open cases (newest first): enough
# for the desk to see the pattern, bounded so a prolific reporter costs one small indexed query.
MAX_RELATED = 5

_CASES = Case.__table__
_LINKS = CaseLink.__table__


def follow_merges(session: Session, case_pk: int) -> int:
    """The case that now holds what `case_pk` held: itself, or the end of its merge chain."""
    seen = {case_pk}
    for _ in range(MAX_MERGE_CHAIN):
        nxt = session.execute(select(_CASES.c.merged_into_pk).where(_CASES.c.id == case_pk)).scalar()
        if nxt is None or nxt in seen:
            return case_pk
        seen.add(nxt)
        case_pk = nxt
    return case_pk


# Built once, values bound per call: building the expression and its cache key for every case opened cost
# more than running it (issue 18.5). `coalesce(status)`, not `status`: SQLite's planner (no ANALYZE)
# otherwise reads the status index, every open case of the window, for each case opened; the reporter index
# reads the reporter's own.
_SAME_REPORTER = (
    select(_CASES.c.id)
    .where(
        _CASES.c.reporter == bindparam("reporter"),
        _CASES.c.created_at >= bindparam("since"),
        func.coalesce(_CASES.c.status, "") == "open",
        _CASES.c.merged_into_pk.is_(None),
        _CASES.c.id != bindparam("case_pk"),
    )
    .order_by(_CASES.c.created_at.desc(), _CASES.c.id.desc())
    .limit(MAX_RELATED)
)


def link_same_reporter(
    session: Session, case_pk: int, reporter: str | None, window: timedelta, now: datetime
) -> None:
    """Link a case just opened to the same reporter's recent open cases (run in the intake transaction)."""
    if not reporter or window <= timedelta(0):
        return
    others = session.execute(
        _SAME_REPORTER, {"reporter": reporter, "since": now - window, "case_pk": case_pk}
    ).scalars()
    rows = [
        {"case_pk": case_pk, "other_pk": other, "relation": "same_reporter", "created_at": now}
        for other in others
    ]
    if rows:
        session.execute(insert(_LINKS), rows)


def links_view(session: Session, case: Case) -> dict[str, Any]:
    """`related` (both directions) and `merged_into` for `cases show`."""
    other = Case.__table__.alias("other")
    related: list[dict[str, Any]] = []
    for column, peer, direction in (
        (_LINKS.c.case_pk, _LINKS.c.other_pk, "earlier"),
        (_LINKS.c.other_pk, _LINKS.c.case_pk, "later"),
    ):
        rows = session.execute(
            select(other.c.case_id, other.c.status, _LINKS.c.relation, _LINKS.c.created_at)
            .join(other, other.c.id == peer)
            .where(column == case.id)
            .order_by(_LINKS.c.id)
        ).all()
        related += [
            {
                "case_id": case_id,
                "status": status,
                "relation": relation,
                "direction": direction,
                "linked_at": _iso(at),
            }
            for case_id, status, relation, at in rows
        ]
    merged_into = None
    if case.merged_into_pk is not None:
        merged_into = session.execute(
            select(_CASES.c.case_id).where(_CASES.c.id == follow_merges(session, case.id or 0))
        ).scalar()
    return {"related": related, "merged_into": merged_into}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()
