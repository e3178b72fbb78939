"""Build the ClusterMap and NodeStatus messages from the node's state. Read-only."""
from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from shoal.client.wire.pb import data_pb2

if TYPE_CHECKING:
    from shoal.node.node import Node

try:
    SHOAL_VERSION = version("shoal")
except PackageNotFoundError:   # running from a source tree without install
    SHOAL_VERSION = "0+unknown"


def dataset_info(name: str, dataset: dict[str, Any]) -> data_pb2.DatasetInfo:
    return data_pb2.DatasetInfo(
        name=name, shards=dataset["shards"], replication=dataset["replication"],
        shard_map=[data_pb2.ShardInfo(index=i, epoch=s["epoch"], primary=s["primary"], replicas=s["replicas"],
                                      learners=s.get("learners", []))
                   for i, s in enumerate(dataset["shard_map"])])


def cluster_map(node: Node) -> data_pb2.ClusterMap:
    state = node.metadata.state
    nodes = [data_pb2.NodeInfo(id=node_id, address=n["address"], zone=n["zone"], state=n["state"],
                               raft_address=n["raft_address"])
             for node_id, n in sorted(state["nodes"].items())]
    datasets = [dataset_info(name, d) for name, d in sorted(state["datasets"].items())]
    return data_pb2.ClusterMap(version=state["version"], nodes=nodes, datasets=datasets,
                               controller=node.controller_id() or "")


async def node_status(node: Node) -> data_pb2.NodeStatus:
    used, free = await node.context.run_blocking(node.datadir.disk_usage)
    state = node.metadata.state
    shards = []
    for replica in node.registry.replicas():
        entry = state["datasets"].get(replica.dataset, {}).get("shard_map", [])
        in_sync = replica.index < len(entry) and node.config.node_id in entry[replica.index]["replicas"]
        store_state = replica.store.state
        shards.append(data_pb2.ShardStatus(
            dataset=replica.dataset, index=replica.index, role=replica.role(in_sync), epoch=store_state.epoch,
            seq=store_state.seq, records=store_state.records, checksum=store_state.checksum,
            size_bytes=replica.store.size_bytes()))
    return data_pb2.NodeStatus(
        id=node.config.node_id, address=node.config.address, raft_role=node.raft_role(),
        controller=node.controller_id() or "", metadata_version=state["version"],
        uptime_s=time.monotonic() - node.started_at_s, disk_used_bytes=used, disk_free_bytes=free,
        lease_valid=node.context.lease_valid(), shards=shards, version=SHOAL_VERSION)
