"""The node's one web app: its routes, and the HttpSource protocol they read.

Routes:
- GET /metrics   Prometheus exposition of the node's metrics (metrics.NodeCollector)
- GET /healthz   200 "ok" while the process serves HTTP (liveness)
- GET /readyz    200 when ready to serve, else 503; JSON {"ready": bool, "reason": str}
- GET /          the read-only web dashboard (dashboard.py: one page, its script and style)
- GET /api/v1/...  the JSON the dashboard polls, for scripts too (api.py lists the routes)

Every route is registered in build_app, so the one middleware added here covers them all
(token auth, auth.py: /metrics and /api need a token once the cluster holds one). Routes read through HttpSource: widen it by the members a new route needs,
never to the Node class.
"""
from __future__ import annotations

from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shoal.node.auth import TokenCheck
from shoal.node.http import dashboard
from shoal.node.http.auth import bearer_middleware
from shoal.node.http.api import Api, ApiMetadata, ClusterSource
from shoal.node.http.metrics import MetricsMetadata, MetricsSource, make_registry
from shoal.node.http.readiness import ReadinessMetadata, ReadinessSource, readiness


class NodeMetadata(MetricsMetadata, ReadinessMetadata, ApiMetadata, Protocol):
    """What the routes read from the metadata store."""


class HttpSource(MetricsSource, ReadinessSource, ClusterSource, Protocol):
    """What the web app reads from the node (config, metadata, registry, context)."""

    @property
    def metadata(self) -> NodeMetadata: ...


def build_app(node: HttpSource, check: TokenCheck | None = None) -> web.Application:
    """The app; with `check`, /metrics and /api/... need a bearer token once the cluster holds one (auth.py)."""
    routes = _Routes(node)
    app = web.Application(middlewares=[bearer_middleware(check)] if check is not None else [])
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    Api(node).register(app)
    dashboard.register(app)
    return app


class _Routes:
    """Handlers run on the node's event loop: each reads state and returns; the only await is
    /metrics' bounded statvfs in the node's blocking executor."""

    def __init__(self, node: HttpSource) -> None:
        self.node = node
        self.registry, self.collector = make_registry(node)

    async def metrics(self, request: web.Request) -> web.Response:
        await self.collector.refresh()   # the one blocking read (statvfs), in the node's executor
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        now = readiness(self.node)
        return web.json_response({"ready": now.ready, "reason": now.reason}, status=200 if now.ready else 503)
