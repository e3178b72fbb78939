"""Issue 18: a shard's store keeps its most recent entries, so a restarted primary's ring is not empty.

Real LMDB stores (no mocks): the `entries` table is written in the same transaction as the
data, bounded by count and bytes, survives a reopen, ends at the replica's seq without a
gap or is not used at all, and is emptied when the replica is emptied for a copy. The last
test plays the case of the issue on real stores: a primary applied an entry its backup never
got, restarts, and its ring (loaded from the store) still holds what the backup needs.
"""
from __future__ import annotations

import pathlib

from shoal.node.replication import backup
from shoal.node.replication.ring import EntryRing
from shoal.node.storage import Entry, Put, ShardStore, fill

MiB = 1 << 20


def _store(path: pathlib.Path, retain: int = 8, retain_bytes: int = MiB) -> ShardStore:
    return ShardStore(path, map_size_bytes=16 * MiB, sync=False, entries_retain=retain, entries_retain_bytes=retain_bytes)


def _put(n: int, size: int = 10) -> Put:
    return Put(f"k{n}".encode(), b"v" * size, b"w" * 16 + n.to_bytes(8, "big"))


def _ring_of(store: ShardStore) -> EntryRing:
    ring = EntryRing(4096, 64 * MiB)
    ring.load(store.recent_entries())
    return ring


def test_the_newest_entries_are_kept_within_the_count_bound_and_survive_a_reopen(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path / "s") as store:
        written = [store.execute([_put(n)], epoch=2)[0] for n in range(1, 21)]
        kept = store.recent_entries()
    assert [seq for seq, _ in kept] == list(range(13, 21))
    assert [Entry.decode(payload) for _, payload in kept] == written[12:]
    with _store(tmp_path / "s") as reopened:
        assert reopened.recent_entries() == kept
        ring = _ring_of(reopened)
    assert ring.last_seq == 20 and [e.seq for e in ring.after(12, 20) or []] == list(range(13, 21))
    assert ring.after(11, 20) is None                                # older ones are gone: a copy


def test_the_byte_bound_trims_and_an_entry_over_it_is_not_kept(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path / "s", retain=100, retain_bytes=10_000) as store:
        for n in range(1, 11):
            store.execute([_put(n, size=3_000)], epoch=1)
        kept = store.recent_entries()
        assert 2 <= len(kept) <= 3 and sum(len(p) for _, p in kept) <= 10_000 and kept[-1][0] == 10
        store.execute([_put(11, size=50_000)], epoch=1)              # a bulk batch: larger than the bound
        assert store.recent_entries() == []                           # the run no longer ends at seq
        store.execute([_put(12, size=3_000)], epoch=1)
        assert [seq for seq, _ in store.recent_entries()] == [12]


def test_backups_keep_what_they_apply_and_a_lone_primary_keeps_nothing(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path / "p") as primary, _store(tmp_path / "b") as replica:
        for n in range(1, 4):
            entry, _ = primary.execute([_put(n)], epoch=1)
            replica.apply(entry)
        assert replica.recent_entries() == primary.recent_entries() and len(primary.recent_entries()) == 3
        primary.execute([_put(4)], epoch=1, keep_entry=False)          # a lone replica's write
        assert primary.recent_entries() == []                           # a gap at the end: none usable
        primary.execute([_put(5)], epoch=1)
        assert [seq for seq, _ in primary.recent_entries()] == [5]      # the run after the gap only


def test_emptying_the_replica_for_a_copy_empties_its_entries(tmp_path: pathlib.Path) -> None:
    with _store(tmp_path / "s") as store:
        for n in range(1, 4):
            store.execute([_put(n)], epoch=1)
        fill.begin(store, "n1")
        assert store.recent_entries() == [] and store.state.seq == 0
        store.execute([_put(9)], epoch=1)
        assert [seq for seq, _ in store.recent_entries()] == [1]


def test_stores_without_bounds_keep_nothing(tmp_path: pathlib.Path) -> None:
    with ShardStore(tmp_path / "s", map_size_bytes=16 * MiB, sync=False) as store:
        store.execute([_put(1)], epoch=1)
        assert store.recent_entries() == []


def test_a_restarted_primary_still_holds_the_entries_its_backup_missed(tmp_path: pathlib.Path) -> None:
    """The issue's case: the primary applied entries 4-5 and was killed before its backup got
    them. Restarted, its ring is loaded from its store: FetchEntries after the backup's seq
    answers both entries (it answered None, 'gone', with the in-memory ring, and the backup
    was fenced out for a full copy); the backup applies them and the two replicas agree."""
    with _store(tmp_path / "p") as primary, _store(tmp_path / "b") as replica:
        for n in range(1, 6):
            entry, _ = primary.execute([_put(n)], epoch=3)
            if n <= 3:
                replica.apply(entry)
    with _store(tmp_path / "p") as restarted, _store(tmp_path / "b") as replica:
        primary_view = _Replica(restarted, _ring_of(restarted))
        missed = backup.recent_entries(primary_view, replica.state.seq)  # type: ignore[arg-type]
        assert missed is not None and [e.seq for e in missed] == [4, 5]
        for ring_entry in missed:
            replica.apply(Entry.decode(ring_entry.payload))
        assert replica.state == restarted.state


class _Replica:
    """The two attributes of replication.Replica that `backup.recent_entries` reads."""

    def __init__(self, store: ShardStore, ring: EntryRing) -> None:
        self.store, self.ring = store, ring
