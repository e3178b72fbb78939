"""The node's HTTP room: one aiohttp web app on config.http_listen (empty = off).

- `app`        build_app(node) and the HttpSource protocol: what the routes read
- `server`     HttpServer: the app on the node's event loop (AppRunner + TCPSite)
- `metrics`    NodeCollector: Prometheus gauges read from node state at scrape time
- `readiness`  readiness(node): the condition /readyz reports

See DESIGN.md beside this file for why this is aiohttp next to grpc.aio.
"""
from __future__ import annotations

from shoal.node.http.app import HttpSource, build_app
from shoal.node.http.server import HttpServer

__all__ = ["HttpServer", "HttpSource", "build_app", "serve"]


async def serve(node: HttpSource) -> HttpServer:
    """Serve the app on node.config.http_listen; StartupError if that address cannot be bound."""
    server = HttpServer(build_app(node), node.config.http_listen)
    await server.start()
    return server
