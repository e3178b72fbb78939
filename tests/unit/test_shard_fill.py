"""storage/fill.py on real LMDB environments: a learner receives a primary's snapshot (the state at
one seq) by byte offset while the primary keeps writing, is interrupted (closed and reopened)
mid-transfer, resumes at the bytes it holds, installs the snapshot in place of its environment,
replays the entries after the snapshot's seq, and ends equal to the primary: same records,
checksum, count and idempotency rows, with its own incarnation."""
from __future__ import annotations

import pathlib
import random

import msgpack
import pytest

from shoal.node.storage import CompareAndSet, Delete, Entry, Put, ShardStore
from shoal.node.storage import fill
from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN

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


def _install(store: ShardStore, source: str) -> tuple[ShardStore, fill.FillState]:
    """What the learner does under its apply lock: prepare, close, move, reopen."""
    state = fill.prepare(store, source, False, 64 * MiB)
    path = store.path
    store.close()
    fill.move_into_place(path, True)
    return ShardStore(path, map_size_bytes=64 * MiB), state


def test_snapshot_copy_resumes_after_an_interruption_and_converges_with_writes_during_it(
        tmp_path: pathlib.Path) -> None:
    """Pieces of 4 KiB; the learner is closed and reopened after 3 of them and asks from the length of
    its staging file; writes go on between the pieces (the snapshot does not change: one seq)."""
    rng = random.Random(18)
    entries: list[Entry] = []
    learner_path = tmp_path / "learner"
    with ShardStore(tmp_path / "primary", map_size_bytes=64 * MiB) as primary:
        _write(primary, entries, rng, 600, 0)
        learner = ShardStore(learner_path, map_size_bytes=64 * MiB)
        learner.execute([Put(b"stale", b"\x01", _wid(10**6))], epoch=1)   # an old copy: wiped by begin
        learner.set_epoch(7)                                              # it adopted a later epoch: kept
        old_incarnation = learner.incarnation
        state = fill.begin(learner, "n1")
        assert learner.incarnation != old_incarnation and learner.get(b"stale") is None
        assert state.table == fill.COPYING and fill.staged_bytes(learner) == 0
        snapshot = fill.write_snapshot(primary, tmp_path / "snapshot.mdb")
        assert snapshot.seq == 600 and snapshot.records == primary.state.records
        assert snapshot.digest == fill.file_digest(tmp_path / "snapshot.mdb")
        state = fill.restart_staging(learner, state, "00ab", sync=True)
        offset = pieces = 0
        while offset < snapshot.size_bytes:
            data = fill.read_piece(tmp_path / "snapshot.mdb", offset, 4096)
            offset = fill.append(learner, offset, data, sync=pieces % 2 == 0)
            pieces += 1
            _write(primary, entries, rng, 5, 10_000 + pieces * 5)       # writes between the pieces
            if pieces == 3:                                               # the learner crashes here
                learner.close()
                learner = ShardStore(learner_path, map_size_bytes=64 * MiB)
                assert fill.fill_state(learner) == state and state.cursor == b"00ab"
                assert fill.staged_bytes(learner) == offset == 3 * 4096   # where it asks from
        assert pieces > 10, "pieces of 4 KiB: many of them"
        state = fill.received(learner, state, snapshot.digest)
        assert state.table == fill.COPIED and fill.fill_state(learner) == state
        learner, state = _install(learner, "n1")
        assert state == fill.FillState("n1", 600, fill.REPLAYING, b"") == fill.fill_state(learner)
        assert learner.incarnation not in (primary.incarnation, old_incarnation)
        assert (learner.state.seq, learner.state.epoch, learner.state.entry_epoch) == (600, 7, ENTRY_EPOCH_UNKNOWN)
        assert not fill.staging_path(learner).exists()
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


def test_a_new_snapshot_discards_the_bytes_of_the_one_before(tmp_path: pathlib.Path) -> None:
    """The source restarted (its snapshot is gone): the staging file is emptied before the new id is
    recorded, so a resume never mixes two snapshots."""
    with ShardStore(tmp_path / "l", map_size_bytes=8 * MiB) as learner:
        state = fill.restart_staging(learner, fill.begin(learner, "n2"), "01", sync=False)
        fill.append(learner, 0, b"x" * 5000, sync=False)
        state = fill.restart_staging(learner, state, "02", sync=False)
        assert fill.staged_bytes(learner) == 0 and fill.fill_state(learner) == state and state.cursor == b"02"


def test_damaged_or_foreign_snapshots_are_refused_and_never_installed(tmp_path: pathlib.Path) -> None:
    """A flipped byte fails the whole-file digest (the staging file goes: the copy asks again from 0);
    a file with the right digest that is no shard environment fails `prepare`; the learner's own
    environment is untouched by both."""
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as primary, \
            ShardStore(tmp_path / "l", map_size_bytes=8 * MiB) as learner:
        primary.execute([Put(b"a", msgpack.packb(1), _wid(1))], epoch=1)
        snapshot = fill.write_snapshot(primary, tmp_path / "s.mdb")
        data = bytearray((tmp_path / "s.mdb").read_bytes())
        data[len(data) // 2] ^= 1
        state = fill.restart_staging(learner, fill.begin(learner, "n1"), "0a", sync=False)
        fill.append(learner, 0, bytes(data), sync=False)
        with pytest.raises(fill.BadSnapshotError, match="digest"):
            fill.received(learner, state, snapshot.digest)
        assert fill.staged_bytes(learner) == 0 and fill.fill_state(learner) == state
        for foreign in (b"\0" * 16384, (tmp_path / "l" / "data.mdb").read_bytes()[:8192]):
            fill.append(learner, 0, foreign, sync=False)
            with pytest.raises(fill.BadSnapshotError):
                fill.prepare(learner, "n1", False, 8 * MiB)
            assert not fill.staging_path(learner).exists()
        empty = tmp_path / "empty"   # an LMDB environment, but not a shard replica (no meta rows)
        import lmdb
        lmdb.open(str(empty), map_size=MiB, lib_version=0).close()
        fill.append(learner, 0, (empty / "data.mdb").read_bytes(), sync=False)
        with pytest.raises(fill.BadSnapshotError):
            fill.prepare(learner, "n1", False, 8 * MiB)
        assert learner.state.seq == 0 and fill.fill_state(learner) == state


def test_an_empty_shard_copies_too(tmp_path: pathlib.Path) -> None:
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as primary:
        learner = ShardStore(tmp_path / "l", map_size_bytes=8 * MiB)
        snapshot = fill.write_snapshot(primary, tmp_path / "s.mdb")
        state = fill.restart_staging(learner, fill.begin(learner, "n2"), "ff", sync=False)
        fill.append(learner, 0, (tmp_path / "s.mdb").read_bytes(), sync=False)
        fill.received(learner, state, snapshot.digest)
        learner, state = _install(learner, "n2")
        assert state.base == 0 and learner.state.records == 0 and learner.verify() == (0, 0)
        learner.close()
