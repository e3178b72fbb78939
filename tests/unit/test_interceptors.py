"""The node's interceptor chain on a real grpc.aio server: error mapping, accounting, the in-flight limit.

The servicer is a small stand-in for the Data service (the chain is what is under test);
server, channels and status codes are real gRPC on a loopback port, and the client side
is the blocking channel and error mapping the Python client uses (run in a thread).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from shoal.client import NotPrimaryError, OverloadedError, StorageFullError
from shoal.client._errors import error_from_rpc
from shoal.client.wire.channels import Wire
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc
from shoal.node import errors, interceptors


class StandIn(pb_grpc.DataServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        raise errors.StorageFullError(f"shard {request.target.dataset}/0 full: raise map_size_bytes")

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        self.entered.set()
        await self.release.wait()
        return pb.PutResponse()

    async def Scan(self, request: pb.ScanRequest, context: Any) -> AsyncIterator[pb.ScanChunk]:
        yield pb.ScanChunk(keys=[b"a"], values=[b"\x01"])
        raise errors.NotPrimaryError("shard ds/0: this node stopped being its primary")


def serve(inflight_max: int, body: Callable[[pb_grpc.DataStub, StandIn, Any], Awaitable[None]]) -> Any:
    """Run `body(stub, servicer, accounting)` against a fresh server with the real chain."""
    async def main() -> Any:
        wire = Wire()
        chain = interceptors.chain(inflight_max, retry_after_s=0.25)
        server = wire.aio_server(chain)
        servicer = StandIn()
        pb_grpc.add_DataServicer_to_server(servicer, server)
        port = wire.add_port(server, "127.0.0.1:0")
        await server.start()
        try:
            with wire.channel(f"127.0.0.1:{port}") as channel:
                await body(pb_grpc.DataStub(channel), servicer, chain[1])
            return chain[1].statistics()
        finally:
            await server.stop(grace=None)
    return asyncio.run(main())


def test_interceptors_map_unary_and_stream_errors_to_typed_client_errors() -> None:
    """A NodeError from a unary handler and one raised mid-stream both reach the client typed, with the code."""
    async def body(stub: pb_grpc.DataStub, servicer: StandIn, accounting: Any) -> None:
        target = pb.RecordTarget(dataset="ds", shard=0, epoch=1)
        with pytest.raises(grpc.RpcError) as unary:
            await asyncio.to_thread(stub.Get, pb.GetRequest(target=target, key=b"k"), timeout=5)
        mapped = error_from_rpc(unary.value, "get")
        assert isinstance(mapped, StorageFullError) and "map_size_bytes" in mapped.message
        chunks: list[pb.ScanChunk] = []
        with pytest.raises(grpc.RpcError) as streamed:
            await asyncio.to_thread(lambda: chunks.extend(stub.Scan(pb.ScanRequest(target=target), timeout=5)))
        assert [list(c.keys) for c in chunks] == [[b"a"]]   # the chunk before the error arrived
        assert isinstance(error_from_rpc(streamed.value, "scan"), NotPrimaryError)

    stats = serve(10, body)
    assert stats.by_method["/shoal.v1.Data/Get"] == {"STORAGE_FULL": 1}
    assert stats.by_method["/shoal.v1.Data/Scan"] == {"NOT_PRIMARY": 1}
    assert stats.in_flight == 0
    assert stats.latency_by_method["/shoal.v1.Data/Get"]["STORAGE_FULL"].count == 1   # timed like it is counted
    assert stats.latency_by_method["/shoal.v1.Data/Scan"]["NOT_PRIMARY"].count == 1


def test_interceptors_refuse_past_the_inflight_limit_with_a_retry_hint() -> None:
    """With the limit at 1 and one call in flight, the next is OVERLOADED (retriable, with the hint)."""
    async def body(stub: pb_grpc.DataStub, servicer: StandIn, accounting: Any) -> None:
        target = pb.RecordTarget(dataset="ds", shard=0, epoch=1)
        first = asyncio.ensure_future(asyncio.to_thread(
            stub.Put, pb.PutRequest(target=target, key=b"k", value=b"\x01"), timeout=10))
        await asyncio.wait_for(servicer.entered.wait(), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            await asyncio.to_thread(stub.Put, pb.PutRequest(target=target, key=b"k2", value=b"\x01"), timeout=5)
        error = error_from_rpc(refused.value, "put")
        assert isinstance(error, OverloadedError) and error.retriable
        assert error.retry_after_s == pytest.approx(0.25)
        assert "inflight_requests_max" in error.message
        servicer.release.set()
        await first   # the admitted call still completes

    stats = serve(1, body)
    assert stats.refused == 1 and stats.in_flight == 0
    assert stats.by_method["/shoal.v1.Data/Put"] == {"OVERLOADED": 1, "OK": 1}
    put = stats.latency_by_method["/shoal.v1.Data/Put"]
    assert put["OVERLOADED"].counts[0] == put["OVERLOADED"].count == 1   # refused at the door: 0 s
    assert put["OK"].count == 1 and put["OK"].sum_s > 0
