"""What the replication code needs from the rest of the node, in one object.

Keeps primary/backup/outbound free of wiring: they get addresses, the lease, a
thread for blocking LMDB work and a way to propose metadata commands. The thread pool
belongs to the node's wiring (node.py starts and stops it); the context only uses it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from shoal.client.wire.retry import RetryPolicy, retry_async
from shoal.node.encryption import NodeKey
from shoal.node.errors import NoControllerError, UnknownOutcomeError
from shoal.node.replication.pacing import CopyPacing, WriteLatency

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.identity import Identity
    from shoal.node.lease import Lease
    from shoal.node.metadata import MetadataStore
    from shoal.node.replication.peers import PeerClients

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ReplicationContext:
    def __init__(self, config: NodeConfig, metadata: MetadataStore, lease: Lease, peers: PeerClients,
                 executor: concurrent.futures.Executor, identity: Identity, keys: NodeKey | None = None) -> None:
        self.config = config
        self.node_id = config.node_id
        self.identity = identity   # the cluster id every peer message carries
        self.keys = keys or NodeKey(config.node_id, None)   # encrypted datasets' ciphers (node/encryption.py)
        self.metadata = metadata
        self.lease = lease
        self.peers = peers
        self.executor = executor   # LMDB write transactions block (fsync): never on the event loop (notes 3.2)
        self.propose_retry = RetryPolicy(config.propose_backoff_s_min, config.propose_backoff_s_max)
        self.peer_retry = RetryPolicy.fixed(config.peer_retry_s)
        self.write_latency = WriteLatency()   # client writes this node acknowledged as primary (primary.py records)
        self.copy_pacing = CopyPacing(self.write_latency, config.repair_pacing_latency_factor)   # copies yield to them

    def lease_valid(self, metadata_version: int | None = None) -> bool:
        """Pass the version of the state snapshot a routing decision was made on: the
        lease must hold for *that* snapshot, not a newer one applied meanwhile."""
        version = self.metadata.version if metadata_version is None else metadata_version
        return self.lease.valid(version)

    @property
    def cluster_id(self) -> str:
        return self.identity.cluster_id

    def address_of(self, node_id: str) -> str:
        node = self.metadata.view.node(node_id)
        if node is None:
            raise NoControllerError(f"node {node_id} is not in this node's metadata")
        return node.address

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def propose(self, command: bytes, *, deadline_s: float) -> dict[str, Any]:
        """Propose until a definite answer or the deadline; the command is idempotent by request id.

        NoControllerError and UnknownOutcomeError are retried with the same bytes; when
        time runs out the last one is raised (an unknown outcome stays unknown).
        """
        give_up_s = time.monotonic() + deadline_s

        async def attempt() -> dict[str, Any]:
            remaining_s = give_up_s - time.monotonic()
            return await self.metadata.propose(
                command, timeout_s=max(0.1, min(remaining_s, self.config.propose_attempt_timeout_s)))

        return await retry_async(attempt, policy=self.propose_retry, deadline_s=give_up_s,
                                 retry_on=lambda exc: isinstance(exc, (NoControllerError, UnknownOutcomeError)))
