"""GPU occupancy: a GPU's stored intervals never overlap; and where each GPU has been.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-01 00:30:00

PostgreSQL enforces occupancy with an exclusion constraint (btree_gist supplies `=` on the
GPU's id inside the GiST index); SQLite, whose writers take turns, with a trigger. Reports
stored before this revision occupy their GPUs (a MIG device: itself, its GPU unknown) from
their start, with no tolerance; where one overlaps earlier stored time (counted twice before
occupancy was enforced, and left as counted), it occupies only the rest of its interval, so
that no stored time is left open to being counted again.
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
TRIGGERS = {"INSERT": "tr_gpu_occupancy_overlap", "UPDATE": "tr_gpu_occupancy_overlap_update"}
# The message the trigger aborts with; ingest checks first, so only a bug would see it.
OVERLAP_MESSAGE = "gpu_occupancy overlap"

# Each GPU's reports in order; each guarded from the later of its start and the latest end
# before it, and left out when earlier reports cover it whole.
BACKFILL = """
INSERT INTO gpu_occupancy (gpu_id, report_id, period_start, period_end, guard_start)
SELECT gpu_id, report_id, period_start, period_end, guard_start FROM (
    SELECT gpu_id, report_id, period_start, period_end,
        CASE WHEN prior_end > period_start THEN prior_end ELSE period_start END AS guard_start
    FROM (
        SELECT u.gpu_id, r.id AS report_id, r.period_start, r.period_end,
            max(r.period_end) OVER (
                PARTITION BY u.gpu_id ORDER BY r.period_start, r.id
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
            ) AS prior_end
        FROM (SELECT DISTINCT gpu_id, report_id FROM usage) u
        JOIN reports r ON r.id = u.report_id
    ) ordered
) guarded
WHERE guard_start < period_end
"""


def _trigger(event: str) -> str:
    # On an insert, and on an update (ingest extends a span that a report carries on).
    other = "AND o.rowid <> OLD.rowid " if event == "UPDATE" else ""
    return (
        f"CREATE TRIGGER {TRIGGERS[event]} BEFORE {event} ON gpu_occupancy "
        "WHEN EXISTS (SELECT 1 FROM gpu_occupancy o WHERE o.gpu_id = NEW.gpu_id "
        f"{other}AND o.period_end > NEW.guard_start AND o.guard_start < NEW.period_end) "
        f"BEGIN SELECT RAISE(ABORT, '{OVERLAP_MESSAGE}'); END"
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
        op.execute(BACKFILL)
    else:
        op.execute(BACKFILL)
        for event in TRIGGERS:
            op.execute(_trigger(event))

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
        for trigger in TRIGGERS.values():
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_index("ix_gpu_occupancy_gpu_id_period_end", table_name="gpu_occupancy")
    op.drop_table("gpu_occupancy")
