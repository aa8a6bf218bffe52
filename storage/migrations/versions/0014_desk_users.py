"""the desk (issue 20): desk_users, desk_sessions, login_failures, case_notes, cases.assignee, queue indexes

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STR = sqlmodel.sql.sqltypes.AutoString
_FLAGGED = "CAST(flags AS VARCHAR) != '[]'"  # storage.models.FLAGGED, frozen as of this revision


def upgrade() -> None:
    op.create_table(
        "desk_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _STR(length=64), nullable=False),
        sa.Column("role", _STR(length=16), nullable=False),
        sa.Column("password_hash", _STR(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "desk_sessions",
        sa.Column("token_hash", _STR(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", _STR(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["desk_users.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("desk_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_desk_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_desk_sessions_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", _STR(length=64), nullable=False),
        sa.Column("client", _STR(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_at"), ["at"], unique=False)
        batch_op.create_index("ix_login_failures_name_at", ["name", "at"], unique=False)
        batch_op.create_index("ix_login_failures_client_at", ["client", "at"], unique=False)

    op.create_table(
        "case_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("author", _STR(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("case_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_notes_case_pk"), ["case_pk"], unique=False)

    # Adding a nullable column and indexes needs no table rebuild on SQLite: a large store upgrades in
    # the time the three indexes take to build.
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assignee", _STR(length=64), nullable=True))
        batch_op.drop_index("ix_cases_created_at")
        batch_op.create_index("ix_cases_created_id", ["created_at", "id"], unique=False)
        batch_op.drop_index("ix_cases_status_created")
        batch_op.create_index("ix_cases_status_created", ["status", "created_at", "id"], unique=False)
        batch_op.create_index("ix_cases_assignee_created", ["assignee", "created_at", "id"], unique=False)
        for flag in ("csam", "possible_csam"):  # the compartment's few cases, for the flag filter
            batch_op.create_index(
                f"ix_cases_{flag}",
                ["id"],
                unique=False,
                sqlite_where=sa.text(flag),
                postgresql_where=sa.text(flag),
            )

    # The few flagged messages, by case, with their flags: the flag filter reads this (predicate and
    # expression are the query's, storage.models.FLAGGED and FLAGS_TEXT).
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_flagged",
            ["case_pk", sa.text("CAST(flags AS VARCHAR)")],
            unique=False,
            postgresql_include=["flags"],
            sqlite_where=sa.text(_FLAGGED),
            postgresql_where=sa.text(_FLAGGED),
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_flagged")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_possible_csam")
        batch_op.drop_index("ix_cases_csam")
        batch_op.drop_index("ix_cases_assignee_created")
        batch_op.drop_index("ix_cases_status_created")
        batch_op.create_index("ix_cases_status_created", ["status", "created_at"], unique=False)
        batch_op.drop_index("ix_cases_created_id")
        batch_op.create_index("ix_cases_created_at", ["created_at"], unique=False)
        batch_op.drop_column("assignee")

    with op.batch_alter_table("case_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_notes_case_pk"))
    op.drop_table("case_notes")
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_login_failures_client_at")
        batch_op.drop_index("ix_login_failures_name_at")
        batch_op.drop_index(batch_op.f("ix_login_failures_at"))
    op.drop_table("login_failures")
    with op.batch_alter_table("desk_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_desk_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_desk_sessions_user_id"))
    op.drop_table("desk_sessions")
    op.drop_table("desk_users")
