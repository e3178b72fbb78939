"""LocalCluster and `shoal up/down`: real node processes on loopback ports.

The first tests need no node (layout, records, refusals); the others start real 3-node
clusters on free ports and check the process side: ready, kill -9 and restart, SIGSTOP and
SIGCONT, a detached CLI cluster stopped by `shoal down`, and a restart on the same data dir.
Every started process is stopped by the `local_cluster` fixture, failed test or not.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shoal.client.local import (
    ClusterLayoutError,
    ClusterRunningError,
    LocalCluster,
    NodeHandle,
    PortInUseError,
    ensure_password_file,
    is_node_process,
    process_state,
    ports,
)
from shoal.client.local.layout import new_layout, node_handle, write_record
from shoal.client.wire.pb import data_pb2, data_pb2_grpc

ClusterFactory = Callable[..., LocalCluster]
CLI_TIMEOUT_S = 120.0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal.client.cli", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, check=False)


def recorded_pids(data_dir: Path) -> list[int]:
    """Pids in data_dir/cluster.json ([] when there is no record)."""
    path = data_dir / "cluster.json"
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    return [entry["pid"] for entry in record["nodes"] if entry["pid"]]


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (whoever its parent is)."""
    return process_state(pid) not in ("", "Z", "X")


@pytest.fixture
def listener() -> Iterator[Callable[[int], None]]:
    """listen(port): hold a loopback listener on port until the test ends."""
    sockets: list[socket.socket] = []

    def listen(port: int) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        sockets.append(sock)
    yield listen
    for sock in sockets:
        sock.close()


# ---- no node processes ----

def test_layout_assigns_ids_ports_and_voters(tmp_path: Path) -> None:
    """Node i gets gRPC base+i and, if a voter, Raft base+100+i; 4 nodes default to 3 voters."""
    cluster = LocalCluster(tmp_path / "c", nodes=4, base_port=21000)
    assert [node.id for node in cluster.nodes] == ["n1", "n2", "n3", "n4"]
    assert cluster.addresses == [f"127.0.0.1:{21000 + i}" for i in range(4)]
    assert [node.raft_address for node in cluster.nodes] == ["127.0.0.1:21100", "127.0.0.1:21101",
                                                             "127.0.0.1:21102", ""]
    n4 = cluster.node("n4")
    assert (n4.data_dir, n4.log_path, n4.index) == (tmp_path / "c" / "n4", tmp_path / "c" / "n4" / "node.log", 3)
    assert cluster.running() == [] and not (tmp_path / "c").exists()
    with pytest.raises(ClusterLayoutError):
        LocalCluster(tmp_path / "d", nodes=4, voters=5)


def test_free_base_port_finds_a_free_block(listener: Callable[[int], None]) -> None:
    """free_base_port returns a base whose gRPC and Raft ports all bind; a listener makes a port busy."""
    base = ports.free_base_port(["127.0.0.1"], 3)
    assert ports.first_port_in_use(("127.0.0.1", port) for port in ports.block_ports(base, 3)) is None
    listener(base + 101)
    assert ports.first_port_in_use(("127.0.0.1", port) for port in ports.block_ports(base, 3)) == (
        "127.0.0.1", base + 101)


def test_port_range_keeps_blocks_inside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHOAL_LOCAL_PORT_RANGE bounds every block (each pytest-xdist worker gets its own: conftest.py);
    a range too small or malformed is one OSError naming the variable."""
    monkeypatch.setenv(ports.PORT_RANGE_ENV, "23000-23300")
    for _ in range(20):
        base = ports.free_base_port(["127.0.0.1"], 3)
        assert all(23000 <= port < 23300 for port in ports.block_ports(base, 3))
    for bad in ("23000-23100", "23000", "9-8"):
        monkeypatch.setenv(ports.PORT_RANGE_ENV, bad)
        with pytest.raises(OSError, match=ports.PORT_RANGE_ENV):
            ports.free_base_port(["127.0.0.1"], 3)


def test_password_file_is_private_and_reused(tmp_path: Path) -> None:
    """The Raft password is made once with mode 0600 and read back unchanged afterwards."""
    path = tmp_path / "raft-password"
    first = ensure_password_file(path)
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_password_file(path) == first


def test_start_refuses_a_busy_port(tmp_path: Path, listener: Callable[[int], None]) -> None:
    """A listener on one of the layout's ports makes start() fail before any node is spawned."""
    base = ports.free_base_port(["127.0.0.1"], 3)
    listener(base + 102)
    cluster = LocalCluster(tmp_path / "c", base_port=base)
    with pytest.raises(PortInUseError, match=str(base + 102)):
        cluster.start(timeout_s=5)
    assert cluster.running() == []


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda r: r.pop("voters"), "'voters' missing or not a int"),
    (lambda r: r["nodes"][0].pop("host"), "nodes[0].host missing or not a string"),
    (lambda r: r["nodes"].__setitem__(0, 7), "nodes[0] is not an object"),
])
def test_a_damaged_cluster_record_is_one_error(tmp_path: Path, damage: Any, problem: str) -> None:
    """Found by hand: a cluster.json of the right format lacking a field made `shoal down` end in a
    KeyError traceback; now one ClusterLayoutError (and one CLI line) naming what is missing."""
    layout = new_layout(3, None, 23900, ["127.0.0.1"] * 3, None)
    nodes = [(node_handle(tmp_path, layout[0], layout[1], i, "127.0.0.1", ""), None) for i in range(3)]
    write_record(tmp_path, base_port=layout[0], voters=layout[1], password_file=tmp_path / "pw", env={}, nodes=nodes)
    record = json.loads((tmp_path / "cluster.json").read_text())
    damage(record)
    (tmp_path / "cluster.json").write_text(json.dumps(record))
    with pytest.raises(ClusterLayoutError, match=re.escape(problem)):
        LocalCluster(tmp_path)
    down = run_cli("down", "--data-dir", str(tmp_path))
    assert down.returncode == 1 and problem in down.stderr and "Traceback" not in down.stderr, down.stderr


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    """A non-empty dir without cluster.json is not taken over, and open() wants a record."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ClusterLayoutError, match="not empty"):
        LocalCluster(tmp_path)
    with pytest.raises(ClusterLayoutError, match="cluster.json"):
        LocalCluster.open(tmp_path / "nothing")


def test_cli_up_fails_cleanly_on_a_busy_port(tmp_path: Path, listener: Callable[[int], None]) -> None:
    """`shoal up` on a busy port prints one error line, exits 1 and starts no node."""
    base = ports.free_base_port(["127.0.0.1"], 3)
    listener(base + 1)
    result = run_cli("up", "--detach", "--data-dir", str(tmp_path / "c"), "--port", str(base))
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "in use" in errors[0]
    assert not any(pid_alive(pid) for pid in recorded_pids(tmp_path / "c"))


def test_cli_down_without_a_cluster_fails(tmp_path: Path) -> None:
    """`shoal down` on a dir without cluster.json says so in one line and exits 1."""
    result = run_cli("down", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "cluster.json" in result.stderr


# ---- real clusters ----

def test_cluster_starts_ready_and_stops_without_leftovers(local_cluster: ClusterFactory) -> None:
    """Three nodes start and become ready; cluster.json names them; stop() ends every process."""
    cluster = local_cluster(3)
    statuses = cluster.statuses()
    assert sorted(statuses) == ["n1", "n2", "n3"]
    assert all(status.id == node_id for node_id, status in statuses.items())
    assert cluster.raft_leader() in statuses
    record = json.loads((cluster.data_dir / "cluster.json").read_text())
    assert [(e["id"], e["address"], e["data_dir"]) for e in record["nodes"]] == [
        (node.id, node.address, str(node.data_dir)) for node in cluster.nodes]
    pids = [entry["pid"] for entry in record["nodes"]]
    assert all(is_node_process(pid, node.data_dir) for pid, node in zip(pids, cluster.nodes))
    exits = cluster.stop()
    assert sorted(node_exit.id for node_exit in exits) == ["n1", "n2", "n3"]
    assert not any(node_exit.forced for node_exit in exits), exits
    assert not any(pid_alive(pid) for pid in pids)
    assert recorded_pids(cluster.data_dir) == []


def wait_for_worker_temp_dir(node: NodeHandle, timeout_s: float = 60.0) -> None:
    """Poll until the node's forkserver made its pymp-* folder in the node's TMPDIR (the pool warms at start)."""
    deadline = time.monotonic() + timeout_s
    while not list(node.tmp_dir.rglob("pymp-*")):
        assert time.monotonic() < deadline, f"no pymp-* in {node.tmp_dir} after {timeout_s} s: {node.log_path}"
        time.sleep(0.1)


def test_killed_node_restarts_and_rejoins(local_cluster: ClusterFactory) -> None:
    """kill -9 of one node is reaped with code -9; start_node brings it back and the cluster is ready again.

    The killed node's temporary files (its forkserver's pymp-* folder, which it never
    removes itself when SIGKILLed) go with it: each node runs with TMPDIR = node.tmp_dir.
    """
    cluster = local_cluster(3)
    node = cluster.node("n3")
    wait_for_worker_temp_dir(node)
    node_exit = cluster.kill("n3")
    assert node_exit.returncode == -9 and not cluster.is_running("n3") and not pid_alive(node_exit.pid)
    assert not node.tmp_dir.exists()
    cluster.wait_ready(timeout_s=30)          # the other two stay ready
    cluster.start_node("n3")
    cluster.wait_ready(timeout_s=60)
    assert cluster.statuses()["n3"].id == "n3"
    graceful = cluster.terminate("n2")
    assert not graceful.forced
    cluster.restart("n2")
    cluster.wait_ready(timeout_s=60)


def test_paused_node_answers_again_after_resume(local_cluster: ClusterFactory) -> None:
    """SIGSTOP freezes a node (calls to it time out); SIGCONT brings it back to ready."""
    cluster = local_cluster(3)
    node = cluster.node("n2")
    cluster.pause("n2")
    assert cluster.is_paused("n2") and cluster.is_running("n2")
    assert process_state(cluster.pid("n2") or 0) == "T"     # pause() returns once the process is stopped
    with grpc.insecure_channel(node.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            data_pb2_grpc.DataStub(channel).GetNodeStatus(data_pb2.NodeStatusRequest(), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    cluster.resume("n2")
    assert not cluster.is_paused("n2")
    cluster.wait_ready(timeout_s=60)


def test_restart_on_same_data_dir_keeps_ids_addresses_and_password(local_cluster: ClusterFactory) -> None:
    """Reopening a stopped cluster's data dir restarts the same nodes on the same ports with the same password."""
    first = local_cluster(3)
    password = first.password_file.read_text()
    first.stop()
    with pytest.raises(ClusterLayoutError, match="another cluster"):
        LocalCluster(first.data_dir, nodes=5)
    second = local_cluster(data_dir=first.data_dir)
    assert second.nodes == first.nodes
    assert second.password_file.read_text() == password
    assert {node_id: status.address for node_id, status in second.statuses().items()} == {
        node.id: node.address for node in first.nodes}
    with pytest.raises(ClusterRunningError, match="already running"):
        LocalCluster(first.data_dir).start()
    assert second.running() == ["n1", "n2", "n3"]


def test_cli_up_detach_then_down_leaves_no_process(tmp_path: Path, local_cluster: ClusterFactory) -> None:
    """`shoal up --detach` returns with a ready cluster, a second up is refused, `shoal down` stops every node."""
    data_dir = tmp_path / "cli"
    base = ports.free_base_port(["127.0.0.1"], 3)
    try:
        result = run_cli("up", "--detach", "--data-dir", str(data_dir), "--port", str(base))
    finally:
        if (data_dir / "cluster.json").exists():
            local_cluster(data_dir=data_dir, start=False)   # adopts the nodes: stopped at teardown
    assert result.returncode == 0, result.stderr
    assert "WITHOUT TLS" in result.stderr
    assert f"export SHOAL_CLUSTER=127.0.0.1:{base},127.0.0.1:{base + 1},127.0.0.1:{base + 2}" in result.stdout
    pids = recorded_pids(data_dir)
    assert len(pids) == 3 and all(pid_alive(pid) for pid in pids)
    again = run_cli("up", "--detach", "--data-dir", str(data_dir))
    assert again.returncode == 1 and "already running" in again.stderr
    assert all(pid_alive(pid) for pid in pids)
    os.kill(pids[1], signal.SIGKILL)             # n2 dies; `up --detach` brings back just n2
    revive = run_cli("up", "--detach", "--data-dir", str(data_dir))
    assert revive.returncode == 0 and "started n2; the others were running" in revive.stdout, revive.stderr
    pids = recorded_pids(data_dir)
    assert len(pids) == 3 and all(pid_alive(pid) for pid in pids)
    down = run_cli("down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped n") == 3
    assert not any(pid_alive(pid) for pid in pids)
    leftovers = [node.tmp_dir for node in LocalCluster.open(data_dir).nodes if node.tmp_dir.exists()]
    assert leftovers == [], "shoal down left the nodes' temporary folders behind"
    for option, what in (("--tls", "TLS"), ("--auth", "authentication")):   # not silently ignored
        refused = run_cli("up", "--detach", "--data-dir", str(data_dir), option)
        assert refused.returncode == 1 and f"was made without {what}, and {option} only applies" in refused.stderr
    assert recorded_pids(data_dir) == []


def test_data_only_node_joins_with_its_zone(local_cluster: ClusterFactory) -> None:
    """With 4 nodes, n4 is a data-only node (no Raft port) that joins a voter; zones reach the map."""
    cluster = local_cluster(4, zones=["a", "b"])
    assert cluster.voters == 3 and not cluster.node("n4").voter
    assert {node_id: status.raft_role for node_id, status in cluster.statuses().items()}["n4"] == "none"
    assert sorted((info.id, info.zone, info.state) for info in cluster.cluster_map().nodes) == [
        ("n1", "a", "alive"), ("n2", "b", "alive"), ("n3", "a", "alive"), ("n4", "b", "alive")]


def test_data_only_node_serves_as_primary_and_backup(local_cluster: ClusterFactory) -> None:
    """Shards placed on the data-only n4 take writes and reads like any other (metadata and lease via heartbeats)."""
    cluster = local_cluster(4)
    with cluster.client() as client:
        client.create_dataset("spread", shards=8, replication=3)
        shard_map = client.cluster_map().datasets[0].shard_map
        assert any(shard.primary == "n4" for shard in shard_map)
        assert sum("n4" in shard.replicas for shard in shard_map) >= 4
        written = {f"k{i}": i for i in range(400)}
        assert client.put_many("spread", written.items()) == 400
        for key in ("k1", "k2", "k3"):
            client.put("spread", key, -1)
            written[key] = -1
        assert dict(client.scan("spread")) == written
        n4_shards = client.node_status(cluster.node("n4").address).shards
        assert n4_shards and all(shard.records > 0 for shard in n4_shards)
