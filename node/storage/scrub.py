"""Scrubbing one replica: are its records still what its meta rows say (issue 18, point 6)?

`check` recomputes the checksum and count of every record and compares them with the meta
rows, both read in one read transaction, so concurrent writes never make a false alarm.
A flipped bit in a value, a lost or extra record, or damaged meta rows all show.

`mark_corrupt` gives the replica a new incarnation: it is then "not the recorded one", so
the node's existing path takes it out of service (shards.py: it stops serving as primary and
refuses replication; sync_incarnations reports it lost, and the metadata drops it from the
in-sync set) and repair refills it from a healthy replica (replication/learner.py). It also
forgets the epoch of the last entry (`entry_epoch`), so the learner copies it from zero
instead of catching it up by replay; `check` runs again before any such replay as well.

A friend of ShardStore, like fill.py.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN
from shoal.node.storage.write_group import recompute

if TYPE_CHECKING:
    from shoal.node.storage.shard_store import ShardStore


def check(store: ShardStore) -> str | None:
    """None when the records match the meta rows; else what differs (one line)."""
    with store._env.begin(buffers=False) as txn:
        meta = {name: int.from_bytes(txn.get(name, db=store._meta_db) or b"", "big")
                for name in (b"seq", b"checksum", b"records")}
        records, checksum = recompute(txn.cursor(db=store._records_db))
    if (records, checksum) == (meta[b"records"], meta[b"checksum"]):
        return None
    return (f"at seq {meta[b'seq']} the records hold {records} records with checksum {checksum:#018x}, "
            f"the meta rows say {meta[b'records']} with {meta[b'checksum']:#018x}")


def mark_corrupt(store: ShardStore) -> str:
    """Give the replica a new incarnation (it is no longer the recorded one) and forget the epoch
    of its last entry (never caught up by replay); returns the incarnation."""
    incarnation = os.urandom(16).hex()
    with store._write_lock, store._write_txn() as txn:
        txn.put(b"incarnation", incarnation.encode("ascii"), db=store._meta_db)
        state = dataclasses.replace(store._state, entry_epoch=ENTRY_EPOCH_UNKNOWN)
        store._write_meta(txn, state)
    store._state = state
    store._incarnation = incarnation
    return incarnation
