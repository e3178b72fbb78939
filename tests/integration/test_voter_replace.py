"""Issue 18 point 4: a metadata voter that died for good is replaced, and the Raft group keeps
its quorum (real node processes, real pysyncobj membership changes).

Waits poll a condition with a deadline and dump the logs.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess

import pytest

from shoal.client import Client, InvalidArgumentError
from shoal.client.local import LocalCluster
from shoal.client.local.layout import node_argv, node_handle
from shoal.client.local.processes import spawn
from test_cluster_replication import FAST, wait_for


def node_state(client: Client, node_id: str) -> str:
    return next((str(n["state"]) for n in client.status()["nodes"] if n["id"] == node_id), "")


def start_replacement(cluster: LocalCluster, survivors: list[str]) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start voter n5 (index 4 of the port block, which a 3-node cluster leaves free) with the
    surviving voters as its peers, as an operator would after `shoal node replace`."""
    handle = node_handle(cluster.data_dir, cluster.base_port, 5, 4, "127.0.0.1", "")
    peers = [cluster.node(node_id) for node_id in survivors] + [handle]
    env = {**os.environ, **FAST, "SHOAL_RAFT_PASSWORD_FILE": str(cluster.password_file), "PYTHONUNBUFFERED": "1"}
    return spawn(handle, node_argv(handle, peers, None), env), handle.raft_address, str(handle.log_path)


def test_a_dead_voter_is_replaced_and_the_group_survives_losing_another(tmp_path: pathlib.Path) -> None:
    """kill -9 of a voter for good; `remove_node(..., replacement_raft=...)` swaps its Raft
    address for a new voter's; the new voter starts on an empty dir, catches up and registers.
    Then a second original voter dies: with the replacement the group still has 2 of 3 and
    commits metadata (a dataset is created), which 3 voters with 2 dead could not."""
    with LocalCluster(tmp_path / "c", nodes=3, env=FAST) as cluster, cluster.client(timeout_s=20) as client:
        client.create_dataset("kv", shards=2, replication=2)
        client.put_many("kv", ((f"k{i}", i) for i in range(200)))
        controller = str(client.status()["controller"])
        victim, other = sorted(n.id for n in cluster.nodes if n.id != controller)
        old_raft = cluster.node(victim).raft_address
        with pytest.raises(InvalidArgumentError, match="is alive"):
            client.remove_node(victim, replacement_raft="127.0.0.1:1")
        cluster.kill(victim)
        wait_for(lambda: node_state(client, victim) == "dead", cluster, f"{victim} declared dead")
        with pytest.raises(InvalidArgumentError, match="metadata voter"):
            client.remove_node(victim)            # a voter leaves only with a replacement
        with pytest.raises(InvalidArgumentError, match=f"is node {other}'s gRPC address"):
            client.remove_node(victim, replacement_raft=cluster.node(other).address)   # taken: no voter could bind it
        new_node, new_raft, new_log = None, "", ""
        try:
            new_node, new_raft, new_log = start_replacement(cluster, [controller, other])
            result = client.remove_node(victim, replacement_raft=new_raft)
            assert new_raft in result["voters"] and old_raft not in result["voters"], result
            assert len(result["voters"]) == 3
            assert client.remove_node(victim, replacement_raft=new_raft)["voters"] == result["voters"]  # idempotent
            wait_for(lambda: node_state(client, "n5") == "alive", cluster,
                     f"the new voter registered (its log: {new_log})", timeout_s=60)
            assert node_state(client, victim) == "removed"
            cluster.kill(other)
            client.create_dataset("after", shards=1, replication=1)   # a Raft commit by n5 and the controller
            assert client.get("kv", "k7") == 7
            assert {d.name for d in client.list_datasets()} == {"kv", "after"}
        finally:
            if new_node is not None:
                os.killpg(new_node.pid, signal.SIGKILL)
                new_node.wait(timeout=30)


def test_a_removed_node_never_comes_back(tmp_path: pathlib.Path) -> None:
    """Data-only n4 dies and is removed; restarted on its data dir it is refused with one clear
    line and exits, and the cluster still names it removed. Unknown nodes, voters without a
    replacement and bad Raft addresses are one clear error each."""
    with LocalCluster(tmp_path / "c", nodes=4, env=FAST) as cluster, cluster.client(timeout_s=20) as client:
        with pytest.raises(InvalidArgumentError, match="unknown node 'n9'"):
            client.remove_node("n9")
        with pytest.raises(InvalidArgumentError, match="raft address"):
            client.remove_node("n1", replacement_raft="no-port")
        with pytest.raises(InvalidArgumentError, match="not a metadata voter"):
            client.remove_node("n4", replacement_raft="127.0.0.1:1")
        cluster.kill("n4")
        wait_for(lambda: node_state(client, "n4") == "dead", cluster, "n4 declared dead")
        assert client.remove_node("n4") == {"voters": sorted(n.raft_address for n in cluster.nodes if n.voter),
                                            "lost_shards": []}
        cluster.start_node("n4")
        wait_for(lambda: not cluster.is_running("n4"), cluster, "n4 refused and exited", timeout_s=30)
        assert "was removed from the cluster" in cluster.log_tail("n4", 50)
        assert node_state(client, "n4") == "removed"
