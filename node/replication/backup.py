"""The backup side of replication: apply entries in order, adopt epochs, serve recent entries.

A replica rejects any message from an epoch older than the one it adopted; that is
what fences a primary that was replaced while it was paused or cut off.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shoal.node.errors import InvalidRequestError, NotPrimaryError, StaleEpochError
from shoal.node.storage.entry import Entry

if TYPE_CHECKING:
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.replica import Replica
    from shoal.node.replication.ring import RingEntry

logger = logging.getLogger(__name__)


async def _adopt(ctx: ReplicationContext, replica: Replica, epoch: int, sender: str) -> None:
    """Fence: reject older epochs, adopt newer ones (and stop serving as an older primary)."""
    current = replica.store.state.epoch
    if epoch < current:
        raise StaleEpochError(f"shard {replica.name}: message from {sender} at epoch {epoch}, "
                              f"this replica follows epoch {current}")
    if epoch > current:
        await ctx.run_blocking(replica.store.set_epoch, epoch)
        if replica.primary is not None and replica.primary.epoch < epoch and sender != ctx.node_id:
            replica.primary.stop(f"{sender} is primary at epoch {epoch}")


async def apply_replicated(ctx: ReplicationContext, replica: Replica, epoch: int, seq: int,
                           payload: bytes, sender: str) -> int:
    """Apply one entry if it is the next; return the applied seq (lower than seq = a gap).

    A replica that is not the recorded incarnation (wiped, re-created) is not in sync and
    refuses, so its primary fences it out instead of acknowledging writes on it.
    """
    if replica.lost:
        raise NotPrimaryError(f"shard {replica.name}: this replica is new (not the recorded incarnation), "
                              "not in sync")
    async with replica.apply_lock:
        await _adopt(ctx, replica, epoch, sender)
        applied = replica.store.state.seq
        if seq != applied + 1:
            return applied   # duplicate (>= seq) or gap (< seq - 1): the primary sees which
        try:
            entry = Entry.decode(payload)
        except ValueError as exc:
            raise InvalidRequestError(f"shard {replica.name}: malformed entry {seq} from {sender}: {exc}") from exc
        if entry.seq != seq:
            raise InvalidRequestError(f"shard {replica.name}: entry carries seq {entry.seq}, message says {seq}")
        state = await ctx.run_blocking(replica.store.apply, entry)
        replica.ring.append(seq, entry.epoch, payload)
        return state.seq


async def begin_epoch(ctx: ReplicationContext, replica: Replica, epoch: int, sender: str) -> tuple[int, int]:
    async with replica.apply_lock:
        await _adopt(ctx, replica, epoch, sender)
        state = replica.store.state
        return state.seq, state.epoch


def recent_entries(replica: Replica, after_seq: int) -> list[RingEntry] | None:
    """Entries after `after_seq` up to the newest the ring holds; None if it lacks some.

    Up to the ring's newest, not the store's seq: a primary commits an entry to its store
    before it appends it to its ring (across an await), and an answer in between must not
    say "incomplete" (a learner would start its copy over)."""
    newest = replica.ring.last_seq
    return replica.ring.after(after_seq, replica.store.state.seq if newest is None else newest)


ENTRY_OVERHEAD_BYTES = 1024   # one entry's ReplicateRequest framing (names, ids, numbers), rounded up


def entries_within(entries: list[RingEntry], bytes_max: int) -> list[RingEntry]:
    """The longest prefix of `entries` within `bytes_max` (payloads plus framing), at least one entry.

    A FetchEntries reply carries this prefix; the caller fetches again after its last seq.
    """
    size = 0
    for count, entry in enumerate(entries):
        size += len(entry.payload) + ENTRY_OVERHEAD_BYTES
        if size > bytes_max and count:
            return entries[:count]
    return entries
