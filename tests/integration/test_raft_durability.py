"""Issue 19 point 3: Raft metadata survives a power loss of every voter.

pysyncobj writes its journal through mmap and never syncs it, so after a power loss the disk
holds only what the kernel happened to write back. This test keeps, for each voter, a copy of
its Raft files taken at each of its syncs (`_DurableJournal.sync`): that copy is what a disk
would hold after losing power right then. It proposes commands to a real 3-voter pysyncobj
group, stops every voter, puts back the copies (everything written after the last sync is
lost, as in a power loss), restarts the group, and checks that every acknowledged command is
there. Without the sync before acknowledging (plain pysyncobj) the copies would hold nothing.
"""
from __future__ import annotations

import pathlib
import shutil
import threading
from typing import Any

import pytest

from shoal.node.metadata import commands, raft
from test_raft_metadata import Group, propose


@pytest.fixture
def durable_copies(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> dict[pathlib.Path, pathlib.Path]:
    """raft dir -> the copy of its files as of its last sync."""
    copies: dict[pathlib.Path, pathlib.Path] = {}
    lock = threading.Lock()
    real_sync = raft._DurableJournal.sync

    def sync_and_copy(journal: Any) -> None:
        real_sync(journal)
        raft_dir = journal._dump.parent
        with lock:
            target = copies.setdefault(raft_dir, tmp_path / "disk" / raft_dir.parent.name)
            target.mkdir(parents=True, exist_ok=True)
            for name in ("journal", "journal.meta", "dump"):
                if (raft_dir / name).exists():
                    shutil.copyfile(raft_dir / name, target / name)
    monkeypatch.setattr(raft._DurableJournal, "sync", sync_and_copy)
    return copies


def test_acknowledged_metadata_survives_a_power_loss_of_every_voter(
        tmp_path: pathlib.Path, durable_copies: dict[pathlib.Path, pathlib.Path]) -> None:
    group = Group(tmp_path / "group", size=3)
    try:
        group.start_all()
        group.wait_leader()
        acknowledged = []
        for i in range(30):
            name = f"x{i:02d}"
            assert propose(group.wait_leader(), commands.register_node(name, f"h:{7000 + i}", "", ""))["ok"]
            acknowledged.append(name)
        group.stop_all()
        assert len(durable_copies) == 3, durable_copies
        for raft_dir, copy in durable_copies.items():     # the power loss: only synced bytes remain
            for name in ("journal", "journal.meta", "dump"):
                (raft_dir / name).unlink(missing_ok=True)
                if (copy / name).exists():
                    shutil.copyfile(copy / name, raft_dir / name)
        group.start_all()
        leader = group.wait_leader(timeout_s=30)
        assert propose(leader, commands.noop())["ok"]       # a barrier: every committed entry applied here
        assert set(acknowledged) <= set(leader.state["nodes"]), sorted(leader.state["nodes"])
    finally:
        group.stop_all()


def test_journal_syncs_only_when_it_changed(tmp_path: pathlib.Path) -> None:
    """Heartbeats send messages all the time: a sync with nothing new costs no fsync."""
    journal = raft._DurableJournal(str(tmp_path / "journal"))
    try:
        journal.sync()
        assert journal.syncs == 0
        journal.add(b"\x00", 1, 1)
        journal.sync()
        journal.sync()
        assert journal.syncs == 1
        journal.setRaftCommitIndex(1)          # a lone voter's commit syncs what it commits
        journal.add(b"\x00", 2, 1)
        journal.setRaftCommitIndex(2)
        assert journal.syncs == 2
    finally:
        journal._destroy()
