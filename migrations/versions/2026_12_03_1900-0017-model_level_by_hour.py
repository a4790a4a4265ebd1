"""The model level's key ordered model, hour, phase, cluster.

A model's busiest hour sums its GPU-time per hour over phases and clusters. Keyed (model,
phase, cluster, hour), a model's rows come out of the index by phase first, so they were
hashed by hour (8.8 ms for a year of one model's 8,760 hours); keyed (model, hour, phase,
cluster), they come out by hour and are summed in one pass (4.7 ms). The upsert's key and
a relabelling's look-up (model, phase, cluster and a list of hours) use the new index as
well. The new index is built before the old one is dropped, so that the upsert always has
its arbiter.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "usage_model_hourly"
OLD = (
    "uq_usage_model_hourly_model_phase_cluster_id_hour",
    ["model", "phase", "cluster_id", "hour"],
)
NEW = (
    "uq_usage_model_hourly_model_hour_phase_cluster_id",
    ["model", "hour", "phase", "cluster_id"],
)


def _replace(built: tuple[str, list[str]], dropped: tuple[str, list[str]]) -> None:
    name, columns = built
    op.create_index(name, TABLE, columns, unique=True, postgresql_include=["gpu_us"])
    op.drop_index(dropped[0], table_name=TABLE)


def upgrade() -> None:
    _replace(NEW, OLD)


def downgrade() -> None:
    _replace(OLD, NEW)
