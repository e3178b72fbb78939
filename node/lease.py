"""The primary's lease: the right to serve reads and acknowledge writes.

Granted by the controller in heartbeat replies and counted from the moment the
heartbeat was *sent* (so it always ends before the controller's view of it). It holds
only once this node applied the metadata version the controller named, so a node
that was deposed while paused cannot serve from its stale shard map.
"""
from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseStatistics:
    valid: bool
    remaining_s: float
    grants: int


class Lease:
    def __init__(self, *, always_valid: bool = False) -> None:
        self._always_valid = always_valid   # standalone node: nobody else can take over
        self._until_s = 0.0
        self._version_min = 0
        self._grants = 0

    def grant(self, sent_at_s: float, duration_s: float, metadata_version: int) -> None:
        self._until_s = max(self._until_s, sent_at_s + duration_s)
        self._version_min = max(self._version_min, metadata_version)
        self._grants += 1

    def valid(self, metadata_version: int) -> bool:
        if self._always_valid:
            return True
        return time.monotonic() < self._until_s and metadata_version >= self._version_min

    def lapsed_s(self, metadata_version: int, since_s: float) -> float:
        """Seconds this lease has not been valid, counted from `since_s` (monotonic) at the
        earliest (a lease never granted lapsed at since_s); 0.0 while it is valid."""
        if self.valid(metadata_version):
            return 0.0
        return max(0.0, time.monotonic() - max(self._until_s, since_s))

    def statistics(self, metadata_version: int) -> LeaseStatistics:
        remaining = max(0.0, self._until_s - time.monotonic())
        return LeaseStatistics(self.valid(metadata_version), remaining, self._grants)
