"""`Wire`: the one factory of every gRPC channel and server port in Shoal.

Client channels, the local-cluster probe, node-to-node peer channels and the node's
server all come from here, so TLS credentials and auth metadata plug in at one place.

Options follow notes/dependencies.md 3.3/3.5/3.7:
- one message limit for both directions and both sides (16 MiB by default; the node
  takes its `message_bytes_max`), sized for 2 MiB ingest batches and bounded scan chunks;
- keepalive with `http2.ping_timeout_ms` set (in grpcio 1.85 only that bounds the wait
  for a ping ack, so a paused node is noticed in about 15 s), reconnect backoff capped at 5 s;
- servers: `so_reuseport=0` (a second daemon on the port must fail, not share it, notes
  section 0.12), and a ping policy that accepts the clients' keepalive.
- No retry policy in a service config: callers retry themselves (wire.retry), driven by
  error flags and carrying write ids; gRPC's transparent retries (request never left) stay.
- TLS (`tls`, wire/tls.py): mutual. A server port requires a client certificate signed by
  the cluster CA and re-reads its files when they change (grpc's dynamic server
  credentials: a new handshake gets the new certificate, no restart); channels present
  their own certificate and trust only the CA. Without `tls` everything is plaintext.
- A bearer token (`token`, wire/bearer.py) rides in every call's metadata; the node checks
  it in node/auth.py.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any, Final

import grpc

from shoal.client.wire.bearer import BearerInterceptor, aio_bearer
from shoal.client.wire.tls import TlsFiles

MiB: Final = 1024 * 1024
MESSAGE_BYTES_MAX: Final = 16 * MiB

_KEEPALIVE: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
_CHANNEL_ONLY: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
# Probes poll nodes that may not listen yet (start-up, restarts): reconnect fast and let a
# failed probe fail at once instead of being retried inside gRPC.
_PROBE: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
_SERVER_ONLY: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.so_reuseport", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.max_connection_idle_ms", 300_000),
)


class PortUnavailableError(Exception):
    """The server cannot bind the address (in use, or not an address of this host)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Wire:
    """How this process talks gRPC: message limit, mutual TLS, bearer token.

    Shapes: `message_bytes_max` in bytes, applied to send and receive on channels and
    servers alike, so a message one side may send the other may receive. `token` goes with
    every call of every channel made here (wire/bearer.py); a node's is its node credential.
    """

    message_bytes_max: int = MESSAGE_BYTES_MAX
    tls: TlsFiles | None = None   # mutual TLS with these files; None = plaintext
    token: str = dataclasses.field(default="", repr=False)   # bearer token; "" = none (never printed)

    def _limits(self) -> tuple[tuple[str, int], ...]:
        return (("grpc.max_send_message_length", self.message_bytes_max),
                ("grpc.max_receive_message_length", self.message_bytes_max))

    def channel_options(self) -> list[tuple[str, int]]:
        return [*self._limits(), *_KEEPALIVE, *_CHANNEL_ONLY]

    def server_options(self) -> list[tuple[str, int]]:
        return [*self._limits(), *_KEEPALIVE, *_SERVER_ONLY]

    def channel(self, address: str) -> grpc.Channel:
        """A blocking channel (the client, the local-cluster probe, tests)."""
        return self._blocking(address, self.channel_options())

    def probe_channel(self, address: str) -> grpc.Channel:
        """A blocking channel for short health/status probes of nodes that may be starting."""
        return self._blocking(address, [*self._limits(), *_PROBE])

    def _blocking(self, address: str, options: list[tuple[str, int]]) -> grpc.Channel:
        if self.tls is not None:
            channel = grpc.secure_channel(address, self._channel_credentials(), options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        return grpc.intercept_channel(channel, BearerInterceptor(self.token)) if self.token else channel

    def aio_channel(self, address: str) -> grpc.aio.Channel:
        """An asyncio channel (node-to-node peers)."""
        interceptors = aio_bearer(self.token) if self.token else None
        if self.tls is not None:
            return grpc.aio.secure_channel(address, self._channel_credentials(), options=self.channel_options(),
                                           interceptors=interceptors)
        return grpc.aio.insecure_channel(address, options=self.channel_options(), interceptors=interceptors)

    def _channel_credentials(self) -> grpc.ChannelCredentials:
        assert self.tls is not None
        ca, cert, key = self.tls.read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def aio_server(self, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> grpc.aio.Server:
        """The node's server; every RPC passes through `interceptors`, in order."""
        return grpc.aio.server(options=self.server_options(), interceptors=list(interceptors))

    def add_port(self, server: grpc.aio.Server | Any, address: str) -> int:
        """Bind `address` on `server`; returns the port. Raises PortUnavailableError."""
        try:
            if self.tls is not None:
                return int(server.add_secure_port(address, _reloading_server_credentials(self.tls)))
            return int(server.add_insecure_port(address))
        except RuntimeError as exc:
            raise PortUnavailableError(f"cannot listen on {address}: address in use or not available ({exc})") \
                from None


def _reloading_server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require a CA-signed client certificate and re-read `tls` when
    its files change (grpc calls the fetcher before each handshake; None = keep the current)."""
    lock = threading.Lock()
    seen = [tls.version()]

    def configuration() -> Any:
        ca, cert, key = tls.read()   # checked: a pair, signed by the CA, in date (TlsError otherwise)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch() -> Any:
        with lock:
            version = tls.version()
            if not version or version == seen[0]:
                return None
            try:
                fresh = configuration()
            except Exception:   # a half-written file: keep serving with the current ones, retry next time
                return None
            seen[0] = version
            return fresh

    return grpc.dynamic_ssl_server_credentials(configuration(), fetch, require_client_authentication=True)
