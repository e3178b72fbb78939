"""Judgements of the jobs workload: every job's answer is the exact one.

`check_jobs_exact` (check `jobs_exact`) judges every job of the history against the
reference the harness computed from the records it wrote (job_workload.Reference):
- an ok job's rows equal the reference rows of its query; it has one task per shard,
  every task done, and each task's winning attempt scanned exactly the records of its
  shard, `records_scanned` the whole dataset: a shard counted twice or missed shows in the
  rows (the count query's answer is the record count) and names the shard in the tasks;
- a job may fail only because a shard had no replica left (the error says "no in-sync
  replica"); any other failure of a job the cluster accepted is a bug of the engine;
- no job may be stuck (still running JOB_TIMEOUT_S after its submit);
- at least one ok job overlapped a fault (it ran while the fault was in force), else the
  run tested nothing.
It reports how many jobs ran, how many overlapped a fault and how many saw re-run or
speculative attempts (`attempts > tasks_total`), and the first mismatch.

`check_final_jobs` is `no_lost_writes` for this workload: the jobs run after the final
heal answered, exactly (they read every record written at setup).
"""
from __future__ import annotations

from typing import Any, Sequence

from shoal.chaos.history import Operation
from shoal.chaos.report import CheckResult
from shoal.chaos.workloads import FINAL_PROCESS_BASE

NO_REPLICA = "no in-sync replica"    # the controller's words for a shard with no replica left


def check_jobs_exact(operations: Sequence[Operation], reference: Any,
                     faults: Sequence[dict[str, Any]]) -> CheckResult:
    if reference is None:
        return CheckResult("jobs_exact", False, "no reference answer: the workload's setup did not finish", {})
    jobs = [op for op in operations if op.kind == "job"]
    ok = [op for op in jobs if op.outcome == "ok"]
    mismatches = [f"{_describe(op)}: {problem}" for op in ok if (problem := job_problem(op, reference))]
    failures = [op for op in jobs if op.outcome == "failed" and _output(op).get("stage") == "job"]
    bad_failures = [f"{_describe(op)}: {_output(op).get('error')}" for op in failures
                    if NO_REPLICA not in str(_output(op).get("error"))]
    stuck = [f"{_describe(op)}: {_output(op).get('error')}" for op in jobs
             if op.outcome == "unknown" and _output(op).get("stuck")]
    windows = fault_windows(faults)
    overlapped = [op for op in ok if any(op.start_s < end_s and op.end_s > start_s for start_s, end_s in windows)]
    rerun = [op for op in ok if _output(op)["attempts"] > _output(op)["tasks_total"]]
    problems = []
    if mismatches:
        problems.append(f"{len(mismatches)} of {len(ok)} ok jobs differ from the reference; first: {mismatches[0]}")
    if bad_failures:
        problems.append(f"{len(bad_failures)} jobs failed with a replica left; first: {bad_failures[0]}")
    if stuck:
        problems.append(f"{len(stuck)} jobs stuck; first: {stuck[0]}")
    if windows and not overlapped:
        problems.append(f"none of the {len(ok)} ok jobs ran while a fault was in force: the run tested nothing")
    counts = (f"{len(jobs)} jobs ({len(ok)} ok, {len(failures)} failed, {len(rerun)} with re-run attempts, "
              f"{len(overlapped)} during a fault)")
    summary = "; ".join(problems) if problems else \
        f"{counts}: every answer exact ({reference.records} records, each shard counted once)"
    details = {"jobs": len(jobs), "ok": len(ok), "failed": len(failures), "rerun": len(rerun),
               "during_fault": len(overlapped), "submit_not_accepted": sum(
                   1 for op in jobs if op.outcome != "ok" and _output(op).get("stage") == "submit"),
               "mismatches": mismatches[:20], "bad_failures": bad_failures[:20], "stuck": stuck[:20],
               "reference": reference.to_dict()}
    return CheckResult("jobs_exact", not problems, summary, details)


def check_final_jobs(operations: Sequence[Operation], final: Any) -> CheckResult:
    """no_lost_writes of the jobs workload: after the final heal, a job of each query
    answered, exactly, so every record written at setup is there, once. (The workload tries
    each again until it answers; `final.complete` says whether both did: run_checks judges
    that first.)"""
    final_jobs = [op for op in operations if op.kind == "job" and op.process >= FINAL_PROCESS_BASE]
    answered = [op for op in final_jobs if op.outcome == "ok"]
    problems = []
    if final.reference is None:
        problems.append("no reference answer")
    else:
        problems += [f"{_describe(op)}: {problem}" for op in answered if (problem := job_problem(op, final.reference))]
    if not answered:
        problems.append("no final job answered")
    retried = len(final_jobs) - len(answered)
    summary = "; ".join(problems) if problems else (
        f"{len(answered)} final jobs after the heal read all {final.reference.records} records exactly"
        + (f" ({retried} attempts before them did not answer)" if retried else ""))
    return CheckResult("no_lost_writes", not problems, summary,
                       {"final_jobs": len(answered), "attempts_not_answered": retried, "problems": problems})


def job_problem(op: Operation, reference: Any) -> str:
    """What is wrong with an ok job's answer ("" when it is exact)."""
    output = _output(op)
    shards = len(reference.shard_records)
    if output.get("tasks_total") != shards or output.get("tasks_done") != shards:
        return f"{output.get('tasks_done')} of {output.get('tasks_total')} tasks done, the dataset has {shards} shards"
    for task in output["tasks"]:
        want = reference.shard_records[task["index"]]
        if task["records"] != want:
            return (f"shard {task['index']}: the winning attempt (node {task['node']}) scanned {task['records']} "
                    f"records, the shard holds {want}")
    if output.get("records_scanned") != reference.records:
        return f"scanned {output.get('records_scanned')} records, the dataset holds {reference.records}"
    return rows_difference(output["rows"], reference.rows[op.input])


def rows_difference(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    """"" when equal, else the first difference in one line."""
    if got == want:
        return ""
    if len(got) != len(want):
        return f"{len(got)} rows, {len(want)} expected"
    row, expected = next((g, w) for g, w in zip(got, want) if g != w)
    return f"row {row} differs from the reference {expected}"


def fault_windows(faults: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """[(in force from, healed at)] of every fault that was injected (seconds since the workload
    start); a fault never healed lasts to the end."""
    windows = []
    for fault in faults:
        start_s = fault.get("injected_s", fault.get("start_s"))
        if start_s is None or (fault.get("status") == "error" and not fault.get("targets")):
            continue
        end_s = fault.get("end_s")
        windows.append((float(start_s), float("inf") if end_s is None else float(end_s)))
    return windows


def _output(op: Operation) -> dict[str, Any]:
    return op.output if isinstance(op.output, dict) else {}


def _describe(op: Operation) -> str:
    job_id = _output(op).get("job_id", "")
    return f"{op.input} job {job_id[:8] or '(not accepted)'} [{op.start_s:.2f}, {op.end_s:.2f}]"
