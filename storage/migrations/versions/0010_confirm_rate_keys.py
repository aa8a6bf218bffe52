"""outbox: the keys the confirmation caps count by (normalised mailbox, registrable domain, client network)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_mailbox", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("rate_domain", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("client_net", sa.String(), nullable=True))
        batch_op.create_index(batch_op.f("ix_outbox_rate_mailbox"), ["rate_mailbox"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_rate_domain"), ["rate_domain"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_rate_domain"))
        batch_op.drop_index(batch_op.f("ix_outbox_rate_mailbox"))
        batch_op.drop_column("client_net")
        batch_op.drop_column("rate_domain")
        batch_op.drop_column("rate_mailbox")
