"""Work that stops when the HTTP caller goes away.

ASGI servers do not cancel a handler whose client disconnected; they only answer the
app's next ``receive()`` with ``http.disconnect``. :func:`cancel_on_disconnect` waits for
that beside the work and cancels the work when it comes, so an abandoned statement does
not run on in PostgreSQL until its timeout (asyncpg cancels the backend's statement when
its task is cancelled; aiohttp closes the connection to a service, which then does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from litestar.types import Receive

from multidb.errors import MultiDBError

T = TypeVar("T")


class ClientDisconnectedError(MultiDBError):
    """The caller closed the connection before the answer was ready (nobody reads this)."""

    status_code = 499
    title = "Client closed request"


async def _disconnected(receive: Receive) -> None:
    # Call only once the request body has been read: every later message is the end.
    while (await receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it and raise :class:`ClientDisconnectedError` if the caller leaves."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also when this handler is cancelled itself: the work must not outlive it.
        for pending in (watcher, task):
            if not pending.done():
                pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if not task.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientDisconnectedError("the caller disconnected; the statement was cancelled")
    return task.result()
