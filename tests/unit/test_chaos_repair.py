"""Issue 18.8: the chaos pieces of re-replication, without a cluster.

The bound T of `replication_restored` and what it counts, the check's verdicts on
fabricated maps and statuses, the copy_resumed check on fabricated log lines, the `crash`
fault, the `learner` and `other-follower` targets, the preload and the scenario fields;
join and drain during load: `cluster.held_back`, the `join` and `drain` faults, the
`load_even` and `drained` checks and their bound.
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from shoal.chaos import membership, restoration
from shoal.chaos.checkers import check_convergence
from shoal.chaos.faults import Fault, build_schedule, copy_sources, learner_nodes
from shoal.chaos.history import Operation
from shoal.chaos.judgements import check_faults
from shoal.chaos.restoration import (
    COPY_BYTES_PER_S_MIN, RESTORE_MARGIN_S, ROW_BYTES, Copies, Restoration, RestoreWatch, check_copy_resumed,
    check_replication_restored, restore_budget_s, shard_copies, short_of, written_bytes,
)
from shoal.chaos.scenario import ScenarioError, Span, WorkloadSpec, load_scenario, parse_scenario
from shoal.client.wire.pb import data_pb2 as pb
from test_fault_schedule import FakeCluster as ScheduleFakeCluster

MiB = 2**20
REPAIR = ("repair-kill-node", "repair-kill-two", "repair-wipe-restart", "repair-kill-learner", "repair-kill-sender",
          "repair-join-during-load", "repair-drain-during-load")


def op(kind: str, outcome: str = "ok", start_s: float = 1.0) -> Operation:
    return Operation(0, kind, "k", 1, None, outcome, start_s, start_s + 0.01)


def cluster_map(*shards: tuple[int, list[str], list[str]], replication: int = 3) -> pb.ClusterMap:
    """One dataset "chaos": (index, in-sync replicas, learners) per shard."""
    return pb.ClusterMap(datasets=[pb.DatasetInfo(
        name="chaos", id="chaos@1", shards=len(shards), replication=replication,
        shard_map=[pb.ShardInfo(index=i, primary=replicas[0] if replicas else "", replicas=replicas,
                                learners=learners) for i, replicas, learners in shards])])


def status(node: str, *shards: tuple[int, str], done: int = 0) -> pb.NodeStatus:
    """A node's status: (index, role) per shard it holds."""
    return pb.NodeStatus(id=node, shards=[pb.ShardStatus(dataset="chaos", index=i, role=role, dataset_id="chaos@1",
                                                         fill_records_done=done if role == "learner" else 0)
                                          for i, role in shards])


# ---- T ----

def test_chaos_repair_budget_is_detection_plus_copy_plus_margin() -> None:
    """T = node_dead_after_s + (R - 1) x bytes / rate + margin; the rate is the scenario's
    repair_bytes_per_s, capped by the conservative floor (the node's default cap is not a promise)."""
    assert restore_budget_s(3.0, 0, 3) == 3.0 + RESTORE_MARGIN_S
    assert restore_budget_s(3.0, COPY_BYTES_PER_S_MIN, 3) == pytest.approx(3.0 + 2.0 + RESTORE_MARGIN_S)
    assert restore_budget_s(6.0, 128 * 1024, 3, repair_bytes_per_s=64 * 1024) == \
        pytest.approx(6.0 + 4.0 + RESTORE_MARGIN_S)
    fast = restore_budget_s(3.0, 10 * MiB, 2, repair_bytes_per_s=64 * MiB)   # a cap above the floor
    assert fast == pytest.approx(3.0 + 10 * MiB / COPY_BYTES_PER_S_MIN + RESTORE_MARGIN_S)
    assert restore_budget_s(3.0, 10 * MiB, 1) == 3.0 + RESTORE_MARGIN_S     # nothing to copy with R = 1
    with pytest.raises(AssertionError):
        restore_budget_s(0.0, 1, 3)


def test_chaos_repair_written_bytes_counts_writes_that_may_have_applied() -> None:
    """Preloaded records count their value bytes; ok and unknown writes count (failed ones did
    nothing, reads write nothing); a batch counts each record; only writes invoked by until_s."""
    spec = WorkloadSpec(kind="register", preload_records=1000, preload_value_bytes=100)
    preload = 1000 * (restoration.PRELOAD_ROW_BYTES + 100)
    ops = [op("write"), op("cas", "unknown"), op("write", "failed"), op("read"), op("write", start_s=9.0)]
    assert written_bytes(spec, ops, until_s=5.0) == preload + 2 * ROW_BYTES
    assert written_bytes(spec, ops) == preload + 3 * ROW_BYTES
    bulk = WorkloadSpec(kind="bulk", batch_records=50)
    assert written_bytes(bulk, [op("add_batch"), op("add_batch", "failed")]) == 50 * ROW_BYTES
    assert written_bytes(WorkloadSpec(kind="jobs", records=10), []) == 10 * ROW_BYTES


# ---- what counts as a copy ----

def test_chaos_repair_shard_copies_count_serving_in_sync_replicas() -> None:
    """A copy counts when the map lists it in sync and its node answers with the shard as
    primary or backup: a wiped node still listed in sync reports "stale", a dead node does not
    answer, a learner is listed but not counted."""
    the_map = cluster_map((0, ["n1", "n2", "n3"], []), (1, ["n2", "n3"], ["n4"]))
    statuses = {"n1": status("n1", (0, "stale")), "n2": status("n2", (0, "primary"), (1, "primary")),
                "n3": status("n3", (0, "backup"), (1, "backup")), "n4": status("n4", (1, "learner"), done=40)}
    copies = shard_copies(the_map, statuses, ["chaos"])
    assert copies["chaos/0"] == Copies(3, ("n2", "n3"), ("n1", "n2", "n3"), ())
    assert copies["chaos/1"] == Copies(3, ("n2", "n3"), ("n2", "n3"), ("n4",))
    short = short_of(copies)
    assert set(short) == {"chaos/0", "chaos/1"} and "learners n4" in short["chaos/1"]
    statuses["n1"] = status("n1", (0, "backup"))
    assert "chaos/0" not in short_of(shard_copies(the_map, statuses, ["chaos"]))
    del statuses["n1"]      # not running / not answering
    assert "chaos/0" in short_of(shard_copies(the_map, statuses, ["chaos"]))
    assert short_of(shard_copies(the_map, statuses, ["other"])) == {"other/?": "0 of 1 serving (none); in sync none; "
                                                                              "learners none"}


def test_chaos_repair_shard_copies_ignore_another_incarnation_of_the_dataset() -> None:
    """A replica of a dropped dataset of the same name (another dataset id) is not a copy."""
    the_map = cluster_map((0, ["n1"], []), replication=1)
    old = pb.NodeStatus(id="n1", shards=[pb.ShardStatus(dataset="chaos", index=0, role="primary",
                                                        dataset_id="chaos@0")])
    assert short_of(shard_copies(the_map, {"n1": old}, ["chaos"]))


# ---- the verdict ----

def restored_copies() -> dict[str, Copies]:
    return {"chaos/0": Copies(3, ("n1", "n2", "n3"), ("n1", "n2", "n3"), ())}


def equal_checksums() -> Any:
    return check_convergence({0: {"n1": (5, 11), "n2": (5, 11), "n3": (5, 11)}})


def test_chaos_repair_verdict_passes_when_restored_within_budget_and_equal() -> None:
    """Restored by the watch within T, still restored at the end, equal checksums: pass."""
    result = check_replication_restored(Restoration(budget_s=20.0, bytes_written=100, restored_s=4.2),
                                        restored_copies(), equal_checksums())
    assert result.passed and "4.2 s after the final heal (T = 20.0 s)" in result.summary
    assert result.details["restored_s"] == 4.2 and result.details["short_at_end"] == {}


def test_chaos_repair_verdict_fails_when_not_restored_within_budget() -> None:
    """The watch gave up at T: the failure names the budget and a shard that was short."""
    watch = Restoration(budget_s=16.0, bytes_written=100, restored_s=None,
                        short={"chaos/2": "2 of 3 serving (n2, n3); in sync n2, n3; learners n1"})
    result = check_replication_restored(watch, restored_copies(), equal_checksums())
    assert not result.passed
    assert "not restored within T = 16.0 s" in result.summary and "chaos/2: 2 of 3 serving" in result.summary


def test_chaos_repair_verdict_fails_when_short_again_or_diverged_at_the_end() -> None:
    """Restored once but short at the end, or in-sync replicas with different checksums: fail."""
    watch = Restoration(budget_s=16.0, bytes_written=100, restored_s=3.0)
    short_end = {"chaos/0": Copies(3, ("n1", "n2"), ("n1", "n2"), ())}
    assert "short again at the end" in check_replication_restored(watch, short_end, equal_checksums()).summary
    diverged = check_convergence({0: {"n1": (5, 11), "n2": (5, 12), "n3": (5, 11)}})
    result = check_replication_restored(watch, restored_copies(), diverged)
    assert not result.passed and "differ at the end" in result.summary
    assert not check_replication_restored(None, None, equal_checksums()).passed


def test_chaos_repair_watch_stops_when_restored_or_at_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch polls until every shard is served, records when; gives up at the budget,
    keeping the last shortage; a poll that raises is retried, its error kept."""
    monkeypatch.setattr(restoration, "RESTORE_POLL_S", 0.01)
    readings: list[Any] = [RuntimeError("node busy"), {"chaos/0": Copies(3, ("n1",), ("n1",), ())}, restored_copies()]

    def read() -> dict[str, Copies]:
        reading = readings.pop(0) if len(readings) > 1 else readings[0]
        if isinstance(reading, Exception):
            raise reading
        return reading

    watch = RestoreWatch(read, budget_s=5.0, bytes_written=1)
    watch.start()
    result = watch.join()
    assert result.restored_s is not None and result.restored_s < 5.0 and result.polls == 3
    assert "node busy" in result.error
    never = RestoreWatch(lambda: {"chaos/0": Copies(3, (), (), ())}, budget_s=0.05, bytes_written=1)
    never.start()
    gave_up = never.join()
    assert gave_up.restored_s is None and "chaos/0" in gave_up.short


# ---- copy_resumed ----

LEARNER = "... INFO n2 shoal.node.replication.learner: "
LOG = [
    LEARNER + "shard chaos/2: learner starts a copy from n3",
    "===== local cluster starts n2",
    LEARNER + "shard chaos/0: learner starts a copy from n1",
    LEARNER + "shard chaos/2: learner resumes its copy from n3 at table records",
    LEARNER + "shard chaos/2: learner joined the in-sync set (copy and replay took 2.0 s)",
    LEARNER + "shard chaos/0: learner joined the in-sync set (copy and replay took 3.8 s)",
]
LEARNER_FAULT = {"name": "kill learner", "kind": "kill", "targets": ["n2"], "learning": {"chaos/2": 1512},
                 "status": "healed"}


def test_chaos_repair_copy_resumed_passes_on_one_start_per_shard() -> None:
    """One copy start per shard (the refill of another shard after the restart is its own), the
    learned shard joined, records were installed at the kill: pass."""
    result = check_copy_resumed([LEARNER_FAULT], {"n2": LOG})
    assert result.passed, result.summary
    assert "chaos/2 (from 1512 records)" in result.summary
    assert result.details["n2"]["copy_starts"] == {"chaos/2": 1, "chaos/0": 1}


def test_chaos_repair_copy_resumed_fails_on_a_copy_started_over() -> None:
    """A second "learner starts a copy" of the shard (the restart began from zero): fail, naming it."""
    restarted = LOG + [LEARNER + "shard chaos/2: learner starts a copy from n3"]
    result = check_copy_resumed([LEARNER_FAULT], {"n2": restarted})
    assert not result.passed and "started the copy of chaos/2 2 times" in result.summary


def test_chaos_repair_copy_resumed_fails_when_never_joined_or_nothing_installed() -> None:
    """A learned shard that never joined, a kill before any record was installed, or no fault
    that hit a learner: fail (the last two tested nothing)."""
    not_joined = [line for line in LOG if "chaos/2: learner joined" not in line]
    assert "never joined the in-sync set of chaos/2" in check_copy_resumed([LEARNER_FAULT], {"n2": not_joined}).summary
    empty = {**LEARNER_FAULT, "learning": {"chaos/2": 0}}
    assert "tested nothing" in check_copy_resumed([empty], {"n2": LOG}).summary
    assert not check_copy_resumed([{**LEARNER_FAULT, "learning": {}}], {"n2": LOG}).passed


def test_chaos_repair_copy_resumed_fails_on_a_second_snapshot_from_the_same_source() -> None:
    """A copy that went on from the same source but with a new snapshot (sent from byte 0): fail;
    the same snapshot id again (a resume at the bytes held) passes."""
    received = [LEARNER + "shard chaos/2: learner receives snapshot 1a2b of n3 (8192 bytes, seq 7)"]
    again = LOG[:1] + received + LOG[1:] + received
    assert check_copy_resumed([LEARNER_FAULT], {"n2": again}).passed
    other = [LEARNER + "shard chaos/2: learner receives snapshot 9f9f of n3 (8192 bytes, seq 9)"]
    result = check_copy_resumed([LEARNER_FAULT], {"n2": LOG[:1] + received + LOG[1:] + other})
    assert not result.passed and "started the copy of chaos/2 2 times" in result.summary


def test_chaos_repair_copy_resumed_after_a_sender_kill_reads_the_learners_log() -> None:
    """A copy-source fault (the sender n3 killed): the check reads the learner's log (n2), not
    the sender's; one start per shard passes, a copy started over fails naming the learner."""
    sender_fault = {**LEARNER_FAULT, "name": "kill copy-source", "targets": ["n3"], "learners": {"chaos/2": "n2"}}
    result = check_copy_resumed([sender_fault], {"n2": LOG, "n3": []})
    assert result.passed, result.summary
    assert "n2 resumed chaos/2 (from 1512 records) after the kill of n3" in result.summary
    restarted = LOG + [LEARNER + "shard chaos/2: learner starts a copy from n3"]
    failed = check_copy_resumed([sender_fault], {"n2": restarted, "n3": LOG})
    assert not failed.passed and "n2 started the copy of chaos/2 2 times" in failed.summary
    assert "never logged" in check_copy_resumed([sender_fault], {"n3": LOG}).summary


# ---- faults: crash, learner, copy-source, other-follower ----

class FakeCluster(ScheduleFakeCluster):
    """Four nodes, leader n1; a map where n3 learns shard 1 (with progress) and n2 shard 0 (none)."""

    def running(self) -> list[str]:
        return [n for n in ("n1", "n2", "n3", "n4") if n not in self.down]

    def raft_leader(self) -> str | None:
        return "n1"

    def cluster_map(self) -> pb.ClusterMap:
        return cluster_map((0, ["n1", "n4"], ["n2"]), (1, ["n1", "n2"], ["n3"]))

    def statuses(self) -> dict[str, pb.NodeStatus]:
        return {"n2": status("n2", (0, "learner"), done=0), "n3": status("n3", (1, "learner"), done=25)}


def faults_of(text: str, seed: int = 1) -> tuple[list[Fault], FakeCluster]:
    cluster = FakeCluster()
    scenario = parse_scenario(text)
    faults = [Fault(plan, cluster, dataset="chaos") for plan in build_schedule(scenario, seed).faults]
    return faults, cluster


def test_chaos_repair_crash_is_never_healed() -> None:
    """A crash kills; its heal starts nothing; it ends when injected (duration 0), and the
    faults check takes "down" as its done state (a healed crash would be a harness bug)."""
    [crash], cluster = faults_of('duration_s = 10\n[[faults]]\nkind = "crash"\ntarget = "node-2"\n')
    assert crash.plan.duration_s == 0.0 and crash.plan.end_s == crash.plan.start_s
    assert crash.inject() == ["n2"]
    crash.heal()
    assert cluster.calls == [("kill", "n2")] and not cluster.is_running("n2")
    assert check_faults([{"name": "crash n2", "kind": "crash", "status": "down"}]).passed
    assert not check_faults([{"name": "crash n2", "kind": "crash", "status": "healed"}]).passed


def test_chaos_repair_learner_target_prefers_a_copy_with_records_installed() -> None:
    """target learner: a running node listed as a learner; the one with records installed wins
    over one whose copy has not begun; the record keeps what it was learning."""
    assert learner_nodes(FakeCluster().cluster_map(), FakeCluster().statuses(), running=["n1", "n2", "n3"]) == \
        {"n2": {"chaos/0": 0}, "n3": {"chaos/1": 25}}
    assert learner_nodes(FakeCluster().cluster_map(), {}, running=["n3"]) == {"n3": {"chaos/1": -1}}
    [kill], cluster = faults_of('duration_s = 10\n[[faults]]\nkind = "kill"\ntarget = "learner"\n')
    assert kill.inject() == ["n3"] and kill.learning == {"chaos/1": 25}
    kill.heal()
    assert cluster.calls == [("kill", "n3"), ("start", "n3")]


def test_chaos_repair_copy_source_target_is_the_primary_of_a_shard_being_copied() -> None:
    """target copy-source: the running primary of a shard whose learner has records installed
    (n1 for shard 1, learnt by n3 with 25 records; shard 0's learner n2 has none yet); the
    record keeps each shard's learner and its records; the leader only when no other will do."""
    cluster = FakeCluster()
    learning = learner_nodes(cluster.cluster_map(), cluster.statuses(), running=cluster.running())
    assert copy_sources(cluster.cluster_map(), learning, running=cluster.running()) == {"n1": {"chaos/1": ("n3", 25)}}
    assert copy_sources(cluster.cluster_map(), learning, running=["n2", "n3"]) == {}   # the primary is down
    assert copy_sources(cluster.cluster_map(), {"n1": {"chaos/1": 9}}, running=["n1"]) == {}   # its own primary
    [kill], cluster = faults_of('duration_s = 10\n[[faults]]\nkind = "kill"\ntarget = "copy-source"\n')
    assert kill.inject() == ["n1"]
    assert kill.learning == {"chaos/1": 25} and kill.learners == {"chaos/1": "n3"}
    kill.heal()
    assert cluster.calls == [("kill", "n1"), ("start", "n1")]


def test_chaos_repair_other_follower_avoids_earlier_targets() -> None:
    """target other-follower: never the leader, never a node an earlier fault hit."""
    for seed in range(1, 12):
        [fault], _ = faults_of('duration_s = 20\n[[faults]]\nkind = "crash"\ntarget = "other-follower"\n', seed)
        assert fault.resolve_targets() in (["n2"], ["n3"], ["n4"])
        fault.earlier_targets = {"n2", "n3"}
        assert fault.resolve_targets() == ["n4"]
    [only], _ = faults_of('duration_s = 20\n[[faults]]\nkind = "crash"\ntarget = "other-follower"\n')
    only.earlier_targets = {"n2", "n3", "n4"}
    with pytest.raises(RuntimeError, match="no running other-follower"):
        only.resolve_targets()


# ---- preload and scenario fields ----

def test_chaos_repair_preload_written_at_setup() -> None:
    """preload_records records "pre-<n>" of preload_value_bytes each, in batches, into the dataset."""
    from shoal.chaos.history import History
    from shoal.chaos.workloads import make_workload

    spec = WorkloadSpec(kind="register", preload_records=25_000, preload_value_bytes=100)
    written: list[tuple[str, str]] = []
    calls = []

    class Loader:
        def put_many(self, dataset: str, records: Any) -> None:
            calls.append(dataset)
            written.extend(records)

    make_workload(spec, History(), lambda _timeout_s: None, 1, shards=4).setup(Loader())
    assert len(written) == 25_000 and len({key for key, _ in written}) == 25_000 and len(calls) > 1
    assert set(calls) == {"chaos"} and all(key.startswith("pre-") and len(value) == 100 for key, value in written)


def test_chaos_repair_scenario_fields_validated() -> None:
    """The new fields parse, old scenarios keep their defaults, and bad combinations name the field."""
    base = 'duration_s = 10\n[cluster.knobs]\nnode_dead_after_s = 3.0\n[[faults]]\nkind = "crash"\ntarget = "node-2"\n'
    scenario = parse_scenario(base + "[checks]\nreplication_restored = true\n")
    assert scenario.checks.replication_restored and scenario.faults[0].duration_s == Span(0.0, 0.0)
    assert not load_scenario("kill-primary").checks.replication_restored
    bad = {
        base.replace('target = "node-2"', 'target = "node-2"\nduration_s = 2'): "faults[0].duration_s",
        'duration_s = 10\n[checks]\nreplication_restored = true\n': "needs cluster.knobs.node_dead_after_s",
        base + "[checks]\ncopy_resumed = true\n": "checks.copy_resumed",
        base + '[workload]\nkind = "jobs"\npreload_records = 10\n': "workload.preload_records",
        base.replace("node_dead_after_s = 3.0", "repair_bytes_per_s = 1.5"): "cluster.knobs.repair_bytes_per_s",
    }
    for text, where in bad.items():
        with pytest.raises(ScenarioError, match=re.escape(where)):
            parse_scenario(text)


@pytest.mark.parametrize("name", REPAIR)
def test_chaos_repair_shipped_scenarios_check_restoration(name: str) -> None:
    """Each repair scenario turns the check on, with the register workload's checks and data to copy."""
    scenario = load_scenario(name)
    assert scenario.checks.replication_restored and scenario.checks.linearizable and scenario.checks.no_lost_writes
    assert scenario.workload.preload_records > 0 and scenario.cluster.replication == 3
    assert load_scenario("repair-kill-learner").checks.copy_resumed



# ---- join and drain during load ----

JOIN = ('duration_s = 10\n[cluster]\nnodes = 4\nheld_back = ["node-4"]\n'
        '[[faults]]\nkind = "join"\ntarget = "node-4"\nstart_s = [2.0, 3.0]\n')
DRAIN = 'duration_s = 10\n[cluster]\nnodes = 4\n[[faults]]\nkind = "drain"\ntarget = "follower"\n'


def member_map(*shards: tuple[int, list[str], list[str]], states: dict[str, str]) -> pb.ClusterMap:
    """cluster_map() with the nodes' states (alive, draining, ...)."""
    the_map = cluster_map(*shards)
    the_map.nodes.extend(pb.NodeInfo(id=node_id, state=state) for node_id, state in states.items())
    return the_map


ALIVE4 = {"n1": "alive", "n2": "alive", "n3": "alive", "n4": "alive"}


def test_chaos_membership_scenario_fields_parse() -> None:
    """held_back (node-N, data-only), join and drain (one-shot: duration 0), load_even and
    drained parse; the shipped scenarios use them."""
    join = parse_scenario(JOIN + "[checks]\nload_even = true\n")
    assert join.cluster.held_back == (4,) and join.checks.load_even and not join.checks.drained
    assert join.faults[0].kind == "join" and join.faults[0].duration_s == Span(0.0, 0.0)
    drain = parse_scenario(DRAIN + "[checks]\ndrained = true\n")
    assert drain.cluster.held_back == () and drain.checks.drained and drain.faults[0].duration_s == Span(0.0, 0.0)
    shipped_join, shipped_drain = load_scenario("repair-join-during-load"), load_scenario("repair-drain-during-load")
    assert shipped_join.checks.load_even and shipped_join.cluster.held_back == (4,)
    assert [f.kind for f in shipped_join.faults] == ["join"]
    assert shipped_drain.checks.drained and [(f.kind, f.target) for f in shipped_drain.faults] == [("drain", "follower")]


def test_chaos_membership_scenario_errors_name_the_field() -> None:
    """A held-back voter, a join of a node that was started, a held-back node nobody starts, a
    random target that may hit the absent node, a join or drain with a duration, a drain that
    leaves too few nodes, and a check without its fault: each an error naming the field."""
    bad = {
        JOIN.replace('"node-4"]', '"node-2"]'): "cluster.held_back",
        JOIN.replace('held_back = ["node-4"]', 'held_back = "node-4"'): "cluster.held_back",
        JOIN.replace('held_back = ["node-4"]', 'held_back = ["node-4", "node-4"]'): "cluster.held_back",
        JOIN.replace('held_back = ["node-4"]', ''): "faults[0].target",
        JOIN.replace('kind = "join"', 'kind = "kill"'): "faults[0].target",
        JOIN + '[[faults]]\nkind = "kill"\ntarget = "any"\nstart_s = 5\n': "faults[1].target",
        JOIN.replace('[[faults]]\nkind = "join"\ntarget = "node-4"\nstart_s = [2.0, 3.0]\n',
                     '[[faults]]\nkind = "kill"\ntarget = "follower"\n'): "held-back node-4 needs exactly one join",
        JOIN.replace("start_s = [2.0, 3.0]", "start_s = 2\nduration_s = 1"): "faults[0].duration_s",
        DRAIN.replace('target = "follower"', 'target = "follower"\nduration_s = 2'): "faults[0].duration_s",
        DRAIN.replace("nodes = 4", "nodes = 3"): "nowhere to go",
        DRAIN + "[checks]\nload_even = true\n": "checks.load_even",
        JOIN + "[checks]\ndrained = true\n": "checks.drained",
        DRAIN + "[checks]\ndrained = 1\n": "checks.drained",
    }
    for text, where in bad.items():
        with pytest.raises(ScenarioError, match=re.escape(where)):
            parse_scenario(text)


def test_chaos_membership_join_starts_the_held_back_node_once() -> None:
    """join: the seed plans the named node, at a drawn time, duration 0; inject starts it, heal
    does nothing; the faults check wants "done" (a join is not healed)."""
    for seed in (1, 2, 3):
        [join], cluster = faults_of(JOIN, seed)
        assert join.plan.nodes == (4,) and 2.0 <= join.plan.start_s <= 3.0 and join.plan.end_s == join.plan.start_s
    cluster.down.add("n4")
    assert join.inject() == ["n4"]
    join.heal()
    assert cluster.calls == [("start", "n4")] and cluster.is_running("n4")
    assert check_faults([{"name": "join n4", "kind": "join", "status": "done"}]).passed
    assert not check_faults([{"name": "join n4", "kind": "join", "status": "healed"}]).passed


class DrainingCluster(FakeCluster):
    """FakeCluster whose client answers DrainNode with the copies the node holds."""

    held = {"n2": 3, "n3": 2, "n4": 3}

    def client(self, timeout_s: float = 1.0) -> Any:
        cluster = self

        class Client:
            def __enter__(self) -> Client:
                return self

            def __exit__(self, *exc_info: object) -> None:
                pass

            def drain_node(self, node_id: str) -> int:
                cluster.calls.append(("drain", node_id))
                return cluster.held[node_id]
        return Client()


def test_chaos_membership_drain_asks_the_cluster_once_for_a_follower() -> None:
    """drain: a running non-leader (never the controller) is asked to drain through the client;
    the copies it held go into the fault's record; heal does nothing."""
    for seed in range(1, 8):
        cluster = DrainingCluster()
        [drain] = [Fault(plan, cluster, dataset="chaos") for plan in build_schedule(parse_scenario(DRAIN), seed).faults]
        [target] = drain.inject()
        assert target in ("n2", "n3", "n4") and drain.replicas == DrainingCluster.held[target]
        drain.heal()
        assert cluster.calls == [("drain", target)] and cluster.down == set()


def test_chaos_membership_long_runs_do_not_repeat_joins_or_drains() -> None:
    """--duration: a scenario with a join or a drain runs longer without drawing it again (a
    node joins once; a drain every period would empty the cluster)."""
    from shoal.chaos.runner import with_duration

    for name in ("repair-join-during-load", "repair-drain-during-load"):
        longer = with_duration(load_scenario(name), 40.0)
        assert longer.fault_period_s == 0.0 and len(build_schedule(longer, 1).faults) == 1


def test_chaos_membership_cluster_starts_without_held_back_nodes() -> None:
    """The runner starts every node but the held-back ones, then waits for those it started."""
    from shoal.chaos.runner import _start_cluster

    class Starting:
        nodes = [type("Node", (), {"id": f"n{i}"})() for i in range(1, 5)]

        def __init__(self) -> None:
            self.calls: list[str] = []

        def start(self, timeout_s: float) -> None:
            self.calls.append("start")

        def start_node(self, node_id: str) -> None:
            self.calls.append(node_id)

        def wait_ready(self, timeout_s: float) -> None:
            self.calls.append("ready")

    held, every = Starting(), Starting()
    _start_cluster(held, ["n4"])
    _start_cluster(every, [])
    assert held.calls == ["n1", "n2", "n3", "ready"] and every.calls == ["start"]


def test_chaos_membership_move_budget() -> None:
    """T = bytes / rate + shards x MOVE_MARGIN_S + margin; the rate as for replication_restored."""
    assert membership.move_budget_s(0, 4) == 4 * membership.MOVE_MARGIN_S + RESTORE_MARGIN_S
    assert membership.move_budget_s(COPY_BYTES_PER_S_MIN, 4, repair_bytes_per_s=64 * MiB) == \
        pytest.approx(1.0 + 4 * membership.MOVE_MARGIN_S + RESTORE_MARGIN_S)
    assert membership.move_budget_s(128 * 1024, 1, repair_bytes_per_s=64 * 1024) == \
        pytest.approx(2.0 + membership.MOVE_MARGIN_S + RESTORE_MARGIN_S)
    with pytest.raises(AssertionError):
        membership.move_budget_s(1, 0)


def test_chaos_membership_uneven_until_counts_differ_by_less_than_two() -> None:
    """Even: no learner, every shard at its factor, per-node counts within 1, the joined node
    holding one; each other case names why (a move under way, the spread, the joined node)."""
    before = member_map((0, ["n1", "n2", "n3"], []), (1, ["n2", "n3", "n1"], []), states=ALIVE4)
    assert membership.replica_load(before) == {"n1": 2, "n2": 2, "n3": 2, "n4": 0}
    problems = membership.uneven(before, ["n4"])
    assert set(problems) == {"load", "n4"} and "differ by 2" in problems["load"]
    copying = member_map((0, ["n1", "n2", "n3"], ["n4"]), (1, ["n2", "n3", "n1"], []), states=ALIVE4)
    assert "a move under way" in membership.uneven(copying, ["n4"])["chaos/0"]
    joined = member_map((0, ["n1", "n2", "n3", "n4"], []), (1, ["n2", "n3", "n1"], []), states=ALIVE4)
    assert "chaos/0" in membership.uneven(joined, ["n4"])       # the extra copy not trimmed yet
    even = member_map((0, ["n1", "n2", "n4"], []), (1, ["n2", "n3", "n1"], []), states=ALIVE4)
    assert membership.uneven(even, ["n4"]) == {}
    dead = member_map((0, ["n1", "n2", "n4"], []), (1, ["n2", "n3", "n1"], []), states={**ALIVE4, "n4": "dead"})
    assert "not alive in the map (dead)" in membership.uneven(dead, ["n4"])["n4"]


def test_chaos_membership_not_drained_until_nothing_held() -> None:
    """Drained: no replica, no learner, state draining; else why, naming the shards."""
    draining = {**ALIVE4, "n4": "draining"}
    holding = member_map((0, ["n1", "n4", "n2"], []), (1, ["n2", "n3"], ["n4"]), states=draining)
    assert membership.not_drained(holding, ["n4"]) == {"n4": "still holds 2: chaos/0, chaos/1 (learner)"}
    empty = member_map((0, ["n1", "n3", "n2"], []), (1, ["n2", "n3", "n1"], []), states=draining)
    assert membership.not_drained(empty, ["n4"]) == {}
    assert "alive, not draining" in membership.not_drained(
        member_map((0, ["n1", "n3", "n2"], []), states=ALIVE4), ["n4"])["n4"]


def test_chaos_membership_copies_on_a_draining_node_do_not_count() -> None:
    """replication_restored: a copy on a node the map lists as draining is leaving, so the shard
    is short until a copy elsewhere joined (the controller counts so too)."""
    the_map = member_map((0, ["n1", "n2", "n4"], ["n3"]), states={**ALIVE4, "n4": "draining"})
    statuses = {node: status(node, (0, "backup")) for node in ("n1", "n2", "n4")}
    assert shard_copies(the_map, statuses, ["chaos"])["chaos/0"].serving == ("n1", "n2")
    the_map.nodes[3].state = "alive"
    assert shard_copies(the_map, statuses, ["chaos"])["chaos/0"].serving == ("n1", "n2", "n4")


def watched(settled_s: float | None, short: dict[str, str] | None = None) -> Restoration:
    return Restoration(budget_s=22.0, bytes_written=1000, restored_s=settled_s, short=short or {})


def test_chaos_membership_load_even_verdicts() -> None:
    """Even within T and at the end: pass, with the counts; not even by T, uneven again at the
    end, or never watched: fail, saying which."""
    load = {"n1": 3, "n2": 3, "n3": 3, "n4": 3}
    ok = membership.Membership(("n4",), (), even=watched(7.5), uneven_at_end={}, load_at_end=load)
    result = membership.check_load_even(ok)
    assert result.passed and "{n1: 3, n2: 3, n3: 3, n4: 3} 7.5 s after the join (T = 22.0 s)" in result.summary
    late = membership.Membership(("n4",), (), even=watched(None, {"load": "replicas per alive node ..."}),
                                 uneven_at_end={})
    assert "not even within T = 22.0 s" in membership.check_load_even(late).summary
    again = membership.Membership(("n4",), (), even=watched(3.0), uneven_at_end={"chaos/1": "a move under way"})
    assert "uneven again at the end: chaos/1" in membership.check_load_even(again).summary
    assert not membership.check_load_even(None).passed
    assert not membership.check_load_even(membership.Membership((), ())).passed


def test_chaos_membership_drained_verdicts() -> None:
    """Drained within T, still at the end, DrainNode says 0 and the node held copies when
    asked: pass; a node that held nothing, DrainNode saying otherwise or failing: fail."""
    fault = {"kind": "drain", "targets": ["n3"], "replicas": 3}
    done = membership.Membership((), ("n3",), emptied=watched(1.2), not_drained_at_end={}, left_at_end={"n3": 0})
    result = membership.check_drained(done, [fault])
    assert result.passed and "n3 (held 3) drained 1.2 s after the request" in result.summary
    assert "held no copy when asked" in membership.check_drained(done, [{**fault, "replicas": 0}]).summary
    left = membership.Membership((), ("n3",), emptied=watched(1.2), not_drained_at_end={}, left_at_end={"n3": 1})
    assert "still holds 1 (not safe to remove)" in membership.check_drained(left, [fault]).summary
    failed = membership.Membership((), ("n3",), emptied=watched(1.2), not_drained_at_end={},
                                   left_at_end={"n3": "DeadlineExceededError: slow"})
    assert "failed at the end" in membership.check_drained(failed, [fault]).summary
    late = membership.Membership((), ("n3",), emptied=watched(None, {"n3": "still holds 1: chaos/2"}),
                                 not_drained_at_end={"n3": "still holds 1: chaos/2"}, left_at_end={"n3": 1})
    assert "not drained within T" in membership.check_drained(late, [fault]).summary


def test_chaos_membership_watch_settles_then_reads_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch polls the map until the drain is done, then finish() reads the map again and
    asks DrainNode once per drained node."""
    monkeypatch.setattr(restoration, "RESTORE_POLL_S", 0.01)
    draining = {**ALIVE4, "n3": "draining"}
    maps = [member_map((0, ["n1", "n3", "n2"], ["n4"]), states=draining),
            member_map((0, ["n1", "n4", "n2"], []), states=draining)]

    class Watched(DrainingCluster):
        def cluster_map(self) -> pb.ClusterMap:
            return maps.pop(0) if len(maps) > 1 else maps[0]

    cluster = Watched()
    watch = membership.MembershipWatch(cluster, [], ["n3"], budget_s=5.0, bytes_written=10)
    watch.start()
    result = watch.finish()
    assert result.emptied is not None and result.emptied.restored_s is not None and result.emptied.polls == 2
    assert result.not_drained_at_end == {} and result.left_at_end == {"n3": 2} and result.even is None
    assert cluster.calls == [("drain", "n3")]
