"""The case store's tables.

Every table sets `__tablename__` explicitly: SQLModel would otherwise name `Case` `case`, an SQL keyword.
Raw bytes live in `inbox` and nowhere else; everything else is derived from them and can be derived again
(`reprocess`). Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, UniqueConstraint, true
from sqlalchemy import text as sql_text  # `text` is a column of Message
from sqlmodel import Field, SQLModel

# A message with at least one flag: the predicate of `ix_messages_flagged`, and the term every flag query
# adds so the planner may use that index (the same text in both, or it cannot tell).
FLAGS_TEXT = "CAST(flags AS VARCHAR)"
FLAGGED = f"{FLAGS_TEXT} != '[]'"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kwargs: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kwargs)


class InboxEntry(SQLModel, table=True):
    """A message exactly as received, committed before the client gets 250."""

    __tablename__ = "inbox"

    id: int | None = Field(default=None, primary_key=True)
    # Minted before the first commit attempt; the spool names its files by it, so a replay after an
    # ambiguous commit (timeout, crash) can never store the message twice.
    intake_uid: str = Field(unique=True, max_length=64)
    received_at: datetime = _ts(default_factory=utcnow)
    # "" is the null sender (a bounce); None means not known (`ingest` of a file without envelope).
    mail_from: str | None = Field(default="", nullable=True)
    # False when a backlog import chose `--no-confirm`: the message is processed, nobody is mailed.
    confirm: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    rcpt_tos: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    client_addr: str | None = None
    size: int
    sha256: str = Field(index=True, max_length=64)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # pending → done | failed (failed ones are still stored in a case with `processing_failed`)
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    last_error: str | None = None
    claimed_by: str | None = None
    # Indexed: only rows being worked on have one, and the release of a dead worker's claims at start
    # must not scan the whole table (1.5 s on a store with a million messages).
    claimed_until: datetime | None = _ts(default=None, nullable=True, index=True)
    processed_at: datetime | None = _ts(default=None, nullable=True)

    __table_args__ = (Index("ix_inbox_state_id", "state", "id"),)


class Case(SQLModel, table=True):
    __tablename__ = "cases"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(unique=True, max_length=32)
    status: str = Field(default="open", max_length=16, index=True)
    reporter: str | None = None
    subject: str = ""
    escaped_subject: str = ""
    kind: str = Field(default="report", max_length=16)
    # For grouping machine reports about one source (AbuseIO's incident → ticket model).
    group_key: str | None = Field(default=None, index=True, max_length=320)
    hold: bool = False
    # Reported as child sexual abuse material: kept at least 365 days whatever `purge` is told
    # (18 U.S.C. §2258A(h) preservation).
    csam: bool = False
    # A signal (machine report wording, term list, hash list) the desk has not confirmed or cleared yet
    # (issue 19): never a verdict, but preserved like one until cleared. Sources are in `csam_marks`.
    possible_csam: bool = False
    # No purge removes the case (or its messages and raw bytes) before this: the latest end of every
    # preservation its marks placed (`storage/csam.py` recomputes it from `csam_marks`).
    preserve_until: datetime | None = _ts(default=None, nullable=True)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    # The desk user working the case (a `desk_users.name`; users are disabled, never deleted), or None.
    assignee: str | None = Field(default=None, max_length=64, nullable=True)
    # Set when the desk merged this case into another (status `merged`): mail that names this case's ID
    # joins that one, and the ID is never given out again (issue 16).
    merged_into_pk: int | None = Field(default=None, foreign_key="cases.id", nullable=True)

    # A new report looks up the same reporter's recent open cases to link them (issue 16).
    __table_args__ = (
        Index("ix_cases_reporter_created", "reporter", "created_at"),
        # The desk's queue (issues 17, 20): newest first, whole or within a status or an assignee, read off
        # an index in (created_at, id) order, so a keyset page (`before` a row) costs what page 1 costs.
        Index("ix_cases_created_id", "created_at", "id"),
        Index("ix_cases_status_created", "status", "created_at", "id"),
        Index("ix_cases_assignee_created", "assignee", "created_at", "id"),
        # The few cases in the CSAM compartment, for the queue's flag filter (issue 20, storage/search.py).
        Index("ix_cases_csam", "id", sqlite_where=sql_text("csam"), postgresql_where=sql_text("csam")),
        Index(
            "ix_cases_possible_csam",
            "id",
            sqlite_where=sql_text("possible_csam"),
            postgresql_where=sql_text("possible_csam"),
        ),
    )


class Message(SQLModel, table=True):
    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    index: int
    # One message per inbox entry: processing twice (a crash after commit, two gateways) cannot duplicate.
    inbox_id: int = Field(foreign_key="inbox.id", unique=True)
    kind: str = Field(max_length=16)
    kind_rule: str = ""
    envelope_sender: str | None = Field(default="", nullable=True)  # None: not known (see InboxEntry)
    from_addr: str | None = None
    subject: str = ""
    escaped_subject: str = ""
    received_at: datetime = _ts(default_factory=utcnow)
    message_id: str | None = Field(default=None, index=True)
    in_reply_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    references: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sha256: str = Field(max_length=64, index=True)  # redelivery check for mail without a Message-ID
    thread_signal: str = Field(default="none", max_length=16)
    thread_ref: str | None = None
    text: str = ""
    escaped_text: str = ""
    defects: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Forwarded messages (attached or inline) with their own parsed headers, in display form (issue 6).
    evidence: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    __table_args__ = (
        UniqueConstraint("case_pk", "index"),
        # The few messages with a flag, by case, with their flags (issue 20): "cases flagged
        # processing_failed" reads this small index instead of the messages of every case (whose flags sit
        # behind their text). Predicate and expression are written as the query writes them
        # (storage/search.py), so both SQLite and PostgreSQL see that the index applies.
        Index(
            "ix_messages_flagged",
            "case_pk",
            sql_text(FLAGS_TEXT),  # the flags as text: the LIKE is answered from the index
            postgresql_include=["flags"],  # PostgreSQL reads expressions off an index only with their column
            sqlite_where=sql_text(FLAGGED),
            postgresql_where=sql_text(FLAGGED),
        ),
    )


class AttachmentRow(SQLModel, table=True):
    __tablename__ = "attachments"

    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="messages.id", index=True)
    filename: str | None = None
    escaped_filename: str | None = None
    content_type: str
    size: int
    # Indexed: `cases list --hash` finds a case by any digest of its files (issue 19).
    sha256: str = Field(max_length=64, index=True)
    md5: str | None = Field(default=None, max_length=32, index=True)
    sha1: str | None = Field(default=None, max_length=40, index=True)
    pdq: str | None = Field(default=None, max_length=64, index=True)  # images only, hex MSB first


class AttachmentItemRow(SQLModel, table=True):
    """Something inside an attachment: a ZIP member or a part of an attached message, by its digests.

    Rows go with their attachment (ON DELETE CASCADE: purge and reprocess delete attachments only)."""

    __tablename__ = "attachment_items"

    id: int | None = Field(default=None, primary_key=True)
    attachment_pk: int = Field(foreign_key="attachments.id", index=True, ondelete="CASCADE")
    path: str  # e.g. `zip:photos/a.jpg`, `rfc822:2/zip:x.png`
    size: int
    sha256: str = Field(max_length=64, index=True)
    md5: str = Field(max_length=32, index=True)
    sha1: str = Field(max_length=40, index=True)
    pdq: str | None = Field(default=None, max_length=64, index=True)


class IndicatorRow(SQLModel, table=True):
    __tablename__ = "indicators"

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    kind: str = Field(max_length=8)
    value: str = Field(index=True)
    # Lower-case host (or IP) so a domain search also finds URLs on it and its subdomains.
    host: str | None = Field(default=None, index=True)
    # The host reversed (`elpmaxe.live.www`): "on evil.example or a subdomain" is then a prefix, an index
    # range, instead of `LIKE '%.evil.example'` over every indicator (0.35 s on a 1 M-message store).
    host_rev: str | None = Field(default=None)

    __table_args__ = (
        UniqueConstraint("case_pk", "kind", "value"),
        # text_pattern_ops on PostgreSQL, so LIKE 'prefix%' reads the index whatever the collation.
        Index("ix_indicators_host_rev", "host_rev", postgresql_ops={"host_rev": "text_pattern_ops"}),
    )


class OutboxRow(SQLModel, table=True):
    """A confirmation, queued in the same transaction as the case it confirms."""

    __tablename__ = "outbox"
    # The per-network cap counts this network's confirmations of the last hour for every message that asks
    # for one: without this index that count read the whole outbox (issue 18).
    __table_args__ = (Index("ix_outbox_client_net_created", "client_net", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    message_pk: int | None = Field(default=None, foreign_key="messages.id")
    kind: str = Field(default="confirmation", max_length=16)  # confirmation | acknowledgement
    recipient: str = Field(default="", index=True)  # the per-address confirmation cap counts by it
    # What the caps count by (issue 15): the normalised mailbox, the registrable domain, the client network.
    rate_mailbox: str | None = Field(default=None, index=True)
    rate_domain: str | None = Field(default=None, index=True)
    client_net: str | None = None
    # queued | sending | sent | retrying | failed | suppressed | bounced
    state: str = Field(default="queued", max_length=16, index=True)
    suppressed_reason: str | None = None
    attempts: int = 0
    last_error: str | None = None
    message_id: str | None = Field(default=None, index=True)  # ours, so replies thread by header
    created_at: datetime = _ts(default_factory=utcnow)
    next_attempt_at: datetime | None = _ts(default_factory=utcnow, nullable=True)
    claimed_by: str | None = None
    # Indexed: only rows being worked on have one, and the release of a dead worker's claims at start
    # must not scan the whole table (1.5 s on a store with a million messages).
    claimed_until: datetime | None = _ts(default=None, nullable=True, index=True)
    sent_at: datetime | None = _ts(default=None, nullable=True)
    # The exact bytes handed to the smarthost (or written as .eml): what the reporter was sent, for the
    # desk to show when a reporter asks (issue 17). Our own text, never the report's.
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class CaseEvent(SQLModel, table=True):
    __tablename__ = "case_events"

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    at: datetime = _ts(default_factory=utcnow)
    kind: str = Field(max_length=32)
    detail: str = ""


class AuditEvent(SQLModel, table=True):
    """Who read or removed evidence, and when: every `cases raw`, `cases export` and `purge`."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64)  # the Unix user that ran the command
    action: str = Field(max_length=32)
    target: str = ""
    # For a `viewed` event (issue 19), what was looked at and why, so "did a person view file K of message
    # N?" is a query, not a parse of `target`. `message_pk` survives merges and splits (indexes do not).
    case_id: str | None = Field(default=None, index=True, max_length=32)
    message_pk: int | None = None
    message_index: int | None = None
    attachment_index: int | None = None  # 1-based position in the message, as `cases attachment` names it
    reason: str | None = None


class CaseLink(SQLModel, table=True):
    """Two cases the desk should see together: the same reporter writing again without the case ID, or a
    case split out of another. A hint, never a merge: no message moves because of a link."""

    __tablename__ = "case_links"

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)  # the newer case
    other_pk: int = Field(foreign_key="cases.id", index=True)
    relation: str = Field(max_length=16)  # same_reporter | split_from
    created_at: datetime = _ts(default_factory=utcnow)

    __table_args__ = (UniqueConstraint("case_pk", "other_pk", "relation"),)


class CaseMove(SQLModel, table=True):
    """A merge or split the desk made, with what it takes to undo it exactly: which messages moved from
    which index to which, which outbox rows went with them, which indicator rows it copied."""

    __tablename__ = "case_moves"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(default_factory=utcnow)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=16)  # merge | split
    source_pk: int = Field(foreign_key="cases.id", index=True)
    target_pk: int = Field(foreign_key="cases.id", index=True)
    moved: list[dict[str, int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    outbox_pks: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    indicator_pks: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    prior_status: str = Field(default="open", max_length=16)
    undone_at: datetime | None = _ts(default=None, nullable=True)
    undone_by: str | None = Field(default=None, max_length=64)


class CsamMark(SQLModel, table=True):
    """One mark or signal on a case and, when it was cleared, who cleared it and why (issue 19).

    Rows are never deleted or rewritten except to record a clearing, so the history of a case's marks can be
    reconstructed. `kind` is `csam` (a verdict: the desk's `cases csam`, or a machine report that says so) or
    `possible_csam` (a signal: term list, hash list). A cleared `possible_csam` row no longer preserves the
    case; a `csam` row's preservation stands even when cleared (18 U.S.C. §2258A(h): one year).
    """

    __tablename__ = "csam_marks"

    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    kind: str = Field(max_length=16)  # csam | possible_csam
    # desk | machine_report | terms:<lang> | hash_match:<label>:<alg>:<distance> | carried:<CASE-ID>
    source: str
    at: datetime = _ts(default_factory=utcnow)
    actor: str | None = Field(default=None, max_length=64)  # None: the intake set it
    reason: str | None = None
    preserve_until: datetime = _ts()
    cleared_at: datetime | None = _ts(default=None, nullable=True)
    cleared_by: str | None = Field(default=None, max_length=64)
    clear_reason: str | None = None


# The desk's tables (issue 20) live in their own module; importing it here registers them wherever the case
# tables are (alembic's env, `compare_metadata`).
from storage import desk_models as desk_models  # noqa: E402
