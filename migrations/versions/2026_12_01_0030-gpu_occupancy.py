"""GPU occupancy: a GPU's stored intervals never overlap; and where each GPU has been.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-01 00:30:00

PostgreSQL enforces occupancy with an exclusion constraint (btree_gist supplies `=` on the
GPU's id inside the GiST index); SQLite, whose writers take turns, with a trigger. Reports
stored before this revision occupy their GPUs from their start (no tolerance); where they
already overlap, the earliest stored report occupies the time and the others' usage stays as
it was counted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXCLUSION = "ex_gpu_occupancy_overlap"
TRIGGER = "tr_gpu_occupancy_overlap"
# The message the trigger aborts with; ingest checks first, so only a bug would see it.
OVERLAP_MESSAGE = "gpu_occupancy overlap"

BACKFILL = """
INSERT INTO gpu_occupancy (gpu_id, report_id, period_start, period_end, guard_start)
SELECT DISTINCT u.gpu_id, r.id, r.period_start, r.period_end, r.period_start
FROM usage u JOIN reports r ON r.id = u.report_id
ORDER BY r.id, u.gpu_id
"""


def _trigger(action: str) -> str:
    return (
        f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON gpu_occupancy "
        "WHEN EXISTS (SELECT 1 FROM gpu_occupancy o WHERE o.gpu_id = NEW.gpu_id "
        "AND o.period_end > NEW.guard_start AND o.guard_start < NEW.period_end) "
        f"BEGIN SELECT RAISE({action}); END"
    )


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "gpu_occupancy",
        sa.Column("gpu_id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("guard_start", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_gpu_occupancy_gpu_id_period_end", "gpu_occupancy", ["gpu_id", "period_end"])
    if postgresql:
        op.execute(
            f"ALTER TABLE gpu_occupancy ADD CONSTRAINT {EXCLUSION} EXCLUDE USING gist "
            "(gpu_id WITH =, tstzrange(guard_start, period_end) WITH &&)"
        )
        op.execute(BACKFILL + " ON CONFLICT DO NOTHING")
    else:
        # The backfill skips overlapping rows as PostgreSQL's DO NOTHING does, then the
        # trigger refuses them.
        op.execute(_trigger("IGNORE"))
        op.execute(BACKFILL)
        op.execute(f"DROP TRIGGER {TRIGGER}")
        op.execute(_trigger(f"ABORT, '{OVERLAP_MESSAGE}'"))

    op.create_table(
        "gpu_placements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gpu_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["gpu_id"], ["gpus.id"], name="fk_gpu_placements_gpu_id_gpus"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_gpu_placements_node_id_nodes"),
        sa.PrimaryKeyConstraint("id", name="pk_gpu_placements"),
    )
    op.create_index("ix_gpu_placements_gpu_id_since", "gpu_placements", ["gpu_id", "since"])
    op.execute(
        "INSERT INTO gpu_placements (gpu_id, node_id, gpu_index, since) "
        "SELECT id, node_id, gpu_index, first_seen FROM gpus"
    )


def downgrade() -> None:
    op.drop_index("ix_gpu_placements_gpu_id_since", table_name="gpu_placements")
    op.drop_table("gpu_placements")
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    op.drop_index("ix_gpu_occupancy_gpu_id_period_end", table_name="gpu_occupancy")
    op.drop_table("gpu_occupancy")
