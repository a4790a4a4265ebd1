"""At most as many requests in the database at once as there are pooled connections.

A request holds its connection across several worker-thread hops (authentication, the
route, the commit). With more requests in flight than connections, the threads fill with
requests waiting for a connection while the requests that hold one wait for a thread, and
every request times out together. Requests therefore queue here, without a thread, for one
of the pool's connections; those admitted always find a thread and a connection.
"""

import asyncio

from anyio import to_thread
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Routes that never touch the database on the request's path.
_FREE = ("/healthz", "/metrics", "/docs", "/openapi.json")


class DatabaseSlots:
    def __init__(self, app: ASGIApp, slots: int, wait_seconds: float) -> None:
        self.app = app
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_FREE):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:
            # Created on the serving loop; the worker threads must outnumber the slots.
            self._semaphore = asyncio.Semaphore(self.slots)
            limiter = to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, self.slots + 8)
        try:
            # A timer, not wait_for's task per request: most requests find a slot free.
            async with asyncio.timeout(self.wait_seconds):
                await self._semaphore.acquire()
        except TimeoutError:
            body = {
                "error": "DatabaseUnavailable",
                "detail": "too busy: no database connection freed in time; retry",
            }
            await JSONResponse(body, status_code=503, headers={"Retry-After": "5"})(
                scope, receive, send
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._semaphore.release()
