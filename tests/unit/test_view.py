"""MetadataView: one answer per question about the replicated metadata (pure)."""
from __future__ import annotations

from typing import Any

from shoal.node.metadata import commands, fsm
from shoal.node.metadata.view import MetadataView, ViewCache, default_replication


def _cluster(states: dict[str, str], *, shards: int = 4, replication: int = 3) -> dict[str, Any]:
    state = fsm.initial_state()
    for i, node_id in enumerate(states):
        state, result = fsm.apply(state, commands.register_node(node_id, f"h:{7400 + i}", "", f"h:{7500 + i}"))
        assert result["ok"], result
    state, result = fsm.apply(state, commands.create_dataset("ds", shards, replication))
    assert result["ok"], result
    for node_id, node_state in states.items():
        if node_state != "alive":
            state, result = fsm.apply(state, commands.set_node_state(node_id, node_state))
            assert result["ok"], result
    return state


def test_view_under_replicated_counts_only_copies_on_alive_nodes() -> None:
    """One rule for the metric, the controller and `shoal status`: suspect, draining and dead copies do not count."""
    for state_of_n3 in ("suspect", "draining", "dead", "removed"):
        view = MetadataView.from_state(_cluster({"n1": "alive", "n2": "alive", "n3": state_of_n3}))
        assert view.under_replicated() == 4, state_of_n3
        assert view.under_replicated("ds") == 4
    assert MetadataView.from_state(_cluster({"n1": "alive", "n2": "alive", "n3": "alive"})).under_replicated() == 0


def test_view_answers_shard_node_and_leader_questions() -> None:
    """Shard lookup, in-sync and holds tests, raft-address lookup and the default replication."""
    view = MetadataView.from_state(_cluster({"n1": "alive", "n2": "alive", "n3": "dead"}, shards=2))
    shard = view.shard("ds", 1)
    assert shard is not None and shard.name == "ds/1" and shard.epoch == 1
    assert shard.in_sync(shard.primary) and shard.holds(shard.primary) and not shard.in_sync("nobody")
    assert shard.backups() == [r for r in shard.replicas if r != shard.primary]
    assert view.shard("ds", 2) is None and view.shard("nope", 0) is None
    leader = view.node_by_raft_address("h:7501")
    assert leader is not None and leader.id == "n2" and leader.voter
    assert view.node_by_raft_address("") is None and view.node_by_raft_address("h:1") is None
    assert view.default_replication() == 2 == default_replication(2)
    assert [default_replication(n) for n in (0, 1, 3, 9)] == [1, 1, 3, 3]


def test_view_cache_builds_one_view_per_state() -> None:
    """The same state object gives the same view object; a new state gives a new view."""
    state = _cluster({"n1": "alive"}, replication=1)
    cache = ViewCache()
    first = cache.get(state)
    assert cache.get(state) is first
    newer, _ = fsm.apply(state, commands.drop_dataset("ds"))
    assert cache.get(newer) is not first and cache.get(newer).dataset("ds") is None
