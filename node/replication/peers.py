"""Long-lived grpc.aio channels to other nodes, one per address (never one per request).

Channels come from the wire room's factory, so peers share the client's keepalive and
reconnect settings and the node's one message limit.
"""
from __future__ import annotations

import grpc

from shoal.client.wire.channels import Wire
from shoal.client.wire.pb import data_pb2_grpc, peer_pb2_grpc


class PeerClients:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, peer_pb2_grpc.PeerStub] = {}
        self._data_stubs: dict[str, data_pb2_grpc.DataStub] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._wire.aio_channel(address)
        return channel

    def peer(self, address: str) -> peer_pb2_grpc.PeerStub:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = peer_pb2_grpc.PeerStub(self._channel(address))
        return stub

    def data(self, address: str) -> data_pb2_grpc.DataStub:
        """The client API of another node (a map-reduce job writes its output through it)."""
        stub = self._data_stubs.get(address)
        if stub is None:
            stub = self._data_stubs[address] = data_pb2_grpc.DataStub(self._channel(address))
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        self._stubs.clear()
        self._data_stubs.clear()
