"""Chaos scenarios: a TOML file naming a cluster shape, one workload, faults and checks.

A scenario is data, parsed once and validated with errors that name the file and the
field (`kill-leader.toml: faults[0].target: expected one of ..., got 'ledaer'`), because
a typo in a fault spec would otherwise silently test nothing. Unknown keys are errors
for the same reason. The format is documented in chaos/DESIGN.md; shipped scenarios
live in chaos/scenarios/ and are found by name (`shoal chaos run kill-leader`).

Times that a seed may vary are written as a number or a `[low, high]` pair; the seed
picks inside the range (see faults.build_schedule).

Two lengths: `duration_s` is the planned schedule (every fault heals inside it), and
`ops_deadline_s` (default OPS_DEADLINE_FACTOR x duration_s) is how long the workload may go
on after it to reach `checks.ops_min` operations, so that a busy machine makes a run
longer, never invalid; see runner.workload_stop. Node tunables (`[cluster.knobs]`)
are restricted to the timing, storage and repair-throttle settings a chaos run has reason
to change; the node validates their relationships (e.g. node_dead_after_s > lease_s + ...)
at start and the harness reports its error.

Membership (issue 18.8): `cluster.held_back` names data-only nodes not started with the
cluster; a `join` fault starts one during the workload. A `drain` fault asks the cluster to
move every replica off its target (`Client.drain_node`). Like `crash`, both are one-shot:
nothing to heal, `duration_s` 0 (ONE_SHOT_STATUS: the status each ends in).
"""
from __future__ import annotations

import logging
import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

SCENARIO_DIR = pathlib.Path(__file__).resolve().parent / "scenarios"
WORKLOAD_KINDS = ("register", "set", "bulk", "jobs")
PROCESS_FAULTS = ("kill", "pause", "restart", "wipe", "crash")   # crash: kill, never restarted
NETWORK_FAULTS = ("partition", "loss")
MEMBERSHIP_FAULTS = ("join", "drain")      # join: start a held-back node; drain: Client.drain_node
FAULT_KINDS = PROCESS_FAULTS + NETWORK_FAULTS + MEMBERSHIP_FAULTS
ONE_SHOT_STATUS = {"crash": "down", "join": "done", "drain": "done"}   # never healed: kind -> final status
TARGETS = ("any", "leader", "follower", "other-follower", "primary", "minority", "task-node",
           "learner", "copy-source")     # or "node-N" (1-based)
DIRECTIONS = ("both", "inbound", "outbound")
NETWORKS = ("loopback", "netns")
NODES_MAX = 7                     # 2 cores: more node processes only measure the scheduler
KNOB_TYPES: dict[str, type] = {   # NodeConfig fields a scenario may set
    "heartbeat_interval_s": float, "lease_s": float, "node_suspect_after_s": float,
    "node_dead_after_s": float, "leader_fallback_timeout_s": float,
    "replicate_timeout_s": float, "lmdb_sync": bool, "map_size_bytes": int,
    # re-replication (issue 18): a slow copy makes a transfer long enough to hit, small
    # chunks (a copy's chunk is a scan chunk) make a resumed copy distinguishable from a new one
    "repair_bytes_per_s": int, "repair_transfers_per_node_max": int, "scan_chunk_bytes_max": int,
    "repair_pacing_latency_factor": float,   # 0: a throttled copy keeps its rate, so T (restoration.py) holds
}
WARMUP_S_MIN = 1.0                # the cluster must be seen serving before the first fault
OPS_DEADLINE_FACTOR = 4.0         # default ops_deadline_s = 4 x duration_s
RUN_S_MAX = 3_600.0               # duration_s bound; ops_deadline_s is bounded by 4 x this
RECORDS_MAX = 2_000_000           # jobs workload: the harness holds them in memory at setup
PRELOAD_BYTES_MAX = 256 * 2**20   # preload_records x preload_value_bytes: written at setup, before t = 0
RENAMED_CHECKS = {                # old [checks] key -> the message that replaces it
    "ops_s_before_fault_min": "replaced by ops_before_fault_min, a count of ok operations before the "
                              "first fault (a rate failed runs on busy machines; see chaos/DESIGN.md)",
}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Span:
    """A number the seed may pick: `low == high` for a fixed value."""

    low: float
    high: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterShape:
    nodes: int = 3
    voters: int = 3                 # metadata voters: nodes 1..voters
    replication: int = 3
    shards: int = 4
    network: str = "loopback"       # loopback | netns (netns when any network fault is listed)
    knobs: dict[str, Any] = field(default_factory=dict)
    # data-only nodes (1-based, written "node-N") not started with the cluster; a `join`
    # fault starts each during the workload
    held_back: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSpec:
    kind: str = "register"          # register | set | bulk | jobs
    clients: int = 4                # concurrent client threads
    keys: int = 8                   # register: keys shared by all clients
    batch_records: int = 200        # bulk: records per put_many call
    records: int = 120_000          # jobs: records written at setup, read by every job
    dataset: str = "chaos"
    # register / set / bulk: records `pre-<n>` written into `dataset` at setup (before t = 0,
    # no fault yet), so its shards hold data a repair must copy; the final reads skip them
    preload_records: int = 0
    preload_value_bytes: int = 100  # bytes of each preloaded value (a string)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    kind: str                       # kill | pause | restart | wipe | crash | partition | loss | join | drain
    target: str = "any"             # any | leader | follower | other-follower | primary | minority |
                                    # task-node | learner | copy-source | node-N
    start_s: Span = Span(3.0, 3.0)  # since the workload start
    duration_s: Span = Span(2.0, 2.0)  # until heal: restart, SIGCONT, rules removed; wipe: the
                                    # empty node's restart, before cluster.knobs.node_dead_after_s;
                                    # crash, join, drain: 0 (one-shot, never healed)
    direction: str = "both"         # partition: both | inbound (to target) | outbound
    percent: int = 0                # loss: share of the target's frames dropped
    cut_clients: bool = False       # partition/loss also between the target and the clients


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSpec:
    linearizable: bool = True       # register workload only
    no_lost_writes: bool = True
    converge_within_s: float = 30.0  # replicas' checksums equal after the final heal
    live_within_s: float = 5.0      # a write + read on every shard succeed after the final heal
    # Fewer recorded operations by ops_deadline_s: the run is invalid. The workload runs
    # past duration_s until it has them, so this bar does not depend on spare CPU.
    # For the jobs workload an operation is one job (submit to result).
    ops_min: int = 2_000
    # Fewer ok operations before the first fault: invalid (the workload was stuck, the fault
    # hit a cluster that was not serving). A count, not a rate, for the same reason.
    ops_before_fault_min: int = 20
    checker_timeout_s: float = 60.0  # a checker that does not finish in time fails
    # During a fault that leaves a majority up, every key (register), shard (set) or the
    # dataset (bulk) the workload exercised must see an ok operation again within this many
    # seconds of the injection (judgements.check_recovered); 0 = off.
    recover_within_s: float = 0.0
    # After the final heal every shard of the workload's datasets has `replication` in-sync
    # replicas on running nodes within T (restoration.restore_budget_s, from
    # cluster.knobs.node_dead_after_s and the bytes written), with equal checksums at the end.
    replication_restored: bool = False
    # Every fault targeting "learner": its node logs "learner starts a copy" once per shard
    # (the copy it was killed in resumed after its restart, it did not start over); every
    # fault targeting "copy-source": the same in the log of each learner it was sending to.
    copy_resumed: bool = False
    # Every `join` target: after the final heal the replica counts per alive node differ by
    # less than 2, the joined node holds one at least, no move is under way (within T of
    # membership.move_budget_s), and still at the end.
    load_even: bool = False
    # Every `drain` target: it ends holding no replica and no learner of any shard and
    # DrainNode reports 0 copies left (safe to remove), within the same kind of T.
    drained: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    duration_s: float               # planned schedule length; every fault heals inside it
    cluster: ClusterShape
    workload: WorkloadSpec
    faults: tuple[FaultSpec, ...]
    checks: CheckSpec
    # Latest end of the workload, seconds since its start: after duration_s it goes on only
    # until checks.ops_min operations are recorded. 0 = OPS_DEADLINE_FACTOR x duration_s.
    ops_deadline_s: float = 0.0
    fault_period_s: float = 0.0     # > 0: the faults repeat every fault_period_s (long runs)
    source: str = "<string>"        # file path, for messages and the repro folder
    text: str = ""                  # the TOML as read, copied into the repro folder

    @property
    def needs_netns(self) -> bool:
        return self.cluster.network == "netns"

    @property
    def workload_deadline_s(self) -> float:
        """ops_deadline_s, or its default when the scenario leaves it out."""
        return self.ops_deadline_s or OPS_DEADLINE_FACTOR * self.duration_s


def scenario_path(name_or_path: str) -> pathlib.Path:
    """A shipped scenario by name (`kill-leader`) or any TOML file by path."""
    path = pathlib.Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if not shipped.exists():
        names = ", ".join(shipped_names()) or "none"
        raise ScenarioError(f"no scenario {name_or_path!r}: not a file, not shipped (shipped: {names})")
    return shipped


def shipped_names() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    path = scenario_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    return parse_scenario(text, source=str(path), default_name=path.stem)


def parse_scenario(text: str, *, source: str = "<string>", default_name: str = "scenario") -> Scenario:
    """Parse and validate; raises ScenarioError naming `source` and the field."""
    label = pathlib.Path(source).name
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{label}: not valid TOML: {exc}") from None
    reader = _Reader(label)
    try:
        scenario = reader.scenario(table, default_name, source, text)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"{label}: {exc}") from None
    _validate(scenario, label)
    return scenario


class _Reader:
    """Typed access to TOML tables with errors that name the field path."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, where: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.label}: {where}: {message}")

    def take(self, table: dict[str, Any], where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.fail(where, f"expected a table, got {type(table).__name__}")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
        return table

    def number(self, value: Any, where: str, *, integer: bool = False) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.fail(where, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        return value

    def choice(self, value: Any, where: str, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.fail(where, f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    def span(self, value: Any, where: str) -> Span:
        if isinstance(value, list):
            if len(value) != 2:
                raise self.fail(where, f"expected a number or [low, high], got {value!r}")
            low, high = (float(self.number(v, where)) for v in value)
            if low > high:
                raise self.fail(where, f"low {low} is above high {high}")
            return Span(low, high)
        number = float(self.number(value, where))
        return Span(number, number)

    def scenario(self, table: dict[str, Any], default_name: str, source: str, text: str) -> Scenario:
        top = self.take(table, "top level", ("name", "description", "duration_s", "ops_deadline_s",
                                             "cluster", "workload", "faults", "checks"))
        if "duration_s" not in top:
            raise self.fail("duration_s", "missing (seconds of workload)")
        faults = top.get("faults", [])
        if not isinstance(faults, list):
            raise self.fail("faults", "expected an array of tables ([[faults]])")
        return Scenario(
            name=str(top.get("name", default_name)), description=str(top.get("description", "")),
            duration_s=float(self.number(top["duration_s"], "duration_s")),
            ops_deadline_s=float(self.number(top.get("ops_deadline_s", 0.0), "ops_deadline_s")),
            cluster=self.cluster(top.get("cluster", {}), faults),
            workload=self.workload(top.get("workload", {})),
            faults=tuple(self.fault(f, f"faults[{i}]") for i, f in enumerate(faults)),
            checks=self.checks(top.get("checks", {})), source=source, text=text)

    def cluster(self, table: Any, faults: list[Any]) -> ClusterShape:
        t = self.take(table, "cluster", ("nodes", "voters", "replication", "shards", "network", "knobs",
                                         "held_back"))
        wants_netns = any(isinstance(f, dict) and f.get("kind") in NETWORK_FAULTS for f in faults)
        knobs = self.take(t.get("knobs", {}), "cluster.knobs", tuple(KNOB_TYPES))
        for name, value in knobs.items():
            kind = KNOB_TYPES[name]
            if kind is bool and not isinstance(value, bool):
                raise self.fail(f"cluster.knobs.{name}", f"expected true or false, got {value!r}")
            if kind is not bool:
                self.number(value, f"cluster.knobs.{name}", integer=kind is int)
        return ClusterShape(
            nodes=self.number(t.get("nodes", 3), "cluster.nodes", integer=True),
            voters=self.number(t.get("voters", 3), "cluster.voters", integer=True),
            replication=self.number(t.get("replication", 3), "cluster.replication", integer=True),
            shards=self.number(t.get("shards", 4), "cluster.shards", integer=True),
            network=self.choice(t.get("network", "netns" if wants_netns else "loopback"),
                                "cluster.network", NETWORKS),
            knobs=dict(knobs), held_back=self.held_back(t.get("held_back", [])))

    def held_back(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("node-") and v[5:].isdigit()
                                                  for v in value):
            raise self.fail("cluster.held_back", f"expected a list of node-N (N from 1), got {value!r}")
        return tuple(int(v[5:]) for v in value)

    def workload(self, table: Any) -> WorkloadSpec:
        t = self.take(table, "workload", ("kind", "clients", "keys", "batch_records", "records", "dataset",
                                          "preload_records", "preload_value_bytes"))
        return WorkloadSpec(
            kind=self.choice(t.get("kind", "register"), "workload.kind", WORKLOAD_KINDS),
            clients=self.number(t.get("clients", 4), "workload.clients", integer=True),
            keys=self.number(t.get("keys", 8), "workload.keys", integer=True),
            batch_records=self.number(t.get("batch_records", 200), "workload.batch_records", integer=True),
            records=self.number(t.get("records", 120_000), "workload.records", integer=True),
            dataset=str(t.get("dataset", "chaos")),
            preload_records=self.number(t.get("preload_records", 0), "workload.preload_records", integer=True),
            preload_value_bytes=self.number(t.get("preload_value_bytes", 100), "workload.preload_value_bytes",
                                            integer=True))

    def fault(self, table: Any, where: str) -> FaultSpec:
        t = self.take(table, where, ("kind", "target", "start_s", "duration_s", "direction",
                                     "percent", "cut_clients"))
        if "kind" not in t:
            raise self.fail(f"{where}.kind", f"missing (one of {', '.join(FAULT_KINDS)})")
        target = t.get("target", "any")
        if not (isinstance(target, str) and target.startswith("node-") and target[5:].isdigit()
                or target in TARGETS):
            raise self.fail(f"{where}.target", f"expected one of {', '.join(TARGETS)} or node-N "
                            f"(N from 1), got {target!r}")
        cut_clients = t.get("cut_clients", False)
        # a crash, join or drain is never healed: it ends when it is injected
        default_duration_s = 0.0 if t["kind"] in ONE_SHOT_STATUS else 2.0
        if not isinstance(cut_clients, bool):
            raise self.fail(f"{where}.cut_clients", f"expected true or false, got {cut_clients!r}")
        return FaultSpec(
            kind=self.choice(t["kind"], f"{where}.kind", FAULT_KINDS), target=target,
            start_s=self.span(t.get("start_s", 3.0), f"{where}.start_s"),
            duration_s=self.span(t.get("duration_s", default_duration_s), f"{where}.duration_s"),
            direction=self.choice(t.get("direction", "both"), f"{where}.direction", DIRECTIONS),
            percent=self.number(t.get("percent", 0), f"{where}.percent", integer=True),
            cut_clients=cut_clients)

    def checks(self, table: Any) -> CheckSpec:
        names = ("linearizable", "no_lost_writes", "converge_within_s", "live_within_s", "ops_min",
                 "ops_before_fault_min", "checker_timeout_s", "recover_within_s", "replication_restored",
                 "copy_resumed", "load_even", "drained")
        for old, message in RENAMED_CHECKS.items():
            if isinstance(table, dict) and old in table:
                raise self.fail(f"checks.{old}", message)
        t = self.take(table, "checks", names)
        values: dict[str, Any] = {}
        for name, value in t.items():
            if name in ("linearizable", "no_lost_writes", "replication_restored", "copy_resumed", "load_even",
                        "drained"):
                if not isinstance(value, bool):
                    raise self.fail(f"checks.{name}", f"expected true or false, got {value!r}")
                values[name] = value
            else:
                values[name] = self.number(value, f"checks.{name}", integer=name.startswith("ops_"))
        return CheckSpec(**values)


def _validate(s: Scenario, label: str) -> None:
    """Relationships between fields; each failure names the field."""
    def fail(where: str, message: str) -> ScenarioError:
        return ScenarioError(f"{label}: {where}: {message}")

    c, w = s.cluster, s.workload
    if not 0 < s.duration_s <= RUN_S_MAX:
        raise fail("duration_s", f"must be within (0, {RUN_S_MAX:g}], got {s.duration_s}")
    deadline_max_s = OPS_DEADLINE_FACTOR * RUN_S_MAX
    if s.ops_deadline_s and not s.duration_s <= s.ops_deadline_s <= deadline_max_s:
        raise fail("ops_deadline_s", f"must be within [duration_s, {deadline_max_s:g}] "
                   f"= [{s.duration_s:g}, {deadline_max_s:g}], got {s.ops_deadline_s:g}")
    if not 1 <= c.nodes <= NODES_MAX:
        raise fail("cluster.nodes", f"must be within 1..{NODES_MAX}, got {c.nodes}")
    if c.voters not in (1, 3, 5) or c.voters > c.nodes:
        raise fail("cluster.voters", f"must be 1, 3 or 5 and at most nodes ({c.nodes}), got {c.voters}")
    if not 1 <= c.replication <= c.nodes:
        raise fail("cluster.replication", f"must be within 1..nodes ({c.nodes}), got {c.replication}")
    if not 1 <= c.shards <= 64:
        raise fail("cluster.shards", f"must be within 1..64, got {c.shards}")
    if not 1 <= w.clients <= 64:
        raise fail("workload.clients", f"must be within 1..64, got {w.clients}")
    if not 1 <= w.keys <= 1_000 or not 1 <= w.batch_records <= 10_000:
        raise fail("workload", "keys must be within 1..1000 and batch_records within 1..10000")
    if not 1 <= w.records <= RECORDS_MAX:
        raise fail("workload.records", f"must be within 1..{RECORDS_MAX}, got {w.records}")
    if not w.dataset.replace("-", "").replace("_", "").isalnum():
        raise fail("workload.dataset", f"use letters, digits, - and _ only, got {w.dataset!r}")
    _validate_preload(s, fail)
    for index, f in enumerate(s.faults):
        _validate_fault(f, f"faults[{index}]", s, fail)
    _validate_membership(s, fail)
    k = s.checks
    if k.linearizable and w.kind != "register":
        raise fail("checks.linearizable", f"needs workload.kind = \"register\", not {w.kind!r}")
    for name in ("converge_within_s", "live_within_s", "checker_timeout_s"):
        if getattr(k, name) <= 0:
            raise fail(f"checks.{name}", f"must be positive, got {getattr(k, name)}")
    if k.ops_min < 0 or k.ops_before_fault_min < 0 or k.recover_within_s < 0:
        raise fail("checks", "ops_min, ops_before_fault_min and recover_within_s must not be negative")
    if k.replication_restored and "node_dead_after_s" not in c.knobs:
        raise fail("checks.replication_restored", "needs cluster.knobs.node_dead_after_s: the bound T is "
                   "computed from it (detection) and the bytes written (chaos/DESIGN.md)")
    if k.copy_resumed and not any(f.target in ("learner", "copy-source") for f in s.faults):
        raise fail("checks.copy_resumed", "needs a fault with target = \"learner\" or \"copy-source\" "
                   "(whose copy must resume)")


def _validate_preload(s: Scenario, fail: Any) -> None:
    w = s.workload
    if w.preload_records < 0 or not 1 <= w.preload_value_bytes <= 1_000_000:
        raise fail("workload", "preload_records must not be negative and preload_value_bytes must be within "
                   f"1..1000000, got {w.preload_records} and {w.preload_value_bytes}")
    if w.preload_records and w.kind == "jobs":
        raise fail("workload.preload_records", "the jobs workload writes its own records (workload.records)")
    if w.preload_records * w.preload_value_bytes > PRELOAD_BYTES_MAX:
        raise fail("workload.preload_records", f"preload_records x preload_value_bytes must be at most "
                   f"{PRELOAD_BYTES_MAX} bytes, got {w.preload_records * w.preload_value_bytes}")


def _validate_fault(f: FaultSpec, where: str, s: Scenario, fail: Any) -> None:
    nodes = s.cluster.nodes
    if f.kind in NETWORK_FAULTS and s.cluster.network != "netns":
        raise fail(f"{where}.kind", f"{f.kind} needs cluster.network = \"netns\" (nodes in namespaces)")
    if f.target.startswith("node-") and not 1 <= int(f.target[5:]) <= nodes:
        raise fail(f"{where}.target", f"{f.target} does not exist in a {nodes}-node cluster")
    if f.target == "task-node" and s.workload.kind != "jobs":
        raise fail(f"{where}.target", f"task-node (a node running a task of a job) needs workload.kind = \"jobs\", "
                   f"not {s.workload.kind!r}")
    if f.kind == "crash" and f.duration_s != Span(0.0, 0.0):
        raise fail(f"{where}.duration_s", "a crash is never healed (the node stays down to the end of the run): "
                   "leave duration_s out")
    if f.kind in MEMBERSHIP_FAULTS and f.duration_s != Span(0.0, 0.0):
        raise fail(f"{where}.duration_s", f"a {f.kind} is one-shot (nothing to heal): leave duration_s out")
    if f.target in ("minority", "follower", "other-follower") and nodes < 3:
        raise fail(f"{where}.target", f"{f.target} needs at least 3 nodes, the cluster has {nodes}")
    if f.start_s.low < WARMUP_S_MIN:
        raise fail(f"{where}.start_s", f"must be at least {WARMUP_S_MIN} s: the workload must be "
                   "seen serving before the first fault")
    if f.duration_s.low < 0:
        raise fail(f"{where}.duration_s", "must not be negative")
    if f.start_s.high + f.duration_s.high >= s.duration_s:
        raise fail(where, f"may end at {f.start_s.high + f.duration_s.high} s, not before the "
                   f"workload ends (duration_s = {s.duration_s}): every fault heals inside the run")
    dead_after_s = s.cluster.knobs.get("node_dead_after_s")
    if f.kind == "wipe" and dead_after_s is not None and f.duration_s.high >= dead_after_s:
        raise fail(f"{where}.duration_s", f"a wiped node restarts before node_dead_after_s ({dead_after_s:g} s, "
                   f"cluster.knobs), so the cluster meets it empty while it still counts as alive; "
                   f"got up to {f.duration_s.high:g} s")
    if f.kind == "loss" and not 1 <= f.percent <= 100:
        raise fail(f"{where}.percent", f"loss needs percent within 1..100, got {f.percent}")
    if f.kind != "loss" and f.percent:
        raise fail(f"{where}.percent", "only loss faults take a percent")
    if f.kind != "partition" and f.direction != "both":
        raise fail(f"{where}.direction", "only partition faults take a direction")
    if f.cut_clients and f.kind not in NETWORK_FAULTS:
        raise fail(f"{where}.cut_clients", "only partition and loss faults take cut_clients")


def _validate_membership(s: Scenario, fail: Any) -> None:
    """held_back, join and drain, and the checks that judge them."""
    c, k = s.cluster, s.checks
    held = c.held_back
    if len(set(held)) != len(held) or any(not c.voters < n <= c.nodes for n in held):
        raise fail("cluster.held_back", f"must name distinct data-only nodes, node-{c.voters + 1}..node-{c.nodes} "
                   f"(nodes 1..{c.voters} are the metadata voters), got {[f'node-{n}' for n in held]}")
    joins = [f for f in s.faults if f.kind == "join"]
    for index, f in enumerate(s.faults):
        number = int(f.target[5:]) if f.target.startswith("node-") else 0
        if f.kind == "join" and number not in held:
            raise fail(f"faults[{index}].target", f"a join starts a node of cluster.held_back, written node-N; "
                       f"got {f.target!r}")
        if f.kind != "join" and (number in held or (held and f.target in ("any", "minority"))):
            raise fail(f"faults[{index}].target", f"{f.target} may hit a held-back node before it joined")
    for number in held:
        if sum(1 for f in joins if f.target == f"node-{number}") != 1:
            raise fail("faults", f"held-back node-{number} needs exactly one join fault")
    drains = sum(1 for f in s.faults if f.kind == "drain")
    if drains and c.nodes - drains < c.replication:
        raise fail("faults", f"{drains} drain(s) leave {c.nodes - drains} nodes for replication {c.replication}: "
                   "the copies have nowhere to go")
    if k.load_even and not joins:
        raise fail("checks.load_even", "needs a join fault (the node whose load must even out)")
    if k.drained and not drains:
        raise fail("checks.drained", "needs a drain fault (the node that must end empty)")
