"""Roles: admin, viewer and collector each reach what they may and nothing else."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.clock import utc_now
from app.models import ApiToken, AuditEntry
from app.tokens.service import revoke_token
from tests.conftest import make_token
from tests.support import report

Auth = dict[str, dict[str, str]]
JOB = {"model": "deepseek-v3"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer gpc_not-a-token"}, 401),
        ({"Authorization": "Basic eDp5"}, 401),
    ],
    ids=["missing", "unknown", "wrong scheme"],
)
def test_requests_without_a_valid_token_get_401(
    client: TestClient, headers: dict, status: int
) -> None:
    for method, path, body in [
        ("POST", "/v1/reports", report()),
        ("GET", "/v1/jobs", None),
        ("PUT", "/v1/jobs/hf-h800/1", JOB),
    ]:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["error"] == "Unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_bad_token_is_refused_before_the_body_is_judged(client: TestClient, auth: Auth) -> None:
    # Nobody unauthenticated learns how their body would have been validated.
    invalid = report(gpus=[{"uuid": "not-a-gpu"}])
    for headers, status in [({}, 401), (auth["viewer"], 403), (auth["collector"], 422)]:
        for path, body in [("/v1/reports", invalid), ("/v1/reports:batch", {"reports": "x"})]:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == status, (path, headers, response.text)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("admin", {"report": 403, "read": 200, "write": 201}),
        ("viewer", {"report": 403, "read": 200, "write": 403}),
        ("collector", {"report": 201, "read": 403, "write": 201}),
    ],
)
def test_each_role_reaches_only_its_routes(
    client: TestClient, auth: Auth, role: str, expected: dict
) -> None:
    headers = auth[role]
    got = {
        "report": client.post("/v1/reports", json=report(), headers=headers).status_code,
        "read": client.get("/v1/jobs", headers=headers).status_code,
        "write": client.put("/v1/jobs/hf-h800/job-7", json=JOB, headers=headers).status_code,
    }
    assert got == expected


def test_collector_may_not_report_or_label_for_another_cluster(
    client: TestClient, auth: Auth
) -> None:
    foreign = client.post("/v1/reports", json=report(cluster="other"), headers=auth["collector"])
    relabel = client.put("/v1/jobs/other/1", json=JOB, headers=auth["collector"])

    assert foreign.status_code == 403
    assert "bound to cluster 'hf-h800'" in foreign.json()["detail"]
    assert relabel.status_code == 403


def test_revoked_token_stops_working_on_the_next_request(
    client: TestClient, db_url: str, db: Session
) -> None:
    token = make_token(db_url, "viewer", name="short-lived")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200

    with db.begin():
        revoke_token(db, name="short-lived", actor="test", now=utc_now())

    assert client.get("/v1/jobs", headers=headers).status_code == 401
    actions = db.execute(select(AuditEntry.action, AuditEntry.target).order_by(AuditEntry.id)).all()
    assert ("token.revoke", "token:short-lived") in [tuple(a) for a in actions]


def test_tokens_are_stored_only_as_hashes(db_url: str, db: Session) -> None:
    token = make_token(db_url, "admin", name="hashed")

    stored = db.execute(select(ApiToken).where(ApiToken.name == "hashed")).scalar_one()
    assert token.startswith("gpc_") and len(token) > 40
    assert stored.token_sha256 != token and token not in stored.token_sha256
    assert len(stored.token_sha256) == 64
