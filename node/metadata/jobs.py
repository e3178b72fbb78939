"""Job commands of the metadata state machine (issue 17, DESIGN.md section 5). Pure.

A job is recorded once (`submit_job`) with one task per shard of its dataset as it was
at submission; a map-reduce job has one more task, the reduce, runnable once every map
task is done. The submitting node places attempt 1 of each task (so a job
starts after one commit); the controller adds attempts (`assign_tasks`: a re-run after a
node was lost, a speculative copy of a straggler), fenced by its term like every
controller decision; a node runs the attempts assigned to it and
commits the outcome with `complete_task`, or several at once with `complete_tasks` (the
attempts that finished together on one node: one Raft commit for all of them, each still
decided on its own). The first attempt of a task to commit wins and
every later one is answered `discarded`: that is what counts every shard exactly once,
whatever was re-run or speculatively copied.

State: jobs {job_id: {"id", "dataset", "dataset_id", "kind", "spec" (bytes), "state"
       (running | done | failed | cancelled), "error_code", "error", "submitted_at_s",
       "finished_at_s", "result_bytes", "tasks": [{"attempts": [[attempt, node_id], ...],
       "done": winning attempt or 0, "node": its node, "records": int, "result": bytes}]}}

Job commands do not move `version` (leases name a version, and a busy job table must not
make every primary's lease look stale); they move `jobs_version`, which data-only nodes
compare to receive the job table in heartbeat replies.

Limits (constants, identical on every replica of the log): JOBS_ACTIVE_MAX running jobs
(more is LIMIT_EXCEEDED at submit); JOB_RESULT_BYTES_MAX of partial results per job (past
it the job fails LIMIT_EXCEEDED, naming the limit); finished jobs beyond JOBS_RETAINED are
forgotten, oldest first.
"""
from __future__ import annotations

from typing import Any

from shoal.node.metadata.commands import (
    COMPLETIONS_MAX, INVALID_ARGUMENT, JOB_FAILED, LIMIT_EXCEEDED, UNKNOWN_DATASET, UNKNOWN_JOB, error, ok,
)

State = dict[str, Any]
Result = dict[str, Any]
Changes = dict[str, Any] | None

JOBS_ACTIVE_MAX = 16
JOBS_RETAINED = 64                        # finished jobs kept for result() and `shoal job ls` ...
JOBS_RETAINED_BYTES_MAX = 256 * 1024 * 1024   # ... while their results stay under this (the state is in every dump)
JOB_RESULT_BYTES_MAX = 64 * 1024 * 1024   # all partial results of one job, as stored in the log
JOB_KINDS = ("query", "map_reduce")
JOB_ID_CHARS_MAX = 64
FINISHED = ("done", "failed", "cancelled")


def submit_job(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    job_id, name, kind = cmd["job_id"], cmd["dataset"], cmd["kind"]
    if not 0 < len(job_id) <= JOB_ID_CHARS_MAX or kind not in JOB_KINDS:
        return None, error(INVALID_ARGUMENT, f"submit_job: job id of 1..{JOB_ID_CHARS_MAX} characters and kind "
                                             f"in {', '.join(JOB_KINDS)} expected")
    if job_id in state["jobs"]:
        return None, ok(job_id=job_id)
    dataset = state["datasets"].get(name)
    if dataset is None:
        return None, error(UNKNOWN_DATASET, f"unknown dataset {name[:140]!r}")
    active = sum(1 for job in state["jobs"].values() if job["state"] == "running")
    if active >= JOBS_ACTIVE_MAX:
        return None, error(LIMIT_EXCEEDED, f"{active} jobs are running, the limit is {JOBS_ACTIVE_MAX}: "
                                           "wait for one to finish or cancel one (shoal job ls)")
    tasks = [_new_task() for _ in range(dataset["shards"] + (1 if kind == "map_reduce" else 0))]
    for item in cmd["attempts"]:    # the submitting node's first placement, attempt 1 each
        problem = (_attempt_problem(state, tasks, [item[0], 1, item[1]])
                   if isinstance(item, list) and len(item) == 2 else f"an attempt is [task, node_id], got {item!r:.80}")
        if problem:
            return None, error(INVALID_ARGUMENT, f"submit_job: {problem}")
        tasks[item[0]] = {**tasks[item[0]], "attempts": [[1, item[1]]]}
    job = {"id": job_id, "dataset": name, "dataset_id": str(dataset.get("id", name)), "kind": kind,
           "spec": cmd["spec"], "state": "running", "error_code": "", "error": "",
           "submitted_at_s": cmd["at_s"], "finished_at_s": 0.0, "result_bytes": 0,
           "tasks": tasks}
    return _jobs_changes(state, _retained({**state["jobs"], job_id: job})), ok(job_id=job_id)


def assign_tasks(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """Add attempts [[task, attempt, node_id], ...]; an attempt already recorded is a no-op."""
    job = state["jobs"].get(cmd["job_id"])
    if job is None:
        return None, error(UNKNOWN_JOB, f"unknown job {cmd['job_id'][:80]!r}")
    if job["state"] != "running":
        return None, ok(job_id=job["id"], state=job["state"], discarded=True)
    tasks = list(job["tasks"])
    for item in cmd["attempts"]:
        problem = _attempt_problem(state, tasks, item)
        if problem:
            return None, error(INVALID_ARGUMENT, f"assign_tasks: {problem}")
        task, attempt, node_id = item
        if not any(number == attempt for number, _ in tasks[task]["attempts"]):
            tasks[task] = {**tasks[task], "attempts": [*tasks[task]["attempts"], [attempt, node_id]]}
    if tasks == job["tasks"]:
        return None, ok(job_id=job["id"])
    return _jobs_changes(state, {**state["jobs"], job["id"]: {**job, "tasks": tasks}}), ok(job_id=job["id"])


def _attempt_problem(state: State, tasks: list[dict[str, Any]], item: object) -> str | None:
    if (not isinstance(item, list) or len(item) != 3 or type(item[0]) is not int or type(item[1]) is not int
            or not isinstance(item[2], str)):
        return f"an attempt is [task, attempt, node_id], got {item!r:.80}"
    task, attempt, node_id = item
    if not 0 <= task < len(tasks):
        return f"no task {task}"
    if node_id not in state["nodes"]:
        return f"unknown node {node_id!r}"
    known = tasks[task]["attempts"]
    if any(number == attempt for number, _ in known):
        return None
    if attempt != len(known) + 1:
        return f"attempt {attempt} of task {task} is not the next ({len(known) + 1})"
    return None


def complete_task(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    job, task, problem = _running_task(state, cmd)
    if problem:
        return None, problem
    attempt = cmd["attempt"]
    owner = next((node for number, node in task["attempts"] if number == attempt), None)
    if owner is None:
        return None, error(INVALID_ARGUMENT, f"complete_task: task {cmd['task']} has no attempt {attempt}")
    if task["done"]:
        return None, ok(job_id=job["id"], discarded=True, winner=task["done"])
    changed = {**task, "done": attempt, "node": owner, "records": cmd["records"], "result": cmd["result"]}
    changes = _task_changes(state, job, cmd["task"], changed)
    assert changes is not None
    updated = changes["jobs"][job["id"]]
    updated["result_bytes"] = job["result_bytes"] + len(cmd["result"])
    if updated["result_bytes"] > JOB_RESULT_BYTES_MAX:
        _finish(updated, "failed", cmd["at_s"], LIMIT_EXCEEDED,
                f"job {job['id']}: results are larger than {JOB_RESULT_BYTES_MAX} bytes: aggregate, filter or "
                "limit the query, or write the output into a dataset (map_reduce)")
    elif all(t["done"] for t in updated["tasks"]):
        _finish(updated, "done", cmd["at_s"], "", "")
    return changes, ok(job_id=job["id"], discarded=False, state=updated["state"])


def complete_tasks(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """Several complete_task in one command (a node's group commit), applied in order: each keeps
    the first-attempt-wins rule, and the job is done in the apply that commits its last task.
    A malformed item refuses the whole command (nothing applied); otherwise the result lists
    each item's complete_task result, errors included (an unknown job refuses only its item)."""
    items = cmd["completions"]
    if not 0 < len(items) <= COMPLETIONS_MAX:
        return None, error(INVALID_ARGUMENT, f"complete_tasks: 1..{COMPLETIONS_MAX} completions expected, "
                                             f"got {len(items)}")
    for item in items:
        if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str) and type(item[1]) is int
                and type(item[2]) is int and isinstance(item[3], bytes) and type(item[4]) is int):
            return None, error(INVALID_ARGUMENT, "complete_tasks: a completion is [job_id, task, attempt, result, "
                                                 f"records], got {item!r:.80}")
    current, results = state, []
    for job_id, task, attempt, result, records in items:
        changes, outcome = complete_task(current, {"job_id": job_id, "task": task, "attempt": attempt,
                                                   "result": result, "records": records, "at_s": cmd["at_s"]})
        if changes:
            current = {**current, "jobs": changes["jobs"]}
        results.append(outcome)
    if current is state:
        return None, ok(results=results)
    return _jobs_changes(state, current["jobs"]), ok(results=results)


def fail_job(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    return _end(state, cmd, "failed", cmd["code"] or JOB_FAILED, cmd["message"][:4096])


def cancel_job(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    return _end(state, cmd, "cancelled", "", "cancelled")


def _end(state: State, cmd: dict[str, Any], to: str, code: str, message: str) -> tuple[Changes, Result]:
    job = state["jobs"].get(cmd["job_id"])
    if job is None:
        return None, error(UNKNOWN_JOB, f"unknown job {cmd['job_id'][:80]!r}")
    if job["state"] != "running":
        return None, ok(job_id=job["id"], state=job["state"])
    updated = {**job}
    _finish(updated, to, cmd["at_s"], code, message)
    return _jobs_changes(state, {**state["jobs"], job["id"]: updated}), ok(job_id=job["id"], state=to)


def _finish(job: dict[str, Any], to: str, at_s: float, code: str, message: str) -> None:
    job.update(state=to, finished_at_s=at_s, error_code=code, error=message)


def _new_task() -> dict[str, Any]:
    return {"attempts": [], "done": 0, "node": "", "records": 0, "result": b""}


def _running_task(state: State, cmd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Result | None]:
    job = state["jobs"].get(cmd["job_id"])
    if job is None:
        return {}, {}, error(UNKNOWN_JOB, f"unknown job {cmd['job_id'][:80]!r}")
    if not 0 <= cmd["task"] < len(job["tasks"]):
        return job, {}, error(INVALID_ARGUMENT, f"job {job['id']} has no task {cmd['task']}")
    if job["state"] != "running":
        winner = job["tasks"][cmd["task"]]["done"]   # a re-commit of the winner (its first answer lost) is told so
        return job, {}, ok(job_id=job["id"], state=job["state"], discarded=True, winner=winner)
    return job, job["tasks"][cmd["task"]], None


def _task_changes(state: State, job: dict[str, Any], index: int, task: dict[str, Any]) -> Changes:
    tasks = list(job["tasks"])
    tasks[index] = task
    return _jobs_changes(state, {**state["jobs"], job["id"]: {**job, "tasks": tasks}})


def _jobs_changes(state: State, jobs: dict[str, Any]) -> Changes:
    return {"jobs": jobs, "jobs_version": int(state.get("jobs_version", 0)) + 1}


def _retained(jobs: dict[str, Any]) -> dict[str, Any]:
    """Forget the oldest finished jobs past JOBS_RETAINED, or while the finished jobs' results
    exceed JOBS_RETAINED_BYTES_MAX (dicts keep submission order)."""
    finished = [job_id for job_id, job in jobs.items() if job["state"] in FINISHED]
    drop = set(finished[:max(0, len(finished) - JOBS_RETAINED)])
    kept_bytes = sum(jobs[job_id]["result_bytes"] for job_id in finished if job_id not in drop)
    for job_id in finished:
        if kept_bytes <= JOBS_RETAINED_BYTES_MAX:
            break
        if job_id not in drop:
            drop.add(job_id)
            kept_bytes -= jobs[job_id]["result_bytes"]
    return {job_id: job for job_id, job in jobs.items() if job_id not in drop} if drop else jobs


HANDLERS = {"submit_job": submit_job, "assign_tasks": assign_tasks, "complete_task": complete_task,
            "complete_tasks": complete_tasks, "fail_job": fail_job, "cancel_job": cancel_job}


def without_results(state: State) -> State:
    """The state with every task result left out: what data-only nodes receive in heartbeat
    replies (they run tasks; results are read from voters)."""
    if not any(t["result"] for job in state["jobs"].values() for t in job["tasks"]):
        return state
    jobs = {job_id: {**job, "tasks": [{**t, "result": b""} for t in job["tasks"]]}
            for job_id, job in state["jobs"].items()}
    return {**state, "jobs": jobs}
