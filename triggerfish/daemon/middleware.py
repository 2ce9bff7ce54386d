"""ASGI middleware in front of every route: the API key check and the request size limit.

Both are plain ASGI, not FastAPI dependencies, so they also cover what FastAPI serves itself
(the OpenAPI document, the docs page) and run before any body is read or parsed.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import KeyRing

__all__ = ["OPEN_PATHS", "ApiKeyMiddleware", "BodyLimitMiddleware"]

#: The only paths served without a key.
OPEN_PATHS = frozenset({"/health"})


async def _problem(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def presented_key(scope: Scope) -> str | None:
    """The key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        text = value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and text:
            return text
    return None


class ApiKeyMiddleware:
    """401 with one line and nothing else for a request without a valid key."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            key = presented_key(scope)
            if not self.keys.accepts(key):
                detail = "missing API key" if key is None else "invalid API key"
                await _problem(send, 401, detail, ((b"www-authenticate", b"Bearer"),))
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _problem(send, 400, "malformed Content-Length header")
                    return
                if declared > self.limit:
                    await _problem(send, 413, self._too_large())
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self._too_large())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge as exc:
            if not started:
                await _problem(send, 413, exc.detail)

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.limit} bytes"


class _TooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so a route reading its body lets it through
    (and the app answers 413) rather than calling it a parse error."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)
