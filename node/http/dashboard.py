"""The web dashboard's static files: one HTML page, its script and its style sheet.

Plain HTML/CSS/JS in node/http/static/ (package data: pyproject.toml ships it in the
wheel), no build step and nothing fetched from the internet: the page reads /api/v1/...
(api.py) every POLL seconds of its own and draws tables. The files are read once, when
the app is built, and served from memory with their fixed names only; no path from a
request ever reaches the file system.
"""
from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

STATIC_PACKAGE: Final = "shoal.node.http"
FILES: Final = {   # URL path -> (file in static/, content type)
    "/": ("index.html", "text/html"),
    "/dashboard.js": ("dashboard.js", "application/javascript"),
    "/dashboard.css": ("dashboard.css", "text/css"),
}


def register(app: web.Application) -> None:
    """GET / and the page's two assets, from the package's static/ folder."""
    folder = importlib.resources.files(STATIC_PACKAGE).joinpath("static")
    for path, (name, content_type) in FILES.items():
        body = folder.joinpath(name).read_bytes()
        app.router.add_get(path, _handler(body, content_type))


def _handler(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        # no-cache: after an upgrade the page must not run yesterday's script against today's API
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers={"Cache-Control": "no-cache"})
    return serve
