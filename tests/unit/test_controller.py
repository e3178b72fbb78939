"""Controller planners, the tick's budget and control by term, over real FSM states (pure: no Raft, no network)."""
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
    """Just enough of a MetadataStore: a state, a view of it, and leadership in a term (None = follower)."""

    def __init__(self, state: dict[str, Any], term: int | None = 1) -> None:
        self.state = state
        self.term = term

    @property
    def view(self) -> MetadataView:
        return MetadataView.from_state(self.state)

    @property
    def version(self) -> int:
        return int(self.state["version"])

    def is_leader(self) -> bool:
        return self.term is not None

    def leader_term(self) -> int | None:
        return self.term

    def leader_raft_address(self) -> str | None:
        return "h:7501" if self.term is not None else None


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


def _heard(leases: LeaseTable, node_ids: list[str], seqs: dict[str, int],
           incarnations: dict[str, str] | None = None) -> None:
    dataset_id = leases.metadata.view.datasets["ds"].id
    for node_id in node_ids:
        leases.heartbeat(peer_pb2.HeartbeatRequest(node_id=node_id, shards=[
            peer_pb2.ShardHeartbeat(dataset="ds", dataset_id=dataset_id, shard=i, seq=seqs.get(node_id, 0),
                                    incarnation=(incarnations or {}).get(node_id, f"inc-{node_id}"))
            for i in range(8)]), leader_address=None)


def test_controller_declares_a_silent_node_dead_and_moves_its_shards_to_the_most_complete_backup() -> None:
    """n3 is silent past node_dead_after_s: declared dead; its primaries go to the backup that reported the highest seq."""
    metadata = FakeMetadata(_state(nodes=3, shards=6))
    leases = LeaseTable(CONFIG, metadata)   # type: ignore[arg-type]
    leases.start_leading(time.monotonic() - CONFIG.node_dead_after_s * 10)   # long after any old lease
    _heard(leases, ["n1", "n2"], {"n1": 5, "n2": 9})   # n1 and n2 are heard now; n3 is not
    now_s = time.monotonic()
    planned = [commands.decode_command(c) for c in plan_node_states(CONFIG, metadata.view, leases, now_s,
                                                                    controller_term=0)]
    assert [(c["op"], c["node_id"], c["state"]) for c in planned] == [("set_node_state", "n3", "dead")]
    for command in plan_node_states(CONFIG, metadata.view, leases, now_s, controller_term=0):
        metadata.state, _ = fsm.apply(metadata.state, command)
    moves = [commands.decode_command(c) for c in ShardMoves(CONFIG).plan(metadata.view, leases, now_s,
                                                                         controller_term=0)]
    lost_primaries = [s for s in metadata.view.shards() if s.primary == "n3"]
    assert lost_primaries and {c["new_primary"] for c in moves if c["op"] == "promote"} == {"n2"}
    assert len([c for c in moves if c["op"] == "promote"]) == len(lost_primaries)
    assert all(c["node_id"] == "n3" for c in moves if c["op"] == "remove_replica")


def test_controller_declares_a_silent_draining_node_dead() -> None:
    """Found by hand: a draining node that died stayed draining for good, so `node remove` said
    "wait for the drain" forever and its copies were never rebuilt. Silent past node_dead_after_s,
    a draining node is declared dead like an alive one."""
    metadata = FakeMetadata(_state(nodes=4, shards=2))
    metadata.state, result = fsm.apply(metadata.state, commands.drain_node("n4"))
    assert result["ok"] and metadata.view.nodes["n4"].state == "draining", result
    leases = LeaseTable(CONFIG, metadata)   # type: ignore[arg-type]
    leases.start_leading(time.monotonic() - CONFIG.node_dead_after_s * 10)
    _heard(leases, ["n1", "n2", "n3"], {})
    planned = [commands.decode_command(c) for c in plan_node_states(CONFIG, metadata.view, leases, time.monotonic(),
                                                                    controller_term=0)]
    assert [(c["node_id"], c["state"]) for c in planned] == [("n4", "dead")]
    _heard(leases, ["n4"], {})      # heard while draining: nothing to declare
    metadata.state, _ = fsm.apply(metadata.state, commands.drain_node("n3"))
    assert plan_node_states(CONFIG, metadata.view, leases, time.monotonic(), controller_term=0) == []


def test_controller_gives_a_node_that_registers_later_its_own_dead_timeout() -> None:
    """A node that registers (new, or again after it was declared dead) after the controller
    took control is not declared dead before node_dead_after_s from its registration, even
    though its first heartbeat has not come yet; silent past that, it is."""
    dead_s = CONFIG.node_dead_after_s
    metadata = FakeMetadata(_state(nodes=3, shards=2))
    metadata.state, _ = fsm.apply(metadata.state, commands.set_node_state("n3", "dead"))
    leases = LeaseTable(CONFIG, metadata)   # type: ignore[arg-type]
    now_s = time.monotonic()
    leases.start_leading(now_s - dead_s * 10)    # long ago: n3's old lease is over
    _heard(leases, ["n1", "n2"], {})

    def declared(at_s: float) -> set[str]:
        return {commands.decode_command(c)["node_id"]
                for c in plan_node_states(CONFIG, metadata.view, leases, at_s, controller_term=0)}
    assert declared(now_s) == set()
    metadata.state, _ = fsm.apply(metadata.state, commands.register_node("n4", "h:7404", "", ""))
    metadata.state, _ = fsm.apply(metadata.state, commands.register_node("n3", "h:7403", "", "h:7503"))
    registered_s = now_s + dead_s * 0.1
    assert declared(registered_s) == set()
    assert not declared(registered_s + dead_s * 0.9) & {"n3", "n4"}
    assert declared(registered_s + dead_s * 1.5) >= {"n3", "n4"}


def test_controller_tick_proposes_at_most_its_budget() -> None:
    """A mass failure is handled over several ticks: each proposes at most controller_proposals_per_tick_max."""
    config = dataclasses.replace(CONFIG, controller_proposals_per_tick_max=3)
    context = FakeContext(FakeMetadata(_state(nodes=5, shards=8)))
    controller = Controller(config, context)   # type: ignore[arg-type]
    asyncio.run(controller.round())             # takes control (term 1), then nobody is silent yet
    assert [c["op"] for c in context.proposed] == ["become_controller"]
    context.proposed.clear()
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


# ---- control by term (issue 15: a controller woken from a pause acts only on what is still true) ----

def _in_control(nodes: int = 3, shards: int = 4, term: int = 1) -> tuple[Controller, FakeContext]:
    context = FakeContext(FakeMetadata(_state(nodes=nodes, shards=shards), term=term))
    controller = Controller(CONFIG, context)   # type: ignore[arg-type]
    asyncio.run(controller.round())
    assert controller.statistics().term == term
    return controller, context


def _ops(context: FakeContext) -> list[tuple[str, ...]]:
    return [(c["op"], c.get("node_id", c.get("new_primary", "")), c.get("state", "")) for c in context.proposed]


def test_controller_takes_control_in_its_term_before_deciding_and_fences_decisions_with_it() -> None:
    """The first round proposes become_controller(self, term) and nothing else; later decisions carry that term.

    Method: a leader in Raft term 7 runs one round on a fresh 3-node state; then n3 goes
    silent past the dead timeout; its set_node_state carries controller_term 7 and applies.
    """
    controller, context = _in_control(term=7)
    assert context.proposed == [{"v": 1, "op": "become_controller", "request_id": context.proposed[0]["request_id"],
                                 "node_id": "n1", "term": 7}]
    assert fsm.controller_of(context.metadata.state) == {"node_id": "n1", "term": 7}
    context.proposed.clear()
    controller.leases.start_leading(time.monotonic() - CONFIG.node_dead_after_s * 2)
    _heard(controller.leases, ["n1", "n2"], {})
    asyncio.run(controller.round())
    dead = [c for c in context.proposed if c["op"] == "set_node_state"]
    assert [(c["node_id"], c["state"], c["controller_term"]) for c in dead] == [("n3", "dead", 7)]
    assert context.metadata.view.node("n3").state == "dead"   # type: ignore[union-attr]
    assert all(c["controller_term"] == 7 for c in context.proposed)


def test_controller_does_not_decide_while_become_controller_is_refused() -> None:
    """A leader whose term is older than the recorded controller's decides nothing and grants no lease.

    Method: the state records n2 as controller in term 5 (a newer leader); n1 still believes
    it leads in term 4 (pysyncobj has not stepped it down yet) and everyone looks silent.
    """
    context = FakeContext(FakeMetadata(_state(nodes=3, shards=4), term=4))
    context.metadata.state, result = fsm.apply(context.metadata.state, commands.become_controller("n2", 5))
    assert result["ok"]
    controller = Controller(CONFIG, context)   # type: ignore[arg-type]
    controller.leases.start_leading(time.monotonic() - CONFIG.node_dead_after_s * 10)
    asyncio.run(controller.round())
    assert [c["op"] for c in context.proposed] == ["become_controller"]
    assert controller.statistics().term is None and controller.statistics().refused == 1
    response = controller.heartbeat(peer_pb2.HeartbeatRequest(node_id="n2"))
    assert not response.lease_granted
    assert all(n.state == "alive" for n in context.metadata.view.nodes.values())


def test_controller_woken_from_a_pause_drops_its_view_and_takes_control_again() -> None:
    """A stall past node_suspect_after_s: no decision on the stale view; control is re-taken with a fresh view.

    Method: n1 controls term 1 and last heard n2 and n3 12 s ago (its view during a 12 s
    SIGSTOP); the event loop's pulse shows the 12 s gap. The next round must not declare
    anyone dead: it gives up control, re-proposes become_controller (the same term: no
    newer leader) and counts everybody as just seen. No lease is granted during the stall.
    """
    controller, context = _in_control()
    context.proposed.clear()
    controller.leases.start_leading(time.monotonic() - 12.0)   # the view a paused controller wakes with
    controller._pulse_s -= 12.0                                # the pause, as the pulse sees it
    assert not controller.heartbeat(peer_pb2.HeartbeatRequest(node_id="n2")).lease_granted
    asyncio.run(controller.round())
    assert [c["op"] for c in context.proposed] == ["become_controller"]
    stats = controller.statistics()
    assert stats.stalls == 1 and stats.term == 1 and stats.takeovers == 2
    assert all(n.state == "alive" for n in context.metadata.view.nodes.values())
    assert controller.heartbeat(peer_pb2.HeartbeatRequest(node_id="n2")).lease_granted


def test_controller_woken_after_a_newer_controller_took_over_decides_nothing() -> None:
    """The issue's case: a newer controller exists; the woken one's stale decisions are refused or never made.

    Method: n1 controls term 1 with a view in which n2 and n3 are silent for 12 s; then n2
    takes control in term 2 (committed while n1 was stopped). (a) Without a stall seen (the
    pause hit between planning and proposing), n1's first decision is refused
    STALE_CONTROLLER and it proposes nothing more; (b) with the stall seen it re-proposes
    become_controller, which is refused. Either way nobody is declared dead, no shard moves.
    """
    for stall_seen in (False, True):
        controller, context = _in_control()
        controller.leases.start_leading(time.monotonic() - 12.0)
        if stall_seen:
            controller._pulse_s -= 12.0
        context.metadata.state, _ = fsm.apply(context.metadata.state, commands.become_controller("n2", 2))
        before = context.metadata.state["datasets"]
        context.proposed.clear()
        asyncio.run(controller.round())
        assert len(context.proposed) == 1, context.proposed
        assert context.proposed[0]["op"] == ("become_controller" if stall_seen else "set_node_state")
        assert controller.statistics().term is None and controller.statistics().refused == 1
        assert all(n.state == "alive" for n in context.metadata.view.nodes.values())
        assert context.metadata.state["datasets"] is before


def test_controller_declares_itself_alive_when_the_metadata_says_dead() -> None:
    """A controller that takes over while the metadata calls it dead (a stale decision) declares itself alive first.

    Method: n1 is dead in the state; it takes control; the same round's first decision is
    set_node_state(n1, alive) with its term; it never plans moves off itself.
    """
    context = FakeContext(FakeMetadata(_state(nodes=3, shards=4), term=3))
    context.metadata.state, _ = fsm.apply(context.metadata.state, commands.set_node_state("n1", "dead"))
    controller = Controller(CONFIG, context)   # type: ignore[arg-type]
    asyncio.run(controller.round())
    assert _ops(context)[:2] == [("become_controller", "n1", ""), ("set_node_state", "n1", "alive")]
    assert context.proposed[1]["controller_term"] == 3
    assert context.metadata.view.node("n1").state == "alive"   # type: ignore[union-attr]
    assert not any(c["op"] in ("promote", "remove_replica") for c in context.proposed)


def test_controller_new_leader_moves_no_shard_before_its_own_dead_timeout() -> None:
    """Nodes dead in the metadata keep their shards until the *new* controller saw them silent past node_dead_after_s.

    Method: n2 and n3 are dead in the state (declared by an earlier controller); n1 takes
    control (fresh view: everybody just seen). No promote/remove_replica is planned, and
    they are not declared back either (not heard). Once n2 heartbeats it is declared
    alive; only n3, still silent past the dead timeout here, loses its replicas.
    """
    context = FakeContext(FakeMetadata(_state(nodes=3, shards=4), term=2))
    for node_id in ("n2", "n3"):
        context.metadata.state, _ = fsm.apply(context.metadata.state, commands.set_node_state(node_id, "dead"))
    controller = Controller(CONFIG, context)   # type: ignore[arg-type]
    asyncio.run(controller.round())
    assert _ops(context) == [("become_controller", "n1", "")]
    leases, now_s = controller.leases, time.monotonic()
    assert controller.moves.plan(context.metadata.view, leases, now_s, controller_term=2) == []
    assert plan_node_states(CONFIG, context.metadata.view, leases, now_s, controller_term=2) == []
    leases.start_leading(now_s - CONFIG.node_dead_after_s * 2)
    _heard(leases, ["n1", "n2"], {"n1": 3, "n2": 5})
    context.proposed.clear()
    asyncio.run(controller.tick())
    assert ("set_node_state", "n2", "alive") in _ops(context)
    assert all(c["controller_term"] == 2 for c in context.proposed)
    view = context.metadata.view
    assert all(not s.in_sync("n3") for s in view.shards()) and all(s.in_sync("n2") for s in view.shards())


def test_controller_promotes_only_over_a_primary_silent_here_past_the_dead_timeout() -> None:
    """A primary dead in the metadata but heard by this controller recently is not replaced (its lease may be valid).

    Method: n3 is dead in the state; the controller heard n3 2 s ago: no promote of its
    primaries; with n3 silent here past node_dead_after_s, its primaries are promoted.
    """
    metadata = FakeMetadata(_state(nodes=3, shards=6))
    metadata.state, _ = fsm.apply(metadata.state, commands.set_node_state("n3", "dead"))
    leases = LeaseTable(CONFIG, metadata)   # type: ignore[arg-type]
    leases.start_leading(time.monotonic() - 60.0)
    _heard(leases, ["n1", "n2", "n3"], {})
    moves = ShardMoves(CONFIG)
    assert moves.plan(metadata.view, leases, time.monotonic() + 1.0, controller_term=0) == []
    leases.start_leading(time.monotonic() - CONFIG.node_dead_after_s - 1)   # n3 not heard since then
    _heard(leases, ["n1", "n2"], {})
    later = [commands.decode_command(c) for c in moves.plan(metadata.view, leases, time.monotonic(),
                                                            controller_term=0)]
    assert {c["op"] for c in later} == {"promote", "remove_replica"}


def test_controller_never_promotes_a_replica_that_is_not_the_recorded_incarnation() -> None:
    """Issue 15: n2 reports the highest seq but a new incarnation (its disk was wiped and refilled
    by someone): promotion compares what each replica holds and picks n1's recorded copy."""
    metadata = FakeMetadata(_state(nodes=3, shards=1))
    view = metadata.view
    shard = view.shard("ds", 0)
    assert shard is not None
    dead = shard.primary
    n_a, n_b = shard.backups()
    for node_id in shard.replicas:
        metadata.state, _ = fsm.apply(metadata.state, commands.record_incarnations(
            node_id, [(shard.dataset_id, 0, f"inc-{node_id}")]))
    config = dataclasses.replace(CONFIG, node_id="elsewhere")   # the controller is none of the three
    leases = LeaseTable(config, metadata)   # type: ignore[arg-type]
    leases.start_leading(time.monotonic() - config.node_dead_after_s * 10)
    _heard(leases, [n_a, n_b], {n_a: 5, n_b: 99}, incarnations={n_b: "wiped-and-new"})
    metadata.state, _ = fsm.apply(metadata.state, commands.set_node_state(dead, "dead"))
    moves = [commands.decode_command(c)
             for c in ShardMoves(config).plan(metadata.view, leases, time.monotonic(), controller_term=0)]
    assert [(c["op"], c["new_primary"]) for c in moves if c["op"] == "promote"] == [("promote", n_a)]
