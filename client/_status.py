"""`shoal status`: ask every node of the cluster map for its NodeStatus, in parallel threads.

The assembly into one dict (the `shoal status --json` contract) is pure and lives in the
wire room (client/wire/status.py), because the node's dashboard API builds the very same
dict from the same two sources; `assemble`, `degraded_shards` and `repair_progress` are
re-exported here for the callers that import them from this module.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from shoal.client._errors import ShoalError
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.status import assemble, degraded_shards, repair_progress

logger = logging.getLogger(__name__)

__all__ = ["FETCH_THREADS_MAX", "NodeStatusFetch", "assemble", "collect", "degraded_shards", "repair_progress"]

FETCH_THREADS_MAX: Final = 16

NodeStatusFetch = Callable[[str, float], "pb.NodeStatus | ShoalError"]


def collect(cluster_map: pb.ClusterMap, fetch: NodeStatusFetch, *, timeout_s: float) -> dict[str, Any]:
    """Ask every node of the map for its status in parallel, then assemble."""
    addresses = list(dict.fromkeys(node.address for node in cluster_map.nodes if node.address))
    statuses: dict[str, pb.NodeStatus | ShoalError] = {}
    if addresses:
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS_MAX, len(addresses)),
                                thread_name_prefix="shoal-status") as pool:
            statuses = dict(zip(addresses, pool.map(lambda address: fetch(address, timeout_s), addresses)))
    return assemble(cluster_map, statuses)
