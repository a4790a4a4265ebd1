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


# The body as what a number check needs, one byte for each of the body's: every digit and
# point as NUL (and a NUL, which no valid JSON document holds, so that such a body takes the
# slower path, to be refused there); an exponent's `e` or `E` as `e`; a minus as itself;
# what may come before a number in JSON ([ : , and whitespace) as `:`; the rest as a space.
# Mapped and searched in C, ten times as fast as a regular expression over a batch's megabyte.
_NUMBER_SHAPES = bytes(
    0 if byte in b"0123456789.\x00"
    else ord("e") if byte in b"eE"
    else ord("-") if byte == ord("-")
    else ord(":") if byte in b"[:,\t\r\n "
    else ord(" ")
    for byte in range(256)
)  # fmt: skip
# A run of sixteen digits: a number of sixteen or more significant digits, which a binary
# float may not hold exactly. (A long digit run in a string or an integer matches too: that
# only takes the slower path.)
_LONG_NUMBER = b"\x00" * 16
# An exponent of -100 or below, after a digit or point: near and past the end of a binary
# float's normal range (1e-308), where it holds fewer digits, or none (1e-400 reads as 0).
_TINY_EXPONENT = b"\x00e-\x00\x00\x00"


def floats_are_exact(body: bytes) -> bool:
    """True when every number in the JSON document has at most 15 significant digits and
    an exponent above -100: then a binary float holds each exactly, and its shortest
    spelling is the number sent, so pydantic's own JSON parser (which reads numbers as
    floats, and three times faster than `parse_json`'s objects then validated) reads the same
    decimals."""
    shapes = body.translate(_NUMBER_SHAPES)
    if _LONG_NUMBER in shapes:
        return False
    at = shapes.find(_TINY_EXPONENT)
    while at != -1:
        if _starts_number(shapes, at):
            return False
        at = shapes.find(_TINY_EXPONENT, at + 1)
    return True


def _starts_number(shapes: bytes, last_digit: int) -> bool:
    """Whether the digits ending at `last_digit` begin where a JSON number may (a GPU's
    UUID, whose "...-1e-123..." sits in a string, has a letter or a quote there instead)."""
    start = last_digit
    while start > 0 and shapes[start - 1] == 0:
        start -= 1
    if start > 0 and shapes[start - 1] == ord("-"):
        start -= 1
    return start == 0 or shapes[start - 1] == ord(":")


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
