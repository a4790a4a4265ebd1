"""Billing periods: closed months and the lines booked in them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 13:52:05.590647
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "period_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("billing_month", sa.String(length=7), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("charge_hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cluster", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("job_name", sa.String(length=256), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("phase", sa.String(length=128), nullable=False),
        sa.Column("team", sa.String(length=128), nullable=False),
        sa.Column("user_name", sa.String(length=128), nullable=False),
        sa.Column("gpu_model", sa.String(length=128), nullable=False),
        sa.Column("micro_usd_per_gpu_hour", sa.BigInteger(), nullable=False),
        sa.Column("default_rate", sa.Boolean(), nullable=False),
        sa.Column("gpu_nano_hours", sa.BigInteger(), nullable=False),
        sa.Column("busy_nano_hours", sa.BigInteger(), nullable=False),
        sa.Column("energy_nano_kwh", sa.BigInteger(), nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), nullable=False),
        sa.Column("energy_cost_nano", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_period_lines")),
    )
    op.create_index(
        op.f("ix_period_lines_charge_hour"), "period_lines", ["charge_hour"], unique=False
    )
    op.create_index(
        "ix_period_lines_month_kind", "period_lines", ["billing_month", "kind"], unique=False
    )
    op.create_table(
        "periods",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_periods")),
    )


def downgrade() -> None:
    op.drop_table("periods")
    op.drop_index("ix_period_lines_month_kind", table_name="period_lines")
    op.drop_index(op.f("ix_period_lines_charge_hour"), table_name="period_lines")
    op.drop_table("period_lines")
