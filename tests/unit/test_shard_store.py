"""Unit tests for node/storage/shard_store.py, on real LMDB environments under tmp_path."""
from __future__ import annotations

import pathlib
import random
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings

from shoal.node.errors import InvalidRequestError, StaleEpochError, StorageFullError
from shoal.node.storage import (
    CompareAndSet, Delete, Entry, Op, Put, PutBatch, SequenceGapError, ShardState, ShardStore,
)

MiB = 1 << 20


def _wid(n: int) -> bytes:
    return b"c" * 16 + n.to_bytes(8, "big")


def _pack(document: object) -> bytes:
    packed: bytes = msgpack.packb(document)
    return packed


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Iterator[ShardStore]:
    with ShardStore(tmp_path / "primary", map_size_bytes=64 * MiB) as opened:
        yield opened


@pytest.fixture
def backup(tmp_path: pathlib.Path) -> Iterator[ShardStore]:
    with ShardStore(tmp_path / "backup", map_size_bytes=64 * MiB) as opened:
        yield opened


def _contents(shard: ShardStore) -> list[tuple[bytes, bytes]]:
    return [record for chunk in shard.scan() for record in chunk]


def _assert_consistent(shard: ShardStore) -> None:
    assert shard.verify() == (shard.state.records, shard.state.checksum)


def test_shard_store_execute_apply_round_trip(store: ShardStore, backup: ShardStore) -> None:
    """A backup applying the primary's encoded entries ends with the same records and state.

    Method: groups mixing every op type (overwrites, deletes, a swapped and a failed CAS);
    each entry is sent through encode/decode as on the wire.
    """
    groups: list[list[Op]] = [
        [PutBatch([b"a", b"b", b"c"], [_pack(1), _pack(2), _pack(3)], _wid(1)), Put(b"d", _pack(4))],
        [Delete(b"b", _wid(2)), Put(b"a", _pack(10), _wid(3)), Delete(b"missing")],
        [CompareAndSet(b"c", False, _pack(3), False, _pack(30), _wid(4)),
         CompareAndSet(b"d", False, _pack(99), False, _pack(40), _wid(5)),
         CompareAndSet(b"e", True, b"", False, _pack(50), _wid(6)),
         CompareAndSet(b"a", False, _pack(10), True, b"", _wid(7))],
    ]
    for epoch, ops in enumerate(groups, start=1):
        entry, _ = store.execute(ops, epoch)
        assert backup.apply(Entry.decode(entry.encode())) == store.state
    assert store.state == ShardState(seq=3, epoch=3, checksum=store.state.checksum, records=3, entry_epoch=3)
    assert _contents(store) == _contents(backup) == [
        (b"c", _pack(30)), (b"d", _pack(4)), (b"e", _pack(50))]
    _assert_consistent(store)
    _assert_consistent(backup)
    for n in range(1, 8):
        assert backup.lookup_write(_wid(n)) == store.lookup_write(_wid(n))


def test_shard_store_execute_results_per_op(store: ShardStore) -> None:
    """Results: Put None, Delete existed, PutBatch count, CAS (swapped, found, current)."""
    entry, results = store.execute([
        Put(b"k", _pack("v")), Delete(b"k"), Delete(b"k"),
        PutBatch([b"x", b"y"], [_pack(1), _pack(2)]),
        CompareAndSet(b"x", False, _pack(1), False, _pack(11)),
    ], epoch=0)
    assert results == [None, True, False, 2, (True, True, _pack(1))]
    assert entry.keys == [b"k", b"k", b"x", b"y", b"x"]
    assert entry.values == [_pack("v"), None, _pack(1), _pack(2), _pack(11)]
    assert entry.write_ids == [] and entry.results == []


def test_shard_store_idempotent_replay_across_groups(store: ShardStore) -> None:
    """A write_id seen before returns the recorded result and changes nothing.

    Method: execute one op of each kind with a write_id, change the records, then send
    the same write_ids again: the results equal the first ones (tuples stay tuples),
    the returned entry has no effects, and the records are untouched.
    """
    store.execute([Put(b"k", _pack(1)), Put(b"gone", _pack(0))], epoch=0)
    first_ops: list[Op] = [
        Put(b"p", _pack("p"), _wid(1)), Delete(b"gone", _wid(2)),
        CompareAndSet(b"k", False, _pack(1), False, _pack(2), _wid(3)),
        PutBatch([b"b1", b"b2"], [_pack(1), _pack(2)], _wid(4)),
    ]
    _, first_results = store.execute(first_ops, epoch=0)
    assert first_results == [None, True, (True, True, _pack(1)), 2]
    store.execute([Delete(b"p"), Put(b"k", _pack(3))], epoch=0)
    before = _contents(store)
    retry_ops: list[Op] = [
        Put(b"p", _pack("other"), _wid(1)), Delete(b"gone", _wid(2)),
        CompareAndSet(b"k", False, _pack(3), False, _pack(4), _wid(3)),
        PutBatch([b"b3"], [_pack(3)], _wid(4)),
    ]
    entry, retry_results = store.execute(retry_ops, epoch=0)
    assert retry_results == first_results
    assert [type(result) for result in retry_results] == [type(r) for r in first_results]
    assert entry.keys == [] and entry.write_ids == []
    assert _contents(store) == before
    assert store.statistics().ops_replayed == 4


def test_shard_store_idempotent_replay_within_group(store: ShardStore, backup: ShardStore) -> None:
    """The same write_id twice in one group is applied once; the backup agrees."""
    entry, results = store.execute([
        Delete(b"absent", _wid(9)),
        PutBatch([b"a"], [_pack(1)], _wid(1)),
        PutBatch([b"a", b"b"], [_pack(2), _pack(2)], _wid(1)),
        Delete(b"a", _wid(9)),
    ], epoch=0)
    assert results == [False, 1, 1, False]
    assert _contents(store) == [(b"a", _pack(1))]
    assert entry.write_ids == [_wid(9), _wid(1)]
    backup.apply(entry)
    assert backup.state == store.state
    assert backup.lookup_write(_wid(1)) == (True, 1)


def test_shard_store_lookup_write_distinguishes_none_result(store: ShardStore) -> None:
    """lookup_write returns (found, result): a recorded None differs from no record."""
    store.execute([Put(b"k", _pack(1), _wid(1))], epoch=0)
    assert store.lookup_write(_wid(1)) == (True, None)
    assert store.lookup_write(_wid(2)) == (False, None)
    assert store.lookup_write(b"") == (False, None)


def test_shard_store_cas_expect_absent(store: ShardStore) -> None:
    """expect_absent swaps only when the key is missing, and reports the current value."""
    _, results = store.execute([
        CompareAndSet(b"k", True, b"", False, _pack(1)),
        CompareAndSet(b"k", True, b"", False, _pack(2)),
    ], epoch=0)
    assert results == [(True, False, None), (False, True, _pack(1))]
    assert store.get(b"k") == _pack(1)


def test_shard_store_cas_compares_decoded_documents(store: ShardStore) -> None:
    """CAS compares decoded msgpack: map order and int width do not matter, types do.

    Method: store {"a": 1, "b": 2}; expect the same map packed in the other key order
    (different bytes) -> swap; mismatches on 1 vs 1.0 and 1 vs True, a missing key and
    an undecodable expected value -> no swap; 7 packed as uint16 vs fixint -> swap.
    """
    stored = _pack({"a": 1, "b": 2})
    reordered = _pack({"b": 2, "a": 1})
    assert stored != reordered
    store.execute([Put(b"k", stored), Put(b"n", _pack([1, 2]))], epoch=0)
    _, results = store.execute([
        CompareAndSet(b"k", False, reordered, False, _pack("new")),
        CompareAndSet(b"n", False, _pack([1.0, 2]), False, _pack("x")),
        CompareAndSet(b"n", False, _pack([True, 2]), False, _pack("x")),
        CompareAndSet(b"n", False, b"\xc1", False, _pack("x")),
        CompareAndSet(b"missing", False, _pack(None), False, _pack("x")),
    ], epoch=0)
    assert results[0] == (True, True, stored)
    assert results[1:5] == [(False, True, _pack([1, 2]))] * 3 + [(False, False, None)]
    wide_int = b"\x91\xcd\x00\x07"        # [7] with 7 as uint16
    store.execute([Put(b"w", _pack([7]))], epoch=0)
    _, wide_results = store.execute(
        [CompareAndSet(b"w", False, wide_int, False, _pack("ok"))], epoch=0)
    assert wide_results == [(True, True, _pack([7]))]
    assert store.get(b"k") == _pack("new") and store.get(b"w") == _pack("ok")


def test_shard_store_cas_delete_on_match(store: ShardStore) -> None:
    """delete=True removes the key on a match and leaves it on a mismatch."""
    store.execute([Put(b"a", _pack(1)), Put(b"b", _pack(1))], epoch=0)
    entry, results = store.execute([
        CompareAndSet(b"a", False, _pack(1), True, b""),
        CompareAndSet(b"b", False, _pack(2), True, b""),
    ], epoch=0)
    assert results == [(True, True, _pack(1)), (False, True, _pack(1))]
    assert entry.keys == [b"a"] and entry.values == [None]
    assert store.get(b"a") is None and store.state.records == 1
    _assert_consistent(store)


def test_shard_store_delete_updates_count_and_checksum(store: ShardStore) -> None:
    """Deleting every record brings records and checksum back to 0."""
    store.execute([PutBatch([b"a", b"b"], [_pack(1), _pack(2)])], epoch=0)
    _, results = store.execute([Delete(b"a"), Delete(b"b"), Delete(b"a")], epoch=0)
    assert results == [True, True, False]
    assert (store.state.records, store.state.checksum) == (0, 0)
    _assert_consistent(store)


_KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e"])
_VALUES = st.sampled_from([_pack(v) for v in (0, 1, "x", [1, 2], {"a": 1})])
_OPS = st.one_of(
    st.builds(Put, _KEYS, _VALUES),
    st.builds(Delete, _KEYS),
    st.builds(CompareAndSet, _KEYS, st.booleans(), _VALUES, st.booleans(), _VALUES),
    st.builds(lambda items: PutBatch([k for k, _ in items], [v for _, v in items]),
              st.lists(st.tuples(_KEYS, _VALUES), max_size=6)),
)


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_OPS, min_size=1, max_size=5), min_size=1, max_size=6))
def test_shard_store_checksum_matches_verify_after_random_ops(
        tmp_path: pathlib.Path, groups: list[list[Op]]) -> None:
    """After any sequence of op groups, state equals a full recompute and a dict model,
    and a backup replaying the entries ends identical."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        with ShardStore(pathlib.Path(root) / "p", map_size_bytes=8 * MiB, sync=False) as primary, \
             ShardStore(pathlib.Path(root) / "b", map_size_bytes=8 * MiB, sync=False) as copy:
            model: dict[bytes, bytes] = {}
            for ops in groups:
                entry, _ = primary.execute(ops, epoch=1)
                for key, value in zip(entry.keys, entry.values):
                    if value is None:
                        del model[key]
                    else:
                        model[key] = value
                copy.apply(entry)
                _assert_consistent(primary)
            assert _contents(primary) == sorted(model.items()) == _contents(copy)
            assert copy.state == primary.state


def test_shard_store_reopen_keeps_everything(tmp_path: pathlib.Path) -> None:
    """Closing and reopening keeps records, seq, epoch, checksum, count and idempotency rows."""
    path = tmp_path / "shard"
    with ShardStore(path, map_size_bytes=64 * MiB) as first:
        first.execute([PutBatch([b"a", b"b"], [_pack(1), _pack(2)], _wid(1))], epoch=4)
        first.execute([CompareAndSet(b"a", False, _pack(1), False, _pack(3), _wid(2))], epoch=5)
        first.set_epoch(7)
        state = first.state
    with ShardStore(path, map_size_bytes=64 * MiB) as second:
        assert second.state == state == ShardState(2, 7, state.checksum, 2, entry_epoch=5)
        assert _contents(second) == [(b"a", _pack(3)), (b"b", _pack(2))]
        assert second.lookup_write(_wid(2)) == (True, (True, True, _pack(1)))
        _, results = second.execute(
            [CompareAndSet(b"a", False, _pack(1), False, _pack(3), _wid(2))], epoch=7)
        assert results == [(True, True, _pack(1))]
        assert second.state.seq == 3
        _assert_consistent(second)


def test_shard_store_apply_sequence_gap_raises(store: ShardStore, backup: ShardStore) -> None:
    """apply() accepts only state.seq + 1; a gap or a duplicate raises SequenceGapError."""
    entries = [store.execute([Put(bytes([n]), _pack(n))], epoch=1)[0] for n in range(1, 4)]
    with pytest.raises(SequenceGapError) as gap:
        backup.apply(entries[1])
    assert (gap.value.expected, gap.value.got) == (1, 2)
    backup.apply(entries[0])
    with pytest.raises(SequenceGapError) as duplicate:
        backup.apply(entries[0])
    assert (duplicate.value.expected, duplicate.value.got) == (2, 1)
    assert backup.state.seq == 1 and _contents(backup) == [(b"\x01", _pack(1))]


def test_shard_store_epoch_fencing(store: ShardStore, backup: ShardStore) -> None:
    """Older epochs are rejected by execute; apply replays older entries keeping the adopted epoch
    (a new primary reconciling its predecessor's entries); set_epoch only moves forward."""
    store.set_epoch(5)
    store.set_epoch(3)
    assert store.state.epoch == 5
    with pytest.raises(StaleEpochError):
        store.execute([Put(b"k", _pack(1))], epoch=4)
    entry, _ = store.execute([Put(b"k", _pack(1))], epoch=5)
    backup.set_epoch(6)
    state = backup.apply(entry)
    assert (state.seq, state.epoch, state.records) == (1, 6, 1)
    assert backup.state == state and backup.get(b"k") == _pack(1)


def test_shard_store_invalid_keys_rejected_before_write(store: ShardStore) -> None:
    """Empty or over-long keys and ragged batches raise InvalidRequestError; nothing is written."""
    store.execute([Put(b"k", _pack(1))], epoch=0)
    state = store.state
    too_long = b"x" * 512
    bad_groups: list[list[Op]] = [
        [Put(b"ok", _pack(1)), Put(b"", _pack(1))],
        [Put(b"ok", _pack(1)), PutBatch([b"a", too_long], [_pack(1), _pack(2)])],
        [Put(b"ok", _pack(1)), Delete(too_long)],
        [PutBatch([b"a", b"b"], [_pack(1)])],
    ]
    for ops in bad_groups:
        with pytest.raises(InvalidRequestError):
            store.execute(ops, epoch=0)
    with pytest.raises(InvalidRequestError):
        store.apply(Entry(state.seq + 1, 0, [b""], [_pack(1)], [], []))
    with pytest.raises(InvalidRequestError):
        store.get(b"")
    assert store.state == state and store.get(b"ok") is None


def test_shard_store_failed_group_is_atomic(store: ShardStore) -> None:
    """An error in the middle of a group (a non-bytes value) leaves nothing of the group."""
    store.execute([Put(b"k", _pack(1))], epoch=0)
    state = store.state
    with pytest.raises(TypeError):
        store.execute([PutBatch([b"a", b"b"], [_pack(1), _pack(2)], _wid(1)),
                       Put(b"c", None, _wid(2))], epoch=0)  # type: ignore
    assert store.state == state
    assert _contents(store) == [(b"k", _pack(1))]
    assert store.lookup_write(_wid(1)) == (False, None)
    _assert_consistent(store)


def test_shard_store_map_full_raises_and_stays_readable(tmp_path: pathlib.Path) -> None:
    """A 1 MiB map fills up: StorageFullError names path and map size, nothing of the
    failed group is applied, every committed record is still readable, state unchanged."""
    path = tmp_path / "tiny"
    with ShardStore(path, map_size_bytes=1 * MiB) as tiny:
        committed: dict[bytes, bytes] = {}
        value = _pack("v" * 1000)
        with pytest.raises(StorageFullError) as full:
            for batch in range(1000):
                keys = [batch.to_bytes(4, "big") + i.to_bytes(4, "big") for i in range(50)]
                tiny.execute([PutBatch(keys, [value] * len(keys), _wid(batch))], epoch=1)
                committed.update(dict.fromkeys(keys, value))
        assert str(path) in str(full.value) and str(MiB) in str(full.value)
        assert committed, "the map must hold at least one batch before filling up"
        state = tiny.state
        assert state.records == len(committed) and state.seq == len(committed) // 50
        assert all(tiny.get(key) == stored for key, stored in committed.items())
        assert tiny.verify() == (state.records, state.checksum)
        assert tiny.lookup_write(_wid(state.seq)) == (False, None)
        assert tiny.statistics().storage_full_errors == 1
    with ShardStore(path, map_size_bytes=1 * MiB) as reopened:
        assert reopened.state == state


def test_shard_store_scan_bounds_and_limit(store: ShardStore) -> None:
    """scan honours start (inclusive), end (exclusive), prefix and limit, in key order."""
    keys = [b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\xff", b"\xff\x01"]
    store.execute([PutBatch(keys, [_pack(k.hex()) for k in keys])], epoch=0)

    def scanned(**kwargs: Any) -> list[bytes]:
        return [key for chunk in store.scan(**kwargs) for key, _ in chunk]

    assert scanned() == keys
    assert scanned(start=b"ab", end=b"ba") == [b"ab", b"abc", b"b"]
    assert scanned(prefix=b"a") == [b"a", b"ab", b"abc"]
    assert scanned(prefix=b"a", start=b"ab", end=b"abc") == [b"ab"]
    assert scanned(prefix=b"\xff") == [b"\xff", b"\xff\x01"]
    assert scanned(prefix=b"z") == []
    assert scanned(start=b"c", end=b"b") == []
    assert scanned(limit=3) == keys[:3]
    assert scanned(prefix=b"b", limit=1) == [b"b"]
    assert scanned(start=b"b", chunk_records=2, limit=3) == [b"b", b"ba", b"c"]


def test_shard_store_scan_chunks_use_fresh_transactions(store: ShardStore) -> None:
    """Chunks have at most chunk_records records and each is read in a new transaction.

    Method: consume the first chunk, then write records both behind and ahead of the
    scan position; the later chunks see the new ones ahead (a new read txn), resume
    strictly after the last key returned, and never repeat a key.
    """
    keys = [n.to_bytes(2, "big") for n in range(0, 20, 2)]
    store.execute([PutBatch(keys, [_pack(1)] * len(keys))], epoch=0)
    chunks = store.scan(chunk_records=3)
    first = next(chunks)
    assert [key for key, _ in first] == keys[:3]
    store.execute([PutBatch([b"\x00\x01", b"\x00\x0b"], [_pack(2)] * 2)], epoch=0)
    rest = list(chunks)
    assert all(1 <= len(chunk) <= 3 for chunk in rest)
    seen = [key for chunk in [first, *rest] for key, _ in chunk]
    assert seen == keys[:6] + [b"\x00\x0b"] + keys[6:]


def test_shard_store_idempotency_retention_bound(tmp_path: pathlib.Path) -> None:
    """Beyond idempotency_retain the oldest rows go first, with bounded work per txn.

    Method: retain 10 and write 30 ids one per txn: 10 rows stay, the newest ones.
    Reopen with retain 4: each later txn adding one row trims at most two, so the
    table shrinks by one per txn until it holds 4.
    """
    path = tmp_path / "shard"
    with ShardStore(path, map_size_bytes=64 * MiB, idempotency_retain=10) as shard:
        for n in range(30):
            shard.execute([Put(b"k", _pack(n), _wid(n))], epoch=0)
            assert shard.statistics().idempotency_rows == min(n + 1, 10)
        assert [shard.lookup_write(_wid(n))[0] for n in range(30)] == [False] * 20 + [True] * 10
    with ShardStore(path, map_size_bytes=64 * MiB, idempotency_retain=4) as shard:
        rows = []
        for n in range(30, 38):
            shard.execute([Put(b"k", _pack(n), _wid(n))], epoch=0)
            rows.append(shard.statistics().idempotency_rows)
        assert rows == [9, 8, 7, 6, 5, 4, 4, 4]
        assert [shard.lookup_write(_wid(n))[0] for n in range(34, 38)] == [True] * 4


def test_shard_store_statistics_and_size(store: ShardStore) -> None:
    """statistics() reports the state, counters, idempotency rows and a growing size."""
    size_before = store.size_bytes()
    store.execute([PutBatch([n.to_bytes(4, "big") for n in range(2000)],
                            [_pack("x" * 100)] * 2000, _wid(1))], epoch=2)
    stats = store.statistics()
    assert (stats.seq, stats.epoch, stats.records) == (1, 2, 2000)
    assert stats.checksum == store.state.checksum
    assert (stats.entries_executed, stats.entries_applied, stats.ops_replayed) == (1, 0, 0)
    assert stats.idempotency_rows == 1 and stats.map_size_bytes == 64 * MiB
    assert stats.size_bytes == store.size_bytes() > size_before + 200_000


def test_shard_store_reads_concurrent_with_writes(store: ShardStore) -> None:
    """Reads from another thread during writes see whole groups only (never half a batch)."""
    store.execute([PutBatch([b"a", b"b"], [_pack(0), _pack(0)])], epoch=0)
    stop = threading.Event()
    torn: list[tuple[bytes, bytes]] = []

    def reader() -> None:
        while not stop.is_set():
            records = _contents(store)
            if records[0][1] != records[1][1]:
                torn.extend(records)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 200):
            store.execute([PutBatch([b"a", b"b"], [_pack(n), _pack(n)])], epoch=0)
    finally:
        stop.set()
        thread.join()
    assert torn == []
    assert store.get(b"a") == _pack(199)


def test_shard_store_concurrent_writers_never_reuse_a_seq(store: ShardStore) -> None:
    """Two threads calling execute at once (a caller bug) still get distinct, gapless seqs."""
    seqs: list[int] = []

    def writer(tag: bytes) -> None:
        for n in range(50):
            entry, _ = store.execute([Put(tag + bytes([n]), _pack(n))], epoch=0)
            seqs.append(entry.seq)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(1, 101))
    assert store.state.seq == 100 and store.state.records == 100
    _assert_consistent(store)


def test_shard_store_scan_chunks_are_bounded_by_bytes_issue_16(store: ShardStore) -> None:
    """Issue 16: a chunk stays within chunk_bytes, whatever the values' sizes; one record always fits.

    Method: 17 values of 1,000,000 bytes in a real LMDB file; scan with a 4 MiB byte bound
    (and a generous record bound): every chunk is within the bound, the chunks together
    hold all 17 records intact in key order. A bound below one record still yields every
    record, one per chunk; a prefix scan over the large values is bounded the same way.
    """
    keys = [b"big-%02d" % n for n in range(17)]
    values = [_pack(bytes([n]) * 1_000_000) for n in range(17)]
    store.execute([PutBatch(keys, values)], epoch=0)
    store.execute([PutBatch([b"small-%d" % n for n in range(5)], [_pack(n) for n in range(5)])], epoch=0)

    def chunk_bytes(chunk: list[tuple[bytes, bytes]]) -> int:
        return sum(len(k) + len(v) for k, v in chunk)

    chunks = list(store.scan(prefix=b"big-", chunk_records=1000, chunk_bytes=4 * MiB))
    assert [len(chunk) for chunk in chunks] == [4, 4, 4, 4, 1]
    assert all(chunk_bytes(chunk) <= 4 * MiB for chunk in chunks)
    assert [record for chunk in chunks for record in chunk] == list(zip(keys, values))
    tiny = list(store.scan(chunk_records=1000, chunk_bytes=10))
    assert [len(chunk) for chunk in tiny] == [1] * 22
    assert [key for chunk in tiny for key, _ in chunk] == keys + [b"small-%d" % n for n in range(5)]
    mixed = list(store.scan(start=b"big-15", limit=4, chunk_records=1000, chunk_bytes=1_500_000))
    assert [[key for key, _ in chunk] for chunk in mixed] == [[b"big-15"], [b"big-16", b"small-0", b"small-1"]]


_VALUE_200 = _pack("v" * 197)   # 200 bytes of msgpack


def _fill(shard: ShardStore, keys: list[bytes], make: Any) -> list[bytes]:
    """Execute groups from `make(i)` until the headroom refuses one; returns the keys stored."""
    for i in range(100_000):
        batch = make(i)
        try:
            shard.execute([PutBatch(batch, [_VALUE_200] * len(batch), _wid(10_000_000 + len(keys) + i))], 1)
        except StorageFullError as full:
            message = str(full)
            assert "SHOAL_MAP_SIZE_BYTES" in message and str(MiB) in message and "deletes still work" in message
            return keys
        keys.extend(batch)
    raise AssertionError("the map never filled")


def test_shard_store_issue16_full_shard_still_deletes(tmp_path: pathlib.Path) -> None:
    """Issue 16.1a: a 1 MiB map filled with 200-byte values by single puts refuses the next put
    with a message naming SHOAL_MAP_SIZE_BYTES and its value; then every delete of an existing key
    succeeds (before the fix most failed with STORAGE_FULL), and puts work again afterwards.

    Method: a real LMDB env (sync off for speed), one put per txn until refused, then one delete
    per txn with a write id each (so deletes also add idempotency rows)."""
    with ShardStore(tmp_path / "tiny", map_size_bytes=1 * MiB, sync=False) as tiny:
        keys = _fill(tiny, [], lambda i: [b"k%06d" % i])
        assert len(keys) > 2000
        assert tiny.statistics().storage_full_errors == 1
        for n, key in enumerate(keys):
            tiny.execute([Delete(key, _wid(20_000_000 + n))], 1)
        assert tiny.state.records == 0
        _assert_consistent(tiny)
        tiny.execute([Put(b"again", _pack(1))], 1)
        assert tiny.get(b"again") == _pack(1)


def test_shard_store_issue16_full_after_batches_still_deletes(tmp_path: pathlib.Path) -> None:
    """Issue 16.1a variant: filled by batches of 50 to 400 keys (the last commit frees many pages,
    which LMDB cannot reuse at once), then single deletes and CAS-deletes in random order all
    succeed, half the keys are refilled, and the shard fills and empties a second time.

    Method: a seeded random order on a real 1 MiB LMDB env."""
    rnd = random.Random(16)
    with ShardStore(tmp_path / "tiny", map_size_bytes=1 * MiB, sync=False) as tiny:
        keys: list[bytes] = []
        for round_ in range(2):
            stored = _fill(tiny, [], lambda i: [rnd.randbytes(rnd.choice([8, 40, 200]))
                                               for _ in range(rnd.choice([1, 50, 400]))])
            keys.extend(stored)
            rnd.shuffle(keys)
            for n, key in enumerate(keys):
                op: Op = Delete(key, _wid(30_000_000 + round_ * 1_000_000 + n)) if n % 2 else \
                    CompareAndSet(key, False, _VALUE_200, True, b"", _wid(40_000_000 + round_ * 1_000_000 + n))
                tiny.execute([op], 1)
            keys.clear()
            assert tiny.state.records == 0
            _assert_consistent(tiny)


def test_shard_store_issue16_primary_splits_a_delete_group_too_big_for_the_headroom(tmp_path: pathlib.Path) -> None:
    """Variant of 16.1a at the primary: on a full 1 MiB shard one group of 300 scattered deletes
    does not fit (checked first, on the store), so ShardPrimary commits it in halves: every
    delete succeeds, in order, each half its own entry.

    Method: a real ShardStore; the primary gets a stand-in context (only run_blocking is used
    with no backups)."""
    import asyncio
    import types

    from shoal.node.replication.primary import ShardPrimary
    from shoal.node.replication.replica import Replica
    from shoal.node.replication.ring import EntryRing

    async def run_blocking(fn: Any, *args: Any) -> Any:
        return fn(*args)

    with ShardStore(tmp_path / "s", map_size_bytes=MiB, sync=False) as store:
        stored = 0
        with pytest.raises(StorageFullError):
            while True:
                store.execute([Put(f"k{stored:06d}".encode(), msgpack.packb("v" * 200))], 1)
                stored += 1
        deletes = [Delete(f"k{j * 3:06d}".encode()) for j in range(300)]
        with pytest.raises(StorageFullError):
            store.execute(deletes, 1)   # the case: too big as one group
        no_learners = types.SimpleNamespace(view=types.SimpleNamespace(shard=lambda dataset, index: None))
        context = types.SimpleNamespace(run_blocking=run_blocking, metadata=no_learners)
        primary = ShardPrimary(Replica("ds@1", 0, store, EntryRing(8, 1 << 20)), context,  # type: ignore[arg-type]
                               epoch=1, backups=[])
        seq_before = store.state.seq
        assert asyncio.run(primary._apply_and_replicate(deletes)) == [True] * 300
        assert store.state.seq > seq_before + 1 and store.state.records == stored - 300


def test_open_files_check_counts_the_default_replication_not_one() -> None:
    """A create with replication 0 (the default, min(3, alive)) needs room for all its copies.

    Found by hand: under `ulimit -n 400` on 3 nodes, `--shards 200 --replication 3` was refused
    but `--shards 200` (default replication, 3) passed the check as if each node opened 67
    replicas, then every node ran out of files opening 200.
    """
    from shoal.node.shards import replicas_per_node
    assert replicas_per_node(200, 0, 3) == replicas_per_node(200, 3, 3) == 200
    assert replicas_per_node(200, 1, 3) == 67          # spread evenly, rounded up
    assert replicas_per_node(8, 0, 1) == 8              # one node: the default is 1
    assert replicas_per_node(10, 0, 5) == 6             # default 3 of 5 nodes: 30 copies over 5
    assert replicas_per_node(4, 5, 2) == 4              # more copies than nodes: one per node at most
