"""Issue 16.1: a full shard and an exhausted open-files limit leave a working node."""
from __future__ import annotations

import concurrent.futures
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from shoal.client import Client, StorageFullError
from shoal.client.local import LocalCluster


def test_issue16_full_shard_deletes_and_drops(tmp_path: pathlib.Path) -> None:
    """Issue 16.1a: a 1 MiB shard filled with 200-byte values refuses puts with a message naming
    SHOAL_MAP_SIZE_BYTES, yet every delete of an existing key succeeds and the dataset drops.

    Method: one real node (LocalCluster) with SHOAL_MAP_SIZE_BYTES=1048576; put_many until full,
    then 500 single deletes, then drop and re-create the dataset."""
    env = {"SHOAL_MAP_SIZE_BYTES": str(1024 * 1024)}
    with LocalCluster(tmp_path / "full", nodes=1, env=env) as cluster, cluster.client() as client:
        client.create_dataset("small", shards=1, replication=1)
        written = 0
        with pytest.raises(StorageFullError, match="SHOAL_MAP_SIZE_BYTES") as full:
            for start in range(0, 100_000, 100):
                client.put_many("small", ((f"k{i:06d}", "v" * 200) for i in range(start, start + 100)))
                written = start + 100
        assert "1048576" in str(full.value) and written > 500
        for i in range(500):
            client.delete("small", f"k{i:06d}")
        assert client.get("small", "k000000") is None
        client.put("small", "again", 1)
        client.drop_dataset("small")
        client.create_dataset("small", shards=1, replication=1)


def test_issue16_full_shard_concurrent_deletes_all_succeed(tmp_path: pathlib.Path) -> None:
    """Variant of 16.1a: on a full 1 MiB shard, 32 threads delete at once, so the primary commits
    many deletes per group (group commit); a group too big for the headroom is split, never failed.

    Method: as above, then every stored key deleted by a thread pool; each delete must report the
    key existed, and the shard must end empty and writable."""
    env = {"SHOAL_MAP_SIZE_BYTES": str(1024 * 1024)}
    with LocalCluster(tmp_path / "full", nodes=1, env=env) as cluster, cluster.client() as client:
        client.create_dataset("small", shards=1, replication=1)
        written = 0
        with pytest.raises(StorageFullError):
            for start in range(0, 100_000, 100):
                client.put_many("small", ((f"k{i:06d}", "v" * 200) for i in range(start, start + 100)))
                written = start + 100
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            existed = list(pool.map(lambda i: client.delete("small", f"k{i:06d}"), range(written)))
        assert all(existed) and len(existed) == written
        assert list(client.scan("small")) == []
        client.put("small", "again", 1)
        assert client.get("small", "again") == 1


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


def test_issue16_file_limit_fails_the_create_not_the_node(tmp_path: pathlib.Path) -> None:
    """Issue 16.1b: under `ulimit -n 128`, creating datasets of 8 shards fails with an error naming
    RLIMIT_NOFILE once the limit is near, and the node stays up and answers.

    Method: `python -m shoal.client.cli node start` in a subprocess with RLIMIT_NOFILE 128
    (preexec_fn), then the client creates datasets until the error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", "solo",
                             "--data-dir", str(tmp_path / "solo"), "--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, text=True, preexec_fn=_low_limit)
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline and "ready" not in (lines[-1] if lines else ""):
            lines.append(proc.stderr.readline())
        assert "ready" in lines[-1], "".join(lines)
        with Client(f"127.0.0.1:{port}") as client:
            created = 0
            with pytest.raises(StorageFullError, match="RLIMIT_NOFILE soft limit 128") as refused:
                for n in range(20):
                    client.create_dataset(f"d{n}", shards=8, replication=1)
                    created += 1
            assert "3 file descriptors" in str(refused.value)
            assert 1 <= created < 20
            client.put("d0", "k", 1)
            assert client.get("d0", "k") == 1
            assert len(client.list_datasets()) == created
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
