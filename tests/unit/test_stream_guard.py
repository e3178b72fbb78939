"""Issue 19.6: StreamGuard (node/streams.py) on a real grpc.aio server: the open-streams limit and the idle close.

The servicer is a small stand-in whose Scan streams 256 KiB chunks without end (the guard is
what is under test); the chain, server, channels and status codes are real gRPC on loopback,
and the client side is the blocking channel and error mapping of the Python client.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from shoal.client import OverloadedError
from shoal.client._errors import error_from_rpc
from shoal.client.wire.channels import Wire
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc
from shoal.node import interceptors
from shoal.node.streams import StreamGuard, StreamStatistics

IDLE_S = 0.3
CHUNK_BYTES = 256 * 1024
WAIT_S = 10.0


class Endless(pb_grpc.DataServicer):
    def __init__(self) -> None:
        self.finished = 0   # Scan handlers that ended (closed by the guard or the client)

    async def Scan(self, request: pb.ScanRequest, context: Any) -> AsyncIterator[pb.ScanChunk]:
        try:
            n = 0
            while True:
                yield pb.ScanChunk(keys=[b"%d" % n], values=[b"x" * CHUNK_BYTES])
                n += 1
        finally:
            self.finished += 1


async def _until(condition: Callable[[], bool], what: str, guard: StreamGuard) -> None:
    """Poll `condition` on the event loop until it holds; fail with the guard's statistics after WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + WAIT_S
    while not condition():
        assert loop.time() < deadline_s, f"{what}: not within {WAIT_S} s; {guard.statistics()}"
        await asyncio.sleep(0.01)   # yield to the server's tasks; bounded by the deadline above


def serve(streams_max: int, body: Callable[[Any, Endless, StreamGuard], Awaitable[None]]) -> tuple[StreamStatistics,
                                                                                                  Any]:
    """Run `body(channel, servicer, guard)` against a fresh server with the node's chain plus the guard."""
    async def main() -> tuple[StreamStatistics, Any]:
        wire = Wire()
        guard = StreamGuard(streams_max, IDLE_S, retry_after_s=0.25)
        chain = (*interceptors.chain(100, retry_after_s=0.25), guard)
        server = wire.aio_server(chain)
        servicer = Endless()
        pb_grpc.add_DataServicer_to_server(servicer, server)
        port = wire.add_port(server, "127.0.0.1:0")
        await server.start()
        try:
            with wire.channel(f"127.0.0.1:{port}") as channel:
                await body(channel, servicer, guard)
            return guard.statistics(), chain[1].statistics()
        finally:
            await server.stop(grace=None)
    return asyncio.run(main())


def test_stream_guard_refuses_past_streams_max_with_a_retry_hint() -> None:
    """With streams_max 1 and one scan open (read along), a second scan is OVERLOADED with the hint,
    while unary calls are not counted; closing the first frees the slot."""
    async def body(channel: Any, servicer: Endless, guard: StreamGuard) -> None:
        stub = pb_grpc.DataStub(channel)
        first = stub.Scan(pb.ScanRequest(), timeout=WAIT_S)
        await asyncio.to_thread(next, first)
        with pytest.raises(grpc.RpcError) as refused:
            await asyncio.to_thread(lambda: next(stub.Scan(pb.ScanRequest(), timeout=WAIT_S)))
        error = error_from_rpc(refused.value, "scan")
        assert isinstance(error, OverloadedError) and error.retriable and error.retry_after_s == pytest.approx(0.25)
        assert "streams_max" in error.message
        first.cancel()
        await _until(lambda: guard.statistics().open == 0, "the cancelled scan's slot freed", guard)

    streams, requests = serve(1, body)
    assert streams.refused == 1 and streams.idle_closed == 0
    assert requests.by_method["/shoal.v1.Data/Scan"].get("OVERLOADED") == 1


def test_stream_guard_closes_a_scan_the_client_stopped_reading() -> None:
    """A client reads one chunk and stops: after stream_idle_timeout_s the node closes the stream and
    the handler ends; the slot stays taken (the status waits behind the unread chunks) until the
    client reads on, and then it gets RESOURCE_EXHAUSTED / OVERLOADED naming stream_idle_timeout_s."""
    async def body(channel: Any, servicer: Endless, guard: StreamGuard) -> None:
        call = pb_grpc.DataStub(channel).Scan(pb.ScanRequest(), timeout=WAIT_S)
        await asyncio.to_thread(next, call)
        await _until(lambda: servicer.finished == 1, "the idle scan's handler closed", guard)
        assert guard.statistics().stuck == 1 and guard.statistics().open == 1

        def read_on() -> grpc.RpcError:
            with pytest.raises(grpc.RpcError) as closed:
                for _ in call:
                    pass
            return closed.value
        status = await asyncio.to_thread(read_on)
        assert status.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        error = error_from_rpc(status, "scan")
        assert isinstance(error, OverloadedError) and "stream_idle_timeout_s" in error.message
        await _until(lambda: guard.statistics().open == 0, "the slot freed once the status was read", guard)

    streams, requests = serve(4, body)
    assert streams.idle_closed == 1 and streams.stuck == 0
    assert requests.by_method["/shoal.v1.Data/Scan"] == {"OVERLOADED": 1}
    assert requests.in_flight == 0


def test_stream_guard_frees_a_stuck_slot_when_the_client_cancels() -> None:
    """A stuck scan closed by the guard whose client then cancels (or whose deadline passes) gives its slot back."""
    async def body(channel: Any, servicer: Endless, guard: StreamGuard) -> None:
        call = pb_grpc.DataStub(channel).Scan(pb.ScanRequest(), timeout=WAIT_S)
        await asyncio.to_thread(next, call)
        await _until(lambda: guard.statistics().stuck == 1, "the idle scan closed", guard)
        call.cancel()
        await _until(lambda: guard.statistics().open == 0, "the slot freed after the cancel", guard)

    streams, _ = serve(4, body)
    assert streams.idle_closed == 1 and streams.stuck == 0
