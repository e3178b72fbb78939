"""A learner: a new replica of a shard filling itself from the primary until it joins the in-sync set.

The steps (DESIGN.md section 4, issue 18), each resumable because its progress is in the
replica's own LMDB meta rows (storage/fill.py):

0. reuse: a replica already on this node (a backup fenced out while it was down or slow,
   back before its copy was dropped) skips the copy when that is safe, and only replays:
   see "Catching up by replay" below.
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

Catching up by replay (issue 18.1; Kafka's follower truncation by leader epoch, KIP-101,
is the model). A replica whose last applied entry is (seq S, epoch E) and whose content is
the state right after that entry may skip the copy and replay from S when the primary's
ring holds an entry with seq S *and epoch E*, and every entry after S (`replay_problem`).
Why that is enough: an entry is made once, by the primary of its epoch, on top of its own
store at S - 1 (one primary per epoch, which makes each seq at most once, and every replica
applies entries in seq order and only those of the history it follows), so
the same (S, E) is the same entry with the same history before it, as Raft's log matching
property says for (index, term). Why the epoch matters: entries are blind effects
(puts, deletes), not commands to recompute, so a replica holding a *divergent suffix* (an
entry S of a deposed primary that was never acknowledged, which the primary has as
another entry S of another epoch, or not at all) cannot be repaired by replaying the
primary's entries over it: a key only the divergent entry wrote would keep its value. So
anything else is a full copy (the "snapshot"), which starts from an empty replica
(`fill.begin`) so that no divergent record survives. The replica must also know the epoch
of its last entry (unknown after a copy, whose chunks are of many seqs, in stores older than
the `entry_epoch` row, and in a replica the scrubber marked corrupt), and its records must
match its meta rows (`scrub.check`: a disk damaged while the node was down). When unsure:
copy. (Its incarnation says nothing here: fencing it out dropped its record.)
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
from shoal.node.replication.ring import RingEntry
from shoal.node.storage import fill, scrub
from shoal.node.storage.entry import Entry
from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN

if TYPE_CHECKING:
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)

LEARNER_RETRY_S_MAX = 2.0       # the longest pause between two attempts of a learner
COPY_STREAM_TIMEOUT_S = 600.0   # one CopyShard stream; past it the copy resumes after its last chunk


COPY_AGAIN = "copy again"       # how JoinShard's reason ends when only a new copy can let the learner join


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
    if state is None and store.state.seq > 0:   # an old replica, not being filled: reuse it if safe
        fetched, problem = await _check_reuse(ctx, replica, primary)
        if problem is None:
            return await _catch_up(ctx, replica, primary, fetched)
        logger.info("shard %s: learner starts a copy from %s (its replica at seq %d cannot catch up by replay: %s)",
                    replica.name, primary, store.state.seq, problem)
        state = await _begin(ctx, replica, primary)
    elif state is None or state.source != primary:
        logger.info("shard %s: learner starts a copy from %s", replica.name, primary)
        state = await _begin(ctx, replica, primary)
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
        await _begin(ctx, replica, primary)    # the entries are gone: copy again
        raise CopyFailed(f"{primary}'s recent entries no longer reach back to seq {reached}: copy again")
    replica.fill.phase = "joining"
    return await _join(ctx, replica, primary)


async def _begin(ctx: ReplicationContext, replica: Replica, primary: str) -> fill.FillState:
    """Empty the replica for a copy from `primary`. Its ring goes too: it may hold entries of
    the old content (a divergent suffix) that a later replay must never take for history."""
    async with replica.apply_lock:
        replica.ring.clear()
        return await ctx.run_blocking(fill.begin, replica.store, primary)


def replay_problem(seq: int, entry_epoch: int, fetched: list[RingEntry] | None) -> str | None:
    """The safety rule of catching up by replay (module docstring); pure. None when a replica
    whose last applied entry is (seq, entry_epoch) may replay the primary's entries after
    seq; otherwise why not (it must be copied). `fetched`: the primary's answer to
    FetchEntries after seq - 1 (its ring's entries from seq on), None when incomplete (the
    ring lacks some of them)."""
    if seq <= 0:
        return "it holds no entry"
    if entry_epoch == ENTRY_EPOCH_UNKNOWN:
        return "the epoch of its last entry is unknown"
    if fetched is None:
        return f"the primary's recent entries no longer reach back to seq {seq}"
    if not fetched or fetched[0].seq != seq:
        return f"the primary has no entry {seq} (this replica holds entries the primary never had)"
    if fetched[0].epoch != entry_epoch:
        return (f"its entry {seq} is of epoch {entry_epoch}, the primary's of epoch {fetched[0].epoch} "
                "(a divergent suffix)")
    return None


async def _check_reuse(ctx: ReplicationContext, replica: Replica, primary: str
                       ) -> tuple[list[peer_pb2.ReplicateRequest], str | None]:
    """(the primary's entries from this replica's seq on, None) when it may catch up by replay;
    ([], why not) otherwise. Cheap checks first, the full scan of the records last."""
    store = replica.store
    state = store.state
    if state.entry_epoch == ENTRY_EPOCH_UNKNOWN:   # spares the primary a question
        return [], "the epoch of its last entry is unknown"
    response = await _fetch(ctx, replica, primary, state.seq - 1)
    fetched = [RingEntry(m.seq, m.epoch, b"") for m in response.entries] if response.complete else None
    problem = replay_problem(state.seq, state.entry_epoch, fetched)
    if problem is None:
        damage = await ctx.run_blocking(scrub.check, store)
        if damage is not None:
            problem = f"its records do not match its meta rows ({damage})"
    return list(response.entries) if problem is None else [], problem


async def _catch_up(ctx: ReplicationContext, replica: Replica, primary: str,
                    fetched: list[peer_pb2.ReplicateRequest]) -> bool:
    """Replay from the replica's seq (no copy), then join."""
    store = replica.store
    logger.info("shard %s: learner catches up from seq %d by replay (no copy): %s holds its last entry "
                "(epoch %d) and every one after", replica.name, store.state.seq, primary, store.state.entry_epoch)
    progress = replica.fill
    assert progress is not None
    progress.phase = "replaying"
    progress.records_done = progress.records_start = progress.records_total = store.state.records
    await _apply(ctx, replica, fetched)
    if not await _replay(ctx, replica, primary):
        raise CopyFailed(f"{primary}'s recent entries no longer reach back to seq {store.state.seq}")
    progress.phase = "joining"
    return await _join(ctx, replica, primary)


async def _copy(ctx: ReplicationContext, replica: Replica, primary: str, state: fill.FillState) -> fill.FillState:
    request = peer_pb2.CopyShardRequest(dataset=replica.dataset, shard=replica.index, dataset_id=replica.dataset_id,
                                        cluster_id=ctx.cluster_id, learner=ctx.node_id, table=state.table,
                                        after=state.cursor)
    stream = ctx.peers.peer(ctx.address_of(primary)).CopyShard(request, timeout=COPY_STREAM_TIMEOUT_S)
    async for message in stream:
        chunk = chunk_of(message, state)
        state = await ctx.run_blocking(fill.install, replica.store, state, chunk)
        _count(replica, message, len(chunk.pairs))
        if state.table == fill.COPIED:
            return state
    raise CopyFailed(f"the copy stream from {primary} ended in table {state.table}")


def chunk_of(message: peer_pb2.CopyShardChunk, state: fill.FillState) -> fill.Chunk:
    """The pairs of one chunk of the table being copied; pure. CopyFailed (this attempt ends, the
    learner goes on) when the chunk was damaged on the way (digest) or is not what a primary
    sends: keys and values are msgpack arrays of bytes of one length, keys of 1..KEY_BYTES_MAX
    bytes (what LMDB can install), a seq up to fill.SEQ_MAX."""
    where = f"chunk of table {message.table[:40]!r} after {state.cursor[:40]!r}"
    if digest(message.keys, message.values) != message.digest:
        raise CopyFailed(f"{where} arrived damaged")
    if message.table != state.table:
        raise CopyFailed(f"expected a chunk of table {state.table}, got {message.table[:40]!r}")
    try:
        keys = msgpack.unpackb(message.keys, raw=False)
        values = msgpack.unpackb(message.values, raw=False)
    except Exception as exc:   # msgpack raises several unrelated types (ExtraData, FormatError, ...)
        raise CopyFailed(f"{where} is not msgpack: {type(exc).__name__}") from None
    if type(keys) is not list or type(values) is not list or len(keys) != len(values):
        raise CopyFailed(f"{where}: keys and values are not two arrays of one length")
    if not {bytes}.issuperset(map(type, keys)) or not {bytes}.issuperset(map(type, values)):
        raise CopyFailed(f"{where}: keys and values must be bytes")
    if keys and (min(map(len, keys)) == 0 or max(map(len, keys)) > fill.KEY_BYTES_MAX):
        raise CopyFailed(f"{where}: a key is empty or longer than {fill.KEY_BYTES_MAX} bytes")
    if message.seq > fill.SEQ_MAX:
        raise CopyFailed(f"{where}: seq {message.seq} is past {fill.SEQ_MAX}")
    return fill.Chunk(message.table, list(zip(keys, values)), message.done, message.seq)


async def _replay(ctx: ReplicationContext, replica: Replica, primary: str) -> bool:
    """Apply the primary's entries after this replica's seq until none is left; False when
    its ring no longer holds them."""
    while True:
        response = await _fetch(ctx, replica, primary, replica.store.state.seq)
        if not response.complete:
            return False
        if not response.entries:
            return True
        await _apply(ctx, replica, list(response.entries))


async def _fetch(ctx: ReplicationContext, replica: Replica, primary: str,
                 after_seq: int) -> peer_pb2.FetchEntriesResponse:
    request = peer_pb2.FetchEntriesRequest(dataset=replica.dataset, shard=replica.index, after_seq=after_seq,
                                           cluster_id=ctx.cluster_id, dataset_id=replica.dataset_id)
    response: peer_pb2.FetchEntriesResponse = await ctx.peers.peer(ctx.address_of(primary)).FetchEntries(
        request, timeout=ctx.config.replicate_timeout_s * 2)
    return response


async def _apply(ctx: ReplicationContext, replica: Replica, messages: list[peer_pb2.ReplicateRequest]) -> None:
    """Apply, in order, the entries that follow the replica's seq (one it holds already is skipped)."""
    async with replica.apply_lock:
        for message in messages:
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
        if response.reason.endswith(COPY_AGAIN):   # replaying cannot fix it: without this the learner
            await _begin(ctx, replica, primary)    # replayed and asked again forever (seen in bench/repair.py)
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
