"""Issue 15: cluster ids, data-dir identity, dataset ids and replica incarnations (pure parts)."""
from __future__ import annotations

import pathlib
from typing import Any

import pytest

from shoal.node.errors import StartupError
from shoal.node.identity import Identity
from shoal.node.metadata import commands, fsm
from shoal.node.metadata.view import MetadataView, created_at_version, dataset_name


def _state(nodes: int = 3, shards: int = 2) -> dict[str, Any]:
    state = fsm.initial_state()
    for i in range(1, nodes + 1):
        state, _ = fsm.apply(state, commands.register_node(f"n{i}", f"h:{i}", "", f"h:{100 + i}"))
    state, result = fsm.apply(state, commands.create_dataset("ds", shards, 3))
    assert result["ok"]
    return state


def test_identity_init_cluster_first_wins() -> None:
    """Two voters race to bootstrap: the first committed id stays, the second learns it."""
    state, first = fsm.apply(fsm.initial_state(), commands.init_cluster("aaa"))
    state, second = fsm.apply(state, commands.init_cluster("bbb"))
    assert first == second == {"ok": True, "cluster_id": "aaa"}
    assert MetadataView.from_state(state).cluster_id == "aaa"


def test_identity_dataset_ids_differ_for_a_recreated_name() -> None:
    """Drop and re-create under one name: a new id, made from the version it was created at."""
    state = _state()
    first = MetadataView.from_state(state).datasets["ds"].id
    state, _ = fsm.apply(state, commands.drop_dataset("ds"))
    state, result = fsm.apply(state, commands.create_dataset("ds", 2, 3))
    second = MetadataView.from_state(state).datasets["ds"].id
    assert first != second == result["dataset_id"]
    assert dataset_name(second) == "ds" and created_at_version(second) == state["version"]
    assert created_at_version("legacy") is None


def test_identity_incarnations_recorded_once_and_mismatch_reported() -> None:
    """The first record sticks; another incarnation for the same replica is reported, not recorded."""
    state = _state()
    dataset_id = MetadataView.from_state(state).datasets["ds"].id
    state, result = fsm.apply(state, commands.record_incarnations("n1", [(dataset_id, 0, "inc-a"), (dataset_id, 1, "inc-b")]))
    assert result == {"ok": True, "mismatched": []}
    state, result = fsm.apply(state, commands.record_incarnations("n1", [(dataset_id, 0, "inc-z")]))
    assert result["mismatched"] == [[dataset_id, 0]]
    shard = MetadataView.from_state(state).shard("ds", 0)
    assert shard is not None and shard.recorded_incarnation("n1") == "inc-a"
    assert shard.is_recorded("n1", "inc-a") and not shard.is_recorded("n1", "inc-z") and shard.is_recorded("n2", "x")
    state, result = fsm.apply(state, commands.record_incarnations("n1", [("ds@999", 0, "inc-q")]))
    assert result == {"ok": True, "mismatched": []}   # another incarnation of the dataset: ignored


@pytest.mark.parametrize("lost", ["n1", "n2"])
def test_identity_replica_lost_leaves_the_in_sync_set(lost: str) -> None:
    """A replica that is not the recorded one leaves the in-sync set; a lost primary is replaced."""
    state = _state(shards=1)
    view = MetadataView.from_state(state)
    shard = view.shard("ds", 0)
    assert shard is not None
    lost = shard.replicas[0] if lost == "n1" else shard.replicas[1]
    state, _ = fsm.apply(state, commands.record_incarnations(lost, [(shard.dataset_id, 0, "old")]))
    state, result = fsm.apply(state, commands.replica_lost(shard.dataset_id, 0, lost, "old"))
    assert not result["ok"]   # the recorded one is not lost
    state, result = fsm.apply(state, commands.replica_lost(shard.dataset_id, 0, lost, "new"))
    assert result["ok"], result
    after = MetadataView.from_state(state).shard("ds", 0)
    assert after is not None and lost not in after.replicas and after.primary in after.replicas
    assert after.epoch == shard.epoch + 1 and after.recorded_incarnation(lost) is None
    state, again = fsm.apply(state, commands.replica_lost(shard.dataset_id, 0, lost, "new"))
    assert again["ok"]   # idempotent


def test_identity_a_lost_sole_replica_leaves_the_shard_unavailable_not_empty() -> None:
    """Found by hand: with replication 1, a node whose data dir was wiped came back, its new empty
    replica replaced the recorded one and served (a count of 1027 instead of 2000), while status
    said 0 under-replicated and 0 unavailable. Now the shard has no replica and no primary."""
    state = fsm.initial_state()
    for i in (1, 2):
        state, _ = fsm.apply(state, commands.register_node(f"n{i}", f"h:{i}", "", f"h:{100 + i}"))
    state, _ = fsm.apply(state, commands.create_dataset("one", 2, 1))
    shard = MetadataView.from_state(state).shard("one", 0)
    assert shard is not None and len(shard.replicas) == 1
    holder = shard.primary
    state, _ = fsm.apply(state, commands.record_incarnations(holder, [(shard.dataset_id, 0, "old")]))
    state, result = fsm.apply(state, commands.replica_lost(shard.dataset_id, 0, holder, "wiped"))
    assert result["ok"] and result["primary"] == "", result
    view = MetadataView.from_state(state)
    after = view.shard("one", 0)
    assert after is not None and after.replicas == () and after.primary == "" and not after.holds(holder)
    assert after.epoch == shard.epoch + 1 and view.is_under_replicated(after)
    assert view.shard("one", 1) is not None and view.shard("one", 1).replicas   # type: ignore[union-attr]
    state, again = fsm.apply(state, commands.replica_lost(shard.dataset_id, 0, holder, "wiped"))
    assert again["ok"]   # idempotent


def test_identity_file_refuses_another_node_and_another_cluster(tmp_path: pathlib.Path) -> None:
    """identity.json: made on first start, adopts a cluster id once, refuses a mismatch with one line."""
    identity = Identity.load(tmp_path, "n1")
    assert identity.cluster_id == "" and identity.accepts("anything")
    assert identity.adopt("abc") and not identity.adopt("xyz") and identity.cluster_id == "abc"
    assert identity.accepts("abc") and not identity.accepts("xyz") and not identity.accepts("")
    assert identity.accepts("", allow_unnamed=True)
    assert Identity.load(tmp_path, "n1").cluster_id == "abc"
    with pytest.raises(StartupError, match="belongs to node 'n1' of cluster abc, not 'n2'"):
        Identity.load(tmp_path, "n2")
    with pytest.raises(StartupError, match="belongs to cluster abc, not other"):
        Identity.load(tmp_path, "n1", expected_cluster_id="other")
