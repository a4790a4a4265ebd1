"""A batch is stored in one transaction, and stores exactly what its reports sent one by one
would have stored: the same raw rows, rollup sums, job spans, node and GPU records. Reports
of several requests stored together: one the database refuses fails only its own request."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.main import create_app
from app.models import USAGE, Gpu, HourlyUsage, Job, Node, Report
from app.reports._group_commit import _Waiting
from app.reports.schemas import ReportIn
from tests.support import CLUSTER, SettableClock, entry, gpu_uuid, report

Auth = dict[str, dict[str, str]]
HOURS = ["2025-01-06T09:40:00Z", "2025-01-06T10:20:00Z", "2025-01-06T11:00:00Z"]


def node_reports(prefix: str, gpu_base: int) -> list[dict[str, Any]]:
    """Two nodes, two reports each across an hour boundary: a shared job, a node-local job
    and an idle GPU, with uneven amounts that do not split evenly across hours."""
    reports = []
    for n in range(2):
        for seq, (start, end) in enumerate(zip(HOURS, HOURS[1:], strict=False), start=1):
            gpus = [
                entry(gpu_base + 4 * n, job_id=f"{prefix}-shared", gpu_seconds="2399.999997"),
                entry(gpu_base + 4 * n + 1, job_id=f"{prefix}-shared", energy_j="0.0007"),
                entry(gpu_base + 4 * n + 2, job_id=f"{prefix}-local-{n}", util_pct="33.3"),
                entry(gpu_base + 4 * n + 3, job_id=None, gpu_seconds="1200.5"),
            ]
            node = f"{prefix}-node-{n}"
            reports.append(report(seq, start=start, end=end, node=node, gpus=gpus))
    return reports


def stored_state(db: Session, prefix: str) -> dict[str, Any]:
    """What is stored for one prefix's nodes and jobs, with the prefix and ids taken out."""
    jobs = {
        job.id: job.scheduler_job_id.removeprefix(prefix)
        for job in db.execute(select(Job).where(Job.scheduler_job_id.startswith(prefix))).scalars()
    }
    hourly = db.execute(
        select(
            HourlyUsage.job_id,
            HourlyUsage.hour,
            HourlyUsage.gpu_us,
            HourlyUsage.busy_us,
            HourlyUsage.energy_mj,
        ).where(HourlyUsage.job_id.in_(jobs))
    ).all()
    usage = db.execute(
        select(
            USAGE.c.job_id, USAGE.c.period_start, USAGE.c.gpu_us, USAGE.c.busy_us, USAGE.c.energy_mj
        ).where(USAGE.c.job_id.in_(jobs))
    ).all()
    spans = db.execute(select(Job.id, Job.first_seen, Job.last_seen).where(Job.id.in_(jobs))).all()
    nodes = db.execute(
        select(Node.name, Node.last_interval_end).where(Node.name.startswith(prefix))
    ).all()
    return {
        "hourly": sorted((jobs[j], str(h), g, b, e) for j, h, g, b, e in hourly),
        "usage": sorted((jobs[j], str(p), g, b, e) for j, p, g, b, e in usage),
        "spans": sorted((jobs[j], str(f), str(last)) for j, f, last in spans),
        "nodes": sorted((name.removeprefix(prefix), str(end)) for name, end in nodes),
    }


def test_batch_stores_what_the_reports_one_by_one_store(
    client: TestClient, auth: Auth, db: Session
) -> None:
    for body in node_reports("one", 0):
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    batch = {"reports": node_reports("all", 100)}

    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 4
    one_by_one, together = stored_state(db, "one"), stored_state(db, "all")
    assert together == one_by_one
    # The exact sums: the first report of each node lies half in each hour (floored shares
    # that add up exactly), the second all in the later hour.
    shared = [(hour, gpu_us) for job, hour, gpu_us, _, _ in together["hourly"] if job == "-shared"]
    assert shared == [
        ("2025-01-06 09:00:00+00:00", 2 * (1_199_999_998 + 30_000_000)),
        (
            "2025-01-06 10:00:00+00:00",
            2 * (1_199_999_999 + 30_000_000 + 2_399_999_997 + 60_000_000),
        ),
    ]
    idle = db.execute(
        select(func.sum(HourlyUsage.gpu_us)).where(HourlyUsage.job_id.is_(None))
    ).scalar_one()
    assert idle == 8 * 1_200_500_000  # one idle GPU in each of the 8 reports


def test_same_seq_twice_in_one_batch(client: TestClient, auth: Auth, db: Session) -> None:
    batch = {
        "reports": [
            report(1),
            report(1),  # the same report again: a duplicate of the one just stored
            report(1, gpus=[entry(gpu_seconds=30)]),  # other content: a conflict
            report(2, start="2025-01-06T10:01:00Z", end="2025-01-06T10:02:00Z"),
        ]
    }

    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])

    results = response.json()["results"]
    assert [(r["status"], r["http_status"]) for r in results] == [
        ("accepted", 201),
        ("duplicate", 200),
        ("rejected", 409),
        ("accepted", 201),
    ]
    assert results[1]["report_id"] == results[0]["report_id"]
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 2
    assert db.execute(select(func.sum(USAGE.c.gpu_us))).scalar_one() == 120_000_000


def test_gpu_moved_within_a_batch_ends_where_its_last_report_puts_it(
    client: TestClient, auth: Auth, db: Session
) -> None:
    batch = {
        "reports": [
            report(1, node="node-a", gpus=[entry(5)]),
            report(
                1,
                node="node-b",
                start="2025-01-06T10:01:00Z",
                end="2025-01-06T10:02:00Z",
                gpus=[{**entry(5), "index": 2}],
            ),
        ]
    }

    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])

    assert response.json()["accepted"] == 2
    gpu = db.execute(select(Gpu).where(Gpu.uuid == gpu_uuid(5))).scalar_one()
    node_b = db.execute(select(Node.id).where(Node.name == "node-b")).scalar_one()
    assert (gpu.node_id, gpu.gpu_index) == (node_b, 2)
    assert db.execute(select(func.count()).select_from(Gpu)).scalar_one() == 1
    assert db.execute(select(func.sum(USAGE.c.gpu_us))).scalar_one() == 120_000_000


def test_batch_naming_many_gpus_is_stored_whole(
    client: TestClient, auth: Auth, db: Session
) -> None:
    # More GPUs and reports than one look-up statement takes keys.
    reports = [
        report(1, node=f"node-{n:04d}", gpus=[{**entry(8 * n + g), "index": g} for g in range(8)])
        for n in range(300)
    ]

    response = client.post(
        "/v1/reports:batch", json={"reports": reports}, headers=auth["collector"]
    )

    assert response.json()["accepted"] == 300, response.json()["results"][-1]["error"]
    assert db.execute(select(func.count()).select_from(Gpu)).scalar_one() == 2400
    assert db.execute(select(func.sum(HourlyUsage.gpu_us))).scalar_one() == 2400 * 60_000_000
    assert (
        client.get(f"/v1/jobs/{CLUSTER}/91234", headers=auth["viewer"]).json()["gpu_seconds"]
        == "144000"
    )


# A refusal the database makes and validation does not: one node's name, or one report's
# raw usage (written by COPY on PostgreSQL).
REFUSE = {
    ("postgresql", "nodes"): (
        "ALTER TABLE nodes ADD CONSTRAINT refuse CHECK (name <> 'node-refused')",
        "ALTER TABLE nodes DROP CONSTRAINT refuse",
    ),
    ("postgresql", "usage"): (
        "ALTER TABLE usage ADD CONSTRAINT refuse CHECK (gpu_us <> 7000000)",
        "ALTER TABLE usage DROP CONSTRAINT refuse",
    ),
    ("sqlite", "nodes"): (
        "CREATE TRIGGER refuse BEFORE INSERT ON nodes WHEN NEW.name = 'node-refused' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "DROP TRIGGER refuse",
    ),
    ("sqlite", "usage"): (
        "CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.gpu_us = 7000000 "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "DROP TRIGGER refuse",
    ),
}


@pytest.mark.parametrize("table", ["nodes", "usage"])
def test_report_the_database_refuses_fails_only_its_own_request(
    settings: Settings, clock: SettableClock, db: Session, table: str
) -> None:
    app = create_app(settings, clock=clock)
    refuse, allow = REFUSE[(db.get_bind().dialect.name, table)]
    db.execute(text(refuse))
    db.commit()
    refused = report(1, node="node-refused", gpus=[entry(9, gpu_seconds=7)])
    try:
        # Three requests' reports, waiting to be stored in one transaction.
        waiting = [
            _Waiting(ReportIn.model_validate(body))
            for body in (
                report(1, node="node-a"),
                refused,
                report(1, node="node-b", gpus=[entry(1)]),
            )
        ]
        app.state.ingest.group_commit._run(waiting)
    finally:
        db.execute(text(allow))
        db.commit()

    assert [type(w.error).__name__ for w in waiting] == ["NoneType", "IntegrityError", "NoneType"]
    assert [w.outcome.duplicate for w in (waiting[0], waiting[2])] == [False, False]
    assert db.execute(select(Node.name).order_by(Node.name)).scalars().all() == ["node-a", "node-b"]
    assert db.execute(select(func.sum(USAGE.c.gpu_us))).scalar_one() == 120_000_000


def test_new_node_is_not_moved_on_by_a_refused_report(
    client: TestClient, auth: Auth, db: Session
) -> None:
    later = report(1, start="2025-01-06T11:00:00Z", end="2025-01-06T11:01:00Z")
    response = client.post(
        "/v1/reports:batch", json={"reports": [report(1), later]}, headers=auth["collector"]
    )

    assert [r["http_status"] for r in response.json()["results"]] == [201, 409]
    node = db.execute(select(Node)).scalar_one()
    assert node.last_interval_end.isoformat() == "2025-01-06T10:01:00+00:00"


def test_report_without_gpus_marks_its_node_seen(
    client: TestClient, auth: Auth, db: Session
) -> None:
    response = client.post("/v1/reports", json=report(1, gpus=[]), headers=auth["collector"])

    assert response.status_code == 201, response.text
    node = db.execute(select(Node)).scalar_one()
    assert node.last_interval_end.isoformat() == "2025-01-06T10:01:00+00:00"
    assert db.execute(select(func.count()).select_from(USAGE)).scalar_one() == 0


def test_a_report_reads_the_same_in_a_valid_batch_a_mixed_batch_and_alone(
    client: TestClient, auth: Auth, db: Session
) -> None:
    # A batch of valid reports is validated from its JSON in one pass; one holding a bad
    # report falls back to reading each report on its own. The same report must mean the
    # same either way: a resend through the other path is a duplicate, never a conflict.
    spelled = {"gpu_seconds": "1.79975E3", "util_pct": "92.50", "energy_j": "1e3"}
    gpus = [entry(700, job_id="spelled-job", **spelled)]
    half_hour = {"start": "2025-01-06T10:00:00Z", "end": "2025-01-06T10:30:00Z"}
    text = json.dumps(report(1, node="spelled-node", gpus=gpus, **half_hour))
    for name, number in spelled.items():  # numbers as written, not strings
        text = text.replace(f'"{name}": "{number}"', f'"{name}": {number}')
    headers = {**auth["collector"], "Content-Type": "application/json"}

    alone_in_valid = client.post(
        "/v1/reports:batch", content=f'{{"reports":[{text}]}}', headers=headers
    )
    beside_a_bad_one = client.post(
        "/v1/reports:batch", content=f'{{"reports":[{text},{{"seq":"x"}}]}}', headers=headers
    )
    single = client.post("/v1/reports", content=text, headers=headers)

    assert [r["status"] for r in alone_in_valid.json()["results"]] == ["accepted"]
    assert [(r["status"], r["http_status"]) for r in beside_a_bad_one.json()["results"]] == [
        ("duplicate", 200),
        ("rejected", 422),
    ]
    assert (single.status_code, single.json()["duplicate"]) == (200, True)
    stored = db.execute(
        select(USAGE.c.gpu_us, USAGE.c.busy_us, USAGE.c.energy_mj)
        .join(Job, Job.id == USAGE.c.job_id)
        .where(Job.scheduler_job_id == "spelled-job")
    ).all()
    assert stored == [(1_799_750_000, 1_664_768_750, 1_000_000)]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("", 422, {"field": "body", "reason": "Field required"}),
        ("{not json", 422, {"field": "[1]", "reason": "JSON decode error"}),
        (
            '{"reports": []}',
            422,
            {
                "field": "reports",
                "reason": "List should have at least 1 item after validation, not 0",
            },
        ),
        ('{"reports": "x"}', 422, {"field": "reports", "reason": "Input should be a valid list"}),
        ("[" * 100_000, 400, None),  # deeper than Python's parser goes
    ],
)
def test_a_batch_that_is_not_a_list_of_reports_is_refused_whole(
    client: TestClient, auth: Auth, db: Session, body: str, status: int, error: dict | None
) -> None:
    headers = {**auth["collector"], "Content-Type": "application/json"}
    before = db.execute(select(func.count()).select_from(Report)).scalar_one()

    response = client.post("/v1/reports:batch", content=body, headers=headers)

    assert response.status_code == status, response.text
    if error is not None:
        assert response.json()["errors"] == [error]
    else:
        assert response.json() == {
            "error": "HTTPError",
            "detail": "There was an error parsing the body",
        }
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == before
