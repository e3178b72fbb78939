"""A learner: a new replica of a shard filling itself from the primary until it joins the in-sync set.

The steps (DESIGN.md section 4, issue 18), each resumable because its progress is in the
replica's own LMDB meta rows (storage/fill.py):

0. reuse: a replica already on this node (a backup fenced out while it was down or slow,
   back before its copy was dropped) skips the copy when that is safe, and only replays:
   see "Catching up by replay" below.
1. copy: CopyShard from the primary: a snapshot of its replica at one seq S, received by
   byte offset into a staging file (its length is the resume offset: after a crash of
   either side the copy continues where it stopped, while the primary still holds that
   snapshot), verified by the whole file's digest, then installed in place of this
   replica's environment (`_install`). A new primary (the source changed) starts the copy
   over: the old one's state may have held writes that were never acknowledged.
2. replay: FetchEntries from the primary after S, applied in order. If the primary's ring
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
of its last entry (unknown after a copy, in stores older than the `entry_epoch` row, and in a
replica the scrubber marked corrupt), and its records must
match its meta rows (`scrub.check`: a disk damaged while the node was down). When unsure:
copy. (Its incarnation says nothing here: fencing it out dropped its record.)
"""
from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import grpc

from shoal.client.wire.pb import peer_pb2
from shoal.client.wire.retry import RetryPolicy
from shoal.node.replication.copy_source import digest
from shoal.node.replication.replica import FillProgress
from shoal.node.replication.ring import RingEntry
from shoal.node.storage import fill, scrub
from shoal.node.storage.entry import Entry
from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN, ShardStore, open_replica_store

if TYPE_CHECKING:
    import pathlib

    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)

LEARNER_RETRY_S_MAX = 2.0       # the longest pause between two attempts of a learner
COPY_STREAM_TIMEOUT_S = 600.0   # one CopyShard stream; past it the copy resumes at the bytes it holds


COPY_AGAIN = "copy again"       # how JoinShard's reason ends when only a new copy can let the learner join


class CopyFailed(Exception):
    """This attempt cannot go on (the primary changed or refused, a piece was damaged): try again."""


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
    elif state is None or state.source != primary or state.table not in _STAGES:
        logger.info("shard %s: learner starts a copy from %s", replica.name, primary)
        state = await _begin(ctx, replica, primary)
    else:
        logger.info("shard %s: learner resumes its copy from %s (%s)", replica.name, primary, _STAGES[state.table])
    if state.table == fill.COPYING:
        state = await _copy(ctx, replica, primary, state)
    if state.table == fill.COPIED:
        state = await _install(ctx, replica, primary)
        logger.info("shard %s: copy from %s installed (%d records, seq %d); replaying entries",
                    replica.name, primary, replica.store.state.records, state.base)
    replica.fill.phase = "replaying"
    replica.fill.records_done = replica.fill.records_total = replica.store.state.records
    if not await _replay(ctx, replica, primary):
        reached = replica.store.state.seq
        await _begin(ctx, replica, primary)    # the entries are gone: copy again
        raise CopyFailed(f"{primary}'s recent entries no longer reach back to seq {reached}: copy again")
    replica.fill.phase = "joining"
    return await _join(ctx, replica, primary)


_STAGES = {fill.COPYING: "receiving its snapshot", fill.COPIED: "installing its snapshot",
           fill.REPLAYING: "replaying"}


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
    """Receive the primary's snapshot into the staging file, from the bytes held already (if
    the primary still holds that snapshot; from 0 of a new one otherwise), until it is whole
    and verified: COPIED."""
    store, sync = replica.store, ctx.config.lmdb_sync
    offset = await ctx.run_blocking(fill.staged_bytes, store) if state.cursor else 0
    request = peer_pb2.CopyShardRequest(dataset=replica.dataset, shard=replica.index, dataset_id=replica.dataset_id,
                                        cluster_id=ctx.cluster_id, learner=ctx.node_id,
                                        snapshot_id=state.cursor.decode("ascii", "replace"), offset=offset)
    stream = ctx.peers.peer(ctx.address_of(primary)).CopyShard(request, timeout=COPY_STREAM_TIMEOUT_S)
    first = True
    async for message in stream:
        check_piece(message, state.cursor, offset, ctx.config.map_size_bytes)
        if message.snapshot_id.encode("ascii") != state.cursor:
            logger.info("shard %s: learner receives snapshot %s of %s (%d bytes, seq %d)", replica.name,
                        message.snapshot_id, primary, message.snapshot_bytes, message.seq)
            state = await ctx.run_blocking(fill.restart_staging, store, state, message.snapshot_id, sync)
            offset = 0
        if first:
            _start_count(replica, message, offset)
            first = False
        offset = await ctx.run_blocking(fill.append, store, offset, message.data, sync)
        _count(replica, message, offset)
        if offset == message.snapshot_bytes:
            try:
                return await ctx.run_blocking(fill.received, store, state, message.snapshot_digest)
            except fill.BadSnapshotError as exc:
                raise CopyFailed(str(exc)) from None
    raise CopyFailed(f"the copy stream from {primary} ended at byte {offset} of its snapshot")


_SNAPSHOT_ID = re.compile(r"[0-9a-f]{1,64}")


def check_piece(message: peer_pb2.CopyShardChunk, snapshot_id: bytes, offset: int, bytes_max: int) -> None:
    """Pure. CopyFailed (this attempt ends, the learner goes on) when a piece was damaged on the
    way (digest) or is not what a primary sends: a hex snapshot id; the piece starts where the
    staging file ends (at 0 for another snapshot than `snapshot_id`); it ends within the file;
    only the last piece may be empty; the file fits the map (bytes_max); a seq up to fill.SEQ_MAX."""
    where = f"piece at byte {message.offset} of snapshot {message.snapshot_id[:64]!r}"
    if digest(message.data) != message.digest:
        raise CopyFailed(f"{where} arrived damaged")
    if not _SNAPSHOT_ID.fullmatch(message.snapshot_id):
        raise CopyFailed(f"{where}: not a snapshot id")
    expected = offset if message.snapshot_id.encode("ascii") == snapshot_id else 0
    if message.offset != expected:
        raise CopyFailed(f"{where}: expected the piece at byte {expected}")
    if not 0 < message.snapshot_bytes <= bytes_max:
        raise CopyFailed(f"{where}: a snapshot of {message.snapshot_bytes} bytes (at most {bytes_max} fit the map)")
    end = message.offset + len(message.data)
    if end > message.snapshot_bytes or (not message.data and end != message.snapshot_bytes):
        raise CopyFailed(f"{where}: {len(message.data)} bytes do not fit a file of {message.snapshot_bytes}")
    if message.seq > fill.SEQ_MAX:
        raise CopyFailed(f"{where}: seq {message.seq} is past {fill.SEQ_MAX}")


async def _install(ctx: ReplicationContext, replica: Replica, primary: str) -> fill.FillState:
    """Put the verified snapshot in place of this replica's environment: prepared (its own
    incarnation and fill rows) in a thread, then closed, moved and reopened on the event loop
    with no await in between, so no reader there (status, metrics) meets a closed environment;
    under the apply lock, so no entry is applied meanwhile. Nothing else reads a learner's
    replica: the scrubber skips learners and compute tasks run on in-sync replicas (a task on
    the old file keeps it: fill.move_into_place)."""
    config = ctx.config
    async with replica.apply_lock:
        old = replica.store
        try:
            state = await ctx.run_blocking(fill.prepare, old, primary, config.lmdb_sync, config.map_size_bytes)
        except fill.BadSnapshotError as exc:
            await ctx.run_blocking(fill.begin, old, primary)
            raise CopyFailed(str(exc)) from None
        old.close()
        try:
            fill.move_into_place(old.path, config.lmdb_sync)
            replica.store = _open_store(ctx, old.path)
        except Exception:   # disk trouble: an empty replica copies again, never a closed store left behind
            logger.exception("shard %s: installing the snapshot from %s failed", replica.name, primary)
            (old.path / "data.mdb").unlink(missing_ok=True)
            (old.path / "lock.mdb").unlink(missing_ok=True)
            replica.store = _open_store(ctx, old.path)
            raise CopyFailed("installing the snapshot failed") from None
    return state


def _open_store(ctx: ReplicationContext, path: pathlib.Path) -> ShardStore:
    return open_replica_store(path, ctx.config)   # as the shard registry opens replicas (node/shards.py)


async def _replay(ctx: ReplicationContext, replica: Replica, primary: str) -> bool:
    """Apply the primary's entries after this replica's seq until none is left; False when
    neither its ring nor an in-sync backup's holds them (`_fetch_from_backups`)."""
    while True:
        response = await _fetch(ctx, replica, primary, replica.store.state.seq)
        if not response.complete:
            backup_response = await _fetch_from_backups(ctx, replica, primary)
            if backup_response is None:
                return False
            response = backup_response
        if not response.entries:
            return True
        await _apply(ctx, replica, list(response.entries))


async def _fetch_from_backups(ctx: ReplicationContext, replica: Replica,
                              primary: str) -> peer_pb2.FetchEntriesResponse | None:
    """The entries after this replica's seq from an in-sync backup's ring, when the primary's no
    longer reaches back: a primary restarted since its snapshot (issue 18.3, the sender killed
    mid-transfer) has an empty ring, while its backups still hold the entries it made before.
    Safe because an in-sync backup holds a prefix of the primary's history (it applied the
    primary's entries in order, and one that missed any was fenced out); the join then
    checks the rest against the primary's own ring. None when no backup has them."""
    shard = ctx.metadata.view.shard(replica.dataset, replica.index)
    after_seq = replica.store.state.seq
    for backup_id in shard.backups() if shard is not None and shard.primary == primary else []:
        if backup_id == ctx.node_id:
            continue
        try:
            response = await _fetch(ctx, replica, backup_id, after_seq)
        except grpc.aio.AioRpcError:
            continue
        if response.complete and response.entries:
            logger.info("shard %s: replaying entries after seq %d from backup %s (%s's recent entries no longer "
                        "reach back)", replica.name, after_seq, backup_id, primary)
            return response
    return None


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


def _start_count(replica: Replica, message: peer_pb2.CopyShardChunk, offset: int) -> None:
    """Progress in bytes of the snapshot, shown as records (its count x the share received)."""
    progress = replica.fill
    if progress is not None:
        progress.records_total = message.source_records
        progress.records_done = progress.records_start = message.source_records * offset // message.snapshot_bytes


def _count(replica: Replica, message: peer_pb2.CopyShardChunk, offset: int) -> None:
    progress = replica.fill
    if progress is not None:
        progress.bytes_done += len(message.data)
        progress.records_done = message.source_records * offset // message.snapshot_bytes


def _is_learner(ctx: ReplicationContext, replica: Replica) -> bool:
    shard = ctx.metadata.view.shard(replica.dataset, replica.index)
    return shard is not None and ctx.node_id in shard.learners
