"""Backups: a `pg_dump` restored with `pg_restore` into a fresh database gives the same totals."""

import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.conftest import POSTGRES_URL, postgres_or_skip, postgres_url
from tests.support import CLUSTER, SettableClock, drop_all_postgres, entry, libpq, report

Auth = dict[str, dict[str, str]]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_dump_and_restore_keep_every_total(
    client: TestClient, auth: Auth, db_url: str, clock: SettableClock, tmp_path: Path
) -> None:
    for tool in ("pg_dump", "pg_restore"):
        assert shutil.which(tool), f"{tool} is needed (Debian: postgresql-client)"
    client.post(
        "/v1/rates",
        json={
            "gpu_model": "NVIDIA H800",
            "usd_per_gpu_hour": "2.25",
            "effective_from": "2025-01-01T00:00:00Z",
        },
        headers=auth["admin"],
    )
    client.put(
        f"/v1/jobs/{CLUSTER}/1", json={"model": "llama", "team": "red"}, headers=auth["admin"]
    )
    for seq in range(3):
        body = report(
            seq,
            start=f"2025-01-06T1{seq}:00:00Z",
            end=f"2025-01-06T1{seq}:30:00Z",
            gpus=[entry(0, job_id="1", gpu_seconds=1800), entry(1, job_id=None, gpu_seconds=900)],
        )
        assert client.post("/v1/reports", json=body, headers=auth["collector"]).status_code == 201
    params = {"group_by": "model,team,day"}
    before = client.get("/v1/costs", params=params, headers=auth["viewer"]).json()

    dump = tmp_path / "gpucost.dump"
    subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", libpq(db_url)], check=True)
    restored_url = postgres_url(POSTGRES_URL, "_restore")
    postgres_or_skip(restored_url)
    drop_all_postgres(restored_url)
    subprocess.run(
        [
            "pg_restore",
            "--no-owner",
            "--clean",
            "--if-exists",
            f"--dbname={libpq(restored_url)}",
            str(dump),
        ],
        check=True,
    )

    restored = Settings(database_url=restored_url)
    with TestClient(create_app(restored, clock=clock)) as other:
        after = other.get("/v1/costs", params=params, headers=auth["viewer"]).json()
        ready = other.get("/readyz").json()

    assert after == before
    assert before["total"]["cost_usd"] == "5.0625"  # 3 x (0.5 h + 0.25 h idle) at $2.25
    assert ready["status"] == "ready"
