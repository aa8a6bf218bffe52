"""The desk's structural changes to cases: links, merges and splits, each audited and reversible.

Why this exists (issue 16): a reporter who writes again without the case ID ("forgot one more password")
opens a second case. The intake never guesses that the two belong together — a second report from the same
address may be a different abuse — it *links* them (`same_reporter`, both ways), and the desk decides:
`merge` moves every message of one case into another, `split` moves one message out into a case of its own.

Invariants:
- Raw evidence is never touched: inbox rows (the bytes, their sha256) do not change; only which case a
  message belongs to and its index in that case.
- Case IDs are never reused: a merged case keeps its row and ID with status `merged` and `merged_into_pk`,
  and mail that names it joins the case it was merged into.
- Every move is recorded in `case_moves` with enough to undo it exactly (message indexes, outbox rows,
  indicator rows it copied); `unmerge`/`unsplit` undo the latest move, and both directions are audited.
- Preservation travels with the messages: hold and CSAM marks of a source case are carried to the case
  that receives its messages, and a split-off case keeps the marks of the case it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from storage.models import AuditEvent, Case, CaseEvent, CaseLink, CaseMove, IndicatorRow, Message, OutboxRow

# A case merged into a case that was then merged again: the chain is followed this far, no further, so a
# cycle written by hand into the store cannot loop the intake.
MAX_MERGE_CHAIN = 16
# A new report is linked to at most this many of the reporter's recent open cases (newest first): enough
# for the desk to see the pattern, bounded so a prolific reporter costs one small indexed query.
MAX_RELATED = 5

_CASES = Case.__table__
_MESSAGES = Message.__table__
_LINKS = CaseLink.__table__


class CaseWorkError(Exception):
    """A merge or split the store refuses; the message says why in words fit for the operator."""


@dataclass(frozen=True, slots=True)
class MoveResult:
    source: str
    target: str
    messages: int


def _now() -> datetime:
    return datetime.now(UTC)


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


def _retire_into(case: Case, holder: Case, now: datetime) -> None:
    """`case` gave its messages to `holder`: it stays, empty, as `merged` (its ID is never reused), and
    preservation travels with the evidence (issue 19): a hold or CSAM mark is never lost by a move."""
    case.status, case.merged_into_pk, case.updated_at = "merged", holder.id, now
    holder.updated_at = now
    holder.hold = holder.hold or case.hold
    holder.csam = holder.csam or case.csam


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


@dataclass(slots=True)
class CaseWork:
    engine: Engine
    new_case_id: Callable[[], str]

    def _case(self, session: Session, case_id: str) -> Case:
        query = select(Case).where(Case.case_id == case_id.upper())
        if self.engine.dialect.name == "postgresql":
            # Two desks merging at once, or the intake adding a message: the case rows are the lock.
            query = query.with_for_update()
        case = session.execute(query).scalar_one_or_none()
        if case is None:
            raise CaseWorkError(f"no case {case_id.upper()}")
        return case

    @staticmethod
    def _next_index(session: Session, case_pk: int) -> int:
        return 1 + int(
            session.execute(
                select(func.coalesce(func.max(_MESSAGES.c.index), 0)).where(_MESSAGES.c.case_pk == case_pk)
            ).scalar_one()
        )

    @staticmethod
    def _events(session: Session, actor: str, action: str, target: str, events: Sequence[tuple[int, str]]):
        now = _now()
        for case_pk, detail in events:
            session.add(CaseEvent(case_pk=case_pk, at=now, kind=action, detail=detail))
        session.add(AuditEvent(at=now, actor=actor, action=action, target=target))

    def merge(self, source_id: str, target_id: str, actor: str) -> MoveResult:
        """Move every message of `source_id` into `target_id`; the source stays, empty, as `merged`."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            source, target = self._case(session, source_id), self._case(session, target_id)
            if source.id == target.id:
                raise CaseWorkError("a case cannot be merged into itself")
            if target.status == "merged":
                into = links_view(session, target)["merged_into"]
                raise CaseWorkError(f"{target.case_id} was merged into {into}; merge into that case")
            if source.merged_into_pk is not None and source.merged_into_pk != target.id:
                raise CaseWorkError(f"{source.case_id} is already merged into another case")
            assert source.id is not None and target.id is not None
            moved = self._move_messages(session, source.id, target.id)
            outbox_pks = list(
                session.execute(select(OutboxRow.id).where(OutboxRow.case_pk == source.id)).scalars()
            )
            if outbox_pks:
                session.execute(
                    update(OutboxRow).where(OutboxRow.id.in_(outbox_pks)).values(case_pk=target.id)
                )
            indicator_pks = self._copy_indicators(session, source.id, target.id)
            session.add(
                CaseMove(
                    actor=actor,
                    action="merge",
                    source_pk=source.id,
                    target_pk=target.id,
                    moved=moved,
                    outbox_pks=outbox_pks,
                    indicator_pks=indicator_pks,
                    prior_status=source.status if source.status != "merged" else "open",
                )
            )
            _retire_into(source, target, _now())
            self._events(
                session,
                actor,
                "merge",
                f"{source.case_id} into {target.case_id}",
                [
                    (source.id, f"merged into {target.case_id} by {actor} ({len(moved)} message(s))"),
                    (target.id, f"{source.case_id} merged in by {actor} ({len(moved)} message(s))"),
                ],
            )
            return MoveResult(source.case_id, target.case_id, len(moved))

    def unmerge(self, source_id: str, actor: str) -> MoveResult:
        """Undo the latest merge of `source_id`: its messages go back at their old indexes."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            source = self._case(session, source_id)
            move = session.execute(
                select(CaseMove)
                .where(
                    CaseMove.source_pk == source.id, CaseMove.action == "merge", CaseMove.undone_at.is_(None)
                )
                .order_by(CaseMove.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if move is None or source.merged_into_pk is None:
                raise CaseWorkError(f"{source.case_id} is not a merged case")
            target = session.get(Case, move.target_pk)
            assert target is not None and source.id is not None and target.id is not None
            back = self._move_back(session, move.moved, source.id)
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(move.outbox_pks), OutboxRow.case_pk == target.id)
                .values(case_pk=source.id)
            )
            if move.indicator_pks:
                session.execute(delete(IndicatorRow).where(IndicatorRow.id.in_(move.indicator_pks)))
            now = _now()
            move.undone_at, move.undone_by = now, actor
            source.status, source.merged_into_pk, source.updated_at = move.prior_status, None, now
            target.updated_at = now
            self._events(
                session,
                actor,
                "unmerge",
                f"{source.case_id} out of {target.case_id}",
                [
                    (source.id, f"unmerged from {target.case_id} by {actor} ({back} message(s))"),
                    (target.id, f"{source.case_id} unmerged by {actor} ({back} message(s))"),
                ],
            )
            return MoveResult(source.case_id, target.case_id, back)

    def split(self, case_id: str, index: int, actor: str) -> MoveResult:
        """Move message `index` out of `case_id` into a new case of its own (a fresh ID, linked)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            source = self._case(session, case_id)
            if source.status == "merged":
                raise CaseWorkError(f"{source.case_id} is merged; split the case it was merged into")
            message = session.execute(
                select(Message).where(Message.case_pk == source.id, Message.index == index)
            ).scalar_one_or_none()
            if message is None:
                raise CaseWorkError(f"no message {index} in case {source.case_id}")
            count = session.execute(
                select(func.count(Message.id)).where(Message.case_pk == source.id)
            ).scalar_one()
            if count < 2:
                raise CaseWorkError(f"{source.case_id} holds only that message; nothing to split from")
            now = _now()
            reporter = message.from_addr or message.envelope_sender or None
            new = Case(
                case_id=self.new_case_id(),
                status="open",
                reporter=reporter.lower() if reporter else None,
                subject=message.subject,
                escaped_subject=message.escaped_subject,
                kind="report" if message.kind == "amendment" else message.kind,
                hold=source.hold,
                csam=source.csam,
                created_at=now,
                updated_at=now,
            )
            session.add(new)
            session.flush()
            assert new.id is not None and source.id is not None and message.id is not None
            moved = [{"message_pk": message.id, "from_index": message.index, "to_index": 1}]
            message.case_pk, message.index = new.id, 1
            if message.kind == "amendment":
                message.kind = "report"
            outbox_pks = list(
                session.execute(select(OutboxRow.id).where(OutboxRow.message_pk == message.id)).scalars()
            )
            if outbox_pks:
                session.execute(update(OutboxRow).where(OutboxRow.id.in_(outbox_pks)).values(case_pk=new.id))
            session.execute(
                insert(_LINKS),
                [{"case_pk": new.id, "other_pk": source.id, "relation": "split_from", "created_at": now}],
            )
            session.add(
                CaseMove(
                    actor=actor,
                    action="split",
                    source_pk=source.id,
                    target_pk=new.id,
                    moved=moved,
                    outbox_pks=outbox_pks,
                    prior_status=source.status,
                )
            )
            source.updated_at = now
            self._events(
                session,
                actor,
                "split",
                f"{source.case_id} {index} to {new.case_id}",
                [
                    (source.id, f"message {index} split into {new.case_id} by {actor}"),
                    (new.id, f"split from {source.case_id} (was message {index}) by {actor}"),
                ],
            )
            return MoveResult(source.case_id, new.case_id, 1)

    def unsplit(self, case_id: str, actor: str) -> MoveResult:
        """Undo a split: the message goes back to its old place; the split-off case stays, as `merged`."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            new = self._case(session, case_id)
            move = session.execute(
                select(CaseMove)
                .where(CaseMove.target_pk == new.id, CaseMove.action == "split", CaseMove.undone_at.is_(None))
                .order_by(CaseMove.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if move is None:
                raise CaseWorkError(f"{new.case_id} was not split from another case")
            source = session.get(Case, move.source_pk)
            assert source is not None and source.id is not None and new.id is not None
            back = self._move_back(session, move.moved, source.id)
            # Anything that joined the split-off case since (a reply to it) goes along, after the others.
            later = self._move_messages(session, new.id, source.id)
            session.execute(update(OutboxRow).where(OutboxRow.case_pk == new.id).values(case_pk=source.id))
            now = _now()
            move.undone_at, move.undone_by = now, actor
            _retire_into(new, source, now)
            self._events(
                session,
                actor,
                "unsplit",
                f"{new.case_id} back into {source.case_id}",
                [
                    (new.id, f"split undone by {actor}: back in {source.case_id}"),
                    (source.id, f"{new.case_id} returned by {actor} ({back + len(later)} message(s))"),
                ],
            )
            return MoveResult(new.case_id, source.case_id, back + len(later))

    def _move_messages(self, session: Session, from_pk: int, to_pk: int) -> list[dict[str, int]]:
        """Append every message of `from_pk` to `to_pk`, in their order, recording the old indexes."""
        rows = session.execute(
            select(_MESSAGES.c.id, _MESSAGES.c.index)
            .where(_MESSAGES.c.case_pk == from_pk)
            .order_by(_MESSAGES.c.index)
        ).all()
        start = self._next_index(session, to_pk)
        moved = []
        for offset, (message_pk, old_index) in enumerate(rows):
            new_index = start + offset
            session.execute(
                update(_MESSAGES).where(_MESSAGES.c.id == message_pk).values(case_pk=to_pk, index=new_index)
            )
            moved.append({"message_pk": message_pk, "from_index": old_index, "to_index": new_index})
        return moved

    def _move_back(self, session: Session, moved: Sequence[dict[str, int]], home_pk: int) -> int:
        """Return recorded messages to `home_pk` at their old indexes (or after the last, if taken)."""
        taken = set(
            session.execute(select(_MESSAGES.c.index).where(_MESSAGES.c.case_pk == home_pk)).scalars()
        )
        back = 0
        for record in moved:
            exists = session.execute(
                select(_MESSAGES.c.id).where(_MESSAGES.c.id == record["message_pk"])
            ).scalar()
            if exists is None:
                continue
            index = record["from_index"]
            if index in taken:
                index = max(taken) + 1
            taken.add(index)
            session.execute(
                update(_MESSAGES)
                .where(_MESSAGES.c.id == record["message_pk"])
                .values(case_pk=home_pk, index=index)
            )
            back += 1
        return back

    @staticmethod
    def _copy_indicators(session: Session, from_pk: int, to_pk: int) -> list[int]:
        """Give the target the source's indicators it lacks, so a search finds the merged case; the source
        keeps its own (a merged case is still found, and says where its messages went)."""
        have = set(
            session.execute(
                select(IndicatorRow.kind, IndicatorRow.value).where(IndicatorRow.case_pk == to_pk)
            ).all()
        )
        added: list[int] = []
        for kind, value, host in session.execute(
            select(IndicatorRow.kind, IndicatorRow.value, IndicatorRow.host)
            .where(IndicatorRow.case_pk == from_pk)
            .order_by(IndicatorRow.id)
        ).all():
            if (kind, value) in have:
                continue
            have.add((kind, value))
            pk = session.execute(
                insert(IndicatorRow.__table__)
                .values(
                    case_pk=to_pk, kind=kind, value=value, host=host, host_rev=host[::-1] if host else None
                )
                .returning(IndicatorRow.__table__.c.id)
            ).scalar_one()
            added.append(int(pk))
        return added
