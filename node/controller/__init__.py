"""The controller: runs on whichever node is the Raft leader.

One tick every `heartbeat_interval_s`; each tick asks the planners in this package what
to change and proposes at most `controller_proposals_per_tick_max` commands, so one
tick never floods the Raft log (a mass failure is handled over several ticks):

- `leases`            heartbeats in, leases out; who was heard when, what they reported
- `failure_detector`  declares silent nodes dead and returning nodes alive
- `shard_moves`       moves the shards of dead nodes: promotes the best in-sync backup of
                      a lost primary, fences a dead backup out of the in-sync set

Repair (re-replication, rebalancing, draining: `repair.py`) and job scheduling
(`jobs.py`) are the next planners here, on the same tick and budget.

Planners are pure over (MetadataView, the lease table's soft state, now); this module
owns the loop, the leadership transitions and the proposals. The soft state is rebuilt
by a new leader, which treats every node as just seen: it never declares a node dead
before that node's last lease (granted by the previous leader) has expired.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from shoal.node.controller.failure_detector import plan_node_states
from shoal.node.controller.leases import LeaseTable
from shoal.node.controller.shard_moves import ShardMoves
from shoal.node.errors import NodeError

if TYPE_CHECKING:
    from shoal.client.wire.pb import peer_pb2
    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import NodeView
    from shoal.node.replication.context import ReplicationContext

logger = logging.getLogger(__name__)


class Controller:
    def __init__(self, config: NodeConfig, context: ReplicationContext) -> None:
        self.config = config
        self.context = context
        self.metadata = context.metadata
        self.leases = LeaseTable(config, self.metadata)
        self.moves = ShardMoves(config)
        self._leading_since_s: float | None = None

    # ---- heartbeats (called by the Peer service, or directly for this node) ----

    def heartbeat(self, request: peer_pb2.HeartbeatRequest) -> peer_pb2.HeartbeatResponse:
        return self.leases.heartbeat(request, leader_address=self.leader_address())

    def leader(self) -> NodeView | None:
        """The node that leads Raft (the controller), from the node table."""
        return self.metadata.view.node_by_raft_address(self.metadata.leader_raft_address() or "")

    def leader_address(self) -> str | None:
        """gRPC address of the Raft leader."""
        leader = self.leader()
        return None if leader is None else leader.address

    def leader_id(self) -> str | None:
        leader = self.leader()
        return None if leader is None else leader.id

    # ---- the tick ----

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)   # periodic tick, not a wait for a state
            if not self.metadata.is_leader():
                self._leading_since_s = None
                continue
            if self._leading_since_s is None:
                self._leading_since_s = time.monotonic()
                self.leases.start_leading(self._leading_since_s)
                logger.info("controller started on %s", self.config.node_id)
            try:
                await self.tick()
            except NodeError as exc:
                logger.info("controller tick incomplete: %s", exc)

    async def tick(self) -> None:
        """One round of decisions, at most controller_proposals_per_tick_max proposals."""
        budget = self.config.controller_proposals_per_tick_max
        now_s = time.monotonic()
        for command in plan_node_states(self.config, self.metadata.view, self.leases, now_s)[:budget]:
            await self._propose(command)
            budget -= 1
        if budget > 0:
            for command in self.moves.plan(self.metadata.view, self.leases, now_s)[:budget]:
                await self._propose(command)

    async def _propose(self, command: bytes) -> None:
        result = await self.context.propose(command, deadline_s=self.config.controller_propose_timeout_s)
        if not result.get("ok"):
            logger.info("controller command rejected: %s", result.get("message"))
