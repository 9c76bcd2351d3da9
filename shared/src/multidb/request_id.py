"""``X-Request-ID``: taken from the caller (or made up), kept in the request state, echoed back.

The gateway forwards it to the services and writes it into the audit record, so one id
follows a request through every hop. While the request is handled it is also bound in
structlog's context, so every log line of the request carries it as ``request_id``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
# Ids end up in logs and the audit table: accept only short, plain tokens from callers.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Any) -> str:
    """The id of the request whose ASGI scope (or Litestar connection) this is."""
    state = scope["state"] if isinstance(scope, dict) else scope.scope["state"]
    request_id: str = state["request_id"]
    return request_id


class RequestIdMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        given = next((value for name, value in scope["headers"] if name == _HEADER_BYTES), b"")
        text = given.decode("latin-1")
        request_id = text if _ACCEPTABLE.fullmatch(text) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (_HEADER_BYTES, encoded)]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await next_app(scope, receive, send_with_id)
