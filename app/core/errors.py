"""The service's error hierarchy and the handlers that turn errors into one JSON shape.

Every error answers `{"error": "<Name>", "detail": "<what was wrong>"}`; validation errors
add `"errors": [{"field": ..., "reason": ...}]` naming each offending field.
"""

import difflib
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.sums import past_64_bits

log = logging.getLogger(__name__)

# Free text from clients: any character but controls (C0, DEL and C1; NUL cannot even be
# stored) and the bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) that
# make a label read otherwise than it is stored.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*$"


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
    detail: str


class FieldError(BaseModel):
    field: str
    reason: str


class ValidationErrorBody(ErrorBody):
    """A 422: which fields were wrong, and why."""

    errors: list[FieldError]


# Documented on every API route, so that clients (and the OpenAPI document) know the shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown token"},
    403: {"model": ErrorBody, "description": "The token's role or cluster may not do this"},
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "Conflicts with what is stored"},
    408: {"model": ErrorBody, "description": "Request body not received in the configured time"},
    413: {"model": ErrorBody, "description": "Request body over the configured size"},
    422: {"model": ValidationErrorBody, "description": "A field breaks a rule; each is named"},
    503: {"model": ErrorBody, "description": "The database cannot be reached; retry"},
}


class AppError(Exception):
    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "detail": self.message}


class Unauthorized(AppError):
    status = 401


class Forbidden(AppError):
    status = 403


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    status = 409


class InvalidInput(AppError):
    """A request that parsed but breaks a rule; names the field at fault."""

    status = 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {
            "error": "ValidationError",
            "detail": self.message,
            "errors": [{"field": self.field, "reason": self.reason}],
        }


class OutOfRange(InvalidInput):
    """A value, or a stored sum it would add to, past what the database can store (64-bit
    integers): refused by the database (`_data_error`) or before it is sent."""

    def __init__(self) -> None:
        super().__init__("body", "value out of range")
        self.message = "body: a value is out of the range the database can store"


class DatabaseUnavailable(AppError):
    """The database cannot serve the request now; the client should retry."""

    status = 503


def nearest(asked: str, known: Iterable[str]) -> list[str]:
    """The known names closest to `asked` in any letter case, for a "did you mean"."""
    names = list(known)
    near = difflib.get_close_matches(asked.casefold(), [n.casefold() for n in names], n=3)
    return [name for name in names if name.casefold() in near]


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("body", "gpus", 0, "util_pct")` -> `gpus[0].util_pct`."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_body(errors: Iterable[Any]) -> dict[str, Any]:
    items = [{"field": field_path(tuple(e["loc"])), "reason": e["msg"]} for e in errors]
    first = items[0] if items else {"field": "body", "reason": "invalid"}
    return {
        "error": "ValidationError",
        "detail": f"{first['field']}: {first['reason']}",
        "errors": items,
    }


def error_response(exc: AppError) -> JSONResponse:
    """The answer to an application error, wherever it is raised (a route or a middleware)."""
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status == 503:
        headers["Retry-After"] = "5"
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_body(exc.errors()), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    names = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
    return JSONResponse(
        {"error": names.get(exc.status_code, "HTTPError"), "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    # A value the database refuses that validation let through: the client's input, not a
    # fault of the service. Validation should name the field; this keeps it off the 500s.
    log.warning("database refused a value: %s", type(getattr(exc, "orig", exc)).__name__)
    return error_response(OutOfRange())


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # SQLite's way of refusing a sum past 64 bits (PostgreSQL's is a DataError); any other
    # violation goes on as if unhandled, a 500, as a fault of the service.
    assert isinstance(exc, IntegrityError)
    if not past_64_bits(exc):
        raise exc
    return await _data_error(request, exc)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(DatabaseUnavailable("the database cannot be reached; retry"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
