"""A request's body read whole, within its size limit and its time, before anything else.

A declared Content-Length over the limit is answered at once; a body sent without one
(chunked) is counted as it streams in and refused the moment it passes the limit. A body
that has not arrived within `read_seconds` is answered 408. Only then does the request go
on to wait for a database slot (`concurrency.DatabaseSlots`), so a client that sends slowly
holds a connection of its own and nothing that other requests need. Only requests to the
API, whose token `auth.Authenticate` has checked, have their bodies read: a client without a
valid token is answered before, and no route outside the API reads a body.
The bodies held at once, read or being read, are bounded too (`buffer_bytes`; 503 beyond).
"""

import asyncio

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.auth import principal_of

# nginx's status for a request whose client closed the connection before it was answered.
CLIENT_CLOSED = 499
_GONE = "gpucost.client_gone"


def unanswered_status(scope: Scope) -> int:
    """The status to record for a request that got no answer: 499 when its client went away
    while sending the body, else 500 (the app failed before answering)."""
    return CLIENT_CLOSED if scope.get(_GONE) else 500


class RequestBody:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, read_seconds: float, buffer_bytes: int
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_seconds = read_seconds
        self.buffer_bytes = max(buffer_bytes, max_body_bytes)
        self._held = 0  # bytes of bodies held by this process's requests now

    def _too_large(self, size: str) -> JSONResponse:
        detail = f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"
        body = {"error": "PayloadTooLarge", "detail": detail}
        return JSONResponse(body, status_code=413, headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or principal_of(scope) is None:
            await self.app(scope, receive, send)  # outside the API: its body stays unread
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if not declared and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a GET, a probe): nothing to read
            return
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(declared)(scope, receive, send)
            return
        parts: list[bytes] = []
        try:
            await self._read_and_serve(scope, receive, send, parts)
        finally:
            self._held -= sum(len(part) for part in parts)

    async def _read_and_serve(
        self, scope: Scope, receive: Receive, send: Send, parts: list[bytes]
    ) -> None:
        received = 0
        try:
            async with asyncio.timeout(self.read_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        scope[_GONE] = True  # nothing to answer; recorded as 499
                        return
                    part = message.get("body", b"")
                    received += len(part)
                    if received > self.max_body_bytes:
                        await self._too_large(f"over {self.max_body_bytes}")(scope, receive, send)
                        return
                    if self._held + len(part) > self.buffer_bytes:
                        await _answer(scope, receive, send, 503, "TooBusy",
                                      "too many request bodies at once; retry")  # fmt: skip
                        return
                    self._held += len(part)
                    parts.append(part)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"the request body did not arrive within {self.read_seconds:g} s"
            await _answer(scope, receive, send, 408, "RequestTimeout", detail)
            return
        whole: Message | None = {
            "type": "http.request",
            "body": b"".join(parts),
            "more_body": False,
        }

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: a disconnect, when it comes

        await self.app(scope, replay, send)


async def _answer(
    scope: Scope, receive: Receive, send: Send, status: int, error: str, detail: str
) -> None:
    headers = {"Connection": "close", **({"Retry-After": "5"} if status == 503 else {})}
    response = JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)
    await response(scope, receive, send)
