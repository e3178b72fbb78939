"""Prometheus /metrics on the node's HTTP port (config.http_listen; nothing else is served there).

Values are read from the node's state at scrape time by a custom collector, so the
request hot path pays nothing for metrics.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.node.config import parse_host_port
from shoal.node.errors import StartupError
from shoal.node.metadata import fsm

if TYPE_CHECKING:
    from shoal.node.node import Node

logger = logging.getLogger(__name__)


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        state = node.metadata.state
        labels = ["node"]
        me = [node.config.node_id]
        shards = GaugeMetricFamily("shoal_shard_replicas", "shard replicas held by this node, by role",
                                   labels=labels + ["role"])
        records = GaugeMetricFamily("shoal_shard_records", "records per shard replica", labels=labels + ["shard"])
        counts: dict[str, int] = {"primary": 0, "backup": 0, "stale": 0}
        groups = GaugeMetricFamily("shoal_primary_groups", "write groups (entries) acknowledged by primaries here",
                                   labels=labels)
        ops = GaugeMetricFamily("shoal_primary_ops", "client write ops acknowledged by primaries here", labels=labels)
        group_total = op_total = 0
        for replica in node.registry.replicas():
            if replica.primary is not None:
                stats = replica.primary.statistics()
                group_total += stats.groups_committed
                op_total += stats.ops_committed
            entry = state["datasets"].get(replica.dataset, {}).get("shard_map", [])
            in_sync = replica.index < len(entry) and node.config.node_id in entry[replica.index]["replicas"]
            counts[replica.role(in_sync)] += 1
            records.add_metric(me + [replica.name], replica.store.state.records)
        for role, count in counts.items():
            shards.add_metric(me + [role], count)
        groups.add_metric(me, group_total)
        ops.add_metric(me, op_total)
        yield shards
        yield records
        yield groups
        yield ops
        yield GaugeMetricFamily("shoal_under_replicated_shards", "shards with fewer in-sync replicas than wanted",
                                value=fsm.under_replicated(state))
        yield GaugeMetricFamily("shoal_metadata_version", "applied metadata version", value=state["version"])
        yield GaugeMetricFamily("shoal_lease_valid", "1 while this node holds a primary lease",
                                value=1 if node.context.lease_valid() else 0)
        yield GaugeMetricFamily("shoal_raft_leader", "1 on the Raft leader (the controller)",
                                value=1 if node.config.raft and node.metadata.is_leader() else 0)


def serve(node: Node) -> None:
    """Start the /metrics server in a background thread (prometheus_client's own)."""
    host, port = parse_host_port(node.config.http_listen, "http_listen")
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {node.config.http_listen}: {exc.strerror}") from None
    logger.info("metrics on http://%s/metrics", node.config.http_listen)
