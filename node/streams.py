"""StreamGuard: the interceptor link that bounds the node's streaming RPCs (issue 19.6).

    ErrorMapping -> RequestAccounting -> Authentication -> StreamGuard -> handler

Every streaming RPC passes it (Scan, PutStream, CopyShard, GetJobResult, Health Watch);
unary RPCs go by untouched (RequestAccounting's `inflight_requests_max` bounds those).

- At most `streams_max` streams are open at once; one more is refused at once with
  OverloadedError (RESOURCE_EXHAUSTED, code OVERLOADED, the retry hint in the trailers),
  which the client retries after the hint.
- Every message the node sends must be taken by the client within `stream_idle_timeout_s`
  (gRPC's flow control holds a send until the client has read enough). A client that
  stops reading a scan, a copy or its acks gets StreamIdleError (RESOURCE_EXHAUSTED, code
  OVERLOADED, so the Python client resumes a scan after its last key), the handler is
  closed at once (a Scan reads each chunk in its own short LMDB read transaction, so
  none is open across a send: a stuck reader never stops LMDB reusing pages), and the
  line "stream METHOD idle" is logged.
- The slot of a stream closed this way stays taken until its status is out: gRPC Python
  gives a server no way to reset one stream, so the status queues behind the unread
  messages, and gRPC keeps those bytes (measured: about 3 messages, 12 MB with 4 MiB
  chunks) until the client reads, cancels, reaches its deadline or drops its connection.
  Holding the slot is what bounds that memory: at most streams_max x ~3 x
  scan_chunk_bytes_max for every stuck client together.

Reading stalls are the handler's business (a PutStream that sends nothing: server.py /
put_stream.py use the same timeout); handlers get the context through `_IdleWrites`, so
one that writes with `context.write` (the health service's Watch) is guarded the same way.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from shoal.node import errors, interceptors

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamStatistics:
    open: int                 # streaming RPCs open now (stuck ones included)
    streams_max: int          # the limit (config.streams_max)
    refused: int              # answered OVERLOADED because streams_max were open
    idle_closed: int          # closed because the client took nothing for stream_idle_timeout_s
    stuck: int                # of those, still waiting for the client to take the closing status


class _IdleWrites:
    """The servicer context with `write` bounded by the idle timeout; everything else delegated."""

    def __init__(self, context: grpc.aio.ServicerContext, method: str, idle_timeout_s: float) -> None:
        self._context = context
        self._method = method
        self._idle_timeout_s = idle_timeout_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                await self._context.write(message)
        except TimeoutError:
            raise errors.StreamIdleError(
                f"{self._method.rsplit('/', 1)[-1]}: the client took no message for {self._idle_timeout_s:g} s "
                f"(stream_idle_timeout_s): the node closed the stream; resume or retry") from None


class StreamGuard(interceptors.ChainLink):
    """Bounds open streams (streams_max) and unread sends (stream_idle_timeout_s); see the module docstring."""

    def __init__(self, streams_max: int, idle_timeout_s: float, retry_after_s: float) -> None:
        assert streams_max > 0 and idle_timeout_s > 0
        super().__init__()
        self._streams_max = streams_max
        self._idle_timeout_s = idle_timeout_s
        self._retry_after_s = retry_after_s
        self._open = self._refused = self._idle_closed = self._stuck = 0

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(self._open, self._streams_max, self._refused, self._idle_closed, self._stuck)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        return super()._wrap(method, handler)

    def _admit(self) -> None:
        if self._open >= self._streams_max:
            self._refused += 1
            raise errors.OverloadedError(
                f"node busy: {self._open} streams open, limit {self._streams_max} (streams_max); "
                f"retry in {self._retry_after_s:.2f} s", retry_after_s=self._retry_after_s)
        self._open += 1

    async def unary(self, method: str, context: grpc.aio.ServicerContext,
                    call: Callable[[], Awaitable[Any]]) -> Any:
        """A client stream with one answer (none in the services today): counted, nothing to send."""
        self._admit()
        try:
            return await call()
        finally:
            self._open -= 1

    def _around_stream(self, method: str, behavior: interceptors.Behavior) -> interceptors.Behavior:
        # A coroutine handler (grpc then lets it write through the context): the guard does the
        # sends itself, each under the idle timeout, also for handlers written as generators.
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> None:
            self._admit()
            try:
                await self._serve(method, behavior, request, _IdleWrites(context, method, self._idle_timeout_s))
            except errors.StreamIdleError as exc:
                await self._close_idle(method, context, exc)
            finally:
                self._open -= 1
        return guarded

    async def _serve(self, method: str, behavior: interceptors.Behavior, request: Any, context: _IdleWrites) -> None:
        if not inspect.isasyncgenfunction(behavior):
            await behavior(request, context)
            return
        responses = behavior(request, context)
        try:
            async for response in responses:
                await context.write(response)
        finally:
            await responses.aclose()   # at once, also on an idle close: the handler's memory is freed now

    async def _close_idle(self, method: str, context: grpc.aio.ServicerContext, exc: errors.StreamIdleError) -> None:
        """Send the closing status; returns (by raising) once it is out or the client has gone."""
        self._idle_closed += 1
        self._stuck += 1
        logger.warning("stream %s idle, closed (client %s): %s", method, context.peer(), exc)
        try:
            await interceptors.abort(context, exc)   # raises AbortError, or gRPC's error if the client left first
        finally:
            self._stuck -= 1
