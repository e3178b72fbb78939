"""Cluster status, assembled: one dict from the cluster map plus every node's own NodeStatus.

Pure (no I/O). Both sides use it: the client's `shoal status` (client/_status.py asks
the nodes) and the node's dashboard API (node/http/api.py asks its peers), so the CLI and
the web page always show the same numbers, computed once.

The dict is the contract of `shoal status --json` (DESIGN.md section 9), which scripts and
our own checks read, so keys are only ever added:

    {"version": int, "controller": str,                   # node id of the Raft leader ("" if none)
     "nodes": [{"id", "address", "zone", "state", "suspect", "silent_s", "raft_role", "reachable", "shards",
                "primaries", "learners", "disk_free_bytes", "disk_used_bytes", "uptime_s",
                "lease_valid", "version", "error",
                "http_address", "requests_in_flight", "tasks_running", "load_1m"}],   # None if not reachable
     "datasets": [{"name", "shards", "replication", "under_replicated"}],
     "under_replicated": int,
     "unavailable": int,                                   # shards with no in-sync copy on an alive node
     "degraded_shards": [{"dataset", "shard", "state",     # "unavailable" or "under-replicated"
                          "copies_left", "replication", "primary", "replicas", "learners",
                          "repair": [{"node", "phase",        # copying | replaying | joining (learner's word)
                                      "records_done", "records_total", "percent", "bytes_per_s",
                                      "eta_s"}]}]}     # percent, eta_s None when unknown

"suspect" and "silent_s" are the controller's own view (seconds since it last heard the node;
a node silent past node_suspect_after_s is suspect until it is heard or declared dead);
only the state goes through Raft. Shard and primary counts come from the map (the controller's word, also for nodes that
do not answer); raft role, disk, load and uptime come from the node itself and are None when
it did not answer within the short per-node timeout. An unreachable node is reported
(`reachable: false`, `error`), never raised: status is what one runs when things break.
Under-replicated counts are the node's (ClusterMap.under_replicated and
DatasetInfo.under_replicated, one rule in node/metadata/view.py): status shows them
and never re-derives them. "Unavailable" (no in-sync replica on an alive node: reads
and writes of the shard fail) is not sent by the node yet, so `degraded_shards`
derives it from the same map with the same rule (in-sync replicas on nodes whose state
is "alive"); `degraded_shards` lists every shard below its replication with the copies
left, unavailable ones first. Move it to the node (view.py) when the map carries it.

A node that did not answer is given as an exception (the client's ShoalError, the node's
own failure type): its `message` attribute, else str(), becomes the entry's "error".
"""
from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from shoal.client.wire.pb import data_pb2 as pb

def assemble(cluster_map: pb.ClusterMap, statuses: Mapping[str, pb.NodeStatus | BaseException]) -> dict[str, Any]:
    """Pure: the status dict from a map and what each address answered."""
    hosted: collections.Counter[str] = collections.Counter()
    primaries: collections.Counter[str] = collections.Counter()
    learners: collections.Counter[str] = collections.Counter()
    for dataset in cluster_map.datasets:
        for shard in dataset.shard_map:
            hosted.update(set(shard.replicas) | set(shard.learners))
            learners.update(shard.learners)
            if shard.primary:
                primaries[shard.primary] += 1
    controller = next((status for status in statuses.values()
                       if isinstance(status, pb.NodeStatus) and status.silence_s), None)
    nodes = [_node_entry(node, statuses.get(node.address), hosted[node.id], primaries[node.id],
                         learners[node.id], controller) for node in cluster_map.nodes]
    degraded = degraded_shards(cluster_map)
    repairs = repair_progress(cluster_map, statuses)
    for entry in degraded:
        entry["repair"] = repairs.get((entry["dataset"], entry["shard"]), [])
    datasets = [{"name": d.name, "shards": d.shards, "replication": d.replication,
                 "under_replicated": d.under_replicated} for d in cluster_map.datasets]
    return {
        "version": cluster_map.version,
        "controller": cluster_map.controller,
        "nodes": nodes,
        "datasets": datasets,
        "under_replicated": cluster_map.under_replicated,
        "unavailable": sum(1 for entry in degraded if entry["state"] == "unavailable"),
        "degraded_shards": degraded,
    }


def degraded_shards(cluster_map: pb.ClusterMap) -> list[dict[str, Any]]:
    """Pure: shards with fewer in-sync replicas on alive nodes than their dataset's replication,
    unavailable (none left) first, then by dataset and shard."""
    alive = {node.id for node in cluster_map.nodes if node.state == "alive"}
    found = []
    for dataset in cluster_map.datasets:
        for shard in dataset.shard_map:
            copies_left = sum(1 for replica in shard.replicas if replica in alive)
            if copies_left >= dataset.replication:
                continue
            found.append({"dataset": dataset.name, "shard": shard.index,
                          "state": "unavailable" if copies_left == 0 else "under-replicated",
                          "copies_left": copies_left, "replication": dataset.replication,
                          "primary": shard.primary, "replicas": list(shard.replicas),
                          "learners": list(shard.learners)})
    found.sort(key=lambda entry: (entry["copies_left"] > 0, entry["dataset"], entry["shard"]))
    return found


def repair_progress(cluster_map: pb.ClusterMap, statuses: Mapping[str, pb.NodeStatus | BaseException]
                    ) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Pure: (dataset, shard) -> the copies under way, as each learner reports them."""
    ids = {node.address: node.id for node in cluster_map.nodes}
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for address, status in statuses.items():
        if not isinstance(status, pb.NodeStatus):
            continue
        for shard in status.shards:
            if shard.role != "learner":
                continue
            total = shard.fill_records_total
            found.setdefault((shard.dataset, shard.index), []).append({
                "node": ids.get(address, status.id), "phase": shard.fill_phase or "starting",
                "records_done": shard.fill_records_done, "records_total": total,
                "percent": round(100.0 * min(shard.fill_records_done, total) / total, 1) if total else None,
                "bytes_per_s": round(shard.fill_bytes_per_s), "eta_s": round(shard.fill_eta_s, 1) or None})
    return found


def _node_entry(node: pb.NodeInfo, status: pb.NodeStatus | BaseException | None, shards: int, primaries: int,
                learners: int, controller: pb.NodeStatus | None) -> dict[str, Any]:
    silent_s = controller.silence_s.get(node.id, 0.0) if controller is not None else 0.0
    entry: dict[str, Any] = {
        "id": node.id,
        "address": node.address,
        "zone": node.zone,
        "state": node.state,
        "suspect": node.state == "alive" and controller is not None and silent_s > controller.suspect_after_s,
        "silent_s": round(silent_s, 1),
        "raft_role": "unknown",
        "reachable": isinstance(status, pb.NodeStatus),
        "shards": shards,
        "primaries": primaries,
        "learners": learners,
        "disk_free_bytes": None,
        "disk_used_bytes": None,
        "uptime_s": None,
        "lease_valid": None,
        "version": None,
        "error": None,
        "http_address": None,
        "requests_in_flight": None,
        "tasks_running": None,
        "load_1m": None,
    }
    if isinstance(status, pb.NodeStatus):
        entry.update(raft_role=status.raft_role or "none", disk_free_bytes=status.disk_free_bytes,
                     disk_used_bytes=status.disk_used_bytes, uptime_s=round(status.uptime_s, 3),
                     lease_valid=status.lease_valid, version=status.version, http_address=status.http_address,
                     requests_in_flight=status.requests_in_flight, tasks_running=status.tasks_running,
                     load_1m=round(status.load_1m, 2))
    elif status is not None:
        entry["error"] = str(getattr(status, "message", "") or status)
    else:
        entry["error"] = "not asked: the node has no address"
    return entry
