"""case links (same reporter, split from), reversible merges and splits, merged cases

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged_into_pk", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_cases_merged_into_pk", "cases", ["merged_into_pk"], ["id"])
        batch_op.create_index("ix_cases_reporter_created", ["reporter", "created_at"], unique=False)

    op.create_table(
        "case_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("other_pk", sa.Integer(), nullable=False),
        sa.Column("relation", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"]),
        sa.ForeignKeyConstraint(["other_pk"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_pk", "other_pk", "relation"),
    )
    op.create_index("ix_case_links_case_pk", "case_links", ["case_pk"], unique=False)
    op.create_index("ix_case_links_other_pk", "case_links", ["other_pk"], unique=False)

    op.create_table(
        "case_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("source_pk", sa.Integer(), nullable=False),
        sa.Column("target_pk", sa.Integer(), nullable=False),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("outbox_pks", sa.JSON(), nullable=False),
        sa.Column("indicator_pks", sa.JSON(), nullable=False),
        sa.Column("prior_status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(["source_pk"], ["cases.id"]),
        sa.ForeignKeyConstraint(["target_pk"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_moves_source_pk", "case_moves", ["source_pk"], unique=False)
    op.create_index("ix_case_moves_target_pk", "case_moves", ["target_pk"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_case_moves_target_pk", table_name="case_moves")
    op.drop_index("ix_case_moves_source_pk", table_name="case_moves")
    op.drop_table("case_moves")
    op.drop_index("ix_case_links_other_pk", table_name="case_links")
    op.drop_index("ix_case_links_case_pk", table_name="case_links")
    op.drop_table("case_links")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_reporter_created")
        batch_op.drop_constraint("fk_cases_merged_into_pk", type_="foreignkey")
        batch_op.drop_column("merged_into_pk")
