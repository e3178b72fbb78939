"""Issue 16.1: a full shard and an exhausted open-files limit leave a working node."""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import resource
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

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
    # the node's TMPDIR (short: a forkserver socket goes below it): empty again once it stopped
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="shoal-t-"))
    proc = subprocess.Popen([sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", "solo",
                             "--data-dir", str(tmp_path / "solo"), "--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, text=True, preexec_fn=_low_limit,
                            env={**os.environ, "TMPDIR": str(scratch)})
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
        warm_by = time.monotonic() + 60     # the worker pool starts in the background at node start
        while not list(scratch.rglob("pymp-*")):
            assert time.monotonic() < warm_by, "no forkserver folder (pymp-*) in the node's TMPDIR"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert list(scratch.iterdir()) == [], "a stopped node left temporary files"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def _soft_file_limit(soft: int) -> Callable[[], None]:
    """A preexec_fn lowering only the soft RLIMIT_NOFILE (as `ulimit -Sn SOFT` would)."""
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return lower


def _node_argv(data_dir: pathlib.Path, port: int) -> list[str]:
    return [sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", "solo", "--data-dir", str(data_dir),
            "--listen", f"127.0.0.1:{port}"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_refused(data_dir: pathlib.Path, soft: int) -> str:
    """Start a node under the soft limit; it must exit 1 within the bound; its stderr."""
    result = subprocess.run(_node_argv(data_dir, _free_port()), capture_output=True, text=True, errors="replace",
                            preexec_fn=_soft_file_limit(soft), timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    return result.stderr


@pytest.mark.parametrize("soft", [8, 13, 30])
def test_issue16_start_under_a_tiny_file_limit_is_one_line(tmp_path: pathlib.Path, soft: int) -> None:
    """Issue 16.1b start-up: with a soft open-files limit too low to open gRPC's event fds (8: it
    died of SIGSEGV) or to bind (13: gRPC's own log lines came first), or with no room for one
    shard's create (30 < the 32 a create keeps free), a node exits 1 with one line naming RLIMIT_NOFILE.

    Method: `python -m shoal.client.cli node start` with RLIMIT_NOFILE lowered by preexec_fn."""
    stderr = _start_refused(tmp_path / "solo", soft)
    assert stderr.count("\n") == 1 and stderr.startswith("error: cannot start node solo: "), stderr
    assert f"RLIMIT_NOFILE soft limit {soft}" in stderr and "raise the limit (ulimit -n" in stderr
    assert "address in use" not in stderr


def test_issue16_restart_with_shards_over_the_file_limit_is_one_line(tmp_path: pathlib.Path) -> None:
    """Variant, the issue's restart: a data dir holding 40 shards (5 datasets of 8) restarted under
    `ulimit -n 128` used to die in gRPC (SIGSEGV) after opening them; now it exits 1 in one line
    naming the limit and the shards, and under the usual limit the same data dir starts and serves.

    Method: a standalone node process creates the shards, stops (SIGTERM); a restart with soft
    RLIMIT_NOFILE 128; then a restart without the lower limit."""
    data_dir, log_path = tmp_path / "solo", tmp_path / "node.log"

    def start() -> tuple[subprocess.Popen[bytes], int]:
        port = _free_port()
        log = log_path.open("ab")
        proc = subprocess.Popen(_node_argv(data_dir, port), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while " ready" not in log_path.read_text(errors="replace") and proc.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)     # polling the log for readiness, bounded by the deadline
        assert proc.poll() is None, log_path.read_text(errors="replace")
        return proc, port

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log_path.write_text("")

    proc, port = start()
    try:
        with Client(f"127.0.0.1:{port}") as client:
            for n in range(5):
                client.create_dataset(f"d{n}", shards=8, replication=1)
            client.put("d0", "k", 1)
        stop(proc)
        stderr = _start_refused(data_dir, 128)
        assert stderr.count("\n") == 1 and stderr.startswith("error: cannot start node solo: "), stderr
        assert "(40 shards on disk" in stderr and "RLIMIT_NOFILE soft limit 128" in stderr
        proc, port = start()
        with Client(f"127.0.0.1:{port}") as client:
            assert client.get("d0", "k") == 1 and len(client.list_datasets()) == 5
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
