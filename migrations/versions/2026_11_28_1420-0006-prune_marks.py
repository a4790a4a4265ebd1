"""Prune marks: how far raw usage has been pruned.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 14:20:44.160999
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prune_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prune_marks")),
    )


def downgrade() -> None:
    op.drop_table("prune_marks")
