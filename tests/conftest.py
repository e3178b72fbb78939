"""Shared pytest fixtures and hooks for every test folder.

- `--run-slow`: tests marked `@pytest.mark.slow` (soaks, long chaos runs: more than ~20 s each)
  are skipped unless it is given; CI runs everything else.
- `dump_logs_on_failure(name, dumper)`: register a callable returning text (node logs); when
  the test fails in setup or call, its output is attached to the failure report as a section
  named "node logs: NAME", while the processes are still up. Any fixture that owns processes
  should register one, so a red CI run shows what the nodes said.
- `local_cluster(...)`: a factory of shoal.client.local.LocalCluster under tmp_path that
  starts the cluster (unless start=False) and always stops every cluster it made at
  teardown, failed test or not, then asserts that no node process is left.
- every test gets the root logger back as it found it (autouse): an in-process `shoal node start`
  (CliRunner) that gets past its config points logging at the runner's stderr, closed once the
  invoke ends, and a later test on the same worker then printed "--- Logging error ---".
- `--fuzz-seconds S` (or SHOAL_FUZZ_SECONDS=S): the fuzz targets of tests/fuzz run S seconds
  each instead of their small, fixed CI example counts; `fuzz(name, test, ci_examples=N)`
  runs one target (a @given function) under that budget and reports its example count.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shoal.client.local import LocalCluster

LogDumper = Callable[[], str]
_DUMPERS = pytest.StashKey[list[tuple[str, LogDumper]]]()
_FUZZ_REPORTS = pytest.StashKey[list[str]]()
CLUSTER_STOP_TIMEOUT_S = 10.0
FUZZ_SECONDS_ENV = "SHOAL_FUZZ_SECONDS"
FUZZ_ROUND_EXAMPLES_MAX = 1_000   # per hypothesis run in a timed fuzz; runs (fresh seeds) repeat until the time is up
FUZZ_ROUND_S_MAX = 10.0           # ... and each is sized to last about this long at most


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")
    parser.addoption("--fuzz-seconds", type=float, default=float(os.environ.get(FUZZ_SECONDS_ENV) or 0),
                     help=f"run each fuzz target (tests/fuzz) this long instead of its CI examples "
                          f"(default: ${FUZZ_SECONDS_ENV} or 0 = CI examples)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test, only with --run-slow")
    _own_port_range()


def _own_port_range() -> None:
    """Under pytest-xdist, give each worker its slice of the local-cluster port window
    (SHOAL_LOCAL_PORT_RANGE, inherited by chaos runs in subprocesses): two workers starting
    clusters at the same moment could otherwise both find one block free and collide."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker.startswith("gw") or not count.isdigit() or "SHOAL_LOCAL_PORT_RANGE" in os.environ:
        return
    from shoal.client.local import ports

    low, high = ports.default_window(1)
    high += ports.HTTP_PORT_OFFSET + 1   # default_window leaves room for a block's top; give the whole range
    share = (high - low) // int(count)
    start = low + int(worker[2:]) * share
    os.environ[ports.PORT_RANGE_ENV] = f"{start}-{start + share}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fuzz_seconds = float(config.getoption("--fuzz-seconds"))
    if fuzz_seconds > 0:   # a timed fuzz target runs past the default timeout; shrinking a find takes more
        for item in items:
            if "fuzz" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.timeout(3 * fuzz_seconds + 300))
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash.get(_FUZZ_REPORTS, [])
    if reports:
        terminalreporter.section("fuzz targets")
        for line in reports:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for name, dumper in item.stash.get(_DUMPERS, []):
            try:
                text = dumper()
            except Exception as exc:   # a broken dumper must not hide the real failure
                text = f"(could not collect logs: {exc!r})"
            report.sections.append((f"node logs: {name}", text))
    return report


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.fixture
def dump_logs_on_failure(request: pytest.FixtureRequest) -> Callable[[str, LogDumper], None]:
    """Register name -> dumper; the dumper's text joins the failure report if the test fails."""
    dumpers = request.node.stash.setdefault(_DUMPERS, [])

    def register(name: str, dumper: LogDumper) -> None:
        dumpers.append((name, dumper))
    return register


@pytest.fixture
def local_cluster(tmp_path: Path, dump_logs_on_failure: Callable[[str, LogDumper], None]
                  ) -> Iterator[Callable[..., LocalCluster]]:
    """Factory: local_cluster(nodes=None, *, data_dir=None, start=True, timeout_s=60, **kwargs).

    data_dir defaults to a new tmp_path/clusterK; kwargs go to LocalCluster (base_port,
    voters, env, zones, ...). Reusing a data_dir reopens the recorded cluster (and adopts
    its running nodes, so they are stopped at teardown too).
    """
    from shoal.client.local import LocalCluster

    clusters: list[LocalCluster] = []

    def make(nodes: int | None = None, *, data_dir: Path | None = None, start: bool = True,
             timeout_s: float = 60.0, **kwargs: Any) -> LocalCluster:
        path = data_dir if data_dir is not None else tmp_path / f"cluster{len(clusters) + 1}"
        cluster = LocalCluster(path, nodes=nodes, **kwargs)
        clusters.append(cluster)
        dump_logs_on_failure(str(path), cluster.dump_logs)
        if start:
            cluster.start(timeout_s)
        return cluster

    yield make
    problems = []
    for cluster in reversed(clusters):
        try:
            cluster.stop(timeout_s=CLUSTER_STOP_TIMEOUT_S)
        except Exception as exc:
            problems.append(f"{cluster.data_dir}: stop failed: {exc!r}")
        problems += [f"{cluster.data_dir}: {node_id} still running" for node_id in cluster.running()]
    assert not problems, "; ".join(problems)


@dataclasses.dataclass
class FuzzBudget:
    """Runs fuzz targets: `ci_examples` derandomized examples each by default, else random
    examples in runs sized to the time left (at most FUZZ_ROUND_EXAMPLES_MAX) until `seconds` passed."""

    seconds: float
    reports: list[str]

    def __call__(self, name: str, strategy: Any, check: Callable[[Any], object], *, ci_examples: int) -> int:
        """Feed examples of `strategy` to `check`, which raises on a failure; returns the examples run."""
        from hypothesis import HealthCheck, given, settings

        count = 0

        def run(examples: int, derandomize: bool) -> None:
            @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.filter_too_much])
            @given(strategy)
            def target(example: Any) -> None:
                nonlocal count
                count += 1
                check(example)
            target()
        started_s = time.monotonic()
        if self.seconds <= 0:
            run(ci_examples, derandomize=True)
            return count
        examples = 20
        while (left_s := self.seconds - (time.monotonic() - started_s)) > 0:
            before, round_started_s = count, time.monotonic()
            run(examples, derandomize=False)
            rate = (count - before) / max(time.monotonic() - round_started_s, 1e-3)   # examples per second
            round_s = min(left_s - (time.monotonic() - round_started_s), FUZZ_ROUND_S_MAX)
            examples = int(min(max(rate * round_s * 0.8, 10), FUZZ_ROUND_EXAMPLES_MAX))   # later examples are larger
        self.reports.append(f"{name}: {count} examples in {time.monotonic() - started_s:.1f} s, no failure")
        return count


@pytest.fixture
def fuzz(request: pytest.FixtureRequest) -> FuzzBudget:
    """The fuzz budget of this run (--fuzz-seconds); see FuzzBudget."""
    seconds = float(request.config.getoption("--fuzz-seconds"))
    return FuzzBudget(seconds, request.config.stash.setdefault(_FUZZ_REPORTS, []))
