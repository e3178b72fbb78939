"""What the replication code needs from the rest of the node, in one object.

Keeps primary/backup/reconcile free of wiring: they get addresses, the lease, a
thread for blocking LMDB work and a way to propose metadata commands.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from shoal.node.errors import NoControllerError, UnknownOutcomeError

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.lease import Lease
    from shoal.node.metadata import MetadataStore
    from shoal.node.replication.peers import PeerClients

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ReplicationContext:
    def __init__(self, config: NodeConfig, metadata: MetadataStore, lease: Lease, peers: PeerClients) -> None:
        self.config = config
        self.node_id = config.node_id
        self.metadata = metadata
        self.lease = lease
        self.peers = peers
        # LMDB write transactions block (fsync): never on the event loop (notes 3.2).
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lmdb")

    def lease_valid(self, metadata_version: int | None = None) -> bool:
        """Pass the version of the state snapshot a routing decision was made on: the
        lease must hold for *that* snapshot, not a newer one applied meanwhile."""
        version = self.metadata.version if metadata_version is None else metadata_version
        return self.lease.valid(version)

    def address_of(self, node_id: str) -> str:
        node = self.metadata.state["nodes"].get(node_id)
        if node is None:
            raise NoControllerError(f"node {node_id} is not in this node's metadata")
        return str(node["address"])

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def propose(self, command: bytes, *, deadline_s: float) -> dict[str, Any]:
        """Propose until a definite answer or the deadline; the command is idempotent by request id."""
        give_up = time.monotonic() + deadline_s
        delay_s = 0.05
        while True:
            remaining = give_up - time.monotonic()
            try:
                return await self.metadata.propose(command, timeout_s=max(0.1, min(remaining, 2.0)))
            except (NoControllerError, UnknownOutcomeError) as exc:
                if time.monotonic() + delay_s >= give_up:
                    raise
                logger.debug("proposal retried after %s", exc)
            await asyncio.sleep(delay_s)   # backoff between retries, not a wait for a state
            delay_s = min(delay_s * 2, 0.5)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
