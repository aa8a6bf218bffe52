"""The intake commit: a batch of prepared messages stored in one transaction.

The gateway prepares each inbox entry without the store (parse, classify, escape); `commit_processed` opens
one transaction, asks the gateway's `Resolver` where each message belongs through a `Lookup` bound to that
transaction, writes case, message, attachments, indicators and the confirmation row, and marks the inbox
entry done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, update
from sqlmodel import Session, select

from parsers.types import Attachment, ContentHashes, Indicator
from storage import csam
from storage.links import follow_merges, link_same_reporter
from storage.lookups import _SessionLookup
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
from storage.records import AUTH_RECHECK, Committed, PreparedMessage, Resolver, ThreadDecision
from storage.util import _now

_INSERT_MESSAGE = insert(Message.__table__).returning(Message.__table__.c.id)
_INSERT_CASE = insert(Case.__table__).returning(Case.__table__.c.id)


def _confirm_flags(decision: ThreadDecision) -> list[str]:
    if decision.confirm is not None and decision.confirm.suppressed_reason:
        return [f"confirmation_suppressed:{decision.confirm.suppressed_reason}"]
    return []


@dataclass(slots=True)
class _BatchRows:
    """Indicator rows of a whole batch, inserted with one statement at its end. Which (kind, value) each
    case already has is asked once per case and batch, then kept here as rows are added."""

    indicators: list[dict[str, Any]] = field(default_factory=list)
    known: dict[int, set[tuple[str, str]]] = field(default_factory=dict)

    def add_indicators(
        self,
        session: Session,
        case_pk: int,
        indicators: Sequence[tuple[Indicator, str | None]],
        new_case: bool,
    ) -> None:
        if not indicators:
            return
        known = self.known.get(case_pk)
        if known is None:
            known = self.known[case_pk] = set() if new_case else _case_indicators(session, case_pk)
        for indicator, host in indicators:
            key = (indicator.kind, indicator.value)
            if key not in known:
                known.add(key)
                self.indicators.append(
                    {
                        "case_pk": case_pk,
                        "kind": indicator.kind,
                        "value": indicator.value,
                        "host": host,
                        "host_rev": host[::-1] if host else None,
                    }
                )

    def insert(self, session: Session) -> None:
        if self.indicators:
            session.execute(insert(IndicatorRow.__table__), self.indicators)


def _case_indicators(session: Session, case_pk: int | None) -> set[tuple[str, str]]:
    rows = session.exec(
        select(IndicatorRow.kind, IndicatorRow.value).where(IndicatorRow.case_pk == case_pk)
    ).all()
    return {(kind, value) for kind, value in rows}


@dataclass(slots=True)
class IntakeCommit:
    engine: Engine
    new_case_id: Callable[[], str]
    # A new report from a reporter with open cases opened this recently is linked to them (issue 16).
    related_window: timedelta = field(default=timedelta(days=14))
    # How long a CSAM mark or signal placed at intake preserves its case ([csam] preserve_days, issue 19).
    csam_preserve: timedelta = field(default=csam.DEFAULT_PRESERVE)

    def commit_processed(self, prepared: Sequence[PreparedMessage], resolve: Resolver) -> list[Committed]:
        """Store a batch of processed messages in one transaction (threading decided inside it)."""
        results: list[Committed] = []
        finished: dict[str, list[int]] = {}
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            lookup = _SessionLookup(session)
            # Processed before (a crash after commit, a second worker): idempotent, one query per batch.
            prior = {
                row[0]: row[1:]
                for row in session.exec(
                    select(Message.inbox_id, Case.case_id, Message.index, Message.kind, Message.thread_signal)
                    .join(Case, Message.case_pk == Case.id)
                    .where(Message.inbox_id.in_([p.entry.inbox_id for p in prepared]))
                ).all()
            }
            lookup.prefetch_seen(
                [(p.parsed.message_id, p.entry.sha256) for p in prepared if p.entry.inbox_id not in prior]
            )
            batch = _BatchRows()
            for item in prepared:
                inbox_id = item.entry.inbox_id
                if inbox_id in prior:
                    case_id, index, kind, signal = prior[inbox_id]
                    results.append(Committed(inbox_id, case_id, index, False, kind, signal))
                    finished.setdefault("done", []).append(inbox_id)
                    continue
                committed, state = self._store_one(session, item, resolve(item, lookup), batch)
                if not committed.duplicate:
                    lookup.remember(item.parsed.message_id, item.entry.sha256, committed.case_id)
                results.append(committed)
                finished.setdefault(state, []).append(inbox_id)
            batch.insert(session)
            now = _now()
            for state, inbox_ids in finished.items():
                session.execute(
                    update(InboxEntry)
                    .where(InboxEntry.id.in_(inbox_ids))
                    .values(state=state, processed_at=now, claimed_until=None, last_error=None)
                )
        return results

    def _store_one(
        self, session: Session, item: PreparedMessage, decision: ThreadDecision, batch: _BatchRows
    ) -> tuple[Committed, str]:
        """Write one message (and its case, when it opens one); returns what happened and the inbox state.

        Core statements on the tables, not ORM objects: this runs for every message on intake, and the
        unit of work (identity map, a flush per object) cost more than the parsing.
        """
        entry = item.entry
        if decision.duplicate and decision.case_id is not None:
            duplicate = Committed(
                entry.inbox_id, decision.case_id, 0, False, item.kind, decision.signal, True
            )
            return duplicate, "duplicate"
        now = _now()
        cases = Case.__table__
        existing = None
        if decision.case_id is not None:
            existing = session.execute(
                select(cases.c.id, cases.c.status, cases.c.merged_into_pk).where(
                    cases.c.case_id == decision.case_id
                )
            ).first()
            if existing is not None and existing[2] is not None:
                # Named a case the desk merged: the message joins the case that now holds its messages.
                existing = session.execute(
                    select(cases.c.id, cases.c.status, cases.c.case_id).where(
                        cases.c.id == follow_merges(session, existing[0])
                    )
                ).first()
                assert existing is not None
                decision = dataclasses.replace(decision, case_id=existing[2])
        opened = existing is None
        if existing is None:
            case_id = self.new_case_id()
            case_pk = self._open_case(session, item, case_id, now)
            index, kind = 1, item.kind
            if item.kind == "report":
                link_same_reporter(session, case_pk, self._reporter(item), self.related_window, now)
        else:
            case_id, (case_pk, status) = str(decision.case_id), existing[:2]
            kind = "amendment" if item.kind == "report" else item.kind
            values: dict[str, Any] = {"updated_at": now}
            if status == "closed" and decision.reopen:
                values["status"] = "open"
                session.execute(
                    insert(CaseEvent.__table__).values(
                        case_pk=case_pk, at=now, kind="reopened", detail=f"by inbox entry {entry.inbox_id}"
                    )
                )
            if item.csam:
                values["csam"] = True
            session.execute(update(cases).where(cases.c.id == case_pk).values(**values))
            messages = Message.__table__
            index = 1 + int(
                session.execute(
                    select(func.coalesce(func.max(messages.c.index), 0)).where(messages.c.case_pk == case_pk)
                ).scalar_one()
            )
        parsed = item.parsed
        # Values go as execution parameters, not .values(): the compiled statement is then cached instead
        # of rebuilt (bind objects, cache key) for every message.
        message_pk = session.execute(
            _INSERT_MESSAGE,
            dict(
                case_pk=case_pk,
                index=index,
                inbox_id=entry.inbox_id,
                kind=kind,
                kind_rule=item.kind_rule,
                envelope_sender=entry.mail_from,
                from_addr=parsed.from_addr,
                subject=parsed.subject,
                escaped_subject=item.escaped_subject,
                received_at=entry.received_at,
                message_id=parsed.message_id,
                in_reply_to=list(parsed.in_reply_to),
                references=list(parsed.references),
                sha256=entry.sha256,
                thread_signal=decision.signal,
                thread_ref=decision.ref,
                text=parsed.text,
                escaped_text=item.escaped_text,
                defects=list(item.defects),
                flags=list(dict.fromkeys([*item.flags, *decision.flags, *_confirm_flags(decision)])),
                report=item.report,
                evidence=list(item.evidence) or None,
                authentication=item.authentication.summary if item.authentication is not None else None,
            ),
        ).scalar_one()
        self._add_attachments(
            session, message_pk, parsed.attachments, item.escaped_filenames, item.content_hashes
        )
        batch.add_indicators(session, case_pk, item.indicators, new_case=opened)
        # -- issue 19: CSAM marks and signals, with their preservation, in the intake transaction --
        if item.csam or item.csam_signals:
            signals, preserve = item.csam_signals, self.csam_preserve
            csam.record_intake_marks(
                session, case_pk, csam=item.csam, signals=signals, at=now, preserve=preserve
            )
        # -- end issue 19 --
        if decision.confirm is not None:
            suppressed = decision.confirm.suppressed_reason
            # issue 22: a sender whose authentication DNS could not decide waits, to be checked again
            deferred = decision.confirm.deferred and not suppressed
            language = decision.confirm.language
            if decision.confirm.language_is_default and not opened:  # issue 21: keep the case's language
                earlier = session.execute(
                    select(OutboxRow.language)
                    .where(OutboxRow.case_pk == case_pk, OutboxRow.language.is_not(None))
                    .order_by(OutboxRow.id)
                    .limit(1)
                ).scalar()
                language = earlier or language
            session.execute(
                insert(OutboxRow.__table__),
                dict(
                    case_pk=case_pk,
                    message_pk=message_pk,
                    kind=decision.confirm.kind,
                    recipient=decision.confirm.recipient.lower(),
                    state="suppressed" if suppressed else "deferred" if deferred else "queued",
                    suppressed_reason=suppressed,
                    attempts=0,
                    last_error="authentication: DNS temporary failure, checked again" if deferred else None,
                    created_at=now,
                    next_attempt_at=None if suppressed else now + AUTH_RECHECK[0] if deferred else now,
                    message_id=decision.confirm.message_id,
                    rate_mailbox=decision.confirm.rate_mailbox,
                    rate_domain=decision.confirm.rate_domain,
                    client_net=decision.confirm.client_net,
                    language=language,
                    # The receipt's message count is this message's place in the case (issue 21).
                    receipt=(
                        {**decision.confirm.receipt, "messages": index}
                        if decision.confirm.receipt is not None
                        else None
                    ),
                ),
            )
        if decision.bounced:
            session.execute(
                update(OutboxRow.__table__)
                .where(OutboxRow.__table__.c.message_id.in_(list(decision.bounced)))
                .values(state="bounced", last_error=f"bounce received: case {case_id} message {index}")
            )
        state = "failed" if "processing_failed" in item.flags else "done"
        committed = Committed(
            entry.inbox_id, case_id, index, opened, kind, decision.signal, received_at=entry.received_at
        )
        return committed, state

    @staticmethod
    def _reporter(item: PreparedMessage) -> str | None:
        reporter = item.parsed.from_addr or item.entry.mail_from or None
        return reporter.lower() if reporter else None

    @classmethod
    def _open_case(cls, session: Session, item: PreparedMessage, case_id: str, now: datetime) -> int:
        """Insert the case and return its key. The ID is random (35 bits): a collision is rare enough that
        the unique constraint is the check; if it fires, the batch is retried entry by entry, minting anew."""
        reporter = cls._reporter(item)
        return int(
            session.execute(
                _INSERT_CASE,
                dict(
                    case_id=case_id,
                    status="open",
                    reporter=reporter,
                    subject=item.parsed.subject,
                    escaped_subject=item.escaped_subject,
                    kind=item.kind,
                    group_key=item.group_key,
                    hold=False,
                    csam=item.csam,
                    created_at=now,
                    updated_at=now,
                ),
            ).scalar_one()
        )

    @staticmethod
    def _add_attachments(
        session: Session,
        message_pk: int | None,
        attachments: Sequence[Attachment],
        escaped: Sequence[str | None],
        hashes: ContentHashes | None = None,
    ) -> None:
        if not attachments:
            return
        digests = {h.sha256: h for h in hashes.attachments} if hashes is not None else {}
        rows = []
        for position, attachment in enumerate(attachments):
            digest = digests.get(attachment.sha256)
            rows.append(
                {
                    "message_pk": message_pk,
                    "filename": attachment.filename,
                    "escaped_filename": escaped[position] if position < len(escaped) else attachment.filename,
                    "content_type": attachment.content_type,
                    "size": attachment.size,
                    "sha256": attachment.sha256,
                    "md5": digest.md5 if digest else None,
                    "sha1": digest.sha1 if digest else None,
                    "pdq": digest.pdq if digest else None,
                }
            )
        if hashes is None or not hashes.nested:
            session.execute(insert(AttachmentRow.__table__), rows)
            return
        ids = session.execute(
            insert(AttachmentRow.__table__).returning(
                AttachmentRow.__table__.c.id, sort_by_parameter_order=True
            ),
            rows,
        ).scalars().all()
        first_pk: dict[str, int] = {}
        for row, pk in zip(rows, ids, strict=True):
            first_pk.setdefault(row["sha256"], pk)
        items = [
            {
                "attachment_pk": first_pk[n.parent_sha256],
                "path": n.path,
                "size": n.hashes.size,
                "sha256": n.hashes.sha256,
                "md5": n.hashes.md5,
                "sha1": n.hashes.sha1,
                "pdq": n.hashes.pdq,
            }
            for n in hashes.nested
            if n.parent_sha256 in first_pk
        ]
        if items:
            session.execute(insert(AttachmentItemRow.__table__), items)
