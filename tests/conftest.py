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
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shoal.client.local import LocalCluster

LogDumper = Callable[[], str]
_DUMPERS = pytest.StashKey[list[tuple[str, LogDumper]]]()
CLUSTER_STOP_TIMEOUT_S = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test, only with --run-slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


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
