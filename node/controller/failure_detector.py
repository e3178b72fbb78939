"""Failure detection: which nodes to declare dead, and which are back. Pure planner.

A node silent for more than `node_dead_after_s` is declared dead through Raft (config
validation keeps that above lease + leader fallback + margin, so its lease has expired);
a dead node *heard* again within `node_suspect_after_s` is declared alive (a fresh view
counts unheard nodes as just seen for the dead timeout, but that is no proof of life).

The controller never judges itself dead: it runs, so it is alive, and it declares
itself alive first if the metadata says dead or suspect (a deposed controller's
decision, or one taken while this node was paused). Every command carries the
controller's term (`controller_term`), which fences it (fsm.py).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.controller.leases import LeaseTable
    from shoal.node.metadata.view import MetadataView

logger = logging.getLogger(__name__)

_NOT_ALIVE = ("dead", "suspect")   # states the controller corrects for itself (not draining or removed)
# A draining node that falls silent is dead too: left draining, it could never be removed ("wait for
# the drain") and its copies never rebuilt. Back, it is alive (its drain over, as after a restart).
_WATCHED = ("alive", "draining")


def plan_node_states(config: NodeConfig, view: MetadataView, leases: LeaseTable, now_s: float, *,
                     controller_term: int) -> list[bytes]:
    """set_node_state commands for nodes whose state should change now; the controller's own first."""
    planned = []
    own = view.node(config.node_id)
    if own is not None and own.state in _NOT_ALIVE:
        logger.warning("controller %s declares itself alive (the metadata says %s)", own.id, own.state)
        planned.append(commands.set_node_state(own.id, "alive", controller_term=controller_term))
    leases.note_states({node.id: node.state for node in view.nodes.values()}, now_s)
    for node in view.nodes.values():
        if node.id == config.node_id:
            continue
        silent_s = leases.silent_s(node.id, now_s)
        if node.state in _WATCHED and silent_s > config.node_dead_after_s:
            logger.warning("node %s declared dead (silent for %.1f s)", node.id, silent_s)
            planned.append(commands.set_node_state(node.id, "dead", controller_term=controller_term))
        elif node.state == "dead" and leases.heard_within(node.id, now_s, config.node_suspect_after_s):
            logger.info("node %s is back", node.id)
            planned.append(commands.set_node_state(node.id, "alive", controller_term=controller_term))
    return planned
