"""What /readyz reports: is this node ready to serve clients?

Ready is the node's own `ready` flag, which it sets where it turns its gRPC health to
SERVING (registered in the metadata, metadata store ready) and clears when it starts to
stop: /readyz and the gRPC health check always agree. When the node is not ready, the
reason names the first unmet condition of registration, read from the metadata view.
Pure: no I/O; the metadata view is a frozen snapshot.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import MetadataView


class ReadinessMetadata(Protocol):
    @property
    def view(self) -> MetadataView: ...

    def is_ready(self) -> bool: ...


class ReadinessSource(Protocol):
    """The part of the node that readiness reads."""

    @property
    def ready(self) -> bool: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> ReadinessMetadata: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str   # one line: "ready", or why not


def readiness(node: ReadinessSource) -> Readiness:
    """Evaluate readiness now; when not ready, the reason names the first unmet condition."""
    if node.ready:
        return Readiness(True, "ready")
    config = node.config
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
