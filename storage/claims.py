"""Claims and leases on the inbox: which worker processes which entry, handed back when it fails or dies."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, func, or_, update
from sqlmodel import Session, select

from storage.models import InboxEntry, OutboxRow
from storage.records import ClaimedEntry
from storage.util import _aware, _now

# "Has a lease", written as a range: SQLite's planner (without ANALYZE) uses the claimed_until index for
# `> epoch` but scans the table for `IS NOT NULL`.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_worker_id(group: str = "") -> str:
    """Unique per process, across hosts: claims are matched by it, so two workers must never share one.
    Minted when a Store is built, not at import: `ingest`'s intake children are forked from the CLI, and an
    id minted at import was inherited by both, so each selected the other's claims too and every entry was
    prepared (and logged `stored:`) twice, the second time as a duplicate (issue 16.4). `group` (no colon)
    names the workers of one gateway, so a stopping one can tell its siblings' claims from another's."""
    return f"{socket.gethostname()}:{os.getpid()}:{group}{uuid.uuid4().hex[:8]}"


def in_group(worker_id: str, group: str) -> bool:
    """Was `worker_id` minted on this host with `new_worker_id(group)`?"""
    host, _, rest = worker_id.partition(":")
    return host == socket.gethostname() and rest.partition(":")[2].startswith(group)


@dataclass(slots=True)
class Claims:
    engine: Engine
    worker_id: str = field(default_factory=new_worker_id)

    def claim_inbox(
        self, limit: int = 64, lease: float = 60.0, max_bytes: int = 1 << 20
    ) -> list[ClaimedEntry]:
        """Claim pending entries for this worker. The conditional UPDATE is the claim, so two workers (or
        two gateways on one PostgreSQL, where SKIP LOCKED keeps them off each other's rows) never process
        the same entry at once; a worker that dies leaves a lease that expires. At most `max_bytes` of raw
        messages (but always one), so a run of large messages is not all parsed before the first is
        stored, and a second worker can take the next ones."""
        now = _now()
        claimable = and_(
            InboxEntry.state == "pending",
            or_(InboxEntry.claimed_until.is_(None), InboxEntry.claimed_until < now),
        )
        with Session(self.engine) as session, session.begin():
            query = (
                select(InboxEntry.id, InboxEntry.size).where(claimable).order_by(InboxEntry.id).limit(limit)
            )
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids: list[int] = []
            total = 0
            for inbox_id, size in session.exec(query).all():
                total += size or 0
                if ids and total > max_bytes:
                    break
                ids.append(inbox_id)
            if not ids:
                return []
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id.in_(ids), claimable)
                .values(
                    claimed_by=self.worker_id,
                    claimed_until=now + timedelta(seconds=lease),
                    attempts=InboxEntry.attempts + 1,
                )
            )
            rows = session.exec(
                select(
                    InboxEntry.id,
                    InboxEntry.raw,
                    InboxEntry.mail_from,
                    InboxEntry.rcpt_tos,
                    InboxEntry.received_at,
                    InboxEntry.sha256,
                    InboxEntry.attempts,
                    InboxEntry.confirm,
                    InboxEntry.client_addr,
                    InboxEntry.helo,
                )
                .where(InboxEntry.id.in_(ids), InboxEntry.claimed_by == self.worker_id)
                .order_by(InboxEntry.id)
            ).all()
        return [
            ClaimedEntry(
                r[0], r[1], r[2], tuple(r[3] or ()), _aware(r[4]) or now, r[5], r[6], bool(r[7]), r[8], r[9]
            )
            for r in rows
        ]

    def release_dead_claims(self, is_alive: Callable[[int], bool]) -> int:
        """At start: hand back claims held by processes of this host that no longer run (a SIGKILL, an OOM
        kill), instead of waiting for their leases to run out. Claims of other hosts are left to expire."""
        host = f"{socket.gethostname()}:"
        released = 0
        with Session(self.engine) as session, session.begin():
            for table in (InboxEntry, OutboxRow):
                holders = session.exec(
                    select(table.claimed_by)
                    .where(table.claimed_by.like(f"{host}%"), table.claimed_until > _EPOCH)
                    .distinct()
                ).all()
                for holder in holders:
                    pid = holder.split(":")[1] if holder.count(":") >= 2 else ""
                    if holder == self.worker_id or not pid.isdigit() or is_alive(int(pid)):
                        continue
                    result = session.execute(
                        update(table)
                        .where(table.claimed_by == holder, table.claimed_until > _EPOCH)
                        .values(claimed_until=None, claimed_by=None)
                    )
                    released += int(result.rowcount or 0)
        return released

    def release_failed(self, inbox_id: int, error: str) -> None:
        """Processing raised: note why and let the entry be claimed again."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id == inbox_id)
                .values(last_error=error[:500], claimed_until=None, claimed_by=None)
            )

    def undrained(self, group: str) -> int:
        """Pending entries a stopping worker of `group` must still see done: those anyone may claim now,
        and those leased to a worker of its group (a failure there hands the entry back). An entry leased
        to another gateway's worker is that gateway's to finish, or its lease runs out and it is claimed
        then: waiting for it held a gateway's stop for the whole drain grace (30 s)."""
        now = _now()
        with Session(self.engine) as session:
            claimable = session.exec(
                select(func.count(InboxEntry.id)).where(
                    InboxEntry.state == "pending",
                    or_(InboxEntry.claimed_until.is_(None), InboxEntry.claimed_until < now),
                )
            ).one()
            holders = session.exec(
                select(InboxEntry.claimed_by, func.count(InboxEntry.id))
                .where(InboxEntry.state == "pending", InboxEntry.claimed_until >= now)
                .group_by(InboxEntry.claimed_by)
            ).all()
        return int(claimable) + sum(int(n) for holder, n in holders if holder and in_group(holder, group))

    def inbox_stats(self) -> tuple[int, datetime | None]:
        """How many entries wait, and since when the oldest has."""
        with Session(self.engine) as session:
            depth, oldest = session.exec(
                select(func.count(InboxEntry.id), func.min(InboxEntry.received_at)).where(
                    InboxEntry.state == "pending"
                )
            ).one()
            return int(depth), _aware(oldest)

    def inbox_depth(self) -> int:
        with Session(self.engine) as session:
            return int(
                session.exec(select(func.count(InboxEntry.id)).where(InboxEntry.state == "pending")).one()
            )
