"""Placement properties: distinct nodes, zone spreading, balance within one, determinism."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.node.placement import place


def nodes_in_zones(count: int, zones: int) -> dict[str, str]:
    """count nodes n00.., spread round robin over `zones` zones (0 = no zones)."""
    return {f"n{i:02d}": (f"z{i % zones}" if zones else "") for i in range(count)}


def counts(placement: list[list[str]], nodes: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """(replicas per node, primaries per node), every node present."""
    load: Counter[str] = Counter({node_id: 0 for node_id in nodes})
    primaries: Counter[str] = Counter({node_id: 0 for node_id in nodes})
    for replicas in placement:
        primaries[replicas[0]] += 1
        load.update(replicas)
    return load, primaries


_layouts = st.integers(1, 4).flatmap(lambda zones: st.tuples(
    st.just(zones), st.integers(1, 3).map(lambda per_zone: per_zone * zones), st.booleans()))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(layout=_layouts, replication=st.integers(1, 5), shards=st.integers(0, 60), datasets=st.integers(1, 3))
def test_placement_balances_replicas_and_primaries_within_one(
        layout: tuple[int, int, bool], replication: int, shards: int, datasets: int) -> None:
    """On equal zones (or none), replicas and primaries per node differ by at most one, dataset after dataset."""
    zones, node_count, zoned = layout
    nodes = nodes_in_zones(node_count, zones if zoned else 0)
    replication = min(replication, node_count)
    load: Counter[str] = Counter()
    primaries: Counter[str] = Counter()
    for _ in range(datasets):
        placement = place(nodes, load, primaries, shards, replication)
        assert len(placement) == shards
        added_load, added_primaries = counts(placement, nodes)
        load.update(added_load)
        primaries.update(added_primaries)
        for replicas in placement:
            assert len(replicas) == replication and len(set(replicas)) == replication
            assert set(replicas) <= set(nodes)
    assert max(load.values()) - min(load.values(), default=0) <= 1
    assert max(primaries.values()) - min(primaries.values(), default=0) <= 1


@settings(max_examples=200, deadline=None, derandomize=True)
@given(zone_of=st.lists(st.sampled_from(["a", "b", "c", "d", ""]), min_size=1, max_size=9),
       replication=st.integers(1, 4), shards=st.integers(1, 20))
def test_placement_uses_as_many_zones_as_it_can(zone_of: list[str], replication: int, shards: int) -> None:
    """Each shard spans min(R, zones available) distinct zones, even with uneven zone sizes."""
    nodes = {f"n{i}": zone for i, zone in enumerate(zone_of)}
    replication = min(replication, len(nodes))
    domains = {zone or f"own-{node_id}" for node_id, zone in nodes.items()}
    for replicas in place(nodes, {}, {}, shards, replication):
        assert len(set(replicas)) == replication
        used = {nodes[n] or f"own-{n}" for n in replicas}
        assert len(used) == min(replication, len(domains))


def test_placement_spreads_one_shard_across_three_zones() -> None:
    """With three zones and R=3, every shard has one replica in each zone."""
    nodes = nodes_in_zones(9, 3)
    for replicas in place(nodes, {}, {}, 12, 3):
        assert sorted(nodes[n] for n in replicas) == ["z0", "z1", "z2"]


def test_placement_is_deterministic_whatever_the_input_order() -> None:
    """The same nodes and loads in any dict order give the same placement."""
    nodes = nodes_in_zones(7, 2)
    load = {"n03": 2, "n05": 1}
    forward = place(nodes, load, {}, 20, 3)
    backward = place(dict(reversed(list(nodes.items()))), dict(reversed(list(load.items()))), {}, 20, 3)
    assert forward == backward == place(nodes, load, {}, 20, 3)


def test_placement_prefers_least_loaded_nodes_and_breaks_ties_by_id() -> None:
    """Existing load steers new replicas away; equal candidates are taken in node id order."""
    nodes = nodes_in_zones(4, 0)
    assert place(nodes, {}, {}, 1, 2) == [["n00", "n01"]]
    assert place(nodes, {"n00": 5, "n01": 5}, {"n00": 1, "n01": 1}, 1, 2) == [["n02", "n03"]]
    placement = place(nodes, {"n00": 3}, {}, 3, 1)
    assert Counter(r[0] for r in placement) == Counter({"n01": 1, "n02": 1, "n03": 1})


def test_placement_spreads_primaries_over_existing_primary_load() -> None:
    """A node that already leads many shards is not picked as primary while others lead fewer."""
    nodes = nodes_in_zones(3, 0)
    placement = place(nodes, {"n00": 4, "n01": 4, "n02": 4}, {"n00": 4}, 4, 3)
    assert [replicas[0] for replicas in placement] == ["n01", "n02", "n01", "n02"]


@pytest.mark.parametrize("node_count, replication, shards", [(2, 3, 1), (0, 1, 1), (3, 0, 1), (3, 1, -1)])
def test_placement_rejects_impossible_requests(node_count: int, replication: int, shards: int) -> None:
    """Fewer nodes than R, R below one or a negative shard count raise ValueError."""
    with pytest.raises(ValueError):
        place(nodes_in_zones(node_count, 0), {}, {}, shards, replication)
