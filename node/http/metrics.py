"""GET /metrics: Prometheus gauges read from the node's state at scrape time.

A custom collector reads the shard registry, the metadata view and the lease when
Prometheus scrapes, so the request hot path pays nothing for metrics (no counters to
bump, no locks). Metric names are an interface (dashboards and alerts use them).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.node.status import ReplicaSource, replica_role

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.interceptors import RequestStatistics
    from shoal.node.metadata.view import MetadataView


class MetricsMetadata(Protocol):
    @property
    def view(self) -> MetadataView: ...

    def is_leader(self) -> bool: ...


class MetricsSource(Protocol):
    """The part of the node that the collector reads."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> MetricsMetadata: ...

    @property
    def registry(self) -> ReplicaSource: ...

    def lease_valid(self) -> bool: ...

    def request_statistics(self) -> RequestStatistics: ...


class NodeCollector(Collector):
    def __init__(self, node: MetricsSource) -> None:
        self.node = node

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
        yield from self._request_metrics()

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
        yield _single("shoal_requests_in_flight", "RPCs being served now", me, stats.in_flight)

    def _replica_metrics(self, view: MetadataView) -> Iterator[Metric]:
        node_id = self.node.config.node_id
        me = [node_id]
        shards = GaugeMetricFamily("shoal_shard_replicas", "shard replicas held by this node, by role",
                                   labels=["node", "role"])
        records = GaugeMetricFamily("shoal_shard_records", "records per shard replica", labels=["node", "shard"])
        counts: dict[str, int] = {"primary": 0, "backup": 0, "stale": 0}
        group_total = op_total = 0
        for replica in self.node.registry.replicas():
            if replica.primary is not None:
                stats = replica.primary.statistics()
                group_total += stats.groups_committed
                op_total += stats.ops_committed
            counts[replica_role(replica, view, node_id)] += 1
            records.add_metric(me + [replica.name], replica.store.state.records)
        for role, count in counts.items():
            shards.add_metric(me + [role], count)
        yield shards
        yield records
        yield _single("shoal_primary_groups", "write groups (entries) acknowledged by primaries here", me, group_total)
        yield _single("shoal_primary_ops", "client write ops acknowledged by primaries here", me, op_total)


def _single(name: str, documentation: str, me: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["node"])
    family.add_metric(me, value)
    return family


def make_registry(node: MetricsSource) -> CollectorRegistry:
    """A registry of its own (not the process-global one): only the node's gauges."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    return registry

