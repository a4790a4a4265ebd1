"""Probes and database trouble: `/healthz`, `/readyz`, and 503 rather than 500."""

from pathlib import Path

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app


def test_ready_when_the_schema_is_at_head(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_not_ready_before_migrations(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")

    assert ready.status_code == 503
    assert "run `gpucost db upgrade`" in ready.json()["detail"]


def test_unreachable_database_answers_503(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none", db_pool_timeout_seconds=1
    )
    with TestClient(create_app(settings)) as client:
        alive = client.get("/healthz")
        ready = client.get("/readyz")
        jobs = client.get("/v1/jobs", headers={"Authorization": "Bearer gpc_x"})

    assert alive.status_code == 200
    assert ready.status_code == 503
    assert "database unreachable" in ready.json()["detail"]
    assert jobs.status_code == 503
    assert jobs.json()["error"] == "DatabaseUnavailable"
    assert jobs.headers["Retry-After"] == "5"
