"""The outcome of a chaos run: verdict screen, report.json, timeline picture, repro folder.

report.json is a contract (DESIGN.md section 9; the format is in chaos/DESIGN.md):
`verdict` ("pass" | "fail"), `seed`, `ops` (the number of recorded operations) and
`checks`, one entry per check keyed by its name, each with `passed`. Everything else is
for people. The verdict is "pass" only when every check passed: an invalid run (too few
operations) or a fault that could not be injected here is a failed check with its reason,
never a silent pass.

The timeline is drawn with matplotlib's Agg backend (no display needed): fault intervals
as shaded bands, ok operations per 0.5 s, failed and unknown ones below.
"""
from __future__ import annotations

import json
import logging
import pathlib
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from shoal.chaos.history import Operation

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
TIMELINE_FILE = "timeline.png"
REPORT_FORMAT = "shoal-chaos-report"
REPORT_VERSION = 1
TIMELINE_WINDOW_S = 0.5


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    summary: str                    # one line for the verdict screen
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class RunReport:
    scenario: str
    seed: int
    started_at: str                 # ISO 8601 UTC
    duration_s: float = 0.0         # wall time of the whole run
    workload_s: float = 0.0         # planned workload time (final reads follow it)
    ops_by_outcome: dict[str, int] = field(default_factory=dict)
    ops_s_before_first_fault: float | None = None
    checks: list[CheckResult] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    schedule: dict[str, Any] = field(default_factory=dict)
    scenario_file: str = ""
    repro_dir: str | None = None    # set on failure
    error: str = ""                 # the harness itself failed (cluster did not start ...)

    @property
    def ops(self) -> int:
        return sum(self.ops_by_outcome.get(outcome, 0) for outcome in ("ok", "failed", "unknown"))

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def reasons(self) -> list[str]:
        reasons = [f"harness error: {self.error}"] if self.error else []
        reasons += [f"{check.name}: {check.summary}" for check in self.checks if not check.passed]
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT, "version": REPORT_VERSION,
            "verdict": self.verdict, "seed": self.seed, "ops": self.ops,
            "scenario": self.scenario, "scenario_file": self.scenario_file,
            "started_at": self.started_at, "duration_s": round(self.duration_s, 3),
            "workload_s": self.workload_s,
            "ops_by_outcome": dict(self.ops_by_outcome),
            "ops_s_before_first_fault": self.ops_s_before_first_fault,
            "checks": {check.name: {"passed": check.passed, "summary": check.summary,
                                    "details": check.details} for check in self.checks},
            "reasons": self.reasons(), "error": self.error,
            "faults": self.faults, "schedule": self.schedule,
            "timeline": TIMELINE_FILE, "repro": self.repro_dir,
        }


def write_report(directory: pathlib.Path, report: RunReport, operations: Sequence[Operation]) -> pathlib.Path:
    """report.json and timeline.png into `directory`; returns the report path."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        draw_timeline(directory / TIMELINE_FILE, operations, report.faults, workload_s=report.workload_s,
                      title=f"{report.scenario} seed {report.seed}: {report.verdict}")
    except Exception as exc:   # noqa: BLE001 - a broken picture must not hide the verdict
        logger.exception("timeline picture failed")
        report.error = report.error or f"timeline picture failed: {exc}"
    path = directory / REPORT_FILE
    path.write_text(json.dumps(report.to_dict(), indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return repr(value)


def throughput(operations: Iterable[Operation], window_s: float = TIMELINE_WINDOW_S) -> dict[str, list[int]]:
    """Completed operations per window, by outcome, windows from 0 to the last end."""
    ops = list(operations)
    count = int(max((op.end_s for op in ops), default=0.0) // window_s) + 1
    series = {outcome: [0] * count for outcome in ("ok", "failed", "unknown")}
    for op in ops:
        series[op.outcome][max(0, int(op.end_s // window_s))] += 1
    return series


def draw_timeline(path: pathlib.Path, operations: Sequence[Operation], faults: Sequence[dict[str, Any]],
                  *, title: str, workload_s: float = 0.0, window_s: float = TIMELINE_WINDOW_S) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = throughput(operations, window_s)
    times = [index * window_s for index in range(len(series["ok"]))]
    figure, (upper, lower) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1.4]})
    try:
        upper.step(times, [n / window_s for n in series["ok"]], where="post", color="tab:green", label="ok")
        upper.set_ylabel("ok ops/s")
        lower.step(times, series["failed"], where="post", color="tab:orange", label="failed")
        lower.step(times, series["unknown"], where="post", color="tab:red", label="unknown")
        lower.set_ylabel(f"per {window_s:g} s")
        lower.set_xlabel("seconds since workload start")
        colors = {"kill": "tab:red", "pause": "tab:purple", "restart": "tab:blue",
                  "partition": "tab:brown", "loss": "tab:olive"}
        for fault in faults:
            start, end = fault.get("start_s"), fault.get("end_s")
            if start is None:
                continue
            end = end if end is not None else (times[-1] if times else start)
            color = colors.get(str(fault.get("kind")), "tab:gray")
            for axes in (upper, lower):
                axes.axvspan(start, end, color=color, alpha=0.18, linewidth=0)
            label = f"{fault.get('name')} [{', '.join(fault.get('targets') or [])}]"
            upper.annotate(label, (start, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                           va="top", rotation=90, color=color)
        if workload_s > 0:
            for axes in (upper, lower):
                axes.axvline(workload_s, color="black", linestyle="--", linewidth=0.8)
            upper.annotate("workload stops, final reads", (workload_s, 0.5), xycoords=("data", "axes fraction"),
                           fontsize=8, rotation=90, va="center")
        upper.set_title(title)
        upper.legend(loc="upper right")
        lower.legend(loc="upper right")
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)


def render_verdict(report: RunReport, report_dir: pathlib.Path | None = None) -> None:
    """One screen: verdict, seed, ops by outcome, checks, faults with times (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    color = "green" if report.passed else "red"
    console.print(f"[bold {color}]{report.verdict.upper()}[/] {report.scenario}  seed={report.seed}  "
                  f"{report.duration_s:.1f} s")
    outcomes = report.ops_by_outcome
    rate = report.ops_s_before_first_fault
    console.print(f"ops {report.ops}: ok {outcomes.get('ok', 0)}, failed {outcomes.get('failed', 0)}, "
                  f"unknown {outcomes.get('unknown', 0)}"
                  + (f"; {rate:.0f} ops/s before the first fault" if rate is not None else ""))
    checks = Table(title="checks", show_lines=False)
    checks.add_column("check")
    checks.add_column("result")
    checks.add_column("detail", overflow="fold")
    for check in report.checks:
        checks.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.summary)
    console.print(checks)
    faults = Table(title="faults (s since workload start)")
    for column in ("fault", "targets", "start", "end", "status"):
        faults.add_column(column)
    for fault in report.faults:
        status = fault.get("status", "")
        if fault.get("reason"):
            status += f": {fault['reason']}"
        faults.add_row(str(fault.get("name")), ", ".join(fault.get("targets") or []),
                       _seconds(fault.get("start_s")), _seconds(fault.get("end_s")), status)
    if report.faults:
        console.print(faults)
    if report.error:
        console.print(f"[red]harness error:[/] {report.error}")
    if report_dir is not None:
        console.print(f"report: {report_dir / REPORT_FILE}   timeline: {report_dir / TIMELINE_FILE}")
    if report.repro_dir:
        console.print(f"repro folder: {report.repro_dir}")


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def report_from_dict(data: dict[str, Any]) -> RunReport:
    """Inverse of RunReport.to_dict (the parent of a netns run reads the child's report)."""
    checks = [CheckResult(name, bool(entry.get("passed")), str(entry.get("summary", "")),
                          dict(entry.get("details") or {}))
              for name, entry in (data.get("checks") or {}).items()]
    return RunReport(scenario=str(data.get("scenario", "")), seed=int(data.get("seed", 0)),
                     started_at=str(data.get("started_at", "")), duration_s=float(data.get("duration_s", 0.0)),
                     workload_s=float(data.get("workload_s", 0.0)),
                     ops_by_outcome=dict(data.get("ops_by_outcome") or {}),
                     ops_s_before_first_fault=data.get("ops_s_before_first_fault"), checks=checks,
                     faults=list(data.get("faults") or []), schedule=dict(data.get("schedule") or {}),
                     scenario_file=str(data.get("scenario_file", "")), repro_dir=data.get("repro"),
                     error=str(data.get("error", "")))


def write_repro(report_dir: pathlib.Path, scenario_text: str, scenario_name: str, seed: int,
                work_dir: pathlib.Path, logs: str) -> pathlib.Path:
    """The folder to reproduce a failure: seed, scenario, history, node logs, data dirs.

    The cluster's data dir (with every node's node.log) is moved, not copied: it is on the
    same file system, and LMDB files can be large.
    """
    repro = report_dir / "repro"
    repro.mkdir(parents=True, exist_ok=True)
    (repro / "seed").write_text(f"{seed}\n")
    (repro / "scenario.toml").write_text(scenario_text)
    history = report_dir / "history.jsonl"
    if history.exists():
        shutil.copyfile(history, repro / "history.jsonl")
    (repro / "logs-tail.txt").write_text(logs or "(no log tails collected)\n")
    if work_dir.exists():
        shutil.move(str(work_dir), str(repro / "data"))
        for log in (repro / "data").glob("cluster/*/node.log"):
            (repro / "logs").mkdir(exist_ok=True)
            shutil.copyfile(log, repro / "logs" / f"{log.parent.name}.log")
    (repro / "README").write_text(
        f"Reproduce: shoal chaos run {repro / 'scenario.toml'} --seed {seed}\n"
        f"scenario: {scenario_name}\nlogs/: every node's log; data/cluster/: the data dirs as the run left them;\n"
        "history.jsonl: every client operation (chaos/history.py format).\n")
    return repro


# ---- checks: from what the run saw to one CheckResult each ----
def run_checks(scenario: Any, schedule: Any, operations: Sequence[Operation], faults: Sequence[Any],
               final: Any, probe: Any, convergence: Any) -> list[CheckResult]:
    """Every check of the scenario; types are those of faults/workloads/checkers (Any keeps
    this module importable without them)."""
    bounds = scenario.checks
    checks = [check_workload_valid(operations, schedule.first_fault_s, bounds.ops_min,
                                   bounds.ops_s_before_fault_min),
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
                         rate_min: float) -> CheckResult:
    """Too little load proves nothing: the run is invalid below either bound."""
    total = len(operations)
    window_s = first_fault_s if first_fault_s is not None else max((op.end_s for op in operations), default=0.0)
    before = sum(1 for op in operations if op.end_s <= window_s)
    rate = before / window_s if window_s > 0 else 0.0
    problems = []
    if total < ops_min:
        problems.append(f"only {total} operations (need {ops_min})")
    if rate < rate_min:
        problems.append(f"only {rate:.1f} ops/s before the first fault (need {rate_min:g})")
    summary = ("INVALID run: " + "; ".join(problems)) if problems else \
        f"{total} operations, {rate:.0f} ops/s before the first fault"
    return CheckResult("workload_valid", not problems, summary,
                       {"ops": total, "ops_min": ops_min, "ops_s_before_first_fault": round(rate, 1),
                        "ops_s_min": rate_min})


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
