"""Rate cards: USD per GPU-hour by GPU model and cluster, USD per kWh, effective-dated.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:32:47.261964
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "energy_rates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("micro_usd_per_kwh", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_energy_rates_cluster_id_clusters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_energy_rates")),
    )
    op.create_index(
        "uq_energy_rates_cluster_key",
        "energy_rates",
        ["cluster_id", "effective_from"],
        unique=True,
        postgresql_where=sa.text("cluster_id IS NOT NULL"),
        sqlite_where=sa.text("cluster_id IS NOT NULL"),
    )
    op.create_index(
        "uq_energy_rates_general_key",
        "energy_rates",
        ["effective_from"],
        unique=True,
        postgresql_where=sa.text("cluster_id IS NULL"),
        sqlite_where=sa.text("cluster_id IS NULL"),
    )
    op.create_table(
        "rates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(length=128), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("micro_usd_per_gpu_hour", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_rates_cluster_id_clusters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rates")),
    )
    op.create_index(
        "uq_rates_cluster_key",
        "rates",
        ["gpu_model", "cluster_id", "effective_from"],
        unique=True,
        postgresql_where=sa.text("cluster_id IS NOT NULL"),
        sqlite_where=sa.text("cluster_id IS NOT NULL"),
    )
    op.create_index(
        "uq_rates_general_key",
        "rates",
        ["gpu_model", "effective_from"],
        unique=True,
        postgresql_where=sa.text("cluster_id IS NULL"),
        sqlite_where=sa.text("cluster_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_rates_general_key",
        table_name="rates",
        postgresql_where=sa.text("cluster_id IS NULL"),
        sqlite_where=sa.text("cluster_id IS NULL"),
    )
    op.drop_index(
        "uq_rates_cluster_key",
        table_name="rates",
        postgresql_where=sa.text("cluster_id IS NOT NULL"),
        sqlite_where=sa.text("cluster_id IS NOT NULL"),
    )
    op.drop_table("rates")
    op.drop_index(
        "uq_energy_rates_general_key",
        table_name="energy_rates",
        postgresql_where=sa.text("cluster_id IS NULL"),
        sqlite_where=sa.text("cluster_id IS NULL"),
    )
    op.drop_index(
        "uq_energy_rates_cluster_key",
        table_name="energy_rates",
        postgresql_where=sa.text("cluster_id IS NOT NULL"),
        sqlite_where=sa.text("cluster_id IS NOT NULL"),
    )
    op.drop_table("energy_rates")
