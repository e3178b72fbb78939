"""Issue 18: the cluster restores the replication factor by itself (real node processes).

A learner is added on another node, fills itself from the primary (a snapshot of the shard's
LMDB environment streamed by byte offset, then the entries written after its seq) and joins the in-sync set; writes go on during the copy
and none acknowledged is lost. Waits poll a condition with a deadline and dump the logs.
"""
from __future__ import annotations

import pathlib
import threading
from typing import Any

import pytest

from shoal.chaos.workloads import key_on_shard
from shoal.client import Client, ShoalError
from shoal.client.local import LocalCluster
from test_cluster_replication import FAST, Writer, converged, wait_for

REPAIR = {**FAST, "SHOAL_REPAIR_BYTES_PER_S": "0"}


def in_sync_on_running(cluster: LocalCluster, client: Client, dataset: str) -> dict[int, list[str]]:
    shard_map = {d.name: d for d in client.cluster_map().datasets}[dataset].shard_map
    return {shard.index: [n for n in shard.replicas if cluster.is_running(n)] for shard in shard_map}


def restored(cluster: LocalCluster, client: Client, dataset: str, replication: int) -> bool:
    return all(len(nodes) == replication for nodes in in_sync_on_running(cluster, client, dataset).values())


def holders(client: Client, dataset: str) -> set[str]:
    shard_map = {d.name: d for d in client.cluster_map().datasets}[dataset].shard_map
    return {node for shard in shard_map for node in shard.replicas}


def load(client: Client, shards: int, records: int) -> None:
    """Dataset "kv" (R=3) with `records` records k000000.. that check_every_write knows."""
    client.create_dataset("kv", shards=shards, replication=3)
    client.put_many("kv", ((f"k{i:06d}", {"i": i, "pad": "p" * 64}) for i in range(records)))


def a_holder_but_the_controller(client: Client) -> str:
    """A node holding replicas of "kv" that is not the controller (killing it leaves the controller be)."""
    return sorted(holders(client, "kv") - {str(client.status()["controller"])})[0]


def check_every_write(client: Client, dataset: str, acked: dict[str, Any], loaded: int) -> None:
    for key, value in acked.items():
        assert client.get(dataset, key) == value, key
    for i in range(0, loaded, 97):
        assert client.get(dataset, f"k{i:06d}") == {"i": i, "pad": "p" * 64}


@pytest.mark.slow   # CI budget: the chaos scenario repair-kill-node (CI smoke set) checks the same, with T
def test_replicas_of_a_killed_node_are_rebuilt_on_another_during_writes(tmp_path: pathlib.Path) -> None:
    """4 nodes, R=3: kill -9 of a replica holder that is not the controller; every shard gets
    back to three in-sync replicas on running nodes with equal checksums, and every write
    acknowledged before, during and after the repair is readable."""
    loaded = 30_000
    with LocalCluster(tmp_path / "c", nodes=4, env=REPAIR) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 4, loaded)
        victim = a_holder_but_the_controller(client)
        writer = Writer(client, "kv")
        writer.start()
        try:
            wait_for(lambda: len(writer.acked) > 50, cluster, "first writes")
            cluster.kill(victim)
            wait_for(lambda: restored(cluster, client, "kv", 3), cluster, "3 in-sync replicas per shard again",
                     timeout_s=90)
            acked_at_repair = len(writer.acked)
            wait_for(lambda: len(writer.acked) > acked_at_repair + 50, cluster, "writes after the repair")
        finally:
            writer.stop()
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
        check_every_write(client, "kv", writer.acked, loaded)
        log = "".join(cluster.log_tail(n.id, 400) for n in cluster.nodes if cluster.is_running(n.id))
        assert "learner joined the in-sync set" in log
        cluster.start_node(victim)     # back after its copies were rebuilt: its stale ones go

        def no_stale_copy() -> bool:
            roles = [s.role for s in client.node_status(cluster.node(victim).address).shards if s.dataset == "kv"]
            return "stale" not in roles
        wait_for(no_stale_copy, cluster, f"{victim} holding no stale copy")
        assert "a stale copy, and the shard has its" in cluster.log_tail(victim, 400)


def test_a_node_restarted_after_being_fenced_out_is_refilled(tmp_path: pathlib.Path) -> None:
    """3 nodes, R=3: a node holding replicas (a backup, or a primary, then replaced after the dead
    timeout) is killed, writes fence it out, it restarts: it becomes a learner, catches up (by replay
    when its last entry is in the primary's history, else by a copy) and joins; the shard has 3 equal
    replicas again."""
    with LocalCluster(tmp_path / "c", nodes=3, env=REPAIR) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 2, 5_000)
        victim = a_holder_but_the_controller(client)
        cluster.kill(victim)
        acked = {}
        for i in range(300):
            client.put("kv", f"after{i}", i)
            acked[f"after{i}"] = i
        wait_for(lambda: all(victim not in nodes for nodes in in_sync_on_running(cluster, client, "kv").values()),
                 cluster, f"{victim} fenced out of every shard")
        cluster.start_node(victim)
        wait_for(lambda: restored(cluster, client, "kv", 3), cluster, f"{victim} back in sync", timeout_s=60)
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
        check_every_write(client, "kv", acked, 5_000)


# A dead timeout far above a restart (seconds): the backup is back while the cluster still counts it.
WITHIN_DEAD_TIMEOUT = {**REPAIR, "SHOAL_NODE_DEAD_AFTER_S": "60"}
CATCH_UP_LINE = "kv/0: learner catches up from seq"
COPY_LINE = "kv/0: learner starts a copy"


def a_backup_but_the_controller(client: Client) -> str:
    """A backup of "kv"/0 that is neither its primary nor the controller (killing it stalls no write)."""
    shard = {d.name: d for d in client.cluster_map().datasets}["kv"].shard_map[0]
    return sorted(set(shard.replicas) - {shard.primary, str(client.status()["controller"])})[0]


def restart_a_backup_after_writes(cluster: LocalCluster, client: Client, writes: int) -> tuple[str, str, dict[str, int]]:
    """Kill -9 a backup, write `writes` acknowledged records (the first fences it out), restart it
    while it is not declared dead; returns (the backup, its replica's incarnation before, the writes)."""
    victim = a_backup_but_the_controller(client)
    before = {s.index: s.incarnation for s in client.node_status(cluster.node(victim).address).shards}[0]
    cluster.kill(victim)
    acked = {}
    for i in range(writes):
        client.put("kv", f"after{i}", i)
        acked[f"after{i}"] = i
    wait_for(lambda: victim not in holders(client, "kv"), cluster, f"{victim} fenced out")   # before the first ack
    assert {n["id"]: n["state"] for n in client.status()["nodes"]}[victim] != "dead"
    cluster.start_node(victim)
    wait_for(lambda: restored(cluster, client, "kv", 3), cluster, f"{victim} back in sync", timeout_s=90)
    wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
    return victim, before, acked


def test_a_backup_restarted_within_the_dead_timeout_catches_up_by_replay(tmp_path: pathlib.Path) -> None:
    """Issue 18.1: 3 nodes, R=3, one shard. kill -9 a backup (not the controller), write 300 acknowledged
    records (fewer than the primary's ring holds: 4,096 entries), restart it before it is declared
    dead: it is the learner (it reports its old replica), and since the primary's ring holds its last
    entry, with the same epoch, and every one after, it replays them instead of copying: its log says
    "catches up ... by replay" and never "starts a copy", its replica keeps its incarnation (a copy makes
    a new one), checksums are equal and every acknowledged write is readable."""
    with LocalCluster(tmp_path / "c", nodes=3, env=WITHIN_DEAD_TIMEOUT) as cluster, \
            cluster.client(timeout_s=15) as client:
        load(client, 1, 5_000)
        victim, before, acked = restart_a_backup_after_writes(cluster, client, 300)
        log = cluster.log_tail(victim, 2000).split("local cluster starts")[-1]
        assert CATCH_UP_LINE in log and "by replay (no copy)" in log, log[-3000:]
        assert COPY_LINE not in log, log[-3000:]
        assert "kv/0: learner joined the in-sync set" in log, log[-3000:]
        after = {s.index: s.incarnation for s in client.node_status(cluster.node(victim).address).shards}[0]
        assert after == before
        check_every_write(client, "kv", acked, 5_000)


def test_a_backup_that_missed_more_than_the_ring_holds_is_copied(tmp_path: pathlib.Path) -> None:
    """Variant: the primary's ring holds 50 entries (SHOAL_ENTRY_RING_ENTRIES_MAX) and 300 are written
    while the backup is down: its last entry is gone from the ring, so it cannot catch up by replay; it
    starts a copy from an empty replica (a new incarnation), joins, and the result is still correct."""
    env = {**WITHIN_DEAD_TIMEOUT, "SHOAL_ENTRY_RING_ENTRIES_MAX": "50"}
    with LocalCluster(tmp_path / "c", nodes=3, env=env) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 1, 5_000)
        victim, before, acked = restart_a_backup_after_writes(cluster, client, 300)
        log = cluster.log_tail(victim, 2000).split("local cluster starts")[-1]
        assert COPY_LINE in log and "cannot catch up by replay: the primary's recent entries no longer reach" in log, \
            log[-3000:]
        assert CATCH_UP_LINE not in log, log[-3000:]
        after = {s.index: s.incarnation for s in client.node_status(cluster.node(victim).address).shards}[0]
        assert after != before
        check_every_write(client, "kv", acked, 5_000)


@pytest.mark.slow   # ~20 s; in CI the chaos scenario repair-kill-learner checks the resume (copy_resumed)
def test_a_copy_shows_progress_and_resumes_after_the_learner_is_killed(tmp_path: pathlib.Path) -> None:
    """A throttled copy (about 8 s): `status` shows it under way with a percentage; kill -9 of
    the learner mid-copy and a restart: the copy continues at the bytes of the snapshot it holds
    (the node logs no second "starts a copy" for the shard, and receives one snapshot only: the
    primary still held it and sent the rest from there) and the shard gets its 3 copies."""
    slow = {**FAST, "SHOAL_REPAIR_BYTES_PER_S": "400000", "SHOAL_SCAN_CHUNK_BYTES_MAX": "65536"}
    with LocalCluster(tmp_path / "c", nodes=4, env=slow) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 1, 36_000)
        victim = a_holder_but_the_controller(client)
        cluster.kill(victim)
        progress: list[dict[str, Any]] = []

        def copying() -> bool:
            entries = [r for e in client.status()["degraded_shards"] for r in e.get("repair", [])]
            progress[:] = [r for r in entries if r["phase"] == "copying" and (r["percent"] or 0) > 5]
            return bool(progress)
        wait_for(copying, cluster, "a copy under way in status", timeout_s=60)
        learner = progress[0]["node"]
        assert 5 < progress[0]["percent"] < 100 and progress[0]["bytes_per_s"] > 0
        cluster.kill(learner)
        cluster.start_node(learner)
        wait_for(lambda: restored(cluster, client, "kv", 3), cluster, "3 in-sync replicas again", timeout_s=90)
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
        assert learner in in_sync_on_running(cluster, client, "kv")[0]
        log = cluster.log_tail(learner, 2000)
        assert log.count("learner starts a copy") == 1, log[-3000:]
        assert "learner resumes its copy from" in log.split("local cluster starts")[-1], log[-3000:]
        assert log.count("learner receives snapshot") == 1, log[-3000:]
        check_every_write(client, "kv", {}, 36_000)


def test_drain_moves_every_replica_off_a_node_during_writes(tmp_path: pathlib.Path) -> None:
    """`shoal node drain ID` on a node holding primaries, with writes running: it ends "safe to
    remove" holding nothing, every shard has 3 equal in-sync replicas on the other nodes, and
    every acknowledged write is readable."""
    import os
    import subprocess
    import sys
    with LocalCluster(tmp_path / "c", nodes=4, env=REPAIR) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 4, 8_000)
        controller = str(client.status()["controller"])
        shard_map = {d.name: d for d in client.cluster_map().datasets}["kv"].shard_map
        primaries = {s.primary for s in shard_map} - {controller}
        leaving = sorted(primaries)[0] if primaries else sorted(holders(client, "kv") - {controller})[0]
        writer = Writer(client, "kv")
        writer.start()
        try:
            wait_for(lambda: len(writer.acked) > 50, cluster, "first writes")
            drained = subprocess.run(
                [sys.executable, "-m", "shoal.client.cli", "--cluster", ",".join(cluster.addresses),
                 "node", "drain", leaving, "--wait-timeout", "90"],
                capture_output=True, text=True, timeout=120, env={**os.environ})
            assert drained.returncode == 0, drained.stdout + drained.stderr + cluster.dump_logs()
            assert f"node {leaving} holds no replicas: safe to remove" in drained.stdout
            acked_after = len(writer.acked)
            wait_for(lambda: len(writer.acked) > acked_after + 50, cluster, "writes after the drain")
        finally:
            writer.stop()
        assert leaving not in holders(client, "kv")
        assert restored(cluster, client, "kv", 3)
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
        check_every_write(client, "kv", writer.acked, 8_000)


@pytest.mark.slow   # CI budget: the chaos scenario repair-join-during-load (CI smoke set) checks the same, under load
def test_a_node_that_joins_gets_shards_until_load_is_even(tmp_path: pathlib.Path) -> None:
    """A dataset made while n4 was down holds nothing on it; once n4 is back, shards move to it
    one at a time (copy, join, then the busiest node's extra copy leaves) until the nodes hold
    numbers of replicas that differ by less than 2; every shard keeps 3 equal replicas."""
    with LocalCluster(tmp_path / "c", nodes=4, env=REPAIR) as cluster, cluster.client(timeout_s=15) as client:
        cluster.terminate("n4")
        wait_for(lambda: any(n["id"] == "n4" and n["state"] == "dead" for n in client.status()["nodes"]),
                 cluster, "n4 declared dead")
        load(client, 4, 6_000)
        assert "n4" not in holders(client, "kv")
        cluster.start_node("n4")

        def even() -> bool:
            shard_map = {d.name: d for d in client.cluster_map().datasets}["kv"].shard_map
            loads = {node.id: 0 for node in cluster.nodes}
            for shard in shard_map:
                if shard.learners or len(shard.replicas) != 3:
                    return False
                for node in shard.replicas:
                    loads[node] += 1
            return max(loads.values()) - min(loads.values()) < 2
        wait_for(even, cluster, "replicas spread evenly over the 4 nodes", timeout_s=90)
        assert "n4" in holders(client, "kv")
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
        check_every_write(client, "kv", {}, 6_000)


def test_a_corrupted_replica_is_found_taken_out_and_rebuilt(tmp_path: pathlib.Path) -> None:
    """Flip a bit of a value in a running backup's LMDB file: its scrubber finds the replica
    corrupt, it leaves the in-sync set and is refilled from a healthy one; the shard ends with 3
    equal replicas and clients read the value that was written."""
    mark = "scrub-" + "Q" * 40
    env = {**REPAIR, "SHOAL_SCRUB_INTERVAL_S": "1"}
    with LocalCluster(tmp_path / "c", nodes=3, env=env) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 1, 2_000)
        client.put("kv", "marked", mark)
        shard = {d.name: d for d in client.cluster_map().datasets}["kv"].shard_map[0]
        victim = shard.replicas[-1]
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "3 equal replicas before the damage")
        files = list((cluster.node(victim).data_dir / "shards").rglob("data.mdb"))
        assert len(files) == 1, files
        with open(files[0], "r+b") as damaged:    # through the page cache the node's mmap reads
            data = damaged.read()
            at = data.find(mark.encode())
            assert at >= 0
            while at >= 0:
                damaged.seek(at + 10)
                damaged.write(bytes([data[at + 10] ^ 0x01]))
                at = data.find(mark.encode(), at + 1)
        wait_for(lambda: "scrub found this replica corrupt" in cluster.log_tail(victim, 200), cluster,
                 f"the scrubber of {victim} finding the damage")
        wait_for(lambda: restored(cluster, client, "kv", 3), cluster, "3 in-sync replicas again", timeout_s=60)
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas")
        assert client.get("kv", "marked") == mark
        check_every_write(client, "kv", {}, 2_000)


def test_a_data_only_node_survives_the_death_of_the_node_it_joined_through(tmp_path: pathlib.Path) -> None:
    """n4 (data-only) joined through n1; kill -9 of n1: n4 heartbeats another voter, stays alive
    (it is never declared dead), and the shards n1 held are rebuilt, on n4 among others."""
    with LocalCluster(tmp_path / "c", nodes=4, env=REPAIR) as cluster, cluster.client(timeout_s=15) as client:
        assert not cluster.node("n4").voter
        load(client, 4, 4_000)
        cluster.kill("n1")
        wait_for(lambda: any(n["id"] == "n1" and n["state"] == "dead" for n in client.status()["nodes"]),
                 cluster, "n1 declared dead")
        wait_for(lambda: restored(cluster, client, "kv", 3), cluster, "3 in-sync replicas again", timeout_s=60)
        states = {n["id"]: n["state"] for n in client.status()["nodes"]}
        assert states["n4"] == "alive", states
        assert "n4" in holders(client, "kv")
        for i in range(20):
            client.put("kv", f"after{i}", i)
        check_every_write(client, "kv", {f"after{i}": i for i in range(20)}, 4_000)


def test_a_primary_restarted_after_an_entry_its_backup_missed_catches_the_backup_up(tmp_path: pathlib.Path) -> None:
    """Issue 18 ("a restarted primary's recent-entry ring is empty, so a backup that missed a few
    entries is fenced out instead of caught up"). 3 nodes, R=3, 3 shards; on a shard whose primary P
    and backup B are not the controller: SIGSTOP B, put a record (P applies it and waits for B's
    ack; replicate_timeout_s is long), kill -9 P while it waits, SIGCONT B, restart P before it is
    declared dead. P's ring is loaded from its store's `entries`, so it sends B the entry B missed:
    B is never fenced out and never copies (its replica keeps its incarnation), and the three
    replicas converge, the record present on all of them (P had applied it)."""
    env = {**WITHIN_DEAD_TIMEOUT, "SHOAL_REPLICATE_TIMEOUT_S": "30"}
    with LocalCluster(tmp_path / "c", nodes=3, env=env) as cluster, cluster.client(timeout_s=15) as client:
        load(client, 3, 300)
        controller = str(client.status()["controller"])
        shard = next(s for s in {d.name: d for d in client.cluster_map().datasets}["kv"].shard_map
                     if s.primary != controller)
        primary = shard.primary
        backup = sorted(set(shard.replicas) - {primary, controller})[0]

        def replica_status(node: str) -> Any:
            return next(s for s in client.node_status(cluster.node(node).address).shards if s.index == shard.index)

        seq_before, incarnation_before = replica_status(primary).seq, replica_status(backup).incarnation
        key = key_on_shard("missed-", shard.index, 3)
        cluster.pause(backup)
        with cluster.client(timeout_s=3) as writer_client:
            writer = threading.Thread(target=_put_ignoring_outcome, args=(writer_client, key), daemon=True)
            writer.start()
            wait_for(lambda: replica_status(primary).seq > seq_before, cluster, f"{primary} applying the put")
            cluster.kill(primary)
            writer.join(timeout=30)
        cluster.resume(backup)
        cluster.start_node(primary)
        cluster.wait_ready()
        wait_for(lambda: converged(cluster, "kv", 3), cluster, "equal checksums on the 3 replicas", timeout_s=60)
        log = cluster.log_tail(primary, 2000).split("local cluster starts")[-1]
        assert f"kv/{shard.index}: backup {backup} fenced out" not in log, log[-3000:]
        assert replica_status(backup).incarnation == incarnation_before
        assert replica_status(backup).seq == replica_status(primary).seq > seq_before
        assert client.get("kv", key) == "value"
        check_every_write(client, "kv", {}, 300)


def _put_ignoring_outcome(client: Client, key: str) -> None:
    try:
        client.put("kv", key, "value")
    except ShoalError:   # the primary dies while it waits for the paused backup: unknown outcome
        pass
