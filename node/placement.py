"""Placement: which nodes hold each shard's replicas. Pure: no I/O, no state, deterministic.

The state machine calls `place()` while applying `create_dataset`, on every voter and
again on every replay, so the answer must depend only on the arguments: candidates are
iterated in node-id order and every tie is broken by node id (never by dict order, a
random choice or the clock).

Per shard, the primary is chosen first, as the node with the fewest primaries (then the
fewest replicas, then the smallest id), so that primaries, and with them the write load,
spread evenly. Backups are then taken least loaded first, preferring zones that the shard
does not use yet. Zone spreading outranks balance: losing a zone must not lose every copy
of a shard, while uneven load only costs speed. Nodes with an empty zone count as a zone
of their own.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def place(nodes: Mapping[str, str], load: Mapping[str, int], primary_load: Mapping[str, int],
          shards: int, replication: int) -> list[list[str]]:
    """For each of `shards` shards, `replication` distinct node ids, primary first.

    nodes: node id -> zone ("" = none); load: replicas already on each node;
    primary_load: primaries already on each node. Missing entries count as 0.
    Raises ValueError if fewer nodes than `replication`, or on non-positive counts.
    """
    if replication < 1:
        raise ValueError(f"replication must be at least 1, got {replication}")
    if shards < 0:
        raise ValueError(f"shards must not be negative, got {shards}")
    if len(nodes) < replication:
        raise ValueError(f"placing {replication} replicas needs {replication} nodes, have {len(nodes)}")
    ids = sorted(nodes)
    replicas_count = {node_id: int(load.get(node_id, 0)) for node_id in ids}
    primaries_count = {node_id: int(primary_load.get(node_id, 0)) for node_id in ids}
    placement: list[list[str]] = []
    for _ in range(shards):
        chosen = _place_one(ids, nodes, replicas_count, primaries_count, replication)
        primaries_count[chosen[0]] += 1
        for node_id in chosen:
            replicas_count[node_id] += 1
        placement.append(chosen)
    return placement


def _place_one(ids: list[str], zones: Mapping[str, str], replicas_count: Mapping[str, int],
               primaries_count: Mapping[str, int], replication: int) -> list[str]:
    """One shard: the primary, then backups in distinct zones where possible."""
    primary = min(ids, key=lambda n: (primaries_count[n], replicas_count[n], n))
    chosen = [primary]
    zone_use: dict[str, int] = {}
    _use_zone(zone_use, zones[primary], primary)
    while len(chosen) < replication:
        backup = min((n for n in ids if n not in chosen),
                     key=lambda n: (zone_use.get(_zone_key(zones[n], n), 0), replicas_count[n], n))
        chosen.append(backup)
        _use_zone(zone_use, zones[backup], backup)
    return chosen


def _zone_key(zone: str, node_id: str) -> str:
    # A node without a zone is its own failure domain; "\0" cannot clash with a zone name
    return zone if zone else "\0" + node_id


def _use_zone(zone_use: dict[str, int], zone: str, node_id: str) -> None:
    key = _zone_key(zone, node_id)
    zone_use[key] = zone_use.get(key, 0) + 1
