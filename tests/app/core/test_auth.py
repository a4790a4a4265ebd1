"""Roles: admin, viewer and collector each reach what they may and nothing else."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.clock import utc_now
from app.models import ApiToken, AuditEntry
from app.tokens.known import RECHECK
from app.tokens.service import revoke_token
from tests.conftest import make_token
from tests.support import SettableClock, report

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


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/reports"])
def test_revoked_token_stops_working_within_the_recheck_delay(
    client: TestClient, db_url: str, db: Session, clock: SettableClock, path: str
) -> None:
    role = "collector" if path == "/v1/reports" else "viewer"
    token = make_token(db_url, role, cluster="hf-h800" if role == "collector" else None, name="x")
    headers = {"Authorization": f"Bearer {token}"}

    def status() -> int:
        if path == "/v1/reports":  # stored once, then a resend each time
            return client.post(path, json=report(), headers=headers).status_code
        return client.get(path, headers=headers).status_code

    assert status() in (200, 201)
    started = clock.moment
    with db.begin():
        revoke_token(db, name="x", actor="test", now=utc_now())

    # Remembered until the service reads its tokens again, RECHECK after it last did.
    clock.moment = started + RECHECK - timedelta(microseconds=1)
    assert status() in (200, 201)
    clock.moment = started + RECHECK
    assert status() == 401
    actions = db.execute(select(AuditEntry.action, AuditEntry.target).order_by(AuditEntry.id)).all()
    assert ("token.revoke", "token:x") in [tuple(a) for a in actions]


def test_a_clock_stepped_back_reads_the_tokens_again(
    client: TestClient, db_url: str, db: Session, clock: SettableClock
) -> None:
    headers = {"Authorization": f"Bearer {make_token(db_url, 'viewer', name='x')}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with db.begin():
        revoke_token(db, name="x", actor="test", now=utc_now())

    clock.moment -= timedelta(microseconds=1)  # before RECHECK has passed, but back in time
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_while_the_tokens_are_read_again_others_look_theirs_up(
    client: TestClient, db_url: str, db: Session, clock: SettableClock
) -> None:
    headers = {"Authorization": f"Bearer {make_token(db_url, 'viewer', name='x')}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with db.begin():
        revoke_token(db, name="x", actor="test", now=utc_now())
    known = client.app.state.known_tokens  # type: ignore[attr-defined]

    clock.moment += RECHECK
    with known._checking:  # a slow read again under way in another request
        assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_a_token_deleted_and_another_created_is_refused(
    client: TestClient, db_url: str, db: Session, clock: SettableClock
) -> None:
    """What is remembered is read again, token by token: no count of the table's rows
    stays the same through a deletion and a creation."""
    headers = {"Authorization": f"Bearer {make_token(db_url, 'viewer', name='x')}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    db.execute(delete(ApiToken).where(ApiToken.name == "x"))
    db.commit()
    other = make_token(db_url, "viewer", name="y")

    clock.moment += RECHECK
    assert client.get("/v1/jobs", headers=headers).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_an_unknown_token_is_not_remembered_as_unknown(client: TestClient, db_url: str) -> None:
    first = make_token(db_url, "viewer", name="first")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {first}"}).status_code == 200
    second = make_token(db_url, "viewer", name="second")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_tokens_are_stored_only_as_hashes(db_url: str, db: Session) -> None:
    token = make_token(db_url, "admin", name="hashed")

    stored = db.execute(select(ApiToken).where(ApiToken.name == "hashed")).scalar_one()
    assert token.startswith("gpc_") and len(token) > 40
    assert stored.token_sha256 != token and token not in stored.token_sha256
    assert len(stored.token_sha256) == 64
