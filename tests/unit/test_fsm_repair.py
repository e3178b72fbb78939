"""Re-replication commands in the metadata state machine (issue 18): add_learner, join_in_sync, and
remove_replica / node removal dropping learners.

Driven with command sequences over real states, as test_fsm.py does; no Raft, no network.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.node.metadata import commands, fsm
from shoal.node.metadata.view import MetadataView
from test_fsm_controller import run

TERM = 4


def with_dataset(nodes: int = 4) -> dict[str, Any]:
    """n0..n{nodes-1} alive, controller n0 in term TERM, dataset "ds" (2 shards, R=3)."""
    state, results = run(fsm.initial_state(), *(
        commands.register_node(f"n{i}", f"h:{7400 + i}", "", f"h:{7500 + i}") for i in range(nodes)),
        commands.create_dataset("ds", 2, 3), commands.become_controller("n0", TERM))
    assert all(r["ok"] for r in results), results
    return state


def outsider(state: dict[str, Any], index: int = 0) -> str:
    """An alive node that holds no copy of ds/index."""
    entry = fsm.shard(state, "ds", index)
    assert entry is not None
    return next(n for n in sorted(state["nodes"]) if n not in entry["replicas"])


def entry_of(state: dict[str, Any], index: int = 0) -> dict[str, Any]:
    entry = fsm.shard(state, "ds", index)
    assert entry is not None
    return entry


def add(node_id: str, epoch: int = 1, index: int = 0, term: int = TERM) -> bytes:
    return commands.add_learner("ds", index, node_id, epoch, controller_term=term)


def test_fsm_add_learner_appends_a_learner_and_keeps_the_epoch() -> None:
    """add_learner of an alive node holding no copy: it becomes a learner; epoch, primary and in-sync set stay;
    the version moves (nodes reconcile on it) and the view answers is_learner / holds / under_replicated."""
    state = with_dataset()
    learner = outsider(state)
    before = entry_of(state)
    after, [result] = run(state, add(learner))
    assert result == {"ok": True, "epoch": 1}
    entry = entry_of(after)
    assert entry["learners"] == [learner]
    assert (entry["epoch"], entry["primary"], entry["replicas"]) == (1, before["primary"], before["replicas"])
    assert after["version"] == state["version"] + 1
    shard = MetadataView.from_state(after).shard("ds", 0)
    assert shard is not None and shard.is_learner(learner) and shard.holds(learner) and not shard.in_sync(learner)
    assert not shard.is_learner(before["primary"])


def test_fsm_add_learner_repeated_is_ok_without_change() -> None:
    """A repeat with a new request id (the first one's outcome unknown) answers ok and changes nothing."""
    state = with_dataset()
    learner = outsider(state)
    state, _ = run(state, add(learner))
    after, [again] = run(state, add(learner))
    assert again == {"ok": True, "epoch": 1}
    assert entry_of(after)["learners"] == [learner] and after["version"] == state["version"]


def test_fsm_add_learner_refusals_change_nothing() -> None:
    """Stale epoch (STALE_EPOCH with the current epoch), an in-sync replica, a dead / draining / unknown node,
    a deposed controller's term, an unknown dataset or shard: all refused, state unchanged."""
    state = with_dataset(5)
    learner = outsider(state)
    backup = entry_of(state)["replicas"][1]
    others = [n for n in state["nodes"] if n not in entry_of(state)["replicas"] and n != learner]
    state, results = run(state, commands.set_node_state(others[0], "dead", controller_term=TERM))
    assert results[0]["ok"]
    cases = {
        add(learner, epoch=2): commands.STALE_EPOCH,
        add(backup): commands.INVALID_ARGUMENT,
        add(others[0]): commands.INVALID_ARGUMENT,
        add("n9"): commands.INVALID_ARGUMENT,
        add(learner, term=TERM - 1): commands.STALE_CONTROLLER,
        commands.add_learner("nope", 0, learner, 1, controller_term=TERM): commands.UNKNOWN_DATASET,
        add(learner, index=7): commands.INVALID_ARGUMENT,
    }
    for command, code in cases.items():
        after, [result] = run(state, command)
        assert not result["ok"] and result["error"] == code, (commands.decode_command(command), result)
        assert after["datasets"] == state["datasets"] and after["version"] == state["version"]
    _, [stale] = run(state, add(learner, epoch=2))
    assert stale["epoch"] == 1
    draining, [drain] = run(state, commands.set_node_state(learner, "draining", controller_term=TERM))
    assert drain["ok"]
    _, [refused] = run(draining, add(learner))
    assert refused["error"] == commands.INVALID_ARGUMENT and "draining" in refused["message"]


def test_fsm_join_in_sync_moves_a_learner_into_the_in_sync_set() -> None:
    """join_in_sync by the primary (no controller term): the learner leaves learners, is appended to the
    in-sync set with its incarnation recorded, epoch + 1; under_replicated drops once it is in sync."""
    state = with_dataset()
    learner = outsider(state)
    replicas = entry_of(state)["replicas"]
    state, _ = run(state, commands.remove_replica("ds", 0, replicas[2], 1, controller_term=TERM), add(learner, 2))
    assert MetadataView.from_state(state).under_replicated("ds") == 1   # a learner is not a copy yet
    after, [joined] = run(state, commands.join_in_sync("ds", 0, learner, 2, "inc-a"))
    assert joined == {"ok": True, "epoch": 3}
    entry = entry_of(after)
    assert entry["learners"] == [] and entry["replicas"] == [*replicas[:2], learner]
    assert entry["incarnations"].get(learner) == "inc-a" and entry["primary"] == replicas[0]
    assert MetadataView.from_state(after).under_replicated("ds") == 0


def test_fsm_join_in_sync_repeated_is_ok_with_the_current_epoch() -> None:
    """A repeat of an applied join (new request id, the old expected epoch) answers ok(epoch=current);
    the same node with another incarnation is not that join: STALE_EPOCH."""
    state = with_dataset()
    learner = outsider(state)
    state, results = run(state, add(learner), commands.join_in_sync("ds", 0, learner, 1, "inc-a"))
    assert all(r["ok"] for r in results)
    after, [again, other] = run(state, commands.join_in_sync("ds", 0, learner, 1, "inc-a"),
                                commands.join_in_sync("ds", 0, learner, 1, "inc-b"))
    assert again == {"ok": True, "epoch": 2}
    assert other["error"] == commands.STALE_EPOCH
    assert after["datasets"] == state["datasets"]


def test_fsm_join_in_sync_refusals() -> None:
    """Not a learner (an outsider, an in-sync replica), a stale epoch, a dead learner, an empty incarnation:
    refused, state unchanged."""
    state = with_dataset(5)
    learner, spare = [n for n in sorted(state["nodes"]) if n not in entry_of(state)["replicas"]][:2]
    backup = entry_of(state)["replicas"][1]
    state, _ = run(state, add(learner))
    dead, _ = run(state, commands.set_node_state(learner, "dead", controller_term=TERM))
    cases = [
        (state, commands.join_in_sync("ds", 0, spare, 1, "i"), commands.INVALID_ARGUMENT),
        (state, commands.join_in_sync("ds", 0, backup, 1, "i"), commands.INVALID_ARGUMENT),
        (state, commands.join_in_sync("ds", 0, learner, 2, "i"), commands.STALE_EPOCH),
        (state, commands.join_in_sync("ds", 0, learner, 1, ""), commands.INVALID_ARGUMENT),
        (dead, commands.join_in_sync("ds", 0, learner, 1, "i"), commands.INVALID_ARGUMENT),
    ]
    for before, command, code in cases:
        after, [result] = run(before, command)
        assert not result["ok"] and result["error"] == code, (commands.decode_command(command), result)
        assert after["datasets"] == before["datasets"]


def test_fsm_remove_replica_of_a_learner_drops_it_and_keeps_the_epoch() -> None:
    """remove_replica of a learner (by the controller, or by the primary with term 0) drops it from learners;
    the epoch and the in-sync set stay; a repeat is ok; a stale epoch is still refused."""
    state = with_dataset()
    learner = outsider(state)
    state, _ = run(state, add(learner))
    _, [stale] = run(state, commands.remove_replica("ds", 0, learner, 2, controller_term=TERM))
    assert stale["error"] == commands.STALE_EPOCH
    for term in (TERM, 0):
        after, [removed, again] = run(state, commands.remove_replica("ds", 0, learner, 1, controller_term=term),
                                      commands.remove_replica("ds", 0, learner, 1, controller_term=term))
        assert removed == again == {"ok": True, "epoch": 1}
        entry = entry_of(after)
        assert entry["learners"] == [] and entry["replicas"] == entry_of(state)["replicas"] and entry["epoch"] == 1


def test_fsm_removed_node_leaves_every_learner_list() -> None:
    """set_node_state "removed" drops the node from the learners of every shard (epochs stay);
    "dead" does not (the controller drops those learners with remove_replica)."""
    state = with_dataset()
    learner = outsider(state, 0)
    adds = [add(learner, index=i) for i in (0, 1) if learner not in entry_of(state, i)["replicas"]]
    state, results = run(state, *adds)
    assert all(r["ok"] for r in results) and adds
    dead, _ = run(state, commands.set_node_state(learner, "dead", controller_term=TERM))
    assert dead["datasets"] == state["datasets"]
    removed, [result] = run(dead, commands.set_node_state(learner, "removed", controller_term=TERM))
    assert result["ok"]
    for i in (0, 1):
        assert learner not in entry_of(removed, i)["learners"]
        assert entry_of(removed, i)["epoch"] == entry_of(state, i)["epoch"]


def test_fsm_repair_commands_decode_and_reject_wrong_types() -> None:
    """The constructors encode what decode_command accepts; a wrong type raises at the call site."""
    decoded = commands.decode_command(commands.add_learner("ds", 1, "n3", 4, controller_term=2, request_id="r1"))
    assert decoded == {"v": 1, "op": "add_learner", "request_id": "r1", "dataset": "ds", "shard": 1,
                       "node_id": "n3", "expected_epoch": 4, "controller_term": 2}
    decoded = commands.decode_command(commands.join_in_sync("ds", 1, "n3", 4, "inc", request_id="r2"))
    assert decoded["op"] == "join_in_sync" and decoded["incarnation"] == "inc" and "controller_term" not in decoded
    with pytest.raises(ValueError):
        commands.add_learner("ds", "1", "n3", 4, controller_term=2)   # type: ignore[arg-type]
    with pytest.raises(ValueError):
        commands.join_in_sync("ds", 1, "n3", 4, b"inc")   # type: ignore[arg-type]


# ---- property: random repair command streams keep learners and replicas apart ----

_OPS = ("add_learner", "join_in_sync", "remove_replica", "promote", "set_node_state")
# (op, shard, node, epoch offset from the shard's current one: mostly 0, so commands apply often, state/incarnation)
_actions = st.tuples(st.sampled_from(_OPS), st.integers(0, 2),
                     st.sampled_from(["n0", "n1", "n2", "n3", "n4", "n5", "n9"]),
                     st.sampled_from([0, 0, 0, -1, 1]), st.sampled_from(["alive", "dead", "removed", "a", "b"]))


def _command(state: dict[str, Any], action: tuple[str, int, str, int, str]) -> bytes:
    """The action as a command aimed at the current state (expected epoch = current + offset)."""
    op, index, node_id, offset, extra = action
    entry = entry_of(state, index)
    epoch = entry["epoch"] + offset
    if op == "join_in_sync" and entry["learners"] and node_id != "n9":
        node_id = entry["learners"][0]   # a random node is rarely a learner of this shard
    if op == "add_learner":
        return commands.add_learner("ds", index, node_id, epoch, controller_term=TERM)
    if op == "join_in_sync":
        return commands.join_in_sync("ds", index, node_id, epoch, extra if extra in "ab" else "a")
    if op == "remove_replica":
        return commands.remove_replica("ds", index, node_id, epoch, controller_term=TERM)
    if op == "promote":
        return commands.promote("ds", index, node_id, epoch, controller_term=TERM)
    return commands.set_node_state(node_id, extra if extra not in "ab" else "alive", controller_term=TERM)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(_actions, max_size=40))
def test_fsm_random_repair_commands_keep_learners_apart(actions: list[tuple[str, int, str, int, str]]) -> None:
    """Random repair commands never raise or mutate their input; learners stay unique, disjoint from the
    in-sync set and off removed nodes; incarnations are of in-sync replicas; the epoch moves only on a
    change of the in-sync set or primary (learner changes keep it)."""
    state, _ = run(with_dataset(6), commands.drop_dataset("ds"), commands.create_dataset("ds", 3, 3))
    for action in actions:
        before = copy.deepcopy(state)
        new_state, result = fsm.apply(state, _command(state, action))
        assert state == before
        if not result["ok"]:
            assert result["error"] in commands.ERROR_CODES and "internal error" not in result["message"], result
        for old, new in zip(state["datasets"]["ds"]["shard_map"], new_state["datasets"]["ds"]["shard_map"]):
            learners = new["learners"]
            assert len(set(learners)) == len(learners) and not set(learners) & set(new["replicas"])
            assert all(new_state["nodes"][n]["state"] != "removed" for n in learners)
            assert set(new["incarnations"]) <= set(new["replicas"])
            moved = (old["primary"], old["replicas"]) != (new["primary"], new["replicas"])
            assert new["epoch"] == old["epoch"] + moved
        state = new_state


def test_fsm_repair_actions_add_join_and_drop_learners() -> None:
    """The actions of the property test above apply as meant: add, join, add, drop, add, node removed."""
    seen = set()
    state, _ = run(with_dataset(6), commands.drop_dataset("ds"), commands.create_dataset("ds", 3, 3))
    for action in [("add_learner", 1, "n1", 0, ""), ("join_in_sync", 1, "n1", 0, "a"), ("add_learner", 1, "n2", 0, ""),
                   ("remove_replica", 1, "n2", 0, ""), ("add_learner", 1, "n0", 0, ""),
                   ("set_node_state", 0, "n0", 0, "removed")]:
        state, result = fsm.apply(state, _command(state, action))
        assert result["ok"], (action, result)
        seen.add(action[0])
    assert seen == set(_OPS) - {"promote"}
    assert entry_of(state, 1)["learners"] == [] and "n1" in entry_of(state, 1)["replicas"]
