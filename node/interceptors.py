"""The server-side interceptor chain: every RPC of the node passes through it, in order.

    ErrorMapping -> RequestAccounting -> Authentication (node/auth.py) -> StreamGuard (node/streams.py) -> handler

- `ErrorMapping` is the one place where a domain error (node/errors.py) becomes a gRPC
  status, with the shoal.v1.ErrorCode name in the trailing metadata (wire.codes) and,
  for OVERLOADED, a retry hint in milliseconds.
- `RequestAccounting` counts requests by method and outcome, times them into a
  latency histogram (`LatencyBuckets`, bounds `LATENCY_BOUNDS_S`), tracks the RPCs in
  flight and refuses new ones past `inflight_requests_max` with OverloadedError
  (retriable, with a hint), instead of gRPC's bare RESOURCE_EXHAUSTED that a client
  cannot tell from a full disk.

The counters need no lock: grpc.aio runs every handler, and so this chain, on the node's
event loop, and the readers (`statistics()`: /metrics, status) run there too. A request
costs one `perf_counter()` pair, one `bisect` over 13 bounds and two integer increments.
For a stream the duration is the whole stream (a Scan, a CopyShard, a Health Watch), so
long ones land in the +Inf bucket.

Authentication (bearer tokens and roles, node/auth.py) comes after the accounting, so refused
calls are counted (outcome UNAUTHENTICATED or PERMISSION_DENIED); StreamGuard (node/streams.py)
is innermost. node/node.py assembles the four links in this order.
Unary and streaming handlers (`PutStream`, `Scan`) are wrapped alike; a wrapped handler
is built once per method and cached, so the per-call cost is one extra frame.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from shoal.client.wire.codes import ERROR_METADATA_KEY, RETRY_AFTER_METADATA_KEY, metadata_value
from shoal.node import errors

logger = logging.getLogger(__name__)

STATUS_OF: list[tuple[type[errors.NodeError], grpc.StatusCode]] = [
    (errors.UnknownDatasetError, grpc.StatusCode.NOT_FOUND),
    (errors.DatasetExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.StorageFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StaleEpochError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotEnoughNodesError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotPrimaryError, grpc.StatusCode.UNAVAILABLE),
    (errors.NoLeaseError, grpc.StatusCode.UNAVAILABLE),
    (errors.NoControllerError, grpc.StatusCode.UNAVAILABLE),
    (errors.UnknownOutcomeError, grpc.StatusCode.UNAVAILABLE),
    (errors.ReplicationError, grpc.StatusCode.UNAVAILABLE),
    (errors.WrongClusterError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UnknownJobError, grpc.StatusCode.NOT_FOUND),
    (errors.LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.JobFailedError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UserCodeDisabledError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.EncryptionKeyError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
]

Behavior = Callable[..., Any]
ERROR_DETAILS_CHARS_MAX = 2_000   # of a status message (gRPC metadata, 16 KiB at most in all)


def status_code(exc: errors.NodeError) -> grpc.StatusCode:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


class ChainLink(grpc.aio.ServerInterceptor):  # type: ignore[misc]   # grpc ships no type hints
    """One link of the chain: wraps each method's behaviour once (cached per method).

    Subclasses implement `unary` (around one awaited call; also used for handlers that
    stream with `context.write`) and `stream` (around an async generator of responses).
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method in self._handlers:
            return self._handlers[method]
        wrapped = self._wrap(method, await continuation(details))
        if wrapped is not None:   # only real methods: a client's made-up names must not grow the cache
            self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None
        serde = {"request_deserializer": handler.request_deserializer,
                 "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._around_call(method, handler.unary_unary), **serde)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._around_call(method, handler.stream_unary), **serde)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._around_stream(method, handler.unary_stream), **serde)
        return grpc.stream_stream_rpc_method_handler(self._around_stream(method, handler.stream_stream), **serde)

    def _around_call(self, method: str, behavior: Behavior) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.unary(method, context, lambda: behavior(request, context))
        return call

    def _around_stream(self, method: str, behavior: Behavior) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):   # streams with context.write(): a coroutine
            return self._around_call(method, behavior)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in self.stream(method, context, behavior(request, context)):   # stays an
                yield response                                                                # async generator
        return stream

    async def unary(self, method: str, context: grpc.aio.ServicerContext,
                    call: Callable[[], Awaitable[Any]]) -> Any:
        raise NotImplementedError

    def stream(self, method: str, context: grpc.aio.ServicerContext,
               responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
        raise NotImplementedError


class ErrorMapping(ChainLink):
    """NodeError -> gRPC status + error code (+ retry hint); anything else stays INTERNAL.

    Also a request whose bytes are not its message (a client built from other .proto files, a
    damaged frame): INVALID_ARGUMENT instead of gRPC's UNKNOWN "Unexpected DecodeError" (methods
    with one request message; a malformed message inside PutStream's stream stays gRPC's).
    """

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        wrapped = super()._wrap(method, handler)
        if wrapped is None or wrapped.request_streaming or wrapped.request_deserializer is None:
            return wrapped
        return wrapped._replace(request_deserializer=_tolerant(wrapped.request_deserializer))

    def _around_call(self, method: str, behavior: Behavior) -> Behavior:
        def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _refuse_malformed(method, request)
            return behavior(request, context)
        return super()._around_call(method, checked)

    def _around_stream(self, method: str, behavior: Behavior) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):
            return super()._around_stream(method, behavior)

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _refuse_malformed(method, request)
            async for response in behavior(request, context):
                yield response
        return super()._around_stream(method, checked)

    async def unary(self, method: str, context: grpc.aio.ServicerContext,
                    call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except errors.NodeError as exc:
            await abort(context, exc)

    async def stream(self, method: str, context: grpc.aio.ServicerContext,
                     responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for response in responses:
                yield response
        except errors.NodeError as exc:
            await abort(context, exc)


@dataclasses.dataclass(frozen=True, slots=True)
class _Malformed:
    """What ErrorMapping's deserializer answers for bytes that do not parse as the request."""

    problem: str


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:   # protobuf's DecodeError (untyped module): the bytes are not this request
            return _Malformed(str(exc))
    return parse


def _refuse_malformed(method: str, request: Any) -> None:
    if isinstance(request, _Malformed):
        raise errors.InvalidRequestError(f"malformed {method} request: {request.problem}")


async def abort(context: grpc.aio.ServicerContext, exc: errors.NodeError) -> None:
    metadata: tuple[tuple[str, str], ...] = ((ERROR_METADATA_KEY, exc.code),)
    if isinstance(exc, errors.OverloadedError):
        metadata += ((RETRY_AFTER_METADATA_KEY, str(round(exc.retry_after_s * 1000))),)
    await context.abort(status_code(exc), details(exc), trailing_metadata=metadata)


def details(exc: errors.NodeError) -> str:
    """The status message: the error's, cut to ERROR_DETAILS_CHARS_MAX. Messages quote request values
    (a 70 KB dataset name); past gRPC's 16 KiB metadata limit the client would get RESOURCE_EXHAUSTED
    "received metadata size exceeds hard limit" instead of the error and its code."""
    message = str(exc)
    if len(message) <= ERROR_DETAILS_CHARS_MAX:
        return message
    return f"{message[:ERROR_DETAILS_CHARS_MAX]}... ({len(message)} characters)"


# Upper bounds (seconds, inclusive: Prometheus `le`) of the request latency histogram: the
# 1-2.5-5 steps per decade of prometheus_client's DEFAULT_BUCKETS, extended down to 1 ms
# (a Get from the page cache, or a write with fsync and one backup, answers in a few ms and
# would all fall in the default's first bucket) and cut at 10 s (a unary RPC slower than
# that is stuck; it and long streams land in +Inf). Linear interpolation inside a bucket
# (histogram_quantile) is then off by at most the bucket's width, a factor of 2.5.
LATENCY_BOUNDS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyBuckets:
    """A copy of one (method, outcome) histogram: per-bucket counts (not cumulative) and the sum."""
    counts: tuple[int, ...]     # counts[i]: durations in (LATENCY_BOUNDS_S[i-1], LATENCY_BOUNDS_S[i]]; last: > 10 s
    sum_s: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound as `le` text, requests at or below it), ending with +Inf."""
        bounds = [repr(bound) for bound in LATENCY_BOUNDS_S] + ["+Inf"]
        running, buckets = 0, []
        for bound, count in zip(bounds, self.counts):
            running += count
            buckets.append((bound, running))
        return buckets


class LatencyHistogram:
    """Integer bucket counts of request durations (LATENCY_BOUNDS_S) and their sum, for one key."""

    __slots__ = ("counts", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
        self.sum_s = 0.0

    def observe(self, duration_s: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS_S, duration_s)] += 1   # first bound >= duration
        self.sum_s += duration_s

    def snapshot(self) -> LatencyBuckets:
        return LatencyBuckets(tuple(self.counts), self.sum_s)


@dataclasses.dataclass(frozen=True, slots=True)
class RequestStatistics:
    in_flight: int
    in_flight_max: int                         # the limit (config.inflight_requests_max)
    refused: int                               # answered OVERLOADED at the door
    by_method: dict[str, dict[str, int]]       # method -> outcome (OK or an ErrorCode name) -> count
    # method -> outcome -> durations; the counts add up to by_method's (a refusal takes 0 s)
    latency_by_method: dict[str, dict[str, LatencyBuckets]] = dataclasses.field(default_factory=dict)


class RequestAccounting(ChainLink):
    """Counts and times requests by method and outcome; refuses new RPCs past the in-flight limit."""

    def __init__(self, in_flight_max: int, retry_after_s: float) -> None:
        super().__init__()
        self._in_flight_max = in_flight_max
        self._retry_after_s = retry_after_s
        self._in_flight = 0
        self._refused = 0
        self._outcomes: collections.defaultdict[str, collections.Counter[str]] = \
            collections.defaultdict(collections.Counter)
        self._latency: dict[tuple[str, str], LatencyHistogram] = {}

    def statistics(self) -> RequestStatistics:
        latency: dict[str, dict[str, LatencyBuckets]] = {}
        for (method, outcome), histogram in self._latency.items():
            latency.setdefault(method, {})[outcome] = histogram.snapshot()
        return RequestStatistics(self._in_flight, self._in_flight_max, self._refused,
                                 {m: dict(c) for m, c in self._outcomes.items()}, latency)

    def _count(self, method: str, outcome: str, duration_s: float) -> None:
        self._outcomes[method][outcome] += 1
        histogram = self._latency.get((method, outcome))
        if histogram is None:
            histogram = self._latency[(method, outcome)] = LatencyHistogram()
        histogram.observe(duration_s)

    def _admit(self, method: str) -> None:
        if self._in_flight >= self._in_flight_max:
            self._refused += 1
            self._count(method, "OVERLOADED", 0.0)
            raise errors.OverloadedError(
                f"node busy: {self._in_flight} requests in flight, limit {self._in_flight_max} "
                f"(inflight_requests_max); retry in {self._retry_after_s:.2f} s", retry_after_s=self._retry_after_s)
        self._in_flight += 1

    def _done(self, method: str, outcome: str, started_s: float) -> None:
        self._in_flight -= 1
        self._count(method, outcome, time.perf_counter() - started_s)

    async def unary(self, method: str, context: grpc.aio.ServicerContext,
                    call: Callable[[], Awaitable[Any]]) -> Any:
        self._admit(method)
        started_s = time.perf_counter()
        outcome = "INTERNAL"
        try:
            result = await call()
            outcome = "OK"
            return result
        except errors.NodeError as exc:
            outcome = exc.code
            raise
        except Exception:   # an inner link aborted the call itself (node/streams.py): its code is in the trailers
            outcome = metadata_value(context.trailing_metadata(), ERROR_METADATA_KEY) or outcome
            raise
        finally:
            self._done(method, outcome, started_s)

    async def stream(self, method: str, context: grpc.aio.ServicerContext,
                     responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
        self._admit(method)
        started_s = time.perf_counter()
        outcome = "INTERNAL"
        try:
            async for response in responses:
                yield response
            outcome = "OK"
        except errors.NodeError as exc:
            outcome = exc.code
            raise
        finally:
            self._done(method, outcome, started_s)


def chain(inflight_max: int, retry_after_s: float) -> tuple[ErrorMapping, RequestAccounting]:
    """The node's chain, outermost first (ErrorMapping must see what the others raise)."""
    return ErrorMapping(), RequestAccounting(inflight_max, retry_after_s)
