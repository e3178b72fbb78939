"""The node's heartbeat to the controller: renews the lease, reports shard states, and
(for data-only nodes) brings the metadata. One request per heartbeat_interval_s.

`Heartbeat` gets the few things it uses, not the node: the config, the metadata store,
the replicas to report, the lease to renew, the peer channels and the controller
(to find the leader, or to answer in-process when this node is the controller).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import grpc

from shoal.client.wire.pb import peer_pb2

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.identity import Identity
    from shoal.node.lease import Lease
    from shoal.node.metadata import MetadataStore
    from shoal.node.replication.peers import PeerClients
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)


class ControllerLink(Protocol):
    def leader_address(self) -> str | None: ...

    def heartbeat(self, request: peer_pb2.HeartbeatRequest) -> peer_pb2.HeartbeatResponse: ...


class Heartbeat:
    def __init__(self, config: NodeConfig, metadata: MetadataStore, replicas: Callable[[], list[Replica]],
                 lease: Lease, peers: PeerClients, controller: ControllerLink, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self.metadata = metadata
        self.replicas = replicas
        self.lease = lease
        self.peers = peers
        self.controller = controller
        self.known_controller = ""   # node id from the last granted heartbeat (data-only nodes have no Raft view)
        self._fallbacks = 0          # rotates through the voters after a failed heartbeat

    def request(self) -> peer_pb2.HeartbeatRequest:
        shards = []
        for replica in self.replicas():
            state = replica.store.state
            shards.append(peer_pb2.ShardHeartbeat(
                dataset=replica.dataset, shard=replica.index, epoch=state.epoch, seq=state.seq, records=state.records,
                checksum=state.checksum, dataset_id=replica.dataset_id, incarnation=replica.store.incarnation))
        return peer_pb2.HeartbeatRequest(node_id=self.config.node_id, address=self.config.address,
                                         metadata_version=self.metadata.version, shards=shards,
                                         cluster_id=self.identity.cluster_id,
                                         jobs_version=self.metadata.view.jobs_version)

    async def beat_once(self, hint: str | None) -> str | None:
        """One heartbeat; returns the controller address to use next time."""
        request = self.request()
        sent_at_s = time.monotonic()
        target = self.controller.leader_address() or hint
        if target is None:
            return None
        if target == self.config.address:
            response = self.controller.heartbeat(request)
        else:
            try:
                response = await self.peers.peer(target).Heartbeat(
                    request, timeout=self.config.heartbeat_interval_s * 2)
            except grpc.aio.AioRpcError as exc:
                logger.debug("heartbeat to %s failed: %s", target, exc.code().name)
                return self._next_voter(target)
        if response.cluster_id and not self.identity.accepts(response.cluster_id):
            return self._next_voter(target)   # another cluster on that address: take nothing from it
        if response.metadata:
            self.metadata.install_snapshot(response.metadata_version, response.metadata)
        if response.lease_granted:
            self.lease.grant(sent_at_s, response.lease_s, response.metadata_version)
            self.known_controller = response.controller
            return target
        return response.controller_address or self._next_voter(target)

    def _next_voter(self, failed: str) -> str | None:
        """Another address to try after `failed`: the --join address and every metadata voter
        the metadata knows, in turn (the join node may be the one that died)."""
        candidates = [self.config.join] if self.config.join else []
        candidates += sorted(n.address for n in self.metadata.view.nodes.values()
                             if n.raft_address and n.address and n.address != self.config.address)
        candidates = [a for a in dict.fromkeys(candidates) if a != failed] or candidates
        if not candidates:
            return None
        self._fallbacks += 1
        return candidates[self._fallbacks % len(candidates)]

    async def run(self) -> None:
        hint: str | None = self.config.join or None
        while True:
            started = time.monotonic()
            try:
                hint = await self.beat_once(hint)
            except Exception:
                logger.exception("heartbeat round failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.config.heartbeat_interval_s - elapsed))   # fixed-rate tick
