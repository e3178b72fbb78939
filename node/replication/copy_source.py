"""The primary's side of a copy: a shard's tables in chunks for a learner (CopyShard).

Each chunk is read in its own read transaction (storage/fill.py) off the event loop and
carries an xxh64 digest, so a chunk damaged on the way is refused by the learner. Every
copy this node sends shares one `Throttle` (repair_bytes_per_s), so repairs leave the
disk and the network to client traffic; while this node's client writes get slower than
usual, the throttle's rate backs off (AIMD, `pacing.CopyPacing`) and grows back after.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgpack
import xxhash

from shoal.client.wire.pb import peer_pb2
from shoal.node.errors import InvalidRequestError, NotPrimaryError
from shoal.node.storage import fill

if TYPE_CHECKING:
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.pacing import CopyPacing
    from shoal.node.replication.replica import Replica


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottleStatistics:
    bytes_paid: int           # chunk bytes (keys + values) of every copy this node sent, since start
    bytes_per_s: int          # the cap before pacing (repair_bytes_per_s); 0 = unlimited


class Throttle:
    """A byte rate shared by every copy this node sends; 0 = unlimited.

    Bytes are paid for after they are read: a copy sleeps until its share of the rate
    allows the next chunk (a token bucket with a one-second burst). With `pacing`, the rate
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


def digest(keys: bytes, values: bytes) -> int:
    return int(xxhash.xxh64_intdigest(keys + values))


async def chunks(ctx: ReplicationContext, replica: Replica, request: peer_pb2.CopyShardRequest,
                 throttle: Throttle) -> AsyncIterator[peer_pb2.CopyShardChunk]:
    """Chunks of the replica's tables from (request.table, request.after) to the end.

    Raises NotPrimaryError unless this node is the shard's primary and the requester one of
    its learners (a copy from anywhere else could hold unacknowledged writes of a deposed primary).
    """
    _check(ctx, replica, request.learner)
    table = request.table or fill.TABLES[0]
    if table not in fill.TABLES:
        raise InvalidRequestError(f"shard {replica.name}: no table {table[:40]!r} to copy")
    after = request.after
    bytes_max = ctx.config.scan_chunk_bytes_max
    while True:
        chunk = await ctx.run_blocking(fill.read_chunk, replica.store, table, after, bytes_max)
        keys = msgpack.packb([key for key, _ in chunk.pairs], use_bin_type=True)
        values = msgpack.packb([value for _, value in chunk.pairs], use_bin_type=True)
        await throttle.pay(len(keys) + len(values), ctx.copy_pacing)
        _check(ctx, replica, request.learner)
        yield peer_pb2.CopyShardChunk(table=table, keys=keys, values=values, done=chunk.done, seq=chunk.seq,
                                      digest=digest(keys, values), source_records=replica.store.state.records)
        if not chunk.done:
            after = chunk.pairs[-1][0]
            continue
        position = fill.TABLES.index(table) + 1
        if position == len(fill.TABLES):
            return
        table, after = fill.TABLES[position], b""


def _check(ctx: ReplicationContext, replica: Replica, learner: str) -> None:
    shard = ctx.metadata.view.shard(replica.dataset, replica.index)
    primary = replica.primary
    if shard is None or primary is None or primary.state != "active" or shard.primary != ctx.node_id:
        raise NotPrimaryError(f"shard {replica.name}: this node is not its active primary: copy from the primary")
    if learner not in shard.learners:
        raise NotPrimaryError(f"shard {replica.name}: node {learner[:40]} is not one of its learners")
