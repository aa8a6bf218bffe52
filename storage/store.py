"""The CaseStore façade: the whole store as one object, composed of one part per concern.

Each part takes the engine and owns one job: `Claims` (inbox claims and leases), `IntakeCommit` (a prepared
batch stored in one transaction), `Reprocess`, `Desk` (the desk's read model), `Outbox`, `Retention` (holds,
purge, audit). A caller that needs one concern can take that part (`store.outbox`); this façade keeps the
names callers have always used. The records that cross the boundary live in `storage.records` and are
re-exported here for code that still imports them from `storage.store`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from storage import csam
from storage.claims import Claims, new_worker_id
from storage.desk import Desk
from storage.intake_commit import IntakeCommit
from storage.outbox import Outbox
from storage.records import (
    CaseInfo,
    ClaimedEntry,
    Committed,
    ConfirmRequest,
    Lookup,
    OutboxJob,
    PreparedMessage,
    Resolver,
    ThreadDecision,
)
from storage.reporter import Reporters
from storage.reprocess import Reprocess
from storage.retention import Retention
from storage.users import Users
from storage.util import is_integrity_error

__all__ = [
    "CaseInfo",
    "CaseStore",
    "ClaimedEntry",
    "Committed",
    "ConfirmRequest",
    "Lookup",
    "OutboxJob",
    "PreparedMessage",
    "Resolver",
    "ThreadDecision",
    "is_integrity_error",
]


class CaseStore:
    def __init__(
        self,
        engine: Engine,
        new_case_id: Callable[[], str],
        worker_id: str | None = None,
        # A new report from a reporter with open cases opened this recently is linked to them (issue 16).
        related_window: timedelta = timedelta(days=14),
        # How long a CSAM mark or signal placed at intake preserves its case ([csam] preserve_days, issue 19).
        csam_preserve: timedelta = csam.DEFAULT_PRESERVE,
    ) -> None:
        self.engine = engine
        # One id per store for inbox and outbox claims alike: `release_dead_claims` skips its own holder.
        self.worker_id = worker_id or new_worker_id()
        self.claims = Claims(engine, self.worker_id)
        self.intake = IntakeCommit(engine, new_case_id, related_window, csam_preserve)
        self.reprocess = Reprocess(engine)
        self.desk = Desk(engine)
        self.outbox = Outbox(engine, self.worker_id)
        self.retention = Retention(engine)
        self.users = Users(engine)  # issue 20: the desk's people, sessions, failed logins
        self.reporters = Reporters(engine)  # issue 21: replies, state, status page

        self.claim_inbox = self.claims.claim_inbox
        self.release_dead_claims = self.claims.release_dead_claims
        self.release_failed = self.claims.release_failed
        self.inbox_stats = self.claims.inbox_stats
        self.inbox_depth = self.claims.inbox_depth
        self.undrained = self.claims.undrained

        self.commit_processed = self.intake.commit_processed

        self.messages_for_reprocess = self.reprocess.messages_for_reprocess
        self.update_reprocessed = self.reprocess.update_reprocessed

        self.list_cases = self.desk.list_cases
        self.show_case = self.desk.show_case
        self.export_cases = self.desk.export_cases
        self.raw_message = self.desk.raw_message
        self.set_status = self.desk.set_status
        self.case_ids_for_inbox = self.desk.case_ids_for_inbox
        self.case_exists = self.desk.case_exists

        self.claim_outbox = self.outbox.claim_outbox
        self.finish_outbox = self.outbox.finish_outbox
        self.mark_bounced = self.outbox.mark_bounced
        self.list_outbox = self.outbox.list_outbox
        self.outbox_message = self.outbox.outbox_message
        self.outbox_counts = self.outbox.outbox_counts

        self.set_hold = self.retention.set_hold
        self.purge = self.retention.purge
        self.audit = self.retention.audit
        self.list_audit = self.retention.list_audit
