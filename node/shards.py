"""ShardRegistry: the shard replicas this node holds, kept in line with the metadata.

`reconcile()` is the reconciler of DESIGN.md section 3: it reads the replicated
shard map and does the side effects (open or drop LMDB environments, start or stop
serving as primary). It runs on every metadata change and on a timer, and is
idempotent, so a missed wake-up costs only latency.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from shoal.node.errors import NodeError, NotPrimaryError
from shoal.node.replication.primary import ShardPrimary
from shoal.node.replication.replica import Replica
from shoal.node.replication.ring import EntryRing
from shoal.node.storage.shard_store import ShardStore

if TYPE_CHECKING:
    from shoal.node.datadir import DataDir
    from shoal.node.metadata.view import ShardView
    from shoal.node.replication.context import ReplicationContext

logger = logging.getLogger(__name__)


class ShardRegistry:
    def __init__(self, datadir: DataDir, context: ReplicationContext) -> None:
        self.datadir = datadir
        self.context = context
        self.config = context.config
        self._replicas: dict[tuple[str, int], Replica] = {}
        self._activations: dict[tuple[str, int], asyncio.Task[None]] = {}
        # Datasets this process saw in the metadata. Only those are dropped when they
        # vanish: a state that is still replaying after a restart must never delete data.
        self._seen_datasets: set[str] = set()

    def replicas(self) -> list[Replica]:
        return [self._replicas[k] for k in sorted(self._replicas)]

    def primary(self, dataset: str, index: int) -> ShardPrimary | None:
        replica = self._replicas.get((dataset, index))
        return None if replica is None else replica.primary

    def open_existing(self) -> None:
        """Open every shard found on disk (a restart serves the same data)."""
        for dataset, index in self.datadir.existing_shards():
            self._open(dataset, index)

    def _open(self, dataset: str, index: int) -> Replica:
        replica = self._replicas.get((dataset, index))
        if replica is None:
            config = self.config
            store = ShardStore(self.datadir.shard_path(dataset, index), map_size_bytes=config.map_size_bytes,
                               sync=config.lmdb_sync, idempotency_retain=config.idempotency_retain_writes,
                               max_readers=config.lmdb_max_readers)
            ring = EntryRing(self.config.entry_ring_entries_max, self.config.entry_ring_bytes_max)
            replica = self._replicas[(dataset, index)] = Replica(dataset, index, store, ring)
        return replica

    def replica_for_peer(self, dataset: str, index: int) -> Replica:
        """The replica a peer addresses; opened on demand once our metadata lists us."""
        replica = self._replicas.get((dataset, index))
        if replica is not None:
            return replica
        shard = self.context.metadata.view.shard(dataset, index)
        if shard is None or not shard.holds(self.config.node_id):
            raise NotPrimaryError(f"shard {dataset}/{index}: this node's metadata does not list it as a replica yet")
        return self._open(dataset, index)

    def reconcile(self) -> None:
        view = self.context.metadata.view
        me = self.config.node_id
        self._seen_datasets.update(view.datasets)
        for shard in view.shards():
            if shard.holds(me):
                self._reconcile_shard(self._open(shard.dataset, shard.index), shard)
            elif (shard.dataset, shard.index) in self._replicas:
                self._stop_primary(self._replicas[(shard.dataset, shard.index)],
                                   f"not an in-sync replica at {shard.epoch}")
        if self.context.metadata.is_ready():
            for key in [k for k in self._replicas if k[0] in self._seen_datasets - set(view.datasets)]:
                self._drop(*key)

    def _reconcile_shard(self, replica: Replica, shard: ShardView) -> None:
        primary = replica.primary
        if shard.primary != self.config.node_id:
            self._stop_primary(replica, f"metadata names {shard.primary} primary at epoch {shard.epoch}")
            return
        backups = shard.backups()
        if primary is not None and primary.state != "stopped":
            primary.update(shard.epoch, backups)
            return
        key = (replica.dataset, replica.index)
        if key in self._activations and not self._activations[key].done():
            return
        primary = replica.primary = ShardPrimary(replica, self.context, epoch=shard.epoch, backups=backups)
        self._activations[key] = asyncio.get_running_loop().create_task(self._activate(primary))

    async def _activate(self, primary: ShardPrimary) -> None:
        try:
            await primary.activate()
            primary.start()
        except NodeError as exc:
            logger.warning("shard %s: activation as primary at epoch %d failed: %s", primary.name, primary.epoch, exc)
            primary.stop(f"activation failed: {exc}")
        except Exception:
            logger.exception("shard %s: activation crashed", primary.name)
            primary.stop("activation crashed")

    def _stop_primary(self, replica: Replica, reason: str) -> None:
        if replica.primary is not None:
            replica.primary.stop(reason)
            replica.primary = None

    def _drop(self, dataset: str, index: int) -> None:
        replica = self._replicas.pop((dataset, index))
        self._stop_primary(replica, "dataset dropped")
        replica.store.close()
        self.datadir.remove_shard(dataset, index)
        logger.info("shard %s/%d removed: dataset dropped", dataset, index)

    def close(self) -> None:
        for task in self._activations.values():
            task.cancel()
        for replica in self._replicas.values():
            self._stop_primary(replica, "node stopping")
            replica.store.close()
        self._replicas.clear()

