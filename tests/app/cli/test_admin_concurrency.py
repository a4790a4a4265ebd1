"""Identical admin writes arriving at once at two server processes: one of them makes the
change, the others answer a clean 409 (a month closes once) or an idempotent 200 (the same
price, the same job), never a 500; and the audit log holds one entry per real change."""

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AuditEntry, Job, Period, Rate
from tests.support import CLUSTER, entry, report, running_server

pytestmark = pytest.mark.slow
Tokens = dict[str, str]
AT_ONCE = 4
ROUNDS = 3


def at_once(urls: list[str], request: Callable[[str, int], httpx.Response]) -> list[int]:
    """`request(url, i)` for i in range(AT_ONCE), from threads released together and spread
    over the servers; the statuses, sorted."""
    statuses: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(AT_ONCE)

    def ask(i: int) -> None:
        gate.wait()
        status = request(urls[i % len(urls)], i).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(AT_ONCE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def audit_count(db: Session, action: str) -> int:
    query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
    return db.execute(query).scalar_one()


def count(db: Session, model: type) -> int:
    return db.execute(select(func.count()).select_from(model)).scalar_one()


def test_identical_admin_writes_at_once_make_one_change_each(
    db_url: str, tokens: Tokens, log_dir: Path, db: Session
) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    collector = {"Authorization": f"Bearer {tokens['collector']}"}
    months = ["2025-01", "2025-02", "2025-03"]
    closes, rates, jobs = [], [], []
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        urls = [one.url, two.url]
        # Usage in each month, so that closing one has lines to book.
        for seq, month in enumerate(months, start=1):
            body = report(
                seq,
                start=f"{month}-10T10:00:00Z",
                end=f"{month}-10T10:01:00Z",
                gpus=[entry(0, job_id="7")],
            )
            assert httpx.post(f"{one.url}/v1/reports", json=body, headers=collector).is_success

        for month in months:
            closes.append(
                at_once(
                    urls,
                    lambda url, _, m=month: httpx.post(
                        f"{url}/v1/periods/{m}/close", headers=admin, timeout=60
                    ),
                )
            )
        for hour in range(ROUNDS):
            rate = {
                "gpu_model": "NVIDIA H800",
                "usd_per_gpu_hour": "2.35",
                "effective_from": f"2025-01-01T{hour:02d}:00:00Z",
                **({"cluster": CLUSTER} if hour % 2 else {}),
            }
            rates.append(
                at_once(
                    urls,
                    lambda url, _, r=rate: httpx.post(
                        f"{url}/v1/rates", json=r, headers=admin, timeout=60
                    ),
                )
            )
        for n in range(ROUNDS):
            labels = {"model": "deepseek-v3", "team": "foundation", "labels": {"n": str(n)}}
            jobs.append(
                at_once(
                    urls,
                    lambda url, _, job=n, body=labels: httpx.put(
                        f"{url}/v1/jobs/{CLUSTER}/{1000 + job}",
                        json=body,
                        headers=admin,
                        timeout=60,
                    ),
                )
            )

    assert closes == [[200, 409, 409, 409]] * len(months)
    assert rates == [[200, 200, 200, 201]] * ROUNDS
    assert jobs == [[200, 200, 200, 201]] * ROUNDS
    assert count(db, Period) == len(months)
    assert count(db, Rate) == ROUNDS
    # Job 7 was created by its report; the three registered ones once each.
    assert count(db, Job) == 1 + ROUNDS
    assert audit_count(db, "period.close") == len(months)
    assert audit_count(db, "rate.create") == ROUNDS
    assert audit_count(db, "rate.restate") == 0
    assert audit_count(db, "job.create") == ROUNDS
    assert audit_count(db, "job.update") == 0
    created = db.execute(
        select(AuditEntry.details).where(AuditEntry.action == "job.create")
    ).scalars()
    assert [d["old"] for d in created] == [None] * ROUNDS


def test_first_closes_of_two_months_at_once_leave_the_books_in_order(
    db_url: str, tokens: Tokens, log_dir: Path, db: Session
) -> None:
    # Usage from January: November (empty) or January may start the books, not both, for
    # December would be left open between them.
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    collector = {"Authorization": f"Bearer {tokens['collector']}"}
    body = report(1, start="2025-01-10T10:00:00Z", end="2025-01-10T10:01:00Z")
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        assert httpx.post(f"{one.url}/v1/reports", json=body, headers=collector).is_success
        statuses = at_once(
            [one.url, two.url],
            lambda url, i: httpx.post(
                f"{url}/v1/periods/{['2024-11', '2025-01'][i // 2]}/close",
                headers=admin,
                timeout=60,
            ),
        )

    closed = db.execute(select(Period.month)).scalars().all()
    assert statuses == [200, 409, 409, 409]
    assert closed in (["2024-11"], ["2025-01"])
    assert audit_count(db, "period.close") == 1
