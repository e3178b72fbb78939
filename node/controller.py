"""The controller: runs on whichever node is the Raft leader.

It grants leases in heartbeat replies, declares silent nodes dead through Raft, and
moves the shards of a dead node: promotes the in-sync backup with the highest reported
sequence number, or fences a dead backup out of the in-sync set. Its view (who was
heard when, which sequence numbers they reported) is soft state: a new leader starts by
treating every node as just seen, so it never declares a node dead before that node's
last lease (granted by the previous leader) has expired.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack

from shoal.client.wire.pb import peer_pb2
from shoal.node.errors import NodeError
from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.replication.context import ReplicationContext

logger = logging.getLogger(__name__)


class Controller:
    def __init__(self, config: NodeConfig, context: ReplicationContext) -> None:
        self.config = config
        self.context = context
        self.metadata = context.metadata
        self._leading_since_s: float | None = None
        self._last_seen_s: dict[str, float] = {}
        self._reported_seq: dict[str, dict[tuple[str, int], int]] = {}
        self._reported_unavailable: set[tuple[str, int, str]] = set()   # log each stuck shard once

    # ---- heartbeats (called by the Peer service, or directly for this node) ----

    def heartbeat(self, request: peer_pb2.HeartbeatRequest) -> peer_pb2.HeartbeatResponse:
        if not self.metadata.is_leader():
            address = self.leader_address()
            return peer_pb2.HeartbeatResponse(lease_granted=False, controller_address=address or "")
        now = time.monotonic()
        self._last_seen_s[request.node_id] = now
        self._reported_seq[request.node_id] = {(s.dataset, s.shard): s.seq for s in request.shards}
        state = self.metadata.state
        response = peer_pb2.HeartbeatResponse(
            lease_granted=request.node_id in state["nodes"], lease_s=self.config.lease_s,
            metadata_version=state["version"], controller=self.config.node_id,
            controller_address=self.config.address)
        if request.metadata_version < state["version"]:
            response.metadata = msgpack.packb(state, use_bin_type=True)
        return response

    def leader_address(self) -> str | None:
        """gRPC address of the Raft leader, from the node table."""
        leader = self._leader()
        return None if leader is None else str(leader[1]["address"])

    def leader_id(self) -> str | None:
        leader = self._leader()
        return None if leader is None else leader[0]

    def _leader(self) -> tuple[str, dict[str, Any]] | None:
        raft_address = self.metadata.leader_raft_address()
        if raft_address:
            for node_id, node in self.metadata.state["nodes"].items():
                if node["raft_address"] == raft_address:
                    return str(node_id), node
        return None

    def silent_s(self, node_id: str) -> float:
        """Seconds since the node was last heard, as far as this controller knows."""
        since = self._last_seen_s.get(node_id, self._leading_since_s or time.monotonic())
        return max(0.0, time.monotonic() - since)

    # ---- failure detection ----

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)   # periodic tick, not a wait for a state
            if not self.metadata.is_leader():
                self._leading_since_s = None
                continue
            if self._leading_since_s is None:
                self._leading_since_s = time.monotonic()
                self._last_seen_s.clear()
                logger.info("controller started on %s", self.config.node_id)
            try:
                await self._detect()
            except NodeError as exc:
                logger.info("failure detection round incomplete: %s", exc)

    async def _detect(self) -> None:
        state = self.metadata.state
        for node_id, node in state["nodes"].items():
            if node_id == self.config.node_id:
                continue
            silent_s = self.silent_s(node_id)
            if node["state"] == "alive" and silent_s > self.config.node_dead_after_s:
                logger.warning("node %s declared dead (silent for %.1f s)", node_id, silent_s)
                await self._propose(commands.set_node_state(node_id, "dead"))
            elif node["state"] == "dead" and silent_s < self.config.node_suspect_after_s:
                logger.info("node %s is back", node_id)
                await self._propose(commands.set_node_state(node_id, "alive"))
        state = self.metadata.state
        for node_id, node in state["nodes"].items():
            if node["state"] == "dead":
                await self._move_shards(state, node_id)

    async def _move_shards(self, state: dict[str, Any], dead: str) -> None:
        for name, dataset in state["datasets"].items():
            for index, shard in enumerate(dataset["shard_map"]):
                if dead not in shard["replicas"]:
                    continue
                if shard["primary"] != dead:
                    await self._propose(commands.remove_replica(name, index, dead, shard["epoch"]))
                    continue
                candidate = self._best_backup(state, name, index, shard, dead)
                if candidate is None:
                    if (name, index, dead) not in self._reported_unavailable:
                        self._reported_unavailable.add((name, index, dead))
                        logger.error("shard %s/%d unavailable: primary %s dead and no live in-sync backup",
                                     name, index, dead)
                    continue
                logger.warning("shard %s/%d: promoting %s (primary %s dead)", name, index, candidate, dead)
                await self._propose(commands.promote(name, index, candidate, shard["epoch"]))

    def _best_backup(self, state: dict[str, Any], name: str, index: int, shard: dict[str, Any],
                     dead: str) -> str | None:
        live = [r for r in shard["replicas"]
                if r != dead and state["nodes"].get(r, {}).get("state") == "alive"
                and self.silent_s(r) < self.config.node_suspect_after_s]
        if not live:
            return None
        best: str = max(live, key=lambda r: (self._reported_seq.get(r, {}).get((name, index), -1), r))
        return best

    async def _propose(self, command: bytes) -> None:
        result = await self.context.propose(command, deadline_s=3.0)
        if not result.get("ok"):
            logger.info("controller command rejected: %s", result.get("message"))
