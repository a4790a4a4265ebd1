"""The tokens this process knows to be valid, by hash (`app.core.auth` asks them who sends
each request).

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, so a leaked
database does not leak usable tokens, and lookup by hash needs no secret comparison.

A process remembers the tokens it has found valid, so that a report costs no database round
trip for its token. At most `RECHECK` of the service's clock after it last did, in the first
request after that, it reads every token it remembers again and keeps only those still
valid, as they now are (revoked, deleted, edited by hand: all seen). While that read is under
way, other requests look their tokens up in the database. A revoked token therefore stops
working everywhere within `RECHECK`.
"""

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.auth import Principal
from app.core.clock import Clock
from app.core.errors import Unauthorized
from app.core.rows import find_rows
from app.models import ApiToken

TOKEN_PREFIX = "gpc_"
RECHECK = timedelta(seconds=1)
REMEMBERED = 10_000  # distinct valid tokens a process keeps before it starts over


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
