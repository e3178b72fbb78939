"""shoal.chaos: kill, pause and partition a local cluster under load, and check what was lost.

    from shoal.chaos import run
    report = run("kill-leader", seed=7, report_dir=Path("out"))
    report.passed, report.to_dict()["checks"]

Scenarios (TOML) are in chaos/scenarios/; the format and the report format are in
chaos/DESIGN.md. The modules: scenario (parse + validate), faults (the seeded schedule and
the faults), netlab (network namespaces), workloads (clients recording a History),
runner (one run end to end), judgements (the checks), report (the model and report.json),
timeline (the picture), screen (the verdict on screen), repro (the repro folder).
"""
from __future__ import annotations

from shoal.chaos.faults import Fault, FaultRecord, PlannedFault, Schedule, build_schedule
from shoal.chaos.report import CheckResult, RunReport
from shoal.chaos.scenario import Scenario, ScenarioError, load_scenario, parse_scenario, shipped_names

def __getattr__(name: str) -> object:
    """`run` is imported on first use, so `python -m shoal.chaos.runner` does not find the
    module already imported by the package (runpy warns about that)."""
    if name == "run":
        from shoal.chaos.runner import run
        return run
    raise AttributeError(f"module 'shoal.chaos' has no attribute {name!r}")


__all__ = [
    "CheckResult", "Fault", "FaultRecord", "PlannedFault", "RunReport", "Scenario", "ScenarioError",
    "Schedule", "build_schedule", "load_scenario", "parse_scenario", "run", "shipped_names",
]
