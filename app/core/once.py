"""`once`: a cached property without the lock functools' takes on Python 3.11.

There, `functools.cached_property` holds one lock per property for every instance of the
class, so threads storing reports at the same time queue for each other's first access
(Python 3.12 dropped the lock). Here the value is worked out and kept in the instance's
`__dict__`, where later look-ups find it without calling the descriptor. Two threads racing
on one instance would each work it out, and keep one: the values are the same.
"""

from collections.abc import Callable
from functools import cached_property
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class once(cached_property[T], Generic[T]):  # noqa: N801 - named as the decorator it replaces
    def __init__(self, func: Callable[[Any], T]) -> None:
        super().__init__(func)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.attrname] = value  # type: ignore[index]
        return value
