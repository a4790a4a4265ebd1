"""Raw usage without a surrogate key.

Nothing reads raw usage's `id`, and every index on it is paid for on each row ingest stores
(2.8M rows inserted: 1.65 s with no index, 4.3 s with one B-tree, 5.9 with two, 8.3 with
three) and in the bytes of every GPU-day kept. On PostgreSQL, dropping the column rewrites
nothing (existing rows keep its 8 bytes until pruned) and dropping the primary key is
quick; on SQLite the table is copied.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("usage") as batch:
            batch.drop_column("id")
        return
    op.drop_constraint("pk_usage", "usage", type_="primary")
    # The column owns its sequence (0005), which goes with it: dropped by name as well, so
    # that none is left behind whatever the sequence's owner.
    op.drop_column("usage", "id")
    op.execute("DROP SEQUENCE IF EXISTS usage_id_seq")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # Rebuilt with `id` first, as it was; an INTEGER PRIMARY KEY, numbered by SQLite as
        # the rows are copied.
        with op.batch_alter_table("usage", recreate="always") as batch:
            batch.add_column(
                sa.Column("id", sa.Integer(), nullable=False), insert_before="report_id"
            )
            batch.create_primary_key("pk_usage", ["id"])
        return
    op.execute("CREATE SEQUENCE usage_id_seq")
    # Numbers every row there is (a rewrite of each partition), then each one stored. It
    # comes back as the last column: 0005's downgrade copies rows by name.
    op.execute("ALTER TABLE usage ADD COLUMN id BIGINT NOT NULL DEFAULT nextval('usage_id_seq')")
    op.execute("ALTER SEQUENCE usage_id_seq OWNED BY usage.id")
    # A partitioned table's primary key must hold the partition key (0005).
    op.create_primary_key("pk_usage", "usage", ["id", "period_start"])
