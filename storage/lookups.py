"""What threading may ask while a batch is committed: a `Lookup` bound to the intake transaction, so a
reply in the same batch as its report finds the case just opened, and the confirmation caps count rows
queued in it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, text
from sqlmodel import Session, select

from storage.links import follow_merges
from storage.models import Case, Message, OutboxRow
from storage.records import CaseInfo
from storage.util import _scalar

_MAX_LOOKUP_IDS = 500
# The advisory lock key that serialises confirmation-cap decisions across gateways (any constant; "ABUC").
_QUOTA_LOCK = 0x41425543


class _SessionLookup:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._quota_locked = False
        # Earlier messages by ("mid", Message-ID) or ("sha", sha256 of a message without one), filled for a
        # whole batch by `prefetch_seen` and kept current by `remember`; keys not in it are asked one by one.
        self._seen: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def prefetch_seen(self, keys: Sequence[tuple[str | None, str]]) -> None:
        """The redelivery check for a whole batch in two queries instead of one per message."""
        message_ids = sorted({mid for mid, _ in keys if mid})
        digests = sorted({sha for mid, sha in keys if not mid})
        seen: dict[tuple[str, str], list[tuple[str, str]]] = {("mid", m): [] for m in message_ids}
        seen.update({("sha", d): [] for d in digests})
        base = select(Message.message_id, Message.sha256, Case.case_id).join(Case, Message.case_pk == Case.id)
        if message_ids:
            for mid, digest, case_id in self.session.exec(
                base.where(Message.message_id.in_(message_ids)).order_by(Message.id)
            ).all():
                seen[("mid", mid)].append((case_id, digest))
        if digests:
            # coalesce, not IS NULL: SQLite's planner (no ANALYZE) would read the message_id index, every
            # message without one, per batch (issue 18.5); the sha256 index finds the few. Never "": the
            # parser gives None.
            no_id = func.coalesce(Message.message_id, "") == ""
            for _mid, digest, case_id in self.session.exec(
                base.where(Message.sha256.in_(digests), no_id).order_by(Message.id)
            ).all():
                seen[("sha", digest)].append((case_id, digest))
        self._seen = seen

    def remember(self, message_id: str | None, sha256: str, case_id: str) -> None:
        """A message just stored in this transaction, so a copy later in the same batch finds it."""
        rows = self._seen.get(("mid", message_id) if message_id else ("sha", sha256))
        if rows is not None:
            rows.append((case_id, sha256))

    def case(self, case_id: str) -> CaseInfo | None:
        """The case that holds what `case_id` names: a case the desk merged answers for its target."""
        case = self.session.exec(select(Case).where(Case.case_id == case_id)).first()
        if case is None:
            return None
        if case.merged_into_pk is not None:
            case = self.session.get(Case, follow_merges(self.session, case.id or 0)) or case
        return CaseInfo(case.case_id, case.status, case.reporter, case.kind)

    def case_for_message_ids(self, message_ids: Sequence[str]) -> str | None:
        if not message_ids:
            return None
        # Bounded whatever the caller passes: SQLite allows 32,766 bound variables per statement.
        ids = list(dict.fromkeys(message_ids))[:_MAX_LOOKUP_IDS]
        found = self.session.exec(
            select(Case.case_id)
            .join(Message, Message.case_pk == Case.id)
            .where(Message.message_id.in_(ids))
            .order_by(Message.id)
            .limit(1)
        ).first()
        if found is None:
            found = self.session.exec(
                select(Case.case_id)
                .join(OutboxRow, OutboxRow.case_pk == Case.id)
                .where(OutboxRow.message_id.in_(ids))
                .limit(1)
            ).first()
        return _scalar(found)

    def participants(self, case_id: str) -> set[str]:
        """Envelope senders of the case's first message and of its verified messages (issue 15): never a
        `From:` header (anyone can write one), never the sender of an automatic or unverified message, so
        a stranger cannot become a participant by replying to a stranger."""
        rows = self.session.exec(
            select(Message.envelope_sender, Message.kind, Message.flags, Message.index)
            .join(Case, Message.case_pk == Case.id)
            .where(Case.case_id == case_id, Message.envelope_sender != "")
        ).all()
        people: set[str] = set()
        for sender, kind, flags, index in rows:
            if index == 1 or (kind != "automatic" and "unverified_sender" not in (flags or ())):
                people.add(sender.strip().lower())
        return people

    def confirmations_since(self, recipient: str, since: datetime) -> int:
        return int(
            self.session.exec(
                select(func.count(OutboxRow.id)).where(
                    OutboxRow.recipient == recipient.lower(),
                    OutboxRow.created_at >= since,
                    OutboxRow.state != "suppressed",
                )
            ).one()
        )

    def confirmations_to_domain_since(self, domain: str, since: datetime) -> int:
        return int(
            self.session.exec(
                select(func.count(OutboxRow.id)).where(
                    OutboxRow.recipient.like(f"%@{domain.lower()}"),
                    OutboxRow.created_at >= since,
                    OutboxRow.state != "suppressed",
                )
            ).one()
        )

    def confirmation_counts(
        self, mailbox: str, domain: str, network: str, since: datetime
    ) -> tuple[int, int, int]:
        """Confirmations (not suppressed) since `since`: to this mailbox, to this registrable domain for
        mail from this client network, and for mail from this network at all.

        Atomic across gateways: on PostgreSQL a transaction-scoped advisory lock (one key, so no lock-order
        deadlock) is taken first and held until the transaction that queues the row commits, so a second
        gateway counts after the first's row is visible (READ COMMITTED takes a snapshot per statement).
        Before it, two gateways with cap 5 sent 8 (issue 15). SQLite has one writer at a time already."""
        if self.session.get_bind().dialect.name == "postgresql" and not self._quota_locked:
            self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _QUOTA_LOCK})
            self._quota_locked = True
        sent = and_(OutboxRow.created_at >= since, OutboxRow.state != "suppressed")

        def count(*where: Any) -> int:
            return int(self.session.exec(select(func.count(OutboxRow.id)).where(sent, *where)).one())

        return (
            count(OutboxRow.rate_mailbox == mailbox),
            count(OutboxRow.rate_domain == domain, OutboxRow.client_net == network),
            count(OutboxRow.client_net == network),
        )

    def seen_message(self, message_id: str | None, sha256: str) -> tuple[str, bool] | None:
        """An earlier message with this Message-ID (or, without one, these bytes): (case_id, same bytes)."""
        rows = self._seen.get(("mid", message_id) if message_id else ("sha", sha256))
        if rows is None:
            query = select(Case.case_id, Message.sha256).join(Case, Message.case_pk == Case.id)
            if message_id:
                query = query.where(Message.message_id == message_id)
            else:
                # coalesce, not IS NULL: as in prefetch_seen, so the sha256 index is read.
                query = query.where(Message.sha256 == sha256, func.coalesce(Message.message_id, "") == "")
            rows = [(case_id, digest) for case_id, digest in self.session.exec(query.order_by(Message.id))]
        if not rows:
            return None
        for case_id, digest in rows:
            if digest == sha256:
                return case_id, True
        return rows[0][0], False

    def open_group_case(self, group_key: str, since: datetime) -> str | None:
        # coalesce(status), not status: SQLite's planner (no ANALYZE) would read the status index, every
        # open case, per machine report (issue 18.5); the group_key index finds the few.
        found = self.session.exec(
            select(Case.case_id)
            .where(
                Case.group_key == group_key,
                func.coalesce(Case.status, "") == "open",
                Case.updated_at >= since,
            )
            .order_by(Case.id.desc())
            .limit(1)
        ).first()
        return _scalar(found)
