"""The metadata_converged check: after the final heal every node applies the same metadata.

A Raft follower that never catches up (pysyncobj's AppendEntries back-off livelock, found by
the jobs scenarios of issue 17.8) keeps an old view and never a valid lease, while its
shards look fine to the replica checksums; this check names it.
"""
from __future__ import annotations

from types import SimpleNamespace

from shoal.chaos.judgements import check_metadata_converged, metadata_lag, run_checks
from shoal.chaos.scenario import parse_scenario


def test_metadata_lag_names_nodes_behind_or_silent() -> None:
    """Equal versions: nothing; a node behind or not answering is named with why."""
    assert metadata_lag({"n1": 40, "n2": 40, "n3": 40}) == {}
    assert metadata_lag({"n1": 12, "n2": 40, "n3": None}) == {"n1": "at version 12, newest 40", "n3": "no answer"}


def test_metadata_converged_check() -> None:
    """Pass names the version; failure names the node left behind."""
    ok = check_metadata_converged({"n1": 7, "n2": 7}, 20)
    assert ok.passed and ok.summary == "2 nodes at metadata version 7"
    stuck = check_metadata_converged({"n1": 3, "n2": 7, "n3": 7}, 20)
    assert not stuck.passed and stuck.summary == "not converged within 20 s: n1 at version 3, newest 7"
    assert not check_metadata_converged({}, 20).passed


def test_metadata_converged_only_when_collected() -> None:
    """run_checks adds the check when the runner collected the versions."""
    scenario = parse_scenario("duration_s = 10\n[checks]\nlinearizable = false\nno_lost_writes = false\n")
    schedule = SimpleNamespace(first_fault_s=None)
    probe = SimpleNamespace(passed=True, detail="", elapsed_s=0.1)
    convergence = SimpleNamespace(ok=True, shards_checked=1, summary=lambda: "ok")
    names = [c.name for c in run_checks(scenario, schedule, [], [], None, probe, convergence)]
    assert "metadata_converged" not in names
    names = [c.name for c in run_checks(scenario, schedule, [], [], None, probe, convergence,
                                        metadata_versions={"n1": 1})]
    assert names[-1] == "metadata_converged"
