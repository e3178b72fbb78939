"""Judgements: from what a run saw to one `CheckResult` per check.

`run_checks` picks the scenario's checks and runs them; each `check_*` judges one thing
(enough load, every fault run, linearizable, no lost writes, recovered, live after the
final heal, converged) and says why in one line. A checker that crashes is a failed check
with the error, never a lost report. The checkers themselves are in chaos/checkers/.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from shoal.chaos.history import Operation
from shoal.chaos.report import CheckResult

logger = logging.getLogger(__name__)


def run_checks(scenario: Any, schedule: Any, operations: Sequence[Operation], faults: Sequence[Any],
               final: Any, probe: Any, convergence: Any, *, workload_s: float | None = None) -> list[CheckResult]:
    """Every check of the scenario; types are those of faults/workloads/checkers (Any keeps
    this module importable without them). `workload_s`: how long the workload ran."""
    bounds = scenario.checks
    checks = [check_workload_valid(operations, schedule.first_fault_s, bounds.ops_min,
                                   bounds.ops_before_fault_min, workload_s=workload_s,
                                   deadline_s=scenario.workload_deadline_s),
              check_faults([record.to_dict() for record in faults])]
    if scenario.workload.kind == "register" and bounds.linearizable:
        checks.append(_guarded("linearizable", check_linearizable, operations, bounds.checker_timeout_s))
    if bounds.no_lost_writes:
        checks.append(_guarded("no_lost_writes", check_lost_writes, scenario.workload, operations, final))
    if bounds.recover_within_s > 0:
        checks.append(check_recovered([record.to_dict() for record in faults], operations, bounds.recover_within_s))
    checks.append(check_live(probe, bounds.live_within_s))
    checks.append(_guarded("converged", check_converged, convergence, bounds.converge_within_s))
    return checks


def check_recovered(faults: Sequence[dict[str, Any]], operations: Sequence[Operation],
                    within_s: float) -> CheckResult:
    """Availability under a minority fault: ok operations resume within `within_s` of the
    injection (the cluster must elect, fence and promote, and clients must follow)."""
    ok_ends = sorted(op.end_s for op in operations if op.outcome == "ok")
    judged, slow = 0, []
    for fault in faults:
        start, end = fault.get("start_s"), fault.get("end_s")
        if start is None or end is None or end - start <= within_s:
            continue
        judged += 1
        first_ok = next((t for t in ok_ends if t > start), None)
        gap = (first_ok if first_ok is not None else end) - start
        if first_ok is None or first_ok > start + within_s:
            slow.append(f"{fault['name']}: first ok operation {gap:.1f} s after injection")
    summary = "; ".join(slow) if slow else f"{judged} faults judged: ok operations resumed within {within_s:g} s"
    return CheckResult("recovered", not slow, summary, {"within_s": within_s, "judged": judged, "slow": slow})


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
    """Every scheduled fault was injected and healed; unavailable ones are named, not skipped."""
    bad = [f"{f['name']}: {f['status']}" + (f" ({f['reason']})" if f.get("reason") else "")
           for f in faults if f.get("status") != "healed"]
    summary = "; ".join(bad) if bad else f"{len(faults)} faults injected and healed"
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
