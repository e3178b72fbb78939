"""Failure detection: which nodes to declare dead, and which are back. Pure planner.

A node silent for more than `node_dead_after_s` is declared dead through Raft (config
validation keeps that above lease + leader fallback + margin, so its lease has expired);
a dead node heard again within `node_suspect_after_s` is declared alive. The controller
never judges itself.
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


def plan_node_states(config: NodeConfig, view: MetadataView, leases: LeaseTable, now_s: float) -> list[bytes]:
    """set_node_state commands for nodes whose state should change now."""
    planned = []
    for node in view.nodes.values():
        if node.id == config.node_id:
            continue
        silent_s = leases.silent_s(node.id, now_s)
        if node.state == "alive" and silent_s > config.node_dead_after_s:
            logger.warning("node %s declared dead (silent for %.1f s)", node.id, silent_s)
            planned.append(commands.set_node_state(node.id, "dead"))
        elif node.state == "dead" and silent_s < config.node_suspect_after_s:
            logger.info("node %s is back", node.id)
            planned.append(commands.set_node_state(node.id, "alive"))
    return planned
