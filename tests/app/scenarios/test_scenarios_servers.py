"""Price scenarios written at once through two real server processes: the same scenario or
price from several admins makes one change (201, then 200s) and one audit entry; a scenario
deleted while it is priced, set again or read (as costs read it, too) answers a clean status,
never a 500, and leaves no price without its scenario."""

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Scenario, ScenarioPrice
from tests.app.cli.test_admin_concurrency import AT_ONCE, at_once, audit_count, count
from tests.support import running_server

pytestmark = pytest.mark.slow
ROUNDS = 3
# Delete races: each round deletes a scenario while others price, set and read it.
RACES = 12
PRICE = {"gpu_model": "NVIDIA H800", "effective_from": "2025-01-01T00:00:00Z",
         "usd_per_gpu_hour": "2", "usd_per_kwh": "0.1"}  # fmt: skip


def test_the_same_scenario_and_price_at_once_make_one_change_each(
    db_url: str, tokens: dict[str, str], log_dir: Path, db: Session
) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    puts, posts = [], []
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        urls = [one.url, two.url]
        for n in range(ROUNDS):
            puts.append(
                at_once(
                    urls,
                    lambda url, _, n=n: httpx.put(
                        f"{url}/v1/scenarios/s{n}",
                        json={"description": "d"},
                        headers=admin,
                        timeout=60,
                    ),  # fmt: skip
                )
            )
            posts.append(
                at_once(
                    urls,
                    lambda url, _, n=n: httpx.post(
                        f"{url}/v1/scenarios/s{n}/prices", json=PRICE, headers=admin, timeout=60
                    ),
                )
            )

    assert puts == [[200] * (AT_ONCE - 1) + [201]] * ROUNDS
    assert posts == [[200] * (AT_ONCE - 1) + [201]] * ROUNDS
    assert (count(db, Scenario), count(db, ScenarioPrice)) == (ROUNDS, ROUNDS)
    assert audit_count(db, "scenario.create") == audit_count(db, "scenario_price.create") == ROUNDS
    assert audit_count(db, "scenario.update") == 0


def racing(urls: list[str], requests: dict[str, Callable[[str], httpx.Response]]) -> dict[str, int]:
    """Each request from a thread of its own, released together, spread over the servers;
    each one's status by name."""
    statuses: dict[str, int] = {}
    gate = threading.Barrier(len(requests))

    def ask(i: int, name: str) -> None:
        gate.wait()
        statuses[name] = requests[name](urls[i % len(urls)]).status_code

    threads = [threading.Thread(target=ask, args=(i, n)) for i, n in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_a_scenario_deleted_while_priced_set_and_read_never_fails_a_request(
    db_url: str, tokens: dict[str, str], log_dir: Path, db: Session
) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        urls = [one.url, two.url]
        seen: list[dict[str, int]] = []
        for n in range(RACES):
            path = f"/v1/scenarios/r{n}"
            assert httpx.put(f"{one.url}{path}", json={}, headers=admin).status_code == 201
            # Several prices, so that a delete takes a moment and a read lands within it.
            for hour in range(8):
                body = {**PRICE, "effective_from": f"2025-01-01T{hour:02d}:00:00Z"}
                created = httpx.post(f"{one.url}{path}/prices", json=body, headers=admin)
                assert created.status_code == 201, created.text
            late = {**PRICE, "effective_from": "2025-02-01T00:00:00Z"}
            seen.append(
                racing(
                    urls,
                    {
                        "delete": lambda url, p=path: httpx.delete(
                            url + p, headers=admin, timeout=60
                        ),
                        "set": lambda url, p=path: httpx.put(
                            url + p, json={"description": "again"}, headers=admin, timeout=60
                        ),
                        "new price": lambda url, p=path, b=late: httpx.post(
                            f"{url}{p}/prices", json=b, headers=admin, timeout=60
                        ),
                        "same price": lambda url, p=path: httpx.post(
                            f"{url}{p}/prices", json=PRICE, headers=admin, timeout=60
                        ),
                        "list": lambda url: httpx.get(
                            f"{url}/v1/scenarios", headers=viewer, timeout=60
                        ),
                        "one": lambda url, p=path: httpx.get(url + p, headers=viewer, timeout=60),
                        "costs": lambda url, n=n: httpx.get(
                            f"{url}/v1/costs",
                            params={"scenario": f"r{n}"},
                            headers=viewer,
                            timeout=60,
                        ),
                    },
                )
            )

    # Before the delete or after it: a price is set (or found), or its scenario is gone.
    allowed = {
        "delete": {204},
        "set": {200, 201},  # described, or made again after the delete
        "new price": {201, 404},
        "same price": {200, 201, 404},  # 201: to the scenario set again
        "list": {200},
        "one": {200, 404},
        "costs": {200, 404},
    }
    assert [
        {name: status for name, status in race.items() if status not in allowed[name]}
        for race in seen
    ] == [{}] * RACES
    orphans = select(func.count()).where(ScenarioPrice.scenario_id.not_in(select(Scenario.id)))
    assert db.execute(orphans).scalar_one() == 0
