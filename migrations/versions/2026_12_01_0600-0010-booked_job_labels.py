"""Booked job labels: a closed month keeps the labels its jobs had, for the export's Tags.

Months closed before this revision get their jobs' labels as they are now: the best record
there is, and what keeps corrections from reading every labelled job as re-labelled. Jobs'
labels are rewritten in key order (equal labels, equal text), and a label key under gpucost's
own tag prefix, `gpucost/`, which labels may no longer take, becomes `x-gpucost/…`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 06:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sort_job_labels() -> None:
    """Jobs' labels in key order, as they are stored from now on: equal labels, equal text."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, CAST(labels AS TEXT) FROM jobs WHERE CAST(labels AS TEXT) <> '{}'")
    ).all()
    value = "CAST(:labels AS json)" if bind.dialect.name == "postgresql" else ":labels"
    for job_id, text in rows:
        labels = json.loads(text) if text else {}
        if not isinstance(labels, dict):
            labels = {}
        # Keys under gpucost's own tag prefix, now refused, move out of its way.
        labels = {
            f"x-{key}" if key.lower().startswith("gpucost/") else key: value
            for key, value in labels.items()
        }
        ordered = json.dumps(dict(sorted(labels.items())))
        if ordered != text:
            bind.execute(
                sa.text(f"UPDATE jobs SET labels = {value} WHERE id = :id"),
                {"labels": ordered, "id": job_id},
            )


def upgrade() -> None:
    _sort_job_labels()
    with op.batch_alter_table("period_lines") as batch:
        batch.add_column(sa.Column("labels", sa.Text(), nullable=False, server_default="{}"))
    labelled = """
        SELECT CAST(jobs.labels AS TEXT)
        FROM jobs JOIN clusters ON clusters.id = jobs.cluster_id
        WHERE clusters.name = period_lines.cluster AND jobs.scheduler_job_id = period_lines.job_id
          AND CAST(jobs.labels AS TEXT) <> '{}'
    """
    # Only the lines of labelled jobs are written: the rest keep the default.
    op.execute(
        f"UPDATE period_lines SET labels = ({labelled}) "
        f"WHERE job_id IS NOT NULL AND EXISTS ({labelled})"
    )


def downgrade() -> None:
    with op.batch_alter_table("period_lines") as batch:
        batch.drop_column("labels")
