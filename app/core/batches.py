"""Splitting many values into parts small enough for one statement each."""

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
# Keys per look-up: far below both backends' limits on bound parameters in one statement.
CHUNK = 1000


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]
