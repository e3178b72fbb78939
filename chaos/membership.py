"""Join and drain during load (issue 18.8): the `load_even` and `drained` checks.

A `join` fault starts a node held back at the cluster start (`cluster.held_back`): it
registers, and the controller's rebalancer (node/controller/repair.py `_rebalance`) moves
one shard at a time to it (a learner on it copies and joins, then the busiest node's extra
copy leaves) while the most and least loaded alive nodes differ by 2 or more. A `drain`
fault makes its target "draining": the controller adds a learner elsewhere for each shard
it holds and, once the shard has its replication factor on alive nodes, its copy leaves (a
draining primary first hands the shard to an in-sync backup).

From the final heal (a join or a drain is one-shot: its injection) a watch (restoration's
RestoreWatch with another judge) polls the cluster map (the Raft leader's) every 0.5 s
until the condition holds, or until T; after the convergence wait the map is read once more
and the condition must still hold.

- load_even (`uneven`): no shard has a learner or other than its replication factor of
  in-sync replicas (no move under way), the in-sync replicas per alive node (over every
  dataset, as the rebalancer counts them) differ by less than 2, and each joined node is
  alive in the map and holds one at least.
- drained (`not_drained`): each drained node holds no replica and no learner of any shard
  and the map lists it as draining; at the end DrainNode (the call behind `shoal node
  drain --wait`; idempotent) reports 0 copies left: safe to remove. A drain of a node that
  held nothing when asked tested nothing, and fails.

T (`move_budget_s`), computed like replication_restored's, from the scenario and what the
harness wrote, never tuned to a run:

    T = bytes_written / rate + shards x MOVE_MARGIN_S + RESTORE_MARGIN_S

A move copies one shard and no shard is copied twice (the rebalancer copies a shard the
joined node does not hold yet; a drain copies each shard of its node once), so all moves
together copy at most the bytes written (restoration.written_bytes, from above); rate as
for replication_restored (the repair_bytes_per_s knob, at most 1 MiB/s). A node holds at
most one copy of each shard, so there are at most `shards` moves (over the workload's
datasets), and the moves of a join go one after the other, each paying controller ticks
and Raft proposals (add the learner, join, trim): MOVE_MARGIN_S each. RESTORE_MARGIN_S:
the joined node's start-up (~3 s on 2 cores) and its registration.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from shoal.chaos.faults import DRAIN_CALL_TIMEOUT_S
from shoal.chaos.report import CheckResult
from shoal.chaos.restoration import COPY_BYTES_PER_S_MIN, RESTORE_MARGIN_S, Restoration, RestoreWatch, written_bytes

logger = logging.getLogger(__name__)

MOVE_MARGIN_S = 3.0     # one move: controller ticks, add_learner, the copy's start, join_in_sync, the trim


def move_budget_s(bytes_written: int, shards: int, repair_bytes_per_s: int = 0) -> float:
    """T of load_even and drained: see the module docstring; pure."""
    assert bytes_written >= 0 and shards >= 1, (bytes_written, shards)
    rate = min(repair_bytes_per_s, COPY_BYTES_PER_S_MIN) if repair_bytes_per_s > 0 else COPY_BYTES_PER_S_MIN
    return bytes_written / rate + shards * MOVE_MARGIN_S + RESTORE_MARGIN_S


def replica_load(cluster_map: Any) -> dict[str, int]:
    """Alive node -> in-sync replicas it holds over every dataset of a ClusterMap; pure."""
    load = {node.id: 0 for node in cluster_map.nodes if node.state == "alive"}
    for dataset in cluster_map.datasets:
        for shard in dataset.shard_map:
            for node_id in shard.replicas:
                if node_id in load:
                    load[node_id] += 1
    return load


def uneven(cluster_map: Any, joined: Sequence[str]) -> dict[str, str]:
    """What keeps the load from being even (for people); {} = even. Pure."""
    problems: dict[str, str] = {}
    for dataset in cluster_map.datasets:
        for shard in dataset.shard_map:
            if shard.learners or len(shard.replicas) != dataset.replication:
                problems[f"{dataset.name}/{shard.index}"] = (
                    f"a move under way: in sync {', '.join(shard.replicas) or 'none'}; "
                    f"learners {', '.join(shard.learners) or 'none'}")
    load = replica_load(cluster_map)
    if load and max(load.values()) - min(load.values()) >= 2:
        problems["load"] = f"replicas per alive node {_load_text(load)} differ by 2 or more"
    states = {node.id: node.state for node in cluster_map.nodes}
    for node_id in joined:
        if node_id not in load:
            problems[node_id] = f"not alive in the map ({states.get(node_id, 'absent')})"
        elif load[node_id] == 0:
            problems[node_id] = "joined but holds no replica"
    return problems


def not_drained(cluster_map: Any, drained: Sequence[str]) -> dict[str, str]:
    """Drained nodes that still hold a copy, or are not listed as draining -> why; {} = done. Pure."""
    states = {node.id: node.state for node in cluster_map.nodes}
    problems: dict[str, str] = {}
    for node_id in drained:
        held = [f"{dataset.name}/{shard.index}" + ("" if node_id in shard.replicas else " (learner)")
                for dataset in cluster_map.datasets for shard in dataset.shard_map
                if node_id in shard.replicas or node_id in shard.learners]
        if held:
            problems[node_id] = f"still holds {len(held)}: {', '.join(held[:6])}"
        elif states.get(node_id) != "draining":
            problems[node_id] = f"holds nothing but is {states.get(node_id, 'absent')}, not draining"
    return problems


@dataclass(slots=True)
class Membership:
    """What the watches saw and the end of the run said; judged by check_load_even / check_drained."""

    joined: tuple[str, ...]
    drained: tuple[str, ...]
    even: Restoration | None = None          # the load_even watch (restored_s: when even)
    emptied: Restoration | None = None       # the drained watch (restored_s: when empty)
    uneven_at_end: dict[str, str] | None = None
    not_drained_at_end: dict[str, str] | None = None
    load_at_end: dict[str, int] = field(default_factory=dict)
    left_at_end: dict[str, int | str] = field(default_factory=dict)   # DrainNode's answer (or its error)


class MembershipWatch:
    """The load_even and drained watches of one run, from the final heal; then the end state."""

    def __init__(self, cluster: Any, joined: Sequence[str], drained: Sequence[str], budget_s: float,
                 bytes_written: int) -> None:
        self.cluster = cluster
        self.membership = Membership(tuple(joined), tuple(drained))
        self._even = RestoreWatch(cluster.cluster_map, budget_s, bytes_written, what="load even",
                                  judge=lambda cluster_map: uneven(cluster_map, joined)) if joined else None
        self._emptied = RestoreWatch(cluster.cluster_map, budget_s, bytes_written, what="drained",
                                     judge=lambda cluster_map: not_drained(cluster_map, drained)) if drained else None

    def _watches(self) -> list[RestoreWatch]:
        return [watch for watch in (self._even, self._emptied) if watch is not None]

    def start(self) -> None:
        for watch in self._watches():
            watch.start()

    def stop(self) -> None:
        for watch in self._watches():
            watch.stop()

    def join(self) -> None:
        """Until each watch settled or gave up at T."""
        if self._even is not None:
            self.membership.even = self._even.join()
        if self._emptied is not None:
            self.membership.emptied = self._emptied.join()

    def finish(self) -> Membership:
        """Read the end state (after the convergence wait): the map, and DrainNode per drained node."""
        self.join()
        result = self.membership
        cluster_map = self.cluster.cluster_map()
        result.load_at_end = replica_load(cluster_map)
        result.uneven_at_end = uneven(cluster_map, result.joined) if self._even is not None else None
        result.not_drained_at_end = not_drained(cluster_map, result.drained) if self._emptied is not None else None
        if result.drained:
            with self.cluster.client(timeout_s=DRAIN_CALL_TIMEOUT_S) as client:
                for node_id in result.drained:
                    try:
                        result.left_at_end[node_id] = int(client.drain_node(node_id))
                    except Exception as exc:   # noqa: BLE001 - judged: not reported safe to remove
                        result.left_at_end[node_id] = f"{type(exc).__name__}: {exc}"
        return result


def watch_membership(scenario: Any, records: Sequence[Any], cluster: Any, datasets: Sequence[str],
                     operations: Sequence[Any]) -> MembershipWatch | None:
    """The watch the scenario's checks need (None: neither load_even nor drained), started."""
    checks = scenario.checks
    if not (checks.load_even or checks.drained):
        return None

    def targets(kind: str) -> list[str]:
        return [node_id for record in records if record.kind == kind for node_id in record.targets]

    written = written_bytes(scenario.workload, operations)
    budget_s = move_budget_s(written, scenario.cluster.shards * max(1, len(datasets)),
                             int(scenario.cluster.knobs.get("repair_bytes_per_s", 0)))
    watch = MembershipWatch(cluster, targets("join") if checks.load_even else [],
                            targets("drain") if checks.drained else [], budget_s, written)
    watch.start()
    return watch


def check_load_even(membership: Membership | None) -> CheckResult:
    """Even within T of the final heal (the watch), still even at the end."""
    name = "load_even"
    if membership is None or membership.even is None or membership.uneven_at_end is None:
        return CheckResult(name, False, "the load was not watched (no node joined, or the run ended before the "
                           "final heal; see the faults check)", {})
    watch, end = membership.even, membership.uneven_at_end
    details = _watch_details(watch) | {"joined": list(membership.joined), "uneven_at_end": end,
                                       "load_at_end": membership.load_at_end}
    problems = _problems(watch, end, "even", "uneven")
    if problems:
        return CheckResult(name, False, "; ".join(problems), details)
    assert watch.restored_s is not None
    return CheckResult(name, True, f"{', '.join(membership.joined)} joined; replicas per alive node "
                       f"{_load_text(membership.load_at_end)} {watch.restored_s:.1f} s after the join "
                       f"(T = {watch.budget_s:.1f} s)", details)


def check_drained(membership: Membership | None, faults: Sequence[dict[str, Any]]) -> CheckResult:
    """Empty within T of the final heal, still empty at the end, DrainNode says 0 left; the
    drained node held copies when asked (else the run tested nothing)."""
    name = "drained"
    if membership is None or membership.emptied is None or membership.not_drained_at_end is None:
        return CheckResult(name, False, "the drain was not watched (no node drained, or the run ended before "
                           "the final heal; see the faults check)", {})
    watch, end = membership.emptied, membership.not_drained_at_end
    held = {node_id: fault.get("replicas") for fault in faults if fault.get("kind") == "drain"
            for node_id in fault.get("targets") or ()}
    details = _watch_details(watch) | {"drained": list(membership.drained), "held_at_request": held,
                                       "not_drained_at_end": end, "left_at_end": membership.left_at_end}
    problems = _problems(watch, end, "drained", "holding copies")
    problems += [f"{node_id} held no copy when asked to drain: the run tested nothing"
                 for node_id, count in sorted(held.items()) if not count]
    problems += [f"DrainNode says {node_id} still holds {left} (not safe to remove)" if isinstance(left, int)
                 else f"DrainNode for {node_id} failed at the end: {left}"
                 for node_id, left in sorted(membership.left_at_end.items()) if left != 0]
    if problems:
        return CheckResult(name, False, "; ".join(problems[:4]), details)
    assert watch.restored_s is not None
    moved = ", ".join(f"{node_id} (held {held.get(node_id)})" for node_id in membership.drained)
    return CheckResult(name, True, f"{moved} drained {watch.restored_s:.1f} s after the request "
                       f"(T = {watch.budget_s:.1f} s): no replica, no learner, safe to remove", details)


def _problems(watch: Restoration, end: dict[str, str], settled: str, unsettled: str) -> list[str]:
    if watch.restored_s is None:
        first = next(iter(watch.short.items()), ("?", "?"))
        return [f"not {settled} within T = {watch.budget_s:.1f} s of the final heal: {first[0]}: {first[1]}"]
    if end:
        first = next(iter(end.items()))
        return [f"{unsettled} again at the end: {first[0]}: {first[1]}"]
    return []


def _watch_details(watch: Restoration) -> dict[str, Any]:
    return {"budget_s": round(watch.budget_s, 1), "bytes_written": watch.bytes_written,
            "settled_s": None if watch.restored_s is None else round(watch.restored_s, 2), "polls": watch.polls,
            "short_at_deadline": watch.short, "last_poll_error": watch.error}


def _load_text(load: dict[str, int]) -> str:
    return "{" + ", ".join(f"{node_id}: {count}" for node_id, count in sorted(load.items())) + "}"
