"""Accepting reports: stored exactly once, split across hours, idle and shared GPUs kept."""

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import USAGE, Gpu, HourlyUsage, Job, Node, Report
from tests.support import CLUSTER, H800, entry, gpu_uuid, report

Auth = dict[str, dict[str, str]]


def job_usage(client: TestClient, auth: Auth, job_id: str) -> dict:
    response = client.get(f"/v1/jobs/{CLUSTER}/{job_id}", headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return response.json()


def test_report_is_stored_with_every_field(client: TestClient, auth: Auth, db: Session) -> None:
    response = client.post("/v1/reports", json=report(), headers=auth["collector"])

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["duplicate"] is False
    assert (body["cluster"], body["node"], body["seq"]) == (CLUSTER, "node-017", 1)
    usage = db.execute(select(USAGE)).one()
    assert (usage.gpu_us, usage.busy_us, usage.energy_mj, usage.mem_peak_bytes) == (
        60_000_000,
        58_500_000,
        41_200_000,
        79_000_000_000,
    )
    gpu = db.execute(select(Gpu)).scalar_one()
    assert (gpu.uuid, gpu.model, gpu.gpu_index) == (gpu_uuid(0), H800, 0)
    assert db.execute(select(Node.name)).scalar_one() == "node-017"
    stored = db.execute(select(Report)).scalar_one()
    assert (stored.seq, stored.entries) == (1, 1)
    assert stored.period_start.isoformat() == "2025-01-06T10:00:00+00:00"
    job = job_usage(client, auth, "91234")
    assert job["gpu_seconds"] == "60"
    assert job["busy_gpu_seconds"] == "58.5"
    assert job["energy_j"] == "41200"
    assert job["first_seen"] == "2025-01-06T10:00:00Z"
    assert job["last_seen"] == "2025-01-06T10:01:00Z"


def test_same_report_twice_is_counted_once(client: TestClient, auth: Auth, db: Session) -> None:
    first = client.post("/v1/reports", json=report(), headers=auth["collector"])
    again = client.post("/v1/reports", json=report(), headers=auth["collector"])

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["report_id"] == first.json()["report_id"]
    assert db.execute(select(func.count()).select_from(USAGE)).scalar_one() == 1
    assert job_usage(client, auth, "91234")["gpu_seconds"] == "60"


def test_resend_in_another_spelling_is_still_a_duplicate(client: TestClient, auth: Auth) -> None:
    client.post("/v1/reports", json=report(), headers=auth["collector"])
    respelled = report(start="2025-01-06T11:00:00+01:00", end="2025-01-06T11:01:00+01:00")
    respelled["gpus"][0]["gpu_seconds"] = 60.0
    respelled["gpus"][0]["uuid"] = "GPU-" + respelled["gpus"][0]["uuid"][4:].upper()

    response = client.post("/v1/reports", json=respelled, headers=auth["collector"])

    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is True


def test_same_seq_with_other_content_is_a_conflict(client: TestClient, auth: Auth) -> None:
    client.post("/v1/reports", json=report(), headers=auth["collector"])
    changed = report(gpus=[entry(gpu_seconds=30)])

    response = client.post("/v1/reports", json=changed, headers=auth["collector"])

    assert response.status_code == 409
    assert response.json()["error"] == "Conflict"
    assert "seq 1" in response.json()["detail"]
    assert job_usage(client, auth, "91234")["gpu_seconds"] == "60"


def test_report_across_an_hour_is_split_in_proportion(
    client: TestClient, auth: Auth, db: Session
) -> None:
    crossing = report(
        start="2025-01-06T10:59:40Z",
        end="2025-01-06T11:00:40Z",
        gpus=[entry(gpu_seconds=60, util_pct=50, energy_j=600)],
    )

    assert client.post("/v1/reports", json=crossing, headers=auth["collector"]).status_code == 201

    rows = db.execute(
        select(
            HourlyUsage.hour, HourlyUsage.gpu_us, HourlyUsage.busy_us, HourlyUsage.energy_mj
        ).order_by(HourlyUsage.hour)
    ).all()
    assert [(h.hour, g, b, e) for h, g, b, e in rows] == [
        (10, 20_000_000, 10_000_000, 200_000),
        (11, 40_000_000, 20_000_000, 400_000),
    ]


def test_uneven_split_conserves_every_microsecond(
    client: TestClient, auth: Auth, db: Session
) -> None:
    # 7 s over 3 s + 4 s of two hours with an amount that does not divide evenly.
    odd = report(
        start="2025-01-06T10:59:57Z",
        end="2025-01-06T11:00:04Z",
        gpus=[entry(gpu_seconds="6.999999", util_pct="33.3", energy_j="0.001")],
    )

    assert client.post("/v1/reports", json=odd, headers=auth["collector"]).status_code == 201

    rows = db.execute(
        select(HourlyUsage.gpu_us, HourlyUsage.busy_us, HourlyUsage.energy_mj).order_by(
            HourlyUsage.hour
        )
    ).all()
    assert [tuple(r) for r in rows] == [(2_999_999, 999_000, 0), (4_000_000, 1_332_000, 1)]
    assert sum(r[0] for r in rows) == 6_999_999
    assert sum(r[1] for r in rows) == 2_331_000  # 6.999999 s x 33.3 %, to the microsecond


def test_idle_gpu_time_is_kept_as_idle_capacity(
    client: TestClient, auth: Auth, db: Session
) -> None:
    idle = report(gpus=[entry(0, job_id=None, util_pct=0), entry(1, job_id="91234")])

    assert client.post("/v1/reports", json=idle, headers=auth["collector"]).status_code == 201

    rows = db.execute(select(HourlyUsage.job_id, HourlyUsage.gpu_us).order_by(HourlyUsage.id)).all()
    assert sorted((job is None, us) for job, us in rows) == [
        (False, 60_000_000),
        (True, 60_000_000),
    ]
    assert db.execute(select(func.count()).select_from(Job)).scalar_one() == 1
    # A second idle minute in the same hour adds to the same idle row.
    more = report(
        2, start="2025-01-06T10:01:00Z", end="2025-01-06T10:02:00Z", gpus=[entry(0, job_id=None)]
    )
    assert client.post("/v1/reports", json=more, headers=auth["collector"]).status_code == 201
    idle_us = db.execute(
        select(HourlyUsage.gpu_us).where(HourlyUsage.job_id.is_(None))
    ).scalar_one()
    assert idle_us == 120_000_000


def test_shared_gpu_splits_between_jobs(client: TestClient, auth: Auth) -> None:
    shared = report(
        gpus=[entry(0, job_id="a-1", gpu_seconds=30), entry(0, job_id="b-2", gpu_seconds=30)]
    )

    assert client.post("/v1/reports", json=shared, headers=auth["collector"]).status_code == 201

    assert job_usage(client, auth, "a-1")["gpu_seconds"] == "30"
    assert job_usage(client, auth, "b-2")["gpu_seconds"] == "30"


def test_reports_of_many_nodes_sum_into_one_job_hour(
    client: TestClient, auth: Auth, db: Session
) -> None:
    for n in range(4):
        minute = f"2025-01-06T10:0{n}:00Z", f"2025-01-06T10:0{n + 1}:00Z"
        body = report(
            n,
            start=minute[0],
            end=minute[1],
            node=f"node-{n}",
            gpus=[entry(8 * n + g) for g in range(8)],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201

    assert db.execute(select(HourlyUsage.gpu_us)).scalars().all() == [4 * 8 * 60_000_000]
    assert job_usage(client, auth, "91234")["gpu_seconds"] == "1920"


def test_batch_reports_each_get_their_own_outcome(client: TestClient, auth: Auth) -> None:
    client.post("/v1/reports", json=report(1), headers=auth["collector"])
    batch = {
        "reports": [
            report(1),  # duplicate
            report(2, start="2025-01-06T10:01:00Z", end="2025-01-06T10:02:00Z"),
            report(3, gpus=[entry(gpu_seconds=-1)]),  # invalid
            report(1, gpus=[entry(gpu_seconds=5)]),  # conflict
            report(4, cluster="other"),  # another cluster's
            {"seq": "x"},
        ]
    }

    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])

    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["index"], r["seq"], r["status"], r["http_status"]) for r in body["results"]] == [
        (0, 1, "duplicate", 200),
        (1, 2, "accepted", 201),
        (2, 3, "rejected", 422),
        (3, 1, "rejected", 409),
        (4, 4, "rejected", 403),
        (5, None, "rejected", 422),
    ]
    assert body["results"][2]["error"]["errors"][0]["field"] == "gpus[0].gpu_seconds"
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, 4)
    assert job_usage(client, auth, "91234")["gpu_seconds"] == "120"


def test_batch_over_the_configured_count_is_refused_whole(
    client: TestClient, auth: Auth, settings, clock
) -> None:
    from app.main import create_app

    small = settings.model_copy(update={"max_batch_reports": 2})
    with TestClient(create_app(small, clock=clock)) as limited:
        body = {"reports": [report(n) for n in range(3)]}
        response = limited.post("/v1/reports:batch", json=body, headers=auth["collector"])

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reports"
    assert client.get("/v1/jobs", headers=auth["viewer"]).json()["total"] == 0
