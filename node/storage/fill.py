"""Filling a replica from another one: the copy half of re-replication (issue 18, DESIGN.md 4).

A learner's replica is filled table by table (`records`, `idem`, `idem_log`) with chunks
its shard's primary reads (`read_chunk`): each chunk comes from its own short read
transaction, so a long copy pins no pages on the source, and each chunk carries the
source's seq at that read. The learner installs a chunk and its progress (`fill_*` meta
rows: source node, base seq, table, cursor) in one write transaction, so a copy cut short
by a crash of either side resumes after the last installed key, never from zero.

Why chunks of different snapshots are enough: entries are blind effects (the primary
decided every compare-and-set), and the base is the seq of the first chunk of the copy.
Every chunk shows its keys at some seq >= base, so replaying every entry after the base
in order (FetchEntries, replication/learner.py) leaves each key at its latest value,
whatever seq its chunk was read at. `finish` recomputes the checksum and record count
over what was installed and sets the store's seq to the base, ready for that replay.

`begin` and `finish` set the epoch of the last entry (`entry_epoch`) to unknown: an empty
replica has no last entry, and a copied one holds chunks of many seqs, not the state at
its seq, so neither may ever be caught up by replay alone (replication/learner.py).

A friend of ShardStore (same package): it uses the store's environment and databases and
replaces its cached state, under the store's writer lock.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN
from shoal.node.storage.write_group import recompute

if TYPE_CHECKING:
    from shoal.node.storage.shard_store import ShardStore

TABLES = ("records", "idem", "idem_log")
COPIED = "*"          # fill_table once every table is installed (finish() not run yet)
REPLAYING = ""        # fill_table after finish(): the replica replays entries until it joins
CHUNK_RECORD_OVERHEAD_BYTES = 16
KEY_BYTES_MAX = 511   # LMDB 0.9's key limit (ShardStore opens lib_version=0): no longer key can be installed
SEQ_MAX = 2**64 - 2   # the largest base seq: the fill_base row holds base + 1 in 8 bytes
_FILL_KEYS = (b"fill_source", b"fill_base", b"fill_table", b"fill_cursor")


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    table: str                    # one of TABLES
    pairs: list[tuple[bytes, bytes]]
    done: bool                    # the table has no key after the last pair
    seq: int                      # the source's seq at the read


@dataclasses.dataclass(frozen=True, slots=True)
class FillState:
    source: str                   # the node copied from (a new primary means a new copy)
    base: int                     # seq of the first chunk read (-1: none yet)
    table: str                    # the table being copied, COPIED or REPLAYING
    cursor: bytes                 # the last key installed in it (b"": none yet)


def read_chunk(store: ShardStore, table: str, after: bytes, bytes_max: int) -> Chunk:
    """Pairs of `table` after key `after` (b"": from the first), at most bytes_max of keys and
    values (but at least one pair), from one read transaction, with the seq it saw."""
    db = _db(store, table)
    pairs: list[tuple[bytes, bytes]] = []
    size = 0
    with store._env.begin(buffers=False) as txn:
        seq = int.from_bytes(txn.get(b"seq", db=store._meta_db) or b"", "big")
        cursor = txn.cursor(db=db)
        found = cursor.set_range(after) if after else cursor.first()
        if found and after and cursor.key() == after:
            found = cursor.next()
        while found:
            key, value = cursor.item()
            size += len(key) + len(value) + CHUNK_RECORD_OVERHEAD_BYTES
            if pairs and size > bytes_max:
                return Chunk(table, pairs, False, seq)
            pairs.append((key, value))
            found = cursor.next()
    return Chunk(table, pairs, True, seq)


def fill_state(store: ShardStore) -> FillState | None:
    """The copy in progress in this replica, or None (a replica that is not being filled)."""
    with store._env.begin(db=store._meta_db) as txn:
        rows = [txn.get(name) for name in _FILL_KEYS]
    if rows[0] is None:
        return None
    source, base, table, cursor = (bytes(row or b"") for row in rows)
    return FillState(source.decode(), int.from_bytes(base, "big") - 1, table.decode(), cursor)


def records_installed(store: ShardStore) -> int:
    """Records in the replica now (a copy's progress)."""
    with store._env.begin() as txn:
        return int(txn.stat(store._records_db)["entries"])


def begin(store: ShardStore, source: str) -> FillState:
    """Empty the replica and start a copy from `source`: a new incarnation (its content is
    new), seq 0, nothing copied yet."""
    with store._write_lock, store._write_txn() as txn:
        for db in (store._records_db, store._idem_db, store._idem_log_db):
            txn.drop(db, delete=False)
        incarnation = os.urandom(16).hex()
        txn.put(b"incarnation", incarnation.encode("ascii"), db=store._meta_db)
        state = dataclasses.replace(store._state, seq=0, checksum=0, records=0, entry_epoch=ENTRY_EPOCH_UNKNOWN)
        store._write_meta(txn, state)
        fill = FillState(source, -1, TABLES[0], b"")
        _write_fill(store, txn, fill)
    store._state = state
    store._incarnation = incarnation
    return fill


def install(store: ShardStore, fill: FillState, chunk: Chunk) -> FillState:
    """Install one chunk of `fill.table` and the progress, in one transaction."""
    assert chunk.table == fill.table, (chunk.table, fill.table)
    db = _db(store, chunk.table)
    cursor = chunk.pairs[-1][0] if chunk.pairs else fill.cursor
    base = chunk.seq if fill.base < 0 else fill.base
    if chunk.done:
        position = TABLES.index(chunk.table) + 1
        following = FillState(fill.source, base, TABLES[position] if position < len(TABLES) else COPIED, b"")
    else:
        following = FillState(fill.source, base, fill.table, cursor)
    with store._write_lock, store._write_txn() as txn:
        if chunk.pairs:
            txn.cursor(db=db).putmulti(chunk.pairs)
        _write_fill(store, txn, following)
    return following


def finish(store: ShardStore, fill: FillState) -> FillState:
    """Every table copied: recompute checksum and records and set seq to the base, in one
    transaction with the move to REPLAYING (entries after the base are replayed next)."""
    assert fill.table == COPIED and fill.base >= 0, fill
    replaying = FillState(fill.source, fill.base, REPLAYING, b"")
    with store._write_lock, store._write_txn() as txn:
        records, checksum = recompute(txn.cursor(db=store._records_db))
        state = dataclasses.replace(store._state, seq=fill.base, checksum=checksum, records=records,
                                    entry_epoch=ENTRY_EPOCH_UNKNOWN)
        store._write_meta(txn, state)
        _write_fill(store, txn, replaying)
    store._state = state
    return replaying


def forget(store: ShardStore) -> None:
    """The replica joined the in-sync set: it is an ordinary replica from now on."""
    with store._write_lock, store._write_txn() as txn:
        for name in _FILL_KEYS:
            txn.delete(name, db=store._meta_db)


def _write_fill(store: ShardStore, txn: Any, fill: FillState) -> None:
    put = txn.put
    meta = store._meta_db
    put(b"fill_source", fill.source.encode(), db=meta)
    put(b"fill_base", (fill.base + 1).to_bytes(8, "big"), db=meta)
    put(b"fill_table", fill.table.encode(), db=meta)
    put(b"fill_cursor", fill.cursor, db=meta)


def _db(store: ShardStore, table: str) -> Any:
    return {"records": store._records_db, "idem": store._idem_db, "idem_log": store._idem_log_db}[table]
