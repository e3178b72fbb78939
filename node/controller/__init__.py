"""The controller: runs on whichever node is the Raft leader.

One round every `heartbeat_interval_s`; each round asks the planners in this package
what to change and proposes at most `controller_proposals_per_tick_max` commands, so one
round never floods the Raft log (a mass failure is handled over several rounds):

- `leases`            heartbeats in, leases out; who was heard when, what they reported
- `failure_detector`  declares silent nodes dead and returning nodes alive
- `shard_moves`       moves the shards of dead nodes: promotes the best in-sync backup of
                      a lost primary, fences a dead backup out of the in-sync set

- `jobs`              re-runs tasks of compute jobs lost with their node, adds speculative
                      copies of stragglers, fails jobs whose shard has no replica left
- `repair`            re-replication: adds learners to shards short of copies (at most
                      `repair_transfers_per_node_max` per node; preferring a node whose
                      heartbeat reports a replica of the shard), drops learners that will
                      never join; the shard's primary fills them (issue 18)

The planners run in that order, each on the view left by the proposals before it, and
share the round's budget: repair comes last, so copying never delays failover or jobs.
Rebalancing and draining are to come, in `repair` too.

Planners are pure over (MetadataView, the lease table's soft state, now); this module
owns the loop, the leadership transitions and the proposals.

Acting only on what is still true (issue 15). A node woken from a pause (SIGSTOP, a VM
freeze, a blocked event loop) may still call itself Raft leader for a moment, with a view
in which everybody has been silent for the whole pause. So:
- Control is taken, not assumed: on gaining Raft leadership in term T the node proposes
  `become_controller(self, T)` and decides nothing until that is committed. Every
  decision (set_node_state, promote, remove_replica) carries T, and the state machine
  refuses it (STALE_CONTROLLER) once a later term took control: a deposed controller's
  proposals that pysyncobj forwards to the new leader are refused there.
- Taking control starts a fresh view: every node counts as just heard (`start_leading`),
  so nobody is declared dead before a lease granted by the previous controller expired,
  and the controller declares itself alive if the metadata says otherwise.
- A pulse task notes every `heartbeat_interval_s / 2` that the event loop runs. Every
  decision point (a round, each proposal, each lease granted) first checks the pulse: a
  gap above `node_suspect_after_s` means this process did not run for a while (its view
  is stale, its heartbeats unread), and the node gives up control. It takes control
  again from the top (become_controller: refused if a newer controller exists; a fresh
  view otherwise) before any decision, and grants no lease until then.
- Leases are granted only while in control (term committed, Raft leader in that term, no
  stall since), counted by the node from when it sent the heartbeat.

Why a primary with a valid lease is never replaced: a promotion happens only for a primary
that is dead in the metadata *and* that this controller itself has not heard for more
than `node_dead_after_s`, counted from when it took control at the earliest
(`shard_moves`). A lease this controller granted lasts `lease_s` < `node_dead_after_s` from
a heartbeat sent before it was heard. A lease an earlier controller granted was granted
while that one was in control: before its pause (a stalled controller grants nothing until
it takes control again, which a newer term refuses), or before it noticed a lost quorum,
at most `leader_fallback_timeout_s` after this controller's election; config validation
keeps `node_dead_after_s` > `lease_s` + `leader_fallback_timeout_s` + margin.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from shoal.client.wire.pb import peer_pb2
from shoal.node.controller.failure_detector import plan_node_states
from shoal.node.controller.jobs import JobPlanner
from shoal.node.controller.leases import LeaseTable
from shoal.node.controller.repair import plan_repairs
from shoal.node.controller.shard_moves import ShardMoves
from shoal.node.errors import NodeError
from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import NodeView
    from shoal.node.replication.context import ReplicationContext

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerStatistics:
    term: int | None          # the term this node controls in (its committed become_controller); None = not
    takeovers: int            # become_controller committed for this node
    stalls: int               # pulse gaps above node_suspect_after_s (process paused, loop blocked)
    refused: int              # become_controller or decisions refused as STALE_CONTROLLER


class Controller:
    def __init__(self, config: NodeConfig, context: ReplicationContext) -> None:
        self.config = config
        self.context = context
        self.metadata = context.metadata
        self.leases = LeaseTable(config, self.metadata)
        self.moves = ShardMoves(config)
        self.jobs = JobPlanner(config)
        self._term: int | None = None          # set once our become_controller is committed
        self._pulse_s = time.monotonic()       # when the event loop was last seen running
        self._takeovers = 0
        self._stalls = 0
        self._refused = 0

    def statistics(self) -> ControllerStatistics:
        return ControllerStatistics(self._term, self._takeovers, self._stalls, self._refused)

    # ---- heartbeats (called by the Peer service, or directly for this node) ----

    def heartbeat(self, request: peer_pb2.HeartbeatRequest) -> peer_pb2.HeartbeatResponse:
        if not self.in_control():
            return peer_pb2.HeartbeatResponse(lease_granted=False, controller_address=self.leader_address() or "")
        return self.leases.heartbeat(request, leader_address=self.leader_address())

    def silence(self) -> dict[str, float]:
        """Seconds since this controller last heard each other node; {} when not in control
        (a follower's silence table says nothing about the nodes)."""
        if not self.in_control():
            return {}
        now_s = time.monotonic()
        return {node_id: self.leases.silent_s(node_id, now_s) for node_id in self.metadata.view.nodes
                if node_id != self.config.node_id}

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

    # ---- control: taken in a term, dropped on a stall or a lost leadership ----

    def in_control(self) -> bool:
        """This node may decide and grant leases now: its term is committed, it still leads
        Raft in that term, and its event loop has not stalled since it took control."""
        self._check_pulse()
        return self._term is not None and self.metadata.leader_term() == self._term

    def _check_pulse(self) -> bool:
        """Note that the event loop runs now; after a gap past node_suspect_after_s give up
        control (the view is stale). True if there was such a gap."""
        now_s = time.monotonic()
        gap_s, self._pulse_s = now_s - self._pulse_s, now_s
        if gap_s <= self.config.node_suspect_after_s:
            return False
        self._stalls += 1
        level = logging.WARNING if self._term is not None else logging.INFO
        logger.log(level, "event loop of %s stalled for %.1f s (process paused?): controller view is stale",
                   self.config.node_id, gap_s)
        self._give_up("stalled")
        return True

    def _give_up(self, reason: str) -> None:
        if self._term is not None:
            logger.warning("controller %s gives up control of term %d (%s)", self.config.node_id, self._term, reason)
            self._term = None

    async def _take_control(self, term: int) -> bool:
        """become_controller(self, term), committed before anything is decided; then a fresh view."""
        self._give_up(f"raft term is now {term}")
        result = await self.context.propose(commands.become_controller(self.config.node_id, term),
                                            deadline_s=self.config.controller_propose_timeout_s)
        if not result.get("ok"):
            if result.get("error") == commands.STALE_CONTROLLER:
                self._refused += 1
            logger.warning("controller %s not taking control in term %d: %s", self.config.node_id, term,
                           result.get("message"))
            return False
        if self._check_pulse() or self.metadata.leader_term() != term:
            return False   # paused or deposed while taking control: start over next round
        self.leases.start_leading(time.monotonic())
        self._term = term
        self._takeovers += 1
        logger.info("controller started on %s (term %d)", self.config.node_id, term)
        return True

    # ---- the loop ----

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pulse())
            group.create_task(self._rounds())

    async def _pulse(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s / 2)   # periodic, not a wait for a state
            self._check_pulse()

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)   # periodic tick, not a wait for a state
            try:
                await self.round()
            except NodeError as exc:
                logger.info("controller tick incomplete: %s", exc)

    async def round(self) -> None:
        """Take control if this node newly leads Raft, then decide (tick) if in control."""
        self._check_pulse()
        term = self.metadata.leader_term()
        if term is None:
            self._give_up("no longer the raft leader")
            return
        if term != self._term and not await self._take_control(term):
            return
        await self.tick()

    async def tick(self) -> None:
        """One round of decisions, at most controller_proposals_per_tick_max proposals."""
        term = self._term
        if term is None:
            return
        budget = self.config.controller_proposals_per_tick_max
        planned = plan_node_states(self.config, self.metadata.view, self.leases, time.monotonic(),
                                   controller_term=term)
        for command in planned[:budget]:
            if not await self._propose(command, term):
                return
            budget -= 1
        if budget <= 0:
            return
        for command in self.moves.plan(self.metadata.view, self.leases, time.monotonic(),
                                       controller_term=term)[:budget]:
            if not await self._propose(command, term):
                return
            budget -= 1
        # jobs plans even with no budget left: it notes when it first saw each attempt (straggler timing)
        for command in self.jobs.plan(self.metadata.view, time.monotonic(), controller_term=term)[:max(budget, 0)]:
            if not await self._propose(command, term):
                return
            budget -= 1
        if budget <= 0:
            return
        for command in plan_repairs(self.metadata.view, term, self.config.repair_transfers_per_node_max,
                                    self.leases)[:budget]:
            if not await self._propose(command, term):
                return

    async def _propose(self, command: bytes, term: int) -> bool:
        """Propose one decision of `term`; False when this node is not (or no longer) in control."""
        if not self.in_control() or self._term != term:
            return False
        result = await self.context.propose(command, deadline_s=self.config.controller_propose_timeout_s)
        if result.get("ok"):
            return True
        if result.get("error") == commands.STALE_CONTROLLER:
            self._refused += 1
            self._give_up(f"decision refused: {result.get('message')}")
            return False
        logger.info("controller command rejected: %s", result.get("message"))
        return True
