"""Raw usage folded per GPU, job and UTC hour once past its retention (app.retention._fold).

`gpucost db prune` adds the raw usage it deletes to `usage_gpu_hourly` from here on; usage
pruned before this revision was deleted without a trace, so the table starts empty.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_gpu_hourly",
        sa.Column("gpu_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gpu_us", sa.BigInteger(), nullable=False),
        sa.Column("busy_us", sa.BigInteger(), nullable=False),
        sa.Column("energy_mj", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "uq_usage_gpu_hourly_job",
        "usage_gpu_hourly",
        ["job_id", "gpu_id", "hour"],
        unique=True,
        postgresql_where=sa.text("job_id IS NOT NULL"),
        sqlite_where=sa.text("job_id IS NOT NULL"),
    )
    op.create_index(
        "uq_usage_gpu_hourly_idle",
        "usage_gpu_hourly",
        ["gpu_id", "hour"],
        unique=True,
        postgresql_where=sa.text("job_id IS NULL"),
        sqlite_where=sa.text("job_id IS NULL"),
    )
    op.create_index("ix_usage_gpu_hourly_gpu_id_hour", "usage_gpu_hourly", ["gpu_id", "hour"])


def downgrade() -> None:
    # After a prune these records are the only trace of the raw usage they fold.
    held = op.get_bind().execute(sa.text("SELECT count(*) FROM usage_gpu_hourly")).scalar_one()
    if held:
        raise RuntimeError(
            f"usage_gpu_hourly holds {held} GPU-hour records, the only trace of the raw usage"
            " pruned into them: downgrading would lose them (empty the table by hand first)"
        )
    op.drop_table("usage_gpu_hourly")
