"""Issue 16 point 5 against real nodes: `shoal status` when the first seed is the dead node, and
unavailable shards shown apart from under-replicated ones.

Method: a 3-node LocalCluster, a dataset with replication 1 (so a dead node's shards have no
copy left) and one with replication 2; kill n1 (the first seed) and poll `shoal status --json`
through the typer app in-process until the map says n1 is not alive.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shoal.client.cli import app
from shoal.client.local import LocalCluster

ClusterFactory = Callable[..., LocalCluster]
DEADLINE_S = 60.0


def test_issue16_status_with_dead_first_seed_shows_unavailable_shards(
        local_cluster: ClusterFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After kill -9 of n1: `--cluster n1,n2,n3 status` still answers, and so does a plain `status`
    next to the cluster's shoal-data/cluster.json; n1's replication-1 shards are "unavailable" with
    0 copies left, the replication-2 shards it held are "under-replicated" with 1 left."""
    cluster = local_cluster(3)
    with cluster.client() as client:
        client.create_dataset("single", shards=6, replication=1)
        client.create_dataset("double", shards=6, replication=2)
    owned = sum(1 for shard in next(d for d in cluster.cluster_map().datasets if d.name == "single").shard_map
                if "n1" in shard.replicas)
    assert owned > 0
    cluster.kill("n1")
    runner = CliRunner(env={"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "COLUMNS": "200"})
    seeds = ",".join(cluster.addresses)          # n1 first
    deadline_s = time.monotonic() + DEADLINE_S
    while True:
        result = runner.invoke(app, ["status", "--json", "--cluster", seeds, "--timeout", "5"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        n1 = next(node for node in report["nodes"] if node["id"] == "n1")
        if n1["state"] != "alive" or time.monotonic() > deadline_s:
            break
        time.sleep(0.2)     # polling the controller's failure detection, bounded by DEADLINE_S
    assert n1["state"] != "alive", report
    unavailable = [e for e in report["degraded_shards"] if e["state"] == "unavailable"]
    assert report["unavailable"] == len(unavailable) == owned
    assert all(e["dataset"] == "single" and e["copies_left"] == 0 for e in unavailable)
    for entry in report["degraded_shards"]:
        if entry["dataset"] == "double":
            assert entry["state"] == "under-replicated" and entry["copies_left"] == 1
    (tmp_path / "here").mkdir()
    os.symlink(cluster.data_dir, tmp_path / "here" / "shoal-data")
    monkeypatch.chdir(tmp_path / "here")
    table = runner.invoke(app, ["status", "--timeout", "5"])
    assert table.exit_code == 0, table.output
    assert "unavailable shards: " + str(owned) in table.stdout
    assert "shards below their replication" in table.stdout


def test_a_silent_node_is_suspect_before_it_is_declared_dead(tmp_path: Path) -> None:
    """SIGSTOP of a node that is not the controller: once the controller has not heard it for
    node_suspect_after_s, `shoal status` shows it suspect (its state in the metadata still
    alive: only dead goes through Raft); resumed, it is heard again and no longer suspect.
    The dead timeout is long here, so the verdict does not depend on catching a short window."""
    from test_cluster_replication import FAST, wait_for
    env = {**FAST, "SHOAL_NODE_DEAD_AFTER_S": "60"}
    runner = CliRunner(env={"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "COLUMNS": "200"})
    with LocalCluster(tmp_path / "c", nodes=3, env=env) as cluster, cluster.client(timeout_s=10) as client:
        victim = sorted(n.id for n in cluster.nodes if n.id != client.status()["controller"])[0]

        def entry() -> dict[str, object]:
            return next(n for n in client.status()["nodes"] if n["id"] == victim)
        assert entry()["suspect"] is False
        cluster.pause(victim)
        try:
            wait_for(lambda: entry()["suspect"] is True, cluster, f"{victim} suspect", timeout_s=DEADLINE_S)
            seen = entry()
            assert seen["state"] == "alive" and float(seen["silent_s"]) > 1.0, seen   # type: ignore[arg-type]
            table = runner.invoke(app, ["--cluster", ",".join(cluster.addresses), "status"])
            assert f"suspect (silent" in table.output, table.output
        finally:
            cluster.resume(victim)
        wait_for(lambda: entry()["suspect"] is False, cluster, f"{victim} heard again", timeout_s=DEADLINE_S)
        assert entry()["state"] == "alive"
