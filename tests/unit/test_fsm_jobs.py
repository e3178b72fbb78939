"""Compute jobs in the metadata state machine (issue 17): submit, attempts, first commit wins, limits.

Driven with command sequences over real states, as test_fsm.py does; the planner tests use
views built from those states. No Raft, no network.
"""
from __future__ import annotations

import collections
from typing import Any

import msgpack

from shoal.node.config import NodeConfig
from shoal.node.controller.jobs import JobPlanner, first_attempts, running_attempts
from shoal.node.metadata import commands, jobs
from shoal.node.metadata.view import MetadataView
from test_fsm_controller import run, with_dataset

SPEC = msgpack.packb({"aggs": [["n", "count", None]]}, use_bin_type=True)


def submitted(job_id: str = "j1", attempts: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    state, [result] = run(with_dataset(), commands.submit_job(job_id, "ds", "query", SPEC, 1.0,
                                                               attempts if attempts is not None else [(0, "n0"),
                                                                                                      (1, "n1")]))
    assert result["ok"], result
    return state


def test_fsm_submit_records_one_task_per_shard_without_moving_the_version() -> None:
    """A job has one task per shard with attempt 1 where the submitter placed it; job commands move
    jobs_version, never version (leases name version)."""
    before = with_dataset()
    state = submitted()
    job = MetadataView.from_state(state).job("j1")
    assert job is not None and job.running and len(job.tasks) == 2
    assert [t.attempts for t in job.tasks] == [((1, "n0"),), ((1, "n1"),)]
    assert state["version"] == before["version"] and state["jobs_version"] == before["jobs_version"] + 1
    again, [same] = run(state, commands.submit_job("j1", "ds", "query", SPEC, 2.0, [], request_id="other"))
    assert same["ok"] and again["jobs"] == state["jobs"]


def test_fsm_first_attempt_to_commit_wins_and_the_job_finishes() -> None:
    """Attempt 2 of task 0 commits first; attempt 1 is then discarded and its records never counted."""
    state = submitted()
    state, [assigned] = run(state, commands.assign_tasks("j1", [(0, 2, "n2")], controller_term=0))
    assert assigned["ok"]
    state, results = run(state,
                         commands.complete_task("j1", 0, 2, b"p2", 10, 3.0),
                         commands.complete_task("j1", 0, 1, b"p1", 99, 3.5),
                         commands.complete_task("j1", 1, 1, b"q1", 5, 4.0))
    assert [r.get("discarded") for r in results] == [False, True, False]
    job = MetadataView.from_state(state).job("j1")
    assert job is not None and job.state == "done" and job.finished_at_s == 4.0
    assert job.records_scanned == 15 and job.tasks[0].node == "n2" and job.tasks[0].result == b"p2"
    retried, [same] = run(state, commands.complete_task("j1", 1, 1, b"x", 1, 5.0))   # same request id
    assert same == results[2] and retried["jobs"] == state["jobs"]
    _, [late] = run(state, commands.assign_tasks("j1", [(1, 2, "n2")], controller_term=0))
    assert late.get("discarded") and late["state"] == "done"


def test_fsm_complete_tasks_decides_each_completion_on_its_own() -> None:
    """A node's group commit: one complete_tasks with several attempts is the same as their
    complete_task in order: first attempt wins per task (a loser inside the batch too), the job
    is done in the apply that commits its last task, one jobs_version step; a retry with the
    same bytes is answered from the request table; a re-commit of a winner names it as winner."""
    state, [assigned] = run(submitted(), commands.assign_tasks("j1", [(0, 2, "n2")], controller_term=0))
    assert assigned["ok"]
    batch = commands.complete_tasks([("j1", 0, 2, b"p2", 10), ("j1", 0, 1, b"p1", 99), ("j1", 1, 1, b"q1", 5)], 4.0)
    after, [result] = run(state, batch)
    assert result["ok"] and [r.get("discarded") for r in result["results"]] == [False, True, False]
    assert result["results"][1]["winner"] == 2 and result["results"][2]["state"] == "done"
    job = MetadataView.from_state(after).job("j1")
    assert job is not None and job.state == "done" and job.finished_at_s == 4.0 and job.records_scanned == 15
    assert job.tasks[0].node == "n2" and job.tasks[0].result == b"p2" and after["jobs_version"] == state["jobs_version"] + 1
    one_by_one, _ = run(state, commands.complete_task("j1", 0, 2, b"p2", 10, 4.0),
                        commands.complete_task("j1", 0, 1, b"p1", 99, 4.0), commands.complete_task("j1", 1, 1, b"q1", 5, 4.0))
    assert one_by_one["jobs"] == after["jobs"]
    retried, [same] = run(after, batch)
    assert same == result and retried["jobs"] == after["jobs"]
    _, [again] = run(after, commands.complete_tasks([("j1", 1, 1, b"q1", 5)], 5.0))   # another batch, same attempt
    assert again["results"][0]["discarded"] and again["results"][0]["winner"] == 1


def test_fsm_complete_tasks_refuses_a_malformed_batch_and_answers_each_job() -> None:
    """A malformed item or an empty batch changes nothing (INVALID_ARGUMENT); an unknown job or an
    unknown attempt is that item's error only, the others still commit."""
    state = submitted()
    bad = msgpack.packb({"v": commands.COMMAND_VERSION, "op": "complete_tasks", "request_id": "r1", "at_s": 1.0,
                         "completions": [["j1", 0, 1, "not bytes", 1]]}, use_bin_type=True)
    empty = msgpack.packb({"v": commands.COMMAND_VERSION, "op": "complete_tasks", "request_id": "r2", "at_s": 1.0,
                           "completions": []}, use_bin_type=True)
    unchanged, results = run(state, bad, empty)
    assert [r["error"] for r in results] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"] and unchanged["jobs"] == state["jobs"]
    after, [mixed] = run(state, commands.complete_tasks([("nope", 0, 1, b"", 0), ("j1", 0, 9, b"", 0),
                                                         ("j1", 1, 1, b"q", 2)], 2.0))
    assert mixed["ok"] and [r["ok"] for r in mixed["results"]] == [False, False, True]
    assert mixed["results"][0]["error"] == commands.UNKNOWN_JOB
    job = MetadataView.from_state(after).job("j1")
    assert job is not None and job.tasks[1].done == 1 and not job.tasks[0].done and job.running


def test_fsm_complete_tasks_keeps_the_job_result_limit() -> None:
    """Partials committed in a batch count toward JOB_RESULT_BYTES_MAX like single ones: past it the
    job fails LIMIT_EXCEEDED naming the job and the limit, and the batch's later items are discarded."""
    big = with_dataset()
    big, _ = run(big, commands.submit_job("big", "ds", "query", SPEC, 1.0, [(0, "n0"), (1, "n1")]))
    big["jobs"]["big"]["result_bytes"] = jobs.JOB_RESULT_BYTES_MAX - 10   # as if earlier tasks had committed this much
    big, [result] = run(big, commands.complete_tasks([("big", 0, 1, b"x" * 100, 1), ("big", 1, 1, b"y", 1)], 3.0))
    assert result["results"][0]["state"] == "failed" and result["results"][1]["discarded"]
    job = MetadataView.from_state(big).job("big")
    assert job is not None and job.state == "failed" and job.error_code == commands.LIMIT_EXCEEDED
    assert str(jobs.JOB_RESULT_BYTES_MAX) in job.error and "big" in job.error


def test_fsm_attempts_are_checked() -> None:
    """An unknown attempt, a skipped attempt number, an unknown node or a stale controller term changes nothing."""
    state, _ = run(submitted(), commands.become_controller("n0", 4))
    _, results = run(state,
                     commands.complete_task("j1", 0, 7, b"", 0, 1.0),
                     commands.assign_tasks("j1", [(0, 3, "n1")], controller_term=4),
                     commands.assign_tasks("j1", [(0, 2, "nX")], controller_term=4),
                     commands.assign_tasks("j1", [(0, 2, "n1")], controller_term=3))
    assert [r["error"] for r in results] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                                            commands.STALE_CONTROLLER]


def test_fsm_job_limits_and_retention() -> None:
    """JOBS_ACTIVE_MAX running jobs, then LIMIT_EXCEEDED naming the limit; a result over
    JOB_RESULT_BYTES_MAX fails the job; finished jobs beyond JOBS_RETAINED are forgotten, oldest first."""
    state = with_dataset()
    for i in range(jobs.JOBS_ACTIVE_MAX):
        state, [r] = run(state, commands.submit_job(f"j{i}", "ds", "query", SPEC, 1.0, []))
        assert r["ok"]
    _, [refused] = run(state, commands.submit_job("one-more", "ds", "query", SPEC, 1.0, []))
    assert refused["error"] == commands.LIMIT_EXCEEDED and str(jobs.JOBS_ACTIVE_MAX) in refused["message"]
    state, _ = run(state, *(commands.cancel_job(f"j{i}", 2.0) for i in range(jobs.JOBS_ACTIVE_MAX)))
    for i in range(jobs.JOBS_RETAINED + 3):
        state, results = run(state, commands.submit_job(f"k{i}", "ds", "query", SPEC, 1.0, []),
                             commands.cancel_job(f"k{i}", 2.0))
        assert all(r["ok"] for r in results)
    assert len(state["jobs"]) == jobs.JOBS_RETAINED + 1 and "j0" not in state["jobs"]
    assert f"k{jobs.JOBS_RETAINED + 2}" in state["jobs"]
    for job in list(state["jobs"].values())[:3]:
        job["result_bytes"] = jobs.JOBS_RETAINED_BYTES_MAX // 2   # as if these had big results
    state, _ = run(state, commands.submit_job("after-big", "ds", "query", SPEC, 1.0, []))
    finished_bytes = sum(j["result_bytes"] for j in state["jobs"].values() if j["state"] != "running")
    assert finished_bytes <= jobs.JOBS_RETAINED_BYTES_MAX and "after-big" in state["jobs"]
    big = with_dataset()
    big, _ = run(big, commands.submit_job("big", "ds", "query", SPEC, 1.0, [(0, "n0"), (1, "n1")]))
    chunk = b"x" * commands.TASK_RESULT_BYTES_MAX
    big["jobs"]["big"]["result_bytes"] = jobs.JOB_RESULT_BYTES_MAX - 1   # as if earlier tasks had committed this much
    big, _ = run(big, commands.complete_task("big", 0, 1, chunk, 1, 3.0))
    job = MetadataView.from_state(big).job("big")
    assert job is not None and job.state == "failed" and job.error_code == commands.LIMIT_EXCEEDED
    assert str(jobs.JOB_RESULT_BYTES_MAX) in job.error


def test_fsm_fail_and_cancel_end_a_running_job_once() -> None:
    state, results = run(submitted(), commands.fail_job("j1", commands.JOB_FAILED, "shard 1 on n1: boom", 2.0),
                         commands.cancel_job("j1", 3.0), commands.cancel_job("nope", 3.0))
    job = MetadataView.from_state(state).job("j1")
    assert job is not None and job.state == "failed" and job.error == "shard 1 on n1: boom"
    assert results[1]["state"] == "failed" and results[2]["error"] == commands.UNKNOWN_JOB


def test_without_results_strips_only_results() -> None:
    state, _ = run(submitted(), commands.complete_task("j1", 0, 1, b"partial", 3, 2.0))
    stripped = jobs.without_results(state)
    assert stripped["jobs"]["j1"]["tasks"][0]["result"] == b"" and state["jobs"]["j1"]["tasks"][0]["result"]
    assert stripped["jobs"]["j1"]["tasks"][0]["records"] == 3


def config() -> NodeConfig:
    return NodeConfig(node_id="n0", data_dir="/nonexistent", speculative_after_s_min=1.0,  # type: ignore[arg-type]
                      speculative_after_factor=3.0, tasks_per_node_max=8)


def test_first_attempts_stay_on_in_sync_replicas_and_spread() -> None:
    """Attempt 1 of each task goes to an in-sync replica on an alive node, least loaded first."""
    view = MetadataView.from_state(with_dataset())
    dataset = view.dataset("ds")
    assert dataset is not None
    load: collections.Counter[str] = collections.Counter()
    placed = first_attempts(view, dataset, load)
    assert [task for task, _ in placed] == [0, 1]
    for task, node in placed:
        assert node in dataset.shard_map[task].replicas
    assert len({node for _, node in placed}) == 2 and sum(load.values()) == 2


def test_planner_reruns_a_task_of_a_dead_node_and_fails_without_replicas() -> None:
    """Attempt 1 on a node declared dead gets attempt 2 on another in-sync holder; with no alive
    holder the job fails naming the shard."""
    state = submitted(attempts=[(0, "n0"), (1, "n0")])
    state, _ = run(state, commands.set_node_state("n0", "dead"))
    planned = JobPlanner(config()).plan(MetadataView.from_state(state), 10.0, controller_term=0)
    assert len(planned) == 1
    decoded = commands.decode_command(planned[0])
    assert decoded["op"] == "assign_tasks"
    assert sorted((t, a) for t, a, _ in decoded["attempts"]) == [(0, 2), (1, 2)]
    assert all(node != "n0" for _, _, node in decoded["attempts"])
    for node in ("n1", "n2"):
        state, _ = run(state, commands.set_node_state(node, "dead"))
    planned = JobPlanner(config()).plan(MetadataView.from_state(state), 10.0, controller_term=0)
    failed = commands.decode_command(planned[0])
    assert failed["op"] == "fail_job" and "shard 0 of dataset ds" in failed["message"]


def test_planner_adds_a_speculative_copy_of_a_straggler_only() -> None:
    """Task 0 done after 1 s; task 1 still running at 3x that (and past the floor) gets one copy
    on another holder, and no third attempt after that."""
    planner = JobPlanner(config())
    state = submitted(attempts=[(0, "n0"), (1, "n1")])
    assert planner.plan(MetadataView.from_state(state), 0.0, controller_term=0) == []
    state, _ = run(state, commands.complete_task("j1", 0, 1, b"", 1, 1.0))
    assert planner.plan(MetadataView.from_state(state), 1.0, controller_term=0) == []
    assert planner.plan(MetadataView.from_state(state), 2.5, controller_term=0) == []
    [copy] = planner.plan(MetadataView.from_state(state), 3.5, controller_term=0)
    decoded = commands.decode_command(copy)
    [(task, attempt, node)] = decoded["attempts"]
    assert (task, attempt) == (1, 2) and node != "n1"
    state, _ = run(state, copy)
    assert planner.plan(MetadataView.from_state(state), 60.0, controller_term=0) == []
    assert running_attempts(MetadataView.from_state(state))[node] == 1
