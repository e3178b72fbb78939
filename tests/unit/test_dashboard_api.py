"""Issue 20: the pure parts of the dashboard API: chaos report folders (no path leaves the
root), the redundancy figure, shard tables, the under-replication clock and the job rows.

Real files in tmp_path and real metadata views built from state dicts; no node, no network.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

from shoal.client.wire.pb import data_pb2
from shoal.client.wire.status import assemble
from shoal.node.config import NodeConfig
from shoal.node.http import chaos_reports, views
from shoal.node.http.under_replication import UnderReplicationClock
from shoal.node.metadata.view import MetadataView


def _report(folder: pathlib.Path, verdict: str = "pass", picture: bool = True) -> None:
    folder.mkdir(parents=True)
    checks = {"no_lost_writes": {"passed": verdict == "pass", "summary": "2 writes lost" if verdict == "fail" else "ok"}}
    (folder / "report.json").write_text(json.dumps({"verdict": verdict, "seed": 7, "ops": 10, "scenario": "s",
                                                    "checks": checks}))
    if picture:
        (folder / "timeline.png").write_bytes(b"\x89PNG fake")


def test_chaos_reports_lists_folders_and_refuses_paths_out_of_the_root(tmp_path: pathlib.Path) -> None:
    """Reports are the root's folders with a report.json; names with separators, dots, or a
    symlink out of the root are refused, and only report.json and timeline.png are read."""
    root = tmp_path / "chaos"
    _report(root / "run-1")
    _report(root / "run-2", verdict="fail", picture=False)
    _report(tmp_path / "outside")
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "notes.txt").write_text("not a report")
    listed = {report.name: report for report in chaos_reports.list_reports(root)}
    assert set(listed) == {"run-1", "run-2"}
    assert listed["run-2"].report["failed_checks"] == {"no_lost_writes": "2 writes lost"}
    assert listed["run-1"].has_timeline and not listed["run-2"].has_timeline
    assert chaos_reports.read_report(root, "run-1")["verdict"] == "pass"
    assert chaos_reports.read_timeline(root, "run-1") == b"\x89PNG fake"
    for name in ("escape", "..", "../outside", "run-1/../run-2", ".hidden", "", "run-1/report.json"):
        assert chaos_reports.read_report(root, name) is None, name
        assert chaos_reports.read_timeline(root, name) is None, name
    assert chaos_reports.list_reports(tmp_path / "missing") == []


def test_chaos_reports_root_defaults_beside_the_node_folders(tmp_path: pathlib.Path) -> None:
    """chaos_reports_dir empty: DATA_DIR/../chaos (for shoal up: the cluster folder's chaos/)."""
    config = NodeConfig(node_id="n1", data_dir=tmp_path / "cluster" / "n1")
    assert chaos_reports.reports_root(config) == (tmp_path / "cluster" / "chaos").resolve()
    other = NodeConfig(node_id="n1", data_dir=tmp_path / "n1", chaos_reports_dir=str(tmp_path / "reports"))
    assert chaos_reports.reports_root(other) == tmp_path / "reports"


def _state(nodes: dict[str, str], replicas: list[list[str]], learners: list[list[str]]) -> dict[str, Any]:
    shard_map = [{"epoch": 2, "primary": r[0] if r else "", "replicas": r, "learners": lr, "incarnations": {}}
                 for r, lr in zip(replicas, learners)]
    return {"version": 9, "cluster_id": "c",
            "nodes": {n: {"address": f"127.0.0.1:{700 + i}", "zone": "", "state": s, "raft_address": ""}
                      for i, (n, s) in enumerate(nodes.items())},
            "datasets": {"kv": {"id": "kv@3", "shards": len(replicas), "replication": 2, "shard_map": shard_map}}}


def _cluster_map(view: MetadataView) -> data_pb2.ClusterMap:
    return data_pb2.ClusterMap(
        version=view.version, controller="a",
        nodes=[data_pb2.NodeInfo(id=n.id, address=n.address, state=n.state) for n in view.nodes.values()],
        datasets=[data_pb2.DatasetInfo(name=d.name, id=d.id, shards=d.shards, replication=d.replication,
                                       under_replicated=view.under_replicated(d.name),
                                       shard_map=[data_pb2.ShardInfo(index=s.index, epoch=s.epoch, primary=s.primary,
                                                                     replicas=s.replicas, learners=s.learners)
                                                  for s in d.shard_map]) for d in view.datasets.values()],
        under_replicated=view.under_replicated())


def test_views_redundancy_shards_and_clock_during_a_repair() -> None:
    """Node b is dead: shard 0 (a, b) is copying to c with an ETA, shard 1 (b, c) waits; the
    figure is unknown until every degraded shard has a copy with an ETA, then the slowest ETA."""
    view = MetadataView.from_state(_state({"a": "alive", "b": "dead", "c": "alive"},
                                          [["a", "b"], ["b", "c"], ["a", "c"]], [["c"], [], []]))
    cluster_map = _cluster_map(view)
    learner = data_pb2.ShardStatus(dataset="kv", index=0, role="learner", dataset_id="kv@3", fill_records_done=50,
                                   fill_records_total=100, fill_bytes_per_s=1000.0, fill_phase="copying",
                                   fill_eta_s=4.0)
    primary = data_pb2.ShardStatus(dataset="kv", index=0, role="primary", dataset_id="kv@3", seq=5, checksum=9,
                                   scrubbed_at_s=1700000000.0)
    statuses: dict[str, data_pb2.NodeStatus | BaseException] = {
        "127.0.0.1:700": data_pb2.NodeStatus(id="a", lease_valid=True, shards=[primary]),
        "127.0.0.1:701": RuntimeError("connection refused"),
        "127.0.0.1:702": data_pb2.NodeStatus(id="c", lease_valid=True, shards=[learner])}
    status = assemble(cluster_map, statuses)
    assert views.redundancy(status) == {"state": "repairing", "seconds_to_full": None, "under_replicated": 2,
                                        "unavailable": 0, "copies": 1, "waiting": 1, "suspect_nodes": []}
    clock = UnderReplicationClock(now_s=100.0)
    clock.observe(view, 100.0)
    clock.observe(view, 112.5)
    repairs = views.repairs(status, clock, 112.5)
    assert [entry["under_replicated_for_s"] for entry in repairs["degraded_shards"]] == [12.5, 12.5]
    assert repairs["copies"][0] | {"from": "a", "node": "c", "eta_s": 4.0, "percent": 50.0} == repairs["copies"][0]
    shards = views.datasets(cluster_map, statuses, clock, 120.0)[0]["shard_map"]
    assert [s["state"] for s in shards] == ["under-replicated", "under-replicated", "ok"]
    assert shards[0]["under_replicated_for_s"] == 20.0 and shards[2]["under_replicated_for_s"] is None
    assert [(h["node"], h["role"]) for h in shards[0]["holders"]] == [("a", "primary"), ("c", "learner")]
    assert shards[0]["holders"][0]["scrubbed_at_s"] == 1700000000.0 and shards[0]["checksums_agree"] is True
    statuses["127.0.0.1:702"] = data_pb2.NodeStatus(id="c", lease_valid=True, shards=[learner, data_pb2.ShardStatus(
        dataset="kv", index=1, role="learner", dataset_id="kv@3", fill_phase="joining")])
    copying = _cluster_map(MetadataView.from_state(_state({"a": "alive", "b": "dead", "c": "alive"},
                                                          [["a", "b"], ["c"], ["a", "c"]], [["c"], ["a"], []])))
    assert views.redundancy(assemble(copying, statuses))["seconds_to_full"] == 4.0
    healed = MetadataView.from_state(_state({"a": "alive", "b": "dead", "c": "alive"},
                                            [["a", "c"], ["c", "a"], ["a", "c"]], [[], [], []]))
    clock.observe(healed, 130.0)
    assert clock.seconds("kv", 0, 130.0) is None
    assert views.redundancy(assemble(_cluster_map(healed), {}))["state"] == "safe"


def test_views_jobs_count_attempts_and_failovers() -> None:
    """A task re-run on another node counts one failover; jobs are listed newest first."""
    def job(job_id: str, submitted_at_s: float, attempts: list[list[Any]]) -> dict[str, Any]:
        return {"id": job_id, "dataset": "kv", "dataset_id": "kv@3", "kind": "query", "spec": b"", "state": "done",
                "error_code": "", "error": "", "submitted_at_s": submitted_at_s, "finished_at_s": submitted_at_s + 1,
                "tasks": [{"attempts": a, "done": len(a), "node": a[-1][1], "records": 10} for a in attempts]}
    state = _state({"a": "alive"}, [["a"]], [[]]) | {
        "jobs": {"old": job("old", 1.0, [[[1, "a"]]]), "new": job("new", 2.0, [[[1, "b"], [2, "a"]], [[1, "a"]]])}}
    rows = views.jobs(MetadataView.from_state(state))
    assert [row["id"] for row in rows] == ["new", "old"]
    assert (rows[0]["attempts"], rows[0]["failovers"], rows[0]["tasks"][0]["failovers"]) == (3, 1, 1)
    assert rows[0]["tasks"][0]["attempts"] == [{"attempt": 1, "node": "b"}, {"attempt": 2, "node": "a"}]
