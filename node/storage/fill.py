"""Filling a replica from another one: the copy half of re-replication (issue 18, DESIGN.md 4).

A copy ships pages, not records. The source (the shard's primary) writes a *snapshot* of
its replica's environment to a file (`write_snapshot`: py-lmdb `copyfd`, i.e. mdb_env_copy2,
compacting, inside one read transaction that also reads the seq S the snapshot is at), so
the snapshot is the state at exactly one seq. The learner receives it by byte offset into a
*staging* file beside its environment (`staging_path`): the bytes it holds are its resume
offset, so a copy cut short by a crash of either side continues where it stopped (the
source keeps the file for a while: replication/copy_source.py). Once every byte arrived and
the whole file's digest matches, `prepare` turns the staging file into this replica's own:
a new incarnation, the fill rows (source, base = S, REPLAYING) and an unknown epoch of the
last entry, in one write transaction of the staging environment. `move_into_place` then
renames it over `data.mdb` (the learner closed its store first and opens a new one after:
replication/learner.py), so a crash leaves either the old environment or the new one.

Progress rows (`fill_*` in the meta table of the replica being filled): source, base
(-1 until installed), table (COPYING while bytes arrive, COPIED once the staging file is
whole and verified, REPLAYING after the move) and cursor (the snapshot id being received).
The staging file is truncated *before* a new snapshot id is written, so bytes of one
snapshot never count for another.

Why the snapshot's own checksum/records rows are kept: one read transaction wrote them
with the data beside them, so they describe it exactly (ShardStore writes both in every
transaction). `entry_epoch` becomes unknown: that keeps every copied replica away from
catching up by replay alone (replication/learner.py), as before snapshots.

A friend of ShardStore (same package): it uses the store's environment and databases and
replaces its cached state, under the store's writer lock.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import struct
from typing import TYPE_CHECKING, Any

import lmdb
import xxhash

from shoal.node.storage import entry_log
from shoal.node.storage.shard_store import ENTRY_EPOCH_UNKNOWN, STORE_FORMAT_VERSION

if TYPE_CHECKING:
    from shoal.node.storage.shard_store import ShardStore

COPYING = "copying"   # fill_table while snapshot bytes arrive in the staging file
COPIED = "*"          # fill_table once the staging file is whole and verified (not moved in yet)
REPLAYING = ""        # fill_table after the move: the replica replays entries until it joins
SEQ_MAX = 2**64 - 2   # the largest base seq: the fill_base row holds base + 1 in 8 bytes
STAGING_NAME = "copy.incoming"   # in the replica's directory, beside data.mdb
DIGEST_BLOCK_BYTES = 8 * 1024 * 1024   # read size while hashing a whole snapshot file
_FILL_KEYS = (b"fill_source", b"fill_base", b"fill_table", b"fill_cursor")
# LMDB 0.9's meta page on a 64-bit build (lmdb.h/mdb.c: a 16-byte page header, then MDB_meta)
_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_DATA_VERSION = 1
_META_MAGIC_AT = 16         # mm_magic, mm_version (u32 each)
_META_PSIZE_AT = 40         # mm_dbs[FREE_DBI].md_pad: the page size
_META_FREE_ROOT_AT = 80     # mm_dbs[FREE_DBI].md_root
_META_MAIN_ROOT_AT = 128    # mm_dbs[MAIN_DBI].md_root
_META_LAST_PAGE_AT = 136    # mm_last_pg
_NO_PAGE = 2**64 - 1        # P_INVALID: an empty tree


class BadSnapshotError(Exception):
    """A received snapshot is not a shard environment this node can open (never installed)."""


@dataclasses.dataclass(frozen=True, slots=True)
class FillState:
    source: str                   # the node copied from (a new primary means a new copy)
    base: int                     # the snapshot's seq once installed (-1 before)
    table: str                    # COPYING, COPIED or REPLAYING
    cursor: bytes                 # the snapshot id being received (b"": none yet)


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot file the source wrote (`write_snapshot`)."""
    seq: int                      # the shard's seq in it
    records: int
    size_bytes: int
    digest: int                   # xxh64 of the whole file


# ---- the source's side ---------------------------------------------------------------


def write_snapshot(store: ShardStore, path: pathlib.Path) -> Snapshot:
    """Write the replica's state at one seq to `path` (compacted: only pages in use), from
    one read transaction; C code with the GIL released. Not fsynced here: copy_source
    writes its manifest next, and fsyncs both when the node syncs its stores."""
    with store._env.begin() as txn:
        seq = int.from_bytes(txn.get(b"seq", db=store._meta_db) or b"", "big")
        records = int.from_bytes(txn.get(b"records", db=store._meta_db) or b"", "big")
        with open(path, "wb") as out:
            store._env.copyfd(out.fileno(), compact=True, txn=txn)
    return Snapshot(seq, records, path.stat().st_size, file_digest(path))


def file_digest(path: pathlib.Path) -> int:
    """xxh64 of the whole file."""
    hasher = xxhash.xxh64()
    with open(path, "rb", buffering=0) as source:
        while block := source.read(DIGEST_BLOCK_BYTES):
            hasher.update(block)
    return int(hasher.intdigest())


def read_piece(path: pathlib.Path, offset: int, bytes_max: int) -> bytes:
    """Up to bytes_max bytes of the file from offset."""
    with open(path, "rb", buffering=0) as source:
        return os.pread(source.fileno(), bytes_max, offset)


# ---- the learner's side --------------------------------------------------------------


def fill_state(store: ShardStore) -> FillState | None:
    """The copy in progress in this replica, or None (a replica that is not being filled)."""
    with store._env.begin(db=store._meta_db) as txn:
        rows = [txn.get(name) for name in _FILL_KEYS]
    if rows[0] is None:
        return None
    source, base, table, cursor = (bytes(row or b"") for row in rows)
    return FillState(source.decode(), int.from_bytes(base, "big") - 1, table.decode(), cursor)


def staging_path(store: ShardStore) -> pathlib.Path:
    return store.path / STAGING_NAME


def staged_bytes(store: ShardStore) -> int:
    """Bytes of the snapshot received so far (the resume offset)."""
    try:
        return staging_path(store).stat().st_size
    except FileNotFoundError:
        return 0


def begin(store: ShardStore, source: str) -> FillState:
    """Empty the replica and start a copy from `source`: a new incarnation (its content is
    new), seq 0, no snapshot received yet (the staging file goes)."""
    staging_path(store).unlink(missing_ok=True)
    with store._write_lock, store._write_txn() as txn:
        for db in (store._records_db, store._idem_db, store._idem_log_db):
            txn.drop(db, delete=False)
        entry_log.forget(txn, store._entries_db, store._meta_db)
        incarnation = os.urandom(16).hex()
        txn.put(b"incarnation", incarnation.encode("ascii"), db=store._meta_db)
        state = dataclasses.replace(store._state, seq=0, checksum=0, records=0, entry_epoch=ENTRY_EPOCH_UNKNOWN)
        store._write_meta(txn, state)
        fill = FillState(source, -1, COPYING, b"")
        _write_fill(txn.put, store._meta_db, fill)
    store._state = state
    store._incarnation = incarnation
    return fill


def restart_staging(store: ShardStore, fill: FillState, snapshot_id: str, sync: bool) -> FillState:
    """Receive snapshot `snapshot_id` from its first byte: the staging file is emptied (and
    that made durable) before the id is recorded, so no byte of another snapshot counts."""
    assert fill.table == COPYING, fill
    with open(staging_path(store), "wb") as staging:
        if sync:
            os.fsync(staging.fileno())
    following = dataclasses.replace(fill, cursor=snapshot_id.encode("ascii"))
    with store._write_lock, store._write_txn() as txn:
        _write_fill(txn.put, store._meta_db, following)
    return following


def append(store: ShardStore, offset: int, data: bytes, sync: bool) -> int:
    """Write `data` at `offset` of the staging file (its length: the caller checked); with
    sync, made durable before the next piece is asked for. Returns the new length."""
    descriptor = os.open(staging_path(store), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        written = os.pwrite(descriptor, data, offset)
        assert written == len(data), (written, len(data))
        if sync:
            os.fdatasync(descriptor)
    finally:
        os.close(descriptor)
    return offset + len(data)


def received(store: ShardStore, fill: FillState, digest: int) -> FillState:
    """Every byte arrived: COPIED if the whole file's digest is `digest`; otherwise the staging
    file goes and BadSnapshotError (the copy starts over)."""
    staging = staging_path(store)
    found = file_digest(staging)
    if found != digest:
        staging.unlink(missing_ok=True)
        raise BadSnapshotError(f"snapshot {fill.cursor[:40]!r} arrived with digest {found:#018x}, "
                               f"the source's is {digest:#018x}")
    copied = dataclasses.replace(fill, table=COPIED)
    with store._write_lock, store._write_txn() as txn:
        _write_fill(txn.put, store._meta_db, copied)
    return copied


def prepare(store: ShardStore, source: str, sync: bool, map_size_bytes: int) -> FillState:
    """Make the verified staging file this replica's own, in one write transaction of it: a new
    incarnation, the fill rows (source, base = its seq, REPLAYING), the epoch of the last entry
    unknown, the adopted epoch at least this replica's. BadSnapshotError if it is not a shard
    environment of this format (the staging file then goes)."""
    staging = staging_path(store)
    problem = _file_problem(staging, store._page_bytes)
    if problem is not None:
        staging.unlink(missing_ok=True)
        raise BadSnapshotError(f"the snapshot from {source} is not an LMDB file this node can open: {problem}")
    try:
        env = lmdb.open(str(staging), subdir=False, lock=False, map_size=map_size_bytes, max_dbs=4,
                        writemap=False, sync=sync, metasync=sync, lib_version=0, create=False, readahead=False)
    except lmdb.Error as exc:
        staging.unlink(missing_ok=True)
        raise BadSnapshotError(f"the snapshot from {source} does not open: {exc}") from None
    try:
        return _prepare(env, store, source)
    except (lmdb.Error, BadSnapshotError) as exc:
        staging.unlink(missing_ok=True)
        raise BadSnapshotError(f"the snapshot from {source} is not a shard replica: {exc}") from None
    finally:
        env.close()


def _prepare(env: Any, store: ShardStore, source: str) -> FillState:
    with env.begin(write=True) as txn:
        dbs = [env.open_db(name, txn=txn, create=False) for name in (b"meta", b"records", b"idem", b"idem_log")]
        meta = dbs[0]
        rows = {name: txn.get(name, db=meta) for name in (b"format", b"seq", b"epoch", b"checksum", b"records")}
        if rows[b"format"] is None or int.from_bytes(rows[b"format"], "big") != STORE_FORMAT_VERSION:
            raise BadSnapshotError(f"store format {rows[b'format']!r}")
        if any(value is None or len(value) != 8 for value in rows.values()):
            raise BadSnapshotError("meta rows missing or malformed")
        seq = int.from_bytes(rows[b"seq"], "big")
        if seq > SEQ_MAX:
            raise BadSnapshotError(f"seq {seq} is past {SEQ_MAX}")
        epoch = max(int.from_bytes(rows[b"epoch"], "big"), store.state.epoch)
        txn.put(b"epoch", epoch.to_bytes(8, "big"), db=meta)
        txn.put(b"entry_epoch", ENTRY_EPOCH_UNKNOWN.to_bytes(8, "big"), db=meta)
        txn.put(b"incarnation", os.urandom(16).hex().encode("ascii"), db=meta)
        fill = FillState(source, seq, REPLAYING, b"")
        _write_fill(txn.put, meta, fill)
    return fill


def _file_problem(path: pathlib.Path, page_bytes: int) -> str | None:
    """Why LMDB must not open the file (None: its meta pages are sane). LMDB trusts its file:
    a meta page naming a page past the end would make its first read a SIGBUS of the whole
    node (a truncated file, measured). Pages beyond the meta pages are trusted: the file's
    digest matched what an authenticated peer of this cluster sent."""
    size = path.stat().st_size
    if size < 2 * page_bytes or size % page_bytes:
        return f"{size} bytes is not a whole number of {page_bytes}-byte pages (at least 2)"
    with open(path, "rb") as source:
        head = source.read(2 * page_bytes)
    for offset in (0, page_bytes):
        magic, version = struct.unpack_from("<II", head, offset + _META_MAGIC_AT)
        psize, = struct.unpack_from("<I", head, offset + _META_PSIZE_AT)
        free_root, = struct.unpack_from("<Q", head, offset + _META_FREE_ROOT_AT)
        main_root, = struct.unpack_from("<Q", head, offset + _META_MAIN_ROOT_AT)
        last_page, = struct.unpack_from("<Q", head, offset + _META_LAST_PAGE_AT)
        if (magic, version, psize) != (_LMDB_MAGIC, _LMDB_DATA_VERSION, page_bytes):
            return f"meta page {offset // page_bytes}: magic {magic:#x}, version {version}, page size {psize}"
        if (last_page + 1) * page_bytes > size or any(root != _NO_PAGE and root > last_page
                                                        for root in (free_root, main_root)):
            return f"meta page {offset // page_bytes} names pages past the file's {size} bytes"
    return None


def move_into_place(path: pathlib.Path, sync: bool) -> None:
    """Rename the prepared staging file over `path`/data.mdb; the store there must be closed.
    The lock file goes too, so the next open makes a fresh one: a reader process (a compute
    task) still holding the old pair keeps reading the old file, never the new one through
    the old lock file's transaction ids."""
    os.replace(path / STAGING_NAME, path / "data.mdb")
    (path / "lock.mdb").unlink(missing_ok=True)
    if sync:
        directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def forget(store: ShardStore) -> None:
    """The replica joined the in-sync set: it is an ordinary replica from now on."""
    with store._write_lock, store._write_txn() as txn:
        for name in _FILL_KEYS:
            txn.delete(name, db=store._meta_db)


def _write_fill(put: Any, meta: Any, fill: FillState) -> None:
    put(b"fill_source", fill.source.encode(), db=meta)
    put(b"fill_base", (fill.base + 1).to_bytes(8, "big"), db=meta)
    put(b"fill_table", fill.table.encode(), db=meta)
    put(b"fill_cursor", fill.cursor, db=meta)
