"""storage/fill.py on real LMDB environments: a learner copies a primary that keeps writing,
is interrupted (closed and reopened) mid-copy, resumes, replays the entries after its base
seq, and ends equal to the primary: same records, checksum, count and idempotency rows."""
from __future__ import annotations

import pathlib
import random

import msgpack

from shoal.node.storage import CompareAndSet, Delete, Entry, Put, ShardStore
from shoal.node.storage import fill

MiB = 1 << 20


def _wid(n: int) -> bytes:
    return b"w" * 16 + n.to_bytes(8, "big")


def _write(primary: ShardStore, entries: list[Entry], rng: random.Random, count: int, start: int) -> None:
    """`count` groups of random puts, deletes and compare-and-sets on 300 keys."""
    for n in range(start, start + count):
        key = f"k{rng.randrange(300):04d}".encode()
        choice = rng.random()
        if choice < 0.7:
            op: object = Put(key, msgpack.packb({"n": n, "pad": "x" * rng.randrange(200)}), _wid(n))
        elif choice < 0.85:
            op = Delete(key, _wid(n))
        else:
            current = primary.get(key)
            op = CompareAndSet(key, current is None, current or b"", False, msgpack.packb(n), _wid(n))
        entry, _ = primary.execute([op], epoch=1)   # type: ignore[list-item]
        entries.append(entry)


def _contents(store: ShardStore) -> list[tuple[bytes, bytes]]:
    return [pair for chunk in store.scan() for pair in chunk]


def test_copy_resumes_after_an_interruption_and_converges_with_writes_during_it(tmp_path: pathlib.Path) -> None:
    rng = random.Random(18)
    entries: list[Entry] = []
    learner_path = tmp_path / "learner"
    with ShardStore(tmp_path / "primary", map_size_bytes=64 * MiB) as primary:
        _write(primary, entries, rng, 600, 0)
        learner = ShardStore(learner_path, map_size_bytes=64 * MiB)
        learner.execute([Put(b"stale", b"\x01", _wid(10**6))], epoch=1)   # an old copy: wiped by begin
        old_incarnation = learner.incarnation
        state = fill.begin(learner, "n1")
        assert learner.incarnation != old_incarnation and learner.get(b"stale") is None
        installed = 0
        while state.table != fill.COPIED:
            chunk = fill.read_chunk(primary, state.table, state.cursor, 2048)
            state = fill.install(learner, state, chunk)
            installed += 1
            _write(primary, entries, rng, 5, 10_000 + installed * 5)    # writes between the chunks
            if installed == 3:                                            # the learner crashes here
                learner.close()
                learner = ShardStore(learner_path, map_size_bytes=64 * MiB)
                resumed = fill.fill_state(learner)
                assert resumed == state and resumed.cursor != b""
        assert installed > 10, "chunks of 2 KiB: many of them"
        state = fill.finish(learner, state)
        assert state.table == fill.REPLAYING and learner.state.seq == state.base > 0
        for entry in entries[state.base:]:                                # seqs start at 1
            learner.apply(entry)
        assert _contents(learner) == _contents(primary)
        assert (learner.state.seq, learner.state.checksum, learner.state.records) == \
            (primary.state.seq, primary.state.checksum, primary.state.records)
        assert learner.verify() == primary.verify()
        assert learner.statistics().idempotency_rows == primary.statistics().idempotency_rows
        assert learner.lookup_write(_wid(5)) == primary.lookup_write(_wid(5))
        fill.forget(learner)
        assert fill.fill_state(learner) is None
        learner.close()


def test_empty_shard_copies_in_one_chunk_per_table(tmp_path: pathlib.Path) -> None:
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as primary, \
            ShardStore(tmp_path / "l", map_size_bytes=8 * MiB) as learner:
        state = fill.begin(learner, "n2")
        tables = []
        while state.table != fill.COPIED:
            chunk = fill.read_chunk(primary, state.table, state.cursor, 4096)
            tables.append((chunk.table, len(chunk.pairs), chunk.done))
            state = fill.install(learner, state, chunk)
        assert tables == [("records", 0, True), ("idem", 0, True), ("idem_log", 0, True)]
        assert fill.finish(learner, state).base == 0 and learner.state.records == 0
