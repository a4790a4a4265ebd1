"""A request's body read whole, within its size limit and its time, before anything else.

A declared Content-Length over the limit is answered at once; a body sent without one
(chunked) is counted as it streams in and refused the moment it passes the limit. A body
that has not arrived within `read_seconds` is answered 408. Only then does the request go
on to wait for a database slot (`concurrency.DatabaseSlots`), so a client that sends slowly,
authenticated or not, holds a connection of its own and nothing that other requests need.
"""

import asyncio

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestBody:
    def __init__(self, app: ASGIApp, max_body_bytes: int, read_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_seconds = read_seconds

    def _too_large(self, size: str) -> JSONResponse:
        detail = f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"
        body = {"error": "PayloadTooLarge", "detail": detail}
        return JSONResponse(body, status_code=413, headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(declared)(scope, receive, send)
            return
        parts: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.read_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client has gone: nothing to answer
                    part = message.get("body", b"")
                    received += len(part)
                    if received > self.max_body_bytes:
                        await self._too_large(f"over {self.max_body_bytes}")(scope, receive, send)
                        return
                    parts.append(part)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"the request body did not arrive within {self.read_seconds:g} s"
            body = {"error": "RequestTimeout", "detail": detail}
            response = JSONResponse(body, status_code=408, headers={"Connection": "close"})
            await response(scope, receive, send)
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
