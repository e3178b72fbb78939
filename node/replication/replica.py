"""Replica: one shard replica held by this node: its store, recent entries and role."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING

from shoal.node.metadata.view import dataset_name

if TYPE_CHECKING:
    from shoal.node.replication.ring import EntryRing
    from shoal.node.replication.primary import ShardPrimary
    from shoal.node.storage.shard_store import ShardStore


@dataclasses.dataclass(slots=True)
class FillProgress:
    """A learner's copy as status shows it: records installed of the primary's count, and the rate."""
    phase: str = "copying"          # copying | replaying | joining
    records_done: int = 0
    records_total: int = 0
    bytes_done: int = 0             # since started_s (this process)
    records_start: int = 0          # records_done when this process started or resumed the copy
    started_s: float = dataclasses.field(default_factory=time.monotonic)

    def bytes_per_s(self) -> float:
        elapsed_s = time.monotonic() - self.started_s
        return self.bytes_done / elapsed_s if elapsed_s > 0 else 0.0

    def eta_s(self) -> float:
        """Seconds left in the copy at its rate so far here; 0 when unknown or copied."""
        copied = self.records_done - self.records_start
        elapsed_s = time.monotonic() - self.started_s
        if self.phase != "copying" or copied <= 0 or elapsed_s <= 0:
            return 0.0
        return max(0, self.records_total - self.records_done) * elapsed_s / copied


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
        self.fill: FillProgress | None = None      # while this replica is a learner (status)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.index}"

    def role(self, in_sync: bool, learner: bool = False) -> str:
        if self.primary is not None and self.primary.state != "stopped":
            return "primary"
        if learner:
            return "learner"
        return "backup" if in_sync else "stale"
