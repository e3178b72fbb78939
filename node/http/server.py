"""HttpServer: the web app served on the node's own event loop (aiohttp AppRunner + TCPSite).

Not a thread and not prometheus_client.start_http_server: handlers read node state on
the loop that owns it, and the dashboard and JSON API join the same app as routes.
With `tls` (the node's TlsFiles) the port speaks only HTTPS (tls.py: the node certificate,
reloaded on change, no client certificate asked); a plaintext request to it fails its
handshake and is closed, which asyncio logs only in debug mode.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

from aiohttp import web

from shoal.client.wire.tls import TlsError
from shoal.node.config import parse_host_port
from shoal.node.errors import StartupError
from shoal.node.http.tls import HttpsContext

if TYPE_CHECKING:
    from shoal.client.wire.tls import TlsFiles

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0   # in-flight requests get this long at stop (the gRPC server's grace)
BACKLOG = 128              # pending connections the kernel queues for us


class HttpServer:
    """One web app on one HOST:PORT; start() once, stop() any number of times."""

    def __init__(self, app: web.Application, listen: str, tls: TlsFiles | None = None) -> None:
        self.app = app
        self.listen = listen
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self.address = ""   # HOST:PORT actually bound, once started (the real port if listen asked for 0)
        self.https: HttpsContext | None = None   # the reloading TLS context, once started with tls
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; raise StartupError (one line, naming the address) if the bind fails
        or the TLS files do not load."""
        assert self._runner is None, "HttpServer started twice"
        host, port = parse_host_port(self.listen, "http_listen")
        if self.tls is not None:
            try:
                self.https = HttpsContext(self.tls)
            except TlsError as exc:
                raise StartupError(f"cannot serve HTTPS on {self.listen}: {exc}") from None
        # access_log=None: Prometheus scrapes every few seconds and would drown the node log.
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        # reuse_port=False: a duplicate daemon must fail to bind, not share the port (notes §0.12).
        site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True, reuse_port=False,
                           ssl_context=self.https.listener if self.https is not None else None)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"cannot serve HTTP on {self.listen}: {_bind_reason(exc)}") from None
        self._runner = runner
        self.address = f"{host}:{runner.addresses[0][1]}"
        logger.info("http on %s://%s (/metrics /healthz /readyz)", self.scheme, self.address)

    def advertised(self, grpc_address: str) -> str:
        """HOST:PORT that other machines (and browsers) reach this app at: the bound address,
        with a wildcard host (0.0.0.0, ::) replaced by the host of the node's gRPC address."""
        host, _, port = self.address.rpartition(":")
        if host.strip("[]") in ("", "0.0.0.0", "::"):   # nosec B104: a comparison, not a bind
            host = grpc_address.rpartition(":")[0]
        return f"{host}:{port}"

    async def stop(self) -> None:
        """Stop accepting, give in-flight requests SHUTDOWN_TIMEOUT_S, close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            logger.info("http on %s stopped", self.address)


def _bind_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address in use"
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return str(exc.strerror or exc).lower()
    return os.strerror(exc.errno).lower()   # asyncio wraps the bind error in a long message
