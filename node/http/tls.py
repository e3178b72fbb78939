"""HTTPS on the node's HTTP port: the node certificate, reloaded when its files change.

A node with `tls_dir` serves its HTTP port (/metrics, /healthz, /readyz, the dashboard,
/api) over TLS with the same files as its gRPC port (DIR/node.pem, DIR/node.key from
`shoal certs init`), but without asking for a client certificate: browsers, Prometheus
and kubelet probes have none, and bearer tokens (auth.py) guard /metrics and /api there.

Reloading, like the gRPC port's (client/wire/channels.py): `HttpsContext.listener` is the
ssl.SSLContext the port is bound with. Its `sni_callback` runs in every handshake, after
the ClientHello, also when the client sends no server name (an IP address: the callback
gets None), and when `TlsFiles.version()` changed since the last load it loads the files
into a fresh SSLContext and hands the handshake that one (`ssl_object.context = fresh`).
A pair that does not load (a rotation half written: the key of the old certificate) keeps
the current context and is tried again at the next handshake.

Errors: `HttpsContext(tls)` raises TlsError naming the files when they do not load at start.
"""
from __future__ import annotations

import dataclasses
import logging
import ssl
from typing import TYPE_CHECKING

from shoal.client.wire.tls import TlsError

if TYPE_CHECKING:
    from shoal.client.wire.tls import TlsFiles

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class HttpsStatistics:
    reloads: int           # certificates loaded after the first (rotations seen)
    reload_failures: int   # changed files that did not load (kept serving the previous pair)


class HttpsContext:
    """The HTTP port's TLS: `listener` to bind with; it serves the newest loadable node certificate."""

    def __init__(self, tls: TlsFiles) -> None:
        self.tls = tls
        self._version = tls.version()
        try:
            self.listener = _server_context(tls)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"TLS files {tls.cert} and {tls.key}: {exc}") from None
        self.listener.sni_callback = self._on_hello
        self._current = self.listener
        self._reloads = 0
        self._failures = 0
        self._failed_version: tuple[float, ...] = ()

    def current(self) -> ssl.SSLContext:
        """The context of the files on disk now (reloaded if they changed and load); else the last good one.

        Runs in the handshake, on the event loop: three stat() calls, and a file read only
        after a change (a rotation is rare; an executor hop cannot happen inside OpenSSL's callback).
        """
        version = self.tls.version()
        if not version or version == self._version or version == self._failed_version:
            return self._current
        try:
            fresh = _server_context(self.tls)
        except (OSError, ssl.SSLError) as exc:   # half-written rotation: keep serving, retry when they change again
            self._failures += 1
            self._failed_version = version
            logger.warning("https: new TLS files %s, %s do not load (%s); serving the previous certificate",
                           self.tls.cert, self.tls.key, exc)
            return self._current
        self._current, self._version = fresh, version
        self._reloads += 1
        logger.info("https: reloaded the node certificate from %s", self.tls.cert)
        return fresh

    def statistics(self) -> HttpsStatistics:
        return HttpsStatistics(reloads=self._reloads, reload_failures=self._failures)

    def _on_hello(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                  initial: ssl.SSLContext) -> None:
        """sni_callback: swap in the current context; server_name is None for clients that send no SNI."""
        fresh = self.current()
        if fresh is not initial:
            ssl_object.context = fresh


def _server_context(tls: TlsFiles) -> ssl.SSLContext:
    """A server context with the node certificate; load_cert_chain also checks that the key is the certificate's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE   # no client certificate: probes and browsers have none (tokens guard data)
    context.load_cert_chain(tls.cert, tls.key)
    return context
