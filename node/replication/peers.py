"""Long-lived grpc.aio channels to other nodes, one per address (never one per request)."""
from __future__ import annotations

import grpc

from shoal.client import _channel as client_channel
from shoal.client.wire.pb import peer_pb2_grpc

# The client's channel settings (keepalive with ping_timeout_ms, reconnect backoff, notes
# 3.5/3.7), with a larger message limit for replication entries.
CHANNEL_OPTIONS = [(name, value) for name, value in client_channel.CHANNEL_OPTIONS
                   if "message_length" not in name] + [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class PeerClients:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, peer_pb2_grpc.PeerStub] = {}

    def peer(self, address: str) -> peer_pb2_grpc.PeerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = peer_pb2_grpc.PeerStub(channel)
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        self._stubs.clear()
