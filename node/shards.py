"""ShardRegistry: the shard replicas this node holds, kept in line with the metadata.

`reconcile()` is the reconciler of DESIGN.md section 3: it reads the replicated
shard map and does the side effects (open or drop LMDB environments, start or stop
serving as primary). It runs on every metadata change and on a timer, and is
idempotent, so a missed wake-up costs only latency.

Replicas are keyed by dataset *id* ("<name>@<version>"), not by name: a dataset dropped
and re-created under the same name is another dataset, with other directories, and
nothing in flight for the dropped one (an activation, a replication message) can touch
the new one. `sync_incarnations()` records each replica's incarnation in the metadata
once, and reports replicas that are not the recorded one (wiped or restored: new, never
in sync) so they leave the in-sync set instead of serving.
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import TYPE_CHECKING

from shoal.node.errors import FileLimitError, NodeError, NotPrimaryError, StaleEpochError
from shoal.node.log_labels import labelled
from shoal.node.metadata import commands
from shoal.node.metadata.view import created_at_version, default_replication
from shoal.node.replication import learner
from shoal.node.replication.primary import ShardPrimary
from shoal.node.replication.replica import Replica
from shoal.node.replication.ring import EntryRing
from shoal.node.storage.shard_store import FDS_PER_SHARD, file_limit_message, open_replica_store

if TYPE_CHECKING:
    import pathlib

    from shoal.node.datadir import DataDir
    from shoal.node.metadata.view import MetadataView, ShardView
    from shoal.node.replication.context import ReplicationContext

logger = logging.getLogger(__name__)

FILE_SPARE_FDS = 32       # file descriptors a create leaves free for connections and the journal
RECORD_BATCH_MAX = 500    # replicas per record_incarnations command (commands stay far below 64 KiB)


def replicas_per_node(shards: int, replication: int, alive_nodes: int) -> int:
    """Replicas one node opens for a new dataset, its placement spread evenly (rounded up).

    replication 0 is the default (min(3, alive nodes)), not 1: counting it as 1 let a create
    pass the open-files check with a third of the files it then needed.
    """
    nodes = max(1, alive_nodes)
    copies = shards * min(replication or default_replication(alive_nodes), nodes)
    return -(-copies // nodes)


class ShardRegistry:
    def __init__(self, datadir: DataDir, context: ReplicationContext) -> None:
        self.datadir = datadir
        self.context = context
        self.config = context.config
        self._replicas: dict[tuple[str, int], Replica] = {}
        self._activations: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._fills: dict[tuple[str, int], asyncio.Task[None]] = {}    # learners filling themselves
        # Dataset ids this process saw in the metadata: dropped when they vanish. Ids made
        # at a version the metadata has reached and no longer lists were dropped too, even
        # unseen (dropped while this node was down); a replaying state never deletes data.
        self._seen_ids: set[str] = set()
        self._reported_lost: set[tuple[str, int, str]] = set()
        self._open_errors: dict[tuple[str, int], str] = {}   # why a shard's replica could not be opened

    def replicas(self) -> list[Replica]:
        return [self._replicas[k] for k in sorted(self._replicas)]

    def primary(self, dataset_id: str, index: int) -> ShardPrimary | None:
        replica = self._replicas.get((dataset_id, index))
        return None if replica is None else replica.primary

    def open_existing(self) -> None:
        """Open every shard found on disk (a restart serves the same data)."""
        for dataset_id, index in self.datadir.existing_shards():
            self._open(dataset_id, index)

    def check_file_room(self, shards_here: int) -> None:
        """Raise FileLimitError if opening `shards_here` more shards would pass the open-files
        limit (keeping FILE_SPARE_FDS for connections), so a create fails before it is proposed."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
        needed = shards_here * FDS_PER_SHARD
        if in_use + needed + FILE_SPARE_FDS > soft:
            raise FileLimitError(file_limit_message(
                f"cannot open {shards_here} more shards on node {self.config.node_id} "
                f"({in_use} file descriptors in use, {needed} more needed, {FILE_SPARE_FDS} kept for connections)"))

    def open_error(self, dataset_id: str, index: int) -> str:
        """Why the last attempt to open this shard's replica failed ("" if it did not)."""
        return self._open_errors.get((dataset_id, index), "")

    def _open(self, dataset_id: str, index: int) -> Replica:
        replica = self._replicas.get((dataset_id, index))
        if replica is None:
            config = self.config
            try:
                store = open_replica_store(self.datadir.shard_path(dataset_id, index), config)
            except NodeError as exc:   # kept for the clients this shard's requests fail for
                self._open_errors[(dataset_id, index)] = str(exc)
                raise
            self._open_errors.pop((dataset_id, index), None)
            ring = EntryRing(config.entry_ring_entries_max, config.entry_ring_bytes_max)
            ring.load(store.recent_entries())   # a restarted primary can still catch its backups up
            replica = self._replicas[(dataset_id, index)] = Replica(dataset_id, index, store, ring)
        return replica

    def local_path(self, dataset_id: str, index: int) -> pathlib.Path | None:
        """Where this node's open replica of the shard lives; None if it holds none (compute tasks)."""
        replica = self._replicas.get((dataset_id, index))
        return None if replica is None else replica.store.path

    def replica_for_peer(self, dataset: str, index: int, dataset_id: str = "") -> Replica:
        """The replica a peer addresses; opened on demand once our metadata lists us.

        A message for another incarnation of the dataset than ours is refused: from an
        older one (dropped) with STALE_EPOCH, so its sender stops acting as primary; from a
        newer one (our metadata is behind) with NOT_PRIMARY, retried by the sender.
        """
        view = self.context.metadata.view
        current = view.dataset(dataset)
        dataset_id = dataset_id or (current.id if current is not None else dataset)
        replica = self._replicas.get((dataset_id, index))
        if current is not None and current.id != dataset_id:
            if (created_at_version(dataset_id) or 0) < (created_at_version(current.id) or 0):
                raise StaleEpochError(f"shard {dataset_id}/{index}: that dataset was dropped (now {current.id})")
            raise NotPrimaryError(f"shard {dataset_id}/{index}: this node has not seen that dataset yet")
        if replica is not None:
            return replica
        shard = view.shard(dataset, index)
        if shard is None or not shard.holds(self.config.node_id):
            raise NotPrimaryError(f"shard {dataset}/{index}: this node's metadata does not list it as a replica yet")
        return self._open(dataset_id, index)

    # ---- the reconciler ----

    def reconcile(self) -> None:
        view = self.context.metadata.view
        me = self.config.node_id
        self._seen_ids.update(view.dataset_ids())
        for shard in view.shards():
            key = (shard.dataset_id, shard.index)
            if me in shard.learners:
                replica = self._open(*key)
                replica.lost = False     # not in sync yet, but it may take the entries of its join
                self._stop_primary(replica, f"a learner at epoch {shard.epoch}")
                self._start_fill(replica)
            elif shard.holds(me):   # a fill task that just joined ends by itself (it forgets its copy state)
                replica = self._open(*key)
                replica.lost = not shard.is_recorded(me, replica.store.incarnation)
                self._reconcile_shard(replica, shard)
            elif key in self._replicas:
                self._stop_fill(key)
                self._stop_primary(self._replicas[key], f"not an in-sync replica at {shard.epoch}")
                if self.context.metadata.is_ready() and not view.is_under_replicated(shard):
                    # a stale copy (fenced out, or from before this node was declared dead): the
                    # shard has its copies elsewhere, so this one only takes disk
                    self._drop(*key, reason=f"a stale copy, and the shard has its {view.in_sync_alive(shard)} "
                                            "in-sync copies elsewhere")
        if self.context.metadata.is_ready():
            for key in [k for k in self._replicas if self._dropped(k[0], view)]:
                self._drop(*key)

    def _dropped(self, dataset_id: str, view: MetadataView) -> bool:
        if dataset_id in view.dataset_ids():
            return False
        created_at = created_at_version(dataset_id)
        return dataset_id in self._seen_ids or (created_at is not None and view.version >= created_at)

    def _reconcile_shard(self, replica: Replica, shard: ShardView) -> None:
        primary = replica.primary
        if shard.primary != self.config.node_id or replica.lost:
            reason = "this replica is new (not the recorded incarnation)" if replica.lost else \
                f"metadata names {shard.primary} primary at epoch {shard.epoch}"
            self._stop_primary(replica, reason)
            return
        view = self.context.metadata.view
        if self._draining(view) and view.in_sync_alive(shard) >= view.datasets[shard.dataset].replication:
            self._hand_off(replica, shard)
            return
        backups = shard.backups()
        if primary is not None and primary.state != "stopped":
            primary.update(shard.epoch, backups)
            return
        key = (replica.dataset_id, replica.index)
        if key in self._activations and not self._activations[key].done():
            return
        primary = replica.primary = ShardPrimary(replica, self.context, epoch=shard.epoch, backups=backups)
        self._activations[key] = asyncio.get_running_loop().create_task(self._activate(primary),
                                                                        context=labelled(shard=replica.name))

    def _draining(self, view: MetadataView) -> bool:
        node = view.node(self.config.node_id)
        return node is not None and node.state == "draining"

    def _hand_off(self, replica: Replica, shard: ShardView) -> None:
        """This node drains and the shard has its copies elsewhere: give the primary role to the
        first alive in-sync backup (once; the next reconcile tries again if it failed)."""
        key = (replica.dataset_id, replica.index)
        task = self._activations.get(key)
        if task is not None and not task.done():
            return
        view = self.context.metadata.view
        successor = next((n for n in shard.backups() if view.is_alive(n)), None)
        if successor is None:
            return
        primary, replica.primary = replica.primary, None
        if primary is not None and primary.state != "active":
            primary.stop("draining")
            primary = None
        self._activations[key] = asyncio.get_running_loop().create_task(
            self._hand_off_to(replica, shard.epoch, primary, successor), context=labelled(shard=replica.name))

    async def _hand_off_to(self, replica: Replica, epoch: int, primary: ShardPrimary | None, successor: str) -> None:
        """Through the serving primary (it stops between two groups first), or directly when
        this node does not serve the shard (restarted while draining)."""
        try:
            if primary is not None:
                await primary.hand_off(successor)
                return
            request = commands.promote(replica.dataset, replica.index, successor, epoch)
            result = await self.context.propose(request, deadline_s=self.config.replicate_timeout_s * 3)
            logger.info("shard %s: handed to %s (node draining, not serving): %s", replica.name, successor,
                        "ok" if result.get("ok") else result.get("message"))
        except NodeError as exc:
            logger.warning("shard %s: hand-off to %s failed: %s", replica.name, successor, exc)

    async def _activate(self, primary: ShardPrimary) -> None:
        try:
            await primary.activate()
            primary.start()
        except NodeError as exc:
            logger.warning("shard %s: activation as primary at epoch %d failed: %s", primary.name, primary.epoch, exc)
            primary.stop(f"activation failed: {exc}")
        except asyncio.CancelledError:
            primary.stop("activation cancelled")
            raise
        except Exception:
            logger.exception("shard %s: activation crashed", primary.name)
            primary.stop("activation crashed")

    def _stop_primary(self, replica: Replica, reason: str) -> None:
        """Stop serving as primary, and cancel an activation still in flight (it would catch
        up and fence out backups at an epoch the metadata already left)."""
        activation = self._activations.pop((replica.dataset_id, replica.index), None)
        if activation is not None and not activation.done():
            activation.cancel()
        if replica.primary is not None:
            replica.primary.stop(reason)
            replica.primary = None

    def _start_fill(self, replica: Replica) -> None:
        key = (replica.dataset_id, replica.index)
        task = self._fills.get(key)
        if task is None or task.done():
            self._fills[key] = asyncio.get_running_loop().create_task(
                self._fill(replica), name=f"learner {replica.name}", context=labelled(shard=replica.name))

    async def _fill(self, replica: Replica) -> None:
        try:
            await learner.fill_replica(self.context, replica)
        except asyncio.CancelledError:
            raise
        except Exception:   # a bug must not end repair for good: the next reconcile starts it again
            logger.exception("shard %s: learner crashed", replica.name)

    def _stop_fill(self, key: tuple[str, int]) -> None:
        task = self._fills.pop(key, None)
        if task is not None and not task.done():
            task.cancel()

    def _drop(self, dataset_id: str, index: int, reason: str = "dataset dropped") -> None:
        """Cancel what is in flight for the replica, then close and delete it."""
        self._stop_fill((dataset_id, index))
        replica = self._replicas.pop((dataset_id, index))
        self._stop_primary(replica, reason)
        replica.store.close()
        self.datadir.remove_shard(dataset_id, index)
        logger.info("shard %s/%d removed: %s", dataset_id, index, reason)

    # ---- incarnations ----

    async def sync_incarnations(self) -> None:
        """Record first incarnations; report replicas that are not the recorded one. Idempotent."""
        view = self.context.metadata.view
        me = self.config.node_id
        unrecorded: list[tuple[str, int, str]] = []
        for shard in view.shards():
            replica = self._replicas.get((shard.dataset_id, shard.index))
            if replica is None or not shard.in_sync(me):
                continue
            incarnation = replica.store.incarnation
            if shard.recorded_incarnation(me) is None:
                unrecorded.append((shard.dataset_id, shard.index, incarnation))
            elif replica.lost and (shard.dataset_id, shard.index, incarnation) not in self._reported_lost:
                await self._report_lost(shard, incarnation)
        for start in range(0, len(unrecorded), RECORD_BATCH_MAX):
            await self._propose(commands.record_incarnations(me, unrecorded[start:start + RECORD_BATCH_MAX]))

    async def _report_lost(self, shard: ShardView, incarnation: str) -> None:
        logger.warning("shard %s: this replica is not the one the metadata records (incarnation %s, recorded %s): "
                       "it leaves the in-sync set (a new replica, refilled by repair)", shard.name, incarnation,
                       shard.recorded_incarnation(self.config.node_id))
        result = await self._propose(commands.replica_lost(shard.dataset_id, shard.index, self.config.node_id,
                                                           incarnation))
        if result.get("ok"):
            self._reported_lost.add((shard.dataset_id, shard.index, incarnation))
            if not result.get("primary"):
                logger.error("shard %s lost its only copy (this node's replica was wiped or re-created): it is "
                             "unavailable until the old copy is restored or the dataset dropped", shard.name)

    async def _propose(self, command: bytes) -> dict[str, object]:
        result = await self.context.propose(command, deadline_s=self.config.propose_timeout_s)
        if not result.get("ok"):
            logger.info("incarnation command rejected: %s", result.get("message"))
        return result

    def close(self) -> None:
        for task in [*self._activations.values(), *self._fills.values()]:
            task.cancel()
        for replica in self._replicas.values():
            self._stop_primary(replica, "node stopping")
            replica.store.close()
        self._replicas.clear()
