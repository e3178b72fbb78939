"""Issue 4: real 3-node clusters (processes on loopback) with R=3 replication."""
from __future__ import annotations

import pathlib
import threading
import time
from typing import Callable

import pytest

from shoal.client import Client, NotEnoughNodesError, ShoalError, UnknownOutcomeError
from shoal.client.wire.routing import encode_key, shard_for_key
from shoal.client.local import LocalCluster

# Fast failure detection for tests; validate() keeps dead_after > lease + fallback + margin.
FAST = {"SHOAL_HEARTBEAT_INTERVAL_S": "0.2", "SHOAL_LEASE_S": "1.0", "SHOAL_NODE_SUSPECT_AFTER_S": "1.0",
        "SHOAL_NODE_DEAD_AFTER_S": "3.6", "SHOAL_REPLICATE_TIMEOUT_S": "1.0"}


@pytest.fixture
def cluster(tmp_path: pathlib.Path):
    with LocalCluster(tmp_path / "cluster", nodes=3, env=FAST) as running:
        yield running


def wait_for(condition: Callable[[], bool], cluster: LocalCluster, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except ShoalError:
            pass
        time.sleep(0.1)   # polling interval of a deadline loop
    pytest.fail(f"timed out waiting for {what}\n{cluster.dump_logs()}")


def shard_states(cluster: LocalCluster, dataset: str) -> dict[int, dict[str, tuple[int, int]]]:
    """shard -> node -> (seq, checksum) of every in-sync replica, from GetNodeStatus."""
    with cluster.client() as client:
        shard_map = {d.name: d for d in client.cluster_map().datasets}[dataset].shard_map
        states: dict[int, dict[str, tuple[int, int]]] = {}
        for handle in cluster.nodes:
            if not cluster.is_running(handle.id):
                continue
            for shard in client.node_status(handle.address).shards:
                if shard.dataset == dataset and handle.id in shard_map[shard.index].replicas:
                    states.setdefault(shard.index, {})[handle.id] = (shard.seq, shard.checksum)
        return states


def converged(cluster: LocalCluster, dataset: str, replicas: int) -> bool:
    states = shard_states(cluster, dataset)
    return all(len(nodes) == replicas and len(set(nodes.values())) == 1 for nodes in states.values())


class Writer(threading.Thread):
    """Writes unique keys until stopped; remembers which were acknowledged."""

    def __init__(self, client: Client, dataset: str) -> None:
        super().__init__(daemon=True)
        self.client, self.dataset = client, dataset
        self.acked: dict[str, int] = {}
        self.unknown: set[str] = set()
        self.stopping = threading.Event()
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:   # surfaced by stop(): a dead writer must fail the test
            self.crash = exc

    def _write(self) -> None:
        i = 0
        while not self.stopping.is_set():
            key = f"w{i}"
            try:
                self.client.put(self.dataset, key, i)
                self.acked[key] = i
            except UnknownOutcomeError:
                self.unknown.add(key)
            except ShoalError:
                pass
            i += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert self.crash is None, repr(self.crash)


def test_writes_reach_every_replica_with_equal_checksums(cluster: LocalCluster) -> None:
    """R=3: after put_many every shard has three in-sync replicas with one checksum."""
    with cluster.client() as client:
        client.create_dataset("events", shards=4, replication=3)
        assert client.put_many("events", ((f"k{i}", {"i": i}) for i in range(20_000))) == 20_000
        client.put("events", "single", 1)
    wait_for(lambda: converged(cluster, "events", 3), cluster, "3 equal replicas per shard")
    with pytest.raises(NotEnoughNodesError):
        with cluster.client() as client:
            client.create_dataset("too-wide", shards=1, replication=4)


@pytest.mark.parametrize("victim", ["backup", "primary"])
def test_kill_during_writes_loses_no_acknowledged_write(cluster: LocalCluster, victim: str) -> None:
    """kill -9 of a backup or of a primary while writing: every acknowledged write stays readable."""
    with cluster.client(timeout_s=15) as client:
        client.create_dataset("kv", shards=3, replication=3)
        shard = client.cluster_map().datasets[0].shard_map[0]
        target = shard.primary if victim == "primary" else shard.replicas[-1]
        writer = Writer(client, "kv")
        writer.start()
        wait_for(lambda: len(writer.acked) > 100, cluster, "first writes")
        cluster.kill(target)
        acked_at_kill = len(writer.acked)
        wait_for(lambda: len(writer.acked) > acked_at_kill + 200 or writer.crash is not None, cluster,
                 "writes after the kill")
        writer.stop()
        for key, value in writer.acked.items():
            assert client.get("kv", key) == value, key
    wait_for(lambda: converged(cluster, "kv", 2), cluster, "two equal in-sync replicas per shard")


def test_restart_of_all_nodes_keeps_data_and_metadata(cluster: LocalCluster) -> None:
    """Stop every node (SIGKILL), start them again: datasets, shard map and records are back."""
    with cluster.client() as client:
        client.create_dataset("keep", shards=3, replication=3)
        client.put_many("keep", ((f"k{i}", i) for i in range(3000)))
        before = client.cluster_map().datasets
    for handle in cluster.nodes:
        cluster.kill(handle.id)
    for handle in cluster.nodes:
        cluster.start_node(handle.id)
    cluster.wait_ready(timeout_s=60)
    with cluster.client(timeout_s=20) as client:
        assert [d.name for d in client.cluster_map().datasets] == [d.name for d in before]
        scanned = dict(client.scan("keep"))
        assert scanned == {f"k{i}": i for i in range(3000)}, f"{len(scanned)} records\n{cluster.dump_logs()}"


def test_paused_old_primary_cannot_acknowledge_after_failover(cluster: LocalCluster) -> None:
    """SIGSTOP the primary, let a backup take over, SIGCONT: the old primary acks nothing."""
    with cluster.client(timeout_s=15) as client:
        client.create_dataset("fence", shards=1, replication=3)
        client.put("fence", "k", "before")
        old = client.cluster_map().datasets[0].shard_map[0]
        cluster.pause(old.primary)
        wait_for(lambda: client.cluster_map().datasets[0].shard_map[0].primary != old.primary,
                 cluster, "a new primary")
        client.put("fence", "k", "after")
        cluster.resume(old.primary)
        # Straight at the old primary with its old epoch: it must refuse, never ack.
        from shoal.client.wire.pb import data_pb2, data_pb2_grpc
        import grpc
        import msgpack
        stub = data_pb2_grpc.DataStub(grpc.insecure_channel(cluster.node(old.primary).address))
        key = b"k"
        assert shard_for_key(encode_key("k"), 1) == 0
        request = data_pb2.PutRequest(target=data_pb2.RecordTarget(dataset="fence", shard=0, epoch=old.epoch),
                                      key=key, value=msgpack.packb("stale"),
                                      write_id=data_pb2.WriteId(client_id=b"s" * 16, request_seq=1))
        with pytest.raises(grpc.RpcError):
            stub.Put(request, timeout=10)
        assert client.get("fence", "k") == "after"


def test_raft_leader_kill_elects_a_controller_that_carries_on(cluster: LocalCluster) -> None:
    """Kill the Raft leader: a new leader is elected and metadata commands work again."""
    leader = cluster.raft_leader()
    cluster.kill(leader)
    wait_for(lambda: cluster.raft_leader() not in (None, leader), cluster, "a new Raft leader")
    with cluster.client(timeout_s=20) as client:
        client.create_dataset("after", shards=2, replication=2)
        client.put("after", "k", 1)
        assert client.get("after", "k") == 1
