"""ShardPrimary: the write path of one shard on the node that is its primary.

Writes queue up and commit in groups (group commit): one LMDB transaction per group
on this node, then one Replicate message per in-sync backup, then the acks. A backup
that fails is fenced out of the in-sync set through Raft (epoch + 1) *before* the
group is acknowledged, so every acknowledged write is on every in-sync replica.

Reads wait until no group is between "applied here" and "acknowledged": a read never
sees a write that a failover could still lose.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from shoal.node.errors import (
    NodeError, NoLeaseError, NotPrimaryError, ReplicationError, StaleEpochError, StorageFullError,
    UnknownOutcomeError,
)
from shoal.node.log_labels import labelled
from shoal.node.metadata import commands
from shoal.node.replication import outbound

from shoal.node.storage.entry import CompareAndSet, Delete

if TYPE_CHECKING:
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.replica import Replica
    from shoal.node.storage.entry import Op

logger = logging.getLogger(__name__)

JOIN_LAG_ENTRIES_MAX = 256   # a learner further behind replays more before writes wait for its catch-up


@dataclasses.dataclass(frozen=True, slots=True)
class PrimaryStatistics:
    state: str
    epoch: int
    backups: int
    groups_committed: int      # entries replicated and acknowledged
    ops_committed: int         # client ops in them (ops / groups = the group-commit factor)
    backups_fenced: int


class ShardPrimary:
    def __init__(self, replica: Replica, context: ReplicationContext, *, epoch: int, backups: list[str]) -> None:
        self.replica = replica
        self.context = context
        self.epoch = epoch
        self.backups = list(backups)          # node ids, in-sync, without this node
        self.state = "activating"             # activating | active | stopped
        self._queue: asyncio.Queue[tuple[Op, int, asyncio.Future[Any]]] = asyncio.Queue()
        self._held: tuple[Op, int, asyncio.Future[Any]] | None = None   # opens the next group (bytes bound)
        self._stable = asyncio.Event()
        self._stable.set()
        self._commit_lock = asyncio.Lock()   # a group commit, or a learner joining: one at a time
        self._task: asyncio.Task[None] | None = None
        self._groups_committed = 0
        self._ops_committed = 0
        self._backups_fenced = 0

    def statistics(self) -> PrimaryStatistics:
        return PrimaryStatistics(self.state, self.epoch, len(self.backups), self._groups_committed,
                                 self._ops_committed, self._backups_fenced)

    @property
    def name(self) -> str:
        return f"{self.replica.dataset}/{self.replica.index}"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"primary {self.name}",
                                                            context=labelled(shard=self.name))

    def stop(self, reason: str) -> None:
        if self.state == "stopped":
            return
        logger.info("shard %s stops serving as primary at epoch %d: %s (%d groups, %d ops acknowledged)",
                    self.name, self.epoch, reason, self._groups_committed, self._ops_committed)
        self.state = "stopped"
        if self._task is not None:
            self._task.cancel()
        held, self._held = self._held, None
        while held is not None or not self._queue.empty():
            _, _, future = held or self._queue.get_nowait()
            held = None
            if not future.done():
                future.set_exception(NotPrimaryError(f"shard {self.name}: this node stopped being its primary"))
        self._stable.set()

    def update(self, epoch: int, backups: list[str]) -> None:
        """Metadata moved on with this node still primary (e.g. a dead backup was removed)."""
        if epoch > self.epoch:
            self.epoch = epoch
            self.backups = list(backups)

    # ---- serving ----

    def check_serving(self, metadata_version: int | None = None) -> None:
        if self.state != "active":
            raise NotPrimaryError(f"shard {self.name}: primary is {self.state} at epoch {self.epoch}")
        if not self.context.lease_valid(metadata_version):
            raise NoLeaseError(f"shard {self.name}: this node's primary lease is not valid now")

    async def submit(self, op: Op, size_bytes: int) -> Any:
        if self.state == "stopped":   # the queue of a stopped primary is never drained again
            raise NotPrimaryError(f"shard {self.name}: this node stopped being its primary")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued_s = time.monotonic()
        self._queue.put_nowait((op, size_bytes, future))
        result = await future
        self.context.write_latency.record(time.monotonic() - queued_s)   # copies back off when it rises (pacing.py)
        return result

    @property
    def stable(self) -> bool:
        """No group is between "applied here" and "acknowledged": reads may run now."""
        return self._stable.is_set()

    async def wait_stable(self) -> None:
        await self._stable.wait()

    # ---- activation: adopt the epoch on every backup and catch them up ----

    async def activate(self) -> None:
        """Adopt the epoch on every backup, compare what each holds, catch up, then serve.

        What a backup holds is its seq *and* its incarnation: a backup whose LMDB
        environment is not the one the metadata records (wiped, re-created) is new and is
        fenced out whatever its seq. This node never fences out a backup that is ahead of
        it: when it cannot fetch what that backup holds, it steps down in its favour.
        """
        ctx = self.context
        store = self.replica.store
        await ctx.run_blocking(store.set_epoch, self.epoch)
        held, failed = await outbound.begin_epoch(ctx, self.replica, self.epoch, self.backups)
        await self._fence_out(failed)
        shard = ctx.metadata.view.shard(self.replica.dataset, self.replica.index)
        new = [b for b, (_, incarnation) in held.items()
               if shard is not None and not shard.is_recorded(b, incarnation)]
        if new:
            logger.warning("shard %s: backups %s are new replicas (not the recorded incarnation)",
                           self.name, ",".join(new))
        await self._fence_out([b for b in new if b in self.backups])
        seqs = {b: seq for b, (seq, _) in held.items() if b in self.backups}
        top = await outbound.catch_up_from_backups(ctx, self.replica, self.epoch, self.backups, seqs)
        ahead = {b: seq for b, seq in seqs.items() if seq > top}
        if ahead:
            await self._step_down(max(ahead, key=lambda b: (ahead[b], b)), top, ahead)
        lagging = await outbound.push_to_backups(ctx, self.replica, self.epoch, self.backups, seqs)
        await self._fence_out(lagging)
        if self.state == "stopped":   # deposed or detached while activating: never serve
            raise NotPrimaryError(f"shard {self.name}: stopped while activating")
        self.state = "active"
        logger.info("shard %s primary active at epoch %d (seq %d, backups %s)",
                    self.name, self.epoch, store.state.seq, ",".join(self.backups) or "none")

    async def _step_down(self, successor: str, own_seq: int, ahead: dict[str, int]) -> None:
        """A backup holds entries this node cannot get: make it primary (this node leaves the
        in-sync set, to be refilled), never fence it out. Raises NotPrimaryError."""
        logger.warning("shard %s: backup %s is ahead (seq %d, this node %d) and its entries cannot be fetched: "
                       "stepping down in its favour", self.name, successor, ahead[successor], own_seq)
        request = commands.promote(self.replica.dataset, self.replica.index, successor, self.epoch)
        result = await self.context.propose(request, deadline_s=self.context.config.replicate_timeout_s * 3)
        self.stop(f"{successor} holds more (seq {ahead[successor]} > {own_seq})")
        raise NotPrimaryError(f"shard {self.name}: stepped down for {successor}, which is ahead "
                              f"({'promoted' if result.get('ok') else result.get('message')})")

    # ---- the group-commit loop ----

    async def _run(self) -> None:
        try:
            while self.state != "stopped":
                group = await self._take_group()
                async with self._commit_lock:
                    await self._commit(group)
                await asyncio.sleep(0)   # let readers that waited for this group run first
        except asyncio.CancelledError:
            pass

    async def _take_group(self) -> list[tuple[Op, int, asyncio.Future[Any]]]:
        """Ops for one entry: at most group_ops_max, and within group_bytes_max unless one op alone
        is larger, so the entry (one Replicate message) stays within the message limit."""
        first, self._held = self._held, None
        if first is None:
            first = await self._queue.get()
        group, size = [first], first[1]
        config = self.context.config
        while not self._queue.empty() and len(group) < config.group_ops_max:
            item = self._queue.get_nowait()
            if size + item[1] > config.group_bytes_max:
                self._held = item
                break
            group.append(item)
            size += item[1]
        return group

    async def _commit(self, group: list[tuple[Op, int, asyncio.Future[Any]]]) -> None:
        futures = [future for _, _, future in group]
        try:
            self.check_serving()
        except NodeError as exc:
            _fail(futures, exc)
            return
        self._stable.clear()
        try:
            results = await self._apply_and_replicate([op for op, _, _ in group])
        except NodeError as exc:
            _fail(futures, exc)
        except asyncio.CancelledError:   # stop() while the group was in flight: it may be applied
            _fail(futures, UnknownOutcomeError(f"shard {self.name}: primary stopped during the write"))
            raise
        except Exception as exc:  # an unexpected bug: the outcome is unknown, never "failed"
            logger.exception("shard %s: group commit crashed", self.name)
            _fail(futures, UnknownOutcomeError(f"shard {self.name}: internal error during write: {exc}"))
            self.stop("internal error")
        else:
            self._groups_committed += 1
            self._ops_committed += len(futures)
            for future, result in zip(futures, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self._stable.set()

    async def _apply_and_replicate(self, ops: list[Op]) -> list[Any]:
        try:
            return await self._apply_and_replicate_group(ops)
        except StorageFullError:
            if len(ops) < 2 or not all(_frees(op) for op in ops):
                raise
        # A full shard keeps headroom for deletes, but a group of many deletes rewrites many
        # pages at once: commit it in halves (each its own entry, in order) instead of failing.
        half = len(ops) // 2
        return await self._apply_and_replicate(ops[:half]) + await self._apply_and_replicate(ops[half:])

    async def _apply_and_replicate_group(self, ops: list[Op]) -> list[Any]:
        ctx = self.context
        epoch = self.epoch
        lone = not self.backups and not self._learners()
        entry, results = await ctx.run_blocking(self.replica.store.execute, ops, epoch, not lone)
        if lone:
            # A lone replica: nobody to send to or catch up (R=1 ingest). Its ring no longer ends
            # at the store's seq: empty it, so it never answers a learner "nothing after seq N".
            self.replica.ring.clear()
            return results
        payload = entry.encode()
        self.replica.ring.append(entry.seq, entry.epoch, payload)   # learners replay from it too
        if not self.backups:
            return results
        try:
            failed = await outbound.replicate(ctx, self.replica, epoch, self.backups, entry.seq, payload)
            await self._fence_out(failed)
        except NodeError as exc:
            self.stop(str(exc))
            raise UnknownOutcomeError(
                f"shard {self.name}: write applied on the primary but not confirmed on every replica ({exc})") from exc
        return results

    # ---- draining: hand the shard to an in-sync backup ----

    async def hand_off(self, successor: str) -> None:
        """Stop serving between two groups, then have `successor` promoted (epoch + 1); the
        successor's activation catches up from the backups. Raises NodeError if not recorded."""
        async with self._commit_lock:
            epoch = self.epoch
            self.stop(f"draining: the shard goes to {successor}")
        request = commands.promote(self.replica.dataset, self.replica.index, successor, epoch)
        result = await self.context.propose(request, deadline_s=self.context.config.replicate_timeout_s * 3)
        if not result.get("ok"):
            raise ReplicationError(f"shard {self.name}: hand-off to {successor} not recorded: {result.get('message')}")
        logger.info("shard %s: handed to %s (node draining; epoch %d -> %d)", self.name, successor, epoch,
                    result["epoch"])

    # ---- a learner joins the in-sync set ----

    async def join_learner(self, learner: str, seq: int, incarnation: str) -> tuple[bool, str]:
        """Catch the learner up from the ring and record it in sync (epoch + 1), between two
        groups, so no write is acknowledged without it afterwards. Returns (joined, reason)."""
        async with self._commit_lock:
            if self.state != "active":
                return False, f"primary is {self.state}"
            own = self.replica.store.state.seq
            if seq > own:   # entries this node never had: never in sync (the learner copies instead)
                return False, f"the learner is ahead (seq {seq} > {own}): copy again"
            if own - seq > JOIN_LAG_ENTRIES_MAX:
                return False, f"{own - seq} entries behind: keep replaying"
            entries = self.replica.ring.after(seq, own)
            if entries is None:
                return False, f"entries after seq {seq} are gone from the ring: copy again"
            if entries and not await outbound.replicate_entries(self.context, self.replica, self.epoch, learner,
                                                                entries):
                return False, "catching up from the ring failed"
            request = commands.join_in_sync(self.replica.dataset, self.replica.index, learner, self.epoch,
                                            incarnation)
            result = await self.context.propose(request, deadline_s=self.context.config.replicate_timeout_s * 3)
            if not result.get("ok"):
                return False, f"not recorded: {result.get('message')}"
            logger.info("shard %s: learner %s joined the in-sync set at seq %d (epoch %d -> %d)",
                        self.name, learner, own, self.epoch, result["epoch"])
            await self._adopt(int(result["epoch"]), [*self.backups, learner])
            return True, ""

    def _learners(self) -> bool:
        shard = self.context.metadata.view.shard(self.replica.dataset, self.replica.index)
        return shard is not None and bool(shard.learners)

    async def _fence_out(self, failed: list[str]) -> None:
        """Remove failed backups from the in-sync set through Raft, or stop serving."""
        for backup in failed:
            request = commands.remove_replica(self.replica.dataset, self.replica.index, backup, self.epoch)
            result = await self.context.propose(request, deadline_s=self.context.config.replicate_timeout_s * 3)
            if not result.get("ok") and result.get("error") == "STALE_EPOCH" and await self._already_fenced(backup):
                continue
            if not result.get("ok"):
                if result.get("error") == "STALE_EPOCH":
                    self.stop(f"epoch moved past {self.epoch} while fencing out {backup}")
                    raise StaleEpochError(f"shard {self.name}: deposed while fencing out {backup}")
                raise ReplicationError(f"shard {self.name}: cannot fence out {backup}: {result.get('message')}")
            logger.warning("shard %s: backup %s fenced out of the in-sync set (epoch %d -> %d)",
                           self.name, backup, self.epoch, result["epoch"])
            self._backups_fenced += 1
            await self._adopt(int(result["epoch"]), [b for b in self.backups if b != backup])

    async def _already_fenced(self, backup: str) -> bool:
        """After STALE_EPOCH: did the controller fence the backup out while we stay primary?"""
        await self.context.metadata.barrier(timeout_s=self.context.config.replicate_timeout_s)
        shard = self.context.metadata.view.shard(self.replica.dataset, self.replica.index)
        if shard is None or shard.primary != self.context.node_id or shard.in_sync(backup):
            return False
        logger.info("shard %s: backup %s already fenced out at epoch %d", self.name, backup, shard.epoch)
        await self._adopt(shard.epoch, shard.backups())
        return True

    async def _adopt(self, epoch: int, backups: list[str]) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self.backups = backups
            await self.context.run_blocking(self.replica.store.set_epoch, epoch)


def _fail(futures: list[asyncio.Future[Any]], exc: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


def _frees(op: Op) -> bool:
    """The op can only remove data (a delete, or a compare-and-set that deletes)."""
    return isinstance(op, Delete) or (isinstance(op, CompareAndSet) and op.delete)
