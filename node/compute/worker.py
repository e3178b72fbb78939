"""What a worker process runs: one task over one shard replica, in one LMDB read transaction.

Runs in the node's worker processes (pool.py), never in the daemon: CPU work on the
daemon's event loop delays Raft heartbeats (notes/dependencies.md section 4).

LMDB across processes (notes/dependencies.md 2.6): the daemon holds each shard's
environment open for writing; a worker opens the same files read-only (`lock=True`, so
the reader table coordinates with the writer) once per process and keeps them, because
open/close churn across processes crashes py-lmdb (#308, #340). An environment is
reopened when its data file changed inode (the replica was dropped and re-created), and
adopts a map the daemon grew (`MapResizedError` -> `set_mapsize(0)`).

The read transaction is the task's snapshot: a task sees its shard as of the moment it
started (DESIGN.md section 5). An encrypted dataset's task gets its DatasetCipher (that
dataset's derived key only, node/encryption.py) and opens each value before decoding it.
"""
from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack

from shoal.node.compute.query import JoinedArrayDecoder, compile_query

if TYPE_CHECKING:
    from shoal.node.encryption import DatasetCipher

_envs: dict[str, tuple[int, lmdb.Environment, Any]] = {}   # path -> (inode, env, records db)
# Decodes a batch with one unpackb call (query.JoinedArrayDecoder): about half a task's time is decoding.
# Safe for every stored value: a typed dataset's arrays were encoded by the node, and every value a
# client writes is checked to be exactly one msgpack object before it is stored (node/validation.py).
_decoder = JoinedArrayDecoder()


class ResultTooLargeError(Exception):
    """A task's partial result is over the node's task_result_bytes_max."""


def run_query(path: str, spec_bytes: bytes, fields: list[str] | None, result_bytes_max: int,
              cipher: DatasetCipher | None = None) -> tuple[bytes, int, float]:
    """Run a query task over the replica at `path` (values sealed with `cipher` when given).

    Returns (packed partial, records scanned, seconds). Raises QueryError/EvaluationError
    (bad spec, a type error in a record), ResultTooLargeError, lmdb.Error, EncryptionKeyError.
    """
    started_s = time.perf_counter()
    compiled = _compiled(spec_bytes, tuple(fields) if fields is not None else None)
    gc.disable()   # decoded records cannot form cycles; the collector only costs time here (0-10%)
    try:
        partial, scanned = _with_snapshot(path, lambda cursor: _scan(compiled, cursor, cipher))
    finally:
        gc.enable()
    try:
        packed: bytes = msgpack.packb(partial, use_bin_type=True)
    except OverflowError:   # an int past 64 bits (a computed column): say which column, not msgpack's words
        raise compiled.out_of_range_error(partial) from None
    if len(packed) > result_bytes_max:
        raise ResultTooLargeError(f"the partial result of this shard is {len(packed)} bytes, over "
                                  f"task_result_bytes_max = {result_bytes_max}")
    return packed, scanned, time.perf_counter() - started_s


def _scan(compiled: Any, cursor: Any, cipher: DatasetCipher | None) -> tuple[object, int]:
    decoder = _decoder
    if cipher is not None:   # the record key is part of what a value is sealed with
        opened: tuple[object, int] = compiled.partial(cipher.open_pairs(cursor.iternext()), decoder)
        return opened
    if compiled.reads_keys:
        result: tuple[object, int] = compiled.partial(cursor.iternext(), decoder)
    else:
        result = compiled.partial_of_values(cursor.iternext(keys=False, values=True), decoder)
    return result


def scan_records(path: str, cipher: DatasetCipher | None = None) -> list[tuple[bytes, bytes]]:
    """Every (key, raw value) of the replica, in key order, opened with `cipher` when given (map tasks)."""
    if cipher is not None:
        opened: list[tuple[bytes, bytes]] = _with_snapshot(path, lambda cursor: list(cipher.open_pairs(cursor.iternext())))
        return opened
    records: list[tuple[bytes, bytes]] = _with_snapshot(path, lambda cursor: list(cursor.iternext()))
    return records


@functools.lru_cache(maxsize=32)
def _compiled(spec_bytes: bytes, fields: tuple[str, ...] | None) -> Any:
    spec = msgpack.unpackb(spec_bytes, raw=False)
    return compile_query(spec, list(fields) if fields is not None else None)


def _with_snapshot(path: str, body: Callable[[Any], Any]) -> Any:
    for attempt in range(2):
        env, records = _env(path)
        try:
            with env.begin(db=records, buffers=False) as txn:
                return body(txn.cursor(records))
        except lmdb.MapResizedError:
            if attempt:
                raise
            env.set_mapsize(0)   # the daemon grew the map: adopt its size and read again
    raise AssertionError("unreachable")


def _env(path: str) -> tuple[lmdb.Environment, Any]:
    inode = os.stat(os.path.join(path, "data.mdb")).st_ino
    known = _envs.get(path)
    if known is not None and known[0] == inode:
        return known[1], known[2]
    if known is not None:
        known[1].close()
    env = lmdb.open(path, readonly=True, lock=True, subdir=True, max_dbs=4, lib_version=0, create=False)
    records = env.open_db(b"records", create=False)
    _envs[path] = (inode, env, records)
    return env, records
