"""replication/copy_source.py `Snapshots`: the snapshot files a primary keeps for its learners, on real
LMDB. One per (shard, learner), found again by id (a resume), replaced when the learner asks for a new
one, bounded in number (OVERLOADED beyond), removed when the learner left, this node stopped being
primary, or nobody read it for idle_s; taken back after a restart of the node (its manifest), and
served then only while the replica is the one it was taken of."""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import types
from typing import Any

import msgpack
import pytest

from shoal.node.errors import OverloadedError
from shoal.node.replication import copy_source
from shoal.node.storage import Put, ShardStore, fill

MiB = 1 << 20


def _context(primary: str, learners: tuple[str, ...]) -> Any:
    """The two things Snapshots reads: this node's id and the shard map (a fake of the metadata view)."""
    shard = types.SimpleNamespace(primary=primary, learners=learners, dataset_id="ds@1")
    view = types.SimpleNamespace(shard=lambda dataset, index: shard if (dataset, index) == ("ds", 0) else None)
    return types.SimpleNamespace(node_id="n1", metadata=types.SimpleNamespace(view=view),
                                 config=types.SimpleNamespace(lmdb_sync=True))


def test_snapshots_are_kept_per_learner_found_again_and_removed(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "snapshots"
    directory.mkdir()
    (directory / "left-by-a-crash.mdb").write_bytes(b"x")
    snapshots = copy_source.Snapshots(directory, 2, idle_s=60)
    assert list(directory.iterdir()) == [], "what has no manifest is removed at start"
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as store:
        store.execute([Put(b"k", msgpack.packb(1), b"w" * 24)], epoch=1)
        replica = types.SimpleNamespace(dataset_id="ds@1", index=0, name="ds/0", store=store)

        async def run() -> None:
            ctx = _context("n1", ("n2", "n3"))
            first = await snapshots.acquire(ctx, replica, "n2", "")
            assert first.snapshot.seq == 1 and first.path.stat().st_size == first.snapshot.size_bytes
            assert first.snapshot.digest == fill.file_digest(first.path)
            assert await snapshots.acquire(ctx, replica, "n2", first.id) is first           # a resume
            other = await snapshots.acquire(ctx, replica, "n3", first.id)                  # not n3's: a new one
            assert other is not first and len(snapshots.held()) == 2
            with pytest.raises(OverloadedError):
                await snapshots.acquire(ctx, replica, "n4", "")                             # 2 at most
            again = await snapshots.acquire(ctx, replica, "n2", "")                         # n2 starts over
            assert again.id != first.id and not first.path.exists() and len(snapshots.held()) == 2
            snapshots.sweep(_context("n1", ("n3",)))                                       # n2 joined
            assert [h.learner for h in snapshots.held()] == ["n3"] and not again.path.exists()
            other.used_s -= 61
            snapshots.sweep(ctx)                                                            # idle too long
            assert snapshots.held() == [] and not other.path.exists()
            kept = await snapshots.acquire(ctx, replica, "n2", "")
            kept.streams = 1
            snapshots.sweep(_context("n2", ("n2",)))                                       # read now: kept
            kept.streams = 0
            snapshots.sweep(_context("n2", ("n2",)))                                       # no longer primary
            assert snapshots.held() == [] and list(directory.iterdir()) == []
        asyncio.run(run())


def test_snapshots_outlive_a_restart_of_their_node(tmp_path: pathlib.Path) -> None:
    """Issue 18.3, a sender killed mid-transfer: a new Snapshots over the same directory (the node
    restarted) takes back each snapshot with its manifest, and a resume by id gets the same file;
    a snapshot whose replica was refilled since (another incarnation) or lost writes it held (a
    lower seq) is replaced, and so is one whose bytes changed on disk (its digest is checked again
    before it is served); a file without its manifest, or one cut short, is removed."""
    directory = tmp_path / "snapshots"
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as store:
        store.execute([Put(b"k", msgpack.packb(1), b"w" * 24)], epoch=1)
        replica = types.SimpleNamespace(dataset_id="ds@1", index=0, name="ds/0", store=store)
        ctx = _context("n1", ("n2", "n3"))

        async def first_run() -> tuple[copy_source.HeldSnapshot, copy_source.HeldSnapshot]:
            before = copy_source.Snapshots(directory, 4, idle_s=60)
            return await before.acquire(ctx, replica, "n2", ""), await before.acquire(ctx, replica, "n3", "")

        for_n2, for_n3 = asyncio.run(first_run())
        assert sorted(p.name for p in directory.iterdir()) == sorted(
            [f"{for_n2.id}.mdb", f"{for_n2.id}.json", f"{for_n3.id}.mdb", f"{for_n3.id}.json"])
        with open(for_n3.path, "r+b") as cut:   # a crash while for_n3 was written: its file is short
            cut.truncate(100)
        (directory / "0123.mdb").write_bytes(b"no manifest")
        after = copy_source.Snapshots(directory, 4, idle_s=60)
        assert [h.id for h in after.held()] == [for_n2.id]
        assert sorted(p.name for p in directory.iterdir()) == [f"{for_n2.id}.json", f"{for_n2.id}.mdb"]

        async def second_run() -> None:
            resumed = await after.acquire(ctx, replica, "n2", for_n2.id)
            assert (resumed.id, resumed.snapshot, resumed.path) == (for_n2.id, for_n2.snapshot, for_n2.path)
            assert resumed.verified   # its digest was checked again before it was served
            resumed.incarnation = "refilled since"
            fresh = await after.acquire(ctx, replica, "n2", for_n2.id)
            assert fresh.id != for_n2.id and not for_n2.path.exists()
            fresh.snapshot = dataclasses.replace(fresh.snapshot, seq=store.state.seq + 1)   # writes it held: lost
            assert (await after.acquire(ctx, replica, "n2", fresh.id)).id != fresh.id
            assert not fresh.path.exists() and not fresh.path.with_suffix(".json").exists()
        asyncio.run(second_run())

        damaged = [h for h in after.held() if h.learner == "n2"][0]
        with open(damaged.path, "r+b") as file:   # a crash left other bytes of the same length
            file.write(b"\xff" * 64)
        again = copy_source.Snapshots(directory, 4, idle_s=60)

        async def third_run() -> None:
            fresh = await again.acquire(ctx, replica, "n2", damaged.id)
            assert fresh.id != damaged.id and not damaged.path.exists()
        asyncio.run(third_run())
