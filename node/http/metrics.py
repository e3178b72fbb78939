"""GET /metrics: Prometheus metrics read from the node's state at scrape time.

A custom collector reads the shard registry, the metadata view and statistics, the lease,
the interceptor chain's request counts and latency buckets, the copy throttle and pacing
and the task runner when Prometheus scrapes. The hot paths only bump integers they keep
anyway (no prometheus_client objects, no global registry). Metric names are an interface
(dashboards and alerts use them; docker/grafana-dashboard.json is checked against them by
tests/unit/test_metrics.py): the table in README.md "Monitoring" lists them.

Cost of a scrape: O(replicas held + methods x outcomes), all in memory on the event loop
(per replica: its cached state, two LMDB meta reads for its size), plus one statvfs of
the data dir run in the node's blocking executor before the collector runs (`refresh`).
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.node.status import ReplicaSource, replica_role

if TYPE_CHECKING:
    from shoal.node.compute.tasks import TaskStatistics
    from shoal.node.config import NodeConfig
    from shoal.node.interceptors import RequestStatistics
    from shoal.node.metadata import MetadataStatistics
    from shoal.node.metadata.view import MetadataView
    from shoal.node.replication.copy_source import ThrottleStatistics
    from shoal.node.replication.pacing import PacingStatistics, WriteLatencyStatistics
    from shoal.node.replication.replica import FillProgress

logger = logging.getLogger(__name__)
T = TypeVar("T")

DISK_READ_TIMEOUT_S = 1.0    # a statvfs slower than this (a hung mount) leaves the disk gauges out of the scrape
REPLICA_ROLES = ("primary", "backup", "learner", "stale")          # status.replica_role
RAFT_ROLES = ("leader", "follower", "candidate", "none")           # Node.raft_role(); "none": no Raft here
TASK_OUTCOMES = ("completed", "discarded", "failed", "skipped", "uncommitted", "refused")   # TaskStatistics


class MetricsMetadata(Protocol):
    @property
    def view(self) -> MetadataView: ...

    def is_leader(self) -> bool: ...

    def statistics(self) -> MetadataStatistics: ...


class ThrottleSource(Protocol):
    def statistics(self) -> ThrottleStatistics: ...


class TaskSource(Protocol):
    def statistics(self) -> TaskStatistics: ...


class LatencySource(Protocol):
    def statistics(self) -> WriteLatencyStatistics: ...


class PacingSource(Protocol):
    def statistics(self) -> PacingStatistics: ...


class CopyContext(Protocol):
    """The replication context's members the collector reads (pacing) and uses (blocking reads)."""

    @property
    def write_latency(self) -> LatencySource: ...

    @property
    def copy_pacing(self) -> PacingSource: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...


class MetricsSource(Protocol):
    """The part of the node that the collector reads."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> MetricsMetadata: ...

    @property
    def registry(self) -> ReplicaSource: ...

    @property
    def context(self) -> CopyContext: ...

    @property
    def copy_throttle(self) -> ThrottleSource: ...

    @property
    def tasks(self) -> TaskSource: ...

    def lease_valid(self) -> bool: ...

    def raft_role(self) -> str: ...

    def request_statistics(self) -> RequestStatistics: ...


class NodeCollector(Collector):
    def __init__(self, node: MetricsSource) -> None:
        self.node = node
        self._disk: tuple[int, int] | None = None     # (total, free) bytes of the data dir's file system

    async def refresh(self) -> None:
        """Read what blocks (statvfs of the data dir) in the node's blocking executor, bounded
        by DISK_READ_TIMEOUT_S; `collect` then reports it. Call before each scrape."""
        try:
            async with asyncio.timeout(DISK_READ_TIMEOUT_S):
                usage = await self.node.context.run_blocking(shutil.disk_usage, self.node.config.data_dir)
            self._disk = (usage.total, usage.free)
        except (TimeoutError, OSError) as exc:
            logger.debug("disk usage of %s unknown for this scrape: %r", self.node.config.data_dir, exc)
            self._disk = None

    def collect(self) -> Iterator[Metric]:
        node = self.node
        view = node.metadata.view   # one frozen snapshot for the whole scrape
        yield from self._replica_metrics(view)
        yield GaugeMetricFamily("shoal_under_replicated_shards", "shards with fewer in-sync replicas than wanted",
                                value=view.under_replicated())
        yield GaugeMetricFamily("shoal_metadata_version", "applied metadata version", value=view.version)
        yield GaugeMetricFamily("shoal_lease_valid", "1 while this node holds a primary lease",
                                value=1 if node.lease_valid() else 0)
        yield GaugeMetricFamily("shoal_raft_leader", "1 on the Raft leader (the controller)",
                                value=1 if node.config.raft and node.metadata.is_leader() else 0)
        yield from self._raft_metrics()
        yield from self._request_metrics()
        yield from self._copy_metrics()
        yield from self._task_metrics()
        yield from self._disk_metrics()

    def _request_metrics(self) -> Iterator[Metric]:
        """From the interceptor chain's RequestAccounting: every RPC, by method and outcome."""
        stats = self.node.request_statistics()
        me = [self.node.config.node_id]
        requests = CounterMetricFamily("shoal_requests", "RPCs answered, by method and outcome (OK or ErrorCode)",
                                       labels=["node", "method", "outcome"])
        for method, outcomes in sorted(stats.by_method.items()):
            for outcome, count in sorted(outcomes.items()):
                requests.add_metric(me + [method, outcome], count)
        yield requests
        duration = HistogramMetricFamily("shoal_request_duration_seconds",
                                         "RPC durations (a stream: all of it), by method and outcome",
                                         labels=["node", "method", "outcome"])
        for method, by_outcome in sorted(stats.latency_by_method.items()):
            for outcome, buckets in sorted(by_outcome.items()):
                duration.add_metric(me + [method, outcome], buckets.cumulative(), buckets.sum_s)
        yield duration
        yield _single("shoal_requests_in_flight", "RPCs being served now", me, stats.in_flight)

    def _replica_metrics(self, view: MetadataView) -> Iterator[Metric]:
        node_id = self.node.config.node_id
        me = [node_id]
        shards = GaugeMetricFamily("shoal_shard_replicas", "shard replicas held by this node, by role",
                                   labels=["node", "role"])
        records = GaugeMetricFamily("shoal_shard_records", "records per shard replica", labels=["node", "shard"])
        lmdb_bytes = GaugeMetricFamily("shoal_shard_lmdb_bytes", "bytes of the replica's LMDB file in use "
                                       "(pages up to the high-water mark)", labels=["node", "shard"])
        fills = _FillFamilies()
        counts = dict.fromkeys(REPLICA_ROLES, 0)
        group_total = op_total = 0
        for replica in self.node.registry.replicas():
            if replica.primary is not None:
                stats = replica.primary.statistics()
                group_total += stats.groups_committed
                op_total += stats.ops_committed
            role = replica_role(replica, view, node_id)
            counts[role] = counts.get(role, 0) + 1
            records.add_metric(me + [replica.name], replica.store.state.records)
            lmdb_bytes.add_metric(me + [replica.name], replica.store.size_bytes())
            if role == "learner" and replica.fill is not None:
                fills.add(me + [replica.name], replica.fill)
        for role, count in counts.items():
            shards.add_metric(me + [role], count)
        yield shards
        yield records
        yield lmdb_bytes
        yield from fills.families()
        yield _single("shoal_lmdb_map_size_bytes", "LMDB map size of each shard replica (map_size_bytes): "
                      "its size limit", me, self.node.config.map_size_bytes)
        yield _single("shoal_primary_groups", "write groups (entries) acknowledged by primaries here", me, group_total)
        yield _single("shoal_primary_ops", "client write ops acknowledged by primaries here", me, op_total)

    def _raft_metrics(self) -> Iterator[Metric]:
        """Role always; the log numbers where this node runs the state machine (not a data-only node)."""
        me = [self.node.config.node_id]
        current = self.node.raft_role()
        role = GaugeMetricFamily("shoal_raft_role", "1 for this node's Raft role (none: no Raft here)",
                                 labels=["node", "role"])
        for name in RAFT_ROLES if current in RAFT_ROLES else (*RAFT_ROLES, current):
            role.add_metric(me + [name], 1 if name == current else 0)
        yield role
        stats = self.node.metadata.statistics()
        if stats.role == "none":   # RemoteMetadata: a copy installed from heartbeats, no log of its own
            return
        yield _single("shoal_raft_term", "Raft term (0 without Raft)", me, stats.term)
        yield _single("shoal_raft_commit_index", "Raft commit index (without Raft: commands applied)", me,
                      stats.commit_index)
        yield _single("shoal_raft_last_applied", "Raft index last applied to the local state", me, stats.last_applied)
        yield _single("shoal_raft_log_entries", "entries in the Raft log since its last dump (0 without Raft)", me,
                      stats.log_length)

    def _copy_metrics(self) -> Iterator[Metric]:
        """The sending side of repair copies: bytes sent, the rate cap and the pacing share."""
        me = [self.node.config.node_id]
        throttle = self.node.copy_throttle.statistics()
        pacing = self.node.context.copy_pacing.statistics()
        latency = self.node.context.write_latency.statistics()
        sent = CounterMetricFamily("shoal_copy_sent_bytes", "chunk bytes (keys + values) sent by every copy "
                                   "from this node's primaries to learners", labels=["node"])
        sent.add_metric(me, throttle.bytes_paid)
        yield sent
        yield _single("shoal_copy_rate_limit_bytes_per_second", "repair_bytes_per_s: the copies' rate cap before "
                      "pacing (0 = unlimited)", me, throttle.bytes_per_s)
        yield _single("shoal_copy_pacing_share", "share of the cap the copies may use (1/16..1; stepped as copies "
                      "send, kept between them)", me, pacing.share)
        slow = CounterMetricFamily("shoal_copy_pacing_slow_windows", "1 s windows of slow client writes that "
                                   "halved the copies' share", labels=["node"])
        slow.add_metric(me, pacing.slow_windows)
        yield slow
        if latency.p90_s is not None:
            yield _single("shoal_write_latency_p90_seconds", "p90 of the client writes acknowledged here as "
                          "primary, in the last 1 s window with enough of them", me, latency.p90_s)
        if latency.usual_s is not None:
            yield _single("shoal_write_latency_usual_p90_seconds", "the usual p90: median of the recent windows' "
                          "p90 (pacing's reference)", me, latency.usual_s)

    def _task_metrics(self) -> Iterator[Metric]:
        me = [self.node.config.node_id]
        stats = self.node.tasks.statistics()
        yield _single("shoal_task_attempts_running", "compute task attempts running on this node", me, stats.running)
        attempts = CounterMetricFamily("shoal_task_attempts", "task attempts this node finished, by outcome",
                                       labels=["node", "outcome"])
        for outcome in TASK_OUTCOMES:
            attempts.add_metric(me + [outcome], getattr(stats, outcome))
        yield attempts

    def _disk_metrics(self) -> Iterator[Metric]:
        if self._disk is None:
            return
        me = [self.node.config.node_id]
        total, free = self._disk
        yield _single("shoal_disk_total_bytes", "size of the data dir's file system", me, total)
        yield _single("shoal_disk_free_bytes", "free bytes on the data dir's file system", me, free)


class _FillFamilies:
    """Per learner (a replica filling itself from its primary): what its copy has done so far."""

    def __init__(self) -> None:
        labels = ["node", "shard"]
        self.received = GaugeMetricFamily("shoal_fill_received_bytes", "chunk bytes this learner received since "
                                          "this process started or resumed its copy", labels=labels)
        self.records = GaugeMetricFamily("shoal_fill_records", "records this learner has installed", labels=labels)
        self.target = GaugeMetricFamily("shoal_fill_records_target", "records its primary held when the last "
                                        "chunk came", labels=labels)
        self.rate = GaugeMetricFamily("shoal_fill_rate_bytes_per_second", "this learner's copy rate, averaged "
                                      "since this process started or resumed it", labels=labels)

    def add(self, labels: list[str], fill: FillProgress) -> None:
        self.received.add_metric(labels, fill.bytes_done)
        self.records.add_metric(labels, fill.records_done)
        self.target.add_metric(labels, fill.records_total)
        self.rate.add_metric(labels, fill.bytes_per_s())

    def families(self) -> Iterator[Metric]:
        yield from (self.received, self.records, self.target, self.rate)


def _single(name: str, documentation: str, me: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["node"])
    family.add_metric(me, value)
    return family


def make_registry(node: MetricsSource) -> tuple[CollectorRegistry, NodeCollector]:
    """A registry of its own (not the process-global one): only the node's metrics."""
    registry = CollectorRegistry()
    collector = NodeCollector(node)
    registry.register(collector)
    return registry, collector
