"""inbox: an unknown envelope sender is NULL, not the null sender ""; a per-entry confirm choice

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:20:00

`ingest` of a file without envelope stored "" (the null sender), so every imported report classified as a
bounce (issue 16.4); and whether a backlog import mails confirmations is now the operator's choice, kept
with each entry because the intake children decide it later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.alter_column("mail_from", existing_type=sa.String(), nullable=True)
        batch_op.add_column(sa.Column("confirm", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column("envelope_sender", existing_type=sa.String(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE messages SET envelope_sender = '' WHERE envelope_sender IS NULL")
    op.execute("UPDATE inbox SET mail_from = '' WHERE mail_from IS NULL")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column("envelope_sender", existing_type=sa.String(), nullable=False)
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("confirm")
        batch_op.alter_column("mail_from", existing_type=sa.String(), nullable=False)
