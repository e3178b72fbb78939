"""Shard moves after a node died: promote a backup of a lost primary, fence a dead backup. Planner.

For each shard a dead node is in-sync for: if it was a backup, it is removed from the
in-sync set (`remove_replica`, epoch + 1); if it was the primary, the live in-sync backup
with the highest reported sequence number is promoted (`promote`, epoch + 1). A shard
without a live in-sync backup is unavailable; that is logged once per shard and node.

Only what this controller observed itself counts: a node dead in the metadata is moved
off only once this controller has not heard it for more than `node_dead_after_s` (counted
from when it took control at the earliest), and never the controller itself. So a primary
declared dead by an earlier controller, whose lease that one may have renewed, is not
replaced before this controller saw the lease expire (see controller/__init__.py).
Commands carry the controller's term (`controller_term`), which fences them (fsm.py).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.controller.leases import LeaseTable
    from shoal.node.metadata.view import MetadataView, ShardView

logger = logging.getLogger(__name__)


class ShardMoves:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._reported_unavailable: set[tuple[str, str]] = set()   # (shard name, dead node): log once

    def plan(self, view: MetadataView, leases: LeaseTable, now_s: float, *, controller_term: int) -> list[bytes]:
        planned = []
        for dead in self._dead_here(view, leases, now_s):
            for shard in view.shards():
                if not shard.in_sync(dead):
                    continue
                if shard.primary != dead:
                    planned.append(commands.remove_replica(shard.dataset, shard.index, dead, shard.epoch,
                                                           controller_term=controller_term))
                    continue
                candidate = self._best_backup(view, leases, shard, dead, now_s)
                if candidate is not None:
                    logger.warning("shard %s: promoting %s (primary %s dead)", shard.name, candidate, dead)
                    planned.append(commands.promote(shard.dataset, shard.index, candidate, shard.epoch,
                                                    controller_term=controller_term))
                elif (shard.name, dead) not in self._reported_unavailable:
                    self._reported_unavailable.add((shard.name, dead))
                    logger.error("shard %s unavailable: primary %s dead and no live in-sync backup", shard.name, dead)
        return planned

    def _dead_here(self, view: MetadataView, leases: LeaseTable, now_s: float) -> list[str]:
        """Nodes dead in the metadata that this controller, too, has not heard past the dead timeout."""
        return [n.id for n in view.nodes.values()
                if n.state == "dead" and n.id != self.config.node_id
                and leases.silent_s(n.id, now_s) > self.config.node_dead_after_s]

    def _best_backup(self, view: MetadataView, leases: LeaseTable, shard: ShardView, dead: str,
                     now_s: float) -> str | None:
        live = [r for r in shard.replicas if r != dead and view.is_alive(r) and self._holds(leases, shard, r)
                and leases.silent_s(r, now_s) < self.config.node_suspect_after_s]
        if not live:
            return None
        return max(live, key=lambda r: (leases.reported_seq(r, shard), r))

    @staticmethod
    def _holds(leases: LeaseTable, shard: ShardView, node_id: str) -> bool:
        """The replica it reported is the recorded incarnation (a wiped one is new: never promoted)."""
        held = leases.reported(node_id, shard)
        return held is None or shard.is_recorded(node_id, held[1])
