"""Controller planners and the tick's budget, over real FSM states (pure: no Raft, no network)."""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
from typing import Any

from shoal.client.wire.pb import peer_pb2
from shoal.node.config import NodeConfig
from shoal.node.controller import Controller
from shoal.node.controller.failure_detector import plan_node_states
from shoal.node.controller.leases import LeaseTable
from shoal.node.controller.shard_moves import ShardMoves
from shoal.node.metadata import commands, fsm
from shoal.node.metadata.view import MetadataView

CONFIG = NodeConfig(node_id="n1", data_dir=pathlib.Path("/nonexistent"))


class FakeMetadata:
    """Just enough of a MetadataStore: a state, a view of it, and leadership."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    @property
    def view(self) -> MetadataView:
        return MetadataView.from_state(self.state)

    def is_leader(self) -> bool:
        return True


@dataclasses.dataclass
class FakeContext:
    metadata: FakeMetadata
    proposed: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    async def propose(self, command: bytes, *, deadline_s: float) -> dict[str, Any]:
        self.proposed.append(commands.decode_command(command))
        self.metadata.state, result = fsm.apply(self.metadata.state, command)
        return result


def _state(nodes: int, shards: int) -> dict[str, Any]:
    state = fsm.initial_state()
    for i in range(1, nodes + 1):
        state, _ = fsm.apply(state, commands.register_node(f"n{i}", f"h:{7400 + i}", "", f"h:{7500 + i}"))
    state, result = fsm.apply(state, commands.create_dataset("ds", shards, 3))
    assert result["ok"]
    return state


def _heard(leases: LeaseTable, node_ids: list[str], seqs: dict[str, int]) -> None:
    for node_id in node_ids:
        leases.heartbeat(peer_pb2.HeartbeatRequest(node_id=node_id, shards=[
            peer_pb2.ShardHeartbeat(dataset="ds", shard=i, seq=seqs.get(node_id, 0)) for i in range(8)]),
            leader_address=None)


def test_controller_declares_a_silent_node_dead_and_moves_its_shards_to_the_most_complete_backup() -> None:
    """n3 is silent past node_dead_after_s: declared dead; its primaries go to the backup that reported the highest seq."""
    metadata = FakeMetadata(_state(nodes=3, shards=6))
    leases = LeaseTable(CONFIG, metadata)   # type: ignore[arg-type]
    leases.start_leading(time.monotonic() - CONFIG.node_dead_after_s * 10)   # long after any old lease
    _heard(leases, ["n1", "n2"], {"n1": 5, "n2": 9})   # n1 and n2 are heard now; n3 is not
    now_s = time.monotonic()
    planned = [commands.decode_command(c) for c in plan_node_states(CONFIG, metadata.view, leases, now_s)]
    assert [(c["op"], c["node_id"], c["state"]) for c in planned] == [("set_node_state", "n3", "dead")]
    for command in plan_node_states(CONFIG, metadata.view, leases, now_s):
        metadata.state, _ = fsm.apply(metadata.state, command)
    moves = [commands.decode_command(c) for c in ShardMoves(CONFIG).plan(metadata.view, leases, now_s)]
    lost_primaries = [s for s in metadata.view.shards() if s.primary == "n3"]
    assert lost_primaries and {c["new_primary"] for c in moves if c["op"] == "promote"} == {"n2"}
    assert len([c for c in moves if c["op"] == "promote"]) == len(lost_primaries)
    assert all(c["node_id"] == "n3" for c in moves if c["op"] == "remove_replica")


def test_controller_tick_proposes_at_most_its_budget() -> None:
    """A mass failure is handled over several ticks: each proposes at most controller_proposals_per_tick_max."""
    config = dataclasses.replace(CONFIG, controller_proposals_per_tick_max=3)
    context = FakeContext(FakeMetadata(_state(nodes=5, shards=8)))
    controller = Controller(config, context)   # type: ignore[arg-type]
    controller.leases.start_leading(time.monotonic() - config.node_dead_after_s * 10)   # nobody heard for long
    asyncio.run(controller.tick())
    assert len(context.proposed) == 3
    assert all(c["op"] == "set_node_state" for c in context.proposed)
    for _ in range(20):
        before = len(context.proposed)
        asyncio.run(controller.tick())
        assert len(context.proposed) - before <= 3
    view = context.metadata.view
    assert all(n.state == "dead" for n in view.nodes.values() if n.id != "n1")
