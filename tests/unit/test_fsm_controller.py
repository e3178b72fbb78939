"""Controller fencing in the metadata state machine (issue 15): become_controller and controller_term.

Driven with command sequences over real states, as test_fsm.py does; no Raft, no network.
"""
from __future__ import annotations

import pathlib
from typing import Any

import msgpack
import pytest

from shoal.node.errors import NodeError
from shoal.node.metadata import commands, fsm
from shoal.node.metadata.local import METADATA_FILE, LocalMetadata
from shoal.node.metadata.view import MetadataView


def run(state: dict[str, Any], *cmds: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = []
    for cmd in cmds:
        state, result = fsm.apply(state, cmd)
        results.append(result)
    return state, results


def with_dataset(nodes: int = 3) -> dict[str, Any]:
    """n0..n{nodes-1} alive and dataset "ds" (2 shards, R=3)."""
    state, results = run(fsm.initial_state(), *(
        commands.register_node(f"n{i}", f"h:{7400 + i}", "", f"h:{7500 + i}") for i in range(nodes)),
        commands.create_dataset("ds", 2, 3))
    assert all(r["ok"] for r in results), results
    return state


def test_fsm_become_controller_terms_only_grow() -> None:
    """become_controller is accepted for a later term, is a no-op for the same controller and term,
    and is refused (STALE_CONTROLLER) for an earlier term or another node in the same term."""
    state = with_dataset()
    assert fsm.controller_of(state) == {"node_id": "", "term": 0}
    state, [first] = run(state, commands.become_controller("n0", 3))
    assert first == {"ok": True, "node_id": "n0", "term": 3}
    assert fsm.controller_of(state) == {"node_id": "n0", "term": 3}
    same, [again] = run(state, commands.become_controller("n0", 3))
    assert again["ok"] and same["version"] == state["version"]
    _, [older, rival] = run(state, commands.become_controller("n1", 2), commands.become_controller("n1", 3))
    assert older["error"] == rival["error"] == commands.STALE_CONTROLLER
    assert older["controller"] == "n0" and older["term"] == 3
    state, [newer] = run(state, commands.become_controller("n1", 4))
    assert newer["ok"] and fsm.controller_of(state) == {"node_id": "n1", "term": 4}
    _, [stale] = run(state, commands.become_controller("n0", 3))
    assert stale["error"] == commands.STALE_CONTROLLER


def test_fsm_controller_decisions_of_another_term_are_refused() -> None:
    """Once n1 controls in term 5, set_node_state/promote/remove_replica of term 4 (deposed) or 6 (not yet
    in control) are refused STALE_CONTROLLER and change nothing; term 5 applies."""
    state, _ = run(with_dataset(), commands.become_controller("n0", 4), commands.become_controller("n1", 5))
    entry = fsm.shard(state, "ds", 0)
    assert entry is not None
    primary, backup = entry["primary"], entry["replicas"][1]
    for term in (4, 6):
        after, results = run(state, commands.set_node_state("n2", "dead", controller_term=term),
                             commands.promote("ds", 0, backup, 1, controller_term=term),
                             commands.remove_replica("ds", 0, backup, 1, controller_term=term))
        assert [r["error"] for r in results] == [commands.STALE_CONTROLLER] * 3, results
        assert after["nodes"] == state["nodes"] and after["datasets"] == state["datasets"]
    state, results = run(state, commands.set_node_state("n2", "dead", controller_term=5),
                         commands.promote("ds", 0, backup, 1, controller_term=5))
    assert all(r["ok"] for r in results), results
    assert state["nodes"]["n2"]["state"] == "dead"
    assert fsm.shard(state, "ds", 0)["primary"] == backup and primary not in fsm.shard(state, "ds", 0)["replicas"]


def test_fsm_remove_replica_by_a_primary_is_fenced_by_epoch_not_by_controller_term() -> None:
    """controller_term 0 marks a primary fencing out a failed backup: accepted whatever controller is
    recorded, and still refused at a stale epoch. A decision with term 0 (set_node_state) is refused."""
    state, _ = run(with_dataset(), commands.become_controller("n1", 9))
    entry = fsm.shard(state, "ds", 1)
    assert entry is not None
    backup = entry["replicas"][2]
    _, [stale_epoch] = run(state, commands.remove_replica("ds", 1, backup, 7))
    assert stale_epoch["error"] == commands.STALE_EPOCH
    state, [fenced] = run(state, commands.remove_replica("ds", 1, backup, 1))
    assert fenced == {"ok": True, "epoch": 2}
    _, [decision] = run(state, commands.set_node_state("n2", "dead"))
    assert decision["error"] == commands.STALE_CONTROLLER
    _, [negative] = run(state, commands.remove_replica("ds", 1, entry["replicas"][1], 2, controller_term=-1))
    assert negative["error"] == commands.INVALID_ARGUMENT


def test_fsm_woken_controller_scenario_changes_nothing() -> None:
    """The issue's sequence: n0 controlled term 1, n1 took over in term 2, then n0's stale round arrives
    (declare n1 and n2 dead, promote n0, fence n1 out): every command is refused, the state is unchanged."""
    state, _ = run(with_dataset(), commands.become_controller("n0", 1), commands.become_controller("n1", 2))
    stale = [commands.set_node_state("n1", "dead", controller_term=1),
             commands.set_node_state("n2", "dead", controller_term=1)]
    for index in range(2):
        entry = fsm.shard(state, "ds", index)
        assert entry is not None
        if entry["primary"] != "n0":
            stale.append(commands.promote("ds", index, "n0", entry["epoch"], controller_term=1))
        stale += [commands.remove_replica("ds", index, r, entry["epoch"], controller_term=1)
                  for r in entry["replicas"] if r != entry["primary"]]
    after, results = run(state, *stale)
    assert all(r["error"] == commands.STALE_CONTROLLER for r in results), results
    assert {k: v for k, v in after.items() if k != "requests"} == {k: v for k, v in state.items() if k != "requests"}


def test_fsm_state_without_controller_key_still_applies() -> None:
    """A state from an older journal or dump has no "controller": it reads as no controller (term 0);
    decisions of term 0 apply, become_controller adds the key, views build."""
    old = with_dataset()
    del old["controller"]
    assert fsm.controller_of(old) == {"node_id": "", "term": 0}
    state, [dead] = run(old, commands.set_node_state("n2", "dead"))
    assert dead["ok"] and "controller" not in state
    state, [took] = run(state, commands.become_controller("n0", 1))
    assert took["ok"] and state["controller"] == {"node_id": "n0", "term": 1}
    assert MetadataView.from_state(old).node("n2") is not None


def test_fsm_commands_logged_before_controller_term_decode_as_term_zero() -> None:
    """A set_node_state/promote/remove_replica from an older journal has no controller_term: it decodes as 0,
    so replaying it on the state it was logged against gives the result it had then."""
    legacy = msgpack.packb({"v": 1, "op": "set_node_state", "request_id": "old-1", "node_id": "n2", "state": "dead"})
    assert commands.decode_command(legacy)["controller_term"] == 0
    old = with_dataset()
    del old["controller"]
    state, [result] = run(old, legacy)
    assert result["ok"] and state["nodes"]["n2"]["state"] == "dead"
    legacy_promote = msgpack.packb({"v": 1, "op": "promote", "request_id": "old-2", "dataset": "ds", "shard": 0,
                                    "new_primary": fsm.shard(old, "ds", 0)["replicas"][1], "expected_epoch": 1})
    assert run(old, legacy_promote)[1][0]["ok"]


def test_local_metadata_loads_a_state_file_from_before_new_keys(tmp_path: pathlib.Path) -> None:
    """A standalone node's metadata file written before cluster_id and controller existed still loads,
    with their initial values; a file with an unknown key is refused."""
    old = with_dataset()
    for key in ("controller", "cluster_id"):
        old.pop(key, None)
    (tmp_path / METADATA_FILE).write_bytes(msgpack.packb(old, use_bin_type=True))
    store = LocalMetadata(tmp_path)
    store.start()
    assert fsm.controller_of(store.state) == {"node_id": "", "term": 0} and "controller" in store.state
    assert store.leader_term() == 0 and store.view.node("n1") is not None
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / METADATA_FILE).write_bytes(msgpack.packb({**old, "bogus": 1}, use_bin_type=True))
    with pytest.raises(NodeError):
        LocalMetadata(bogus).start()
