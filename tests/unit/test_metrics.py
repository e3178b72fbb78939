"""Issue 19.5: the node's /metrics collector, its latency buckets, and the Grafana dashboard that reads them.

The collector runs over a fake node (the MetricsSource protocol and nothing else) that
holds one replica in each role, a learner mid-copy, Raft statistics, pacing readings
and task counters, so every family the collector can yield is yielded. The dashboard
check compares the metric names its expressions use with those sample names: a panel
naming a metric the collector does not export fails it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shoal.node.compute.tasks import TaskStatistics
from shoal.node.config import NodeConfig
from shoal.node.http.metrics import make_registry
from shoal.node.interceptors import LATENCY_BOUNDS_S, LatencyHistogram, RequestStatistics
from shoal.node.metadata import MetadataStatistics
from shoal.node.metadata.view import MetadataView
from shoal.node.replication.copy_source import Throttle
from shoal.node.replication.pacing import PacingStatistics, WriteLatencyStatistics
from shoal.node.replication.replica import FillProgress

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bshoal_[a-z0-9_]+")


def test_latency_histogram_counts_each_duration_in_its_bucket() -> None:
    """Each duration lands in the first bucket whose upper bound is >= it (Prometheus `le`); past the last, +Inf.

    Method: observe durations on, just past and beyond bucket bounds; compare the counts,
    the cumulative buckets and the sum.
    """
    assert list(LATENCY_BOUNDS_S) == sorted(LATENCY_BOUNDS_S) and LATENCY_BOUNDS_S[0] == 0.001
    histogram = LatencyHistogram()
    for duration_s in (0.0, 0.001, 0.0011, 0.3, 10.0, 10.5, 600.0):
        histogram.observe(duration_s)
    buckets = histogram.snapshot()
    assert len(buckets.counts) == len(LATENCY_BOUNDS_S) + 1
    assert buckets.counts[0] == 2                                      # 0 and exactly 1 ms: le="0.001"
    assert buckets.counts[1] == 1                                      # 1.1 ms: le="0.0025"
    assert buckets.counts[LATENCY_BOUNDS_S.index(0.5)] == 1            # 300 ms
    assert buckets.counts[LATENCY_BOUNDS_S.index(10.0)] == 1           # exactly 10 s
    assert buckets.counts[-1] == 2                                     # past 10 s: +Inf only
    assert buckets.count == 7 and buckets.sum_s == pytest.approx(620.8021)
    cumulative = buckets.cumulative()
    assert cumulative[0] == ("0.001", 2) and cumulative[1] == ("0.0025", 3)
    assert cumulative[-2] == ("10.0", 5) and cumulative[-1] == ("+Inf", 7)
    assert [count for _, count in cumulative] == sorted(count for _, count in cumulative)
    histogram.observe(0.002)
    assert buckets.count == 7, "a snapshot is a copy"


class _Store:
    def __init__(self, records: int, size_bytes: int) -> None:
        self.state = dataclasses.make_dataclass("State", ["records"])(records)
        self._size_bytes = size_bytes
        self.incarnation = ""

    def size_bytes(self) -> int:
        return self._size_bytes


class _Primary:
    state = "active"

    def statistics(self) -> Any:
        return dataclasses.make_dataclass("Stats", ["groups_committed", "ops_committed"])(3, 40)


class _Replica:
    """A replica whose role is fixed (the fake metadata lists no shard, so replica_role asks it)."""

    def __init__(self, index: int, role: str, fill: FillProgress | None = None) -> None:
        self.dataset, self.dataset_id, self.index = "ds", "ds@1", index
        self.name = f"ds/{index}"
        self.store = _Store(records=100 * (index + 1), size_bytes=4096 * (index + 1))
        self.primary = _Primary() if role == "primary" else None
        self.fill = fill
        self._role = role

    def role(self, in_sync: bool, learner: bool = False) -> str:
        return self._role


class _Metadata:
    view = MetadataView.from_state({"version": 9, "nodes": {}, "datasets": {}})

    def is_leader(self) -> bool:
        return True

    def statistics(self) -> MetadataStatistics:
        return MetadataStatistics(role="leader", term=4, commit_index=17, last_applied=16, log_length=12,
                                  leader="127.0.0.1:7500", version=9)


class _Readings:
    def __init__(self, value: Any) -> None:
        self.value = value

    def statistics(self) -> Any:
        return self.value


class _Context:
    write_latency = _Readings(WriteLatencyStatistics(writes=500, p90_s=0.004, usual_s=0.003))
    copy_pacing = _Readings(PacingStatistics(share=0.5, slow_windows=3))

    async def run_blocking(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


class _Node:
    """Everything MetricsSource reads, with every optional part present."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = NodeConfig(node_id="m1", data_dir=tmp_path, raft="127.0.0.1:7500", raft_password="x" * 8)
        self.metadata = _Metadata()
        self.registry = self
        self.context = _Context()
        self.copy_throttle = Throttle(0)
        asyncio.run(self.copy_throttle.pay(5000))
        self.tasks = _Readings(TaskStatistics(running=2, completed=5, discarded=1, failed=1, skipped=1,
                                              uncommitted=0, refused=0))
        fill = FillProgress(records_done=30, records_total=120, bytes_done=9000)
        self._replicas = [_Replica(0, "primary"), _Replica(1, "backup"), _Replica(2, "learner", fill),
                          _Replica(3, "stale")]

    def replicas(self) -> list[Any]:
        return self._replicas

    def lease_valid(self) -> bool:
        return True

    def raft_role(self) -> str:
        return "leader"

    def request_statistics(self) -> RequestStatistics:
        get, put = LatencyHistogram(), LatencyHistogram()
        for duration_s in (0.0004, 0.002, 0.002):
            get.observe(duration_s)
        put.observe(20.0)
        return RequestStatistics(in_flight=1, in_flight_max=10, refused=0,
                                 by_method={"/shoal.v1.Data/Get": {"OK": 3}, "/shoal.v1.Data/Put": {"OK": 1}},
                                 latency_by_method={"/shoal.v1.Data/Get": {"OK": get.snapshot()},
                                                    "/shoal.v1.Data/Put": {"OK": put.snapshot()}})


def _families(tmp_path: Path) -> list[Any]:
    """The fake node's exposition text, parsed back into metric families."""
    registry, collector = make_registry(_Node(tmp_path))
    asyncio.run(collector.refresh())
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def _scrape(tmp_path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of a scrape of the fake node."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in _families(tmp_path) for sample in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"node": "m1", **labels}.items())))]


def test_collector_reads_every_part_of_the_node(tmp_path: Path) -> None:
    """Each new family carries the node's readings: latency buckets, roles, fills, copies, Raft, tasks, disk.

    Method: scrape the fake node through generate_latest, parse the text back with
    prometheus_client's parser (so the exposition is valid), and compare sample values.
    """
    samples = _scrape(tmp_path)
    get = {"method": "/shoal.v1.Data/Get", "outcome": "OK"}
    assert _value(samples, "shoal_request_duration_seconds_count", **get) == 3
    assert _value(samples, "shoal_request_duration_seconds_bucket", le="0.001", **get) == 1
    assert _value(samples, "shoal_request_duration_seconds_bucket", le="0.0025", **get) == 3
    assert _value(samples, "shoal_request_duration_seconds_sum", **get) == pytest.approx(0.0044)
    put = {"method": "/shoal.v1.Data/Put", "outcome": "OK"}
    assert _value(samples, "shoal_request_duration_seconds_bucket", le="10.0", **put) == 0
    assert _value(samples, "shoal_request_duration_seconds_bucket", le="+Inf", **put) == 1
    for role in ("primary", "backup", "learner", "stale"):
        assert _value(samples, "shoal_shard_replicas", role=role) == 1, role
    assert _value(samples, "shoal_shard_lmdb_bytes", shard="ds/2") == 3 * 4096
    assert _value(samples, "shoal_fill_records", shard="ds/2") == 30
    assert _value(samples, "shoal_fill_records_target", shard="ds/2") == 120
    assert _value(samples, "shoal_fill_received_bytes", shard="ds/2") == 9000
    assert _value(samples, "shoal_fill_rate_bytes_per_second", shard="ds/2") > 0
    assert ("shoal_fill_records", (("node", "m1"), ("shard", "ds/0"))) not in samples   # only learners
    assert _value(samples, "shoal_copy_sent_bytes_total") == 5000
    assert _value(samples, "shoal_copy_pacing_share") == 0.5
    assert _value(samples, "shoal_copy_pacing_slow_windows_total") == 3
    assert _value(samples, "shoal_write_latency_p90_seconds") == 0.004
    assert _value(samples, "shoal_raft_role", role="leader") == 1
    assert _value(samples, "shoal_raft_role", role="follower") == 0
    assert _value(samples, "shoal_raft_commit_index") == 17 and _value(samples, "shoal_raft_term") == 4
    assert _value(samples, "shoal_raft_log_entries") == 12
    assert _value(samples, "shoal_task_attempts_running") == 2
    assert _value(samples, "shoal_task_attempts_total", outcome="completed") == 5
    assert 0 < _value(samples, "shoal_disk_free_bytes") <= _value(samples, "shoal_disk_total_bytes")


def _dashboard_expressions(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and variable queries, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str):
                yield value
            else:
                yield from _dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_expressions(item)


def test_grafana_dashboard_uses_only_exported_metrics(tmp_path: Path) -> None:
    """docker/grafana-dashboard.json: a Prometheus datasource variable, and every metric it names is exported.

    Method: parse the JSON; take the `shoal_*` names of every target expression and
    variable query, and compare them with the sample names of a scrape of the fake node
    (which yields every family the collector has).
    """
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(METRIC_NAME.search(t["expr"]) for t in panel["targets"]), panel["title"]
    exported = {name for name, _ in _scrape(tmp_path)}
    used = {name for text in _dashboard_expressions(dashboard) for name in METRIC_NAME.findall(text)}
    assert used - exported == set(), f"the dashboard names metrics the collector does not export: {used - exported}"
    for wanted in ("shoal_request_duration_seconds_bucket", "shoal_under_replicated_shards", "shoal_shard_replicas",
                   "shoal_copy_sent_bytes_total", "shoal_task_attempts_total", "shoal_raft_role",
                   "shoal_raft_commit_index", "shoal_shard_lmdb_bytes"):
        assert wanted in used, wanted


def test_readme_lists_every_exported_metric(tmp_path: Path) -> None:
    """README.md's metric table names exactly the families the collector exports (counters with _total).

    Method: take the `shoal_*` names in the first column of the table's rows and compare
    them with a scrape of the fake node that has every part.
    """
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `shoal_")]
    listed = {name for row in rows for name in METRIC_NAME.findall(row.split("|")[1])}
    exported = {family.name + "_total" if family.type == "counter" else family.name
                for family in _families(tmp_path)}
    assert listed == exported, f"not in README: {exported - listed}; not exported: {listed - exported}"
