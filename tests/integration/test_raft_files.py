"""Issue 16 point 1: a damaged Raft journal or dump is one line naming the file, never a crash.

Real 3-voter clusters; the damage is done to a stopped voter's files, as an operator's
disk would do it (zero bytes, a record cut in half, a dump that is not gzip). Moving the
raft dir aside, as the line says, rebuilds the voter from the others.
"""
from __future__ import annotations

import pathlib
import shutil
from typing import Callable

import pytest

from shoal.client.local import LocalCluster, NodeExitedError


def _zero(path: pathlib.Path) -> None:
    path.write_bytes(b"")


def _cut_record(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:60])   # past the 40-byte header, inside the first record


def _garbage_dump(path: pathlib.Path) -> None:
    (path.parent / "dump").write_bytes(b"this is not a gzip file")


@pytest.mark.parametrize("damage, named", [(_zero, "raft journal"), (_cut_record, "raft journal"),
                                           (_garbage_dump, "raft dump")])
def test_issue16_damaged_raft_files_give_one_line(local_cluster: Callable[..., LocalCluster],
                                                   damage: Callable[[pathlib.Path], None], named: str) -> None:
    """Stop a voter, damage its journal or dump, start it: it exits with one `error:` line naming the
    file and what to do; after moving raft/ aside it rejoins and the data is all there."""
    cluster = local_cluster(3)
    with cluster.client() as client:
        client.create_dataset("ds", shards=2, replication=3)
        client.put_many("ds", ((f"k{i}", i) for i in range(50)))
    voter = cluster.nodes[2]
    cluster.terminate(voter.id)
    damage(voter.data_dir / "raft" / "journal")
    cluster.start_node(voter.id)
    with pytest.raises(NodeExitedError):
        cluster.wait_ready(timeout_s=30)
    log = cluster.log_tail(voter.id, 60)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0] and "move" in errors[0], log
    assert "Traceback" not in log.split("local cluster starts")[-1], log
    shutil.move(voter.data_dir / "raft", voter.data_dir / "raft.damaged")
    cluster.start_node(voter.id)
    cluster.wait_ready(timeout_s=60)
    with cluster.client() as client:
        assert dict(client.scan("ds")) == {f"k{i}": i for i in range(50)}
