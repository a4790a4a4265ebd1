"""Upgrading a database with reports stored before occupancy was enforced: every stored
moment is occupied afterwards, overlapping legacy reports included."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from app.core import migrate
from app.core.config import Settings
from app.main import create_app
from app.models import GPU_OCCUPANCY, USAGE, Cluster, Gpu, Node, Report
from app.tokens.service import create_token
from tests.migrations.test_migrations import scratch_engine  # noqa: F401 (fixture)
from tests.support import CLUSTER, DEFAULT_NOW, SettableClock, entry, report

T = datetime(2025, 1, 6, tzinfo=UTC)
# Legacy reports of one GPU: (seq, start, end) as hours after midnight.
LEGACY = [
    (1, 10, 11),  # A
    (2, 11 - 0.5 / 3600, 12),  # B: half a second over A, a clock step
    (3, 12, 13),  # C
    (4, 10.25, 10.75),  # D: inside A, the same time counted twice before
]


def at(hours: float) -> datetime:
    return T + timedelta(seconds=round(hours * 3600, 1))


def store_legacy(engine: Engine) -> dict[int, int]:
    """The legacy rows, as 0007 stored them; report ids by seq."""
    ids = {}
    with Session(engine) as session, session.begin():

        def add(table: Any, **values: object) -> int:
            return int(session.execute(insert(table).returning(table.id), [values]).scalar_one())

        cluster = add(Cluster, name=CLUSTER, created_at=T)
        seen = {"first_seen": T, "last_interval_end": T, "last_report_at": T}
        node = add(Node, cluster_id=cluster, name="node-017", **seen)
        gpu_uuid = entry()["uuid"]
        gpu = add(Gpu, uuid=gpu_uuid, node_id=node, gpu_index=0, model="H800", first_seen=T)
        for seq, start, end in LEGACY:
            ids[seq] = add(
                Report,
                node_id=node,
                seq=seq,
                period_start=at(start),
                period_end=at(end),
                received_at=T,
                payload_sha256="0" * 64,
                entries=1,
            )
            usage = {"report_id": ids[seq], "gpu_id": gpu, "job_id": None}
            amounts = {"gpu_us": 1, "busy_us": 0, "energy_mj": 0, "mem_peak_bytes": 0}
            session.execute(
                insert(USAGE), [{**usage, **amounts, "period_start": at(start), "util_pct": 0.0}]
            )
    return ids


def test_legacy_reports_occupy_all_their_time_after_the_upgrade(
    scratch_engine: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    migrate.upgrade(scratch_engine, "0007")
    ids = store_legacy(scratch_engine)
    migrate.upgrade(scratch_engine)

    with Session(scratch_engine) as session:
        spans = session.execute(
            select(
                GPU_OCCUPANCY.c.report_id,
                GPU_OCCUPANCY.c.guard_start,
                GPU_OCCUPANCY.c.period_end,
            ).order_by(GPU_OCCUPANCY.c.report_id)
        ).all()
        # B occupies what A did not; D, inside A, adds nothing.
        assert [(r, g, e) for r, g, e in spans] == [
            (ids[1], at(10), at(11)),
            (ids[2], at(11), at(12)),
            (ids[3], at(12), at(13)),
        ]
        _, token = create_token(
            session, role="collector", cluster=CLUSTER, name="c", actor="t", now=DEFAULT_NOW
        )
        session.commit()

    url = scratch_engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url), clock=SettableClock(DEFAULT_NOW))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        for start, end in [("11:00", "12:00"), ("10:20", "10:30"), ("12:30", "13:00")]:
            body = report(
                1,
                node="node-b",
                start=f"2025-01-06T{start}:00Z",
                end=f"2025-01-06T{end}:00Z",
                gpus=[entry(gpu_seconds=0)],
            )
            response = client.post("/v1/reports", json=body, headers=headers)
            assert response.status_code == 409, (start, response.text)
        after = report(1, node="node-b", start="2025-01-06T13:00:00Z", end="2025-01-06T13:01:00Z")
        assert client.post("/v1/reports", json=after, headers=headers).status_code == 201
