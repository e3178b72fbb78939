"""Issue 18.1: a learner reuses its old replica and catches up by replay only when that is safe.

The safety rule (`learner.replay_problem`): a replica whose last applied entry is (seq S,
epoch E) may replay from S when the primary's ring holds an entry (S, E) and every entry after
S; a ring that lacks them, or an entry S of another epoch (a divergent suffix), means a copy
from zero. The rule is fed here exactly what the primary's FetchEntries handler computes
(`backup.recent_entries` after S - 1, then `entries_within`), on real rings and real LMDB
stores; the planner prefers, as a learner, a node that reports a replica of the shard.
"""
from __future__ import annotations

import pathlib
import types
from typing import Any

import msgpack

from shoal.node.controller.repair import plan_repairs
from shoal.node.metadata import commands
from shoal.node.metadata.view import MetadataView
from shoal.node.replication import backup
from shoal.node.replication.learner import replay_problem
from shoal.node.replication.ring import EntryRing, RingEntry
from shoal.node.storage import Entry, Put, ShardStore, fill, scrub
from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN
from test_repair_planner import TERM, cluster, run

MiB = 1 << 20


def _wid(n: int) -> bytes:
    return b"c" * 16 + n.to_bytes(8, "big")


def _fetched(ring: EntryRing, primary_seq: int, after_seq: int, bytes_max: int = 4 * MiB) -> list[RingEntry] | None:
    """What a learner gets from FetchEntries(after_seq) on a primary with this ring and seq (server.py)."""
    primary = types.SimpleNamespace(ring=ring, store=types.SimpleNamespace(state=types.SimpleNamespace(seq=primary_seq)))
    entries = backup.recent_entries(primary, after_seq)   # type: ignore[arg-type]
    return None if entries is None else backup.entries_within(entries, bytes_max) if entries else []


def _ring(first: int, last: int, epoch_of: Any = lambda seq: 1, entries_max: int = 4096) -> EntryRing:
    ring = EntryRing(entries_max, 64 * MiB)
    for seq in range(first, last + 1):
        ring.append(seq, epoch_of(seq), b"x" * 10)
    return ring


def test_replay_rule_allows_a_replica_whose_last_entry_and_everything_after_are_in_the_ring() -> None:
    """(S, E) in the ring and every entry after it: replay (None), even across an epoch change after S,
    with the FetchEntries reply cut to a prefix, and when there is nothing after S at all."""
    ring = _ring(1, 400, epoch_of=lambda seq: 3 if seq <= 250 else 4)
    assert replay_problem(200, 3, _fetched(ring, 400, 199)) is None
    assert replay_problem(250, 3, _fetched(ring, 400, 249)) is None               # the last entry of epoch 3
    assert replay_problem(251, 4, _fetched(ring, 400, 250)) is None
    assert replay_problem(200, 3, _fetched(ring, 400, 199, bytes_max=1)) is None  # one entry per reply
    assert replay_problem(400, 4, _fetched(ring, 400, 399)) is None               # up to date: nothing to replay


def test_replay_rule_refuses_when_the_ring_lacks_the_entries_or_the_epoch_differs() -> None:
    """Copy instead when: the ring no longer reaches back to S (trimmed, or empty after a restart of the
    primary); the primary's entry S is of another epoch (a divergent suffix); the primary has no entry S
    (the replica holds entries it never had); the replica does not know its last entry's epoch, or is empty."""
    trimmed = _ring(1, 400, entries_max=100)                         # holds 301..400
    assert "no longer reach back to seq 200" in str(replay_problem(200, 1, _fetched(trimmed, 400, 199)))
    assert replay_problem(301, 1, _fetched(trimmed, 400, 300)) is None
    assert "no longer reach back" in str(replay_problem(300, 1, _fetched(trimmed, 400, 299)))
    restarted = EntryRing(4096, 64 * MiB)                             # a primary's ring after its restart
    assert "no longer reach back" in str(replay_problem(200, 1, _fetched(restarted, 400, 199)))
    assert "no longer reach back" in str(replay_problem(400, 1, _fetched(restarted, 400, 399)))
    history = _ring(1, 400, epoch_of=lambda seq: 5 if seq > 180 else 4)
    assert "divergent suffix" in str(replay_problem(200, 4, _fetched(history, 400, 199)))
    assert "divergent suffix" in str(replay_problem(200, 6, _fetched(history, 400, 199)))
    assert "never had" in str(replay_problem(401, 5, _fetched(history, 400, 400)))   # ahead of the primary
    assert "never had" in str(replay_problem(410, 5, _fetched(history, 400, 409)))
    assert "never had" in str(replay_problem(3, 1, _fetched(EntryRing(4096, MiB), 2, 2)))
    assert "unknown" in str(replay_problem(200, ENTRY_EPOCH_UNKNOWN, _fetched(history, 400, 199)))
    assert "no entry" in str(replay_problem(0, 1, []))


def test_store_records_the_epoch_of_its_last_entry_and_forgets_it_when_filled(tmp_path: pathlib.Path) -> None:
    """entry_epoch: the primary's epoch in execute, the entry's own (not the adopted) epoch in apply, kept
    across a reopen and by set_epoch; unknown after fill.begin, a snapshot copy and scrub.mark_corrupt, and in a
    store without the row."""
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as primary, \
            ShardStore(tmp_path / "b", map_size_bytes=8 * MiB) as replica:
        assert primary.state.entry_epoch == ENTRY_EPOCH_UNKNOWN
        entry, _ = primary.execute([Put(b"a", msgpack.packb(1), _wid(1))], epoch=3)
        assert (primary.state.seq, primary.state.entry_epoch) == (1, 3)
        replica.set_epoch(7)                                          # adopted a newer epoch first
        replica.apply(Entry.decode(entry.encode()))
        assert (replica.state.epoch, replica.state.entry_epoch) == (7, 3)
        replica.set_epoch(9)
        assert replica.state.entry_epoch == 3
    with ShardStore(tmp_path / "b", map_size_bytes=8 * MiB) as reopened:
        assert (reopened.state.seq, reopened.state.epoch, reopened.state.entry_epoch) == (1, 9, 3)
        with reopened._env.begin(write=True) as txn:                  # a store from before the row
            txn.delete(b"entry_epoch", db=reopened._meta_db)
    with ShardStore(tmp_path / "b", map_size_bytes=8 * MiB) as old, \
            ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as primary:
        assert old.state.entry_epoch == ENTRY_EPOCH_UNKNOWN
        old.apply(primary.execute([Put(b"b", msgpack.packb(2), _wid(2))], epoch=4)[0])
        assert old.state.entry_epoch == 4
        state = fill.begin(old, "n1")
        assert (old.state.seq, old.state.entry_epoch) == (0, ENTRY_EPOCH_UNKNOWN)
        snapshot = fill.write_snapshot(primary, tmp_path / "snapshot.mdb")   # a copy: the primary's snapshot
        state = fill.restart_staging(old, state, "01", sync=False)
        fill.append(old, 0, (tmp_path / "snapshot.mdb").read_bytes(), sync=False)
        fill.received(old, state, snapshot.digest)
        fill.prepare(old, "n1", False, 8 * MiB)
        old.close()
        fill.move_into_place(old.path, False)
        with ShardStore(old.path, map_size_bytes=8 * MiB) as copied:
            assert copied.state.seq == primary.state.seq and copied.state.entry_epoch == ENTRY_EPOCH_UNKNOWN
        primary.execute([Put(b"c", msgpack.packb(3), _wid(3))], epoch=4)
        scrub.mark_corrupt(primary)                                   # the scrubber found it damaged
        assert primary.state.entry_epoch == ENTRY_EPOCH_UNKNOWN and primary.state.seq == 3
    with ShardStore(tmp_path / "p", map_size_bytes=8 * MiB) as marked:
        assert marked.state.entry_epoch == ENTRY_EPOCH_UNKNOWN


def test_replay_from_an_old_replica_converges_and_a_divergent_suffix_would_not(tmp_path: pathlib.Path) -> None:
    """On real stores. A backup stops at seq 40 (epoch 1) while its primary goes on to 100, across an epoch
    change: the rule allows replay, and replaying the ring's entries after 40 makes it equal to the primary
    (records, checksum, count, idempotency rows). A second backup got an entry 41 of a deposed primary
    (epoch 1, never acknowledged) that the primary has as another entry 41 of epoch 2: the rule refuses,
    and the test shows why: replaying over it would keep the key only the divergent entry wrote."""
    ring = EntryRing(4096, 64 * MiB)
    with ShardStore(tmp_path / "p", map_size_bytes=16 * MiB) as primary, \
            ShardStore(tmp_path / "b", map_size_bytes=16 * MiB) as behind, \
            ShardStore(tmp_path / "d", map_size_bytes=16 * MiB) as divergent:
        for n in range(1, 101):
            epoch = 1 if n <= 40 else 2
            entry, _ = primary.execute([Put(b"k%03d" % (n % 30), msgpack.packb(n), _wid(n))], epoch)
            ring.append(entry.seq, entry.epoch, entry.encode())
            if n <= 40:
                behind.apply(Entry.decode(entry.encode()))
                divergent.apply(Entry.decode(entry.encode()))
        lost = Entry(41, 1, [b"only-here"], [msgpack.packb("unacknowledged")], [_wid(10_000)],
                     [msgpack.packb(None)])
        divergent.apply(lost)

        last = behind.state
        assert replay_problem(last.seq, last.entry_epoch, _fetched(ring, primary.state.seq, last.seq - 1)) is None
        for held in ring.after(last.seq, primary.state.seq) or []:
            behind.apply(Entry.decode(held.payload))
        assert (behind.state.seq, behind.state.checksum, behind.state.records, behind.state.entry_epoch) == \
            (primary.state.seq, primary.state.checksum, primary.state.records, primary.state.entry_epoch)
        assert behind.verify() == primary.verify()
        assert behind.statistics().idempotency_rows == primary.statistics().idempotency_rows

        tip = divergent.state
        problem = replay_problem(tip.seq, tip.entry_epoch, _fetched(ring, primary.state.seq, tip.seq - 1))
        assert problem is not None and "divergent suffix" in problem
        for held in ring.after(tip.seq, primary.state.seq) or []:     # what a replay would have done
            divergent.apply(Entry.decode(held.payload))
        assert divergent.state.seq == primary.state.seq
        assert divergent.get(b"only-here") is not None and primary.get(b"only-here") is None


class Reports:
    """The lease table's view of heartbeats: {(node, dataset id, shard): (seq, incarnation)}."""

    def __init__(self, held: dict[tuple[str, str, int], tuple[int, str]]) -> None:
        self.held = held

    def reported(self, node_id: str, shard: Any) -> tuple[int, str] | None:
        return self.held.get((node_id, shard.dataset_id, shard.index))


def _learners_planned(state: dict[str, Any], reports: Reports | None, transfers_per_node_max: int = 2
                      ) -> list[tuple[int, str]]:
    planned = [commands.decode_command(c)
               for c in plan_repairs(MetadataView.from_state(state), TERM, transfers_per_node_max, reports)]
    return [(c["shard"], c["node_id"]) for c in planned if c["op"] == "add_learner"]


def _fenced_out(state: dict[str, Any], node_id: str) -> dict[str, Any]:
    """`node_id` fenced out of shard 0 by its primary (remove_replica, epoch + 1)."""
    return run(state, commands.remove_replica("ds", 0, node_id, 1))


def test_planner_prefers_a_node_that_reports_a_replica_of_the_shard() -> None:
    """n3 was fenced out of shard 0 and still holds that replica (its heartbeat says so); n4 holds nothing
    and is less loaded. Without reports n4 is chosen (least loaded); with them n3. A report of another
    dataset incarnation does not count; the zone rule and the per-node learner limit still come first."""
    four = {"n1": "", "n2": "", "n3": "", "n4": ""}
    state = _fenced_out(cluster(four, [["n1", "n2", "n3"], ["n3", "n1", "n2"]]), "n3")
    dataset_id = state["datasets"]["ds"]["id"]
    held = Reports({("n3", dataset_id, 0): (120, "inc-n3")})
    assert _learners_planned(state, None) == [(0, "n4")]
    assert _learners_planned(state, Reports({})) == [(0, "n4")]
    assert _learners_planned(state, held) == [(0, "n3")]
    assert _learners_planned(state, Reports({("n3", dataset_id + "0", 0): (120, "inc-n3")})) == [(0, "n4")]

    zoned = _fenced_out(cluster({"n1": "a", "n2": "b", "n3": "a", "n4": "c"},
                                [["n1", "n2", "n3"], ["n3", "n1", "n2"]]), "n3")
    assert _learners_planned(zoned, held) == [(0, "n4")]                # a zone the shard does not use first

    learning = _fenced_out(cluster(four, [["n1", "n2", "n3"], ["n1", "n2", "n4"]]), "n3")
    learning = run(learning, commands.add_learner("ds", 1, "n3", 1, controller_term=TERM))   # n3 busy copying
    assert _learners_planned(learning, held, transfers_per_node_max=2) == [(0, "n3")]
    assert _learners_planned(learning, held, transfers_per_node_max=1) == [(0, "n4")]   # at its limit


def test_a_ring_that_stopped_before_the_store_never_answers_complete() -> None:
    """The bench's stuck learner: a ring ending at 12 on a primary whose store is at 15 answered
    "complete, nothing after 12" and the learner asked to join forever. A lone primary now
    empties its ring instead of leaving it behind (primary.py), and an empty ring behind the
    store answers incomplete, so the learner copies."""
    assert _fetched(_ring(1, 12), 15, 12) == []          # the stale ring: why the primary must empty it
    empty = _ring(1, 12)
    empty.clear()
    assert _fetched(empty, 15, 12) is None
    assert replay_problem(12, 1, _fetched(empty, 15, 11)) is not None


def test_a_learner_refused_with_copy_again_starts_its_copy_over(tmp_path: pathlib.Path) -> None:
    """JoinShard answered "... gone from the ring: copy again": the learner empties its replica
    (a new copy from the primary begins at the next attempt) instead of replaying and asking
    again. Real LMDB store; the primary's reply is the only stand-in."""
    import asyncio

    from shoal.client.wire.pb import peer_pb2
    from shoal.node.replication import learner
    from shoal.node.replication.replica import Replica

    class Peer:
        async def JoinShard(self, request: Any, timeout: float) -> Any:   # noqa: N802 (the RPC's name)
            return peer_pb2.JoinShardResponse(joined=False, reason="entries after seq 3 are gone from the ring: "
                                                                   + learner.COPY_AGAIN)

    async def run_blocking(function: Any, *args: Any) -> Any:
        return function(*args)

    ctx = types.SimpleNamespace(peers=types.SimpleNamespace(peer=lambda address: Peer()), node_id="n2",
                                address_of=lambda node: node, cluster_id="c", run_blocking=run_blocking,
                                config=types.SimpleNamespace(replicate_timeout_s=1.0))
    with ShardStore(tmp_path / "s", map_size_bytes=16 * MiB) as store:
        for n in range(1, 4):
            store.apply(Entry(n, 1, [b"k%d" % n], [msgpack.packb(n)], [_wid(n)], [msgpack.packb(None)]))
        replica = Replica("ds@1", 0, store, _ring(1, 3))
        try:
            asyncio.run(learner._join(ctx, replica, "n1"))   # type: ignore[arg-type]
            raise AssertionError("the join was refused: CopyFailed expected")
        except learner.CopyFailed as exc:
            assert learner.COPY_AGAIN in str(exc)
        assert store.state.seq == 0 and store.state.records == 0
        assert fill.fill_state(store) is not None and fill.fill_state(store).source == "n1"
        assert replica.ring.last_seq is None
