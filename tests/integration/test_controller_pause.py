"""Issue 15 point 3: a Raft leader woken from a pause acts only on what is still true.

Real 3-node clusters (processes on loopback, default timings: heartbeat 0.5 s, node dead
after 6 s). The Raft leader is SIGSTOPped past node_dead_after_s and resumed. Before the
fix its controller ran one round on its stale view after waking: it declared the live
nodes dead, fenced their replicas out and promoted itself, and pysyncobj forwarded those
proposals to the new leader, which committed them. Now every controller decision carries
the term it was decided under and the state machine refuses it once a newer controller
took over; a controller whose loop stalled drops its view and re-establishes itself first.

What "healthy" means here: every node alive, every shard's in-sync set holds every node
that was never paused (nobody live was fenced out), a dataset with replication 3 can be
created, and every acknowledged write is readable. A paused node that stayed silent past
node_dead_after_s is declared dead by the new controller, rightly, and fenced out of its
shards; it is alive again once it heartbeats, but re-adding it to the in-sync sets is
repair's work (not in the controller yet), so `under_replicated` then counts those shards.
Where the pause is shorter than the dead timeout, nothing may be fenced out at all.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from shoal.client import DatasetExistsError, NotEnoughNodesError, ShoalError
from shoal.client.local import LocalCluster
from shoal.client.local.errors import LocalClusterError

DATASET = "pausy"
SHARDS = 4
KEYS = 40
RECOVERY_TIMEOUT_S = 45.0


def wait_for(condition: Callable[[], Any], cluster: LocalCluster, what: str,
             timeout_s: float = RECOVERY_TIMEOUT_S) -> Any:
    """Poll `condition` until it returns something truthy; fail with the node logs at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (ShoalError, LocalClusterError) as exc:
            last_error = repr(exc)
        time.sleep(0.2)   # polling interval of a deadline loop
    pytest.fail(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error or 'none'})\n"
                f"{cluster.dump_logs(120)}")


def _start(local_cluster: Callable[..., LocalCluster]) -> tuple[LocalCluster, dict[str, int]]:
    cluster = local_cluster(3)
    written = {f"k{i}": i for i in range(KEYS)}
    with cluster.client(timeout_s=20) as client:
        client.create_dataset(DATASET, shards=SHARDS, replication=3)
        for key, value in written.items():
            client.put(DATASET, key, value)
    return cluster, written


def _pause_leader(cluster: LocalCluster, pause_s: float) -> str:
    """SIGSTOP the Raft leader for pause_s, then SIGCONT it; return its node id.

    The wait here is the fault's duration, not a wait for a state: a new leader is
    elected meanwhile (polled), and the rest of the pause passes on the clock.
    """
    leader = cluster.wait_raft_leader()
    cluster.pause(leader)
    resume_at_s = time.monotonic() + pause_s
    try:
        cluster.wait_raft_leader(timeout_s=pause_s, exclude=[leader])
        time.sleep(max(0.0, resume_at_s - time.monotonic()))
    finally:
        cluster.resume(leader)
    return leader


def _all_alive(cluster: LocalCluster) -> Any:
    """The leader's cluster map once it shows every node alive and the Raft leader is settled, else None."""
    leader = cluster.raft_leader()
    if leader is None:
        return None
    cluster_map = cluster.cluster_map()
    states = {node.id: node.state for node in cluster_map.nodes}
    if len(states) != len(cluster.nodes) or any(state != "alive" for state in states.values()):
        return None
    return cluster_map


def _created_with_replication_3(client: Any, name: str) -> bool:
    """Create dataset `name` with R=3; False while fewer than 3 nodes are alive in the metadata.

    A paused node may be declared dead just as it resumes (its silence crossed
    node_dead_after_s on the new controller's clock at that moment) and declared alive again
    on its next heartbeat: "every node alive" seen a moment earlier does not rule that out,
    so the create is retried rather than judged on one try. Exists: an earlier try whose
    answer was lost created it (creating is not retried blindly).
    """
    try:
        client.create_dataset(name, shards=2, replication=3)
    except NotEnoughNodesError:
        return False
    except DatasetExistsError:
        pass
    return True


def _assert_recovered(cluster: LocalCluster, paused: list[str], written: dict[str, int], *,
                      fenced_out_allowed: bool) -> None:
    """Every node alive, nobody live fenced out, R=3 creatable, no acknowledged write lost."""
    wait_for(lambda: _all_alive(cluster), cluster, "every node alive in the leader's map")
    # Give a stale controller its chance to do harm (it acts within a tick of waking), then look.
    wait_for(lambda: all(s.raft_role != "leader" or n == cluster.raft_leader()
                         for n, s in cluster.statuses().items()), cluster, "one Raft leader")
    cluster_map = wait_for(lambda: _all_alive(cluster), cluster, "every node still alive")
    dataset = {d.name: d for d in cluster_map.datasets}[DATASET]
    never_paused = {node.id for node in cluster.nodes} - set(paused)
    for shard in dataset.shard_map:
        assert never_paused <= set(shard.replicas), (
            f"shard {shard.index}: a node that was never paused was fenced out: replicas {list(shard.replicas)}\n"
            f"{cluster.dump_logs(120)}")
    fenced_out = sum(1 for shard in dataset.shard_map if len(shard.replicas) < 3)
    assert dataset.under_replicated == fenced_out, (dataset.under_replicated, fenced_out)
    if not fenced_out_allowed:
        assert fenced_out == 0, f"{fenced_out} shards lost a replica\n{cluster.dump_logs(120)}"
    with cluster.client(timeout_s=20) as client:
        wait_for(lambda: _created_with_replication_3(client, "after"), cluster, "an R=3 dataset created")
        client.put("after", "k", 1)
        assert client.get("after", "k") == 1
        for key, value in written.items():
            assert client.get(DATASET, key) == value, key


def test_controller_paused_past_dead_timeout_does_not_act_on_its_stale_view(
        local_cluster: Callable[..., LocalCluster]) -> None:
    """Pause the Raft leader 12 s (twice node_dead_after_s), resume: nobody live is declared dead or fenced out.

    Method: 4 shards with R=3 and 40 acknowledged keys; SIGSTOP the leader, wait for a new
    one, SIGCONT after 12 s; then poll until every node is alive and check the shard maps,
    a new R=3 dataset and every key. The paused node itself was silent past the dead
    timeout, so its own replicas may have been fenced out (see the module docstring).
    """
    cluster, written = _start(local_cluster)
    paused = _pause_leader(cluster, 12.0)
    _assert_recovered(cluster, [paused], written, fenced_out_allowed=True)


def test_controller_paused_twice_acts_only_on_what_is_still_true(
        local_cluster: Callable[..., LocalCluster]) -> None:
    """Pause the Raft leader 7 s, then the next Raft leader 7 s: each wakes to a newer controller and stands down.

    Method: as above, with two shorter pauses (just past node_dead_after_s for the stale
    view, about when the new controller itself may declare the paused node dead), the
    second hitting the controller that took over from the first; writes in between must
    stay readable too.
    """
    cluster, written = _start(local_cluster)
    first = _pause_leader(cluster, 7.0)
    wait_for(lambda: _all_alive(cluster), cluster, "every node alive after the first pause")
    with cluster.client(timeout_s=20) as client:
        for i in range(KEYS, KEYS + 10):
            client.put(DATASET, f"k{i}", i)
            written[f"k{i}"] = i
    second = _pause_leader(cluster, 7.0)
    assert second != first
    _assert_recovered(cluster, [first, second], written, fenced_out_allowed=True)


def test_controller_paused_below_dead_timeout_fences_nobody_out(
        local_cluster: Callable[..., LocalCluster]) -> None:
    """Pause the Raft leader 4 s (past the suspect and election timeouts, below node_dead_after_s): nothing moves.

    Method: leadership moves while the leader is stopped, and its loop wakes with a gap
    past node_suspect_after_s; afterwards every shard must still have all three replicas
    in sync (under_replicated 0), and every key must be readable.
    """
    cluster, written = _start(local_cluster)
    paused = _pause_leader(cluster, 4.0)
    _assert_recovered(cluster, [paused], written, fenced_out_allowed=False)
