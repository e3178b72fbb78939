"""Issue 3: one real node process on a free loopback port, driven through the client."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import grpc
import msgpack
import pytest

from shoal.client import (
    ABSENT, Client, DatasetExistsError, DatasetNotFoundError, InvalidArgumentError, StorageFullError, TooLargeError,
)
from shoal.client.wire.pb import data_pb2, data_pb2_grpc
from shoal.client.wire.routing import shard_for_key
from shoal.client.local import LocalCluster


@pytest.fixture
def node(tmp_path: pathlib.Path):
    with LocalCluster(tmp_path / "cluster", nodes=1) as cluster:
        yield cluster


def _stub(address: str) -> data_pb2_grpc.DataStub:
    return data_pb2_grpc.DataStub(grpc.insecure_channel(address))


def test_records_round_trip(node: LocalCluster) -> None:
    """put/get/delete/compare_and_set/put_many/scan agree with what was written."""
    with node.client() as client:
        client.create_dataset("events", shards=4, replication=1)
        client.put("events", "k1", {"country": "DE", "amount": 12})
        assert client.get("events", "k1") == {"country": "DE", "amount": 12}
        assert client.get("events", "missing") is None
        assert client.compare_and_set("events", "k1", {"country": "DE", "amount": 12}, {"amount": 13})
        assert not client.compare_and_set("events", "k1", {"amount": 12}, {"amount": 14})
        assert client.compare_and_set("events", "new", ABSENT, [1, 2])
        assert client.delete("events", "k1") is True
        assert client.delete("events", "k1") is False
        written = {f"r{i:05d}": {"i": i} for i in range(5000)}
        assert client.put_many("events", written.items()) == 5000
        scanned = dict(client.scan("events"))
        assert scanned == {**written, "new": [1, 2]}
        assert [name for name in (d.name for d in client.list_datasets())] == ["events"]


def test_bad_input_is_rejected_and_changes_nothing(node: LocalCluster) -> None:
    """Each kind of bad input gets one clear error naming what is wrong; the shard is unchanged."""
    with node.client() as client:
        client.create_dataset("ds", shards=2, replication=1)
        client.put("ds", "keep", {"v": 1})
        before = _records(client)
        with pytest.raises(DatasetNotFoundError, match="nope"):
            client.put("nope", "k", 1)
        with pytest.raises(TooLargeError, match="key"):
            client.put("ds", "k" * 600, 1)
        with pytest.raises(TooLargeError, match="value"):
            client.put("ds", "big", "x" * (2 * 1024 * 1024))
        with pytest.raises(InvalidArgumentError, match="big2|encode"):
            client.put("ds", "big2", {"f": object()})
        with pytest.raises(InvalidArgumentError):
            client.put("ds", "", 1)
        with pytest.raises(InvalidArgumentError):
            client.put("ds", 12, 1)   # type: ignore[arg-type]
        with pytest.raises(DatasetExistsError):
            client.create_dataset("ds", shards=2, replication=1)
        shard_map = client.cluster_map()
        address = node.addresses[0]
        epoch = next(d for d in shard_map.datasets if d.name == "ds").shard_map[0].epoch
        right = shard_for_key(b"abc", 2)
        wrong = 1 - right
        for request, code in [
            (data_pb2.PutRequest(target=data_pb2.RecordTarget(dataset="ds", shard=wrong, epoch=epoch),
                                 key=b"abc", value=msgpack.packb(1)), "WRONG_SHARD"),
            (data_pb2.PutRequest(target=data_pb2.RecordTarget(dataset="ds", shard=right, epoch=epoch),
                                 key=b"abc", value=b"\xc1"), "INVALID_ARGUMENT"),
            (data_pb2.PutRequest(target=data_pb2.RecordTarget(dataset="ds", shard=7, epoch=epoch),
                                 key=b"abc", value=msgpack.packb(1)), "INVALID_ARGUMENT"),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                _stub(address).Put(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert dict(caught.value.trailing_metadata())["shoal-error"] == code
        assert _records(client) == before
        assert client.get("ds", "keep") == {"v": 1}


def _records(client: Client) -> int:
    return sum(1 for _ in client.scan("ds"))


def test_kill_and_restart_keeps_every_acknowledged_record(node: LocalCluster) -> None:
    """kill -9 during writes, restart on the same data dir: every acknowledged write is there."""
    with node.client(timeout_s=5) as client:
        client.create_dataset("durable", shards=3, replication=1)
        acked = {}
        for i in range(300):
            client.put("durable", f"k{i}", i)
            acked[f"k{i}"] = i
        node.kill("n1")
        node.start_node("n1")
        node.wait_ready(timeout_s=30)
    with node.client(timeout_s=10) as client:
        assert dict(client.scan("durable")) == acked


def test_second_daemon_on_same_port_or_data_dir_fails(node: LocalCluster, tmp_path: pathlib.Path) -> None:
    """A duplicate start fails with a clear message instead of sharing the port or the files."""
    handle = node.node("n1")
    env = {**os.environ, "SHOAL_RAFT_PASSWORD": "not-used-standalone"}
    cases = [
        (["--data-dir", str(tmp_path / "other"), "--listen", handle.address], "cannot listen on"),
        (["--data-dir", str(handle.data_dir), "--listen", "127.0.0.1:0"], "in use by another shoal node"),
    ]
    for extra, message in cases:
        proc = subprocess.run([sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", "dup", *extra],
                              capture_output=True, text=True, timeout=30, env=env)
        assert proc.returncode != 0
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_sigterm_stops_cleanly(tmp_path: pathlib.Path) -> None:
    """SIGTERM makes a standalone node exit 0 and release its port and data dir."""
    proc = subprocess.Popen([sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", "solo",
                             "--data-dir", str(tmp_path / "solo"), "--listen", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "ready" in line:
                break
        else:
            pytest.fail("node never became ready:\n" + "".join(lines))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_full_map_is_a_clear_error_and_the_shard_stays_readable(tmp_path: pathlib.Path) -> None:
    """A shard whose LMDB map is full answers STORAGE_FULL and still serves what it holds."""
    env = {"SHOAL_MAP_SIZE_BYTES": str(1024 * 1024)}
    with LocalCluster(tmp_path / "full", nodes=1, env=env) as cluster, cluster.client() as client:
        client.create_dataset("small", shards=1, replication=1)
        written = 0
        with pytest.raises(StorageFullError, match="small"):
            for start in range(0, 100_000, 500):
                client.put_many("small", ((f"k{i:06d}", "v" * 200) for i in range(start, start + 500)))
                written = start + 500
        assert written > 0
        assert client.get("small", "k000000") == "v" * 200
        assert sum(1 for _ in client.scan("small")) >= written


def test_metrics_endpoint_reports_shards(tmp_path: pathlib.Path) -> None:
    """With http_listen set (LocalCluster gives each node one), GET /metrics serves Prometheus text
    with the node's shard gauges."""
    import urllib.request

    with LocalCluster(tmp_path / "metrics", nodes=1) as cluster, cluster.client() as client:
        client.create_dataset("m", shards=2, replication=1)
        client.put_many("m", ((f"k{i}", i) for i in range(10)))
        address = cluster.nodes[0].http_address
        body = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()  # nosec B310
    assert 'shoal_shard_replicas{node="n1",role="primary"} 2.0' in body
    assert "shoal_under_replicated_shards 0.0" in body
    records = [line for line in body.splitlines() if line.startswith("shoal_shard_records{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in records) == 10
