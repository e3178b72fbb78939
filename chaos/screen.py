"""The verdict on screen: one rich-rendered page per run, printed at its end.

Verdict, seed and wall time; operations by outcome; how long the workload ran against its
planned schedule; one row per check; one row per fault with its times (seconds since
workload start); where the report and the repro folder are.
"""
from __future__ import annotations

import pathlib
from typing import Any

from shoal.chaos.report import REPORT_FILE, TIMELINE_FILE, RunReport


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
    if report.workload_s > 0:
        longer = report.workload_s > report.schedule_s + 0.5
        console.print(f"workload {report.workload_s:.1f} s (schedule {report.schedule_s:g} s"
                      + (f", ran on for ops_min, deadline {report.ops_deadline_s:g} s" if longer else "") + ")")
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
