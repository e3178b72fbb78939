"""The node's HTTP room: one aiohttp web app on config.http_listen (empty = off).

- `app`        build_app(node) and the HttpSource protocol: what the routes read
- `server`     HttpServer: the app on the node's event loop (AppRunner + TCPSite)
- `metrics`    NodeCollector: Prometheus gauges read from node state at scrape time
- `readiness`  readiness(node): the condition /readyz reports
- `api`        /api/v1/...: the dashboard's JSON (cluster, shards, repairs, jobs, chaos reports)
- `views`      the API's JSON shapes, pure; `under_replication`: since when each shard is short
- `chaos_reports`  the chaos report folders the dashboard lists (no path leaves their root)
- `dashboard`  GET / and its script and style sheet, from static/ (package data)
- `auth`       the bearer-token middleware: /metrics and /api need a token once the cluster has tokens
- `tls`        HttpsContext: HTTPS with the node certificate when the node has tls_dir (reloaded on change)

See DESIGN.md beside this file for why this is aiohttp next to grpc.aio.
"""
from __future__ import annotations

from shoal.client.wire.tls import TlsFiles
from shoal.node.auth import TokenCheck
from shoal.node.http.app import HttpSource, build_app
from shoal.node.http.server import HttpServer

__all__ = ["HttpServer", "HttpSource", "build_app", "serve"]


async def serve(node: HttpSource, check: TokenCheck | None = None) -> HttpServer:
    """Serve the app on node.config.http_listen, guarded by `check` (auth.py), over HTTPS when the
    node has a tls_dir (tls.py); StartupError if that address cannot be bound."""
    tls = TlsFiles.from_dir(node.config.tls_dir, "node") if node.config.tls_dir else None
    server = HttpServer(build_app(node, check), node.config.http_listen, tls)
    await server.start()
    return server
