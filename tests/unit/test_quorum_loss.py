"""Acceptance fault 9: a cluster whose metadata lost its quorum must not look healthy.

`shoal status` names no controller and warns "no controller: the metadata has no quorum
(1 of 3 voters reachable)" when fewer than a majority of the voters answer, and counts
unavailable the shards whose primary cannot hold a lease; /readyz turns 503 once a ready
voter has known no Raft leader for longer than leader_fallback_timeout_s, or a ready node's
lease has lapsed for more than two heartbeat intervals.

Method: the pure pieces (assemble, readiness, Lease.lapsed_s) on hand-made maps, statuses
and fake nodes; the status table through the typer app with `connect` replaced by a fake
client (no node needed).
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from shoal.client.cli import app, data_cmds
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.status import assemble
from shoal.node.config import NodeConfig
from shoal.node.http.readiness import readiness
from shoal.node.lease import Lease
from shoal.node.metadata.view import MetadataView

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "SHOAL_LOG_LEVEL": None, "COLUMNS": "200"}


def _voters_map(controller: str = "n1") -> pb.ClusterMap:
    """3 voters; dataset kv: shard 0 led by n1, shard 1 by n2, both replicated on n1 and n2."""
    nodes = [pb.NodeInfo(id="n1", address="a:1", state="alive", raft_address="r:1"),
             pb.NodeInfo(id="n2", address="a:2", state="alive", raft_address="r:2"),
             pb.NodeInfo(id="n3", address="a:3", state="dead", raft_address="r:3")]
    shard_map = [pb.ShardInfo(index=0, primary="n1", replicas=["n1", "n2"]),
                 pb.ShardInfo(index=1, primary="n2", replicas=["n2", "n1"])]
    return pb.ClusterMap(version=5, controller=controller, nodes=nodes, datasets=[
        pb.DatasetInfo(name="kv", shards=2, replication=2, shard_map=shard_map)])


def test_status_names_no_controller_without_a_quorum() -> None:
    """The repro: n3 dead, n2 stopped (no answer), n1 answers and calls itself controller with its
    last lease lapsed: no controller, the warning, and both shards unavailable (n1 says it has no
    lease; n2 did not answer and no controller could grant it one)."""
    statuses: dict[str, pb.NodeStatus | BaseException] = {
        "a:1": pb.NodeStatus(id="n1", raft_role="candidate", lease_valid=False),
        "a:2": TimeoutError("no answer"), "a:3": ConnectionRefusedError("refused")}
    report = assemble(_voters_map(), statuses)
    json.dumps(report)
    assert report["controller"] == ""
    assert report["quorum"] == {"voters": 3, "voters_reachable": 1, "ok": False}
    assert report["warnings"] == ["no controller: the metadata has no quorum (1 of 3 voters reachable); no lease "
                                  "is granted, so reads and writes fail until a majority of the voters is back"]
    assert report["unavailable"] == 2
    assert [(e["shard"], e["state"], e["reason"], e["copies_left"]) for e in report["degraded_shards"]] == [
        (0, "unavailable", "primary n1 holds no lease", 2), (1, "unavailable", "primary n2 holds no lease", 2)]


def test_status_with_a_quorum_names_the_controller_and_trusts_the_map_for_silent_nodes() -> None:
    """2 of 3 voters answer, n1 leads with a lease: controller n1, no warning, nothing unavailable;
    n2 answering without a lease (cut off from the controller) makes its shard unavailable."""
    healthy = {"a:1": pb.NodeStatus(id="n1", raft_role="leader", lease_valid=True),
               "a:2": pb.NodeStatus(id="n2", raft_role="follower", lease_valid=True)}
    report = assemble(_voters_map(), healthy)
    assert (report["controller"], report["warnings"], report["unavailable"], report["degraded_shards"]) == (
        "n1", [], 0, [])
    assert report["quorum"] == {"voters": 3, "voters_reachable": 2, "ok": True}
    cut_off = {**healthy, "a:2": pb.NodeStatus(id="n2", raft_role="follower", lease_valid=False)}
    report = assemble(_voters_map(), cut_off)
    assert report["controller"] == "n1" and report["unavailable"] == 1
    assert report["degraded_shards"][0]["reason"] == "primary n2 holds no lease"


def test_status_with_a_majority_but_no_leader_warns_too() -> None:
    """A majority answers but the map's controller no longer leads (an election under way)."""
    statuses = {"a:1": pb.NodeStatus(id="n1", raft_role="candidate", lease_valid=True),
                "a:2": pb.NodeStatus(id="n2", raft_role="candidate", lease_valid=True)}
    report = assemble(_voters_map(), statuses)
    assert report["controller"] == "" and report["quorum"]["ok"] is False
    assert report["warnings"] == ["no controller: no metadata leader elected yet (2 of 3 voters reachable)"]
    assert assemble(_voters_map(controller=""), statuses)["warnings"] == report["warnings"]


def test_standalone_map_has_no_quorum_to_lose() -> None:
    """No voter in the map (a standalone node): no warning, the controller as the map says."""
    cluster_map = pb.ClusterMap(version=1, controller="s", nodes=[pb.NodeInfo(id="s", address="a:9", state="alive")])
    report = assemble(cluster_map, {"a:9": pb.NodeStatus(id="s", raft_role="none", lease_valid=True)})
    assert (report["controller"], report["warnings"], report["quorum"]) == (
        "s", [], {"voters": 0, "voters_reachable": 0, "ok": True})


def test_status_table_prints_the_warning_and_no_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table's last lines: `controller: -` and the WARNING; the exit code stays 0 (a report,
    decided: scripts read --json "quorum"); the leaseless shard says why it is unavailable."""
    report = assemble(_voters_map(), {"a:1": pb.NodeStatus(id="n1", raft_role="follower", lease_valid=False)})

    @contextlib.contextmanager
    def fake_connect(ctx: Any) -> Iterator[Any]:
        yield types.SimpleNamespace(status=lambda: report)

    monkeypatch.setattr(data_cmds, "connect", fake_connect)
    result = CliRunner(env=ENV).invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "controller: -" in result.output
    assert "WARNING: no controller: the metadata has no quorum (1 of 3 voters reachable)" in result.output
    assert "unavailable (primary n1 holds no lease)" in result.output


class _Node:
    """What readiness() reads (ReadinessSource)."""

    def __init__(self, tmp_path: pathlib.Path, lapsed_s: float, leaderless_s: float = 0.0) -> None:
        self.ready = True
        self.config = NodeConfig(node_id="f1", data_dir=tmp_path, listen="127.0.0.1:7999")
        self.metadata = types.SimpleNamespace(view=MetadataView.from_state({"version": 1, "nodes": {}, "datasets": {}}),
                                              is_ready=lambda: True, leaderless_s=lambda: leaderless_s)
        self._lapsed_s = lapsed_s

    def lease_lapsed_s(self) -> float:
        return self._lapsed_s


def test_readyz_turns_not_ready_once_the_lease_lapsed_past_two_heartbeats(tmp_path: pathlib.Path) -> None:
    """heartbeat_interval_s 0.5: a lapse of 0.9 s (a controller failover) keeps the node ready,
    1.1 s does not, with a reason naming the lost quorum."""
    assert readiness(_Node(tmp_path, 0.0)).ready and readiness(_Node(tmp_path, 0.9)).ready
    lapsed = readiness(_Node(tmp_path, 1.1))
    assert not lapsed.ready
    assert lapsed.reason.startswith("no lease for 1.1 s: no metadata controller with a quorum has granted one")


def test_readyz_turns_not_ready_once_a_voter_knows_no_leader_past_the_fallback(tmp_path: pathlib.Path) -> None:
    """leader_fallback_timeout_s 2: 1.9 s without a Raft leader (an election) keeps the node ready,
    2.1 s does not, even while its lease still holds."""
    assert readiness(_Node(tmp_path, 0.0, leaderless_s=1.9)).ready
    leaderless = readiness(_Node(tmp_path, 0.0, leaderless_s=2.1))
    assert not leaderless.ready and leaderless.reason.startswith("no Raft leader for 2.1 s: the metadata has no quorum")


def test_lease_lapse_counts_from_its_end_or_from_since() -> None:
    """Valid: 0; ended: seconds since the end; never granted: seconds since `since_s`."""
    lease = Lease()
    now = time.monotonic()
    assert 9.9 <= lease.lapsed_s(0, since_s=now - 10.0) < 11.0
    lease.grant(now - 5.0, 2.0, metadata_version=3)
    assert 2.9 <= lease.lapsed_s(3, since_s=now - 10.0) < 4.0
    assert 0.9 <= lease.lapsed_s(3, since_s=now - 1.0) < 2.0
    lease.grant(now, 2.0, metadata_version=3)
    assert lease.lapsed_s(3, since_s=now) == 0.0
    assert Lease(always_valid=True).lapsed_s(0, since_s=0.0) == 0.0
