"""full-text search over message subjects and text: SQLite FTS5 with triggers, PostgreSQL GIN on tsvector

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:50:00
"""

from collections.abc import Sequence

from alembic import op

# Both must equal storage.search's (the query must repeat the index's expression to use it; a test checks).
FTS_TEXT_CHARS = 100_000
PG_TSVECTOR = (
    "to_tsvector('simple'::regconfig, coalesce(messages.subject, '') || ' ' || "
    f"left(coalesce(messages.text, ''), {FTS_TEXT_CHARS}))"
)

revision: str = "0007"
down_revision: str | None = "0006"
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
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(f"CREATE INDEX ix_messages_fts ON messages USING gin ({PG_TSVECTOR})")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_fts")
