"""Cluster status, assembled: one dict from the cluster map plus every node's own NodeStatus.

Pure (no I/O). Both sides use it: the client's `shoal status` (client/_status.py asks
the nodes) and the node's dashboard API (node/http/api.py asks its peers), so the CLI and
the web page always show the same numbers, computed once.

The dict is the contract of `shoal status --json` (DESIGN.md section 9), which scripts and
our own checks read, so keys are only ever added:

    {"version": int, "controller": str,                   # node id of the Raft leader ("" if none or no quorum)
     "quorum": {"voters", "voters_reachable", "ok"},    # metadata voters in the map, how many answered here
     "warnings": [str],                                  # one line each: "no controller: ..." (shown by the CLI)
     "nodes": [{"id", "address", "zone", "state", "suspect", "silent_s", "raft_role", "reachable", "shards",
                "primaries", "learners", "disk_free_bytes", "disk_used_bytes", "uptime_s",
                "lease_valid", "version", "error",
                "http_address", "requests_in_flight", "tasks_running", "load_1m"}],   # None if not reachable
     "datasets": [{"name", "shards", "replication", "under_replicated"}],
     "under_replicated": int,
     "unavailable": int,                                   # shards no one can serve now (see below)
     "degraded_shards": [{"dataset", "shard", "state",     # "unavailable" or "under-replicated"
                          "reason",                        # why unavailable ("" when under-replicated)
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

Quorum. The metadata voters are the map's nodes with a Raft address (not removed). The
controller is named only when a majority of them answered here and the map names one
that, if it answered, still leads Raft; otherwise "controller" is "" and `warnings` says
"no controller: the metadata has no quorum (1 of 3 voters reachable)" (or that no leader
is elected). "Reachable" is from where status runs: a client cut off from a healthy
majority sees the same. A shard is also unavailable when its primary cannot hold a lease:
its node answered lease_valid false, or, with no quorum, it did not answer (no controller
can grant it one). A map without voters (a standalone node) has no quorum to lose.

A node that did not answer is given as an exception (the client's ShoalError, the node's
own failure type): its `message` attribute, else str(), becomes the entry's "error".
"""
from __future__ import annotations

import collections
from collections.abc import Collection, Mapping
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
    quorum, warning = metadata_quorum(cluster_map, statuses)
    no_lease = {node.id for node in cluster_map.nodes
                if not _holds_lease(statuses.get(node.address), quorum["ok"])}
    degraded = degraded_shards(cluster_map, no_lease)
    repairs = repair_progress(cluster_map, statuses)
    for entry in degraded:
        entry["repair"] = repairs.get((entry["dataset"], entry["shard"]), [])
    datasets = [{"name": d.name, "shards": d.shards, "replication": d.replication,
                 "under_replicated": d.under_replicated} for d in cluster_map.datasets]
    return {
        "version": cluster_map.version,
        "controller": cluster_map.controller if quorum["ok"] else "",
        "quorum": quorum,
        "warnings": [warning] if warning else [],
        "nodes": nodes,
        "datasets": datasets,
        "under_replicated": cluster_map.under_replicated,
        "unavailable": sum(1 for entry in degraded if entry["state"] == "unavailable"),
        "degraded_shards": degraded,
    }


def metadata_quorum(cluster_map: pb.ClusterMap, statuses: Mapping[str, pb.NodeStatus | BaseException]
                    ) -> tuple[dict[str, Any], str]:
    """Pure: ({"voters", "voters_reachable", "ok"}, the warning line or "") (module docstring)."""
    voters = [node for node in cluster_map.nodes if node.raft_address and node.state != "removed"]
    answered = {node.id: status for node in voters
                if isinstance(status := statuses.get(node.address), pb.NodeStatus)}
    quorum = {"voters": len(voters), "voters_reachable": len(answered), "ok": True}
    if not voters:
        return quorum, ""
    reachable = f"{len(answered)} of {len(voters)} voters reachable"
    if 2 * len(answered) <= len(voters):
        quorum["ok"] = False
        return quorum, f"no controller: the metadata has no quorum ({reachable}); no lease is granted, so " \
                       "reads and writes fail until a majority of the voters is back"
    leader = answered.get(cluster_map.controller)
    if not cluster_map.controller or (leader is not None and leader.raft_role != "leader"):
        quorum["ok"] = False
        return quorum, f"no controller: no metadata leader elected yet ({reachable})"
    return quorum, ""


def _holds_lease(status: pb.NodeStatus | BaseException | None, quorum_ok: bool) -> bool:
    """Can this node hold a primary's lease now: its own word when it answered, else the map's (quorum)."""
    return status.lease_valid if isinstance(status, pb.NodeStatus) else quorum_ok


def degraded_shards(cluster_map: pb.ClusterMap, no_lease: Collection[str] = ()) -> list[dict[str, Any]]:
    """Pure: shards with fewer in-sync replicas on alive nodes than their dataset's replication, and
    shards whose primary is in `no_lease` (cannot hold a lease: nothing of the shard is served);
    unavailable first, then by dataset and shard."""
    alive = {node.id for node in cluster_map.nodes if node.state == "alive"}
    found = []
    for dataset in cluster_map.datasets:
        for shard in dataset.shard_map:
            copies_left = sum(1 for replica in shard.replicas if replica in alive)
            leaseless = copies_left > 0 and shard.primary in no_lease
            if copies_left >= dataset.replication and not leaseless:
                continue
            reason = ("no in-sync copy on an alive node" if copies_left == 0
                      else f"primary {shard.primary} holds no lease" if leaseless else "")
            found.append({"dataset": dataset.name, "shard": shard.index,
                          "state": "unavailable" if reason else "under-replicated", "reason": reason,
                          "copies_left": copies_left, "replication": dataset.replication,
                          "primary": shard.primary, "replicas": list(shard.replicas),
                          "learners": list(shard.learners)})
    found.sort(key=lambda entry: (entry["state"] != "unavailable", entry["dataset"], entry["shard"]))
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
