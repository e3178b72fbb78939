"""The errors of a local cluster (shoal.client.local re-exports them; import them from there).

    LocalClusterError          base; `summary` is one line, str() adds details such as log tails
    ├── ClusterLayoutError     the data dir holds another cluster (or no cluster) than asked for
    ├── ClusterRunningError    nodes of this data dir are already running
    ├── PortInUseError         a port of the layout already has a listener
    ├── NodeExitedError        a node process exited while it was expected to run
    └── ClusterNotReadyError   the cluster did not become ready before the deadline

They live in their own module so that the layout, process and probe helpers of LocalCluster
(layout, processes, probe) can raise them without importing cluster.py.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class LocalClusterError(Exception):
    """Base of local cluster errors. `summary` is one line; str() adds details such as log tails."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary + (f"\n{details}" if details else ""))
        self.summary = summary


class ClusterLayoutError(LocalClusterError):
    """The data dir holds another cluster (or no cluster) than the one asked for."""


class ClusterRunningError(LocalClusterError):
    """Nodes of this data dir are already running."""


class PortInUseError(LocalClusterError):
    """A port of the layout already has a listener."""


class NodeExitedError(LocalClusterError):
    """A node process exited while it was expected to run."""


class ClusterNotReadyError(LocalClusterError):
    """The cluster did not become ready before the deadline."""
