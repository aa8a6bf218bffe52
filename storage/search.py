"""Finding cases: the one query behind `cases list` (and, next, the web desk's queue and search).

Why a module of its own: the desk's filters (status, kind, reporter, flag, indicator, free text, time
range) combine freely, and the CLI and the web must agree on what each means, so both build a `CaseFilter`
and call `find_cases`. Full text runs on SQLite FTS5 (`messages_fts`, kept in step with `messages` by
triggers, so the intake transaction, `reprocess`, `purge` and merges need no code of their own) and on
PostgreSQL on a GIN expression index over `to_tsvector('simple', …)` (kept in step by PostgreSQL itself).

What is indexed is the decoded original text (live URLs), the first `FTS_TEXT_CHARS` characters of each
message: a query in the escaped form (`hxxps://bad[.]example`) is turned back into the live form first, so
both find the same cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, String, and_, cast, exists, func, literal_column, or_, text, union_all
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, select

from storage.models import FLAGGED, FLAGS_TEXT, AttachmentItemRow, AttachmentRow, Case, IndicatorRow, Message

# The statuses and kinds a filter may name; anything else is a usage error, never an empty list.
CASE_STATUSES = ("open", "closed", "merged")
MESSAGE_KINDS = ("report", "amendment", "machine_report", "automatic")
# Indexed per message: enough for every report a person writes; a 10 MB paste is searchable by its start
# and its indicators, and does not make one intake transaction index megabytes of text.
FTS_TEXT_CHARS = 100_000
# The same expression in the migration's index and in the query, or PostgreSQL does not use the index.
PG_TSVECTOR = (
    "to_tsvector('simple'::regconfig, coalesce(messages.subject, '') || ' ' || "
    f"left(coalesce(messages.text, ''), {FTS_TEXT_CHARS}))"
)

# A word in more messages than this is searched in the newest this many of them: a desk's search for
# "phishing" on a million messages wants the newest cases, and must answer in a fraction of a second.
TEXT_CANDIDATES = 10_000
# "showing 100 of 316" is counted exactly up to this many matches; beyond it, "of more than 10000".
COUNT_CAP = 10_000

_NEW = f"new.id, new.subject, substr(new.text, 1, {FTS_TEXT_CHARS})"
_OLD = f"'delete', old.id, old.subject, substr(old.text, 1, {FTS_TEXT_CHARS})"
_ADD = f"INSERT INTO messages_fts(rowid, subject, body) VALUES ({_NEW});"
_FORGET = f"INSERT INTO messages_fts(messages_fts, rowid, subject, body) VALUES ({_OLD});"
# The triggers that keep `messages_fts` in step (created by migration 0008). SQLite drops a table's triggers
# when a batch migration rebuilds it, so `schema.upgrade` runs these again after every upgrade.
SQLITE_FTS_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN {_ADD} END",
    f"CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN {_FORGET} END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF subject, text ON messages "
    f"BEGIN {_FORGET} {_ADD} END",
)

# `ix_messages_flagged`'s predicate, spelt out literally (a bound '[]' would hide the match from SQLite).
_FLAGGED_TERM = text(FLAGGED.replace("flags", "messages.flags", 1))

_REFANG = [
    (re.compile(r"(?i)\bhxxp(s?)"), r"http\1"),
    (re.compile(r"\[\.\]|\(\.\)|\{\.\}|\[dot\]", re.I), "."),
    (re.compile(r"\[@\]|\(@\)|\[at\]", re.I), "@"),
    (re.compile(r"\[:\]"), ":"),
]


@dataclass(frozen=True, slots=True)
class CaseFilter:
    status: str | None = None
    kind: str | None = None  # a case holding a message of this kind
    reporter: str | None = None
    flag: str | None = None
    indicator: tuple[str, str | None] | None = None  # (normalised value, host for domain/IP searches)
    text: str | None = None
    since: datetime | None = None  # by last activity (updated_at), as `cases export --since`
    until: datetime | None = None
    digest: str | None = None  # MD5, SHA-1, SHA-256 or PDQ hex of an attachment or of something inside one


def refang(query: str) -> str:
    """The live form of a defanged query, so `hxxps://bad[.]example` finds what `https://bad.example` does."""
    for pattern, replacement in _REFANG:
        query = pattern.sub(replacement, query)
    return query


def _fts5_query(words: str) -> str:
    """Each word a quoted FTS5 phrase (AND between them): punctuation in a URL becomes token order, and
    nothing a user types can be read as FTS5 syntax (NEAR, column filters, `*`)."""
    phrases = [w.replace('"', '""') for w in refang(words).split() if w.strip('"')]
    return " ".join(f'"{p}"' for p in phrases)


def _utc(value: datetime) -> datetime:
    """The store keeps UTC; SQLite compares the stored text, so an offset must be folded in first."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _conditions(engine: Engine, wanted: CaseFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if wanted.status:
        where.append(Case.status == wanted.status)
    if wanted.reporter:
        where.append(Case.reporter == wanted.reporter.strip().lower())
    if wanted.since is not None:
        where.append(Case.updated_at >= _utc(wanted.since))
    if wanted.until is not None:
        where.append(Case.updated_at <= _utc(wanted.until))
    if wanted.kind:
        where.append(exists().where(Message.case_pk == Case.id, Message.kind == wanted.kind))
    if wanted.flag:
        where.append(_flagged(engine, wanted.flag))
    if wanted.indicator is not None:
        value, host = wanted.indicator
        found = [IndicatorRow.value == value]
        if host:
            found += [IndicatorRow.host == host, _subdomains_of(engine, host)]
        where.append(Case.id.in_(select(IndicatorRow.case_pk).where(or_(*found))))
    if wanted.text and wanted.text.strip():
        where.append(Case.id.in_(_text_matches(engine, wanted.text)))
    if wanted.digest is not None:
        where.append(Case.id.in_(_digest_matches(wanted.digest)))
    return where


def _flagged(engine: Engine, flag: str) -> ColumnElement[bool]:
    """Cases with a message flagged `flag` (or `flag:detail`), and for the compartment's two flags also the
    cases marked so (issue 19), whatever their messages say.

    Read off two small partial indexes (issue 20): `ix_messages_flagged` (the few flagged messages, with
    their flags as text; on PostgreSQL the flags column is INCLUDEd, so the scan is index-only) and
    `ix_cases_csam` / `ix_cases_possible_csam`. On SQLite, `+ 0` keeps the planner walking the cases in the
    queue's order and probing that small set, rather than fetching every match and sorting; PostgreSQL
    chooses well by itself, and `+ 0` there turns the compartment's flags into a nested loop (0.9 s on a
    million messages, measured), so it is SQLite's alone."""
    # Flags are a JSON list per message; the quoted form matches a whole flag or its `flag:detail` kin.
    flags = literal_column(FLAGS_TEXT.replace("flags", "messages.flags", 1))  # as the index has it
    pattern = _like(flag)
    matches = or_(flags.like(f'%"{pattern}"%', escape="\\"), flags.like(f'%"{pattern}:%', escape="\\"))
    sources: list[Any] = [select(Message.case_pk).where(_FLAGGED_TERM, matches)]
    if flag in ("csam", "possible_csam"):
        marked = Case.__table__.alias("marked")
        sources.append(select(marked.c.id).where(text(f"marked.{flag}")))
    if engine.dialect.name == "sqlite":
        return (Case.id + literal_column("0")).in_(union_all(*sources))
    if _common(engine, sources[0]):
        # Many cases have it: walking the cases newest first finds a page of them at once, each probe an
        # index lookup that finds nothing for an unflagged case. (Taking every match first and sorting
        # them is what PostgreSQL picks by itself, blind to how common a flag is: 0.5 s on 50,000.)
        # A scalar subquery with LIMIT is never turned into a join: it stays a probe per case walked.
        probe = (
            select(Message.id)
            .where(Message.case_pk == Case.id, _FLAGGED_TERM, matches)
            .limit(1)
            .scalar_subquery()
            .is_not(None)
        )
        marked = [getattr(Case, flag).is_(True)] if flag in ("csam", "possible_csam") else []
        return or_(*marked, probe)
    return Case.id.in_(union_all(*sources))


# Beyond this many flagged messages a flag counts as common (see `_flagged`); counting stops there.
COMMON_FLAG = 2000


def _common(engine: Engine, flagged: Any) -> bool:
    """Does the flag sit on more than `COMMON_FLAG` messages? One index-only count that stops at the bound."""
    with engine.connect() as connection:
        capped = flagged.limit(COMMON_FLAG + 1).subquery()
        return int(connection.execute(select(func.count()).select_from(capped)).scalar_one()) > COMMON_FLAG


# Which columns a digest of this many hex digits can be in (64: SHA-256 or PDQ), each read off its index.
_DIGEST_COLUMNS = {32: ("md5",), 40: ("sha1",), 64: ("sha256", "pdq")}


def _digest_matches(digest: str) -> Any:
    """Cases with an attachment, or something inside one, whose digest is exactly `digest` (issue 19)."""
    value = digest.strip().lower()
    columns = _DIGEST_COLUMNS.get(len(value), ())
    if not columns:
        columns = ("sha256",)  # matches nothing: no digest is that long
    direct = or_(*(getattr(AttachmentRow, c) == value for c in columns))
    nested = or_(*(getattr(AttachmentItemRow, c) == value for c in columns))
    inside = select(AttachmentItemRow.attachment_pk).where(nested)
    holding = select(AttachmentRow.message_pk).where(or_(direct, AttachmentRow.id.in_(inside)))
    return select(Message.case_pk).where(Message.id.in_(holding))


def _subdomains_of(engine: Engine, host: str) -> ColumnElement[bool]:
    """Indicators on a subdomain of `host`: a prefix of the reversed host, read off an index."""
    prefix = host[::-1] + "."
    if engine.dialect.name == "postgresql":  # the index is text_pattern_ops: LIKE 'prefix%' uses it
        return IndicatorRow.host_rev.like(f"{_like(prefix)}%", escape="\\")
    # SQLite compares bytes (BINARY): every string starting with "prefix." sorts before "prefix/".
    return and_(IndicatorRow.host_rev >= prefix, IndicatorRow.host_rev < prefix[:-1] + "/")


def _like(value: str) -> str:
    """A LIKE pattern piece that matches `value` literally (escape character `\\`)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _text_matches(engine: Engine, words: str) -> Any:
    if engine.dialect.name == "postgresql":
        # PostgreSQL's parser keeps a URL with its query string as one lexeme
        # (`host/verify?id=77`): a URL or path typed without the query matches as a prefix.
        tsquery = func.plainto_tsquery("simple", refang(words))
        widened = func.regexp_replace(cast(tsquery, String), "'([^']*/[^']*)'", "'\\1':*", "g")
        condition = literal_column(PG_TSVECTOR).op("@@")(func.to_tsquery("simple", widened))
        newest = select(Message.id).where(condition).order_by(Message.id.desc()).limit(TEXT_CANDIDATES)
        return select(Message.case_pk).where(Message.id.in_(newest))
    # FTS5 walks its rowids (message ids, so age) backwards and stops at the bound.
    rowids = text(
        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q ORDER BY rowid DESC LIMIT :n"
    ).bindparams(q=_fts5_query(words) or '""', n=TEXT_CANDIDATES)
    return select(Message.case_pk).where(Message.id.in_(rowids))


@dataclass(frozen=True, slots=True)
class CaseMatches:
    rows: list[dict[str, Any]]
    total: int  # how many match; when `more`, at least this many
    more: bool = False

    def cut_note(self) -> str | None:
        """What the desk is told when the list is not the whole answer."""
        if self.total <= len(self.rows):
            return None
        of = f"more than {self.total}" if self.more else str(self.total)
        return f"showing {len(self.rows)} of {of}; --limit N or --since T"


def find_cases(engine: Engine, wanted: CaseFilter, limit: int = 100) -> CaseMatches:
    """The newest `limit` cases matching every filter, and how many match in all (counted only when the
    limit cut the list, and only up to `COUNT_CAP`, so neither a short answer nor a broad one is slow)."""
    where = _conditions(engine, wanted)
    newest: Any = Case.created_at
    if engine.dialect.name == "postgresql" and (wanted.text or wanted.indicator or wanted.digest):
        # Few cases match these, and PostgreSQL cannot tell: with `ix_cases_created_id` it would walk every
        # case newest first probing the matches (1.3 s for one word on a million messages, measured).
        # Ordering by an expression no index has makes it take the matches first and sort those.
        newest = Case.created_at + literal_column("interval '0 seconds'")
    query = select(Case).where(*where).order_by(newest.desc(), Case.id.desc()).limit(limit)
    with Session(engine) as session:
        cases = list(session.exec(query).all())
        counts: dict[int, int] = {}
        if cases:
            counts = {
                int(pk): int(n)
                for pk, n in session.exec(
                    select(Message.case_pk, func.count(Message.id))
                    .where(Message.case_pk.in_([c.id for c in cases]))
                    .group_by(Message.case_pk)
                ).all()
            }
        total, more = len(cases), False
        if total >= limit:
            capped = select(Case.id).where(*where).limit(COUNT_CAP + 1).subquery()
            total = int(session.exec(select(func.count()).select_from(capped)).one())
            if total > COUNT_CAP:
                total, more = COUNT_CAP, True
        return CaseMatches([summary(case, counts.get(case.id or 0, 0)) for case in cases], total, more)


def summary(case: Case, messages: int) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "status": case.status,
        "kind": case.kind,
        "reporter": case.reporter,
        "subject": case.escaped_subject,
        "messages": messages,
        "hold": case.hold,
        "csam": case.csam,
        "possible_csam": case.possible_csam,
        "created_at": iso(case.created_at),
        "updated_at": iso(case.updated_at),
        "assignee": case.assignee,  # issue 20
    }


def iso(value: datetime | None) -> str | None:
    """Every time the desk is shown carries its offset (UTC), so no one reads it as local time."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()
