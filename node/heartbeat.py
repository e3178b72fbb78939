"""The node's heartbeat to the controller: renews the lease, reports shard states, and
(for data-only nodes) brings the metadata. One request per heartbeat_interval_s."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from shoal.client.wire.pb import peer_pb2
from shoal.node.metadata.remote import RemoteMetadata

if TYPE_CHECKING:
    from shoal.node.node import Node

logger = logging.getLogger(__name__)


def heartbeat_request(node: Node) -> peer_pb2.HeartbeatRequest:
    shards = []
    for replica in node.registry.replicas():
        state = replica.store.state
        shards.append(peer_pb2.ShardHeartbeat(dataset=replica.dataset, shard=replica.index, epoch=state.epoch,
                                              seq=state.seq, records=state.records, checksum=state.checksum))
    return peer_pb2.HeartbeatRequest(node_id=node.config.node_id, address=node.config.address,
                                     metadata_version=node.metadata.version, shards=shards)


async def beat_once(node: Node, hint: str | None) -> str | None:
    """One heartbeat; returns the controller address to use next time."""
    request = heartbeat_request(node)
    sent_at_s = time.monotonic()
    target = node.controller.leader_address() or hint
    if target is None:
        return None
    if target == node.config.address:
        response = node.controller.heartbeat(request)
    else:
        try:
            response = await node.context.peers.peer(target).Heartbeat(
                request, timeout=node.config.heartbeat_interval_s * 2)
        except grpc.aio.AioRpcError as exc:
            logger.debug("heartbeat to %s failed: %s", target, exc.code().name)
            return node.config.join or None
    if response.metadata and isinstance(node.metadata, RemoteMetadata):   # voters have Raft instead
        node.metadata.install(response.metadata_version, response.metadata)
    if response.lease_granted:
        node.lease.grant(sent_at_s, response.lease_s, response.metadata_version)
        node.known_controller = response.controller
        return target
    return response.controller_address or node.config.join or None


async def run(node: Node) -> None:
    hint: str | None = node.config.join or None
    while True:
        started = time.monotonic()
        try:
            hint = await beat_once(node, hint)
        except Exception:
            logger.exception("heartbeat round failed")
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(0.0, node.config.heartbeat_interval_s - elapsed))   # fixed-rate tick
