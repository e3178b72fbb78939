"""The jobs chaos workload without a cluster: its reference, its check, its fault target.

Issue 17.8: the harness knows the exact answer of every job from what it wrote; these
tests feed `jobs_exact` hand-made histories (an exact job, a shard counted twice, a shard
missed, failed and stuck jobs, no job during the fault) and check what it says, and
resolve the `task-node` target against a fake job table.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shoal.chaos import faults as faults_module
from shoal.chaos.faults import Fault, FaultError, build_schedule, task_nodes
from shoal.chaos.history import Operation
from shoal.chaos.job_judgements import check_final_jobs, check_jobs_exact
from shoal.chaos.job_workload import COUNTRIES, JobOutcome, Reference, make_records, normalized_rows
from shoal.chaos.scenario import ScenarioError, load_scenario, parse_scenario
from shoal.chaos.workloads import FINAL_PROCESS_BASE, FinalState, shard_of

SHARDS = 4
RECORDS = make_records(400, seed=7)
REFERENCE = Reference.of(RECORDS, SHARDS)
FAULT = {"name": "kill task-node", "status": "healed", "targets": ["n2"], "start_s": 3.0, "injected_s": 3.1,
         "end_s": 5.0}


def exact_output(name: str, *, attempts: int = SHARDS, job_id: str = "a1b2c3d4e5") -> dict[str, Any]:
    """What an exact job records: the reference rows, one task per shard, each once."""
    tasks = [{"index": i, "records": REFERENCE.shard_records[i], "nodes": ["n1"], "node": "n1"} for i in range(SHARDS)]
    return {"job_id": job_id, "rows": REFERENCE.rows[name], "tasks_total": SHARDS, "tasks_done": SHARDS,
            "attempts": attempts, "records_scanned": REFERENCE.records, "tasks": tasks}


def job_op(name: str, output: dict[str, Any], *, outcome: str = "ok", start_s: float = 2.0, end_s: float = 4.0,
           process: int = 0) -> Operation:
    return Operation(process, "job", "chaos-jobs", name, output, outcome, start_s, end_s)


def test_job_reference_is_computed_from_the_records() -> None:
    """Per-shard counts follow the client's routing and add up; group rows sum to the dataset."""
    assert sum(REFERENCE.shard_records) == REFERENCE.records == 400
    assert list(REFERENCE.shard_records) == [sum(1 for key, _ in RECORDS if shard_of(key, SHARDS) == s)
                                             for s in range(SHARDS)]
    rows = REFERENCE.rows["group_by"]
    assert [row["country"] for row in rows] == sorted(row["country"] for row in rows)
    assert set(row["country"] for row in rows) <= set(COUNTRIES)
    assert sum(row["n"] for row in rows) == 400
    assert sum(row["total"] for row in rows) == sum(value["amount"] for _, value in RECORDS)
    de = [value["amount"] for _, value in RECORDS if value["country"] == "DE"]
    assert next(row for row in rows if row["country"] == "DE") == {
        "country": "DE", "n": len(de), "total": sum(de), "low": min(de), "high": max(de), "distinct": len(set(de))}
    assert REFERENCE.rows["count"] == [{"n": 400}]


def test_job_records_are_a_function_of_the_seed() -> None:
    """The same seed writes the same dataset (a replay), another seed another one."""
    assert make_records(50, 3) == make_records(50, 3)
    assert make_records(50, 3) != make_records(50, 4)


def test_job_outcome_normalizes_row_order() -> None:
    """A group-by's row order is not part of its answer; tasks keep every attempt's node."""
    progress = SimpleNamespace(tasks_total=1, tasks_done=1, attempts=2, records_scanned=5, tasks=(
        SimpleNamespace(index=0, done=True, nodes=("n1", "n2"), node="n2", records=5),))
    outcome = JobOutcome.of("j1", [{"country": "US", "n": 1}, {"country": "DE", "n": 4}], progress)
    assert outcome.rows == normalized_rows(outcome.rows) == [{"country": "DE", "n": 4}, {"country": "US", "n": 1}]
    assert outcome.to_output()["tasks"] == [{"index": 0, "records": 5, "nodes": ["n1", "n2"], "node": "n2"}]


def test_jobs_exact_passes_and_counts() -> None:
    """Exact jobs pass; the summary counts jobs, re-runs and jobs that overlapped the fault."""
    ops = [job_op("group_by", exact_output("group_by"), start_s=0.5, end_s=1.5),
           job_op("count", exact_output("count", attempts=SHARDS + 1), start_s=2.5, end_s=4.0),
           job_op("count", {"stage": "submit", "error": "NoControllerError: x"}, outcome="failed")]
    result = check_jobs_exact(ops, REFERENCE, [FAULT])
    assert result.passed, result.summary
    assert result.details["ok"] == 2 and result.details["rerun"] == 1 and result.details["during_fault"] == 1
    assert result.details["submit_not_accepted"] == 1
    assert "3 jobs (2 ok, 0 failed, 1 with re-run attempts, 1 during a fault)" in result.summary


def test_jobs_exact_names_a_shard_counted_twice() -> None:
    """A count answer of a shard counted twice is caught by the rows; a winning attempt that
    scanned the wrong number of records names its shard."""
    doubled = exact_output("count")
    doubled["rows"] = [{"n": REFERENCE.records + REFERENCE.shard_records[2]}]
    result = check_jobs_exact([job_op("count", doubled)], REFERENCE, [FAULT])
    assert not result.passed and "differs from the reference" in result.summary
    partial = exact_output("group_by")
    partial["tasks"][1]["records"] -= 3
    result = check_jobs_exact([job_op("group_by", partial)], REFERENCE, [FAULT])
    assert not result.passed and "shard 1: the winning attempt (node n1) scanned" in result.summary


def test_jobs_exact_names_a_shard_missed() -> None:
    """A job that finished with a task not done (a shard missed) fails the check."""
    missed = exact_output("count")
    missed["tasks_done"] = SHARDS - 1
    result = check_jobs_exact([job_op("count", missed)], REFERENCE, [FAULT])
    assert not result.passed and f"{SHARDS - 1} of {SHARDS} tasks done" in result.summary


def test_jobs_exact_judges_failed_and_stuck_jobs() -> None:
    """No replica left: a failed job is allowed. Any other failure of an accepted job, or a
    job still running at the timeout, fails the check."""
    no_replica = {"stage": "job", "job_id": "x", "error": "JobFailedError: shard 2 of dataset d has no in-sync "
                  "replica on an alive node"}
    ok = job_op("count", exact_output("count"))
    assert check_jobs_exact([ok, job_op("count", no_replica, outcome="failed")], REFERENCE, [FAULT]).passed
    worker = {"stage": "job", "job_id": "y", "error": "JobFailedError: a worker process died"}
    result = check_jobs_exact([ok, job_op("count", worker, outcome="failed")], REFERENCE, [FAULT])
    assert not result.passed and "failed with a replica left" in result.summary
    stuck = {"stage": "result", "job_id": "z", "stuck": True, "error": "still running 30 s after the submit"}
    result = check_jobs_exact([ok, job_op("count", stuck, outcome="unknown")], REFERENCE, [FAULT])
    assert not result.passed and "1 jobs stuck" in result.summary


def test_jobs_exact_requires_a_job_during_a_fault() -> None:
    """Exact answers prove nothing if no job ran while the fault was in force."""
    before = job_op("count", exact_output("count"), start_s=0.5, end_s=2.9)
    result = check_jobs_exact([before], REFERENCE, [FAULT])
    assert not result.passed and "tested nothing" in result.summary
    assert check_jobs_exact([before], REFERENCE, []).passed     # no fault planned: nothing to overlap
    assert not check_jobs_exact([before], None, [FAULT]).passed


def test_final_jobs_judge_no_lost_writes() -> None:
    """The final jobs after the heal must answer exactly; attempts that did not answer
    before them (a submit meeting an election) are counted, not judged."""
    final = FinalState(reference=REFERENCE)
    ops = [job_op("group_by", exact_output("group_by"), process=FINAL_PROCESS_BASE),
           job_op("count", exact_output("count"), process=FINAL_PROCESS_BASE + 1)]
    assert check_final_jobs(ops, final).passed
    wrong = exact_output("count")
    wrong["rows"] = [{"n": 399}]
    result = check_final_jobs([ops[0], job_op("count", wrong, process=FINAL_PROCESS_BASE + 1)], final)
    assert not result.passed and "differs" in result.summary
    assert not check_final_jobs([], final).passed
    unknown = job_op("group_by", {"stage": "submit", "error": "UnknownOutcomeError: x"}, outcome="unknown",
                     process=FINAL_PROCESS_BASE)
    retried = check_final_jobs([unknown, *ops], final)
    assert retried.passed and "(1 attempts before them did not answer)" in retried.summary


def progress(state: str, *tasks: tuple[bool, tuple[str, ...]]) -> SimpleNamespace:
    return SimpleNamespace(state=state, tasks=tuple(SimpleNamespace(done=done, nodes=nodes) for done, nodes in tasks))


def test_task_nodes_are_latest_unfinished_attempts_on_running_nodes() -> None:
    """Only running jobs, unfinished tasks, their latest attempt, on a node that runs."""
    jobs = [progress("done", (False, ("n3",))),
            progress("running", (True, ("n1",)), (False, ("n1", "n2")), (False, ()), (False, ("n3",)))]
    assert task_nodes(jobs, running=["n1", "n2", "n3"]) == ["n2", "n3"]
    assert task_nodes(jobs, running=["n1", "n2"]) == ["n2"]
    assert task_nodes([], running=["n1"]) == []


class FakeCluster:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def kill(self, node_id: str) -> None:
        self.calls.append(("kill", node_id))

    def start_node(self, node_id: str) -> None:
        self.calls.append(("start", node_id))

    def is_running(self, node_id: str) -> bool:
        return not self.calls or self.calls[-1] != ("kill", node_id)

    def running(self) -> list[str]:
        return ["n1", "n2", "n3"]

    def raft_leader(self) -> str:
        return "n1"


TASK_NODE_SCENARIO = """
duration_s = 10
[workload]
kind = "jobs"
[[faults]]
kind = "kill"
target = "task-node"
[checks]
linearizable = false
"""


def test_fault_task_node_waits_for_a_running_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target is read from the job table at injection; between jobs the fault waits for
    one, and with none it fails naming why (recorded, never a silent no-op)."""
    plan = build_schedule(parse_scenario(TASK_NODE_SCENARIO), 3).faults[0]
    answers = iter([[], [progress("running", (False, ("n3",)))]])
    cluster = FakeCluster()
    fault = Fault(plan, cluster, dataset="chaos")
    fault.jobs = lambda: next(answers)
    assert fault.inject() == ["n3"] and cluster.calls == [("kill", "n3")]
    fault.heal()
    assert cluster.calls[-1] == ("start", "n3")
    monkeypatch.setattr(faults_module, "TASK_NODE_WAIT_S", 0.1)
    idle = Fault(plan, FakeCluster(), dataset="chaos")
    idle.jobs = lambda: [progress("done", (True, ("n1",)))]
    with pytest.raises(FaultError, match="no job had a task running"):
        idle.inject()

    def unreachable() -> list[Any]:
        raise ConnectionError("controller down")
    idle.jobs = unreachable
    with pytest.raises(FaultError, match="last error listing jobs: ConnectionError: controller down"):
        idle.inject()
    with pytest.raises(FaultError, match="needs the job table"):
        Fault(plan, FakeCluster(), dataset="chaos").inject()


def test_fault_leader_waits_for_a_status_answer() -> None:
    """A leader whose status call timed out once (cores busy with tasks) is still found:
    target leader polls for LEADER_WAIT_S before it reports no leader."""
    answers = iter([None, None, "n2"])
    cluster = FakeCluster()
    cluster.raft_leader = lambda: next(answers)  # type: ignore[method-assign, assignment]
    plan = build_schedule(parse_scenario('duration_s = 10\n[[faults]]\nkind = "kill"\ntarget = "leader"\n'), 1).faults[0]
    assert Fault(plan, cluster, dataset="chaos").inject() == ["n2"]


def test_scenario_task_node_needs_the_jobs_workload() -> None:
    """task-node is meaningless without jobs: an error naming the field; records are bounded."""
    with pytest.raises(ScenarioError, match=r"faults\[0\].target: task-node .* needs workload.kind = \"jobs\""):
        parse_scenario(TASK_NODE_SCENARIO.replace('kind = "jobs"', 'kind = "set"'), source="x.toml")
    with pytest.raises(ScenarioError, match="workload.records: must be within"):
        parse_scenario(TASK_NODE_SCENARIO.replace('kind = "jobs"', 'kind = "jobs"\nrecords = 0'))
    assert parse_scenario(TASK_NODE_SCENARIO).workload.records == 120_000


@pytest.mark.parametrize("name", ["jobs-kill-task-node", "jobs-kill-controller", "jobs-pause-task-node",
                                  "jobs-partition-task-node"])
def test_scenario_jobs_shipped(name: str) -> None:
    """The shipped jobs scenarios: jobs workload, a count bar of jobs, pauses and partitions
    outlast node_dead_after_s (the task must be re-run elsewhere)."""
    scenario = load_scenario(name)
    assert scenario.workload.kind == "jobs" and not scenario.checks.linearizable
    assert 0 < scenario.checks.ops_min <= 20 and scenario.duration_s <= 12
    fault = scenario.faults[0]
    if fault.kind in ("pause", "partition"):
        assert fault.duration_s.low > scenario.cluster.knobs["node_dead_after_s"]


def test_job_clients_outlast_a_controller_failover() -> None:
    """A submit made as the controller dies must be answered by the next one (the client
    retries it: the job id is the client's), not end unknown after 1 s: the jobs workload
    asks the runner for clients whose per-call timeout exceeds pysyncobj's longest election
    timeout (raftMaxTimeout, 1.4 s by default) plus the leader fallback of the shipped
    scenarios, with room for the new controller's start; the other workloads keep 1 s."""
    from shoal.chaos.history import History
    from shoal.chaos.job_workload import JobWorkload
    from shoal.chaos.workloads import CLIENT_TIMEOUT_S, make_workload

    scenario = load_scenario("jobs-kill-controller")
    asked: list[float] = []

    class Refusing:   # every call fails at once: the threads only loop until stop()
        def query(self, dataset: str) -> Any:
            raise RuntimeError("no cluster here")

    workload = make_workload(scenario.workload, History(), lambda timeout_s: asked.append(timeout_s) or Refusing(),
                             1, shards=scenario.cluster.shards)
    assert isinstance(workload, JobWorkload)
    workload.start()
    workload.stop()
    election_s = 1.4 + scenario.cluster.knobs["leader_fallback_timeout_s"]
    assert asked == [JobWorkload.client_timeout_s] * scenario.workload.clients
    assert JobWorkload.client_timeout_s >= 3 * election_s > CLIENT_TIMEOUT_S
    register = make_workload(load_scenario("kill-leader").workload, History(), lambda timeout_s: None, 1, shards=4)
    assert register.client_timeout_s == CLIENT_TIMEOUT_S
