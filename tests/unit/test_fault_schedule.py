"""The seeded fault schedule: same seed, same plan; ranges respected; long runs repeat faults."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shoal.chaos import faults as faults_module
from shoal.chaos.faults import Fault, FaultError, build_schedule, wipe_data_dir
from shoal.chaos.scenario import load_scenario, parse_scenario, shipped_names

SCENARIO = parse_scenario("""
duration_s = 30
[cluster]
nodes = 5
voters = 5
[[faults]]
kind = "kill"
target = "any"
start_s = [2.0, 6.0]
duration_s = [1.0, 3.0]
[[faults]]
kind = "pause"
target = "minority"
start_s = [10.0, 12.0]
duration_s = [1.0, 5.0]
[[faults]]
kind = "kill"
target = "primary"
start_s = 20
duration_s = 2
""")


@pytest.mark.parametrize("name", shipped_names())
def test_fault_schedule_same_seed_identical(name: str) -> None:
    """Two builds from the same seed are equal, field by field, for every shipped scenario."""
    scenario = load_scenario(name)
    for seed in (0, 1, 12345, 2**31 - 1):
        assert build_schedule(scenario, seed) == build_schedule(scenario, seed)
        assert build_schedule(scenario, seed).to_dict() == build_schedule(scenario, seed).to_dict()


def test_fault_schedule_seeds_differ() -> None:
    """Different seeds give different plans (times and targets are drawn)."""
    plans = {build_schedule(SCENARIO, seed).faults for seed in range(20)}
    assert len(plans) == 20


def test_fault_schedule_within_ranges() -> None:
    """Drawn times stay in their ranges; any = one node, minority = two of five, primary = a shard."""
    for seed in range(200):
        schedule = build_schedule(SCENARIO, seed)
        kill_any, pause_minority, kill_primary = schedule.faults
        assert 2.0 <= kill_any.start_s <= 6.0 and 1.0 <= kill_any.duration_s <= 3.0
        assert len(kill_any.nodes) == 1 and 1 <= kill_any.nodes[0] <= 5
        assert 10.0 <= pause_minority.start_s <= 12.0
        assert len(pause_minority.nodes) == 2 and len(set(pause_minority.nodes)) == 2
        assert kill_primary.start_s == 20 and kill_primary.duration_s == 2
        assert kill_primary.nodes == () and 0 <= kill_primary.shard < SCENARIO.cluster.shards
        assert schedule.first_fault_s == kill_any.start_s
        assert schedule.final_heal_s == kill_primary.end_s


def test_fault_schedule_sorted_by_start() -> None:
    """Faults come in the order they start, whatever order the file lists them in."""
    reordered = replace(SCENARIO, faults=tuple(reversed(SCENARIO.faults)))
    starts = [f.start_s for f in build_schedule(reordered, 3).faults]
    assert starts == sorted(starts)


def test_fault_schedule_repeats_in_long_runs() -> None:
    """With a fault period, each whole period gets its own draw of every fault, shifted."""
    long_run = replace(SCENARIO, duration_s=95.0, fault_period_s=30.0)
    schedule = build_schedule(long_run, 9)
    assert len(schedule.faults) == 9
    assert len({f.index for f in schedule.faults}) == 9
    for cycle in range(3):
        in_cycle = [f for f in schedule.faults if cycle * 30 <= f.start_s < (cycle + 1) * 30]
        assert len(in_cycle) == 3
        assert all(f.end_s < (cycle + 1) * 30 for f in in_cycle)
    assert build_schedule(long_run, 9) == schedule


def test_fault_schedule_workload_seed_from_seed() -> None:
    """The workload's random choices are seeded from the run seed too."""
    assert build_schedule(SCENARIO, 5).workload_seed == build_schedule(SCENARIO, 5).workload_seed
    assert build_schedule(SCENARIO, 5).workload_seed != build_schedule(SCENARIO, 6).workload_seed


class FakeNode:
    """A node's files as LocalCluster lays them out: data_dir/nK with node.log inside."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "node.log"


class FakeCluster:
    """Records what faults do; leader n2, primaries by shard, n1..n3 running."""

    def __init__(self, root: Path | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.down: set[str] = set()
        self.root = root or Path("/nonexistent-chaos-test")

    def kill(self, node_id: str) -> None:
        self.calls.append(("kill", node_id))
        self.down.add(node_id)

    def node(self, node_id: str) -> FakeNode:
        return FakeNode(self.root / node_id)

    def pause(self, node_id: str) -> None:
        self.calls.append(("pause", node_id))

    def resume(self, node_id: str) -> None:
        self.calls.append(("resume", node_id))

    def terminate(self, node_id: str, timeout_s: float = 15.0) -> None:
        self.calls.append(("terminate", node_id))
        self.down.add(node_id)

    def start_node(self, node_id: str) -> None:
        self.calls.append(("start", node_id))
        self.down.discard(node_id)

    def is_running(self, node_id: str) -> bool:
        return node_id not in self.down

    def running(self) -> list[str]:
        return [n for n in ("n1", "n2", "n3") if n not in self.down]

    def raft_leader(self) -> str | None:
        return "n2"

    def primary_of(self, dataset: str, key_or_shard: object) -> str:
        return f"n{int(str(key_or_shard)) % 3 + 1}"


def test_fault_inject_heal_targets() -> None:
    """Leader, primary and follower targets resolve against the cluster; heal undoes inject."""
    scenario = parse_scenario("""
duration_s = 20
[[faults]]
kind = "kill"
target = "leader"
[[faults]]
kind = "pause"
target = "primary"
start_s = 6
[[faults]]
kind = "restart"
target = "follower"
start_s = 10
""")
    cluster = FakeCluster()
    schedule = build_schedule(scenario, 4)
    kill, pause, restart = (Fault(plan, cluster, dataset="chaos") for plan in schedule.faults)
    assert kill.inject() == ["n2"]
    kill.heal()
    primary = f"n{schedule.faults[1].shard % 3 + 1}"
    assert pause.inject() == [primary]
    pause.heal()
    follower = restart.inject()[0]
    assert follower in ("n1", "n3")
    restart.heal()
    assert cluster.calls == [("kill", "n2"), ("start", "n2"), ("pause", primary), ("resume", primary),
                             ("terminate", follower), ("start", follower)]
    again = Fault(schedule.faults[2], FakeCluster(), dataset="chaos")
    assert again.resolve_targets() == [follower]


def test_fault_network_unavailable_without_netlab() -> None:
    """A partition without namespaces is reported unavailable with the reason."""
    scenario = parse_scenario('duration_s = 10\n[[faults]]\nkind = "partition"\ntarget = "leader"\n')
    fault = Fault(build_schedule(scenario, 1).faults[0], FakeCluster(), dataset="chaos",
                  lab_reason="network namespaces and nftables need root")
    available, reason = fault.available(FakeCluster())
    assert not available and "need root" in reason


def test_fault_leader_missing_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """No leader to kill (for LEADER_WAIT_S) is an error for the run's record, not a silent no-op."""
    monkeypatch.setattr(faults_module, "LEADER_WAIT_S", 0.1)
    cluster = FakeCluster()
    cluster.raft_leader = lambda: None  # type: ignore[method-assign]
    scenario = parse_scenario('duration_s = 10\n[[faults]]\nkind = "kill"\ntarget = "leader"\n')
    with pytest.raises(FaultError, match="no Raft leader"):
        Fault(build_schedule(scenario, 1).faults[0], cluster, dataset="chaos").inject()


def test_fault_schedule_duration_override() -> None:
    """--duration: too short for the faults is an error; twice the length or more repeats the faults."""
    from shoal.chaos.runner import with_duration
    from shoal.chaos.scenario import ScenarioError

    scenario = load_scenario("kill-leader")        # 8 s, the fault may last until 6 s
    with pytest.raises(ScenarioError, match="too short"):
        with_duration(scenario, 5.0)
    assert with_duration(scenario, 12.0).fault_period_s == 0.0
    long_run = with_duration(scenario, 40.0)
    assert long_run.duration_s == 40.0 and long_run.fault_period_s == 8.0
    assert len(build_schedule(long_run, 1).faults) == 5


def test_fault_schedule_independent_of_ops_deadline() -> None:
    """The deadline for ops_min only lengthens the run after the schedule: same seed, same plan."""
    longer = replace(SCENARIO, ops_deadline_s=1_000.0)
    for seed in (0, 1, 12345):
        assert build_schedule(longer, seed) == build_schedule(SCENARIO, seed)


def test_fault_schedule_duration_override_scales_ops_deadline() -> None:
    """--duration keeps the deadline's ratio to the duration; the default stays 4 x duration_s."""
    from shoal.chaos.runner import with_duration

    scenario = load_scenario("kill-primary")       # 8 s, ops_deadline_s left to its default
    assert scenario.workload_deadline_s == 32.0
    assert with_duration(scenario, 16.0).workload_deadline_s == 64.0
    explicit = replace(scenario, ops_deadline_s=12.0)
    assert with_duration(explicit, 16.0).workload_deadline_s == 24.0


@pytest.mark.parametrize(("elapsed_s", "ops", "expected"), [
    (3.0, 5_000, "continue"),      # plenty of ops, but faults are still to come
    (7.99, 5_000, "continue"),
    (8.0, 2_000, "complete"),      # schedule over, ops_min reached
    (8.0, 1_457, "continue"),      # busy machine: run on for the missing ops
    (20.0, 1_999, "continue"),
    (20.0, 2_000, "complete"),
    (32.0, 1_999, "deadline"),     # ops_deadline_s: stop, workload_valid will say INVALID
    (40.0, 1_999, "deadline"),
    (32.0, 2_000, "complete"),
])
def test_workload_stop_rule(elapsed_s: float, ops: int, expected: str) -> None:
    """Issue 16.6: the workload stops when the schedule is over AND it has ops_min operations,
    or at the deadline; never before the schedule's end, however many ops it has."""
    from shoal.chaos.runner import workload_stop

    assert workload_stop(elapsed_s, ops, schedule_end_s=8.0, ops_min=2_000, deadline_s=32.0) == expected


def test_workload_stop_busy_machine_run_is_longer_not_invalid() -> None:
    """At the rate of the busy 2-core machine of issue 16.6 (1457 ops in 8 s) the rule stops
    the run once 2000 ops are in, well before the deadline; at zero ops it stops at the deadline."""
    from shoal.chaos.runner import workload_stop

    def stop_time(ops_per_s: float) -> tuple[float, str]:
        for tenth in range(1, 1_000):
            elapsed_s = tenth / 10
            verdict = workload_stop(elapsed_s, int(ops_per_s * elapsed_s), schedule_end_s=8.0, ops_min=2_000,
                                    deadline_s=32.0)
            if verdict != "continue":
                return elapsed_s, verdict
        raise AssertionError("never stopped")

    assert stop_time(1_457 / 8) == (11.0, "complete")
    assert stop_time(1_000.0) == (8.0, "complete")
    assert stop_time(0.0) == (32.0, "deadline")
    with pytest.raises(AssertionError):
        workload_stop(1.0, 0, schedule_end_s=8.0, ops_min=1, deadline_s=4.0)


WIPES = parse_scenario("""
duration_s = 20
[cluster.knobs]
node_dead_after_s = 6.0
[[faults]]
kind = "wipe"
target = "primary"
start_s = [2.5, 3.5]
duration_s = [0.5, 1.0]
[[faults]]
kind = "wipe"
target = "any"
start_s = [10.0, 11.0]
duration_s = [0.5, 1.0]
""")


def test_fault_schedule_wipe_seeded() -> None:
    """A wipe is planned like a kill: same seed, same plan; times in their ranges; the primary
    target names a seed-chosen shard, the any target a seed-chosen node; seeds differ."""
    for seed in range(200):
        schedule = build_schedule(WIPES, seed)
        assert schedule == build_schedule(WIPES, seed)
        primary, node = schedule.faults
        assert primary.kind == node.kind == "wipe"
        assert 2.5 <= primary.start_s <= 3.5 and 0.5 <= primary.duration_s <= 1.0
        assert primary.nodes == () and 0 <= primary.shard < WIPES.cluster.shards
        assert primary.name == f"wipe primary of shard {primary.shard}"
        assert 10.0 <= node.start_s <= 11.0 and len(node.nodes) == 1 and node.shard == -1
        assert node.end_s < WIPES.duration_s
    assert len({build_schedule(WIPES, seed).faults for seed in range(20)}) == 20


def test_fault_schedule_wipe_same_draws_as_kill() -> None:
    """The kind draws nothing: a scenario with kill where it had wipe gets the same times
    and targets from the same seed (a wipe replays the kill schedule it replaced)."""
    kills = replace(WIPES, faults=tuple(replace(spec, kind="kill") for spec in WIPES.faults))
    for seed in (0, 1, 2, 12345):
        as_kill = [replace(plan, kind="wipe") for plan in build_schedule(kills, seed).faults]
        assert as_kill == list(build_schedule(WIPES, seed).faults)


def make_node_dir(root: Path, node_id: str) -> Path:
    """A data dir as a node leaves it: identity, lock, Raft journal, shard LMDB dirs, log."""
    data_dir = root / node_id
    for sub in ("raft", "shards/chaos@1-0", "shards/chaos@1-2"):
        (data_dir / sub).mkdir(parents=True)
    (data_dir / "shards/chaos@1-0/data.mdb").write_bytes(b"x" * 64)
    (data_dir / "raft/journal").write_bytes(b"j")
    (data_dir / "identity.json").write_text('{"node_id": "%s"}' % node_id)
    (data_dir / "node.lock").write_text("123")
    (data_dir / "node.log").write_text("started\n")
    return data_dir


def test_fault_wipe_inject_heal(tmp_path: Path) -> None:
    """Inject kills the primary, then deletes everything in its data dir but node.log; heal
    starts it again on the empty dir. Other nodes' dirs are untouched."""
    cluster = FakeCluster(tmp_path)
    for node_id in ("n1", "n2", "n3"):
        make_node_dir(tmp_path, node_id)
    plan = build_schedule(WIPES, 7).faults[0]
    primary = f"n{plan.shard % 3 + 1}"
    fault = Fault(plan, cluster, dataset="chaos")
    assert fault.inject() == [primary]
    assert cluster.calls == [("kill", primary)] and not cluster.is_running(primary)
    assert sorted(p.name for p in (tmp_path / primary).iterdir()) == ["node.log"]
    assert (tmp_path / primary / "node.log").read_text() == "started\n"
    for other in {"n1", "n2", "n3"} - {primary}:
        assert (tmp_path / other / "identity.json").exists() and (tmp_path / other / "raft/journal").exists()
    fault.heal()
    assert cluster.calls == [("kill", primary), ("start", primary)] and cluster.is_running(primary)


def test_fault_wipe_data_dir_removes_all_but_log(tmp_path: Path) -> None:
    """wipe_data_dir names what it removed; a missing dir or one holding only the log is a no-op."""
    data_dir = make_node_dir(tmp_path, "n1")
    assert wipe_data_dir(FakeNode(data_dir)) == ["identity.json", "node.lock", "raft", "shards"]
    assert [p.name for p in data_dir.iterdir()] == ["node.log"]
    assert wipe_data_dir(FakeNode(data_dir)) == []
    assert wipe_data_dir(FakeNode(tmp_path / "never-started")) == []


def test_fault_wipe_leader_missing_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wipe of the leader with no leader fails before killing or deleting anything."""
    monkeypatch.setattr(faults_module, "LEADER_WAIT_S", 0.1)
    cluster = FakeCluster(tmp_path)
    data_dir = make_node_dir(tmp_path, "n2")
    cluster.raft_leader = lambda: None  # type: ignore[method-assign]
    scenario = parse_scenario('duration_s = 10\n[[faults]]\nkind = "wipe"\ntarget = "leader"\n')
    with pytest.raises(FaultError, match="no Raft leader"):
        Fault(build_schedule(scenario, 1).faults[0], cluster, dataset="chaos").inject()
    assert cluster.calls == [] and (data_dir / "identity.json").exists()
