"""Bearer tokens on the wire: their format, and the client interceptors that add
`authorization: Bearer <token>` to every call of a channel.

A token is `st_<id>_<secret>`: a 12-hex-digit id (shown by `shoal token ls`, safe to log)
and 32 random bytes in URL-safe base64 (43 characters). Only the id and the SHA-256 of the
secret (`digest`) are ever sent to or kept by the cluster (node/auth.py says why a fast hash).

Why interceptors and not `grpc.access_token_call_credentials`: gRPC sends call credentials
only over secure channels, and a cluster may use tokens without TLS (on a trusted network,
or while setting TLS up). The node checks the header in node/auth.py.

grpc.aio sorts a channel's interceptors into four lists with an if/elif on their type, so
one class implementing the four kinds would only ever see unary-unary calls: `aio_bearer`
returns one instance per kind.
"""
from __future__ import annotations

import collections
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any, Final

import grpc

AUTH_METADATA_KEY: Final = "authorization"   # gRPC metadata keys are lower case
TOKEN_PATTERN: Final = re.compile(r"st_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")   # fullmatch: (id, secret)


def new_token() -> tuple[str, str, str]:
    """A fresh token: (token_id, secret, token text `st_<id>_<secret>`). Show the text once."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)   # 32 bytes -> 43 characters
    return token_id, secret, f"st_{token_id}_{secret}"


def digest(secret: str) -> str:
    """What the cluster keeps of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                           "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):  # type: ignore[misc]   # grpc ships no type hints
    pass


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """For blocking channels (`grpc.intercept_channel`): all four kinds in one object."""

    def __init__(self, token: str) -> None:
        self._header = (AUTH_METADATA_KEY, f"Bearer {token}")   # made once per channel

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(details.method, details.timeout, [*(details.metadata or ()), self._header],
                            details.credentials, getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioBearer:
    """What the four aio kinds share: the header, made once per channel."""

    def __init__(self, token: str) -> None:
        self._header = (AUTH_METADATA_KEY, f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(details.method, details.timeout, [*(details.metadata or ()), self._header],
                                          details.credentials, details.wait_for_ready)


class _AioUnaryUnary(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStream(_AioBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def aio_bearer(token: str) -> list[Any]:
    """The interceptors for `grpc.aio.*_channel(..., interceptors=...)`, one per call kind."""
    return [_AioUnaryUnary(token), _AioUnaryStream(token), _AioStreamUnary(token), _AioStreamStream(token)]
