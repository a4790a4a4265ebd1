"""Bearer-token authentication and the role each route requires.

Who holds a token is the tokens' business (`app.tokens.known`: looked up by hash, remembered
by each process, a revocation seen everywhere within its `RECHECK`); core asks it through
`Tokens`, and never reads the tokens' table itself.

`Authenticate` settles who sends a request before anything else is spent on it; routes state
the role they need with `AdminAuth`, `ViewerAuth`, `CollectorAuth` or `JobWriterAuth`.
"""

import asyncio
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.db import Database
from app.core.errors import AppError, DatabaseUnavailable, Forbidden, Unauthorized, error_response

PRINCIPAL = "gpucost.principal"  # where Authenticate leaves who sent a request
API = "/v1/"  # every route under it needs a token; no route outside it reads a body


def route_path(scope: Scope) -> str:
    """The path the routes see: the request's, less the prefix it is served under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path  # as Starlette routes


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    cluster: str | None = None

    def require_cluster(self, cluster: str) -> None:
        """A collector token speaks for its own cluster only."""
        if self.role == "collector" and self.cluster != cluster:
            raise Forbidden(
                f"token '{self.name}' is bound to cluster '{self.cluster}', not '{cluster}'"
            )


def principal_of(scope: Scope) -> Principal | None:
    """Who sent the request, as `Authenticate` found; None for a request outside the API
    (a probe, `/metrics`, the API documents, a path that matches no route)."""
    principal: Principal | None = scope.get(PRINCIPAL)
    return principal


class Tokens(Protocol):
    """Who presents a bearer token (`app.tokens.known.KnownTokens`)."""

    def remembered(self, credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
        """Who presents them, when known and no recheck is due: no database."""

    def principal(
        self, session: Session, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """Who presents them, read from the database where need be; Unauthorized if nobody."""


def require_role(principal: Principal, *roles: str) -> Principal:
    if principal.role not in roles:
        raise Forbidden(f"role '{principal.role}' may not do this; needs {' or '.join(roles)}")
    return principal


class Authenticate:
    """ASGI middleware: who sends each `/v1/` request, settled before its body is read and
    before it waits for a database slot (`concurrency.DatabaseSlots`).

    A request without a valid token is answered 401 at once and costs the service no slot. A
    remembered token costs nothing; another is looked up on a few connections of their own
    (`lookups` at once, each waiting at most `wait_seconds`), so that a burst of unknown
    tokens delays only other lookups.
    """

    def __init__(
        self,
        app: ASGIApp,
        known: Tokens,
        database: Database,
        lookups: int,
        wait_seconds: float,
    ) -> None:
        self.app = app
        self.known = known
        self.database = database
        self.lookups = lookups
        self.wait_seconds = wait_seconds
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_path(scope).startswith(API):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, token = get_authorization_scheme_param(headers.get("authorization"))
        credentials = (
            HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
        )
        try:
            principal = self.known.remembered(credentials) or await self._look_up(credentials)
        except AppError as exc:
            response = error_response(exc)
            if "content-length" in headers or "transfer-encoding" in headers:
                response.headers["Connection"] = "close"  # its body is left unread
            await response(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)

    async def _look_up(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("missing bearer token in the Authorization header")
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.lookups)  # on the serving loop
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._semaphore.acquire()
        except TimeoutError:
            raise DatabaseUnavailable("too busy: no token lookup finished in time; retry") from None
        try:
            return await run_in_threadpool(self._principal, credentials)
        except (OperationalError, PoolTimeoutError):
            raise DatabaseUnavailable("the database cannot be reached; retry") from None
        finally:
            self._semaphore.release()

    def _principal(self, credentials: HTTPAuthorizationCredentials) -> Principal:
        with self.database.read() as session:
            return self.known.principal(session, credentials)


class _Roles(HTTPBearer):
    """A route's dependency on who sent its request (`Authenticate` checked the token before
    the request got this far): refused unless of one of `roles`. A bearer scheme, so that the
    API document states how to authenticate."""

    def __init__(self, *roles: str) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="An API token from `gpucost token create`",
        )
        self.roles = roles

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = principal_of(request.scope)
        if principal is None:  # a route outside API that asks for a token: none can have one
            raise Unauthorized("missing bearer token in the Authorization header")
        return require_role(principal, *self.roles)


AdminAuth = Annotated[Principal, Depends(_Roles("admin"))]
ViewerAuth = Annotated[Principal, Depends(_Roles("admin", "viewer"))]
CollectorAuth = Annotated[Principal, Depends(_Roles("collector"))]
JobWriterAuth = Annotated[Principal, Depends(_Roles("admin", "collector"))]
