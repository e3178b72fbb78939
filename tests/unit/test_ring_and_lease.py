"""EntryRing (recent replication entries) and Lease (the primary's right to serve)."""
from __future__ import annotations

import time

from shoal.node.lease import Lease
from shoal.node.replication import backup
from shoal.node.replication.ring import EntryRing


def test_ring_returns_contiguous_entries_or_none_when_trimmed() -> None:
    """after(seq, last) gives seq+1..last when held, [] when nothing is missing, None when trimmed."""
    ring = EntryRing(entries_max=5, bytes_max=1 << 20)
    for seq in range(1, 9):
        ring.append(seq, 1, b"p%d" % seq)
    assert [e.seq for e in ring.after(5, 8) or []] == [6, 7, 8]
    assert ring.after(8, 8) == []
    assert ring.after(2, 8) is None          # 3 was trimmed (only 4..8 kept)
    ring.append(20, 2, b"after a gap")       # a gap keeps only the new contiguous run
    assert ring.after(18, 20) is None and [e.seq for e in ring.after(19, 20) or []] == [20]


def test_ring_is_bounded_by_bytes() -> None:
    """The byte bound trims old entries but always keeps the newest one."""
    ring = EntryRing(entries_max=100, bytes_max=10)
    for seq in range(1, 4):
        ring.append(seq, 1, b"x" * 8)
    assert ring.after(2, 3) is not None and ring.after(1, 3) is None


def test_lease_needs_time_and_the_named_metadata_version() -> None:
    """A lease holds until it expires, and only for metadata at least as new as the grant named."""
    lease = Lease()
    assert not lease.valid(5)
    lease.grant(time.monotonic(), 60.0, metadata_version=7)
    assert not lease.valid(6) and lease.valid(7)
    lease.grant(time.monotonic() - 120.0, 60.0, metadata_version=7)   # an older grant never shortens it
    assert lease.valid(7)
    assert Lease(always_valid=True).valid(0)


def test_fetch_entries_reply_is_a_prefix_bounded_by_bytes_issue_16() -> None:
    """Issue 16: a FetchEntries reply holds the longest prefix within its byte bound, at least one entry."""
    ring = EntryRing(entries_max=100, bytes_max=1 << 30)
    for seq in range(1, 6):
        ring.append(seq, 1, b"x" * 1_000_000)
    entries = ring.after(0, 5) or []
    bound = 2 * (1_000_000 + backup.ENTRY_OVERHEAD_BYTES)
    assert [e.seq for e in backup.entries_within(entries, bound)] == [1, 2]
    assert [e.seq for e in backup.entries_within(entries, 10)] == [1]
    assert [e.seq for e in backup.entries_within(entries, 1 << 30)] == [1, 2, 3, 4, 5]
    assert backup.entries_within([], 10) == []
