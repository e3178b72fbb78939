"""The re-replication planner (issue 18, controller/repair.py) over real FSM states, and its place in the
controller's tick. Pure: no Raft, no network; planned commands are applied with fsm.apply to check they hold.
"""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
from typing import Any

import pytest

from shoal.node.config import NodeConfig, load_config
from shoal.node.controller import Controller
from shoal.node.controller.repair import plan_repairs
from shoal.node.errors import ConfigError
from shoal.node.metadata import commands, fsm
from shoal.node.metadata.view import MetadataView
from test_controller import FakeContext

TERM = 3


def run(state: dict[str, Any], *cmds: bytes) -> dict[str, Any]:
    """Apply commands in order; each must apply."""
    for cmd in cmds:
        state, result = fsm.apply(state, cmd)
        assert result["ok"], (commands.decode_command(cmd), result)
    return state


def cluster(zones: dict[str, str], shard_map: list[list[str]], replication: int = 3,
            learners: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """Nodes {id: zone} alive, controller n1 in term TERM, dataset "ds" with exactly `shard_map`
    (replicas, primary first) and `learners` {shard: nodes}: placement is bypassed to pin the layout."""
    state = run(fsm.initial_state(), *(commands.register_node(n, f"h:{i}", zone, f"r:{i}")
                                       for i, (n, zone) in enumerate(zones.items())),
                commands.create_dataset("ds", len(shard_map), replication), commands.become_controller("n1", TERM))
    dataset = state["datasets"]["ds"]
    entries = [{"epoch": 1, "primary": replicas[0], "replicas": list(replicas),
                "learners": list((learners or {}).get(i, [])), "incarnations": {}}
               for i, replicas in enumerate(shard_map)]
    return {**state, "datasets": {"ds": {**dataset, "shard_map": entries}}}


def dead(state: dict[str, Any], *node_ids: str) -> dict[str, Any]:
    return run(state, *(commands.set_node_state(n, "dead", controller_term=TERM) for n in node_ids))


def plan(state: dict[str, Any], transfers_per_node_max: int = 2) -> list[dict[str, Any]]:
    return [commands.decode_command(c)
            for c in plan_repairs(MetadataView.from_state(state), TERM, transfers_per_node_max)]


def apply_plan(state: dict[str, Any], transfers_per_node_max: int = 2) -> dict[str, Any]:
    return run(state, *plan_repairs(MetadataView.from_state(state), TERM, transfers_per_node_max))


def learners(state: dict[str, Any]) -> list[list[str]]:
    return [e["learners"] for e in state["datasets"]["ds"]["shard_map"]]


# every 3-of-4 layout twice, primaries rotating: n4 is a backup of 4 shards and the primary of 2
FOUR = {"n1": "", "n2": "", "n3": "", "n4": ""}
LAYOUT = [["n1", "n2", "n3"], ["n2", "n3", "n4"], ["n3", "n4", "n1"], ["n4", "n1", "n2"],
          ["n1", "n2", "n4"], ["n2", "n1", "n4"], ["n3", "n1", "n4"], ["n1", "n3", "n2"]]


def test_repair_one_dead_node_of_four_gets_one_learner_per_shard_on_the_fourth_node_up_to_the_cap() -> None:
    """R=3 on 4 nodes, n4 dead: every shard n4 was a backup of (primary alive) gets exactly one learner, on the
    one node not holding it, each node taking at most transfers_per_node_max; shards n4 led wait; nothing else.

    Method: plan, check, apply through the FSM; plan again (a new controller sees the same learners: no more);
    join the learners; plan again: the shards left over get theirs.
    """
    state = dead(cluster(FOUR, LAYOUT), "n4")
    affected = {i: next(n for n in FOUR if n not in replicas)
                for i, replicas in enumerate(LAYOUT) if "n4" in replicas[1:]}
    assert affected == {1: "n1", 2: "n2", 4: "n3", 5: "n3", 6: "n2"}
    planned = plan(state, transfers_per_node_max=1)
    assert all(c["op"] == "add_learner" and c["controller_term"] == TERM and c["expected_epoch"] == 1
               for c in planned)
    assert [(c["shard"], c["node_id"]) for c in planned] == [(1, "n1"), (2, "n2"), (4, "n3")]   # n2, n3 at cap 1
    state = apply_plan(state, transfers_per_node_max=1)
    assert plan(state, transfers_per_node_max=1) == []
    for index, node_id in [(1, "n1"), (2, "n2"), (4, "n3")]:
        state = run(state, commands.join_in_sync("ds", index, node_id, 1, f"inc-{node_id}"))
    assert [(c["shard"], c["node_id"]) for c in plan(state, transfers_per_node_max=1)] == [(5, "n3"), (6, "n2")]

    with_cap_two = apply_plan(dead(cluster(FOUR, LAYOUT), "n4"), transfers_per_node_max=2)
    assert {i: ls for i, ls in enumerate(learners(with_cap_two)) if ls} == {i: [n] for i, n in affected.items()}


def test_repair_prefers_a_new_zone_then_the_least_loaded_node_then_the_node_id() -> None:
    """The shard's alive copies are in zones a and b: a node of zone c is chosen over a less loaded node of zone a;
    among new-zone nodes the fewest replicas + learners wins; equal load goes to the smaller node id."""
    zones = {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "c", "n6": "d"}
    busy = [["n1", "n2", "n3"], ["n5", "n1", "n2"], ["n5", "n2", "n1"], ["n6", "n1", "n2"]]
    state = dead(cluster(zones, busy), "n3")
    # loads: n4 0 (zone a, used), n5 2 (zone c), n6 1 (zone d): n6
    assert [(c["shard"], c["node_id"]) for c in plan(state)] == [(0, "n6")]
    even = dead(cluster(zones, [["n1", "n2", "n3"], ["n5", "n1", "n2"], ["n6", "n1", "n2"]]), "n3")
    assert [(c["shard"], c["node_id"]) for c in plan(even)] == [(0, "n5")]   # n5, n6 both 1: id order
    same_zone = dead(cluster({"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "b"},
                             [["n1", "n2", "n3"], ["n4", "n1", "n2"]]), "n3")
    assert [(c["shard"], c["node_id"]) for c in plan(same_zone)] == [(0, "n5")]   # no new zone: least loaded


def test_repair_two_missing_copies_get_two_different_nodes_and_zones() -> None:
    """Two dead backups: two learners in one round, never twice the same node, the second in yet another zone."""
    zones = {"n1": "a", "n2": "b", "n3": "c", "n4": "a", "n5": "b", "n6": "d"}
    state = dead(cluster(zones, [["n1", "n2", "n3"]]), "n2", "n3")
    planned = plan(state)
    assert [c["node_id"] for c in planned] == ["n5", "n6"]   # b is free again once n2 is dead; then d
    state = run(state, *plan_repairs(MetadataView.from_state(state), TERM, 2))
    assert learners(state) == [["n5", "n6"]] and plan(state) == []
    only_one = dead(cluster({"n1": "", "n2": "", "n3": "", "n4": ""}, [["n1", "n2", "n3"]]), "n2", "n3")
    assert [c["node_id"] for c in plan(only_one)] == ["n4"]


def test_repair_drops_a_learner_on_a_dead_node_and_chooses_another() -> None:
    """A learner whose node died is dropped (remove_replica with the controller's term, epoch unchanged) and,
    a node being free, a new learner is chosen in the same round; a suspect node's learner stays."""
    state = dead(cluster(FOUR | {"n5": ""}, [["n1", "n2", "n3"]], learners={}), "n3")
    state = run(state, commands.add_learner("ds", 0, "n4", 1, controller_term=TERM))
    state = dead(state, "n4")
    planned = plan(state)
    assert [(c["op"], c["node_id"]) for c in planned] == [("remove_replica", "n4"), ("add_learner", "n5")]
    assert planned[0]["controller_term"] == TERM and planned[0]["expected_epoch"] == 1
    state = apply_plan(state)
    entry = state["datasets"]["ds"]["shard_map"][0]
    assert entry["learners"] == ["n5"] and entry["epoch"] == 1
    suspect = run(state, commands.set_node_state("n5", "suspect", controller_term=TERM))
    assert plan(suspect) == []   # nobody free to add; the suspect learner is kept, not counted


def test_repair_waits_for_a_promotion_when_the_primary_is_dead() -> None:
    """A shard whose primary is dead gets no learner (nobody could fill it) until a backup is promoted."""
    state = dead(cluster(FOUR, [["n4", "n1", "n2"]]), "n4")
    assert plan(state) == []
    state = run(state, commands.promote("ds", 0, "n1", 1, controller_term=TERM))
    assert [(c["op"], c["node_id"], c["expected_epoch"]) for c in plan(state)] == [("add_learner", "n3", 2)]


def test_repair_plans_nothing_for_a_healthy_or_unrepairable_cluster() -> None:
    """All copies alive and loads even: nothing. A dead node and no free alive node: nothing (no
    error, no churn). All alive but uneven (7 copies on n1, 5 on n3): one rebalancing copy only."""
    even = [["n1", "n2", "n3"], ["n2", "n3", "n4"], ["n3", "n4", "n1"], ["n4", "n1", "n2"]] * 2
    assert plan(cluster(FOUR, even)) == []
    assert [(c["op"], c["node_id"]) for c in plan(cluster(FOUR, LAYOUT))] == [("add_learner", "n3")]
    assert plan(dead(cluster({"n1": "", "n2": "", "n3": ""}, [["n1", "n2", "n3"]]), "n3")) == []


# ---- the controller's tick proposes what the planner plans, after failover and within the budget ----

@dataclasses.dataclass
class FakeMetadata:
    state: dict[str, Any]
    term: int = TERM

    @property
    def view(self) -> MetadataView:
        return MetadataView.from_state(self.state)

    def leader_term(self) -> int | None:
        return self.term

    def leader_raft_address(self) -> str | None:
        return "r:0"

    def is_leader(self) -> bool:
        return True


def test_controller_tick_adds_learners_within_its_budget() -> None:
    """In control, with n4 dead in the metadata, the tick proposes add_learner commands carrying its term,
    no more than controller_proposals_per_tick_max, and they apply."""
    config = NodeConfig(node_id="n1", data_dir=pathlib.Path("/nonexistent"), controller_proposals_per_tick_max=2,
                        repair_transfers_per_node_max=2)
    context = FakeContext(FakeMetadata(dead(cluster(FOUR, LAYOUT), "n4"), term=TERM + 1))
    controller = Controller(config, context)   # type: ignore[arg-type]
    asyncio.run(controller.round())             # takes control in TERM + 1, then one tick
    ops = [(c["op"], c.get("controller_term")) for c in context.proposed]
    assert ops == [("become_controller", None), ("add_learner", TERM + 1), ("add_learner", TERM + 1)]
    assert sum(len(ls) for ls in learners(context.metadata.state)) == 2


def test_config_repair_settings_defaults_and_bounds() -> None:
    """repair_transfers_per_node_max must be positive; repair_bytes_per_s 0 means unlimited, below 0 is refused;
    both are read from SHOAL_* like every field."""
    base = NodeConfig(node_id="n1", data_dir=pathlib.Path("/nonexistent"))
    # one transfer per node: bench/RESULTS.md, "Repair with one transfer per node"
    assert (base.repair_transfers_per_node_max, base.repair_bytes_per_s) == (1, 64 * 1024 * 1024)
    assert dataclasses.replace(base, repair_bytes_per_s=0).validate().repair_bytes_per_s == 0
    for bad in ({"repair_bytes_per_s": -1}, {"repair_transfers_per_node_max": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            dataclasses.replace(base, **bad).validate()   # type: ignore[arg-type]
    config = load_config({"node_id": "n1", "data_dir": "/nonexistent"},
                         environ={"SHOAL_REPAIR_TRANSFERS_PER_NODE_MAX": "5", "SHOAL_REPAIR_BYTES_PER_S": "0"})
    assert (config.repair_transfers_per_node_max, config.repair_bytes_per_s) == (5, 0)


def test_a_draining_node_gets_its_shards_copied_then_its_backups_leave() -> None:
    """drain_node: the node's shards get learners elsewhere (its primary still fills them), and a
    draining backup leaves the in-sync set only once the shard has its factor on alive nodes;
    a draining primary is never removed by the planner (it hands off itself)."""
    zones = {"n1": "a", "n2": "a", "n3": "a", "n4": "a"}
    state = cluster(zones, [["n1", "n2", "n3"], ["n2", "n1", "n3"]])
    state = run(state, commands.drain_node("n1"))
    assert state["nodes"]["n1"]["state"] == "draining"
    assert [(c["op"], c["shard"], c["node_id"]) for c in plan(state)] == [("add_learner", 0, "n4"),
                                                                          ("add_learner", 1, "n4")]
    state = apply_plan(state)
    assert plan(state) == []                         # copies under way: nothing leaves yet
    for shard in (0, 1):
        state = run(state, commands.join_in_sync("ds", shard, "n4", 1, f"inc{shard}"))
    planned = plan(state)
    assert [(c["op"], c["shard"], c["node_id"]) for c in planned] == [("remove_replica", 1, "n1")]
    state = apply_plan(state)
    assert state["datasets"]["ds"]["shard_map"][1]["replicas"] == ["n2", "n3", "n4"]
    assert plan(state) == []                         # shard 0: n1 is its primary, it hands off itself
    assert fsm.apply(state, commands.drain_node("n1"))[1]["ok"]       # repeated: idempotent
    refused = fsm.apply(state, commands.drain_node("n9"))[1]
    assert refused["error"] == "INVALID_ARGUMENT" and "n9" in refused["message"]


def test_a_new_node_gets_shards_until_load_is_even_one_move_at_a_time() -> None:
    """n4 joins empty: one learner at a time goes to it from the busiest node's backups; after
    each join the extra copy leaves the busiest node; it stops when loads differ by < 2."""
    zones = {"n1": "a", "n2": "a", "n3": "a"}
    state = cluster(zones, [["n1", "n2", "n3"], ["n2", "n3", "n1"], ["n3", "n1", "n2"], ["n1", "n2", "n3"]])
    state = run(state, commands.register_node("n4", "h:9", "a", ""))
    moves = 0
    while planned := plan(state):
        assert len(planned) == 1, planned                      # one step at a time
        step = planned[0]
        state = apply_plan(state)
        if step["op"] == "add_learner":
            assert step["node_id"] == "n4"
            moves += 1
            entry = state["datasets"]["ds"]["shard_map"][step["shard"]]
            state = run(state, commands.join_in_sync("ds", step["shard"], "n4", entry["epoch"], "inc"))
        else:
            assert step["op"] == "remove_replica" and step["node_id"] != "n4"
        assert moves < 10
    loads: dict[str, int] = {}
    for entry in state["datasets"]["ds"]["shard_map"]:
        assert len(entry["replicas"]) == 3 and not entry["learners"]
        for node in entry["replicas"]:
            loads[node] = loads.get(node, 0) + 1
    assert max(loads.values()) - min(loads.values()) < 2 and loads["n4"] == 3, loads
