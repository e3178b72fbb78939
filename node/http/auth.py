"""Bearer-token auth for the HTTP port: the same tokens and decision as the gRPC API (node/auth.py).

Once the cluster holds a token, `/metrics` and every `/api/...` route need
`Authorization: Bearer <token>` of any role (reader is enough: they only read; Prometheus
sends it with `authorization: {credentials_file: ...}` in its scrape config). Left open:
`/healthz` and `/readyz` (kubelet and load-balancer probes carry no token) and the
dashboard's page, script and style sheet, which hold no data: the page asks for a token
and sends it with each `/api` call. A refusal is 401 (no, unknown or revoked token, with
`WWW-Authenticate: Bearer`) or 403 (a role that may not read), as JSON `{"error": ...}`.

CORS: the page moves to another node's `/api` when its own node is lost, and a
cross-origin GET carrying `Authorization` is preceded by an OPTIONS preflight; that one is
answered here (it carries no token by design), and refusals carry the CORS header so the
page can read them.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from shoal.node import errors
from shoal.node.auth import TokenCheck, bearer
from shoal.node.http.dashboard import FILES

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", *FILES})
READ_ROLE: Final = "reader"
PREFLIGHT_HEADERS: Final = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET",
                            "Access-Control-Allow-Headers": "Authorization", "Access-Control-Max-Age": "600"}
_REFUSAL_HEADERS: Final = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_middleware(check: TokenCheck) -> Middleware:
    """An aiohttp middleware admitting a request to a guarded path only with a reader (or better) token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if request.method == "OPTIONS" and path.startswith("/api/"):
            return web.Response(status=204, headers=PREFLIGHT_HEADERS)
        if path in OPEN_PATHS:
            return await handler(request)
        try:
            check.authorize(f"GET {path[:200]}", bearer(request.headers.items()), READ_ROLE)
        except errors.UnauthenticatedError as exc:
            return web.json_response({"error": str(exc)}, status=401,
                                     headers={**_REFUSAL_HEADERS, "WWW-Authenticate": 'Bearer realm="shoal"'})
        except errors.PermissionDeniedError as exc:
            return web.json_response({"error": str(exc)}, status=403, headers=_REFUSAL_HEADERS)
        return await handler(request)

    return middleware
