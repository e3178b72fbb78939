"""The `entries` table of a shard store: its most recent entries, kept with the data.

Why: the replication ring (replication/ring.py) is loaded from it when the replica opens,
so a primary restarted within the dead timeout can still send a backup the few entries it
missed instead of fencing it out for a full copy (issue 18: "a restarted primary's
recent-entry ring is empty"). Written in the write transaction of the entry's data
(`ShardStore.execute` unless the replica is alone, `ShardStore.apply`), so what it holds
always matches the data beside it, even after SIGKILL.

Layout: seq (u64 big-endian) -> the encoded Entry; meta row `entry_bytes` (u64 BE) holds
their total bytes. Bounded by count and bytes, trimmed oldest first. An entry larger than
the byte bound (a bulk batch) is not kept: the run then no longer ends at the replica's seq
and none is used until a later entry is kept, and bulk ingest does not write its data twice.
"""
from __future__ import annotations

from typing import Any

from shoal.node.storage.entry import Entry

_TOTAL = b"entry_bytes"


def keep(txn: Any, entries_db: Any, meta_db: Any, entry: Entry, count_max: int, bytes_max: int) -> None:
    """Store `entry`; drop the oldest past `count_max` entries or `bytes_max` bytes."""
    payload = entry.encode()
    if len(payload) > bytes_max:
        return
    stored = txn.get(_TOTAL, db=meta_db)
    total = (0 if stored is None else int.from_bytes(stored, "big")) + len(payload)
    txn.put(entry.seq.to_bytes(8, "big"), payload, db=entries_db)
    count = txn.stat(entries_db)["entries"]
    cursor = txn.cursor(db=entries_db)
    while (count > count_max or total > bytes_max) and cursor.first():
        total -= len(cursor.value())
        cursor.delete()
        count -= 1
    txn.put(_TOTAL, total.to_bytes(8, "big"), db=meta_db)


def recent(txn: Any, entries_db: Any, last_seq: int) -> list[tuple[int, bytes]]:
    """(seq, encoded Entry) of the stored run ending at `last_seq` without a gap, oldest first;
    empty when the newest stored entry is not `last_seq`."""
    run: list[tuple[int, bytes]] = []
    cursor = txn.cursor(db=entries_db)
    if not cursor.last() or int.from_bytes(cursor.key(), "big") != last_seq:
        return run
    for key, payload in cursor.iterprev():
        if int.from_bytes(key, "big") != last_seq - len(run):
            break
        run.append((last_seq - len(run), bytes(payload)))
    run.reverse()
    return run


def forget(txn: Any, entries_db: Any, meta_db: Any) -> None:
    """Empty the table (the replica is emptied for a copy)."""
    txn.drop(entries_db, delete=False)
    txn.delete(_TOTAL, db=meta_db)
