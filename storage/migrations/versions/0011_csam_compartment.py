"""the CSAM compartment: possible_csam, preserve_until, csam_marks, structured view audit (issue 19)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:50:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a CSAM case stored before this revision was promised (purge kept it 365 days from its creation).
_BACKFILL_DAYS = 365


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("possible_csam", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("preserve_until", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.add_column(sa.Column("message_pk", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("message_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("attachment_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_events_case_id"), ["case_id"], unique=False)

    marks = op.create_table(
        "csam_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("preserve_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("clear_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("csam_marks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_csam_marks_case_pk"), ["case_pk"], unique=False)

    # CSAM cases from before: the mark they had (a machine report) becomes a row, and the 365 days purge
    # counted from their creation become their preservation.
    bind = op.get_bind()
    cases = sa.table(
        "cases",
        sa.column("id", sa.Integer()),
        sa.column("csam", sa.Boolean()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("preserve_until", sa.DateTime(timezone=True)),
    )
    for pk, created in bind.execute(sa.select(cases.c.id, cases.c.created_at).where(cases.c.csam)).all():
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        until = created + timedelta(days=_BACKFILL_DAYS)
        bind.execute(sa.update(cases).where(cases.c.id == pk).values(preserve_until=until))
        bind.execute(
            sa.insert(marks).values(
                case_pk=pk,
                kind="csam",
                source="machine_report",
                at=created or datetime.now(UTC),
                preserve_until=until,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("csam_marks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_csam_marks_case_pk"))
    op.drop_table("csam_marks")

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_case_id"))
        batch_op.drop_column("reason")
        batch_op.drop_column("attachment_index")
        batch_op.drop_column("message_index")
        batch_op.drop_column("message_pk")
        batch_op.drop_column("case_id")

    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("preserve_until")
        batch_op.drop_column("possible_csam")
