"""When a price is in force: from its hour until the next price of the same key starts.

One rule for the books' rates (as costs apply them and as `/v1/rates` lists them) and for
scenarios' prices. A key is whatever a price is for: a GPU model and cluster, a cluster, a
scenario's GPU model.
"""

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

Row = TypeVar("Row")


def in_force(
    rows: Iterable[Row], *, key: Callable[[Row], Any], start: Callable[[Row], datetime]
) -> list[tuple[Row, datetime | None]]:
    """`rows` ordered by key, then start, each with the start of the next row of its key
    (None: in force still)."""
    ordered = sorted(rows, key=lambda row: (key(row), start(row)))
    spans: list[tuple[Row, datetime | None]] = []
    for i, row in enumerate(ordered):
        after = ordered[i + 1] if i + 1 < len(ordered) else None
        spans.append((row, start(after) if after is not None and key(after) == key(row) else None))
    return spans
