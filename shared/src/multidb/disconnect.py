"""Work that stops when the HTTP caller goes away.

ASGI servers do not cancel a handler whose client disconnected; they only answer the
app's next ``receive()`` with ``http.disconnect``. :func:`cancel_on_disconnect` waits for
that beside the work and cancels the work when it comes, so an abandoned statement does
not run on in PostgreSQL until its timeout (asyncpg cancels the backend's statement when
its task is cancelled; aiohttp closes the connection to a service, which then does the same).
"""

from __future__ import annotations

import asyncio
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
    """Await ``work``; cancel it and raise :class:`ClientDisconnectedError` if the caller leaves.

    One watcher task per call, which cancels the calling task when the caller leaves: the
    work itself runs in the caller's task, so a request pays for one task, not two.
    """
    current = asyncio.current_task()
    if current is None:  # not in a task: nothing could be cancelled
        return await work
    left = False

    async def watch(task: asyncio.Task[object]) -> None:
        nonlocal left
        await _disconnected(receive)
        left = True
        task.cancel()

    watcher = asyncio.create_task(watch(current))
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        current.uncancel()
        raise ClientDisconnectedError(
            "the caller disconnected; the statement was cancelled"
        ) from None
    finally:
        watcher.cancel()
