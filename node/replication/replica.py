"""Replica: one shard replica held by this node: its store, recent entries and role."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.node.replication.ring import EntryRing
    from shoal.node.replication.primary import ShardPrimary
    from shoal.node.storage.shard_store import ShardStore


class Replica:
    def __init__(self, dataset: str, index: int, store: ShardStore, ring: EntryRing) -> None:
        self.dataset = dataset
        self.index = index
        self.store = store
        self.ring = ring
        self.apply_lock = asyncio.Lock()     # backups apply entries one at a time, in order
        self.primary: ShardPrimary | None = None

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.index}"

    def role(self, in_sync: bool) -> str:
        if self.primary is not None and self.primary.state != "stopped":
            return "primary"
        return "backup" if in_sync else "stale"
