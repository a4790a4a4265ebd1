"""Creating, listing and revoking API tokens; the clear token is returned once, never stored."""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.labels import NAME_PATTERN
from app.core.unique import insert_unless_present
from app.models import ROLES, ApiToken
from app.tokens.known import hash_token, new_token

_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: str
    cluster: str | None
    created_at: datetime
    revoked_at: datetime | None


def _info(token: ApiToken) -> TokenInfo:
    return TokenInfo(token.name, token.role, token.cluster, token.created_at, token.revoked_at)


def create_token(
    session: Session, *, role: str, cluster: str | None, name: str | None, actor: str, now: datetime
) -> tuple[TokenInfo, str]:
    """Create a token; returns its record and the clear token, which is shown only now."""
    if role not in ROLES:
        raise InvalidInput("role", f"'{role}' is not one of {', '.join(ROLES)}")
    if role == "collector" and not cluster:
        raise InvalidInput("cluster", "a collector token must be bound to a cluster")
    if role != "collector" and cluster:
        raise InvalidInput("cluster", f"only collector tokens are bound to a cluster, not {role}")
    if cluster is not None and not _NAME.match(cluster):
        raise InvalidInput("cluster", f"'{cluster}' is not a valid cluster name")
    name = name or f"{role}-{secrets.token_hex(4)}"
    if not _NAME.match(name) or len(name) > 128:
        raise InvalidInput("name", f"'{name}' is not a valid token name (letters, digits, ._:-)")
    clear = new_token()
    row = {
        "name": name,
        "role": role,
        "cluster": cluster,
        "token_sha256": hash_token(clear),
        "created_at": now,
    }
    # The unique name decides between two commands creating the same name at once.
    if not insert_unless_present(session, ApiToken, row):
        raise Conflict(f"a token named '{name}' already exists")
    record(
        session,
        at=now,
        actor=actor,
        action="token.create",
        target=f"token:{name}",
        details={"role": role, "cluster": cluster},
    )
    return TokenInfo(name, role, cluster, now, None), clear


def list_tokens(session: Session) -> list[TokenInfo]:
    """Every token, revoked ones included, oldest first."""
    return [_info(t) for t in session.execute(select(ApiToken).order_by(ApiToken.id)).scalars()]


def revoke_token(session: Session, *, name: str, actor: str, now: datetime) -> TokenInfo:
    """Revoke a token by name; it stops working on the next request."""
    token = session.execute(select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()
    if token is None:
        raise NotFound(f"no token named '{name}'")
    if token.revoked_at is None:
        token.revoked_at = now
        record(session, at=now, actor=actor, action="token.revoke", target=f"token:{name}")
    return _info(token)
