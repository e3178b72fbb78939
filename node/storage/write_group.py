"""One write group inside its LMDB write transaction: decide each op, collect the effects.

`ShardStore.execute` runs a WriteGroup per group of client ops (CAS outcomes, replays of a
known write id, puts and deletes), then writes the effects with `write_effects`, which
keeps the order-independent checksum (XOR of xxh64 of key and value) and the record
count in step; `recompute` rebuilds both from scratch (`ShardStore.verify`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import typing
from typing import TYPE_CHECKING

import lmdb
import msgpack
import xxhash

from shoal.node.storage.documents import same_document
from shoal.node.storage.entry import CompareAndSet, Delete, Op, Put, PutBatch

if TYPE_CHECKING:
    from shoal.node.storage.shard_store import ShardState


class WriteGroup:
    """Decides the ops of one execute() inside its write txn and collects the effects."""

    def __init__(self, txn: lmdb.Transaction[bytes], records_db: lmdb._Database,
                 idem_db: lmdb._Database, state: ShardState) -> None:
        cursor = txn.cursor(db=records_db)
        self._replace = cursor.replace
        self._pop = cursor.pop
        self._txn = txn
        self._records_db = records_db
        self._idem_db = idem_db
        self._fresh: dict[bytes, object] = {}   # write_id -> result, decided in this group
        self.checksum = state.checksum
        self.records = state.records
        self.keys: list[bytes] = []
        self.values: list[bytes | None] = []
        self.write_ids: list[bytes] = []
        self.results: list[bytes] = []
        self.replayed = 0

    def execute(self, op: Op) -> object:
        write_id = op.write_id
        if write_id:
            if write_id in self._fresh:
                self.replayed += 1
                return self._fresh[write_id]
            stored = self._txn.get(write_id, None, self._idem_db)
            if stored is not None:
                self.replayed += 1
                return unpack_result(stored[8:])
        result = self._decide(op)
        if write_id:
            self._fresh[write_id] = result
            self.write_ids.append(write_id)
            self.results.append(msgpack.packb(result, use_bin_type=True))
        return result

    def _decide(self, op: Op) -> object:
        if type(op) is PutBatch:
            self._put(op.keys, op.values)
            return len(op.keys)
        if type(op) is Put:
            self._put((op.key,), (op.value,))
            return None
        if type(op) is Delete:
            return self._delete(op.key)
        assert type(op) is CompareAndSet
        return self._compare_and_set(op)

    def _put(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        self.checksum, self.records = _write_values(
            self._replace, keys, values, self.checksum, self.records)
        self.keys.extend(keys)
        self.values.extend(values)

    def _delete(self, key: bytes) -> bool:
        old = self._pop(key)
        if old is None:
            return False
        self.checksum ^= _xxh(old, _xxh(key))
        self.records -= 1
        self.keys.append(key)
        self.values.append(None)
        return True

    def _compare_and_set(self, op: CompareAndSet) -> tuple[bool, bool, bytes | None]:
        current = self._txn.get(op.key, None, self._records_db)
        if op.expect_absent:
            swapped = current is None
        else:
            seen = current if current is None or op.open_current is None else op.open_current(op.key, current)
            swapped = seen is not None and same_document(seen, op.expected)
        if swapped:
            if op.delete:
                self._delete(op.key)
            else:
                self._put((op.key,), (op.value,))
        return swapped, current is not None, current


_xxh = xxhash.xxh64_intdigest


def _write_values(replace: Callable[[bytes, bytes], bytes | None], keys: Sequence[bytes], values: Sequence[bytes],
                  checksum: int, records: int) -> tuple[int, int]:
    """The hot loop: put every record with cursor.replace, updating checksum and count."""
    xxh = _xxh
    for key, value in zip(keys, values):
        seed = xxh(key)
        old = replace(key, value)
        checksum ^= xxh(value, seed)
        if old is None:
            records += 1
        else:
            checksum ^= xxh(old, seed)
    return checksum, records


def write_effects(cursor: lmdb.Cursor[bytes], keys: list[bytes], values: list[bytes | None],
                   checksum: int, records: int) -> tuple[int, int]:
    """Apply decided effects (None = delete) in order; returns (checksum, records)."""
    if None not in values:
        puts = typing.cast("list[bytes]", values)  # no None in it
        return _write_values(cursor.replace, keys, puts, checksum, records)
    xxh, replace, pop = _xxh, cursor.replace, cursor.pop
    for key, value in zip(keys, values):
        seed = xxh(key)
        if value is None:
            old = pop(key)
            records -= old is not None
        else:
            old = replace(key, value)
            checksum ^= xxh(value, seed)
            records += old is None
        if old is not None:
            checksum ^= xxh(old, seed)
    return checksum, records


def recompute(cursor: lmdb.Cursor[bytes]) -> tuple[int, int]:
    checksum = records = 0
    xxh = _xxh
    for key, value in cursor.iternext():
        checksum ^= xxh(value, xxh(key))
        records += 1
    return records, checksum


def unpack_result(packed: bytes) -> object:
    """A recorded result as execute() returned it fresh (msgpack turns tuples into lists)."""
    result = msgpack.unpackb(packed, raw=False)
    return tuple(result) if type(result) is list else result
