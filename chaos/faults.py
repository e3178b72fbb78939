"""Faults and their seeded schedule.

`build_schedule(scenario, seed)` computes the whole plan before the cluster starts: every
start time, duration and random target (a node, a minority, a shard whose primary is hit)
comes from one `random.Random(seed)`, so the same seed replays the same schedule. Targets
that depend on the cluster's state ("leader", "primary of shard 2", "a follower") can only
be resolved at injection; the seed fixes everything about them that is random.

A `Fault` has `name`, `available(cluster) -> (bool, reason)`, `inject()` and `heal()`;
the runner records each injection's start and end in a `FaultRecord`. Process faults act
through LocalCluster (kill -9 of the process group, SIGSTOP/SIGCONT, SIGTERM + start);
network faults through netlab rules on the bridge, so they need the nodes in namespaces.

`wipe` is a kill whose node comes back with an empty disk: inject = kill -9, then delete
everything in the node's data dir but its log (an operator's `rm -rf` of the data:
identity.json, shards/, raft/, the lock); heal = start it, as for `kill`. So the seeded
`duration_s` is the downtime, and the fault's band covers the time the node is down,
like every other process fault; the scenario keeps it below node_dead_after_s, so the
node returns empty while the cluster still counts it alive (scenario.py checks this).

`task-node` (jobs workload) is the node of an unfinished task attempt of a running job at
injection, read from the cluster's job table (`Fault.jobs`, set by the runner); between
two jobs the fault waits up to TASK_NODE_WAIT_S for one. Among several such nodes the
fault's choice seed picks, so a replay picks alike when the cluster looks alike.

`crash` (issue 18) is a kill whose node is never started again: its heal does nothing, so
the cluster must rebuild the node's replicas elsewhere. `learner` is a node listed in some
shard's `learners` in the cluster map at injection (a replica being filled by a repair),
preferring one whose own status shows its copy under way with records installed, so that
killing it tests a resumed copy, not one that had nothing to lose; it waits up to
LEARNER_WAIT_S for one (a repair starts only after node_dead_after_s). The shards it was
learning, with the records each had installed, go into the fault's record (`learning`).
`other-follower` is a running non-leader that no earlier fault of the run targeted (two
nodes killed one after the other, neither of them the controller).

`copy-source` (issue 18.3, "kill the sender mid-transfer") is the primary of a shard whose
learner has records of its copy installed, preferring one that is not the Raft leader; it
waits up to LEARNER_WAIT_S like `learner`. The shards it was sending go into `learning`
(records installed at each learner) and `learners` (the learner of each), so copy_resumed
reads the learners' logs: back before node_dead_after_s, the sender is still the primary,
and each copy must go on after its last installed chunk.

`join` starts a node held back at the cluster start (scenario `cluster.held_back`): it
registers through a running voter and the controller's rebalancer moves shards to it.
`drain` asks the cluster to move every replica off its target (`Client.drain_node`, the
call behind `shoal node drain`); the copies it held then are the fault's `replicas`. Both
are one-shot, like `crash`: their heal does nothing.
"""
from __future__ import annotations

import logging
import pathlib
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from shoal.chaos.scenario import NETWORK_FAULTS, ONE_SHOT_STATUS, FaultSpec, Scenario, Span

if TYPE_CHECKING:
    from shoal.chaos.netlab import NetLab

logger = logging.getLogger(__name__)

TASK_NODE_WAIT_S = 5.0           # target task-node: how long to wait for a job with a running task
LEARNER_WAIT_S = 10.0            # target learner: how long to wait for a copy under way
LEADER_WAIT_S = 3.0              # target leader: a node busy with jobs may miss one status deadline
DRAIN_CALL_TIMEOUT_S = 10.0      # drain: the DrainNode call (a proposal and a barrier), retries included
TARGET_POLL_S = 0.05


class ClusterControl(Protocol):
    """What faults need from a cluster (shoal.client.local.LocalCluster provides it)."""

    def kill(self, node_id: str) -> Any: ...
    def pause(self, node_id: str) -> None: ...
    def resume(self, node_id: str) -> None: ...
    def terminate(self, node_id: str, timeout_s: float = ...) -> Any: ...
    def start_node(self, node_id: str) -> None: ...
    def is_running(self, node_id: str) -> bool: ...
    def raft_leader(self) -> str | None: ...
    def primary_of(self, dataset: str, key_or_shard: str | bytes | int) -> str: ...
    def node(self, node_id: str) -> NodeFiles: ...
    def running(self) -> list[str]: ...


class NodeFiles(Protocol):
    """Where a node keeps its files (LocalCluster's NodeHandle); `wipe` needs them."""

    @property
    def data_dir(self) -> pathlib.Path: ...
    @property
    def log_path(self) -> pathlib.Path: ...


class FaultError(RuntimeError):
    """A fault could not be injected or healed (e.g. no Raft leader to kill)."""


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault of the schedule, fully determined by scenario + seed."""

    index: int
    kind: str
    target: str
    start_s: float                  # since the workload start
    duration_s: float
    nodes: tuple[int, ...]          # 1-based nodes fixed by the seed; () = resolved at injection
    shard: int                      # target "primary": the shard whose primary is hit; else -1
    choice_seed: int                # for choices among live nodes at injection ("follower")
    direction: str = "both"
    percent: int = 0
    cut_clients: bool = False

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def name(self) -> str:
        what = {"primary": f"primary of shard {self.shard}"}.get(self.target, self.target)
        if self.nodes:
            what = ",".join(f"n{i}" for i in self.nodes)
        extra = {"partition": f" ({self.direction})" if self.direction != "both" else "",
                 "loss": f" {self.percent}%"}.get(self.kind, "")
        return f"{self.kind} {what}{extra}"


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    workload_seed: int
    faults: tuple[PlannedFault, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "workload_seed": self.workload_seed,
                "faults": [asdict(f) | {"name": f.name} for f in self.faults]}

    @property
    def first_fault_s(self) -> float | None:
        return min((f.start_s for f in self.faults), default=None)

    @property
    def final_heal_s(self) -> float | None:
        return max((f.end_s for f in self.faults), default=None)


def build_schedule(scenario: Scenario, seed: int) -> Schedule:
    """The whole plan from the seed; pure (no clock, no cluster).

    With `fault_period_s` set (a run longer than its scenario), the scenario's faults are
    drawn again for every whole period, shifted by it: fresh times and targets each time.
    """
    rng = random.Random(seed)
    workload_seed = rng.getrandbits(32)
    period_s = scenario.fault_period_s
    cycles = max(1, int(scenario.duration_s // period_s)) if period_s > 0 else 1
    planned: list[PlannedFault] = []
    for cycle in range(cycles):
        for spec in scenario.faults:
            planned.append(_plan(rng, scenario, spec, len(planned), cycle * period_s))
    planned.sort(key=lambda f: (f.start_s, f.index))
    return Schedule(seed=seed, workload_seed=workload_seed, faults=tuple(planned))


def _plan(rng: random.Random, scenario: Scenario, spec: FaultSpec, index: int, offset_s: float) -> PlannedFault:
    nodes = scenario.cluster.nodes
    start_s = round(offset_s + _pick(rng, spec.start_s), 3)
    duration_s = _pick(rng, spec.duration_s)
    chosen: tuple[int, ...] = ()
    if spec.target == "any":
        chosen = (rng.randrange(nodes) + 1,)
    elif spec.target == "minority":
        chosen = tuple(sorted(rng.sample(range(1, nodes + 1), (nodes - 1) // 2)))
    elif spec.target.startswith("node-"):
        chosen = (int(spec.target[5:]),)
    shard = rng.randrange(scenario.cluster.shards) if spec.target == "primary" else -1
    return PlannedFault(index=index, kind=spec.kind, target=spec.target, start_s=start_s,
                        duration_s=duration_s, nodes=chosen, shard=shard, choice_seed=rng.getrandbits(32),
                        direction=spec.direction, percent=spec.percent, cut_clients=spec.cut_clients)


def _pick(rng: random.Random, span: Span) -> float:
    """Always draw, so a fixed value does not shift later draws when a range is edited."""
    drawn = rng.uniform(span.low, span.high)
    return span.low if span.low == span.high else round(drawn, 3)


@dataclass(slots=True)
class FaultRecord:
    """What happened to one planned fault; times are seconds since the workload start."""

    name: str
    kind: str
    planned_start_s: float
    planned_end_s: float
    status: str = "planned"         # planned | injected | healed | down (a crash) | done (join, drain) |
                                    # unavailable | error
    reason: str = ""                # why unavailable or error
    targets: list[str] = field(default_factory=list)
    # target learner: shard ("dataset/index") -> records its copy had installed at injection
    # (-1: the node did not say), for each shard the target was learning; target copy-source:
    # the same for each shard the target was sending, and `learners` names each one's learner
    learning: dict[str, int] = field(default_factory=dict)
    learners: dict[str, str] = field(default_factory=dict)
    replicas: int | None = None     # drain: copies (replicas + learners) the target held at the request
    start_s: float | None = None    # injection began
    injected_s: float | None = None  # injection call returned
    end_s: float | None = None      # heal call returned

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Fault:
    """One planned fault bound to a cluster (and a netlab for network faults)."""

    def __init__(self, plan: PlannedFault, cluster: ClusterControl, *, dataset: str,
                 lab: NetLab | None = None, lab_reason: str = "") -> None:
        self.plan = plan
        self.cluster = cluster
        self.dataset = dataset
        self.lab = lab
        self.lab_reason = lab_reason or "nodes are not in network namespaces"
        self.targets: list[str] = []
        # target task-node: the cluster's jobs now (shoal.client.JobProgress); set by the runner
        self.jobs: Callable[[], Sequence[Any]] | None = None
        # target other-follower: nodes earlier faults of the run targeted; set by the runner
        self.earlier_targets: set[str] = set()
        self.learning: dict[str, int] = {}     # target learner, copy-source: see FaultRecord.learning
        self.learners: dict[str, str] = {}     # target copy-source: see FaultRecord.learners
        self.replicas: int | None = None       # drain: see FaultRecord.replicas

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def fault_id(self) -> str:
        return f"fault{self.plan.index}"

    def available(self, cluster: ClusterControl | None = None) -> tuple[bool, str]:
        if self.plan.kind in NETWORK_FAULTS and self.lab is None:
            return False, f"{self.plan.kind} needs nodes in network namespaces: {self.lab_reason}"
        return True, ""

    def resolve_targets(self) -> list[str]:
        """Node ids to hit now: seed-chosen nodes, or the current leader/primary/a follower."""
        plan = self.plan
        if plan.nodes:
            return [f"n{i}" for i in plan.nodes]
        if plan.target == "leader":
            return [self._leader()]
        leader = self.cluster.raft_leader()
        if plan.target == "primary":
            return [self.cluster.primary_of(self.dataset, plan.shard)]
        if plan.target == "task-node":
            return [self._task_node()]
        if plan.target == "learner":
            return [self._learner()]
        if plan.target == "copy-source":
            return [self._copy_source(leader)]
        if plan.target in ("follower", "other-follower"):
            avoid = self.earlier_targets if plan.target == "other-follower" else set()
            followers = sorted(n for n in self.cluster.running() if n != leader and n not in avoid)
            if not followers:
                raise FaultError(f"no running {plan.target} to target (leader {leader}, avoiding {sorted(avoid)})")
            return [random.Random(plan.choice_seed).choice(followers)]
        raise FaultError(f"cannot resolve target {plan.target!r}")

    def _learner(self) -> str:
        """A running node listed as a learner, preferring one with records of a copy installed;
        waits up to LEARNER_WAIT_S for one, then takes any learner (progress not reported)."""
        give_up_s = time.monotonic() + LEARNER_WAIT_S
        found: dict[str, dict[str, int]] = {}
        last_error = ""
        while True:
            try:
                found = learner_nodes(getattr(self.cluster, "cluster_map")(), getattr(self.cluster, "statuses")(),
                                      running=self.cluster.running())
            except Exception as exc:   # noqa: BLE001 - a node may miss a status deadline under load
                found, last_error = {}, f" (last error: {type(exc).__name__}: {exc})"
            copying = sorted(node for node, shards in found.items() if any(done > 0 for done in shards.values()))
            if copying or (found and time.monotonic() >= give_up_s):
                node = random.Random(self.plan.choice_seed).choice(copying or sorted(found))
                self.learning = found[node]
                return node
            if time.monotonic() >= give_up_s:
                raise FaultError(f"no running node was a learner of any shard within {LEARNER_WAIT_S:g} s"
                                 f"{last_error}")
            time.sleep(TARGET_POLL_S * 4)

    def _copy_source(self, leader: str | None) -> str:
        """The running primary of a shard whose learner has records installed, not the leader
        when another will do; waits up to LEARNER_WAIT_S for one."""
        give_up_s = time.monotonic() + LEARNER_WAIT_S
        last_error = ""
        while True:
            try:
                cluster_map = getattr(self.cluster, "cluster_map")()
                running = getattr(self.cluster, "running")()
                sending = copy_sources(cluster_map, learner_nodes(cluster_map, getattr(self.cluster, "statuses")(),
                                                                  running=running), running=running)
            except Exception as exc:   # noqa: BLE001 - a node may miss a status deadline under load
                sending, last_error = {}, f" (last error: {type(exc).__name__}: {exc})"
            if sending:
                candidates = sorted(node for node in sending if node != leader) or sorted(sending)
                node = random.Random(self.plan.choice_seed).choice(candidates)
                self.learning = {shard: done for shard, (_, done) in sending[node].items()}
                self.learners = {shard: learner for shard, (learner, _) in sending[node].items()}
                return node
            if time.monotonic() >= give_up_s:
                raise FaultError(f"no running primary was sending a copy with records installed within "
                                 f"{LEARNER_WAIT_S:g} s{last_error}")
            time.sleep(TARGET_POLL_S * 4)

    def _task_node(self) -> str:
        """A node running an unfinished task attempt of a running job, waiting for one."""
        if self.jobs is None:
            raise FaultError("target task-node needs the job table (the jobs workload)")
        give_up_s = time.monotonic() + TASK_NODE_WAIT_S
        last_error = ""
        while True:
            try:
                nodes = task_nodes(self.jobs(), running=getattr(self.cluster, "running")())
            except Exception as exc:   # noqa: BLE001 - the job table may be unreachable a moment
                nodes, last_error = [], f" (last error listing jobs: {type(exc).__name__}: {exc})"
            if nodes:
                return random.Random(self.plan.choice_seed).choice(nodes)
            if time.monotonic() >= give_up_s:
                raise FaultError(f"no job had a task running on a live node within {TASK_NODE_WAIT_S:g} s{last_error}")
            time.sleep(TARGET_POLL_S)

    def _leader(self) -> str:
        """The Raft leader, polled for up to LEADER_WAIT_S: a status call to a node whose cores
        are busy with tasks may time out once, and that is not "no leader"."""
        give_up_s = time.monotonic() + LEADER_WAIT_S
        while (leader := self.cluster.raft_leader()) is None:
            if time.monotonic() >= give_up_s:
                raise FaultError(f"no Raft leader to target (none seen for {LEADER_WAIT_S:g} s)")
            time.sleep(TARGET_POLL_S)
        return leader

    def inject(self) -> list[str]:
        self.targets = self.resolve_targets()
        kind = self.plan.kind
        for node_id in self.targets:
            if kind in ("kill", "wipe", "crash"):
                self.cluster.kill(node_id)
                if kind == "wipe":
                    wipe_data_dir(self.cluster.node(node_id))
            elif kind == "pause":
                self.cluster.pause(node_id)
            elif kind == "restart":
                self.cluster.terminate(node_id)
            elif kind == "join":
                self.cluster.start_node(node_id)
            elif kind == "drain":
                with getattr(self.cluster, "client")(timeout_s=DRAIN_CALL_TIMEOUT_S) as client:
                    self.replicas = int(client.drain_node(node_id))
        if kind == "partition":
            assert self.lab is not None
            self.lab.partition(self.fault_id, [_number(n) for n in self.targets],
                               direction=self.plan.direction, include_clients=self.plan.cut_clients)
        elif kind == "loss":
            assert self.lab is not None
            for position, node_id in enumerate(self.targets):
                self.lab.loss(f"{self.fault_id}_{position}", _number(node_id), self.plan.percent,
                              include_clients=self.plan.cut_clients)
        logger.info("injected %s on %s", self.name, ", ".join(self.targets))
        return self.targets

    def heal(self) -> None:
        kind = self.plan.kind
        if kind in ONE_SHOT_STATUS:
            logger.info("%s on %s: one-shot, nothing to heal", self.name, ", ".join(self.targets))
            return
        for position, node_id in enumerate(self.targets):
            if kind in ("kill", "wipe", "restart") and not self.cluster.is_running(node_id):
                self.cluster.start_node(node_id)
            elif kind == "pause":
                self.cluster.resume(node_id)
            elif kind == "loss":
                assert self.lab is not None
                self.lab.heal(f"{self.fault_id}_{position}")
        if kind == "partition":
            assert self.lab is not None
            self.lab.heal(self.fault_id)
        logger.info("healed %s on %s", self.name, ", ".join(self.targets))


def learner_nodes(cluster_map: Any, statuses: dict[str, Any], *, running: Sequence[str]) -> dict[str, dict[str, int]]:
    """Running node -> {shard "dataset/index" it is a learner of -> records installed}, from the
    map (ClusterMap) and each node's own GetNodeStatus (-1 when it did not report the shard
    as a learner with progress); pure."""
    alive = set(running)
    installed = {(node_id, f"{shard.dataset}/{shard.index}"): int(getattr(shard, "fill_records_done", 0))
                 for node_id, status in statuses.items() for shard in status.shards if shard.role == "learner"}
    found: dict[str, dict[str, int]] = {}
    for dataset in cluster_map.datasets:
        for shard in dataset.shard_map:
            name = f"{dataset.name}/{shard.index}"
            for node_id in shard.learners:
                if node_id in alive:
                    found.setdefault(node_id, {})[name] = installed.get((node_id, name), -1)
    return found


def copy_sources(cluster_map: Any, learning: dict[str, dict[str, int]], *, running: Sequence[str]
                 ) -> dict[str, dict[str, tuple[str, int]]]:
    """Running primary -> {shard "dataset/index" -> (its learner, records installed)}, for the
    shards whose running learner has records installed (`learning`: learner_nodes' answer); pure."""
    alive = set(running)
    primaries = {f"{dataset.name}/{shard.index}": shard.primary
                 for dataset in cluster_map.datasets for shard in dataset.shard_map}
    found: dict[str, dict[str, tuple[str, int]]] = {}
    for learner, shards in sorted(learning.items()):
        for shard, done in sorted(shards.items()):
            primary = primaries.get(shard, "")
            if done > 0 and primary in alive and primary != learner:
                found.setdefault(primary, {})[shard] = (learner, done)
    return found


def task_nodes(jobs: Sequence[Any], *, running: Sequence[str]) -> list[str]:
    """Sorted ids of the running nodes that hold the latest attempt of an unfinished task of
    a running job (JobProgress / TaskProgress of shoal.client); pure."""
    alive = set(running)
    found = {task.nodes[-1] for job in jobs if job.state == "running"
             for task in job.tasks if not task.done and task.nodes}
    return sorted(found & alive)


def wipe_data_dir(node: NodeFiles) -> list[str]:
    """Delete everything in the (stopped) node's data dir except its log; return the names
    removed. The log stays: it is the harness's record of the node's life, not its data."""
    removed = []
    for entry in sorted(node.data_dir.iterdir()) if node.data_dir.exists() else ():
        if entry == node.log_path:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    logger.info("wiped %s: removed %s", node.data_dir, ", ".join(removed) or "nothing")
    return removed


def _number(node_id: str) -> int:
    """LocalCluster ids are n1..nN; netlab numbers hosts 1..N the same way."""
    assert node_id.startswith("n") and node_id[1:].isdigit(), node_id
    return int(node_id[1:])
