"""A learner: a new replica of a shard filling itself from the primary until it joins the in-sync set.

The steps (DESIGN.md section 4, issue 18), each resumable because its progress is in the
replica's own LMDB meta rows (storage/fill.py):

1. copy: CopyShard from the primary, installing each chunk with its position; after a
   crash of either side the copy continues after the last installed key. A new primary
   (the source changed) starts the copy over: the old one's reads may have held writes
   that were never acknowledged.
2. replay: FetchEntries from the primary after the copy's base seq, applied in order (the
   entries are blind effects, so chunks read at later seqs converge). If the primary's ring
   no longer holds the entries after the replica's seq, the copy starts over.
3. join: JoinShard with the replica's seq and incarnation; the primary pushes what is
   left from its ring and records the join through Raft (epoch + 1). Until then the
   replica is not in sync and nobody reads from it.

`fill_replica` returns when the replica joined or this node is no longer a learner of
the shard; the shard registry cancels it otherwise (reconcile).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import grpc
import msgpack

from shoal.client.wire.pb import peer_pb2
from shoal.client.wire.retry import RetryPolicy
from shoal.node.replication.copy_source import digest
from shoal.node.replication.replica import FillProgress
from shoal.node.storage import fill
from shoal.node.storage.entry import Entry

if TYPE_CHECKING:
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)

LEARNER_RETRY_S_MAX = 2.0       # the longest pause between two attempts of a learner
COPY_STREAM_TIMEOUT_S = 600.0   # one CopyShard stream; past it the copy resumes after its last chunk


class CopyFailed(Exception):
    """This attempt cannot go on (the primary changed or refused, a chunk was damaged): try again."""


async def fill_replica(ctx: ReplicationContext, replica: Replica) -> None:
    """Copy, replay, join; retried (from where it stopped) until joined or no longer a learner."""
    backoff = RetryPolicy(ctx.config.peer_retry_s, LEARNER_RETRY_S_MAX).backoff()   # a refusal may last
    started_s = time.monotonic()
    while True:
        shard = ctx.metadata.view.shard(replica.dataset, replica.index)
        if shard is None or ctx.node_id not in shard.learners:
            return
        if not shard.primary or shard.primary == ctx.node_id:
            await backoff.asleep(time.monotonic() + 1.0)
            continue
        try:
            if await _attempt(ctx, replica, shard.primary):
                replica.fill = None
                logger.info("shard %s: learner joined the in-sync set (copy and replay took %.1f s)",
                            replica.name, time.monotonic() - started_s)
                return
        except (CopyFailed, grpc.aio.AioRpcError) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            logger.info("shard %s: filling from %s interrupted (%s); resuming", replica.name, shard.primary, detail)
        await backoff.asleep(time.monotonic() + 1.0)


async def _attempt(ctx: ReplicationContext, replica: Replica, primary: str) -> bool:
    store = replica.store
    replica.fill = FillProgress()
    state = await ctx.run_blocking(fill.fill_state, store)
    if state is None or state.source != primary:
        logger.info("shard %s: learner starts a copy from %s", replica.name, primary)
        state = await ctx.run_blocking(fill.begin, store, primary)
    else:
        logger.info("shard %s: learner resumes its copy from %s at table %s", replica.name, primary,
                    state.table or "(copied)")
    replica.fill.records_done = replica.fill.records_start = await ctx.run_blocking(fill.records_installed, store)
    if state.table not in (fill.COPIED, fill.REPLAYING):
        state = await _copy(ctx, replica, primary, state)
    replica.fill.phase = "replaying"
    if state.table == fill.COPIED:
        state = await ctx.run_blocking(fill.finish, store, state)
        logger.info("shard %s: copy from %s done (%d records, base seq %d); replaying entries",
                    replica.name, primary, store.state.records, state.base)
    if not await _replay(ctx, replica, primary):
        reached = store.state.seq
        await ctx.run_blocking(fill.begin, store, primary)    # the entries are gone: copy again
        raise CopyFailed(f"{primary}'s recent entries no longer reach back to seq {reached}: copy again")
    replica.fill.phase = "joining"
    return await _join(ctx, replica, primary)


async def _copy(ctx: ReplicationContext, replica: Replica, primary: str, state: fill.FillState) -> fill.FillState:
    request = peer_pb2.CopyShardRequest(dataset=replica.dataset, shard=replica.index, dataset_id=replica.dataset_id,
                                        cluster_id=ctx.cluster_id, learner=ctx.node_id, table=state.table,
                                        after=state.cursor)
    stream = ctx.peers.peer(ctx.address_of(primary)).CopyShard(request, timeout=COPY_STREAM_TIMEOUT_S)
    async for message in stream:
        if digest(message.keys, message.values) != message.digest:
            raise CopyFailed(f"chunk of table {message.table} after {state.cursor[:40]!r} arrived damaged")
        if message.table != state.table:
            raise CopyFailed(f"expected a chunk of table {state.table}, got {message.table}")
        keys = msgpack.unpackb(message.keys, raw=False)
        values = msgpack.unpackb(message.values, raw=False)
        chunk = fill.Chunk(message.table, list(zip(keys, values)), message.done, message.seq)
        state = await ctx.run_blocking(fill.install, replica.store, state, chunk)
        _count(replica, message, len(keys))
        if state.table == fill.COPIED:
            return state
    raise CopyFailed(f"the copy stream from {primary} ended in table {state.table}")


async def _replay(ctx: ReplicationContext, replica: Replica, primary: str) -> bool:
    """Apply the primary's entries after this replica's seq until none is left; False when
    its ring no longer holds them."""
    while True:
        request = peer_pb2.FetchEntriesRequest(dataset=replica.dataset, shard=replica.index,
                                               after_seq=replica.store.state.seq, cluster_id=ctx.cluster_id,
                                               dataset_id=replica.dataset_id)
        response = await ctx.peers.peer(ctx.address_of(primary)).FetchEntries(
            request, timeout=ctx.config.replicate_timeout_s * 2)
        if not response.complete:
            return False
        if not response.entries:
            return True
        async with replica.apply_lock:
            for message in response.entries:
                if message.seq == replica.store.state.seq + 1:
                    await ctx.run_blocking(replica.store.apply, Entry.decode(message.payload))
                    replica.ring.append(message.seq, message.epoch, message.payload)


async def _join(ctx: ReplicationContext, replica: Replica, primary: str) -> bool:
    request = peer_pb2.JoinShardRequest(dataset=replica.dataset, shard=replica.index, dataset_id=replica.dataset_id,
                                        cluster_id=ctx.cluster_id, learner=ctx.node_id, seq=replica.store.state.seq,
                                        incarnation=replica.store.incarnation)
    response = await ctx.peers.peer(ctx.address_of(primary)).JoinShard(
        request, timeout=ctx.config.replicate_timeout_s * 4)
    if not response.joined:
        logger.debug("shard %s: join refused by %s: %s", replica.name, primary, response.reason)
        raise CopyFailed(f"join refused: {response.reason}")
    # Until this node's metadata shows the join, a reconcile would see a learner without a
    # fill task and start a new copy over the joined replica: wait for it first.
    deadline_s = time.monotonic() + ctx.config.replicate_timeout_s * 10
    backoff = ctx.peer_retry.backoff()
    while _is_learner(ctx, replica):
        if time.monotonic() > deadline_s:
            raise CopyFailed("joined, but this node's metadata does not show it yet")
        await backoff.asleep(deadline_s)
    await ctx.run_blocking(fill.forget, replica.store)
    return True


def _count(replica: Replica, message: peer_pb2.CopyShardChunk, records: int) -> None:
    progress = replica.fill
    if progress is None:
        return
    progress.bytes_done += len(message.keys) + len(message.values)
    if message.table == fill.TABLES[0]:
        progress.records_total = message.source_records
        progress.records_done += records


def _is_learner(ctx: ReplicationContext, replica: Replica) -> bool:
    shard = ctx.metadata.view.shard(replica.dataset, replica.index)
    return shard is not None and ctx.node_id in shard.learners
