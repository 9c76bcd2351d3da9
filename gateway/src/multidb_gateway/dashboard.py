"""``GET /dashboard``: the fleet on one page, and its assets under ``/dashboard/static/``.

The page holds no data, so it and its assets need no credential; the page asks the
operator for an API key or a token and calls the public API with it, like any client.
Everything it shows is put in place as text by ``dashboard.js`` (never parsed as HTML),
and the headers forbid anything but the gateway's own scripts, styles and API:
no inline script, no third-party origin, no framing. The chart library (uPlot) is
vendored in ``dashboard_static/vendor`` with its licence, so the page works offline.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

STATIC = Path(__file__).parent / "dashboard_static"
PAGE = STATIC / "index.html"
ASSETS_PATH = "/dashboard/static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@cache
def _page() -> bytes:
    return PAGE.read_bytes()


async def _secure(response: Response[object]) -> Response[object]:
    response.headers.update(SECURITY_HEADERS)
    return response


@get(
    "/dashboard",
    include_in_schema=False,
    opt={"exclude_from_auth": True},
    after_request=_secure,
    cache_control=CacheControlHeader(no_cache=True),
)
async def dashboard() -> Response[bytes]:
    """The page (no data in it: it fetches everything with the operator's credential)."""
    return Response(_page(), media_type=MediaType.HTML)


assets = create_static_files_router(
    path=ASSETS_PATH,
    directories=[STATIC],
    name="dashboard-static",
    opt={"exclude_from_auth": True},
    after_request=_secure,
    cache_control=CacheControlHeader(no_cache=True),
    include_in_schema=False,
)

ROUTES: list[ControllerRouterHandler] = [dashboard, assets]
