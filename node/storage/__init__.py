"""Shard storage: one LMDB environment per shard replica (see DESIGN.md here).

`ShardStore` holds the records, the shard meta (seq, epoch, checksum, record count)
and the idempotency table; `Entry` is the replication log entry a primary ships to its
backups; `Put`, `Delete`, `CompareAndSet` and `PutBatch` are the write ops. This package
has no cluster logic: replication decides *when* to execute or apply.
"""
from __future__ import annotations

from shoal.node.storage.entry import (
    WRITE_ID_BYTES, CompareAndSet, Delete, Entry, Op, Put, PutBatch, write_id_of,
)
from shoal.node.storage.shard_store import (
    SequenceGapError, ShardState, ShardStore, ShardStoreStatistics,
)

__all__ = [
    "WRITE_ID_BYTES", "CompareAndSet", "Delete", "Entry", "Op", "Put", "PutBatch",
    "SequenceGapError", "ShardState", "ShardStore", "ShardStoreStatistics", "write_id_of",
]
