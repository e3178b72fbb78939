"""UnderReplicationClock: since when each shard has been under-replicated, as this node saw it.

The metadata keeps no time (Raft entries carry none), so the dashboard's node watches its
own view: `observe` (every OBSERVE_PERIOD_S while the web app runs, and on each API
request) notes the first moment a shard was under-replicated (MetadataView's one rule)
and forgets it once it is not. Times are this node's: a node started after a shard went
under-replicated counts from its own start, which the API says (`counted_from_s`).
Pure apart from the clock values it is given (monotonic seconds).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from shoal.node.metadata.view import MetadataView

OBSERVE_PERIOD_S: Final = 0.5   # the clock's resolution when no API request comes


class UnderReplicationClock:
    def __init__(self, now_s: float | None = None) -> None:
        self.started_s = time.monotonic() if now_s is None else now_s   # counts run from here at the earliest
        self._since: dict[tuple[str, int], tuple[str, float]] = {}       # (dataset, shard) -> (dataset id, since)

    def observe(self, view: MetadataView, now_s: float) -> None:
        """Note the shards under-replicated in `view` now; forget the others (and re-created datasets)."""
        since: dict[tuple[str, int], tuple[str, float]] = {}
        for shard in view.shards():
            if not view.is_under_replicated(shard):
                continue
            key = (shard.dataset, shard.index)
            known = self._since.get(key)
            since[key] = known if known is not None and known[0] == shard.dataset_id else (shard.dataset_id, now_s)
        self._since = since

    def seconds(self, dataset: str, index: int, now_s: float) -> float | None:
        """How long shard `index` of `dataset` has been under-replicated; None when it is not."""
        known = self._since.get((dataset, index))
        return None if known is None else round(now_s - known[1], 1)

    def counted_from_s(self, now_s: float) -> float:
        """Seconds since this clock started: the longest time it can report."""
        return round(now_s - self.started_s, 1)
