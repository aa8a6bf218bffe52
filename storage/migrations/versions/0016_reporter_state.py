"""reporters (issue 21): the state they see, status-link generation, language, receipts and desk replies

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reporter_state",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="received",
            )
        )
        batch_op.add_column(sa.Column("reporter_state_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("status_generation", sa.Integer(), nullable=False, server_default="0"))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True))
        batch_op.add_column(sa.Column("receipt", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("in_reply_to", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        for column in ("in_reply_to", "body", "subject", "receipt", "language"):
            batch_op.drop_column(column)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        for column in ("status_generation", "reporter_state_at", "reporter_state"):
            batch_op.drop_column(column)
