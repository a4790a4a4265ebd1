"""Numbers as clients send them: JSON numbers read as decimals, never through a binary float,
and one grammar for a number written as a string.

A JSON body is parsed by `DecimalJsonRoute` (every router's route class) with decimals for
non-integers, so that `1.00000149999999999999` is that number on every path. `Number` and
`Count` refuse what is not plainly a number: `true`, `"3_0"`, `" 1"`, `"0x10"`.
"""

import json
import re
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BeforeValidator

# Digits, one optional point, one optional exponent: what JSON and `Decimal` both read alike.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PLAIN_INTEGER = re.compile(r"[+-]?\d+")


def parse_json(body: bytes | str) -> Any:
    """A JSON document with every non-integer number as an exact `Decimal`."""
    return json.loads(body, parse_float=Decimal)


# Sixteen digits in a row (a point among them): a number a binary float may not hold exactly.
# (Also a long digit run in a string, or in an integer: those only take the slower path.)
_LONG_NUMBER = re.compile(rb"\d[\d.]{15}")


def floats_are_exact(body: bytes) -> bool:
    """True when every number in the JSON document has at most 15 significant digits: then
    a binary float holds each exactly, and its shortest spelling is the number sent, so
    pydantic's own JSON parser (which reads numbers as floats, and three times faster than
    `parse_json`'s objects then validated) reads the same decimals."""
    return _LONG_NUMBER.search(body) is None


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    if isinstance(value, float):
        # Only Python callers can hand a float; its decimal spelling is what they meant.
        return Decimal(repr(value))
    if isinstance(value, str) and not _PLAIN_NUMBER.fullmatch(value):
        raise ValueError("must be a number written in plain digits, e.g. 2.35 or 1e3")
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    if isinstance(value, str) and not _PLAIN_INTEGER.fullmatch(value):
        raise ValueError("must be a whole number written in plain digits")
    return value


# Annotate a `Decimal` (`Annotated[Decimal, Field(...), Number]`) or an `int` with these, last:
# before the constraints, they would move the constraints' checks from pydantic's core into
# Python, at three times the cost of each field.
Number = BeforeValidator(_number)
Count = BeforeValidator(_integer)


class DecimalJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class DecimalJsonRoute(APIRoute):
    """A route whose JSON body is read by `parse_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def read_decimals(request: Request) -> Response:
            return await handler(DecimalJsonRequest(request.scope, request.receive))

        return read_decimals
