"""A job's token count: set, kept, cleared and audited as its labels are; refused unless it
is a whole number from 0 to 10^18, by the API and, for a negative one, by the database."""

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import AuditEntry, Cluster, Job
from tests.support import CLUSTER

Auth = dict[str, dict[str, str]]
URL = f"/v1/jobs/{CLUSTER}/7"
V3_TOKENS = 14_800_000_000_000


def put(client: TestClient, auth: Auth, body: dict[str, Any], url: str = URL) -> Any:
    return client.put(url, json=body, headers=auth["admin"])


def test_tokens_are_set_kept_cleared_and_audited(
    client: TestClient, auth: Auth, db: Session
) -> None:
    created = put(client, auth, {"model": "m", "tokens": V3_TOKENS})
    kept = put(client, auth, {"phase": "pre-training"})
    same_as_digits = put(client, auth, {"tokens": str(V3_TOKENS)})
    largest = put(client, auth, {"tokens": 10**18})
    cleared = put(client, auth, {"tokens": None})
    zero = put(client, auth, {"tokens": 0}, url=f"/v1/jobs/{CLUSTER}/8")

    assert (created.status_code, created.json()["tokens"]) == (201, str(V3_TOKENS))
    assert (kept.status_code, kept.json()["tokens"]) == (200, str(V3_TOKENS))
    assert (same_as_digits.status_code, same_as_digits.json()["tokens"]) == (200, str(V3_TOKENS))
    assert largest.json()["tokens"] == "1000000000000000000"  # a string: past 2^53
    assert cleared.json()["tokens"] is None
    assert (zero.status_code, zero.json()["tokens"]) == (201, "0")
    one = client.get(URL, headers=auth["viewer"]).json()
    listed = client.get("/v1/jobs", headers=auth["viewer"]).json()["jobs"]
    assert one["tokens"] is None
    assert sorted((job["job_id"], job["tokens"]) for job in listed) == [("7", None), ("8", "0")]
    audit = db.execute(
        select(AuditEntry.action, AuditEntry.details)
        .where(AuditEntry.target == f"job:{CLUSTER}/7")
        .order_by(AuditEntry.id)
    ).all()
    # The same count again, written in digits, changes nothing and is not logged.
    assert [(row.action, row.details) for row in audit] == [
        ("job.create", {"old": None, "new": {"model": "m", "tokens": V3_TOKENS}}),
        ("job.update", {"old": {"phase": None}, "new": {"phase": "pre-training"}}),
        ("job.update", {"old": {"tokens": V3_TOKENS}, "new": {"tokens": 10**18}}),
        ("job.update", {"old": {"tokens": 10**18}, "new": {"tokens": None}}),
    ]


@pytest.mark.parametrize(
    ("count", "reason"),
    [
        (-1, "greater than or equal to 0"),
        (10**18 + 1, "less than or equal to 1000000000000000000"),
        (1.5, "fractional part"),
        (True, "must be a whole number, not true or false"),
        ("1e3", "must be a whole number written in plain digits"),
        (" 12", "must be a whole number written in plain digits"),
        ("many", "must be a whole number written in plain digits"),
        ([1], "valid integer"),
    ],
)
def test_a_bad_count_is_a_clear_422_and_nothing_is_stored(
    client: TestClient, auth: Auth, db: Session, count: Any, reason: str
) -> None:
    assert put(client, auth, {"model": "m", "tokens": 5}).status_code == 201

    changed = put(client, auth, {"model": "other", "tokens": count})
    created = put(client, auth, {"model": "m", "tokens": count}, url=f"/v1/jobs/{CLUSTER}/8")

    for response in (changed, created):
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "tokens"
        assert reason in error["reason"], error
    job = client.get(URL, headers=auth["viewer"]).json()
    assert (job["model"], job["tokens"]) == ("m", "5")
    assert client.get(f"/v1/jobs/{CLUSTER}/8", headers=auth["viewer"]).status_code == 404
    assert db.scalars(
        select(AuditEntry.action).where(AuditEntry.action != "token.create")
    ).all() == ["job.create"]


def test_the_database_refuses_a_negative_count_whatever_writes_it(
    client: TestClient, auth: Auth, db: Session
) -> None:
    assert put(client, auth, {"model": "m", "tokens": 5}).status_code == 201
    cluster_id = db.scalars(select(Cluster.id).where(Cluster.name == CLUSTER)).one()
    now = datetime(2025, 1, 6, tzinfo=UTC)
    writes = [
        update(Job).where(Job.scheduler_job_id == "7").values(tokens=-1),
        insert(Job).values(
            cluster_id=cluster_id,
            scheduler_job_id="9",
            labels={},
            tokens=-1,
            created_at=now,
            updated_at=now,
        ),
    ]

    for statement in writes:
        with pytest.raises(IntegrityError, match="ck_jobs_tokens_non_negative"):
            db.execute(statement)
        db.rollback()

    assert db.scalars(select(Job.tokens).order_by(Job.id)).all() == [5]
