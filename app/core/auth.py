"""Bearer-token authentication and the role each route requires.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a leaked
database does not leak usable tokens, and lookup by hash needs no secret comparison.

Each server process remembers the tokens it has found valid, so that a report costs no
database round trip for its token. At most `RECHECK` of the service's clock after it last
did, in the first request after that, it reads every token it remembers again and keeps
only those still valid, as they now are (revoked, deleted, edited by hand: all seen). While
that read is under way, other requests look their tokens up in the database. A revoked
token therefore stops working everywhere within `RECHECK`.

`Authenticate` settles who sends a request before anything else is spent on it; routes state
the role they need with `AdminAuth`, `ViewerAuth`, `CollectorAuth` or `JobWriterAuth`.
"""

import asyncio
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, DatabaseUnavailable, Forbidden, Unauthorized, error_response
from app.core.rows import find_rows
from app.models import ApiToken

TOKEN_PREFIX = "gpc_"
RECHECK = timedelta(seconds=1)
REMEMBERED = 10_000  # distinct valid tokens a process keeps before it starts over
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


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class KnownTokens:
    """The valid tokens this process has looked up, by hash, as last read."""

    clock: Clock
    _known: dict[str, Principal] = field(default_factory=dict)
    _checked_at: datetime | None = None
    _generation: int = 0  # bumped when what is known is read again
    _checking: threading.Lock = field(default_factory=threading.Lock)
    _storing: threading.Lock = field(default_factory=threading.Lock)

    def remembered(self, credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
        """Who presents these credentials, when known and no recheck is due: no database."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            return None
        if self._due(self.clock()):
            return None
        return self._known.get(hash_token(credentials.credentials))

    def principal(
        self, session: Session, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """Who presents these credentials: a token that exists and is not revoked."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("missing bearer token in the Authorization header")
        digest = hash_token(credentials.credentials)
        if self._recheck(session):
            known = self._known.get(digest)
            if known is not None:
                return known
        generation = self._generation
        row = session.execute(
            select(ApiToken.name, ApiToken.role, ApiToken.cluster).where(
                ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None)
            )
        ).one_or_none()
        if row is None:
            raise Unauthorized("unknown or revoked token")
        principal = Principal(name=row.name, role=row.role, cluster=row.cluster)
        with self._storing:
            # Read before a recheck that began meanwhile: answered, not remembered.
            if generation == self._generation:
                if len(self._known) >= REMEMBERED:
                    self._known = {}
                self._known[digest] = principal
        return principal

    def _due(self, now: datetime) -> bool:
        last = self._checked_at
        return last is None or not last <= now < last + RECHECK

    def _recheck(self, session: Session) -> bool:
        """Read what is known again if that is due; False while another request does (what
        is known may then be stale: not to be used)."""
        now = self.clock()
        if not self._due(now):
            return True
        if not self._checking.acquire(blocking=False):
            return False
        try:
            with self._storing:
                self._generation += 1
                digests = list(self._known)
            rows = find_rows(
                session,
                ApiToken.__table__,  # type: ignore[arg-type]
                ("token_sha256", "name", "role", "cluster", "revoked_at"),
                ("token_sha256",),
                [(digest,) for digest in digests],
            )
            valid = {
                row.token_sha256: Principal(name=row.name, role=row.role, cluster=row.cluster)
                for row in rows
                if row.revoked_at is None
            }
            with self._storing:
                self._known = valid
                self._checked_at = now
        finally:
            self._checking.release()
        return True


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
        known: KnownTokens,
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
