"""The primary's side of a copy: a snapshot of a shard's LMDB environment for a learner (CopyShard).

A learner asks for (snapshot id, offset). The primary writes a snapshot of the replica
(storage/fill.py `write_snapshot`: one read transaction, `copyfd`, compacted) to a file in
`data_dir/snapshots/` the first time, and streams it from the offset in pieces of
`scan_chunk_bytes_max` (4 MiB: per-message work is noise, one fits a message), each with its xxh64 digest (and every message with the whole file's
digest, checked by the learner at the end). An id it does not hold (it restarted, or it is
a new primary) gets a new snapshot from offset 0: the learner starts over, as with any new
source. `Snapshots` keeps the files: one per (shard, learner), at most `count_max` at once
(a learner asking beyond it gets OVERLOADED and asks again later), removed when the learner
joined or left, this node stopped being the shard's primary, or nobody read it for
SNAPSHOT_IDLE_S (checked at each new snapshot and every SWEEP_INTERVAL_S while any is held).

A snapshot outlives a restart of its node (issue 18.3: kill the sender mid-transfer, and the
copy goes on from where it stopped): each file has a manifest (`<id>.json`: shard, learner,
seq, size, digest, and the replica's incarnation), written, like the file, before the first
byte is sent (and fsynced with lmdb_sync), and read back at start. A held snapshot is served
only while the replica is still the one it was taken of: the same incarnation (not refilled
or marked corrupt since) and a seq at or past the snapshot's (no write of it lost); one read
back is served only once its file's digest matches the manifest again.

Why pages and not records: a record copy ran per-record Python on both sides (msgpack,
installs, a checksum pass) and, on a 2-core box, took the CPU the clients' writes needed
(bench/RESULTS.md, "Repair"). A snapshot is written by C code with the GIL released, read
and sent in large pieces, so a copy costs little CPU per byte.

Every copy this node sends shares one `Throttle` (repair_bytes_per_s), so repairs leave the
disk and the network to client traffic; while this node's client writes get slower than
usual, the throttle's rate backs off (AIMD, `pacing.CopyPacing`) and grows back after.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import xxhash

from shoal.client.wire.pb import peer_pb2
from shoal.node.errors import InvalidRequestError, NotPrimaryError, OverloadedError
from shoal.node.metadata.view import dataset_name
from shoal.node.storage import fill

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.pacing import CopyPacing
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)

SNAPSHOT_IDLE_S = 300.0          # a snapshot nobody read for this long goes (its learner starts over)
SWEEP_INTERVAL_S = 10.0          # how often held snapshots are checked while there are any
SNAPSHOT_ID_CHARS = 16
LEARNER_POLL_S = 0.02            # while this node's metadata has yet to list a learner that asks


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottleStatistics:
    bytes_paid: int           # snapshot bytes of every copy this node sent, since start
    bytes_per_s: int          # the cap before pacing (repair_bytes_per_s); 0 = unlimited


class Throttle:
    """A byte rate shared by every copy this node sends; 0 = unlimited.

    Bytes are paid for after they are read: a copy sleeps until its share of the rate
    allows the next piece (a token bucket with a one-second burst). With `pacing`, the rate
    is what it allows now (bytes_per_s while client writes are as fast as usual, down to
    1/16 of it while they are slower: pacing.py). Every byte paid is counted (/metrics)."""

    def __init__(self, bytes_per_s: int) -> None:
        self.bytes_per_s = bytes_per_s
        self._next_s = 0.0
        self._bytes_paid = 0

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(self._bytes_paid, self.bytes_per_s)

    async def pay(self, count: int, pacing: CopyPacing | None = None) -> None:
        self._bytes_paid += count
        rate = self.bytes_per_s if pacing is None else pacing.rate_bytes_per_s(self.bytes_per_s)
        if rate <= 0:
            return
        now = time.monotonic()
        self._next_s = max(self._next_s, now - 1.0) + count / rate
        if self._next_s > now:
            await asyncio.sleep(self._next_s - now)


def snapshots_max(config: NodeConfig) -> int:
    """Snapshot files a node keeps at once: each learner node fills at most
    repair_transfers_per_node_max replicas, and a primary serves learners on a few nodes."""
    return 2 * max(1, config.repair_transfers_per_node_max)


def digest(data: bytes) -> int:
    return int(xxhash.xxh64_intdigest(data))


@dataclasses.dataclass(slots=True)
class HeldSnapshot:
    id: str
    shard: tuple[str, int]     # (dataset id, index)
    learner: str
    path: pathlib.Path
    snapshot: fill.Snapshot
    incarnation: str           # of the replica it was taken of
    used_s: float              # monotonic time of the last piece sent (or of the load, after a restart)
    streams: int = 0           # streams reading it now (never removed while > 0)
    verified: bool = True      # False for one read back after a restart until its digest is checked again

    def manifest(self) -> dict[str, object]:
        return {"id": self.id, "shard": list(self.shard), "learner": self.learner, "incarnation": self.incarnation,
                **dataclasses.asdict(self.snapshot)}

    @classmethod
    def load(cls, manifest_path: pathlib.Path) -> HeldSnapshot:
        """The snapshot of a manifest; ValueError, KeyError, TypeError or OSError when it or its
        file is not whole (a crash while it was written)."""
        row = json.loads(manifest_path.read_text())
        path = manifest_path.with_suffix(".mdb")
        snapshot = fill.Snapshot(int(row["seq"]), int(row["records"]), int(row["size_bytes"]), int(row["digest"]))
        if row["id"] != path.stem or path.stat().st_size != snapshot.size_bytes:
            raise ValueError(f"{path} does not match its manifest")
        dataset_id, index = row["shard"]
        return cls(path.stem, (str(dataset_id), int(index)), str(row["learner"]), path, snapshot,
                   str(row["incarnation"]), time.monotonic(), verified=False)


class Snapshots:
    """The snapshot files this node keeps for its learners (module docstring)."""

    def __init__(self, directory: pathlib.Path, count_max: int, *, idle_s: float = SNAPSHOT_IDLE_S) -> None:
        assert count_max > 0 and idle_s > 0
        self.directory = directory
        self.count_max = count_max
        self.idle_s = idle_s
        self._held: dict[str, HeldSnapshot] = {}
        self._writing = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._load()

    def held(self) -> list[HeldSnapshot]:
        return list(self._held.values())

    def _load(self) -> None:
        """Take back the snapshots of the node's previous run (module docstring); remove what is
        not a whole snapshot with its manifest (a crash while one was written)."""
        if not self.directory.is_dir():
            return
        for manifest in sorted(self.directory.glob("*.json")):
            try:
                held = HeldSnapshot.load(manifest)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.info("snapshot manifest %s dropped: %s", manifest.name, exc)
                continue
            if len(self._held) < self.count_max:
                self._held[held.id] = held
        for path in self.directory.iterdir():
            if path.stem in self._held:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if self._held:
            logger.info("%d snapshots for learners kept from before the restart: %s", len(self._held),
                        ", ".join(sorted(self._held)))

    def _usable(self, held: HeldSnapshot, replica: Replica) -> bool:
        """Is the replica still the one the snapshot was taken of (module docstring)?"""
        store = replica.store
        return store.incarnation == held.incarnation and store.state.seq >= held.snapshot.seq

    async def acquire(self, ctx: ReplicationContext, replica: Replica, learner: str,
                      snapshot_id: str) -> HeldSnapshot:
        """The learner's snapshot `snapshot_id` of this shard, or a new one."""
        key = (replica.dataset_id, replica.index)
        held = self._held.get(snapshot_id)
        self._schedule_sweep(ctx)
        if held is not None and held.shard == key and held.learner == learner and self._usable(held, replica):
            if not held.verified:   # read back after a restart: a crash may have left other bytes in it
                held.verified = await asyncio.to_thread(fill.file_digest, held.path) == held.snapshot.digest
            if held.verified:
                return held
        for other in [h for h in self._held.values() if h.shard == key and h.learner == learner and not h.streams]:
            self._remove(other, "the learner asked for a new one" if other.id != snapshot_id
                         else "its replica changed since (refilled, or writes lost), or its file did")
        self.sweep(ctx)
        if len(self._held) + self._writing >= self.count_max:
            raise OverloadedError(f"shard {replica.name}: this node keeps {self.count_max} snapshots for "
                                  "learners already: ask again later", retry_after_s=1.0)
        new_id = os.urandom(SNAPSHOT_ID_CHARS // 2).hex()
        path = self.directory / f"{new_id}.mdb"
        incarnation = replica.store.incarnation
        self._writing += 1
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # the loop's default pool, not the LMDB one: a long copy must not hold up client commits
            snapshot = await asyncio.to_thread(fill.write_snapshot, replica.store, path)
            held = HeldSnapshot(new_id, key, learner, path, snapshot, incarnation, time.monotonic())
            await asyncio.to_thread(_write_manifest, held, ctx.config.lmdb_sync)
        except BaseException:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            raise
        finally:
            self._writing -= 1
        self._held[new_id] = held
        logger.info("shard %s: snapshot %s for learner %s written (%d bytes at seq %d)",
                    replica.name, new_id, learner, snapshot.size_bytes, snapshot.seq)
        self._schedule_sweep(ctx)
        return held

    def sweep(self, ctx: ReplicationContext) -> None:
        """Remove the snapshots nobody needs any more (module docstring)."""
        now_s = time.monotonic()
        view = ctx.metadata.view
        for held in list(self._held.values()):
            if held.streams:
                continue
            shard = view.shard(dataset_name(held.shard[0]), held.shard[1])
            if shard is None or shard.dataset_id != held.shard[0] or shard.primary != ctx.node_id:
                self._remove(held, "this node is no longer the shard's primary")
            elif held.learner not in shard.learners:
                self._remove(held, "its learner joined or left")
            elif now_s - held.used_s > self.idle_s:
                self._remove(held, f"unused for {self.idle_s:.0f} s")

    def _remove(self, held: HeldSnapshot, reason: str) -> None:
        assert held.streams == 0, held
        self._held.pop(held.id, None)
        held.path.with_suffix(".json").unlink(missing_ok=True)   # the manifest first: a file without one is dropped
        held.path.unlink(missing_ok=True)
        logger.info("snapshot %s of %s/%d for learner %s removed: %s", held.id, *held.shard, held.learner, reason)

    def _schedule_sweep(self, ctx: ReplicationContext) -> None:
        if self._sweeper is not None or not self._held:
            return

        def tick() -> None:
            self._sweeper = None
            self.sweep(ctx)
            if self._held:
                self._schedule_sweep(ctx)

        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, tick)


def _write_manifest(held: HeldSnapshot, sync: bool) -> None:
    """`<id>.json` beside the snapshot, atomically; with `sync`, the file, the manifest and the
    directory reach the disk first (a snapshot is served only once its manifest exists)."""
    manifest = held.path.with_suffix(".json")
    partial = held.path.with_suffix(".json.partial")
    partial.write_text(json.dumps(held.manifest()))
    if sync:
        for path in (held.path, partial):
            with open(path, "rb") as file:
                os.fsync(file.fileno())
    os.replace(partial, manifest)
    if sync:
        directory = os.open(held.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


async def chunks(ctx: ReplicationContext, replica: Replica, request: peer_pb2.CopyShardRequest,
                 throttle: Throttle, snapshots: Snapshots) -> AsyncIterator[peer_pb2.CopyShardChunk]:
    """The learner's snapshot from request.offset to its end (a new snapshot from 0 when the
    asked-for one is not held); the last message ends at the file's length.

    Raises NotPrimaryError unless this node is the shard's primary and the requester one of
    its learners (a copy from anywhere else could hold unacknowledged writes of a deposed primary).
    """
    await _await_learner(ctx, replica, request.learner)
    _check(ctx, replica, request.learner)
    held = await snapshots.acquire(ctx, replica, request.learner, request.snapshot_id)
    size = held.snapshot.size_bytes
    offset = request.offset if held.id == request.snapshot_id else 0
    if offset > size:
        raise InvalidRequestError(f"shard {replica.name}: offset {offset} is past snapshot {held.id}'s "
                                  f"{size} bytes")
    piece_bytes = ctx.config.scan_chunk_bytes_max
    held.streams += 1
    try:
        while True:
            data = await asyncio.to_thread(fill.read_piece, held.path, offset, piece_bytes)
            assert data or offset == size, (held, offset)
            await throttle.pay(len(data), ctx.copy_pacing)
            _check(ctx, replica, request.learner)
            held.used_s = time.monotonic()
            yield peer_pb2.CopyShardChunk(
                snapshot_id=held.id, offset=offset, data=data, digest=digest(data), snapshot_bytes=size,
                snapshot_digest=held.snapshot.digest, seq=held.snapshot.seq, source_records=held.snapshot.records)
            offset += len(data)
            if offset >= size:
                return
    finally:
        held.streams -= 1
        held.used_s = time.monotonic()


async def _await_learner(ctx: ReplicationContext, replica: Replica, learner: str) -> None:
    """Until this node's metadata lists `learner` for the shard, at most replicate_timeout_s: the
    learner starts as soon as *its* node applied the add_learner command, often before this
    one did, and a refusal cost it a retry pause (1-2.5 s per copy in bench/repair.py)."""
    deadline_s = time.monotonic() + ctx.config.replicate_timeout_s
    while time.monotonic() < deadline_s:
        shard = ctx.metadata.view.shard(replica.dataset, replica.index)
        if shard is None or learner in shard.learners:
            return
        await asyncio.sleep(LEARNER_POLL_S)


def _check(ctx: ReplicationContext, replica: Replica, learner: str) -> None:
    shard = ctx.metadata.view.shard(replica.dataset, replica.index)
    primary = replica.primary
    if shard is None or primary is None or primary.state != "active" or shard.primary != ctx.node_id:
        raise NotPrimaryError(f"shard {replica.name}: this node is not its active primary: copy from the primary")
    if learner not in shard.learners:
        raise NotPrimaryError(f"shard {replica.name}: node {learner[:40]} is not one of its learners")
