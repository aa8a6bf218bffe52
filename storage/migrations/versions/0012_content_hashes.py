"""attachments: MD5, SHA-1 and PDQ beside SHA-256, all indexed; attachment_items for what is inside
(ZIP members, parts of attached messages) — issue 19, known-material matching and `cases list --hash`

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("md5", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.add_column(sa.Column("sha1", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(sa.Column("pdq", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_attachments_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_attachments_md5"), ["md5"], unique=False)
        batch_op.create_index(batch_op.f("ix_attachments_sha1"), ["sha1"], unique=False)
        batch_op.create_index(batch_op.f("ix_attachments_pdq"), ["pdq"], unique=False)
    op.create_table(
        "attachment_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attachment_pk", sa.Integer(), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("md5", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("sha1", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("pdq", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(["attachment_pk"], ["attachments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attachment_items", schema=None) as batch_op:
        for column in ("attachment_pk", "sha256", "md5", "sha1", "pdq"):
            batch_op.create_index(batch_op.f(f"ix_attachment_items_{column}"), [column], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attachment_items", schema=None) as batch_op:
        for column in ("pdq", "sha1", "md5", "sha256", "attachment_pk"):
            batch_op.drop_index(batch_op.f(f"ix_attachment_items_{column}"))
    op.drop_table("attachment_items")
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        for column in ("pdq", "sha1", "md5", "sha256"):
            batch_op.drop_index(batch_op.f(f"ix_attachments_{column}"))
        batch_op.drop_column("pdq")
        batch_op.drop_column("sha1")
        batch_op.drop_column("md5")
