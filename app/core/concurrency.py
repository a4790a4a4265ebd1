"""At most as many requests in the database at once as there are pooled connections, and
ingest always with some of them.

A request holds its connection across several worker-thread hops (the route, the commit).
With more requests in flight than connections, the threads fill with requests waiting for a
connection while the requests that hold one wait for a thread, and every request times out
together. Requests therefore queue here, without a thread, for one of the pool's `slots`;
those admitted always find a thread and a connection.

Requests come in three lanes, by who sends them (`auth.Authenticate` has settled that):
- ingest (collector tokens) may take every slot;
- people's requests (admin and viewer tokens) at most half of them;
- exports, a share of people's, at most half of that.
So a burst of downloads slows downloads, a burst of reads slows reads, and collectors always
find at least half the slots free of both (with 2 slots, one for people, exports included).
A request without a principal (a probe, `/metrics`, the API documents, a path that matches
no route) takes no slot: none of them uses a pooled connection on the request's path.
"""

import asyncio

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.auth import principal_of, route_path
from app.core.errors import DatabaseUnavailable, error_response

EXPORTS = "/v1/exports"


def lane_sizes(slots: int) -> tuple[int, int]:
    """The most slots people's requests, and exports among them, may hold at once."""
    people = max(1, slots // 2)
    return people, max(1, people // 2)


class DatabaseSlots:
    def __init__(self, app: ASGIApp, slots: int, wait_seconds: float) -> None:
        self.app = app
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._semaphores: tuple[asyncio.Semaphore, asyncio.Semaphore, asyncio.Semaphore] | None
        self._semaphores = None

    def _lanes(self, scope: Scope, role: str) -> list[asyncio.Semaphore]:
        """The semaphores this request takes, in order: its lane's, then a slot."""
        if self._semaphores is None:
            # Created on the serving loop; the worker threads must outnumber the slots.
            people_slots, export_slots = lane_sizes(self.slots)
            self._semaphores = (
                asyncio.Semaphore(export_slots),
                asyncio.Semaphore(people_slots),
                asyncio.Semaphore(self.slots),
            )
            limiter = to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.slots + 8)
        exports, people, slots = self._semaphores
        if role == "collector":
            return [slots]
        if route_path(scope).startswith(EXPORTS):
            return [exports, people, slots]
        return [people, slots]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_of(scope) if scope["type"] == "http" else None
        if principal is None:
            await self.app(scope, receive, send)
            return
        held: list[asyncio.Semaphore] = []
        try:
            try:
                # A timer, not wait_for's task per request: most requests find a slot free.
                async with asyncio.timeout(self.wait_seconds):
                    for semaphore in self._lanes(scope, principal.role):
                        await semaphore.acquire()
                        held.append(semaphore)
            except TimeoutError:
                busy = DatabaseUnavailable("too busy: no database connection freed in time; retry")
                await error_response(busy)(scope, receive, send)
                return
            await self.app(scope, receive, send)
        finally:
            for semaphore in held:
                semaphore.release()
