"""Re-replication (issue 18): add learners to shards short of copies, drop learners that will never join. Planner.

A shard wants `replication` copies on alive nodes. It counts its in-sync replicas on alive
nodes plus its learners on alive nodes (a learner being filled counts, so one tick's
decision is not taken again the next); while that is below the dataset's replication
factor, it gets a learner (`add_learner`, epoch unchanged) on another alive node. The
shard's primary fills it and proposes `join_in_sync` when it caught up (epoch + 1); that is
the node side, not this planner.

Choosing the node, in order: not already holding the shard (in sync or learning); fewer
than `transfers_per_node_max` learners already (counted from the view over all shards, so
a new controller sees the same count and nothing is lost with the old one); then a zone
the shard's alive copies do not use yet; then a node that still has a replica of this
dataset incarnation on disk, as its last heartbeat reported (`ReplicaReports`: a backup
fenced out while it was down or slow), since it may catch up by replaying the entries it
missed instead of a full copy (replication/learner.py decides whether that is safe); then
the fewest replicas + learners in total; then the node id, so every controller plans the
same (given the same reports). Only a shard whose primary is alive
gets a learner: without one nobody can fill it, and the shard waits for a promotion
(`shard_moves`) first.

A learner on a dead, draining, removed or unknown node will never join: it is dropped
(`remove_replica`, epoch unchanged), and the shard counts one copy fewer, so a new learner
is chosen on the same round when a node is free. Dropping a learner loses nothing: no
acknowledged write waits for one. A suspect node's learner stays (it may be back), but it
is not counted as a copy.

Rebalancing: when nothing else is under way and the most and least loaded alive nodes
differ by 2 or more replicas, one shard gets a learner on the least loaded node; once it
joined, the shard has one copy too many and the most loaded node's backup leaves. One move
at a time in the whole cluster: a join makes the cluster even slowly, never all at once.

Draining (`shoal node drain`): a draining node is not alive, so its replicas do not count
and learners are added elsewhere; once a shard has its replication factor on alive nodes,
the draining node's backup leaves the in-sync set (`remove_replica`, one per shard per
round). A draining primary hands its shard to an in-sync backup itself (shards.py), so it
stops serving before the promotion and no read sees a stale primary.

Pure over the view: every command carries `controller_term`, which fences it (fsm.py).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.metadata.view import MetadataView, ShardView

logger = logging.getLogger(__name__)

_NEVER_JOINS = ("dead", "draining", "removed")   # node states whose learners are dropped


class ReplicaReports(Protocol):
    """What nodes said they hold in their last heartbeat (controller/leases.py: LeaseTable)."""

    def reported(self, node_id: str, shard: ShardView) -> tuple[int, str] | None: ...


def plan_repairs(view: MetadataView, controller_term: int, transfers_per_node_max: int,
                 reports: ReplicaReports | None = None) -> list[bytes]:
    """add_learner and remove_replica (of learners) commands for this round, in shard order.
    `reports`: the replicas nodes hold on disk, to prefer a learner that may catch up by replay."""
    assert transfers_per_node_max >= 1, transfers_per_node_max
    planned: list[bytes] = []
    learning, load = _counts(view)
    for shard in view.shards():
        for node_id in shard.learners:
            if _never_joins(view, node_id):
                logger.info("shard %s: learner %s dropped (node %s)", shard.name, node_id, _state_of(view, node_id))
                planned.append(commands.remove_replica(shard.dataset, shard.index, node_id, shard.epoch,
                                                       controller_term=controller_term))
        if not (view.is_alive(shard.primary) or _draining(view, shard.primary)):
            continue   # nobody to fill a learner: a promotion comes first (a draining primary still serves)
        wanted = view.datasets[shard.dataset].replication
        have = view.in_sync_alive(shard) + sum(1 for n in shard.learners if view.is_alive(n))
        for node_id in _choose(view, shard, wanted - have, learning, load, transfers_per_node_max, reports):
            held = reports.reported(node_id, shard) if reports is not None else None
            logger.info("shard %s under-replicated (have %d, want %d): learner %s planned%s", shard.name, have,
                        wanted, node_id, "" if held is None else f" (it holds a replica at seq {held[0]})")
            planned.append(commands.add_learner(shard.dataset, shard.index, node_id, shard.epoch,
                                                controller_term=controller_term))
            have += 1
        leaving = [n for n in shard.replicas if n != shard.primary and _draining(view, n)]
        if leaving and view.in_sync_alive(shard) >= wanted:   # its copies are elsewhere now: one per round
            logger.info("shard %s: draining node %s leaves its in-sync set", shard.name, leaving[0])
            planned.append(commands.remove_replica(shard.dataset, shard.index, leaving[0], shard.epoch,
                                                   controller_term=controller_term))
        elif view.in_sync_alive(shard) > wanted:              # a rebalancing copy joined: trim the extra
            extra = max((n for n in shard.replicas if n != shard.primary and view.is_alive(n)),
                        key=lambda n: (load.get(n, 0), n))
            logger.info("shard %s has %d copies for %d: %s leaves (the most loaded)", shard.name,
                        view.in_sync_alive(shard), wanted, extra)
            planned.append(commands.remove_replica(shard.dataset, shard.index, extra, shard.epoch,
                                                   controller_term=controller_term))
    if not planned:
        planned.extend(_rebalance(view, load, controller_term))
    return planned


def _rebalance(view: MetadataView, load: dict[str, int], controller_term: int) -> list[bytes]:
    """One copy from the most to the least loaded alive node when they differ by 2 or more,
    only while nothing else is under way (no learner, no shard short of copies): gentle, and
    never racing a repair. The copy joins as an extra replica; the trim above then removes the
    busiest node's copy."""
    shards = list(view.shards())
    if any(shard.learners or view.is_under_replicated(shard) for shard in shards):
        return []
    alive = sorted(view.alive_nodes(), key=lambda n: (load.get(n.id, 0), n.id))
    if len(alive) < 2 or load.get(alive[-1].id, 0) - load.get(alive[0].id, 0) < 2:
        return []
    busiest, idlest = alive[-1].id, alive[0].id
    for shard in shards:
        if busiest in shard.replicas and busiest != shard.primary and not shard.holds(idlest):
            logger.info("rebalancing: shard %s copied to %s (holds %d) from the load of %s (holds %d)",
                        shard.name, idlest, load.get(idlest, 0), busiest, load.get(busiest, 0))
            return [commands.add_learner(shard.dataset, shard.index, idlest, shard.epoch,
                                         controller_term=controller_term)]
    return []


def _draining(view: MetadataView, node_id: str) -> bool:
    node = view.node(node_id)
    return node is not None and node.state == "draining"


def _choose(view: MetadataView, shard: ShardView, count: int, learning: dict[str, int], load: dict[str, int],
            transfers_per_node_max: int, reports: ReplicaReports | None = None) -> list[str]:
    """Up to `count` nodes for new learners of `shard`; updates `learning` and `load` for what it chose."""
    zones = {view.nodes[n].zone for n in (*shard.replicas, *shard.learners) if view.is_alive(n)}
    chosen: list[str] = []

    def has_no_copy(node_id: str) -> bool:
        return reports is None or reports.reported(node_id, shard) is None

    while len(chosen) < count:
        candidates = [n for n in view.alive_nodes()
                      if not shard.holds(n.id) and n.id not in chosen
                      and learning.get(n.id, 0) < transfers_per_node_max]
        if not candidates:
            break
        best = min(candidates, key=lambda n: (n.zone in zones, has_no_copy(n.id), load.get(n.id, 0), n.id))
        chosen.append(best.id)
        zones.add(best.zone)
        learning[best.id] = learning.get(best.id, 0) + 1
        load[best.id] = load.get(best.id, 0) + 1
    return chosen


def _counts(view: MetadataView) -> tuple[dict[str, int], dict[str, int]]:
    """Per node: learners (incoming copies), and replicas + learners, over every shard."""
    learning: dict[str, int] = {}
    load: dict[str, int] = {}
    for shard in view.shards():
        for node_id in shard.learners:
            learning[node_id] = learning.get(node_id, 0) + 1
        for node_id in (*shard.replicas, *shard.learners):
            load[node_id] = load.get(node_id, 0) + 1
    return learning, load


def _never_joins(view: MetadataView, node_id: str) -> bool:
    node = view.node(node_id)
    return node is None or node.state in _NEVER_JOINS


def _state_of(view: MetadataView, node_id: str) -> str:
    node = view.node(node_id)
    return "not registered" if node is None else node.state
