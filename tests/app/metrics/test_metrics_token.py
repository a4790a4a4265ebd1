"""`/metrics` behind an optional bearer token (GPUCOST_METRICS_TOKEN)."""

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import Settings
from app.main import create_app
from tests.support import SettableClock

TOKEN = "scrape-3f9c2a7d41e8b6"


def test_metrics_answer_only_the_configured_token(db_url: str, clock: SettableClock) -> None:
    app = create_app(Settings(database_url=db_url, metrics_token=TOKEN), clock=clock)
    with TestClient(app) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
        other_scheme = client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
        right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    for refused in (missing, wrong, other_scheme):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "Unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert "gpucost_" not in refused.text
    assert right.status_code == 200
    assert "# HELP gpucost_http_requests_total" in right.text


def test_a_short_metrics_token_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(database_url="sqlite://", metrics_token="short")


def test_metrics_without_a_configured_token_answer_anyone(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


def test_an_empty_metrics_token_means_none() -> None:
    assert Settings(database_url="sqlite://", metrics_token="").metrics_token is None


def test_the_api_schema_names_the_metrics_token_not_an_api_token(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["paths"]["/metrics"]["get"]["security"] == [{"MetricsToken": []}]
    assert (
        "GPUCOST_METRICS_TOKEN"
        in schema["components"]["securitySchemes"]["MetricsToken"]["description"]
    )
