"""the desk's search: full text (SQLite FTS5 with triggers, PostgreSQL GIN on tsvector), reversed hosts for
subdomain lookups, the queue's status + created_at index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# Both must equal storage.search's (the query must repeat the index's expression to use it; a test checks).
FTS_TEXT_CHARS = 100_000
PG_TSVECTOR = (
    "to_tsvector('simple'::regconfig, coalesce(messages.subject, '') || ' ' || "
    f"left(coalesce(messages.text, ''), {FTS_TEXT_CHARS}))"
)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Contentless (content=''): the text already lives in `messages`; the index holds only tokens. A
# contentless table forgets a row only when told the values it indexed, so every trigger passes the same
# expressions. unicode61 folds case and diacritics; URL punctuation splits tokens, and a query phrase
# splits the same way, so `login-bank.example.com` finds the URL it is part of.
_ROW = f"subject, substr(text, 1, {FTS_TEXT_CHARS})"
_SQLITE = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "subject, body, content='', tokenize='unicode61 remove_diacritics 2')",
    f"INSERT INTO messages_fts(rowid, subject, body) SELECT id, {_ROW} FROM messages",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    f"INSERT INTO messages_fts(rowid, subject, body) VALUES (new.id, new.subject, "
    f"substr(new.text, 1, {FTS_TEXT_CHARS})); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, subject, body) VALUES ('delete', old.id, old.subject, "
    f"substr(old.text, 1, {FTS_TEXT_CHARS})); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, text ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, subject, body) VALUES ('delete', old.id, old.subject, "
    f"substr(old.text, 1, {FTS_TEXT_CHARS})); "
    "INSERT INTO messages_fts(rowid, subject, body) VALUES (new.id, new.subject, "
    f"substr(new.text, 1, {FTS_TEXT_CHARS})); END",
]


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(f"CREATE INDEX ix_messages_fts ON messages USING gin ({PG_TSVECTOR})")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_status_created", ["status", "created_at"], unique=False)
    with op.batch_alter_table("indicators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_rev", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    # SQLite has no reverse(): the rows are filled from Python, a batch at a time.
    indicators = sa.table("indicators", sa.column("id", sa.Integer), sa.column("host"), sa.column("host_rev"))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(indicators.c.id, indicators.c.host)
            .where(indicators.c.id > last, indicators.c.host.is_not(None))
            .order_by(indicators.c.id)
            .limit(20_000)
        ).all()
        if not rows:
            break
        bind.execute(
            indicators.update()
            .where(indicators.c.id == sa.bindparam("pk"))
            .values(host_rev=sa.bindparam("rev")),
            [{"pk": pk, "rev": host[::-1]} for pk, host in rows],
        )
        last = rows[-1][0]
    if dialect == "postgresql":
        op.execute("CREATE INDEX ix_indicators_host_rev ON indicators (host_rev text_pattern_ops)")
    else:
        op.create_index("ix_indicators_host_rev", "indicators", ["host_rev"], unique=False)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_indicators_host_rev", table_name="indicators")
    with op.batch_alter_table("indicators", schema=None) as batch_op:
        batch_op.drop_column("host_rev")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_status_created")
    if dialect == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_fts")
