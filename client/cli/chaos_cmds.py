"""`shoal chaos run SCENARIO` and `shoal chaos ls`: the chaos harness from the command line.

shoal.chaos is imported inside the commands, so `shoal --help` and every other command
start without loading matplotlib or the harness. `run` prints the seed first, then the
verdict screen, and exits 0 only on a pass (1 on a fail, 2 on a bad scenario or flag),
so scripts and CI can use it directly; DIR/report.json is the machine-readable result.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from shoal.client.cli._common import INT64_MAX, one_line, seconds_range

DURATION_S_MAX = 7 * 86_400.0    # a week of workload
CHECK_S_MAX = 86_400.0           # a day of checker budget

chaos_app = typer.Typer(help="Kill, pause and partition a local cluster under load; get a verdict.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `chaos` command group (run, ls, check) to the shoal app."""
    app.add_typer(chaos_app, name="chaos")


@chaos_app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="A shipped scenario name (see `shoal chaos ls`) or a TOML file.")],
    seed: Annotated[int | None, typer.Option("--seed", min=0, max=INT64_MAX, help="Fixes every random choice; "
                                             "the same seed replays the same fault schedule (default: a random seed, printed).")]
    = None,
    report: Annotated[Path | None, typer.Option("--report", file_okay=False, help="Directory for report.json, timeline.png and, "
                                                "on failure, the repro folder (default: a new temp dir, printed).")] = None,
    duration_s: Annotated[float | None, typer.Option(
        "--duration", callback=seconds_range(1.0, DURATION_S_MAX), help="Seconds of workload; a run at least twice the scenario's length repeats "
        "its faults every scenario length.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the harness does.")] = False,
) -> None:
    """Run one chaos scenario against a fresh local cluster and print the verdict."""
    from shoal.chaos.runner import run as run_scenario
    from shoal.chaos.scenario import ScenarioError

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if report is not None:
        try:
            report.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"cannot create the report directory {report}: {exc.strerror or exc}")
    try:
        result = run_scenario(scenario, seed=seed, report_dir=report, duration_s=duration_s)
    except ScenarioError as exc:
        _fail(str(exc), code=2)
    except OSError as exc:        # the report directory filled up or went away mid-run
        _fail(f"chaos run failed: {exc}")
    except KeyboardInterrupt:
        _fail("interrupted: the nodes were stopped (and any network namespaces removed); no verdict", code=130)
    raise typer.Exit(0 if result.passed else 1)


@chaos_app.command("ls")
def ls() -> None:
    """List the shipped scenarios: name, cluster, workload, faults, duration."""
    from rich.console import Console
    from rich.table import Table

    from shoal.chaos.scenario import ScenarioError, load_scenario, shipped_names

    table = Table(title="shipped chaos scenarios (shoal chaos run NAME)", show_lines=True)
    table.add_column("name", no_wrap=True)
    table.add_column("setup", ratio=1)
    table.add_column("description", ratio=2)
    for name in shipped_names():
        try:
            scenario = load_scenario(name)
        except ScenarioError as exc:
            table.add_row(name, "[red]invalid[/]", str(exc))
            continue
        shape = scenario.cluster
        faults = ", ".join(f"{f.kind} {f.target}" for f in scenario.faults) or "no faults"
        table.add_row(name, f"{faults}; {scenario.workload.kind} x{scenario.workload.clients}; "
                      f"{shape.nodes} nodes ({shape.network}); {scenario.duration_s:g} s", scenario.description)
    Console().print(table)


@chaos_app.command("check")
def check(
    history: Annotated[Path, typer.Argument(help="history.jsonl of a run, or a JSON list of operations "
                                            "({process, kind, key, input, output, outcome, start_s, end_s}).")],
    timeout_s: Annotated[float, typer.Option("--timeout", callback=seconds_range(0.1, CHECK_S_MAX),
                                             help="Checker budget; running out is a failure.")] = 60.0,
) -> None:
    """Check a recorded register history for linearizability (exit 0 only if it is)."""
    from shoal.chaos.checkers.linearizability import check_register
    from shoal.chaos.history import operations_from_json

    try:
        operations = operations_from_json(history.read_text())
        result = check_register([op for op in operations if op.kind in ("read", "write", "cas")], timeout_s)
    except OSError as exc:
        _fail(f"cannot read {history}: {exc.strerror}")
    except (ValueError, KeyError, TypeError) as exc:
        _fail(f"{history}: not a register history ({type(exc).__name__}: {exc})")
    except RecursionError:
        _fail(f"{history}: not a register history (JSON nested too deeply)")
    typer.echo(result.summary())
    raise typer.Exit(0 if result.ok else 1)


def _fail(message: str, *, code: int = 1) -> NoReturn:
    typer.secho(f"error: {one_line(message)}", fg="red", err=True)
    raise typer.Exit(code)
