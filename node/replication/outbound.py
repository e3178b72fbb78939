"""What a primary sends its backups: one entry, the start of an epoch, and the catch-up after a failover.

(Named "outbound", not "reconcile": in Shoal a *reconciler* makes the metadata real on
this node, see shards.py; this module is the primary's side of the replication link.)

Every function returns the backups that failed (to be fenced out by the caller) and
raises StaleEpochError when a backup already follows a newer epoch: then this node was
deposed and must stop acting as primary.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from shoal.client.wire.pb import peer_pb2
from shoal.client.wire.retry import retry_async
from shoal.node.errors import StaleEpochError
from shoal.node.replication.ring import RingEntry
from shoal.node.storage.entry import Entry

if TYPE_CHECKING:
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)


def _deposed(replica: Replica, backup: str, exc: grpc.aio.AioRpcError) -> StaleEpochError:
    return StaleEpochError(f"shard {replica.name}: backup {backup} follows a newer epoch ({exc.details()})")


async def _replicate_to(ctx: ReplicationContext, replica: Replica, epoch: int, backup: str,
                        entries: list[RingEntry]) -> bool:
    """Send entries in order; True when the backup applied up to the last one."""
    deadline = time.monotonic() + ctx.config.replicate_timeout_s
    backoff = ctx.peer_retry.backoff()
    index = 0
    while index < len(entries):
        entry = entries[index]
        request = peer_pb2.ReplicateRequest(dataset=replica.dataset, shard=replica.index, epoch=epoch,
                                            seq=entry.seq, payload=entry.payload, primary=ctx.node_id,
                                            cluster_id=ctx.cluster_id, dataset_id=replica.dataset_id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            response = await ctx.peers.peer(ctx.address_of(backup)).Replicate(request, timeout=remaining)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise _deposed(replica, backup, exc) from exc
            logger.debug("shard %s: replicate seq %d to %s failed: %s", replica.name, entry.seq, backup, exc.code().name)
            await backoff.asleep(deadline)
            continue   # retried until the deadline: Replicate is idempotent by seq
        if response.applied_seq >= entries[-1].seq:
            return True
        if response.applied_seq >= entry.seq:
            index += 1
            continue
        missing = replica.ring.after(response.applied_seq, entries[-1].seq)
        if missing is None:
            logger.warning("shard %s: backup %s is at seq %d, older than this node's recent entries",
                           replica.name, backup, response.applied_seq)
            return False
        entries, index = missing, 0
    return True


async def replicate_entries(ctx: ReplicationContext, replica: Replica, epoch: int, backup: str,
                            entries: list[RingEntry]) -> bool:
    """Send `entries` in order to one replica (a joining learner); True when it applied the last."""
    outcomes = await asyncio.gather(_replicate_to(ctx, replica, epoch, backup, entries), return_exceptions=True)
    return not _failed([backup], outcomes)


async def replicate(ctx: ReplicationContext, replica: Replica, epoch: int, backups: list[str],
                    seq: int, payload: bytes) -> list[str]:
    entry = RingEntry(seq, epoch, payload)
    outcomes = await asyncio.gather(*(_replicate_to(ctx, replica, epoch, b, [entry]) for b in backups),
                                    return_exceptions=True)
    return _failed(backups, outcomes)


def _failed(backups: list[str], outcomes: Sequence[object]) -> list[str]:
    for outcome in outcomes:
        if isinstance(outcome, StaleEpochError):
            raise outcome
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome
    failed = []
    for backup, outcome in zip(backups, outcomes):
        if isinstance(outcome, Exception):
            logger.warning("replication to %s failed: %r", backup, outcome)
        if outcome is not True:
            failed.append(backup)
    return failed


async def begin_epoch(ctx: ReplicationContext, replica: Replica, epoch: int,
                      backups: list[str]) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """Make every backup adopt `epoch` (fencing older primaries).

    Returns what each backup that answered holds, {backup: (applied seq, incarnation)},
    and the backups that did not answer.
    """
    async def one(backup: str) -> tuple[int, str]:
        deadline = time.monotonic() + ctx.config.replicate_timeout_s * 2
        request = peer_pb2.BeginEpochRequest(dataset=replica.dataset, shard=replica.index, epoch=epoch,
                                             primary=ctx.node_id, cluster_id=ctx.cluster_id,
                                             dataset_id=replica.dataset_id)

        async def attempt() -> tuple[int, str]:   # retried while the backup learns the shard map
            try:
                response = await ctx.peers.peer(ctx.address_of(backup)).BeginEpoch(
                    request, timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise _deposed(replica, backup, exc) from exc
                raise
            return int(response.seq), response.incarnation

        return await retry_async(attempt, policy=ctx.peer_retry, deadline_s=deadline,
                                 retry_on=lambda exc: isinstance(exc, grpc.aio.AioRpcError))

    outcomes = await asyncio.gather(*(one(b) for b in backups), return_exceptions=True)
    held = {b: o for b, o in zip(backups, outcomes) if isinstance(o, tuple)}
    failed = _failed(backups, [True if isinstance(o, tuple) else o for o in outcomes])
    return held, failed


async def catch_up_from_backups(ctx: ReplicationContext, replica: Replica, epoch: int, backups: list[str],
                                seqs: dict[str, int]) -> int:
    """Fetch entries a backup holds and this node lacks (unacknowledged writes of the old primary).

    Returns this node's seq afterwards. A backup still ahead of it then (its entries could
    not be fetched: the rings forgot them, or it did not answer) holds what this node
    does not: the caller must not fence it out (ShardPrimary steps down in its favour).
    """
    own = replica.store.state.seq
    ahead = {b: s for b, s in seqs.items() if s > own and b in backups}
    if not ahead:
        return own
    source = max(ahead, key=lambda b: ahead[b])
    # A reply holds a prefix bounded by bytes (fetch_entries_bytes_max): ask again after the
    # last applied seq until the source's seq is reached, or it cannot give more.
    while replica.store.state.seq < ahead[source]:
        before = replica.store.state.seq
        messages = await _fetch_entries(ctx, replica, epoch, source, ahead[source])
        if not messages:
            return replica.store.state.seq
        async with replica.apply_lock:
            for message in messages:
                if message.seq != replica.store.state.seq + 1:
                    continue
                entry = Entry.decode(message.payload)
                await ctx.run_blocking(replica.store.apply, entry)
                replica.ring.append(message.seq, entry.epoch, message.payload)
        if replica.store.state.seq == before:
            logger.warning("shard %s: entries from %s after seq %d do not follow on", replica.name, source, before)
            return before
    logger.info("shard %s: caught up to seq %d from %s before serving", replica.name, replica.store.state.seq, source)
    return replica.store.state.seq


async def _fetch_entries(ctx: ReplicationContext, replica: Replica, epoch: int, source: str,
                         source_seq: int) -> list[peer_pb2.ReplicateRequest]:
    """Entries after this node's seq from `source` (a prefix); empty when it cannot give them."""
    own = replica.store.state.seq
    request = peer_pb2.FetchEntriesRequest(dataset=replica.dataset, shard=replica.index, after_seq=own, epoch=epoch,
                                           cluster_id=ctx.cluster_id, dataset_id=replica.dataset_id)
    try:
        response = await ctx.peers.peer(ctx.address_of(source)).FetchEntries(
            request, timeout=ctx.config.replicate_timeout_s * 2)
    except grpc.aio.AioRpcError as exc:
        logger.warning("shard %s: cannot fetch entries from %s: %s", replica.name, source, exc.code().name)
        return []
    if not response.complete:
        logger.warning("shard %s: %s is at seq %d, this node at %d, and the entries between are gone from its "
                       "recent-entry ring", replica.name, source, source_seq, own)
        return []
    return list(response.entries)


async def push_to_backups(ctx: ReplicationContext, replica: Replica, epoch: int, backups: list[str],
                          seqs: dict[str, int]) -> list[str]:
    """Send lagging backups the entries they miss; return the ones that could not catch up."""
    own = replica.store.state.seq
    lagging = [b for b in backups if b in seqs and seqs[b] < own]

    async def one(backup: str) -> bool:
        entries = replica.ring.after(seqs[backup], own)
        if entries is None:
            return False
        return await _replicate_to(ctx, replica, epoch, backup, entries)

    outcomes = await asyncio.gather(*(one(b) for b in lagging), return_exceptions=True)
    return _failed(lagging, list(outcomes))
