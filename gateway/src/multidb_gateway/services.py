"""Talking to the role services: one keep-alive aiohttp session, a deadline per call.

aiohttp rather than httpx: measured here as the gateway's client, httpx was 4-13x slower
under fan-out (pure-Python httpcore/h11/anyio). ``asyncio.timeout`` bounds the whole
call, connect and body included (client timeouts are per socket operation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import aiohttp
import msgspec
from yarl import URL

from multidb.errors import describe
from multidb_gateway import metrics

# What the gateway reads of an answer unless told otherwise: health, stats and the like.
MAX_ANSWER_BYTES = 1024 * 1024


class ServiceAnswer(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: str
    retry_after: str | None = None


class ServiceUnreachableError(Exception):
    """The service did not answer: refused, timed out, or the connection broke."""

    def __init__(
        self,
        role: str,
        reason: str,
        *,
        timed_out: bool = False,
        kind: str = metrics.CONNECTION_FAILED,
    ) -> None:
        super().__init__(f"service of role {role!r} {reason}")
        self.reason = reason
        self.timed_out = timed_out
        self.kind = kind


class AnswerTooLargeError(Exception):
    pass


async def _read_at_most(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    length = response.content_length
    if length is not None:
        if length > max_bytes:
            raise AnswerTooLargeError
        return await response.read()
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


class ServiceClient:
    """Calls the role services at ``urls`` (role → base URL)."""

    def __init__(self, urls: Mapping[str, str], calls: metrics.CallMetrics | None = None) -> None:
        self.urls = dict(urls)
        self.metrics = calls or metrics.CallMetrics()
        self._yarl: dict[tuple[str, str], URL] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=512, limit_per_host=128, keepalive_timeout=60)
        # No cookies, decompression, default headers or aiohttp timer (asyncio.timeout bounds
        # each call): nothing the services need, all of it work on every call.
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        role: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        timeout_ms: int,
        *,
        body: bytes | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
        params: Mapping[str, str] | None = None,
        route: str | None = None,
    ) -> ServiceAnswer:
        """One request to ``role``'s service; raise :class:`ServiceUnreachableError` on failure.

        At most ``max_bytes`` of the answer are read: a longer answer is a failure too, so
        the gateway never holds more than that for one call. ``params`` become the query
        string (kept out of ``path``, whose URL is built once and cached). A ``path`` that
        holds an id (``/backups/3f2a...``) comes with its ``route`` (``/backups/{id}``):
        the metrics are labelled with the route and the URL is not cached, so neither
        grows with the ids asked for. The caller has checked what it put in ``path``.
        """
        if self._session is None:
            msg = "ServiceClient.start() was not awaited"
            raise RuntimeError(msg)
        if route is None:
            url = self._yarl.get((role, path))
            if url is None:
                url = self._yarl[role, path] = URL(self.urls[role] + path, encoded=True)
        else:
            url = URL(self.urls[role] + path, encoded=True)
        label = route or path
        started = time.perf_counter()
        try:
            return await _request(
                self._session.request(method, url, headers=headers, data=body, params=params),
                role,
                timeout_ms,
                max_bytes,
            )
        except ServiceUnreachableError as exc:
            self.metrics.error(role, label, exc.kind)
            raise
        finally:
            self.metrics.observe(role, label, time.perf_counter() - started)


async def _request(
    request: AbstractAsyncContextManager[aiohttp.ClientResponse],
    role: str,
    timeout_ms: int,
    max_bytes: int,
) -> ServiceAnswer:
    """Send ``request`` and read its answer; every failure as :class:`ServiceUnreachableError`."""
    try:
        async with asyncio.timeout(timeout_ms / 1000), request as response:
            payload = await _read_at_most(response, max_bytes)
            return ServiceAnswer(
                response.status,
                payload,
                response.headers.get("content-type", "application/json"),
                response.headers.get("retry-after"),
            )
    except AnswerTooLargeError:
        raise ServiceUnreachableError(
            role, f"answered more than {max_bytes} bytes", kind=metrics.TOO_LARGE
        ) from None
    except TimeoutError:
        raise ServiceUnreachableError(
            role, f"timed out after {timeout_ms} ms", timed_out=True, kind=metrics.TIMEOUT
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise ServiceUnreachableError(
            role, f"unreachable: {describe(exc.os_error)}", kind=metrics.UNREACHABLE
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ServiceUnreachableError(
            role, f"connection failed: {type(exc).__name__}", kind=metrics.CONNECTION_FAILED
        ) from None
