"""Issue 19.4: encryption at rest, on real node processes and real LMDB files.

The encrypted-dataset test writes distinctive plaintext into encrypted datasets on a 3-node
cluster (replication 3, so backups apply the primary's entries; and a typed one), reads it
back (get, scan, compare-and-set, a query on the nodes), moves a shard to another node by
a whole-shard copy and reads it there, stops the cluster and reads every data.mdb byte by
byte: the marker never occurs in an encrypted dataset's files, and it does in a plain
dataset's (the control). The wrong-key test gives one node another key and another none.
Waits poll a condition with a deadline; the conftest fixture stops every node.
"""
from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from shoal.client import Client, EncryptionKeyError
from shoal.client.local import LocalCluster
from shoal.client.wire.keyfile import key_id, read_key_file, write_key_file
from shoal.client.wire.pb import data_pb2, data_pb2_grpc
from test_cluster_replication import FAST

MARKER = "PLAINTEXT-MARKER-7f3a"
ENV = {**FAST, "SHOAL_REPAIR_BYTES_PER_S": "0", "SHOAL_WORKERS": "1"}


def _records(count: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"k{i:03d}", {"name": f"{MARKER}-{i}", "n": i}) for i in range(count)]


def _until(condition: Callable[[], bool], cluster: LocalCluster, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{cluster.dump_logs()}")
        time.sleep(0.1)   # polling interval of a deadline loop


def _holders(client: Client, dataset: str) -> set[str]:
    shard_map = {d.name: d for d in client.cluster_map().datasets}[dataset].shard_map
    return {node for shard in shard_map for node in shard.replicas}


def _files(cluster: LocalCluster, dataset_id: str) -> list[pathlib.Path]:
    return sorted(path for node in cluster.nodes for path in node.data_dir.glob(f"shards/{dataset_id}-*/data.mdb"))


def test_encrypted_dataset_holds_no_plaintext_on_disk(local_cluster: Callable[..., LocalCluster],
                                                      tmp_path: pathlib.Path) -> None:
    """Encrypted datasets read back through every path, survive a whole-shard copy, and their LMDB
    files on every node never hold the plaintext marker; a plain dataset's files do. 4 nodes: a
    drain needs as many other alive nodes as the replication (3) of the datasets it holds."""
    key_file = tmp_path / "cluster.key"
    cluster = local_cluster(4, env=ENV, encryption_key_file=key_file)
    records = _records(150)
    with cluster.client(timeout_s=20) as client:
        info = client.create_dataset("secret", shards=3, replication=3, encrypted=True)
        assert info.encryption_key_id == key_id(read_key_file(key_file))
        client.create_dataset("typed", shards=2, replication=3, schema={"name": "str", "n": "int"}, encrypted=True)
        client.create_dataset("moved", shards=3, replication=1, encrypted=True)
        client.create_dataset("plain", shards=1, replication=3)
        for name in ("secret", "typed", "moved", "plain"):
            client.put_many(name, records)
        client.put("secret", "one", {"name": f"{MARKER}-one", "n": -1})
        assert client.compare_and_set("secret", "one", {"name": f"{MARKER}-one", "n": -1}, {"name": MARKER, "n": -2})
        assert not client.compare_and_set("typed", "k001", {"name": "other", "n": 1}, {"name": "x", "n": 0})
        assert client.get("secret", "one") == {"name": MARKER, "n": -2}
        assert client.get("typed", "k007") == records[7][1]
        assert dict(client.scan("typed")) == dict(records)
        rows = client.query("secret").where("n >= 100").agg(total=("sum", "n"), n=("count", None)).submit() \
            .result(timeout=30)
        assert rows == [{"total": sum(range(100, 150)), "n": 50}]
        ids = {d.name: d.id for d in client.cluster_map().datasets}

        # a whole-shard copy: draining a node moves its "moved" shard (R=1) to another node by a copy
        leaving = sorted(_holders(client, "moved") - {str(client.status()["controller"])})[0]
        client.drain_node(leaving)
        _until(lambda: leaving not in _holders(client, "moved"), cluster, f"the moved shards to leave {leaving}")
        assert dict(client.scan("moved")) == dict(records)
    cluster.stop()
    marker = MARKER.encode()
    for name in ("secret", "typed", "moved"):
        files = _files(cluster, ids[name])
        assert files, name
        for path in files:
            assert marker not in path.read_bytes(), f"plaintext in {path}"
    plain = _files(cluster, ids["plain"])
    assert len(plain) >= 3 and all(marker in path.read_bytes() for path in plain)   # + 1 moving off `leaving`


def test_a_node_with_another_key_refuses_an_encrypted_dataset(local_cluster: Callable[..., LocalCluster],
                                                              tmp_path: pathlib.Path) -> None:
    """n1 (the only metadata voter, so the controller that serves creates) has key a, n2 key b, n3
    none. The shards n2 and n3 serve answer EncryptionKeyError naming the dataset, the node and the
    key ids, while n1's serve; a create sent to n3 is refused because n3 has no key."""
    keys = [tmp_path / "a.key", tmp_path / "b.key"]
    wanted, other = write_key_file(keys[0]), write_key_file(keys[1])
    files = [str(keys[0]), str(keys[1]), ""]

    def prefix(index: int) -> list[str]:   # each node its own key file (an env var of its own)
        return ["env", f"SHOAL_ENCRYPTION_KEY_FILE={files[index]}"]

    cluster = local_cluster(3, voters=1, env=ENV, command_prefix=prefix)
    with cluster.client(timeout_s=10) as client:
        assert client.create_dataset("secret", shards=3, replication=1, encrypted=True).encryption_key_id == wanted
        on = {cluster.primary_of("secret", key): key for key in (f"k{i}" for i in range(32))}
        assert set(on) == {"n1", "n2", "n3"}, on
        client.put("secret", on["n1"], "sealed with a")
        assert client.get("secret", on["n1"]) == "sealed with a"
        refusal = "node {} cannot serve encrypted dataset secret: it needs encryption key {}, the node has {}"
        with pytest.raises(EncryptionKeyError, match=refusal.format("n2", wanted, f"key {other}")):
            client.put("secret", on["n2"], "x")
        with pytest.raises(EncryptionKeyError, match=refusal.format("n3", wanted, "no encryption key")):
            client.get("secret", on["n3"])
    with grpc.insecure_channel(cluster.node("n3").address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            data_pb2_grpc.DataStub(channel).CreateDataset(
                data_pb2.CreateDatasetRequest(name="again", shards=1, encrypted=True), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot create encrypted dataset again: node n3 has no encryption key" in str(refused.value.details())
