"""Make the job-hour unique index cover usage figures on PostgreSQL, for index-only cost reads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "uq_usage_hourly_job_hour"
COLUMNS = ["job_id", "gpu_model", "hour"]
WHERE = sa.text("job_id IS NOT NULL")


def _recreate(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no INCLUDE; its index stays as it is.
    op.drop_index(NAME, table_name="usage_hourly", postgresql_where=WHERE)
    op.create_index(
        NAME,
        "usage_hourly",
        COLUMNS,
        unique=True,
        postgresql_include=include,
        postgresql_where=WHERE,
    )


def upgrade() -> None:
    _recreate(["cluster_id", "gpu_us", "busy_us", "energy_mj"])


def downgrade() -> None:
    _recreate([])
