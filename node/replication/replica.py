"""Replica: one shard replica held by this node: its store, recent entries and role."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shoal.node.metadata.view import dataset_name

if TYPE_CHECKING:
    from shoal.node.replication.ring import EntryRing
    from shoal.node.replication.primary import ShardPrimary
    from shoal.node.storage.shard_store import ShardStore


class Replica:
    def __init__(self, dataset_id: str, index: int, store: ShardStore, ring: EntryRing) -> None:
        self.dataset_id = dataset_id               # "<name>@<version>": one incarnation of the dataset
        self.dataset = dataset_name(dataset_id)    # the name, for messages and logs
        self.index = index
        self.store = store
        self.ring = ring
        self.apply_lock = asyncio.Lock()     # backups apply entries one at a time, in order
        self.primary: ShardPrimary | None = None
        self.lost = False    # the metadata recorded another incarnation: this copy is new, never in sync

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.index}"

    def role(self, in_sync: bool) -> str:
        if self.primary is not None and self.primary.state != "stopped":
            return "primary"
        return "backup" if in_sync else "stale"
