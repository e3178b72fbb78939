"""The report of a chaos run: the model (`RunReport`, `CheckResult`) and report.json.

report.json is a contract (DESIGN.md section 9; the format is in chaos/DESIGN.md):
`verdict` ("pass" | "fail"), `seed`, `ops` (the number of recorded operations) and
`checks`, one entry per check keyed by its name, each with `passed`. Everything else is
for people. The verdict is "pass" only when every check passed: an invalid run (too few
operations) or a fault that could not be injected here is a failed check with its reason,
never a silent pass.

`write_report` writes report.json and, beside it, the timeline picture (chaos/timeline.py);
`report_from_dict` reads report.json back. The checks are judged in chaos/judgements.py,
the screen is chaos/screen.py, the repro folder chaos/repro.py.
"""
from __future__ import annotations

import json
import logging
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from shoal.chaos.history import Operation
from shoal.chaos.timeline import draw_timeline

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
TIMELINE_FILE = "timeline.png"
REPORT_FORMAT = "shoal-chaos-report"
REPORT_VERSION = 1


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
    workload_s: float = 0.0         # seconds the workload actually ran (final reads follow it)
    schedule_s: float = 0.0         # planned schedule length (scenario duration_s): faults inside it
    ops_deadline_s: float = 0.0     # the workload could have run on until then for ops_min
    workload_stop: str = ""         # complete (schedule over, ops_min reached) | deadline
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
            "workload_s": round(self.workload_s, 3), "schedule_s": self.schedule_s,
            "ops_deadline_s": self.ops_deadline_s, "workload_stop": self.workload_stop,
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
                      schedule_s=report.schedule_s,
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


def report_from_dict(data: dict[str, Any]) -> RunReport:
    """Inverse of RunReport.to_dict (the parent of a netns run reads the child's report)."""
    checks = [CheckResult(name, bool(entry.get("passed")), str(entry.get("summary", "")),
                          dict(entry.get("details") or {}))
              for name, entry in (data.get("checks") or {}).items()]
    return RunReport(scenario=str(data.get("scenario", "")), seed=int(data.get("seed", 0)),
                     started_at=str(data.get("started_at", "")), duration_s=float(data.get("duration_s", 0.0)),
                     workload_s=float(data.get("workload_s", 0.0)), schedule_s=float(data.get("schedule_s", 0.0)),
                     ops_deadline_s=float(data.get("ops_deadline_s", 0.0)),
                     workload_stop=str(data.get("workload_stop", "")),
                     ops_by_outcome=dict(data.get("ops_by_outcome") or {}),
                     ops_s_before_first_fault=data.get("ops_s_before_first_fault"), checks=checks,
                     faults=list(data.get("faults") or []), schedule=dict(data.get("schedule") or {}),
                     scenario_file=str(data.get("scenario_file", "")), repro_dir=data.get("repro"),
                     error=str(data.get("error", "")))
