"""Build the ClusterMap and NodeStatus messages from the node's state. Read-only.

The numbers `shoal status` shows come from here (the client only assembles what the
nodes answer): under-replicated counts use MetadataView's one rule.
"""
from __future__ import annotations

import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from shoal.client.wire.pb import data_pb2

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata import MetadataStore
    from shoal.node.metadata.view import DatasetView, MetadataView
    from shoal.node.replication.replica import Replica

try:
    SHOAL_VERSION = version("shoal")
except PackageNotFoundError:   # running from a source tree without install
    SHOAL_VERSION = "0+unknown"


class ReplicaSource(Protocol):
    def replicas(self) -> list[Replica]: ...


class StatusSource(Protocol):
    """What status reads of the node (node.Node satisfies it)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> MetadataStore: ...

    @property
    def registry(self) -> ReplicaSource: ...

    @property
    def started_at_s(self) -> float: ...

    def controller_id(self) -> str | None: ...

    def node_silence(self) -> Mapping[str, float]:
        """Seconds since the controller last heard each node, when this node is the controller; else {}."""
        ...

    def raft_role(self) -> str: ...

    def lease_valid(self) -> bool: ...

    async def disk_usage(self) -> tuple[int, int]: ...

    @property
    def http_address(self) -> str:
        """HOST:PORT others reach this node's web app at; "" when HTTP is off."""
        ...

    def load(self) -> tuple[int, int]:
        """(RPCs being served, task attempts running) now."""
        ...

    def scrubbed_at_s(self) -> Mapping[str, float]:
        """Replica name ("dataset/index") -> unix time this process last scrubbed it clean."""
        ...


def dataset_info(dataset: DatasetView, view: MetadataView) -> data_pb2.DatasetInfo:
    return data_pb2.DatasetInfo(
        name=dataset.name, id=dataset.id, shards=dataset.shards, replication=dataset.replication,
        under_replicated=view.under_replicated(dataset.name),
        schema_json=json.dumps(dict(dataset.schema)) if dataset.schema else "",
        encryption_key_id=dataset.encryption_key_id,
        shard_map=[data_pb2.ShardInfo(index=s.index, epoch=s.epoch, primary=s.primary, replicas=s.replicas,
                                      learners=s.learners) for s in dataset.shard_map])


def cluster_map(node: StatusSource) -> data_pb2.ClusterMap:
    view = node.metadata.view
    nodes = [data_pb2.NodeInfo(id=n.id, address=n.address, zone=n.zone, state=n.state, raft_address=n.raft_address)
             for n in view.nodes.values()]
    datasets = [dataset_info(d, view) for d in view.datasets.values()]
    return data_pb2.ClusterMap(version=view.version, nodes=nodes, datasets=datasets,
                               controller=node.controller_id() or "", under_replicated=view.under_replicated(),
                               cluster_id=view.cluster_id)


def replica_role(replica: Replica, view: MetadataView, node_id: str) -> str:
    """primary | backup | learner | stale: the role of one replica held by this node.

    A replica is a backup only while the metadata lists this node in sync for that dataset
    incarnation and records this replica's incarnation (or none yet): a wiped one is stale.
    """
    shard = view.shard(replica.dataset, replica.index)
    in_sync = (shard is not None and shard.dataset_id == replica.dataset_id and shard.in_sync(node_id)
               and shard.is_recorded(node_id, replica.store.incarnation))
    learner = shard is not None and shard.dataset_id == replica.dataset_id and shard.is_learner(node_id)
    return replica.role(in_sync, learner)


async def node_status(node: StatusSource) -> data_pb2.NodeStatus:
    used, free = await node.disk_usage()
    view = node.metadata.view
    scrubbed = node.scrubbed_at_s()
    me = node.config.node_id
    shards = []
    for replica in node.registry.replicas():
        store_state = replica.store.state
        role = replica_role(replica, view, me)
        fill = replica.fill if role == "learner" else None
        shards.append(data_pb2.ShardStatus(
            dataset=replica.dataset, index=replica.index, role=role,
            epoch=store_state.epoch, seq=store_state.seq, records=store_state.records,
            checksum=store_state.checksum, size_bytes=replica.store.size_bytes(), dataset_id=replica.dataset_id,
            incarnation=replica.store.incarnation,
            fill_records_done=fill.records_done if fill else 0, fill_records_total=fill.records_total if fill else 0,
            fill_bytes_per_s=fill.bytes_per_s() if fill else 0.0, fill_phase=fill.phase if fill else "",
            fill_eta_s=fill.eta_s() if fill else 0.0, scrubbed_at_s=scrubbed.get(replica.name, 0.0)))
    requests, tasks = node.load()
    return data_pb2.NodeStatus(
        id=me, address=node.config.address, raft_role=node.raft_role(),
        controller=node.controller_id() or "", metadata_version=view.version,
        uptime_s=time.monotonic() - node.started_at_s, disk_used_bytes=used, disk_free_bytes=free,
        lease_valid=node.lease_valid(), shards=shards, version=SHOAL_VERSION, cluster_id=view.cluster_id,
        silence_s=node.node_silence(), suspect_after_s=node.config.node_suspect_after_s,
        http_address=node.http_address, requests_in_flight=requests, tasks_running=tasks, load_1m=os.getloadavg()[0])
