"""Recent replication entries of one shard, kept in memory.

Used to catch replicas up after a primary change or a restart (a replica's store keeps its
most recent entries, `ShardStore.recent_entries`, and the ring starts from them): a new primary fetches entries it
missed from a more advanced backup, or pushes entries a backup missed. Learners replay
from the primary's ring after their copy, and a learner reusing an old replica (a backup
fenced out while it was down) replays from it only: its last entry, same seq and epoch,
must still be here (learner.replay_problem). The ring is bounded by count and bytes; a
replica that needs older entries than the ring holds is fenced out and refilled by
repair with a copy instead (issue: self-healing).
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable

from shoal.node.storage.entry import Entry


@dataclasses.dataclass(frozen=True, slots=True)
class RingEntry:
    seq: int
    epoch: int
    payload: bytes


class EntryRing:
    def __init__(self, entries_max: int, bytes_max: int) -> None:
        self._entries: collections.deque[RingEntry] = collections.deque()
        self._bytes = 0
        self._entries_max = entries_max
        self._bytes_max = bytes_max

    def append(self, seq: int, epoch: int, payload: bytes) -> None:
        if self._entries and seq != self._entries[-1].seq + 1:
            self.clear()   # a gap (e.g. after a restart): keep only a contiguous run
        self._entries.append(RingEntry(seq, epoch, payload))
        self._bytes += len(payload)
        while len(self._entries) > self._entries_max or (self._bytes > self._bytes_max and len(self._entries) > 1):
            self._bytes -= len(self._entries.popleft().payload)

    def load(self, entries: Iterable[tuple[int, bytes]]) -> None:
        """Start from stored (seq, encoded entry) pairs, oldest first and contiguous."""
        self.clear()
        for seq, payload in entries:
            self.append(seq, Entry.decode(payload).epoch, payload)

    @property
    def last_seq(self) -> int | None:
        return self._entries[-1].seq if self._entries else None

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def after(self, seq: int, last_seq: int) -> list[RingEntry] | None:
        """Entries seq+1..last_seq, or None if the ring no longer holds all of them."""
        if seq >= last_seq:
            return []
        if not self._entries or self._entries[0].seq > seq + 1 or self._entries[-1].seq < last_seq:
            return None
        first = self._entries[0].seq
        return [self._entries[i - first] for i in range(seq + 1, last_seq + 1)]
