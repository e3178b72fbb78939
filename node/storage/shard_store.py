"""ShardStore: one shard replica in its own LMDB environment.

Layout (see DESIGN.md beside this file): named DBs `records` (key -> msgpack value),
`meta` (seq, epoch, checksum, records, entry_epoch, format; u64 big-endian), `idem` (write_id ->
seq u64 + msgpack result), `idem_log` (seq u64 + write_id -> b"", oldest first) and
`entries` (seq u64 -> the encoded Entry: the most recent entries, bounded by count and bytes).
Every write transaction updates the data, the idempotency rows, the entry and the meta rows
together, so what the meta says is exactly what the records hold, even after SIGKILL.
(`entries`: why and how in entry_log.py.)

Two write paths:
- `execute(ops, epoch)` on the primary decides every op (CAS outcome, replays of a
  known write_id) and returns the `Entry` of what it actually changed;
- `apply(entry)` on a backup replays such an entry without logic, in sequence order.

Why the checksum is an XOR of per-record hashes: it is order-independent and can be
updated per write (XOR out the old record, XOR in the new one), so replicas compare
their contents through the meta row without scanning. `verify()` recomputes it.

Threads: a write transaction begins and commits inside one method call (LMDB binds it
to its thread); the caller runs execute/apply/set_epoch one at a time per store (a lock
also serialises them, as a guard, not as the intended way to queue writes). Reads
(`get`, `scan`, `lookup_write`, `state`) may run concurrently from other threads; the
cached `state` is replaced as a whole after each commit.

A full map or a full/failing disk aborts the whole transaction and raises
StorageFullError: nothing of the group is applied and the store stays readable.

Headroom (issue 16): LMDB is copy-on-write, so a delete needs free pages too (a new copy
of every page on its path, the idempotency rows, the meta rows, the free list). A shard
filled to the last page could then not even delete. So `execute` refuses a group that
puts a value and grows the tree pages past `map pages - headroom_pages` (1/16 of the map,
at least 32 and at most 16,384 pages); a group without puts (deletes) is never refused
this way, and always finds the reserve. Backups (`apply`) do not check: they follow what
their primary accepted, with the same map size, so they have the same reserve.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import pathlib
import resource
import threading
import typing
from collections.abc import Callable, Iterator, Sequence

import lmdb

from shoal.node.datadir import free_space_text
from shoal.node.errors import (
    FileLimitError, InvalidRequestError, NodeError, StaleEpochError, StorageFullError, TooLargeError,
)
from shoal.node.storage import entry_log
from shoal.node.storage.entry import CompareAndSet, Delete, Entry, Op, Put, PutBatch
from shoal.node.storage.write_group import WriteGroup, recompute, unpack_result, write_effects

if typing.TYPE_CHECKING:
    from shoal.node.config import NodeConfig

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
SCAN_RECORD_OVERHEAD_BYTES = 16   # framing of one record in a ScanChunk (two length-prefixed fields), rounded up
_META_KEYS = (b"seq", b"epoch", b"checksum", b"records")
ENTRY_EPOCH_UNKNOWN = 0           # entry_epoch of an empty, copied or older replica: never caught up by replay
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT})
_FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
FDS_PER_SHARD = 3                 # measured: data.mdb, lock.mdb, and data.mdb again (O_DSYNC, meta writes)
HEADROOM_PAGES_MIN = 32           # pages kept free for deletes in a tiny map (1 MiB = 256 pages)
HEADROOM_PAGES_MAX = 16_384       # 64 MiB of 4 KiB pages: a large map reserves no more
HEADROOM_MAP_FRACTION = 16        # reserve 1/16 of the map between those bounds
SHARD_DBS = 5                     # records, meta, idem, idem_log, entries
_FIXED_PAGES = 4                  # 2 meta pages, the main DB root, the free-list root
_Method = typing.TypeVar("_Method", bound=Callable[..., typing.Any])


def _one_writer(method: _Method) -> _Method:
    """Serialise a write method: it reads `state`, commits, then replaces `state`, and a
    second writer starting between the commit and the replacement would reuse the seq."""
    @functools.wraps(method)
    def locked(self: ShardStore, *args: object, **kwargs: object) -> object:
        with self._write_lock:
            return method(self, *args, **kwargs)
    return typing.cast(_Method, locked)


class SequenceGapError(NodeError):
    """An entry is not the next one: the backup must catch up (or it is a duplicate).

    Peer-level only (never sent to clients), so it keeps the base error code.
    """

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"expected entry seq {expected}, got {got}")
        self.expected = expected
        self.got = got


@dataclasses.dataclass(frozen=True, slots=True)
class ShardState:
    """What the meta DB says: last applied entry, adopted epoch, checksum, record count, and
    the epoch the last applied entry was made in (the primary's epoch when it executed entry
    `seq`; ENTRY_EPOCH_UNKNOWN when the replica cannot tell: empty, filled by a copy, or
    written before the row existed). (seq, entry_epoch) names the entry: a learner reuses its
    replica only if its primary's history holds that same entry (replication/learner.py)."""

    seq: int
    epoch: int
    checksum: int
    records: int
    entry_epoch: int = ENTRY_EPOCH_UNKNOWN


@dataclasses.dataclass(frozen=True, slots=True)
class ShardStoreStatistics:
    path: str
    seq: int
    epoch: int
    checksum: int
    records: int
    size_bytes: int
    map_size_bytes: int
    idempotency_rows: int
    entries_executed: int      # execute() commits
    entries_applied: int       # apply() commits
    ops_replayed: int          # ops answered from an idempotency record
    storage_full_errors: int


class ShardStore:
    """One LMDB environment holding one shard replica. See the module docstring."""

    def __init__(self, path: pathlib.Path, *, map_size_bytes: int, sync: bool = True,
                 idempotency_retain: int = 100_000, max_readers: int = 1024,
                 entries_retain: int = 0, entries_retain_bytes: int = 0) -> None:
        assert map_size_bytes > 0 and idempotency_retain >= 0 and entries_retain >= 0 and entries_retain_bytes >= 0
        self._path = pathlib.Path(path)
        self._map_size_bytes = map_size_bytes
        self._idempotency_retain = idempotency_retain
        self._entries_retain = entries_retain               # 0: keep no entries
        self._entries_retain_bytes = entries_retain_bytes
        self._entries_executed = 0
        self._entries_applied = 0
        self._ops_replayed = 0
        self._storage_full_errors = 0
        self._write_lock = threading.Lock()
        self._path.mkdir(parents=True, exist_ok=True)
        # lib_version=0 explicitly: LMDB 0.9 file format, readable by every node (notes 2.1).
        try:
            self._env = lmdb.open(
                str(self._path), map_size=map_size_bytes, subdir=True, max_dbs=SHARD_DBS, writemap=False,
                sync=sync, metasync=sync, max_readers=max_readers, lib_version=0, readahead=True,
            )
        except lmdb.Error as exc:
            if getattr(exc, "code", 0) not in _FD_ERRNOS:
                raise
            raise FileLimitError(file_limit_message(f"cannot open shard {self._path}")) from None
        try:
            psize = self._env.stat()["psize"]
            self._page_bytes = psize
            map_pages = map_size_bytes // psize
            self._pages_max = map_pages - min(max(map_pages // HEADROOM_MAP_FRACTION, HEADROOM_PAGES_MIN),
                                              HEADROOM_PAGES_MAX)
            self._max_key_bytes = self._env.max_key_size()
            with self._write_txn() as txn:
                self._records_db = self._env.open_db(b"records", txn=txn)
                self._meta_db = self._env.open_db(b"meta", txn=txn)
                self._idem_db = self._env.open_db(b"idem", txn=txn)
                self._idem_log_db = self._env.open_db(b"idem_log", txn=txn)
                self._entries_db = self._env.open_db(b"entries", txn=txn)
                state = self._load_state(txn)
                self._incarnation = self._load_incarnation(txn)
        except BaseException:
            self._env.close()
            raise
        self._state = state

    # ---- state and reads -------------------------------------------------------------

    @property
    def path(self) -> pathlib.Path:
        return self._path

    @property
    def state(self) -> ShardState:
        """The state as of the last commit (cached; safe to read from any thread)."""
        return self._state

    @property
    def incarnation(self) -> str:
        """Made with this LMDB environment (32 hex characters): a wiped or re-created replica gets a new one.

        A copy of the files (a restored backup) keeps it: the seq then tells how far behind it is.
        """
        return self._incarnation

    def get(self, key: bytes) -> bytes | None:
        """The value under `key`, or None."""
        self._check_key(key)
        with self._env.begin(db=self._records_db) as txn:
            return txn.get(key)

    def lookup_write(self, write_id: bytes) -> tuple[bool, object]:
        """`(found, result)` for a write_id; `(False, None)` when nothing is recorded.

        A tuple because a recorded result may itself be None (a Put).
        """
        with self._env.begin(db=self._idem_db) as txn:
            stored = txn.get(write_id) if write_id else None
        if stored is None:
            return False, None
        return True, unpack_result(stored[8:])

    def scan(self, start: bytes = b"", end: bytes = b"", prefix: bytes = b"", limit: int = 0,
             chunk_records: int = 1000, chunk_bytes: int = 4 * 1024 * 1024) -> Iterator[list[tuple[bytes, bytes]]]:
        """Records with start <= key < end (empty = unbounded) and the prefix, in key order.

        Yields chunks of at most `chunk_records` records and at most `chunk_bytes` bytes
        (keys, values and SCAN_RECORD_OVERHEAD_BYTES each), except that a chunk always
        holds at least one record: a chunk fits in one message whatever the values' sizes.
        Each chunk is read in its own short read transaction (no txn is held across a
        yield, so a slow consumer pins no pages), resuming after the last key. Chunks are
        not one snapshot together.
        """
        assert chunk_records > 0 and chunk_bytes > 0 and limit >= 0
        position, stop = _scan_bounds(start, end, prefix)
        remaining = limit if limit else None
        inclusive = True
        while position is not None:
            want = chunk_records if remaining is None else min(chunk_records, remaining)
            chunk, finished = self._scan_chunk(position, inclusive, stop, want, chunk_bytes)
            if chunk:
                yield chunk
            if remaining is not None:
                remaining -= len(chunk)
                finished = finished or remaining == 0
            if finished:
                return
            position, inclusive = chunk[-1][0], False

    def _scan_chunk(self, position: bytes, inclusive: bool, stop: bytes | None,
                    want: int, bytes_max: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        chunk: list[tuple[bytes, bytes]] = []
        append = chunk.append
        size = 0
        with self._env.begin(db=self._records_db) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(position):
                return chunk, True
            if not inclusive and cursor.key() == position and not cursor.next():
                return chunk, True
            for key, value in cursor.iternext():
                if stop is not None and key >= stop:
                    return chunk, True
                size += len(key) + len(value) + SCAN_RECORD_OVERHEAD_BYTES
                if size > bytes_max and chunk:
                    return chunk, False   # this record opens the next chunk
                append((key, value))
                if len(chunk) >= want:
                    return chunk, False
        return chunk, True

    def verify(self) -> tuple[int, int]:
        """Recompute (records, checksum) over every record, in one read transaction.

        Compare with `state` only while no write runs (tests, or a quiesced scrub).
        """
        with self._env.begin(db=self._records_db) as txn:
            return recompute(txn.cursor())

    def size_bytes(self) -> int:
        """Bytes of the data file in use (high-water mark of allocated pages)."""
        return (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]

    def statistics(self) -> ShardStoreStatistics:
        state = self._state
        with self._env.begin() as txn:
            idempotency_rows = txn.stat(self._idem_db)["entries"]
        return ShardStoreStatistics(
            path=str(self._path), seq=state.seq, epoch=state.epoch, checksum=state.checksum,
            records=state.records, size_bytes=self.size_bytes(),
            map_size_bytes=self._map_size_bytes, idempotency_rows=idempotency_rows,
            entries_executed=self._entries_executed, entries_applied=self._entries_applied,
            ops_replayed=self._ops_replayed, storage_full_errors=self._storage_full_errors,
        )

    def close(self) -> None:
        """Close the environment (idempotent); no method may be called afterwards.

        Waits for a write in flight on another thread (a dropped shard's last commit), so
        the environment never closes under a live write transaction.
        """
        with self._write_lock:
            self._env.close()

    def __enter__(self) -> ShardStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- writes ----------------------------------------------------------------------

    @_one_writer
    def execute(self, ops: Sequence[Op], epoch: int, keep_entry: bool = True) -> tuple[Entry, list[object]]:
        """Primary path: decide and apply `ops` in order as entry state.seq + 1.

        An op whose write_id is already recorded (in the table, or earlier in this
        group) changes nothing and returns the recorded result. Results: Put -> None,
        Delete -> existed, CompareAndSet -> (swapped, current_found, current),
        PutBatch -> count. Returns the Entry of the effects actually applied (what a
        backup must replay; possibly empty) and one result per op. Always commits a
        new seq, so the returned entry also orders after every earlier one. `keep_entry`:
        also store the entry in `entries` (False for a lone replica: nobody to catch up).
        """
        state = self._state
        if epoch < state.epoch:
            raise StaleEpochError(f"shard {self._path}: epoch {epoch} < adopted {state.epoch}")
        self._check_ops(ops)
        try:
            return self._execute(ops, epoch, state, keep_entry)
        except StorageFullError:
            if any(type(op) is not Delete and not (type(op) is CompareAndSet and op.delete) for op in ops):
                raise
        # Only deletes, and still no room: the pages the previous commit freed are not
        # reusable until two more commits have passed (LMDB keeps the last snapshot).
        # Two tiny commits release them, then the deletes find the reserve.
        self._storage_full_errors -= 1     # counted again if the retry fails too
        self._write_meta_only()
        self._write_meta_only()
        return self._execute(ops, epoch, state, keep_entry)

    def _execute(self, ops: Sequence[Op], epoch: int, state: ShardState,
                 keep_entry: bool) -> tuple[Entry, list[object]]:
        seq = state.seq + 1
        with self._write_txn() as txn:
            pages_before = self._pages_used(txn)
            group = WriteGroup(txn, self._records_db, self._idem_db, state)
            results = [group.execute(op) for op in ops]
            self._record_writes(txn, seq, group.write_ids, group.results)
            entry = Entry(seq, epoch, group.keys, group.values, group.write_ids, group.results)
            if keep_entry:
                self._keep_entry(txn, entry)
            if any(value is not None for value in group.values):
                self._check_headroom(txn, pages_before)
            new_state = ShardState(seq, epoch, group.checksum, group.records, epoch)
            self._write_meta(txn, new_state)
        self._state = new_state
        self._entries_executed += 1
        self._ops_replayed += group.replayed
        return entry, results

    @_one_writer
    def apply(self, entry: Entry) -> ShardState:
        """Backup path: apply an entry decided by the primary; it must be state.seq + 1.

        The entry may carry an older epoch than the adopted one: a new primary
        reconciling replicas replays entries of its predecessor. Fencing stale
        primaries is done on the message epoch (replication/backup.py), not here.
        """
        state = self._state
        if entry.seq != state.seq + 1:
            raise SequenceGapError(state.seq + 1, entry.seq)
        if len(entry.keys) != len(entry.values) or len(entry.write_ids) != len(entry.results):
            raise InvalidRequestError(f"shard {self._path}: entry {entry.seq} has ragged columns")
        if b"" in entry.write_ids:
            raise InvalidRequestError(f"shard {self._path}: entry {entry.seq} has an empty write id")
        self._check_keys(entry.keys)
        with self._write_txn() as txn:
            checksum, records = write_effects(
                txn.cursor(db=self._records_db), entry.keys, entry.values,
                state.checksum, state.records)
            self._record_writes(txn, entry.seq, entry.write_ids, entry.results)
            self._keep_entry(txn, entry)
            new_state = ShardState(entry.seq, max(entry.epoch, state.epoch), checksum, records, entry.epoch)
            self._write_meta(txn, new_state)
        self._state = new_state
        self._entries_applied += 1
        return new_state

    def recent_entries(self) -> list[tuple[int, bytes]]:
        """The stored entries that end at this replica's seq without a gap, oldest first:
        (seq, encoded Entry); none when the newest stored one is not the replica's last."""
        with self._env.begin(buffers=False) as txn:   # seq read in the same snapshot as the entries
            return entry_log.recent(txn, self._entries_db, int.from_bytes(txn.get(b"seq", b"", self._meta_db), "big"))

    def _keep_entry(self, txn: lmdb.Transaction[bytes], entry: Entry) -> None:
        if self._entries_retain:
            entry_log.keep(txn, self._entries_db, self._meta_db, entry, self._entries_retain,
                           self._entries_retain_bytes)

    def _write_meta_only(self) -> None:
        with self._write_txn() as txn:
            self._write_meta(txn, self._state)

    @_one_writer
    def set_epoch(self, epoch: int) -> None:
        """Persist a higher adopted epoch; a lower or equal one is ignored."""
        state = self._state
        if epoch <= state.epoch:
            return
        new_state = dataclasses.replace(state, epoch=epoch)
        with self._write_txn() as txn:
            self._write_meta(txn, new_state)
        self._state = new_state

    # ---- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _write_txn(self) -> Iterator[lmdb.Transaction[bytes]]:
        """One write txn, committed on exit; LMDB full/disk errors -> StorageFullError."""
        try:
            with self._env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError as exc:
            self._storage_full_errors += 1
            raise StorageFullError(self._full_message("LMDB map full")) from exc
        except lmdb.TxnFullError as exc:
            raise TooLargeError(f"shard {self._path}: write group too large for one txn") from exc
        except lmdb.Error as exc:
            code = getattr(exc, "code", 0)
            if code not in _DISK_ERRNOS:
                raise
            self._storage_full_errors += 1
            if code == errno.EIO:
                raise StorageFullError(f"shard {self._path}: disk failing ({exc}); the write was not applied") from exc
            raise StorageFullError(f"shard {self._path}: the disk is full ({exc}; {free_space_text(self._path)}): "
                                   "the write was not applied; free space there and retry") from exc

    def _pages_used(self, txn: lmdb.Transaction[bytes]) -> int:
        """Pages the trees hold as of this txn (its own changes included)."""
        used = _FIXED_PAGES
        for db in (self._records_db, self._meta_db, self._idem_db, self._idem_log_db):
            stat = txn.stat(db)
            used += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return used

    def _check_headroom(self, txn: lmdb.Transaction[bytes], pages_before: int) -> None:
        """Refuse a put group that grows the trees into the reserve kept for deletes."""
        pages = self._pages_used(txn)
        if pages <= pages_before or pages <= self._pages_max:
            return
        self._storage_full_errors += 1
        raise StorageFullError(self._full_message(
            f"{pages * self._page_bytes} bytes in use, {self._pages_max * self._page_bytes} allowed for puts"))

    def _full_message(self, what: str) -> str:
        return (f"shard {self._path} is full ({what}; map_size_bytes={self._map_size_bytes}): "
                "the write was not applied; deletes still work. Raise map_size_bytes "
                f"(SHOAL_MAP_SIZE_BYTES, now {self._map_size_bytes}) and restart the node, or delete records")

    def _load_state(self, txn: lmdb.Transaction[bytes]) -> ShardState:
        stored_format = txn.get(b"format", db=self._meta_db)
        if stored_format is None:
            state = ShardState(0, 0, 0, 0)
            txn.put(b"format", _u64(STORE_FORMAT_VERSION), db=self._meta_db)
            self._write_meta(txn, state)
            return state
        if int.from_bytes(stored_format, "big") != STORE_FORMAT_VERSION:
            raise NodeError(f"shard {self._path}: unsupported store format {stored_format!r}")
        fields = [txn.get(name, db=self._meta_db) for name in _META_KEYS]
        if None in fields:
            raise NodeError(f"shard {self._path}: meta rows missing: {fields!r}")
        seq, epoch, checksum, records = (int.from_bytes(field or b"", "big") for field in fields)
        entry_epoch = txn.get(b"entry_epoch", db=self._meta_db)   # absent in stores from before it: unknown
        return ShardState(seq, epoch, checksum, records,
                          ENTRY_EPOCH_UNKNOWN if entry_epoch is None else int.from_bytes(entry_epoch, "big"))

    def _load_incarnation(self, txn: lmdb.Transaction[bytes]) -> str:
        """The environment's incarnation; made (random) in the transaction that creates the store.

        Stores from before incarnations existed get one on first open: from then on it is
        this replica's identity.
        """
        stored = txn.get(b"incarnation", db=self._meta_db)
        if stored is None:
            stored = os.urandom(16).hex().encode("ascii")
            txn.put(b"incarnation", stored, db=self._meta_db)
        return bytes(stored).decode("ascii")

    def _write_meta(self, txn: lmdb.Transaction[bytes], state: ShardState) -> None:
        put, meta = txn.put, self._meta_db
        put(b"seq", _u64(state.seq), db=meta)
        put(b"epoch", _u64(state.epoch), db=meta)
        put(b"checksum", _u64(state.checksum), db=meta)
        put(b"records", _u64(state.records), db=meta)
        put(b"entry_epoch", _u64(state.entry_epoch), db=meta)

    def _record_writes(self, txn: lmdb.Transaction[bytes], seq: int, write_ids: list[bytes],
                       results: list[bytes]) -> None:
        """Store idempotency rows, then trim the oldest beyond the retention bound."""
        if not write_ids:
            return
        seq_bytes = _u64(seq)
        idem_put = txn.cursor(db=self._idem_db).put
        log_put = txn.cursor(db=self._idem_log_db).put
        for write_id, result in zip(write_ids, results):
            idem_put(write_id, seq_bytes + result)
            log_put(seq_bytes + write_id, b"")
        excess = txn.stat(self._idem_db)["entries"] - self._idempotency_retain
        if excess > 0:
            # Bounded work per txn: at most 2x the rows added, so a lowered bound
            # converges over later writes instead of stalling one of them.
            _trim_writes(txn, self._idem_db, self._idem_log_db,
                                 min(excess, 2 * len(write_ids)))

    def _check_key(self, key: bytes) -> None:
        if not key or len(key) > self._max_key_bytes:
            raise InvalidRequestError(
                f"key length must be 1..{self._max_key_bytes} bytes, got {len(key)}")

    def _check_keys(self, keys: Sequence[bytes]) -> None:
        if keys and (min(map(len, keys)) == 0 or max(map(len, keys)) > self._max_key_bytes):
            raise InvalidRequestError(f"key length must be 1..{self._max_key_bytes} bytes")

    def _check_ops(self, ops: Sequence[Op]) -> None:
        """Reject bad keys and malformed ops before the write txn begins."""
        for op in ops:
            if type(op) is PutBatch:
                if len(op.keys) != len(op.values):
                    raise InvalidRequestError(
                        f"batch has {len(op.keys)} keys but {len(op.values)} values")
                self._check_keys(op.keys)
            elif isinstance(op, (Put, Delete, CompareAndSet)):
                self._check_key(op.key)
            else:
                raise InvalidRequestError(f"unknown write op {type(op).__name__}")


def _trim_writes(txn: lmdb.Transaction[bytes], idem_db: lmdb._Database, log_db: lmdb._Database,
                 budget: int) -> None:
    """Drop up to `budget` oldest idempotency rows (idem_log order = seq order)."""
    cursor = txn.cursor(db=log_db)
    while budget > 0 and cursor.first():
        log_key = cursor.key()
        seq_bytes, write_id = log_key[:8], log_key[8:]
        stored = txn.get(write_id, None, idem_db)
        # A write_id recorded again later owns a newer log row; keep its idem row.
        if stored is not None and stored[:8] == seq_bytes:
            txn.delete(write_id, db=idem_db)
        cursor.delete()
        budget -= 1


def _scan_bounds(start: bytes, end: bytes, prefix: bytes) -> tuple[bytes | None, bytes | None]:
    """(first key to seek, exclusive stop or None); first is None for an empty range."""
    position = max(start, prefix)
    stop: bytes | None = end or None
    if prefix:
        stripped = prefix.rstrip(b"\xff")
        if stripped:  # the smallest key above every key with this prefix
            successor = stripped[:-1] + bytes([stripped[-1] + 1])
            stop = successor if stop is None else min(stop, successor)
    if stop is not None and position >= stop:
        return None, stop
    return position, stop


def file_limit_message(what: str) -> str:
    """`what`, why (the open-files limit) and what to do; for EMFILE/ENFILE while opening shards."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (f"{what}: too many open files (RLIMIT_NOFILE soft limit {soft}; each open shard needs "
            f"{FDS_PER_SHARD} file descriptors): raise the limit (ulimit -n, or LimitNOFILE= under systemd) "
            "and restart the node, or drop datasets")


def open_replica_store(path: pathlib.Path, config: NodeConfig) -> ShardStore:
    """A shard replica's store as a node opens it, with the node's bounds."""
    return ShardStore(path, map_size_bytes=config.map_size_bytes, sync=config.lmdb_sync,
                      idempotency_retain=config.idempotency_retain_writes, max_readers=config.lmdb_max_readers,
                      entries_retain=config.entry_log_entries_max, entries_retain_bytes=config.entry_log_bytes_max)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")
