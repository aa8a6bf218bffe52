"""mail authentication (issue 22): the HELO name on inbox entries, the SPF/DKIM/DMARC summary on messages

Revision ID: 0015
Revises: 0014 (the `users` branch's migration; this one was tested chained on 0013)
Create Date: 2026-12-02 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("helo", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("authentication", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("authentication")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("helo")
