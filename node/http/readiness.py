"""What /readyz reports: is this node ready to serve clients?

Ready is the node's own `ready` flag, which it sets where it turns its gRPC health to
SERVING (registered in the metadata, metadata store ready) and clears when it starts to
stop, AND the metadata quorum: a ready node reports 503 when, as a Raft voter, it has
known no leader for longer than `leader_fallback_timeout_s` (above the election timeout:
a cut-off leader steps down after it, an election takes less), or when its lease has
lapsed for more than two heartbeat intervals (any node: the quorum is lost, or this node
is cut off from the controller). Why: /readyz is what load balancers and Kubernetes route
clients by, and such a node fails every read and write (NO_LEASE); both margins cover an
ordinary controller failover, so the probe does not flap. gRPC health stays "registered
and serving" (what `shoal up` and LocalCluster wait on at start): the two differ only then.
When the node is not ready, the reason names the first unmet condition of registration,
read from the metadata view. Pure: no I/O; the metadata view is a frozen snapshot.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

LEASE_LAPSE_HEARTBEATS = 2   # a lapse longer than this many heartbeat intervals makes a ready node not ready

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import MetadataView


class ReadinessMetadata(Protocol):
    @property
    def view(self) -> MetadataView: ...

    def is_ready(self) -> bool: ...

    def leaderless_s(self) -> float: ...


class ReadinessSource(Protocol):
    """The part of the node that readiness reads."""

    @property
    def ready(self) -> bool: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> ReadinessMetadata: ...

    def lease_lapsed_s(self) -> float:
        """Seconds this ready node has gone without a valid lease; 0.0 while it holds one."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str   # one line: "ready", or why not


def readiness(node: ReadinessSource) -> Readiness:
    """Evaluate readiness now; when not ready, the reason names the first unmet condition."""
    config = node.config
    if node.ready:
        leaderless_s = node.metadata.leaderless_s()
        if leaderless_s > config.leader_fallback_timeout_s:
            return Readiness(False, f"no Raft leader for {leaderless_s:.1f} s: the metadata has no quorum "
                                    "reachable from here; reads and writes here fail")
        lapsed_s = node.lease_lapsed_s()
        if lapsed_s > LEASE_LAPSE_HEARTBEATS * config.heartbeat_interval_s:
            return Readiness(False, f"no lease for {lapsed_s:.1f} s: no metadata controller with a quorum has "
                                    "granted one (quorum lost, or this node cut off from the controller); "
                                    "reads and writes here fail")
        return Readiness(True, "ready")
    if not node.metadata.is_ready():
        return Readiness(False, "metadata store not ready")
    entry = node.metadata.view.node(config.node_id)
    if entry is None:
        return Readiness(False, f"node {config.node_id} not registered in the metadata yet")
    if entry.address != config.address:
        return Readiness(False, f"node {config.node_id} registered at {entry.address}, not {config.address}")
    if not entry.alive:
        return Readiness(False, f"node {config.node_id} is {entry.state} in the metadata")
    return Readiness(False, f"node {config.node_id} not serving (starting or stopping)")
