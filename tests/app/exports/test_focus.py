"""The FOCUS export as finance tools read it: job labels in Tags (booked with a closed month,
corrected when they change), Parquet with exact decimals read back by pyarrow and duckdb,
real names in Parquet and neutralised ones in CSV, and the labels a closed month booked
before labels were booked."""

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.cli import cli
from app.core import migrate
from app.core.config import Settings
from app.exports import _parquet as parquet
from app.main import create_app
from tests.conftest import make_token
from tests.migrations.test_migrations import scratch_engine  # noqa: F401 (fixture)
from tests.support import CLUSTER, SettableClock, entry, report

Auth = dict[str, dict[str, str]]
JANUARY = {"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"}
BOTH = {"from": "2025-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}
LABELS = {"project": "v3", "cost-center": "cc-42"}


def send(client: TestClient, auth: Auth, seq: int, start: str, end: str, *gpus: dict) -> None:
    body = report(seq, start=start, end=end, gpus=list(gpus))
    response = client.post("/v1/reports", json=body, headers=auth["collector"])
    assert response.status_code == 201, response.text


def focus_csv(client: TestClient, auth: Auth, window: dict[str, str]) -> str:
    params = {**window, "granularity": "hour"}
    response = client.get("/v1/exports/focus.csv", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    return response.text


def rows(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def books(client: TestClient, auth: Auth, clock: SettableClock) -> None:
    """January: job 7 (labelled, named '@nightly-eval') and idle GPUs of two models; closed.
    Then a late January hour, and job 7's labels changed; February: job 7 again."""
    clock.moment = datetime(2025, 3, 15, tzinfo=UTC)
    rate = {"gpu_model": "NVIDIA H800", "usd_per_gpu_hour": "2.10",
            "effective_from": "2025-01-01T00:00:00Z"}  # fmt: skip
    assert client.post("/v1/rates", json=rate, headers=auth["admin"]).status_code == 201
    job = {"model": "llama", "team": "red", "name": "@nightly-eval", "labels": LABELS}
    assert client.put(f"/v1/jobs/{CLUSTER}/7", json=job, headers=auth["admin"]).status_code == 201
    send(client, auth, 1, "2025-01-10T10:00:00Z", "2025-01-10T11:00:00Z",
         entry(0, job_id="7", gpu_seconds=3600), entry(1, job_id=None, gpu_seconds=3600),
         entry(2, job_id=None, gpu_seconds=1800, model="NVIDIA A100"))  # fmt: skip
    send(client, auth, 2, "2025-02-03T10:00:00Z", "2025-02-03T11:00:00Z",
         entry(0, job_id="7", gpu_seconds="1234.5"))  # fmt: skip
    assert client.post("/v1/periods/2025-01/close", headers=auth["admin"]).status_code == 200
    send(client, auth, 3, "2025-01-20T00:00:00Z", "2025-01-20T01:00:00Z",
         entry(3, job_id="7", gpu_seconds=3600))  # fmt: skip
    relabel = {"labels": {"cost-center": "cc-7"}}
    assert (
        client.put(f"/v1/jobs/{CLUSTER}/7", json=relabel, headers=auth["admin"]).status_code == 200
    )


def tags(row: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(row["Tags"])
    return parsed


def test_labels_are_tags_booked_with_the_month_and_corrected_when_they_change(
    client: TestClient, auth: Auth, books: None
) -> None:
    january = rows(focus_csv(client, auth, JANUARY))
    job = next(r for r in january if r["ResourceType"] == "Job")
    # As booked when January closed: the labels then, beside gpucost's own prefixed tags.
    assert tags(job) == {
        "cost-center": "cc-42", "project": "v3", "gpucost/job_id": "7", "gpucost/model": "llama",
        "gpucost/phase": "(unattributed)", "gpucost/team": "red",
        "gpucost/user": "(unattributed)",
    }  # fmt: skip
    # Idle capacity: one resource per GPU model.
    idle = sorted(r["ResourceId"] for r in january if r["ResourceType"] == "Idle GPU Capacity")
    assert idle == [f"{CLUSTER}/idle/NVIDIA A100", f"{CLUSTER}/idle/NVIDIA H800"]
    assert {r["InvoiceId"] for r in january} == {"gpucost:2025-01"}

    february = rows(focus_csv(client, auth, {"from": "2025-02-01T00:00:00Z",
                                             "to": "2025-03-01T00:00:00Z"}))  # fmt: skip
    corrections = [
        (
            r["ChargePeriodStart"],
            tags(r).get("cost-center"),
            tags(r).get("project"),
            r["BilledCost"],
        )
        for r in february
        if r["ChargeClass"] == "Correction"
    ]
    # The relabelled hour moves from the old tags to the new; the late hour comes new-tagged.
    assert sorted(corrections) == [
        ("2025-01-10T10:00:00Z", "cc-42", "v3", "-2.100000000"),
        ("2025-01-10T10:00:00Z", "cc-7", None, "2.100000000"),
        ("2025-01-20T00:00:00Z", "cc-7", None, "2.100000000"),
    ]
    usage = next(r for r in february if r["ChargeClass"] == "")
    assert tags(usage)["cost-center"] == "cc-7" and usage["InvoiceId"] == "gpucost:2025-02"


def test_parquet_has_the_csvs_rows_as_exact_decimals_and_real_names(
    client: TestClient, auth: Auth, books: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 2)  # several row groups from a few rows
    params = {**BOTH, "granularity": "hour"}
    response = client.get("/v1/exports/focus.parquet", params=params, headers=auth["viewer"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert "content-length" not in response.headers  # streamed
    assert response.headers["content-disposition"] == (
        'attachment; filename="gpucost-focus-2025010100-2025030100-hour.parquet"'
    )
    file = pq.ParquetFile(io.BytesIO(response.content))
    table = file.read()
    from_csv = rows(focus_csv(client, auth, BOTH))
    assert file.metadata.num_row_groups == (len(from_csv) + 1) // 2 and table.num_rows == len(
        from_csv
    )
    schema = table.schema
    assert schema.field("BilledCost").type == pa.decimal128(38, 9)
    assert schema.field("ListCost").type == pa.decimal128(38, 15)
    assert schema.field("ListUnitPrice").type == pa.decimal128(38, 6)
    assert schema.field("ChargePeriodStart").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("Tags").type == pa.string()
    assert table.column_names == list(from_csv[0])

    # The same rows, field by field; the CSV guards the name a spreadsheet would run.
    for parquet_row, csv_row in zip(table.to_pylist(), from_csv, strict=True):
        for name, value in parquet_row.items():
            if isinstance(value, Decimal):
                assert value == Decimal(csv_row[name]), name
            elif isinstance(value, datetime):
                assert value.strftime("%Y-%m-%dT%H:%M:%SZ") == csv_row[name], name
            elif name == "ResourceName" and value == "@nightly-eval":
                assert csv_row[name] == "'@nightly-eval"
            else:
                assert (value or "") == csv_row[name], name

    # duckdb reads exact decimals: the billed total is the cost API's, to the last digit.
    connection = duckdb.connect()
    connection.register("focus", table)
    billed, hours = connection.execute(
        "SELECT sum(BilledCost), sum(PricingQuantity) FROM focus"
    ).fetchone()  # type: ignore[misc]
    costs = client.get("/v1/costs", params=BOTH, headers=auth["viewer"]).json()["total"]
    assert (billed, hours) == (Decimal(costs["cost_usd"]), Decimal(costs["gpu_hours"]))


def test_closing_a_month_changes_no_byte_of_either_file_and_empty_is_valid(
    client: TestClient, auth: Auth, clock: SettableClock
) -> None:
    clock.moment = datetime(2025, 3, 15, tzinfo=UTC)
    job = {"labels": LABELS, "name": "@nightly-eval"}
    client.put(f"/v1/jobs/{CLUSTER}/7", json=job, headers=auth["admin"])
    send(client, auth, 1, "2025-01-10T10:00:00Z", "2025-01-10T11:00:00Z",
         entry(0, job_id="7", gpu_seconds=1800), entry(1, job_id=None))  # fmt: skip
    params = {**JANUARY, "granularity": "hour"}

    def both() -> tuple[bytes, bytes]:
        files = tuple(
            client.get(f"/v1/exports/focus.{kind}", params=params, headers=auth["viewer"]).content
            for kind in ("csv", "parquet")
        )
        return files[0], files[1]

    before = both()
    assert client.post("/v1/periods/2025-01/close", headers=auth["admin"]).status_code == 200
    assert both() == before

    empty = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z", "granularity": "day"}
    response = client.get("/v1/exports/focus.parquet", params=empty, headers=auth["viewer"])
    table = pq.read_table(io.BytesIO(response.content))
    assert (response.status_code, table.num_rows) == (200, 0)
    assert table.column_names == next(csv.reader(io.StringIO(before[0].decode())))


def test_the_cli_writes_parquet_to_a_file(
    client: TestClient, auth: Auth, books: None, db_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "january.parquet"
    result = CliRunner().invoke(
        cli, ["export", "focus", "--month", "2025-01", "--granularity", "hour",
              "--format", "parquet", "-o", str(target)],
        env={"GPUCOST_DATABASE_URL": db_url},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    written = duckdb.connect().execute(
        f"SELECT sum(BilledCost), count(*) FROM read_parquet('{target}')"
    )
    january = rows(focus_csv(client, auth, JANUARY))
    assert written.fetchone() == (sum(Decimal(r["BilledCost"]) for r in january), len(january))
    for args, message in [
        (["--format", "parquet"], "written to a file (-o FILE)"),
        (["--format", "xlsx"], "--format must be csv or parquet"),
    ]:
        refused = CliRunner().invoke(
            cli, ["export", "focus", "--month", "2025-01", *args],
            env={"GPUCOST_DATABASE_URL": db_url},
        )  # fmt: skip
        assert refused.exit_code == 1 and message in refused.stderr


def test_label_keys_may_not_take_gpucosts_prefix(client: TestClient, auth: Auth) -> None:
    response = client.put(
        f"/v1/jobs/{CLUSTER}/9", json={"labels": {"GPUcost/team": "x"}}, headers=auth["admin"]
    )
    assert response.status_code == 422
    assert "gpucost's own" in response.text


def test_months_closed_before_labels_were_booked_keep_todays_labels(
    scratch_engine: Engine,  # noqa: F811
) -> None:
    """A month closed under revision 0009 gets its jobs' labels as they are at the upgrade:
    no correction appears for labels nobody changed, and Tags carry them."""
    migrate.upgrade(scratch_engine)
    url = scratch_engine.url.render_as_string(hide_password=False)
    auth = {role: {"Authorization": "Bearer " + make_token(
        url, role, CLUSTER if role == "collector" else None, name=role)}
        for role in ("admin", "viewer", "collector")}  # fmt: skip
    clock = SettableClock(datetime(2025, 3, 15, tzinfo=UTC))
    with TestClient(create_app(Settings(database_url=url), clock=clock)) as client:
        job = {"labels": LABELS}
        client.put(f"/v1/jobs/{CLUSTER}/7", json=job, headers=auth["admin"])
        send(client, auth, 1, "2025-01-10T10:00:00Z", "2025-01-10T11:00:00Z",
             entry(0, job_id="7", gpu_seconds=3600))  # fmt: skip
        assert client.post("/v1/periods/2025-01/close", headers=auth["admin"]).status_code == 200
    migrate.downgrade(scratch_engine, "0009")
    with scratch_engine.begin() as conn:  # labels as 0009 stored them: in the order given
        value = "CAST(:l AS json)" if scratch_engine.dialect.name == "postgresql" else ":l"
        legacy = {**LABELS, "GPUcost/team": "blue"}  # a key under the prefix now reserved
        conn.execute(text(f"UPDATE jobs SET labels = {value}"), {"l": json.dumps(legacy)})
    migrate.upgrade(scratch_engine)

    expected = json.dumps(dict(sorted({**LABELS, "x-GPUcost/team": "blue"}.items())))
    with scratch_engine.connect() as conn:
        booked = conn.execute(text("SELECT labels FROM period_lines WHERE job_id = '7'")).all()
        stored = conn.execute(text("SELECT CAST(labels AS TEXT) FROM jobs")).scalar_one()
    assert [r[0] for r in booked] == [expected]
    assert stored == expected
    with TestClient(create_app(Settings(database_url=url), clock=clock)) as client:
        both = rows(focus_csv(client, auth, BOTH))
    assert [r["ChargeClass"] for r in both] == [""]
    assert tags(both[0])["cost-center"] == "cc-42"
