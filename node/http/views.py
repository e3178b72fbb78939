"""The dashboard API's JSON shapes, built from what `shoal status` reads. Pure: no I/O.

Inputs are the cluster map (status.cluster_map), each node's NodeStatus or the reason it
did not answer, the status dict the wire room assembles from both (client/wire/status.py:
the `shoal status --json` contract), the node's metadata view (jobs) and the
UnderReplicationClock. Nothing here re-derives a number that status already has.

Shapes (times: seconds; `*_at_s`: unix time; None: unknown):

    redundancy(status) -> {"state": "safe" | "at-risk" | "repairing" | "waiting" | "unavailable",
        "seconds_to_full": float | None,   # 0 when safe; the slowest copy's ETA; None if unknown
        "under_replicated": int, "unavailable": int, "copies": int (copies under way),
        "waiting": int (degraded shards with no copy under way), "suspect_nodes": [node id]}
    datasets(...) -> [{"name", "id", "shards", "replication", "under_replicated",
        "shard_map": [{"index", "epoch", "primary", "replicas" (in-sync set), "learners", "state",
            "copies_left", "under_replicated_for_s", "checksums_agree" (bool | None),
            "holders": [{"node", "role", "epoch", "seq", "records", "size_bytes",
                         "checksum" (16 hex digits), "scrubbed_at_s"}]}]}]
    repairs(status, ...) -> {"redundancy", "degraded_shards" (status entries + "under_replicated_for_s"),
        "copies": [{"dataset", "shard", "from" (the primary), "node", "phase", "percent",
                    "records_done", "records_total", "bytes_per_s", "eta_s"}]}
    jobs(view) -> [{"id", "dataset", "kind", "state", "error_code", "error", "submitted_at_s",
        "finished_at_s", "tasks_total", "tasks_done", "records_scanned", "attempts", "failovers",
        "tasks": [{"index", "done", "node", "records", "attempts": [{"attempt", "node"}], "failovers"}]}]
"""
from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from shoal.client.wire.pb import data_pb2

if TYPE_CHECKING:
    from shoal.node.http.under_replication import UnderReplicationClock
    from shoal.node.metadata.view import JobView, MetadataView

JOBS_LISTED_MAX: Final = 50   # newest first: the job table keeps finished jobs for a while


def redundancy(status: Mapping[str, Any]) -> dict[str, Any]:
    """How safe the data is right now, and how long until every shard has all its copies.

    The figure is the largest ETA of the copies under way (each learner reports its own,
    from its rate): copies run in parallel, so the slowest one decides. It is unknown while
    a degraded shard has no copy under way yet (queued behind repair_transfers_per_node_max,
    or no node to copy to) or a copy has no rate yet. A learner that is joining is done copying.
    """
    degraded = list(status.get("degraded_shards", []))
    copies = [copy for entry in degraded for copy in entry.get("repair", [])]
    waiting = sum(1 for entry in degraded if not entry.get("repair"))
    suspect = [node["id"] for node in status.get("nodes", []) if node.get("suspect")]
    etas = [0.0 if copy.get("phase") == "joining" else copy.get("eta_s") for copy in copies]
    seconds: float | None
    if not degraded:
        state, seconds = ("at-risk" if suspect else "safe"), 0.0
    else:
        known = not waiting and all(eta is not None for eta in etas)
        seconds = max((float(eta) for eta in etas if eta is not None), default=0.0) if known else None
        state = "unavailable" if status.get("unavailable") else ("repairing" if copies else "waiting")
    return {"state": state, "seconds_to_full": seconds, "under_replicated": int(status.get("under_replicated", 0)),
            "unavailable": int(status.get("unavailable", 0)), "copies": len(copies), "waiting": waiting,
            "suspect_nodes": suspect}


def datasets(cluster_map: data_pb2.ClusterMap, statuses: Mapping[str, data_pb2.NodeStatus | BaseException],
             clock: UnderReplicationClock, now_s: float) -> list[dict[str, Any]]:
    """Every dataset with its shard map and, per shard, what each replica holder reports."""
    alive = {node.id for node in cluster_map.nodes if node.state == "alive"}
    holders = _holders(cluster_map, statuses)
    found: list[dict[str, Any]] = []
    for dataset in cluster_map.datasets:
        shard_map: list[dict[str, Any]] = []
        for shard in dataset.shard_map:
            copies_left = sum(1 for replica in shard.replicas if replica in alive)
            reports = holders.get((dataset.name, shard.index), [])
            in_sync = {(report["seq"], report["checksum"]) for report in reports
                       if report["role"] in ("primary", "backup")}
            shard_map.append({
                "index": shard.index, "epoch": shard.epoch, "primary": shard.primary,
                "replicas": list(shard.replicas), "learners": list(shard.learners),
                "state": _shard_state(copies_left, dataset.replication), "copies_left": copies_left,
                "under_replicated_for_s": clock.seconds(dataset.name, shard.index, now_s),
                "checksums_agree": len(in_sync) == 1 if in_sync else None,   # same seq and checksum everywhere
                "holders": reports})
        found.append({"name": dataset.name, "id": dataset.id, "shards": dataset.shards,
                      "replication": dataset.replication, "under_replicated": dataset.under_replicated,
                      "shard_map": shard_map})
    return found


def repairs(status: Mapping[str, Any], clock: UnderReplicationClock, now_s: float) -> dict[str, Any]:
    """The degraded shards (from status, with how long each has been so) and every copy under way."""
    degraded = [{**entry, "under_replicated_for_s": clock.seconds(entry["dataset"], entry["shard"], now_s)}
                for entry in status.get("degraded_shards", [])]
    copies = [{"dataset": entry["dataset"], "shard": entry["shard"], "from": entry["primary"], **copy}
              for entry in degraded for copy in entry.get("repair", [])]
    return {"redundancy": redundancy(status), "degraded_shards": degraded, "copies": copies}


def jobs(view: MetadataView, limit: int = JOBS_LISTED_MAX) -> list[dict[str, Any]]:
    """The newest `limit` jobs of the metadata's job table, newest first."""
    newest = sorted(view.jobs.values(), key=lambda job: job.submitted_at_s, reverse=True)[:limit]
    return [_job(job) for job in newest]


def _job(job: JobView) -> dict[str, Any]:
    """A failover is every attempt after a task's first: a re-run after its node was lost, or a
    speculative copy of a straggler (the job table records the attempts, not why each began)."""
    tasks: list[dict[str, Any]] = [{"index": task.index, "done": bool(task.done), "node": task.node, "records": task.records,
              "attempts": [{"attempt": number, "node": node} for number, node in task.attempts],
              "failovers": max(0, len(task.attempts) - 1)} for task in job.tasks]
    return {"id": job.id, "dataset": job.dataset, "kind": job.kind, "state": job.state,
            "error_code": job.error_code, "error": job.error, "submitted_at_s": job.submitted_at_s,
            "finished_at_s": job.finished_at_s or None, "tasks_total": len(job.tasks), "tasks_done": job.tasks_done,
            "records_scanned": job.records_scanned, "attempts": sum(len(task.attempts) for task in job.tasks),
            "failovers": sum(max(0, len(task.attempts) - 1) for task in job.tasks), "tasks": tasks}


def _holders(cluster_map: data_pb2.ClusterMap, statuses: Mapping[str, data_pb2.NodeStatus | BaseException]
             ) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(dataset, shard) -> what each node that answered says of its replica (current incarnation only)."""
    ids = {node.address: node.id for node in cluster_map.nodes}
    dataset_ids = {dataset.name: dataset.id for dataset in cluster_map.datasets}
    found: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for address, status in statuses.items():
        if not isinstance(status, data_pb2.NodeStatus):
            continue
        for shard in status.shards:
            if dataset_ids.get(shard.dataset) not in (shard.dataset_id, None):
                continue   # a replica of a dropped incarnation, waiting to be deleted
            found[(shard.dataset, shard.index)].append({
                "node": ids.get(address, status.id), "role": shard.role, "epoch": shard.epoch, "seq": shard.seq,
                "records": shard.records, "size_bytes": shard.size_bytes, "checksum": f"{shard.checksum:016x}",
                "scrubbed_at_s": shard.scrubbed_at_s or None})
    for reports in found.values():
        reports.sort(key=lambda report: ("primary", "backup", "learner", "stale").index(report["role"])
                     if report["role"] in ("primary", "backup", "learner", "stale") else 4)
    return found


def _shard_state(copies_left: int, replication: int) -> str:
    """ok | under-replicated | unavailable: the rule of client/wire/status.degraded_shards."""
    if copies_left >= replication:
        return "ok"
    return "unavailable" if copies_left == 0 else "under-replicated"
