"""Probe: short-deadline calls to single nodes of a local cluster, and readings of their answers.

Readiness uses the raw stubs (health, GetNodeStatus, GetClusterMap), not shoal.client: it
must see each node's own answer, not one the client's retries and routing smoothed over.
So the probe has no retry loop: each call has a deadline of PROBE_TIMEOUT_S, and a node
that does not answer in time reads as "no answer", not an error. Its channels come from the
wire room's factory (`Wire().probe_channel`), the one place channels are made, so TLS plugs in
there once.

The pure functions below (raft_leader_of, primary_in_map) turn those answers into the
node ids LocalCluster.raft_leader and LocalCluster.primary_of report.
"""
from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.client.local.errors import LocalClusterError
from shoal.client.wire.channels import Wire
from shoal.client.wire.pb import data_pb2, data_pb2_grpc
from shoal.client.wire.routing import encode_key, shard_for_key
from shoal.client.wire.tls import TlsFiles

if TYPE_CHECKING:
    from shoal.client.local.layout import NodeHandle

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0


class Probe:
    """Short-deadline health and status calls, one channel per node, closed on exit."""

    def __init__(self, tls_dir: str = "", token: str = "") -> None:
        self._wire = Wire(tls=TlsFiles.from_dir(tls_dir, "client") if tls_dir else None, token=token)
        self._channels: dict[str, grpc.Channel] = {}

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _channel(self, node: NodeHandle) -> grpc.Channel:
        if node.address not in self._channels:
            self._channels[node.address] = self._wire.probe_channel(node.address)
        return self._channels[node.address]

    def serving(self, node: NodeHandle) -> bool:
        stub = health_pb2_grpc.HealthStub(self._channel(node))
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            return bool(exc.code() == grpc.StatusCode.UNIMPLEMENTED)  # no health service: judge by status
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _stub(self, node: NodeHandle) -> data_pb2_grpc.DataStub:
        return data_pb2_grpc.DataStub(self._channel(node))

    def node_status(self, node: NodeHandle) -> data_pb2.NodeStatus | None:
        try:
            status: data_pb2.NodeStatus = self._stub(node).GetNodeStatus(
                data_pb2.NodeStatusRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError:
            return None
        return status

    def cluster_map(self, node: NodeHandle) -> data_pb2.ClusterMap | None:
        try:
            cluster_map: data_pb2.ClusterMap = self._stub(node).GetClusterMap(
                data_pb2.ClusterMapRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError:
            return None
        return cluster_map

    def readiness_problem(self, node: NodeHandle, expected: Sequence[NodeHandle]) -> str | None:
        """None when `node` is ready; otherwise what is missing, in a few words."""
        if not self.serving(node):
            return f"{node.id} not serving"
        status = self.node_status(node)
        if status is None:
            return f"{node.id} does not answer GetNodeStatus"
        cluster_map = self.cluster_map(node)
        if cluster_map is None:
            return f"{node.id} does not answer GetClusterMap"
        if node.voter and not (status.controller or cluster_map.controller):   # data-only nodes may not say
            return f"{node.id} knows no controller"
        states = {info.id: info.state for info in cluster_map.nodes}
        not_alive = [f"{other.id}={states.get(other.id, 'absent')}" for other in expected
                     if states.get(other.id) != "alive"]
        return f"{node.id}'s map has {', '.join(not_alive)}" if not_alive else None


def raft_leader_of(statuses: Mapping[str, data_pb2.NodeStatus]) -> str | None:
    """The node whose status says raft_role leader; with several (a deposed one not yet stepped
    down), the one most nodes name as controller. None if none does."""
    leaders = [node_id for node_id, status in statuses.items() if status.raft_role == "leader"]
    if len(leaders) <= 1:
        return leaders[0] if leaders else None
    votes = collections.Counter(status.controller for status in statuses.values())
    return max(leaders, key=lambda node_id: votes[node_id])


def primary_in_map(cluster_map: data_pb2.ClusterMap, dataset: str, key_or_shard: str | bytes | int) -> str:
    """Node id of the primary of a shard (given by index) or of the shard holding a key."""
    for info in cluster_map.datasets:
        if info.name == dataset:
            shard = (key_or_shard if isinstance(key_or_shard, int)
                     else shard_for_key(encode_key(key_or_shard), info.shards))
            for shard_info in info.shard_map:
                if shard_info.index == shard:
                    return str(shard_info.primary)
            raise LocalClusterError(f"dataset {dataset!r} has no shard {shard}")
    raise LocalClusterError(f"dataset {dataset!r} is not in the cluster map")
