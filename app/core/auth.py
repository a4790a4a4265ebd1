"""Bearer-token authentication and the role each route requires.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a leaked
database does not leak usable tokens, and lookup by hash needs no secret comparison.
"""

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import SessionDep
from app.core.errors import Forbidden, Unauthorized
from app.models import ApiToken

TOKEN_PREFIX = "gpc_"

_bearer = HTTPBearer(auto_error=False, description="An API token from `gpucost token create`")


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


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def principal_for(session: Session, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """Who presents these credentials: a token that exists and is not revoked."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token in the Authorization header")
    row = session.execute(
        select(ApiToken.name, ApiToken.role, ApiToken.cluster).where(
            ApiToken.token_sha256 == hash_token(credentials.credentials),
            ApiToken.revoked_at.is_(None),
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("unknown or revoked token")
    return Principal(name=row.name, role=row.role, cluster=row.cluster)


def require_role(principal: Principal, *roles: str) -> Principal:
    if principal.role not in roles:
        raise Forbidden(f"role '{principal.role}' may not do this; needs {' or '.join(roles)}")
    return principal


def authenticate(session: SessionDep, credentials: BearerDep) -> Principal:
    return principal_for(session, credentials)


def _collector_alone(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    with request.app.state.read_session_factory() as session:
        return require_role(principal_for(session, credentials), "collector")


async def _collector(request: Request, credentials: BearerDep) -> Principal:
    return await run_in_threadpool(_collector_alone, request, credentials)


# A collector, checked in a read-only session of its own (one thread hand-off, no write lock
# on SQLite), for a route that opens no request session.
CollectorOnly = Annotated[Principal, Depends(_collector)]


def _require(*roles: str):  # type: ignore[no-untyped-def]
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        return require_role(principal, *roles)

    return dependency


AdminAuth = Annotated[Principal, Depends(_require("admin"))]
ViewerAuth = Annotated[Principal, Depends(_require("admin", "viewer"))]
CollectorAuth = Annotated[Principal, Depends(_require("collector"))]
JobWriterAuth = Annotated[Principal, Depends(_require("admin", "collector"))]
