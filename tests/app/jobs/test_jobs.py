"""Job metadata: registered before or after its usage, it attributes all of that usage."""

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEntry
from tests.support import CLUSTER, entry, report

Auth = dict[str, dict[str, str]]


def test_late_registration_attributes_earlier_usage(client: TestClient, auth: Auth) -> None:
    for seq in range(3):
        minute = f"2025-01-06T10:0{seq}:00Z", f"2025-01-06T10:0{seq + 1}:00Z"
        body = report(
            seq, start=minute[0], end=minute[1], gpus=[entry(g, job_id="777") for g in range(8)]
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    unlabelled = client.get(
        "/v1/jobs", params={"model": "deepseek-v3"}, headers=auth["viewer"]
    ).json()
    assert unlabelled["total"] == 0

    put = client.put(
        f"/v1/jobs/{CLUSTER}/777",
        json={"model": "deepseek-v3", "phase": "pre-training", "team": "foundation", "user": "ada"},
        headers=auth["admin"],
    )

    assert put.status_code == 200, put.text
    listed = client.get("/v1/jobs", params={"model": "deepseek-v3"}, headers=auth["viewer"]).json()
    assert listed["total"] == 1
    job = listed["jobs"][0]
    assert (job["job_id"], job["phase"], job["team"], job["user"]) == (
        "777",
        "pre-training",
        "foundation",
        "ada",
    )
    assert job["gpu_seconds"] == "1440"
    assert job["first_seen"] == "2025-01-06T10:00:00Z"
    assert job["last_seen"] == "2025-01-06T10:03:00Z"


def test_registration_before_usage_then_usage_follows(client: TestClient, auth: Auth) -> None:
    put = client.put(
        f"/v1/jobs/{CLUSTER}/555",
        json={"model": "m", "name": "=HYPERLINK(1)", "labels": {"run": "r1"}},
        headers=auth["collector"],
    )
    assert put.status_code == 201, put.text
    assert put.json()["gpu_seconds"] == "0"
    assert put.json()["first_seen"] is None

    body = report(gpus=[entry(0, job_id="555", gpu_seconds="12.5")])
    assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201

    job = client.get(f"/v1/jobs/{CLUSTER}/555", headers=auth["viewer"]).json()
    assert (job["model"], job["name"], job["labels"]) == ("m", "=HYPERLINK(1)", {"run": "r1"})
    assert job["gpu_seconds"] == "12.5"


def test_update_keeps_fields_left_out_and_clears_explicit_nulls(
    client: TestClient, auth: Auth, db: Session
) -> None:
    url = f"/v1/jobs/{CLUSTER}/9"
    client.put(
        url, json={"model": "a", "phase": "pre-training", "team": "t"}, headers=auth["admin"]
    )

    updated = client.put(
        url, json={"phase": "post-training", "team": None}, headers=auth["admin"]
    ).json()
    unchanged = client.put(url, json={"model": "a"}, headers=auth["admin"])

    assert (updated["model"], updated["phase"], updated["team"]) == ("a", "post-training", None)
    assert unchanged.status_code == 200
    audit = db.execute(
        select(AuditEntry.action, AuditEntry.actor, AuditEntry.details).order_by(AuditEntry.id)
    ).all()
    job_audit = [row for row in audit if row.action.startswith("job.")]
    assert [(a.action, a.actor) for a in job_audit] == [
        ("job.create", "admin"),
        ("job.update", "admin"),
    ]
    assert job_audit[1].details == {
        "old": {"phase": "pre-training", "team": "t"},
        "new": {"phase": "post-training", "team": None},
    }


def test_job_list_filters_and_pages(client: TestClient, auth: Auth) -> None:
    for n, team in enumerate(["red", "red", "blue"]):
        client.put(
            f"/v1/jobs/{CLUSTER}/{n}", json={"team": team, "model": "m"}, headers=auth["admin"]
        )

    red = client.get("/v1/jobs", params={"team": "red", "limit": 1}, headers=auth["viewer"]).json()
    second = client.get(
        "/v1/jobs", params={"team": "red", "limit": 1, "offset": 1}, headers=auth["viewer"]
    ).json()
    nothing = client.get("/v1/jobs", params={"cluster": "elsewhere"}, headers=auth["viewer"]).json()

    assert red["total"] == 2 and len(red["jobs"]) == 1
    assert {red["jobs"][0]["job_id"], second["jobs"][0]["job_id"]} == {"0", "1"}
    assert nothing == {"jobs": [], "limit": 100, "offset": 0, "total": 0}


def test_bad_job_input_is_a_clear_422(client: TestClient, auth: Auth) -> None:
    too_many = {"labels": {f"k{n}": "v" for n in range(65)}}
    cases = [
        (f"/v1/jobs/{CLUSTER}/1", {"colour": "red"}, "colour"),
        (f"/v1/jobs/{CLUSTER}/1", too_many, "labels"),
        (f"/v1/jobs/{CLUSTER}/1", {"model": "x" * 129}, "model"),
        (f"/v1/jobs/{CLUSTER}/bad%20id", {"model": "m"}, "job_id"),
        # The names costs give idle GPUs and unlabelled jobs: a job so named would join them.
        (f"/v1/jobs/{CLUSTER}/1", {"team": "(unattributed)"}, "team"),
        (f"/v1/jobs/{CLUSTER}/1", {"model": " (unattributed) "}, "model"),
        (f"/v1/jobs/{CLUSTER}/1", {"phase": "(idle)"}, "phase"),
        (f"/v1/jobs/{CLUSTER}/1", {"user": "(idle)"}, "user"),
    ]
    for url, body, field in cases:
        response = client.put(url, json=body, headers=auth["admin"])
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"] == field


def test_unknown_job_is_404(client: TestClient, auth: Auth) -> None:
    response = client.get(f"/v1/jobs/{CLUSTER}/nope", headers=auth["viewer"])

    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "no job 'nope' on cluster 'hf-h800'"}
