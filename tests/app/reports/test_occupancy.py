"""Occupancy: one GPU, wherever it is reported from, is counted once for any moment; reports
that would count it twice are refused whole (409), named, audited and counted."""

from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import GPU_OCCUPANCY, USAGE, Report
from tests.conftest import make_token
from tests.support import CLUSTER, H800, entry, gpu_uuid, report

Auth = dict[str, dict[str, str]]
DAY = "2025-01-06"


def at(clock: str) -> str:
    return f"{DAY}T{clock}Z"


def post(client: TestClient, auth: Auth, body: dict[str, Any]) -> Any:
    return client.post("/v1/reports", json=body, headers=auth["collector"])


def job_seconds(client: TestClient, auth: Auth, job_id: str = "91234") -> str:
    response = client.get(f"/v1/jobs/{CLUSTER}/{job_id}", headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return str(response.json()["gpu_seconds"])


def hour_of(seconds: int = 3600, **fields: Any) -> list[dict[str, Any]]:
    return [entry(gpu_seconds=seconds, energy_j=0, **fields)]


def test_one_gpu_in_four_overlapping_reports_is_counted_once(
    client: TestClient, auth: Auth, db: Session
) -> None:
    # The reviewer's case: one GPU, one job, four reports of which only the first may count.
    first = post(client, auth, report(1, start=at("10:00"), end=at("11:00"), gpus=hour_of()))
    shifted = post(client, auth, report(2, start=at("10:30"), end=at("11:30"), gpus=hour_of()))
    again = post(client, auth, report(3, start=at("10:00"), end=at("11:00"), gpus=hour_of()))
    other_node = post(
        client, auth, report(1, node="node-b", start=at("10:00"), end=at("11:00"), gpus=hour_of())
    )

    assert first.status_code == 201, first.text
    assert [r.status_code for r in (shifted, again, other_node)] == [409, 409, 409]
    body = shifted.json()
    assert body["error"] == "Overlap"
    assert body["detail"] == (
        f"GPU {gpu_uuid(0)} is already counted from 2025-01-06T10:00:00+00:00 to "
        "2025-01-06T11:00:00+00:00 (first by report hf-h800/node-017 seq 1); report "
        "hf-h800/node-017 seq 2, 2025-01-06T10:30:00+00:00 to 2025-01-06T11:30:00+00:00, "
        "overlaps it by 1800 s, more than the 1 s tolerated"
    )
    assert job_seconds(client, auth) == "3600"
    # Refused reports leave nothing behind: the seqs stay free for the real reports.
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 1
    assert db.execute(select(func.count()).select_from(USAGE)).scalar_one() == 1
    later = post(client, auth, report(2, start=at("11:00"), end=at("11:30"), gpus=hour_of(1800)))
    assert later.status_code == 201, later.text
    assert job_seconds(client, auth) == "5400"


def test_overlap_within_tolerance_is_accepted_and_beyond_it_refused(
    client: TestClient, auth: Auth
) -> None:
    assert (
        post(client, auth, report(1, start=at("10:00:00"), end=at("10:01:00"))).status_code == 201
    )
    # A clock stepped back half a second: tolerated (a minute's report may overlap 1 s).
    stepped = report(2, start=at("10:00:59.500"), end=at("10:01:59.500"))
    assert post(client, auth, stepped).status_code == 201
    # The next one overlaps by 1.5 s: refused.
    beyond = report(3, start=at("10:01:58"), end=at("10:02:58"))
    response = post(client, auth, beyond)
    assert response.status_code == 409, response.text
    assert "overlaps it by 1.5 s, more than the 1 s tolerated" in response.json()["detail"]
    assert job_seconds(client, auth) == "120"


def test_short_reports_get_a_sixtieth_of_their_interval_at_most(
    client: TestClient, auth: Auth
) -> None:
    # Identical one-second reports under new seqs: 1/60 s tolerated, so the second meets the
    # first and is refused; a hundred of them count one second.
    statuses = [
        post(
            client,
            auth,
            report(seq, start=at("10:00:00"), end=at("10:00:01"), gpus=hour_of(1)),
        ).status_code
        for seq in range(1, 101)
    ]
    assert statuses == [201] + [409] * 99
    assert job_seconds(client, auth) == "1"


def test_batch_reports_overlapping_each_other_or_stored_time_are_refused_alone(
    client: TestClient, auth: Auth
) -> None:
    assert post(client, auth, report(1, start=at("09:00"), end=at("09:01"))).status_code == 201
    batch = {
        "reports": [
            report(2, start=at("10:00"), end=at("10:01")),
            report(3, start=at("10:00:30"), end=at("10:01:30")),  # meets seq 2
            report(4, start=at("09:00:30"), end=at("09:01:30")),  # meets seq 1, stored
            report(5, start=at("10:01"), end=at("10:02")),
        ]
    }
    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["http_status"] for r in results] == [201, 409, 409, 201]
    assert "(first by report hf-h800/node-017 seq 2)" in results[1]["error"]["detail"]
    assert "(first by report hf-h800/node-017 seq 1)" in results[2]["error"]["detail"]
    assert job_seconds(client, auth) == "180"


def test_another_cluster_reporting_a_gpu_for_the_same_time_is_refused(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    other = {"Authorization": f"Bearer {make_token(db_url, 'collector', 'cluster-b')}"}
    assert post(client, auth, report(1, start=at("10:00"), end=at("10:01"))).status_code == 201

    same_minute = report(1, cluster="cluster-b", node="b-001", start=at("10:00"), end=at("10:01"))
    refused = client.post("/v1/reports", json=same_minute, headers=other)

    assert refused.status_code == 409, refused.text
    gpu = client.get(f"/v1/gpus/{gpu_uuid(0)}", headers=auth["viewer"]).json()
    assert (gpu["cluster"], gpu["node"]) == (CLUSTER, "node-017")
    costs = client.get("/v1/costs?group_by=cluster", headers=auth["viewer"]).json()
    assert [row["cluster"] for row in costs["rows"]] == [CLUSTER]


def test_a_gpu_moved_to_another_cluster_is_counted_there_and_keeps_its_history(
    client: TestClient, auth: Auth, db_url: str
) -> None:
    other = {"Authorization": f"Bearer {make_token(db_url, 'collector', 'cluster-b')}"}
    assert post(client, auth, report(1, start=at("10:00"), end=at("10:01"))).status_code == 201
    moved = report(
        1,
        cluster="cluster-b",
        node="b-001",
        start=at("12:00"),
        end=at("12:01"),
        gpus=[{**entry(), "index": 3}],
    )
    assert client.post("/v1/reports", json=moved, headers=other).status_code == 201
    # Time before the move, from the old place, arriving late: counted where it is free,
    # and the GPU stays where its newest report puts it.
    late = report(2, start=at("10:01"), end=at("10:02"))
    assert post(client, auth, late).status_code == 201

    gpu = client.get(f"/v1/gpus/{gpu_uuid(0).upper()}", headers=auth["viewer"]).json()
    assert (gpu["uuid"], gpu["model"], gpu["cluster"], gpu["node"], gpu["index"]) == (
        gpu_uuid(0),
        H800,
        "cluster-b",
        "b-001",
        3,
    )
    assert [(h["cluster"], h["node"], h["index"], h["since"]) for h in gpu["history"]] == [
        (CLUSTER, "node-017", 0, "2025-01-06T10:00:00Z"),
        ("cluster-b", "b-001", 3, "2025-01-06T12:00:00Z"),
    ]
    # Reported back on its first node later: a move again.
    back = report(3, start=at("13:00"), end=at("13:01"))
    assert post(client, auth, back).status_code == 201
    gpu = client.get(f"/v1/gpus/{gpu_uuid(0)}", headers=auth["viewer"]).json()
    assert (gpu["cluster"], gpu["node"], len(gpu["history"])) == (CLUSTER, "node-017", 3)
    costs = client.get("/v1/costs?group_by=cluster", headers=auth["viewer"]).json()
    assert {row["cluster"]: row["gpu_hours"] for row in costs["rows"]} == {
        CLUSTER: "0.05",
        "cluster-b": "0.016666667",
    }
    missing = client.get(f"/v1/gpus/{gpu_uuid(9)}", headers=auth["viewer"])
    assert missing.status_code == 404


def mig(n: int, parent: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        **entry(parent, **fields),
        "uuid": f"MIG-{n:08x}-1111-4000-8000-{n:012x}",
        "parent_uuid": gpu_uuid(parent),
        "model": f"{H800} MIG 3g.40gb",
    }


def test_mig_devices_count_against_their_gpu(client: TestClient, auth: Auth) -> None:
    whole = report(1, start=at("10:00"), end=at("10:01"), gpus=[entry(gpu_seconds=60)])
    assert post(client, auth, whole).status_code == 201
    # A MIG device of that GPU, from another node, for the same minute: its GPU's time.
    device = report(1, node="node-b", start=at("10:00"), end=at("10:01"), gpus=[mig(1)])
    refused = post(client, auth, device)
    assert refused.status_code == 409, refused.text
    assert f"GPU {gpu_uuid(0)} is already counted" in refused.json()["detail"]

    # In one report, two devices and the GPU's unpartitioned rest share the interval.
    shared = [
        mig(1, gpu_seconds=25, job_id="a"),
        mig(2, gpu_seconds=25, job_id="b"),
        entry(gpu_seconds=10, job_id="c", energy_j=0),
    ]
    assert (
        post(client, auth, report(2, start=at("10:01"), end=at("10:02"), gpus=shared)).status_code
        == 201
    )
    over = [mig(1, gpu_seconds=40, job_id="a"), entry(gpu_seconds=30, job_id="c", energy_j=0)]
    response = post(client, auth, report(3, start=at("10:02"), end=at("10:03"), gpus=over))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "gpus[1].gpu_seconds"


def test_mig_devices_name_their_gpu_and_only_they_do(client: TestClient, auth: Auth) -> None:
    orphan = {k: v for k, v in mig(1).items() if k != "parent_uuid"}
    adopted = {**entry(), "parent_uuid": gpu_uuid(1)}
    for gpus in ([orphan], [adopted]):
        response = post(client, auth, report(1, gpus=gpus))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "gpus[0].parent_uuid"


def test_refused_overlaps_are_audited_and_counted(client: TestClient, auth: Auth) -> None:
    post(client, auth, report(1))
    assert post(client, auth, report(2)).status_code == 409
    batch = {"reports": [report(3)]}
    assert (
        client.post("/v1/reports:batch", json=batch, headers=auth["collector"]).status_code == 200
    )

    audit = client.get("/v1/audit?action=report.overlap", headers=auth["admin"]).json()
    entries = audit["entries"]
    assert [(e["actor"], e["target"], e["details"]["seq"]) for e in entries] == [
        (f"{CLUSTER}/node-017", f"gpu {gpu_uuid(0)}", 3),
        (f"{CLUSTER}/node-017", f"gpu {gpu_uuid(0)}", 2),
    ]
    metrics = client.get("/metrics").text
    assert "gpucost_reports_overlapping_total 2.0" in metrics
    assert 'gpucost_reports_rejected_total{reason="conflict"} 2.0' in metrics


def test_the_database_itself_refuses_overlapping_gpu_time(db: Session) -> None:
    # The guarantee does not rest on ingest's look-up: the constraint (PostgreSQL) or the
    # trigger (SQLite) refuses a second GPU interval meeting the first.
    def occupy(report_pk: int, start: str, end: str, guard: str | None = None) -> None:
        db.execute(
            insert(GPU_OCCUPANCY),
            {
                "gpu_id": 1,
                "report_id": report_pk,
                "period_start": datetime.fromisoformat(at(start)),
                "period_end": datetime.fromisoformat(at(end)),
                "guard_start": datetime.fromisoformat(at(guard or start)),
            },
        )

    occupy(1, "10:00", "10:01")
    occupy(2, "10:01", "10:02")  # end to start: no overlap
    occupy(3, "10:01:59.500", "10:03", guard="10:02")  # overlap within its tolerance
    db.commit()
    with pytest.raises(IntegrityError):
        occupy(4, "10:00:30", "10:00:40")
    db.rollback()
    with pytest.raises(IntegrityError):
        occupy(5, "10:02:30", "10:04", guard="10:02:31")
    db.rollback()
    assert db.execute(select(func.count()).select_from(GPU_OCCUPANCY)).scalar_one() == 3


def test_a_resend_of_a_refused_report_in_the_same_batch_is_refused_too(
    client: TestClient, auth: Auth, db: Session
) -> None:
    assert post(client, auth, report(1)).status_code == 201
    overlapping = report(7, node="node-b")
    batch = {"reports": [overlapping, overlapping]}
    response = client.post("/v1/reports:batch", json=batch, headers=auth["collector"])

    results = response.json()["results"]
    assert [(r["status"], r["http_status"]) for r in results] == [("rejected", 409)] * 2
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 1


def test_a_mig_device_claimed_under_two_gpus_is_counted_once(
    client: TestClient, auth: Auth
) -> None:
    first = report(1, node="node-c", gpus=[mig(1, parent=100)])
    second = report(1, node="node-d", gpus=[mig(1, parent=101)])
    assert post(client, auth, first).status_code == 201
    refused = post(client, auth, second)
    assert refused.status_code == 409, refused.text
    assert f"GPU {mig(1)['uuid']} is already counted" in refused.json()["detail"]
    assert job_seconds(client, auth) == "60"


def test_a_refused_report_leaves_no_gpu_behind(client: TestClient, auth: Auth) -> None:
    assert post(client, auth, report(1)).status_code == 201
    # GPU 0 overlaps; GPU 1 is new: neither the report nor GPU 1 is stored.
    both = report(1, node="node-b", gpus=[entry(0), entry(1)])
    assert post(client, auth, both).status_code == 409
    assert client.get(f"/v1/gpus/{gpu_uuid(1)}", headers=auth["viewer"]).status_code == 404
    later = report(2, node="node-b", start=at("10:05"), end=at("10:06"), gpus=[entry(1)])
    assert post(client, auth, later).status_code == 201
    gpu = client.get(f"/v1/gpus/{gpu_uuid(1)}", headers=auth["viewer"]).json()
    assert [(h["node"], h["since"]) for h in gpu["history"]] == [("node-b", "2025-01-06T10:05:00Z")]


def test_a_gpu_reporting_without_gaps_keeps_one_span(
    client: TestClient, auth: Auth, db: Session
) -> None:
    minutes = [
        report(m + 1, start=f"{DAY}T10:{m:02d}:00Z", end=f"{DAY}T10:{m + 1:02d}:00Z")
        for m in range(10)
    ]
    for body in minutes[:4]:
        assert post(client, auth, body).status_code == 201
    batch = {"reports": minutes[4:]}
    answer = client.post("/v1/reports:batch", json=batch, headers=auth["collector"]).json()
    assert answer["accepted"] == 6
    spans = db.execute(select(GPU_OCCUPANCY.c.period_start, GPU_OCCUPANCY.c.period_end)).all()
    assert [(a.isoformat()[11:16], b.isoformat()[11:16]) for a, b in spans] == [("10:00", "10:10")]
    # Inside the span, from another node: refused, naming the whole span and its first report.
    inside = post(client, auth, report(1, node="node-b", start=at("10:04"), end=at("10:05")))
    assert inside.status_code == 409
    assert (
        "from 2025-01-06T10:00:00+00:00 to 2025-01-06T10:10:00+00:00 (first by report "
        in (inside.json()["detail"])
    )
    assert job_seconds(client, auth) == "600"
