"""The same budget PUT at once at two real server processes: one row, one `201`, the others
`200`, never a `500`; the audit log has one creation, and a replacement only for a change."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEntry, Budget
from tests.app.budgets.test_budgets import monthly
from tests.app.cli.test_admin_concurrency import AT_ONCE, at_once
from tests.support import running_server

pytestmark = pytest.mark.slow
Tokens = dict[str, str]


@contextmanager
def running_servers(db_url: str, log_dir: Path) -> Iterator[list[str]]:
    with running_server(db_url, log_dir) as one, running_server(db_url, log_dir) as two:
        yield [one.url, two.url]


def test_the_same_budget_put_at_once_is_one_row(
    db_url: str, tokens: Tokens, log_dir: Path, db: Session
) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    amounts = [str(10 + n) for n in range(AT_ONCE)]
    with running_servers(db_url, log_dir) as urls:
        same = at_once(
            urls,
            lambda url, _: httpx.put(
                f"{url}/v1/budgets/nlp", json=monthly("100"), headers=admin, timeout=60
            ),
        )
        differing = at_once(
            urls,
            lambda url, i: httpx.put(
                f"{url}/v1/budgets/other", json=monthly(amounts[i]), headers=admin, timeout=60
            ),
        )

    assert same == [200] * (AT_ONCE - 1) + [201]
    assert differing == [200] * (AT_ONCE - 1) + [201]
    rows = db.execute(select(Budget.name, Budget.amount_micro).order_by(Budget.name)).all()
    assert [name for name, _ in rows] == ["nlp", "other"]
    assert rows[0].amount_micro == 100_000_000
    actions = db.execute(
        select(AuditEntry.target, AuditEntry.action, AuditEntry.details).order_by(AuditEntry.id)
    ).all()
    nlp = [action for target, action, _ in actions if target == "budget:nlp"]
    other = [(action, details) for target, action, details in actions if target == "budget:other"]
    assert nlp == ["budget.create"]
    assert other[0][0] == "budget.create"
    assert {action for action, _ in other[1:]} <= {"budget.replace"}
    # Each replacement starts from what the one before left, and the last is what is stored.
    for (_, before), (_, after) in zip(other, other[1:], strict=False):
        assert after["old"] == before["new"]
    assert other[-1][1]["new"]["amount"] == str(rows[1].amount_micro // 1_000_000)
