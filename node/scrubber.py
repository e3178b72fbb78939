"""Scrubber: re-verifies every replica this node holds, one at a time, every scrub_interval_s.

A replica whose records do not match its meta rows (storage/scrub.py: a flipped bit, a lost
record) is marked corrupt: it gets a new incarnation, so the node stops serving it at once
(the next reconcile sees "not the recorded replica") and reports it lost; repair then
refills it from a healthy in-sync replica. A learner is skipped (it is being refilled
anyway). The checks run in the node's LMDB threads, never on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from shoal.node.storage import scrub

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.node.replication.context import ReplicationContext
    from shoal.node.shards import ShardRegistry

logger = logging.getLogger(__name__)


class Scrubber:
    def __init__(self, registry: ShardRegistry, context: ReplicationContext, on_corrupt: Callable[[], None]) -> None:
        self.registry = registry
        self.context = context
        self.on_corrupt = on_corrupt     # wakes the reconciler
        self.scrubbed = 0
        self.corrupt = 0
        self.scrubbed_at_s: dict[str, float] = {}   # replica name -> unix time of its last clean scrub (status shows it)

    async def run(self) -> None:
        interval_s = self.context.config.scrub_interval_s
        if interval_s <= 0:
            return
        while True:
            await asyncio.sleep(interval_s)   # the period between two passes, not a wait for a state
            await self.scrub_once()

    async def scrub_once(self) -> None:
        """One pass over every replica held now (in-sync or stale; not learners)."""
        view = self.context.metadata.view
        for replica in self.registry.replicas():
            shard = view.shard(replica.dataset, replica.index)
            if replica.lost or (shard is not None and shard.is_learner(self.context.node_id)):
                continue
            problem = await self.context.run_blocking(scrub.check, replica.store)
            self.scrubbed += 1
            if problem is None:
                self.scrubbed_at_s[replica.name] = time.time()
                continue
            self.corrupt += 1
            incarnation = await self.context.run_blocking(scrub.mark_corrupt, replica.store)
            logger.error("shard %s: scrub found this replica corrupt (%s): taken out of service as incarnation "
                         "%s, to be refilled from a healthy replica", replica.name, problem, incarnation)
            self.on_corrupt()
