"""Issue 15 parts 1 and 2: a node knows its cluster, its data and which dataset it holds.

Real 3-node clusters (processes on loopback), kill -9, wiped and restored data dirs,
a second cluster on the same addresses, and a dataset dropped and re-created under one
name while a node is away.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from typing import Callable

import pytest

from shoal.client import Client, JobFailedError, UnavailableError
from shoal.client.local import LocalCluster
from shoal.client.wire.routing import encode_key, shard_for_key
from test_cluster_replication import wait_for as wait_for_30s


def wait_for(condition: Callable[[], bool], cluster: LocalCluster, what: str) -> None:
    """test_cluster_replication.wait_for with room for a restart of a node on a busy machine."""
    wait_for_30s(condition, cluster, what, timeout_s=45)


# Fast detection, but a dead timeout long enough to restart a node before it is declared dead.
ENV = {"SHOAL_HEARTBEAT_INTERVAL_S": "0.2", "SHOAL_LEASE_S": "1.0", "SHOAL_NODE_SUSPECT_AFTER_S": "1.0",
       "SHOAL_NODE_DEAD_AFTER_S": "12", "SHOAL_REPLICATE_TIMEOUT_S": "1.0"}


def wipe(data_dir: pathlib.Path) -> None:
    """Delete everything in a node's data dir but its log (what an operator's `rm -rf` leaves)."""
    for path in data_dir.iterdir():
        if path.name != "node.log":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def values(client: Client, dataset: str, keys: list[str]) -> dict[str, object]:
    return {key: client.get(dataset, key) for key in keys}


def in_sync(cluster: LocalCluster, dataset: str, index: int = 0) -> tuple[str, ...]:
    shard = {d.name: d for d in cluster.cluster_map().datasets}[dataset].shard_map[index]
    return tuple(shard.replicas)


def test_issue15_wiped_primary_never_wins_over_full_backups(local_cluster: Callable[..., LocalCluster]) -> None:
    """Example A: 1 shard, R=3, 3 keys, full restart; kill -9 the primary, wipe its data dir, start it
    within node_dead_after_s. The data stays; the wiped replica is not in sync (it is new): it leaves
    the in-sync set, and repair (issue 18) refills it from a full copy before it is in sync again."""
    cluster = local_cluster(3, env=ENV)
    keys = [f"k{i}" for i in range(3)]
    with cluster.client() as client:
        client.create_dataset("ds", shards=1, replication=3)
        for i, key in enumerate(keys):
            client.put("ds", key, {"i": i})
    cluster.stop()
    cluster.start()
    primary = cluster.primary_of("ds", 0)
    cluster.kill(primary)
    wipe(cluster.node(primary).data_dir)
    cluster.start_node(primary)
    cluster.wait_ready()
    with cluster.client() as client:
        wait_for(lambda: values(client, "ds", keys) == {k: {"i": i} for i, k in enumerate(keys)}, cluster,
                 "every acknowledged key readable after the wiped primary returned")
        wait_for(lambda: len(in_sync(cluster, "ds")) == 3, cluster, "the wiped replica refilled and in sync again")
        client.put("ds", "after", 1)
        assert client.get("ds", "after") == 1
    # the learner logs its join once its own metadata shows it, a moment after the map does
    wait_for(lambda: "learner joined the in-sync set" in cluster.log_tail(primary, 400), cluster,
             "the wiped node's learner logged its join")
    log = cluster.log_tail(primary, 400)
    assert "is not the one the metadata records" in log     # it left the in-sync set as new first
    assert "learner starts a copy" in log


def test_wiped_sole_replica_leaves_its_shard_unavailable_not_empty(local_cluster: Callable[..., LocalCluster]) -> None:
    """Variant with replication 1 (found by hand): the wiped node's new, empty replica used to replace
    the recorded one and serve (a count of 1027 of 2000 records) while status said all was well.
    Now the shard has no copy: status counts it unavailable, and a read and a job say so."""
    cluster = local_cluster(3, env=ENV)
    with cluster.client() as client:
        client.create_dataset("one", shards=2, replication=1)
        client.put_many("one", ((f"k{i}", i) for i in range(200)))
        controller = client.status()["controller"]
        shard = next(s for s in client.cluster_map().datasets[0].shard_map if s.primary != controller)
    cluster.kill(shard.primary)
    wipe(cluster.node(shard.primary).data_dir)
    cluster.start_node(shard.primary)
    cluster.wait_ready()
    with cluster.client(timeout_s=3) as client:
        wait_for(lambda: client.status()["unavailable"] == 1, cluster, "the wiped shard counted unavailable")
        degraded = client.status()["degraded_shards"]
        assert [(d["dataset"], d["shard"], d["replicas"]) for d in degraded] == [("one", shard.index, [])]
        key = next(f"k{i}" for i in range(200) if shard_for_key(encode_key(f"k{i}"), 2) == shard.index)
        with pytest.raises(UnavailableError, match=rf"shard one/{shard.index} has no in-sync replica on an alive "
                                                   r"node \(replicas: none\)"):
            client.get("one", key)
        with pytest.raises(JobFailedError, match=rf"shard {shard.index} of dataset one has no in-sync replica"):
            client.query("one").count()
    assert "lost its only copy" in cluster.log_tail(shard.primary, 400)


def test_issue15_restored_old_copy_steps_down_for_backups_ahead(local_cluster: Callable[..., LocalCluster]) -> None:
    """Variant: the primary's data dir is replaced by an older copy of itself (same incarnation, behind).
    It must not fence out the backups that are ahead: it steps down and every key stays readable."""
    cluster = local_cluster(3, env=ENV)
    with cluster.client() as client:
        client.create_dataset("ds", shards=1, replication=3)
        client.put("ds", "old", 1)
    primary = cluster.primary_of("ds", 0)
    saved = cluster.data_dir.parent / "saved-copy"
    cluster.stop()
    shutil.copytree(cluster.node(primary).data_dir / "shards", saved)
    cluster.start()
    with cluster.client() as client:
        for i in range(5):
            client.put("ds", f"new{i}", i)
    assert cluster.primary_of("ds", 0) == primary   # graceful restarts move no primary
    cluster.stop()   # a full restart: every recent-entry ring is empty afterwards
    shutil.rmtree(cluster.node(primary).data_dir / "shards")
    shutil.copytree(saved, cluster.node(primary).data_dir / "shards")
    cluster.start()
    with cluster.client() as client:
        expected = {"old": 1, **{f"new{i}": i for i in range(5)}}
        wait_for(lambda: values(client, "ds", list(expected)) == expected, cluster,
                 "every key readable after the primary came back with an old copy")
    shutil.rmtree(saved)


def test_issue15_wiped_primary_after_more_writes_than_the_ring_holds(
        local_cluster: Callable[..., LocalCluster]) -> None:
    """Variant without a full restart: more writes than the backups' recent-entry rings hold
    (ring shrunk to 8 entries by config), then the primary is killed, wiped and restarted."""
    cluster = local_cluster(3, env={**ENV, "SHOAL_ENTRY_RING_ENTRIES_MAX": "8"})
    with cluster.client() as client:
        client.create_dataset("ds", shards=1, replication=3)
        for i in range(40):
            client.put("ds", f"k{i}", i)   # one entry each: far more than the rings keep
    primary = cluster.primary_of("ds", 0)
    cluster.kill(primary)
    wipe(cluster.node(primary).data_dir)
    cluster.start_node(primary)
    cluster.wait_ready()
    with cluster.client() as client:
        wait_for(lambda: values(client, "ds", [f"k{i}" for i in range(40)]) == {f"k{i}": i for i in range(40)},
                 cluster, "all 40 keys readable")
        assert sum(1 for _ in client.scan("ds")) == 40


def test_issue15_data_dir_of_another_node_refuses_to_start(tmp_path: pathlib.Path) -> None:
    """A data dir records its node: starting another node id on it is one clear line and exit 1."""
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "identity.json").write_text('{"node_id": "n1", "cluster_id": "abc"}')
    result = subprocess.run([sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", "n2",
                             "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: data dir") and "belongs to node 'n1'" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_issue15_data_only_node_never_obeys_a_new_cluster_on_the_same_addresses(
        local_cluster: Callable[..., LocalCluster], tmp_path: pathlib.Path) -> None:
    """Example B: a data-only node of cluster A keeps running while A stops and cluster B starts on
    the same addresses and passes A's metadata version. The node takes nothing from B, keeps A's
    shards, and serves them again when A comes back."""
    a = local_cluster(4, voters=3, env=ENV)
    data_only = next(node.id for node in a.nodes if not node.voter)
    records = {f"r{i}": {"i": i} for i in range(40)}
    with a.client() as client:
        client.create_dataset("ds", shards=4, replication=2)
        client.put_many("ds", records.items())
        cluster_a = client.cluster_map().cluster_id
        version_a = client.cluster_map().version
        held_before = sum(s.records for s in client.node_status(a.node(data_only).address).shards)
    assert cluster_a and held_before > 0
    for node in a.nodes:
        if node.voter:
            a.terminate(node.id)
    b = local_cluster(3, base_port=a.base_port, env=ENV, data_dir=tmp_path / "cluster-b")
    with b.client() as client:
        while client.cluster_map().version <= version_a + 4:
            client.create_dataset("filler", shards=1, replication=1)
            client.drop_dataset("filler")
        assert client.cluster_map().cluster_id != cluster_a
    with Client(a.node(data_only).address) as direct:
        status = direct.node_status(a.node(data_only).address)
        assert status.cluster_id == cluster_a
        assert sum(s.records for s in status.shards) == held_before
    b.stop()
    a.start_missing()
    with a.client() as client:
        wait_for(lambda: dict(client.scan("ds")) == records, a, "cluster A serves all 40 records again")
    assert "refusing a message of cluster" in a.log_tail(data_only, 400) or \
        "refusing a message of cluster" in b.dump_logs(400)


def test_issue15_dropped_dataset_stays_dropped(local_cluster: Callable[..., LocalCluster]) -> None:
    """Part 2 example: 6 shards R=3, 30 records; SIGTERM one node, drop the dataset, bring the node
    back, re-create the name: the new dataset is fully replicated and empty, nothing crashed."""
    cluster = local_cluster(3, env=ENV)
    with cluster.client() as client:
        client.create_dataset("ds", shards=6, replication=3)
        client.put_many("ds", ((f"k{i}", i) for i in range(30)))
        away = cluster.nodes[2].id
        cluster.terminate(away)
        client.drop_dataset("ds")
        cluster.start_node(away)
        cluster.wait_ready()
        client.create_dataset("ds", shards=6, replication=3)
        wait_for(lambda: client.status()["under_replicated"] == 0 and all(
            len(in_sync(cluster, "ds", i)) == 3 for i in range(6)), cluster, "the new dataset fully replicated")
        assert list(client.scan("ds")) == []
        client.put("ds", "fresh", 1)
        assert client.get("ds", "fresh") == 1 and client.get("ds", "k1") is None
    assert "activation crashed" not in cluster.dump_logs(400)


def test_issue15_dataset_recreated_while_a_node_is_away(local_cluster: Callable[..., LocalCluster]) -> None:
    """Variant: the dataset is dropped AND re-created while the node is down. Its old shards must not
    leak into the new dataset: they are removed (the new id is another dataset) and it is re-filled."""
    cluster = local_cluster(3, env=ENV)
    away = cluster.nodes[1].id
    with cluster.client() as client:
        client.create_dataset("ds", shards=2, replication=2)
        client.put_many("ds", ((f"old{i}", i) for i in range(20)))
        cluster.terminate(away)
        client.drop_dataset("ds")
        client.create_dataset("ds", shards=2, replication=2)
        client.put("ds", "new", 1)
        cluster.start_node(away)
        cluster.wait_ready()
        wait_for(lambda: not [p for p in (cluster.node(away).data_dir / "shards").iterdir()
                              if p.name.startswith("ds@") and p.name.split("@")[1].split("-")[0]
                              not in {d.id.split("@")[1] for d in client.cluster_map().datasets if d.name == "ds"}],
                 cluster, "the old dataset's shards removed from the returning node")
        assert dict(client.scan("ds")) == {"new": 1}
