"""Scenario parsing and validation: shipped files load, bad TOML gives errors naming the field."""
from __future__ import annotations

import pytest

from shoal.chaos.scenario import (
    ScenarioError, Span, load_scenario, parse_scenario, scenario_path, shipped_names,
)

MINIMAL = """
duration_s = 10
[[faults]]
kind = "kill"
target = "leader"
start_s = [2.0, 3.0]
duration_s = 2.5
"""


def parse(text: str):
    return parse_scenario(text, source="/x/bad.toml", default_name="bad")


def error_of(text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse(text)
    return str(caught.value)


def test_scenario_minimal_gets_defaults() -> None:
    """A file with only a duration and one fault gets the documented defaults."""
    scenario = parse(MINIMAL)
    assert scenario.name == "bad"
    assert (scenario.cluster.nodes, scenario.cluster.voters, scenario.cluster.replication) == (3, 3, 3)
    assert scenario.workload.kind == "register" and scenario.workload.keys == 8
    assert scenario.faults[0].start_s == Span(2.0, 3.0)
    assert scenario.faults[0].duration_s == Span(2.5, 2.5)
    assert scenario.checks.ops_min == 2000 and scenario.checks.live_within_s == 5.0
    assert scenario.checks.ops_before_fault_min == 20
    assert scenario.ops_deadline_s == 0.0 and scenario.workload_deadline_s == 40.0   # 4 x duration_s
    assert scenario.cluster.network == "loopback"


def test_scenario_shipped_all_parse() -> None:
    """Every shipped scenario loads, and the CI smoke set is among them."""
    names = shipped_names()
    assert {"kill-leader", "kill-primary", "pause-primary", "partition-leader"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.faults, name
        assert scenario.description, name


def test_scenario_network_fault_implies_netns() -> None:
    """A partition or loss fault puts the nodes in namespaces unless told otherwise."""
    scenario = parse(MINIMAL.replace('"kill"', '"partition"'))
    assert scenario.needs_netns
    loss = MINIMAL.replace('"kill"', '"loss"').replace('target = "leader"', 'target = "leader"\npercent = 30')
    message = error_of(loss + '[cluster]\nnetwork = "loopback"\n')
    assert "faults[0].kind" in message and "netns" in message


def test_scenario_invalid_toml_names_file() -> None:
    """A TOML syntax error names the file."""
    message = error_of("duration_s = = 3")
    assert message.startswith("bad.toml: not valid TOML")


@pytest.mark.parametrize(("snippet", "expected"), [
    ('duration_s = 10\nfoo = 1', "top level: unknown key(s) foo"),
    ('duration_s = 10\n[cluster]\nnodez = 3', "cluster: unknown key(s) nodez"),
    ('duration_s = 10\n[cluster.knobs]\nlease = 1.0', "cluster.knobs: unknown key(s) lease"),
    ('duration_s = 10\n[cluster.knobs]\nlmdb_sync = 1', "cluster.knobs.lmdb_sync: expected true or false"),
    ('duration_s = 10\n[cluster]\nnodes = "3"', "cluster.nodes: expected an integer"),
    ('duration_s = 10\n[cluster]\nvoters = 2', "cluster.voters: must be 1, 3 or 5"),
    ('duration_s = 10\n[cluster]\nreplication = 4', "cluster.replication: must be within 1..nodes"),
    ('duration_s = 10\n[workload]\nkind = "queue"', "workload.kind: expected one of register, set, bulk"),
    ('[cluster]\nnodes = 3', "duration_s: missing"),
    ('duration_s = 10\n[workload]\nkind = "set"', "checks.linearizable: needs workload.kind"),
    ('duration_s = 10\n[checks]\nchecker_timeout_s = 0', "checks.checker_timeout_s: must be positive"),
    ('duration_s = 10\nops_deadline_s = 5', "ops_deadline_s: must be within [duration_s, 14400]"),
    ('duration_s = 10\nops_deadline_s = "long"', "ops_deadline_s: expected a number"),
    ('duration_s = 10\n[checks]\nops_before_fault_min = 2.5', "checks.ops_before_fault_min: expected an integer"),
    ('duration_s = 10\n[checks]\nops_s_before_fault_min = 30',
     "checks.ops_s_before_fault_min: replaced by ops_before_fault_min, a count"),
])
def test_scenario_bad_field_named(snippet: str, expected: str) -> None:
    """Each kind of mistake is reported with the field path."""
    assert expected in error_of(snippet)


@pytest.mark.parametrize(("fault", "expected"), [
    ('kind = "kill"\ntarget = "ledaer"', "faults[0].target: expected one of any, leader"),
    ('kind = "explode"', "faults[0].kind: expected one of kill"),
    ('target = "leader"', "faults[0].kind: missing"),
    ('kind = "kill"\ntarget = "node-4"', "faults[0].target: node-4 does not exist"),
    ('kind = "kill"\nstart_s = 0.2', "faults[0].start_s: must be at least 1.0 s"),
    ('kind = "kill"\nstart_s = [3.0, 2.0]', "faults[0].start_s: low 3.0 is above high 2.0"),
    ('kind = "kill"\nstart_s = [1, 2, 3]', "faults[0].start_s: expected a number or [low, high]"),
    ('kind = "kill"\nstart_s = 8\nduration_s = 3', "faults[0]: may end at 11.0 s"),
    ('kind = "loss"\ntarget = "leader"', "faults[0].percent: loss needs percent"),
    ('kind = "kill"\npercent = 5', "faults[0].percent: only loss faults"),
    ('kind = "kill"\ndirection = "inbound"', "faults[0].direction: only partition faults"),
    ('kind = "partition"\ndirection = "sideways"', "faults[0].direction: expected one of both"),
    ('kind = "pause"\ncut_clients = true', "faults[0].cut_clients: only partition and loss"),
    ('kind = "kill"\nwhen = 3', "faults[0]: unknown key(s) when"),
    ('kind = "wipe"\ndirection = "inbound"', "faults[0].direction: only partition faults"),
])
def test_scenario_bad_fault_named(fault: str, expected: str) -> None:
    """Fault mistakes name faults[i] and the field."""
    assert expected in error_of(f"duration_s = 10\n[[faults]]\n{fault}\n")


def test_scenario_minority_needs_three_nodes() -> None:
    """A minority of a 1-node cluster is empty: rejected."""
    message = error_of('duration_s = 10\n[cluster]\nnodes = 1\nvoters = 1\nreplication = 1\n'
                       '[[faults]]\nkind = "kill"\ntarget = "minority"\n')
    assert "faults[0].target: minority needs at least 3 nodes" in message


def test_scenario_path_unknown_name_lists_shipped() -> None:
    """An unknown name says what is shipped."""
    with pytest.raises(ScenarioError, match="shipped: .*kill-leader"):
        scenario_path("no-such-scenario")


def test_scenario_load_from_file(tmp_path) -> None:
    """A scenario file outside the package loads by path; its name defaults to the stem."""
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL)
    scenario = load_scenario(str(path))
    assert scenario.name == "mine" and scenario.source == str(path) and scenario.text == MINIMAL


def test_scenario_ops_deadline_explicit() -> None:
    """ops_deadline_s set in the file is used as it is; equal to duration_s means no extension."""
    assert parse("ops_deadline_s = 25\n" + MINIMAL).workload_deadline_s == 25.0
    assert parse("ops_deadline_s = 10\n" + MINIMAL).workload_deadline_s == 10.0


def test_scenario_wipe_restarts_before_node_dead() -> None:
    """A wipe's downtime must stay below the node_dead_after_s knob (when the scenario sets
    it): the wiped node must come back while the cluster still counts it alive."""
    wipe = 'duration_s = 10\n[cluster.knobs]\nnode_dead_after_s = 3.0\n[[faults]]\nkind = "wipe"\ntarget = "primary"\n'
    message = error_of(wipe + "duration_s = [1.0, 3.0]\n")
    assert "faults[0].duration_s: a wiped node restarts before node_dead_after_s (3 s" in message
    assert parse(wipe + "duration_s = [0.5, 1.0]\n").faults[0].kind == "wipe"
    assert parse(wipe.replace('"wipe"', '"kill"') + "duration_s = [1.0, 3.0]\n").faults[0].kind == "kill"


def test_scenario_shipped_wipe_and_long_pause() -> None:
    """The issue-15 scenarios: wipe-primary and pause-leader-long check linearizability, lost
    writes, liveness, convergence and per-key recovery."""
    for name, kind in (("wipe-primary", "wipe"), ("pause-leader-long", "pause")):
        scenario = load_scenario(name)
        assert {f.kind for f in scenario.faults} == {kind}
        assert scenario.workload.kind == "register"
        checks = scenario.checks
        assert checks.linearizable and checks.no_lost_writes and checks.recover_within_s > 0
    assert load_scenario("pause-leader-long").faults[0].target == "leader"
    assert load_scenario("pause-leader-long").faults[0].duration_s.low >= 11.0
