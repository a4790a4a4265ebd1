"""Every ingest rule: a rejected report is a 422 naming its field, and nothing of it is stored."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.main import create_app
from app.models import USAGE, Cluster, Report
from tests.support import SettableClock, entry, report

Auth = dict[str, dict[str, str]]


def with_entry(**fields: Any) -> dict[str, Any]:
    return report(gpus=[{**entry(), **fields}])


CASES = [
    ("end before start", report(start="2025-01-06T10:01:00Z", end="2025-01-06T10:00:00Z"), "end"),
    ("empty interval", report(end="2025-01-06T10:00:00Z"), "end"),
    ("interval over an hour", report(end="2025-01-06T11:00:01Z"), "end"),
    ("naive timestamp", report(start="2025-01-06T10:00:00"), "start"),
    ("bad timestamp", report(start="yesterday"), "start"),
    ("negative GPU-seconds", with_entry(gpu_seconds=-0.5), "gpus[0].gpu_seconds"),
    ("GPU-seconds beyond the interval", with_entry(gpu_seconds=61.5), "gpus[0].gpu_seconds"),
    ("NaN GPU-seconds", with_entry(gpu_seconds="NaN"), "gpus[0].gpu_seconds"),
    ("infinite energy", with_entry(energy_j="Infinity"), "gpus[0].energy_j"),
    ("negative energy", with_entry(energy_j=-1), "gpus[0].energy_j"),
    ("utilisation over 100", with_entry(util_pct=100.1), "gpus[0].util_pct"),
    ("negative utilisation", with_entry(util_pct=-1), "gpus[0].util_pct"),
    ("negative memory", with_entry(mem_peak_bytes=-1), "gpus[0].mem_peak_bytes"),
    ("malformed UUID", with_entry(uuid="GPU-1234"), "gpus[0].uuid"),
    (
        "UUID of another kind",
        with_entry(uuid="CPU-00000000-0000-4000-8000-000000000000"),
        "gpus[0].uuid",
    ),
    ("job id with a slash", with_entry(job_id="a/b"), "gpus[0].job_id"),
    ("empty model", with_entry(model=""), "gpus[0].model"),
    ("unknown field", with_entry(colour="red"), "gpus[0].colour"),
    ("negative seq", report(seq=-1), "seq"),
    ("missing gpus", {k: v for k, v in report().items() if k != "gpus"}, "gpus"),
    ("cluster name with spaces", report(cluster="my cluster"), "cluster"),
    (
        "shared GPU over its interval",
        report(gpus=[entry(job_id="a", gpu_seconds=40), entry(job_id="b", gpu_seconds=40)]),
        "gpus[1].gpu_seconds",
    ),
    (
        "one GPU with two indexes",
        report(
            gpus=[
                entry(0, job_id="a", gpu_seconds=30),
                {**entry(0, job_id="b", gpu_seconds=30), "index": 3},
            ]
        ),
        "gpus[1]",
    ),
    ("one index for two GPUs", report(gpus=[entry(0), {**entry(1), "index": 0}]), "gpus[1].index"),
    (
        "the same job twice on a GPU",
        report(gpus=[entry(0, gpu_seconds=30), entry(0, gpu_seconds=30)]),
        "gpus[1].job_id",
    ),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_report_is_rejected_and_nothing_stored(
    client: TestClient, auth: Auth, db: Session, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/reports", json=body, headers=auth["collector"])

    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "ValidationError"
    assert field in [e["field"] for e in answer["errors"]], answer
    assert answer["detail"].startswith(answer["errors"][0]["field"])
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 0
    assert db.execute(select(func.count()).select_from(USAGE)).scalar_one() == 0
    assert db.execute(select(func.count()).select_from(Cluster)).scalar_one() == 0


def test_gpu_seconds_fill_the_interval_and_not_a_microsecond_more(
    client: TestClient, auth: Auth
) -> None:
    over = client.post(
        "/v1/reports", json=with_entry(gpu_seconds="60.000001"), headers=auth["collector"]
    )
    full = client.post("/v1/reports", json=with_entry(gpu_seconds=60), headers=auth["collector"])

    assert over.status_code == 422 and over.json()["errors"][0]["field"] == "gpus[0].gpu_seconds"
    assert full.status_code == 201, full.text


def test_report_from_the_future_is_rejected(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 1, 6, 9, 55, 59, tzinfo=UTC)

    too_soon = client.post("/v1/reports", json=report(), headers=auth["collector"])
    clock.moment = datetime(2025, 1, 6, 9, 56, 0, tzinfo=UTC)
    just_in = client.post("/v1/reports", json=report(), headers=auth["collector"])

    assert too_soon.status_code == 422
    assert too_soon.json()["errors"][0]["field"] == "end"
    assert "ahead of the server clock" in too_soon.json()["detail"]
    assert just_in.status_code == 201


def test_configured_limits_apply(settings, clock: SettableClock, auth: Auth) -> None:
    tight = settings.model_copy(
        update={"max_report_interval_seconds": 30, "max_gpus_per_report": 1}
    )
    with TestClient(create_app(tight, clock=clock)) as limited:
        long = limited.post("/v1/reports", json=report(), headers=auth["collector"])
        many = report(
            end="2025-01-06T10:00:30Z", gpus=[entry(0, gpu_seconds=30), entry(1, gpu_seconds=30)]
        )
        crowded = limited.post("/v1/reports", json=many, headers=auth["collector"])

    assert long.status_code == 422 and "maximum of 30 s" in long.json()["detail"]
    assert crowded.status_code == 422 and crowded.json()["errors"][0]["field"] == "gpus"


def test_body_that_is_not_json_is_a_clear_error(client: TestClient, auth: Auth) -> None:
    response = client.post(
        "/v1/reports",
        content=b"{not json",
        headers={**auth["collector"], "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "json", "text/json", None]
)
@pytest.mark.parametrize("path", ["/v1/reports", "/v1/reports:batch"])
def test_a_report_not_sent_as_json_is_refused_and_nothing_stored(
    client: TestClient, auth: Auth, db: Session, path: str, content_type: str | None
) -> None:
    body = json.dumps(report() if path == "/v1/reports" else {"reports": [report()]})
    headers = {**auth["collector"], **({"Content-Type": content_type} if content_type else {})}

    response = client.post(path, content=body, headers=headers)

    assert response.status_code == 422
    assert (
        response.json()["detail"] == "body: must be JSON, sent with Content-Type: application/json"
    )
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 0
    json_as_well = {**headers, "Content-Type": "application/merge-patch+json; charset=utf-8"}
    assert client.post(path, content=body, headers=json_as_well).status_code in (200, 201)


def test_oversized_body_is_refused_with_413(
    settings, clock: SettableClock, auth: Auth, db: Session
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048})
    big = report(gpus=[entry(n, gpu_seconds=1) for n in range(40)])
    with TestClient(create_app(small, clock=clock)) as limited:
        declared = limited.post("/v1/reports", json=big, headers=auth["collector"])
        chunks = iter([b'{"cluster": "hf-h800", "gpus": [', b" " * 4096, b"]}"])
        streamed = limited.post(
            "/v1/reports",
            content=chunks,
            headers={**auth["collector"], "Content-Type": "application/json"},
        )

    assert declared.status_code == 413
    assert declared.json()["error"] == "PayloadTooLarge"
    assert streamed.status_code == 413
    assert db.execute(select(func.count()).select_from(Report)).scalar_one() == 0
