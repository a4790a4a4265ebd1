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
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ValidationError

# Digits, one optional point, one optional exponent: what JSON and `Decimal` both read alike.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PLAIN_INTEGER = re.compile(r"[+-]?\d+")


def parse_json(body: bytes | str) -> Any:
    """A JSON document with every non-integer number as an exact `Decimal`."""
    return json.loads(body, parse_float=Decimal)


# Every digit and point as one byte, and a run of sixteen of them: a number of sixteen or more
# significant digits, which a binary float may not hold exactly. (A long digit run in a string
# or an integer matches too: that only takes the slower path.) Mapped and searched in C, ten
# times as fast as a regular expression over a batch's megabyte.
_DIGITS_AS_ONE = bytes.maketrans(b"0123456789.", b"\x00" * 11)
_LONG_NUMBER = b"\x00" * 16


def floats_are_exact(body: bytes) -> bool:
    """True when every number in the JSON document has at most 15 significant digits: then
    a binary float holds each exactly, and its shortest spelling is the number sent, so
    pydantic's own JSON parser (which reads numbers as floats, and three times faster than
    `parse_json`'s objects then validated) reads the same decimals. (A NUL byte, which no
    valid JSON document holds, reads as a digit: such a body takes the slower path, to be
    refused there.)"""
    return _LONG_NUMBER not in body.translate(_DIGITS_AS_ONE)


M = TypeVar("M", bound=BaseModel)
JSON_ONLY = "must be JSON, sent with Content-Type: application/json"


def read_json(body: bytes) -> Any:
    """A request body's JSON, by `parse_json`, refused as FastAPI refuses a body it reads."""
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
        )
    try:
        return parse_json(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}]
        ) from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, or nested past Python's limit
        raise HTTPException(400, "There was an error parsing the body") from exc


def body_errors(exc: ValidationError) -> RequestValidationError:
    """A model's validation errors as the body's, as FastAPI reports them."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


async def json_body(request: Request) -> bytes:
    """The request's body, refused (422) unless sent as JSON (`application/json`, or
    `application/...+json`), as FastAPI refuses another body for a route's JSON model."""
    body = await request.body()
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    maintype, _, subtype = media_type.partition("/")
    if body and (maintype != "application" or not (subtype == "json" or subtype.endswith("+json"))):
        raise RequestValidationError([{"type": "content_type", "loc": ("body",), "msg": JSON_ONLY}])
    return body


def read_exact_json(model: type[M], body: bytes) -> M | None:
    """The body read into `model` by pydantic's own JSON parser, when `floats_are_exact` and
    it is valid; None otherwise (read it with `read_json` then)."""
    if not floats_are_exact(body):
        return None
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return None


def read_body(model: type[M], body: bytes) -> M:
    """A request body read into `model` as a route's JSON body is, exactly: by
    `read_exact_json` when it can, through `read_json` otherwise and to say what is wrong."""
    read = read_exact_json(model, body)
    if read is not None:
        return read
    raw = read_json(body)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise body_errors(exc) from None


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
