"""The metadata state machine, driven with command sequences: results, idempotency, totality."""
from __future__ import annotations

import copy
import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.client.wire.pb import data_pb2
from shoal.node.metadata import commands, fsm
from shoal.node.metadata.view import MetadataView


def run(state: dict[str, Any], *cmds: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Apply commands in order; return the final state and every result."""
    results = []
    for cmd in cmds:
        state, result = fsm.apply(state, cmd)
        results.append(result)
    return state, results


def cluster(nodes: int, zones: int = 0) -> dict[str, Any]:
    """A state with `nodes` alive nodes n0..n{nodes-1}, zones z0..z{zones-1} round robin."""
    state, results = run(fsm.initial_state(), *(
        commands.register_node(f"n{i}", f"10.0.0.{i}:7400", f"z{i % zones}" if zones else "", f"10.0.0.{i}:7500")
        for i in range(nodes)))
    assert all(r["ok"] for r in results)
    return state


def raw(**fields: Any) -> bytes:
    """A hand-built command, bypassing the constructors' checks."""
    return msgpack.packb({"v": 1, "request_id": "r", **fields})


def test_fsm_initial_state_shape() -> None:
    """The initial state holds every documented top-level map, empty, at version 0."""
    assert fsm.initial_state() == {"version": 0, "cluster_id": "", "nodes": {}, "datasets": {}, "jobs": {},
                                   "tokens": {}, "requests": {}, "controller": {"node_id": "", "term": 0},
                                   "jobs_version": 0}


def test_fsm_error_codes_are_proto_error_codes() -> None:
    """Every error code a result can carry is a name of shoal.v1.ErrorCode."""
    assert commands.ERROR_CODES <= set(data_pb2.ErrorCode.keys())


def test_fsm_register_node_upserts_alive() -> None:
    """register_node inserts, re-registering a dead node makes it alive again, identical repeats change nothing."""
    state = cluster(1)
    assert state["nodes"]["n0"] == {"address": "10.0.0.0:7400", "zone": "", "state": "alive",
                                    "raft_address": "10.0.0.0:7500"}
    state, [r] = run(state, commands.set_node_state("n0", "dead"))
    version = state["version"]
    state, [r] = run(state, commands.register_node("n0", "10.0.0.9:7400", "", "10.0.0.0:7500"))
    assert r["ok"] and state["nodes"]["n0"]["state"] == "alive" and state["version"] == version + 1
    same, [r] = run(state, commands.register_node("n0", "10.0.0.9:7400", "", "10.0.0.0:7500"))
    assert r["ok"] and same["version"] == state["version"]


def test_fsm_register_node_rejects_taken_raft_address() -> None:
    """Two nodes may not claim the same Raft address: node_by_raft_address must stay unambiguous."""
    state, [r] = run(cluster(1), commands.register_node("n1", "a:1", "", "10.0.0.0:7500"))
    assert r["error"] == "INVALID_ARGUMENT" and "n0" in r["message"]
    assert MetadataView.from_state(state).node_by_raft_address("10.0.0.0:7500").id == "n0"
    assert MetadataView.from_state(state).node_by_raft_address("nowhere:1") is None


def test_fsm_repeated_request_id_returns_stored_result() -> None:
    """Re-applying the same bytes answers the first result and changes nothing, even after later changes."""
    create = commands.create_dataset("events", 4)
    state, [first] = run(cluster(3), create)
    state, [dropped] = run(state, commands.drop_dataset("events"))
    assert first["ok"] and dropped["ok"]
    again, [second] = run(state, create)
    assert second == first
    assert again is state and "events" not in again["datasets"]


def test_fsm_create_dataset_places_every_shard() -> None:
    """Each shard gets epoch 1 and distinct replicas, primary first; replication defaults to 3."""
    state, [r] = run(cluster(5), commands.create_dataset("events", 10))
    assert r == {"ok": True, "dataset": "events", "dataset_id": f"events@{state['version']}", "shards": 10,
                 "replication": 3}
    dataset = state["datasets"]["events"]
    assert dataset["shards"] == 10 and len(dataset["shard_map"]) == 10
    for entry in dataset["shard_map"]:
        assert entry["epoch"] == 1 and entry["learners"] == []
        assert entry["primary"] == entry["replicas"][0] and len(set(entry["replicas"])) == 3
    assert fsm.shard(state, "events", 9) == dataset["shard_map"][9]
    assert fsm.shard(state, "events", 10) is None and fsm.shard(state, "nope", 0) is None


def test_fsm_create_dataset_default_replication_caps_at_alive_nodes() -> None:
    """With two alive nodes the default replication is 2; dead and draining nodes get no replicas."""
    state, _ = run(cluster(4), commands.set_node_state("n2", "dead"), commands.set_node_state("n3", "draining"))
    state, [r] = run(state, commands.create_dataset("events", 8))
    assert r["replication"] == 2
    placed = {n for entry in state["datasets"]["events"]["shard_map"] for n in entry["replicas"]}
    assert placed == {"n0", "n1"}


def test_fsm_create_dataset_not_enough_nodes_names_both_numbers() -> None:
    """Asking for more replicas than alive nodes fails with NOT_ENOUGH_NODES and changes nothing."""
    state = cluster(2)
    after, [r] = run(state, commands.create_dataset("events", 4, 3))
    assert r["error"] == "NOT_ENOUGH_NODES" and "3" in r["message"] and "2 alive" in r["message"]
    assert after["datasets"] == {} and after["version"] == state["version"]
    _, [r] = run(fsm.initial_state(), commands.create_dataset("events", 1))
    assert r["error"] == "NOT_ENOUGH_NODES"


def test_fsm_create_dataset_existing_name_is_dataset_exists() -> None:
    """A second dataset of the same name is DATASET_EXISTS and the first is untouched."""
    state, [_, r] = run(cluster(3), commands.create_dataset("events", 4), commands.create_dataset("events", 8))
    assert r["error"] == "DATASET_EXISTS"
    assert state["datasets"]["events"]["shards"] == 4


@pytest.mark.parametrize("name, shards, replication", [
    ("", 1, 0), ("-lead", 1, 0), ("has space", 1, 0), ("trailing\n", 1, 0), ("x" * 129, 1, 0),
    ("ok", 0, 0), ("ok", 4097, 0), ("ok", -1, 0), ("ok", 1, -1), ("ok", 1, fsm.REPLICATION_MAX + 1),
])
def test_fsm_create_dataset_rejects_bad_arguments(name: str, shards: int, replication: int) -> None:
    """Names outside the pattern and counts outside their ranges are INVALID_ARGUMENT."""
    state = cluster(3)
    after, [r] = run(state, commands.create_dataset(name, shards, replication))
    assert r["error"] == "INVALID_ARGUMENT"
    assert after["datasets"] == {}


def test_fsm_create_dataset_accepts_boundary_values() -> None:
    """The longest name, one shard and the maximum shard count are accepted."""
    state, results = run(cluster(3), commands.create_dataset("a" * 128, 1, 1),
                         commands.create_dataset("b.c_d-9", fsm.SHARDS_MAX, 3))
    assert all(r["ok"] for r in results)
    assert len(state["datasets"]["b.c_d-9"]["shard_map"]) == fsm.SHARDS_MAX


def test_fsm_drop_dataset_removes_it() -> None:
    """drop_dataset removes the dataset; an unknown name is UNKNOWN_DATASET."""
    state, [_, dropped, unknown] = run(cluster(3), commands.create_dataset("events", 2),
                                       commands.drop_dataset("events"), commands.drop_dataset("events"))
    assert dropped["ok"] and unknown["error"] == "UNKNOWN_DATASET"
    assert state["datasets"] == {}


def with_dataset(replication: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three alive nodes and dataset "ds" with one shard; returns (state, shard 0)."""
    state, [r] = run(cluster(3), commands.create_dataset("ds", 1, replication))
    assert r["ok"]
    entry = fsm.shard(state, "ds", 0)
    assert entry is not None
    return state, entry


def test_fsm_remove_replica_fences_backup_and_bumps_epoch() -> None:
    """Removing a backup takes it out of the in-sync set, keeps the primary and bumps the epoch."""
    state, entry = with_dataset()
    backup = entry["replicas"][2]
    state, [r] = run(state, commands.remove_replica("ds", 0, backup, 1))
    assert r == {"ok": True, "epoch": 2}
    after = fsm.shard(state, "ds", 0)
    assert after == {**entry, "epoch": 2, "replicas": entry["replicas"][:2]}
    assert MetadataView.from_state(state).under_replicated() == 1


def test_fsm_remove_replica_stale_epoch_carries_current_epoch() -> None:
    """A wrong expected epoch is STALE_EPOCH with the current epoch, and nothing changes."""
    state, entry = with_dataset()
    state, _ = run(state, commands.remove_replica("ds", 0, entry["replicas"][2], 1))
    after, [r] = run(state, commands.remove_replica("ds", 0, entry["replicas"][1], 1))
    assert r["error"] == "STALE_EPOCH" and r["epoch"] == 2
    assert fsm.shard(after, "ds", 0) == fsm.shard(state, "ds", 0)


def test_fsm_remove_replica_of_absent_node_is_ok_without_change() -> None:
    """Removing a node that is not (or no longer) in the in-sync set succeeds and changes nothing."""
    state, entry = with_dataset()
    state, _ = run(state, commands.remove_replica("ds", 0, entry["replicas"][2], 1))
    after, [r] = run(state, commands.remove_replica("ds", 0, entry["replicas"][2], 2))
    assert r == {"ok": True, "epoch": 2}
    assert after["version"] == state["version"]


def test_fsm_remove_replica_refuses_primary_and_last_replica() -> None:
    """The primary is never removed (promote instead), so the last replica always stays."""
    state, entry = with_dataset()
    _, [r] = run(state, commands.remove_replica("ds", 0, entry["primary"], 1))
    assert r["error"] == "INVALID_ARGUMENT" and "promote" in r["message"]
    state, entry = with_dataset(replication=1)
    _, [r] = run(state, commands.remove_replica("ds", 0, entry["primary"], 1))
    assert r["error"] == "INVALID_ARGUMENT"


def test_fsm_remove_replica_unknown_dataset_or_shard() -> None:
    """An unknown dataset is UNKNOWN_DATASET, a shard out of range INVALID_ARGUMENT."""
    state, entry = with_dataset()
    _, [unknown, out_of_range] = run(state, commands.remove_replica("nope", 0, "n1", 1),
                                     commands.remove_replica("ds", 1, "n1", 1))
    assert unknown["error"] == "UNKNOWN_DATASET" and out_of_range["error"] == "INVALID_ARGUMENT"


def test_fsm_promote_moves_primary_and_drops_old_one() -> None:
    """Promote makes an in-sync backup primary; the old primary leaves the in-sync set; epoch + 1."""
    state, entry = with_dataset()
    old, new, other = entry["replicas"]
    state, [r] = run(state, commands.promote("ds", 0, new, 1))
    assert r == {"ok": True, "epoch": 2}
    assert fsm.shard(state, "ds", 0) == {"epoch": 2, "primary": new, "replicas": [new, other], "learners": [],
                                         "incarnations": {}}
    same, [r] = run(state, commands.promote("ds", 0, new, 2))
    assert r == {"ok": True, "epoch": 2} and same["version"] == state["version"]


def test_fsm_promote_rejects_bad_candidates() -> None:
    """Promoting a non-replica, a dead node or with a stale epoch is refused without change."""
    state, entry = with_dataset(replication=2)
    outsider = ({"n0", "n1", "n2"} - set(entry["replicas"])).pop()
    state, _ = run(state, commands.set_node_state(entry["replicas"][1], "dead"))
    after, [not_replica, dead, stale] = run(
        state, commands.promote("ds", 0, outsider, 1), commands.promote("ds", 0, entry["replicas"][1], 1),
        commands.promote("ds", 0, entry["replicas"][1], 7))
    assert not_replica["error"] == "INVALID_ARGUMENT" and "in-sync" in not_replica["message"]
    assert dead["error"] == "INVALID_ARGUMENT" and "dead" in dead["message"]
    assert stale["error"] == "STALE_EPOCH" and stale["epoch"] == 1
    assert after["datasets"] == state["datasets"]


def test_fsm_set_node_state_validates_state_and_node() -> None:
    """Only the documented states are accepted, on known nodes; repeating a state changes nothing."""
    state = cluster(1)
    _, [bad_state, unknown] = run(state, commands.set_node_state("n0", "zombie"),
                                  commands.set_node_state("n9", "dead"))
    assert bad_state["error"] == "INVALID_ARGUMENT" and unknown["error"] == "INVALID_ARGUMENT"
    for node_state in commands.NODE_STATES:
        state, [r] = run(state, commands.set_node_state("n0", node_state))
        assert r["ok"] and state["nodes"]["n0"]["state"] == node_state
    same, [r] = run(state, commands.set_node_state("n0", "removed"))
    assert r["ok"] and same["version"] == state["version"]


def test_fsm_under_replicated_counts_replicas_on_non_alive_nodes() -> None:
    """A shard is under-replicated when fewer of its in-sync replicas are on alive nodes than R."""
    state, [r] = run(cluster(3), commands.create_dataset("ds", 6, 3))
    assert MetadataView.from_state(state).under_replicated() == 0
    state, _ = run(state, commands.set_node_state("n1", "suspect"))
    assert MetadataView.from_state(state).under_replicated() == 6


def test_fsm_noop_changes_nothing_and_is_not_recorded() -> None:
    """noop (the barrier) returns ok and leaves the state object itself unchanged."""
    state = cluster(2)
    after, [r] = run(state, commands.noop(request_id="barrier-1"))
    assert r == {"ok": True} and after is state


@pytest.mark.parametrize("command", [
    b"", b"\xc1", b"garbage", msgpack.packb([1, 2]), msgpack.packb({1: 2}),
    msgpack.packb({"v": 2, "op": "noop", "request_id": "r"}),
    msgpack.packb({"v": True, "op": "noop", "request_id": "r"}),
    raw(op="explode"), raw(op="drop_dataset"), raw(op="drop_dataset", name=7),
    raw(op="drop_dataset", name="x", extra=1), raw(op="create_dataset", name="x", shards=True, replication=0),
    msgpack.packb({"v": 1, "op": "noop", "request_id": ""}), msgpack.packb({"v": 1, "op": "noop"}),
    msgpack.packb({"v": 1, "op": "noop", "request_id": "r" * 129}),
    raw(op="drop_dataset", name="x" * 70_000), msgpack.packb({"v": 1, "op": "noop", "request_id": "r"}) + b"x",
    "a str, not bytes", None,
])
def test_fsm_malformed_commands_return_errors(command: Any) -> None:
    """Malformed commands of every kind give INVALID_ARGUMENT, never raise, and change nothing."""
    state = cluster(1)
    after, result = fsm.apply(state, command)
    assert result["ok"] is False and result["error"] == "INVALID_ARGUMENT" and result["message"]
    assert after is state
    with pytest.raises(ValueError):
        commands.decode_command(command)


def test_fsm_apply_survives_a_broken_state() -> None:
    """Even a state missing its maps gives an error result instead of raising (totality)."""
    broken: dict[str, Any] = {"version": 3}
    after, result = fsm.apply(broken, commands.drop_dataset("x"))
    assert after is broken and result["error"] == "INVALID_ARGUMENT" and "internal" in result["message"]


def test_commands_constructors_reject_wrong_types() -> None:
    """Constructors check argument types at the call site, before anything reaches the log."""
    with pytest.raises(ValueError):
        commands.create_dataset("x", "4")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        commands.promote("x", 0, "n1", 1.0)  # type: ignore[arg-type]
    decoded = commands.decode_command(commands.drop_dataset("x", request_id="req-1"))
    assert decoded == {"v": 1, "op": "drop_dataset", "request_id": "req-1", "name": "x"}


def test_fsm_request_table_keeps_only_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request table is bounded: the oldest request ids are forgotten first."""
    monkeypatch.setattr(fsm, "REQUESTS_MAX", 3)
    state, _ = run(fsm.initial_state(), *(commands.register_node(f"n{i}", "a:1", "", "", request_id=f"r{i}")
                                          for i in range(5)))
    assert list(state["requests"]) == ["r2", "r3", "r4"]


def test_fsm_apply_never_mutates_its_input() -> None:
    """Copy-on-write: a state handed to apply is identical afterwards, whatever the command did."""
    state, entry = with_dataset()
    sequence = [commands.remove_replica("ds", 0, entry["replicas"][2], 1),
                commands.promote("ds", 0, entry["replicas"][1], 2), commands.set_node_state("n0", "dead"),
                commands.register_node("n7", "b:2", "z", ""), commands.create_dataset("ds2", 3, 2),
                commands.drop_dataset("ds")]
    for cmd in sequence:
        before = copy.deepcopy(state)
        new_state, result = fsm.apply(state, cmd)
        assert result["ok"], result
        assert state == before
        state = new_state


# ---- property: random command streams ----

_names = st.sampled_from(["ds", "ds", "ds", "ds2", "x", "", "bad name"])
_node_ids = st.sampled_from(["n0", "n1", "n2", "n3", "n4", "n5", "", "n 6"])
_ints = st.one_of(st.integers(0, 4), st.integers(0, 4), st.sampled_from([-1, 4096, 4097, 2**40]))
_epochs = st.one_of(st.just(1), st.just(1), st.just(2), st.integers(-1, 5))
# mostly fresh request ids, sometimes a repeat (which must answer the stored result)
_request_ids = st.one_of(st.uuids().map(str), st.uuids().map(str), st.uuids().map(str), st.sampled_from("ab"))
_valid_commands = st.one_of(
    st.builds(commands.register_node, _node_ids, st.sampled_from(["h:1", ""]), st.sampled_from(["", "z1", "z2"]),
              st.sampled_from(["", "r:1", "r:2"]), request_id=_request_ids),
    st.builds(commands.set_node_state, _node_ids, st.sampled_from([*commands.NODE_STATES, "zombie"]),
              request_id=_request_ids),
    st.builds(commands.create_dataset, _names, _ints, _ints, request_id=_request_ids),
    st.builds(commands.drop_dataset, _names, request_id=_request_ids),
    st.builds(commands.remove_replica, _names, _ints, _node_ids, _epochs, request_id=_request_ids),
    st.builds(commands.promote, _names, _ints, _node_ids, _epochs, request_id=_request_ids),
    st.builds(commands.noop, request_id=_request_ids),
    # aimed at the prelude's dataset, so that fencing and promotion succeed often
    st.builds(commands.remove_replica, st.just("ds"), st.integers(0, 3), _node_ids, st.integers(1, 3),
              request_id=_request_ids),
    st.builds(commands.promote, st.just("ds"), st.integers(0, 3), _node_ids, st.integers(1, 3),
              request_id=_request_ids),
)
_any_value = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.text(max_size=8),
                       st.binary(max_size=8), st.lists(st.integers(-9, 9), max_size=3))
_fuzzed_commands = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(st.sampled_from(["v", "op", "request_id", "name", "shards", "replication", "node_id"]),
                    _any_value | st.sampled_from([1, "create_dataset", "noop", "r"]), max_size=7)
    .map(lambda d: msgpack.packb(d)),
)


def _check_invariants(state: dict[str, Any]) -> None:
    for dataset in state["datasets"].values():
        assert len(dataset["shard_map"]) == dataset["shards"]
        for entry in dataset["shard_map"]:
            assert entry["replicas"] and entry["replicas"][0] == entry["primary"]
            assert len(set(entry["replicas"])) == len(entry["replicas"]) and entry["epoch"] >= 1
    assert len(state["requests"]) <= fsm.REQUESTS_MAX


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.one_of(_valid_commands, _fuzzed_commands), max_size=40))
def test_fsm_random_commands_never_raise(sequence: list[bytes]) -> None:
    """Random valid and garbage commands never raise; version only grows; invariants hold; state serializes.

    The stream starts from six alive nodes in two zones and a 4-shard dataset "ds", so that
    epochs, promotions and removals are exercised, not only the error paths.
    """
    state, _ = run(cluster(6, zones=2), commands.create_dataset("ds", 4))
    for cmd in sequence:
        before = copy.deepcopy(state)
        new_state, result = fsm.apply(state, cmd)
        assert state == before
        assert isinstance(result, dict) and isinstance(result["ok"], bool)
        if not result["ok"]:
            assert result["error"] in commands.ERROR_CODES
        assert new_state["version"] in (state["version"], state["version"] + 1)
        _check_invariants(new_state)
        state = new_state
    assert msgpack.unpackb(msgpack.packb(state), strict_map_key=True) == state
    assert pickle.loads(pickle.dumps(state)) == state
