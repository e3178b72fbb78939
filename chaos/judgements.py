"""Judgements: from what a run saw to one `CheckResult` per check.

`run_checks` picks the scenario's checks and runs them; each `check_*` judges one thing
(enough load, every fault run, linearizable, no lost writes, recovered, live after the
final heal, converged; the jobs workload's checks are in job_judgements.py) and says why
in one line. A checker that crashes is a failed check
with the error, never a lost report. The checkers themselves are in chaos/checkers/.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from shoal.chaos.history import Operation
from shoal.chaos.report import CheckResult

logger = logging.getLogger(__name__)


def run_checks(scenario: Any, schedule: Any, operations: Sequence[Operation], faults: Sequence[Any],
               final: Any, probe: Any, convergence: Any, *, workload_s: float | None = None,
               metadata_versions: dict[str, int | None] | None = None, restoration: Any = None,
               final_copies: dict[str, Any] | None = None,
               learner_logs: dict[str, list[str]] | None = None, membership: Any = None) -> list[CheckResult]:
    """Every check of the scenario; types are those of faults/workloads/checkers (Any keeps
    this module importable without them). `workload_s`: how long the workload ran;
    `metadata_versions`: each running node's applied metadata version at the end (None:
    not collected, the check is left out); `restoration`, `final_copies`, `learner_logs`:
    what the replication_restored and copy_resumed checks judge (chaos/restoration.py);
    `membership`: what load_even and drained judge (chaos/membership.py)."""
    bounds = scenario.checks
    checks = [check_workload_valid(operations, schedule.first_fault_s, bounds.ops_min,
                                   bounds.ops_before_fault_min, workload_s=workload_s,
                                   deadline_s=scenario.workload_deadline_s),
              check_faults([record.to_dict() for record in faults])]
    if scenario.workload.kind == "register" and bounds.linearizable:
        checks.append(_guarded("linearizable", check_linearizable, operations, bounds.checker_timeout_s))
    if scenario.workload.kind == "jobs":
        from shoal.chaos.job_judgements import check_jobs_exact

        checks.append(_guarded("jobs_exact", check_jobs_exact, operations, final.reference,
                               [record.to_dict() for record in faults]))
    if bounds.no_lost_writes:
        checks.append(_guarded("no_lost_writes", check_lost_writes, scenario.workload, operations, final))
    if bounds.recover_within_s > 0:
        checks.append(check_recovered([record.to_dict() for record in faults], operations, bounds.recover_within_s,
                                      nodes=scenario.cluster.nodes,
                                      unit_of=recovery_unit(scenario.workload.kind, scenario.cluster.shards)))
    checks.append(check_live(probe, bounds.live_within_s))
    checks.append(_guarded("converged", check_converged, convergence, bounds.converge_within_s))
    if metadata_versions is not None:
        checks.append(check_metadata_converged(metadata_versions, bounds.converge_within_s))
    if bounds.replication_restored or bounds.copy_resumed:
        from shoal.chaos.restoration import check_copy_resumed, check_replication_restored

        if bounds.replication_restored:
            checks.append(_guarded("replication_restored", check_replication_restored, restoration, final_copies,
                                   convergence))
        if bounds.copy_resumed:
            checks.append(_guarded("copy_resumed", check_copy_resumed, [record.to_dict() for record in faults],
                                   learner_logs or {}))
    if bounds.load_even:
        from shoal.chaos.membership import check_load_even

        checks.append(_guarded("load_even", check_load_even, membership))
    if bounds.drained:
        from shoal.chaos.membership import check_drained

        checks.append(_guarded("drained", check_drained, membership, [record.to_dict() for record in faults]))
    return checks


def check_recovered(faults: Sequence[dict[str, Any]], operations: Sequence[Operation], within_s: float, *,
                    nodes: int | None = None, unit_of: Callable[[Operation], str] | None = None) -> CheckResult:
    """Availability under a minority fault, per key: after each fault that leaves a majority
    of the `nodes` up, every key (`unit_of`, see `recovery_unit`) the workload was exercising
    must have an ok operation within `within_s` of the injection (the cluster must elect,
    fence and promote, and clients must follow). One key stuck fails the check, however
    well the others do; the failure names the worst key and its stall.

    A key's stall (`_stall`) is what its operations prove: from the injection (`injected_s`)
    to the end of its last failed or unknown operation invoked before its first ok one. A key not
    tried meanwhile is not stalled (the workload picks keys at random). Faults whose targets,
    with those of the faults overlapping them, are a majority are not judged.
    """
    unit = unit_of or (lambda op: f"key {op.key}")
    by_unit: dict[str, list[Operation]] = {}
    for op in sorted(operations, key=lambda op: op.start_s):
        by_unit.setdefault(unit(op), []).append(op)
    judged, slow, skipped = 0, [], []
    worst: tuple[float, str, str] | None = None    # (stall, unit, fault)
    for fault in faults:
        # When the injection call returned (the fault is in force), not when it began: the
        # harness first looks up its target, and ops served meanwhile prove nothing.
        injected_s = fault.get("injected_s", fault.get("start_s"))
        if injected_s is None or fault.get("start_s") is None or \
                (fault.get("status") == "error" and not fault.get("targets")):
            continue        # never injected: the faults check reports it
        down = _down_with(fault, faults, within_s)
        if nodes is not None and len(down) > (nodes - 1) // 2:
            skipped.append(f"{fault['name']}: {len(down)} of {nodes} nodes down")
            continue
        judged += 1
        stalls = {name: stall for name, ops in by_unit.items() if (stall := _stall(ops, injected_s)) is not None}
        over = sorted(((stall[0], name) for name, stall in stalls.items() if stall[0] > within_s), reverse=True)
        exercised = sum(1 for ops in by_unit.values() if ops[-1].start_s >= injected_s)
        for stall_s, name in over[:1]:
            recovered_s = stalls[name][1]
            recovery = f"ok again at {recovered_s:.1f} s" if recovered_s is not None else "no ok operation after it"
            slow.append(f"{fault['name']}: {name} stalled {stall_s:.1f} s after the injection at {injected_s:.1f} s "
                        f"({recovery}; {len(over)} of {exercised} keys over {within_s:g} s)")
        for name, (stall_s, _) in stalls.items():
            if worst is None or stall_s > worst[0]:
                worst = (stall_s, name, str(fault["name"]))
    worst_text = "" if worst is None else f"; worst: {worst[1]} {worst[0]:.1f} s ({worst[2]})"
    summary = "; ".join(slow) if slow else \
        f"{judged} faults judged per key: every key had an ok operation within {within_s:g} s{worst_text}"
    details = {"within_s": within_s, "judged": judged, "slow": slow, "not_judged": skipped,
               "worst": None if worst is None else {"unit": worst[1], "stall_s": round(worst[0], 3), "fault": worst[2]}}
    return CheckResult("recovered", not slow, summary, details)


def recovery_unit(kind: str, shards: int) -> Callable[[Operation], str]:
    """What `recovered` judges separately, by workload: register keys; set adds by the
    shard of their element (the history names the dataset, the element names the key);
    bulk batches as one (each put_many batch spans every shard: an ok one means every
    shard answered, a shard that is down fails them all)."""
    if kind == "register":
        return lambda op: f"key {op.key}"
    if kind == "set":
        from shoal.chaos.workloads import shard_of

        return lambda op: f"shard {shard_of(f'e{op.input}', shards)}" if op.kind == "add" else f"dataset {op.key}"
    return lambda op: f"dataset {op.key}"


def _stall(ops: Sequence[Operation], injected_s: float) -> tuple[float, float | None] | None:
    """(stall seconds, end of the first ok operation or None) of one key after an injection;
    None when no operation of it failed after the injection before one succeeded. `ops`
    are sorted by start; only those invoked after the injection count."""
    after = [op for op in ops if op.start_s >= injected_s]
    first_ok = next((op for op in after if op.outcome == "ok"), None)
    until_s = first_ok.start_s if first_ok is not None else float("inf")
    failed_ends = [op.end_s for op in after if op.outcome != "ok" and op.start_s < until_s]
    if not failed_ends:
        return None
    stalled_until_s = max(failed_ends)
    if first_ok is not None:     # a failure still running when another thread succeeded
        stalled_until_s = min(stalled_until_s, first_ok.end_s)
    return stalled_until_s - injected_s, None if first_ok is None else first_ok.end_s


def _down_with(fault: dict[str, Any], faults: Sequence[dict[str, Any]], within_s: float) -> set[str]:
    """The targets of `fault` and of every fault active during its judged window."""
    start_s = fault["start_s"]
    down = set(fault.get("targets") or ())
    for other in faults:
        other_start_s, other_end_s = other.get("start_s"), other.get("end_s")
        if other_start_s is None or other is fault:
            continue
        if other_start_s < start_s + within_s and (other_end_s is None or other_end_s > start_s):
            down.update(other.get("targets") or ())
    return down


def _guarded(name: str, check: Any, *args: Any) -> CheckResult:
    """A checker that crashes is a failed check with the error, not a lost report."""
    try:
        result: CheckResult = check(*args)
        return result
    except Exception as exc:   # noqa: BLE001
        logger.exception("checker %s crashed", name)
        return CheckResult(name, False, f"checker crashed: {type(exc).__name__}: {exc}", {})


def check_workload_valid(operations: Sequence[Operation], first_fault_s: float | None, ops_min: int,
                         ops_before_fault_min: int, *, workload_s: float | None = None,
                         deadline_s: float | None = None) -> CheckResult:
    """Too little load proves nothing: the run is invalid below either bound. Both are
    counts, not rates: the runner lets the workload run on past its schedule until it has
    ops_min operations (up to `deadline_s`), so a busy machine gives a longer run, not an
    invalid one; ok operations before the first fault show the cluster was serving (a
    stuck workload has none, however fast the machine)."""
    total = len(operations)
    window_s = first_fault_s if first_fault_s is not None else max((op.end_s for op in operations), default=0.0)
    before = sum(1 for op in operations if op.end_s <= window_s)
    ok_before = sum(1 for op in operations if op.end_s <= window_s and op.outcome == "ok")
    rate = before / window_s if window_s > 0 else 0.0
    ran = f" in {workload_s:.1f} s" if workload_s is not None else ""
    problems = []
    if total < ops_min:
        limit = f" by ops_deadline_s = {deadline_s:g} s" if deadline_s is not None else ""
        problems.append(f"only {total} operations{ran} (need {ops_min}{limit})")
    if ok_before < ops_before_fault_min:
        problems.append(f"only {ok_before} ok operations before the first fault at {window_s:.1f} s "
                        f"(need {ops_before_fault_min}): the workload was stuck")
    summary = ("INVALID run: " + "; ".join(problems)) if problems else \
        f"{total} operations{ran}, {ok_before} ok before the first fault"
    return CheckResult("workload_valid", not problems, summary,
                       {"ops": total, "ops_min": ops_min, "ops_deadline_s": deadline_s,
                        "workload_s": None if workload_s is None else round(workload_s, 3),
                        "ok_ops_before_first_fault": ok_before, "ops_before_fault_min": ops_before_fault_min,
                        "ops_s_before_first_fault": round(rate, 1)})


def check_faults(faults: Sequence[dict[str, Any]]) -> CheckResult:
    """Every scheduled fault was injected and healed (a crash: injected and left down, as
    planned; a join or drain: done); unavailable ones are named, not skipped."""
    from shoal.chaos.scenario import ONE_SHOT_STATUS

    def done(fault: dict[str, Any]) -> bool:
        return fault.get("status") == ONE_SHOT_STATUS.get(str(fault.get("kind")), "healed")

    bad = [f"{f['name']}: {f['status']}" + (f" ({f['reason']})" if f.get("reason") else "")
           for f in faults if not done(f)]
    crashed = sum(1 for f in faults if f.get("kind") == "crash")
    left_down = f" ({crashed} crashed node{'s' if crashed > 1 else ''} left down)" if crashed else ""
    summary = "; ".join(bad) if bad else f"{len(faults)} faults injected and healed{left_down}"
    return CheckResult("faults", not bad, summary, {"not_run": bad})


def check_linearizable(operations: Sequence[Operation], timeout_s: float) -> CheckResult:
    from shoal.chaos.checkers.linearizability import check_register

    register_ops = [op for op in operations if op.kind in ("read", "write", "cas")]
    result = check_register(register_ops, timeout_s)
    if result.verdict == "timeout":
        summary = f"checker timed out after {timeout_s:g} s (a timeout is a failure)"
    elif result.ok:
        summary = f"{len(register_ops)} register operations linearizable ({result.elapsed_s:.1f} s)"
    else:
        first = next((kv.explanation for kv in result.per_key.values() if kv.verdict != "ok"), "")
        summary = f"NOT linearizable: {first.splitlines()[0] if first else result.verdict}"
    return CheckResult("linearizable", result.ok, summary, result.to_dict())


def check_lost_writes(workload: Any, operations: Sequence[Operation], final: Any) -> CheckResult:
    """Acknowledged writes must be read back after the final heal."""
    if not final.complete:
        return CheckResult("no_lost_writes", False, f"final read incomplete: {final.detail}", {})
    if workload.kind == "register":
        return _register_lost(operations, final.values)
    if workload.kind == "set":
        return _set_lost(operations, final.elements)
    if workload.kind == "jobs":
        from shoal.chaos.job_judgements import check_final_jobs

        return check_final_jobs(operations, final)
    return _bulk_lost(operations, final.elements, workload.batch_records)


def _register_lost(operations: Sequence[Operation], values: dict[str, Any]) -> CheckResult:
    """Each key's final value was written by a write that may have happened (ok or unknown),
    and a key with an acknowledged write is not absent (the workload never deletes)."""
    problems = []
    for key, value in sorted(values.items()):
        ops = [op for op in operations if op.key == key and op.kind in ("write", "cas")]
        possible = {op.input if op.kind == "write" else op.input[1] for op in ops
                    if op.outcome == "unknown" or (op.outcome == "ok" and (op.kind == "write" or op.output))}
        acknowledged = any(op.outcome == "ok" and (op.kind == "write" or op.output) for op in ops)
        if value is None and acknowledged:
            problems.append(f"{key}: absent after acknowledged writes")
        elif value is not None and value not in possible:
            problems.append(f"{key}: holds {value!r}, which no successful or unknown write wrote")
    summary = "; ".join(problems) if problems else f"{len(values)} registers hold acknowledged or possible values"
    return CheckResult("no_lost_writes", not problems, summary, {"final_values": values, "problems": problems})


def _set_lost(operations: Sequence[Operation], elements: set[Any]) -> CheckResult:
    from shoal.chaos.checkers import check_set

    adds = [op for op in operations if op.kind == "add"]
    result = check_set(adds, sorted(elements))
    details: dict[str, Any] = {name: list(getattr(result, name)[:100]) for name in
               ("lost", "failed_but_present", "unexpected", "duplicated")}
    details.update(attempted=result.attempted, acknowledged=result.acknowledged, present=result.present,
                   unknown_present=result.unknown_present, unknown_absent=result.unknown_absent)
    return CheckResult("no_lost_writes", bool(result.ok), result.summary().splitlines()[0], details)


def _bulk_lost(operations: Sequence[Operation], keys: set[Any], batch_records: int) -> CheckResult:
    """Every acknowledged batch complete; no key of a batch that was never sent."""
    acknowledged = [op.input for op in operations if op.kind == "add_batch" and op.outcome == "ok"]
    attempted = {op.input for op in operations if op.kind == "add_batch"}
    incomplete = [batch for batch in acknowledged
                  if any(f"b{batch}-{i}" not in keys for i in range(batch_records))]
    strays = sorted(key for key in keys if int(str(key)[1:].split("-")[0]) not in attempted)
    problems = []
    if incomplete:
        problems.append(f"{len(incomplete)} acknowledged batches incomplete (first: {incomplete[:5]})")
    if strays:
        problems.append(f"{len(strays)} keys from batches never sent (first: {strays[:5]})")
    summary = "; ".join(problems) if problems else \
        f"{len(acknowledged)} acknowledged batches of {batch_records} all read back"
    return CheckResult("no_lost_writes", not problems, summary,
                       {"acknowledged_batches": len(acknowledged), "records_found": len(keys),
                        "incomplete_batches": incomplete[:100], "stray_keys": strays[:100]})


def check_live(probe: Any, within_s: float) -> CheckResult:
    if probe is None:
        return CheckResult("live_after_heal", False, "the liveness probe did not run", {})
    return CheckResult("live_after_heal", bool(probe.passed), probe.detail,
                       {"elapsed_s": round(probe.elapsed_s, 3), "within_s": within_s})


def check_converged(convergence: Any, within_s: float) -> CheckResult:
    if convergence is None:
        return CheckResult("converged", False, "replica checksums were not collected", {})
    lines = convergence.summary().splitlines()
    summary = f"{convergence.shards_checked} shards, in-sync replicas have equal checksums"
    if not convergence.ok:
        summary = f"not converged within {within_s:g} s: " + "; ".join(line.strip() for line in lines[1:4])
    details = {"shards_checked": convergence.shards_checked, "differing": lines[1:]}
    return CheckResult("converged", bool(convergence.ok), summary, details)


def metadata_lag(versions: dict[str, int | None]) -> dict[str, str]:
    """Nodes whose applied metadata version is not the newest any node has (or that did not
    answer) -> why; {} when every node is at the same version."""
    newest = max((v for v in versions.values() if v is not None), default=None)
    return {node: ("no answer" if version is None else f"at version {version}, newest {newest}")
            for node, version in sorted(versions.items()) if version is None or version != newest}


def check_metadata_converged(versions: dict[str, int | None], within_s: float) -> CheckResult:
    """After the final heal every running node applies the metadata log up to the same
    version within `within_s`: a node left behind (a Raft follower that never catches up)
    has a stale view and never a valid lease, and a client it answers sees the past."""
    lag = metadata_lag(versions)
    if not versions:
        return CheckResult("metadata_converged", False, "no running node answered", {"versions": versions})
    summary = (f"not converged within {within_s:g} s: " + "; ".join(f"{node} {why}" for node, why in lag.items())) \
        if lag else f"{len(versions)} nodes at metadata version {next(iter(versions.values()))}"
    return CheckResult("metadata_converged", not lag, summary, {"versions": versions, "behind": lag})
