"""Write operations and the replication log entry of a shard.

An *op* is what a client asked for (`Put`, `Delete`, `CompareAndSet`, `PutBatch`).
An `Entry` is what the primary *decided*: the effects of a group of ops on the
records (key -> new value, or None for a delete) plus the idempotency rows
(write_id -> msgpack result). Backups replay entries without any logic, so a CAS
decided on the primary cannot come out differently on a backup.

Why columnar lists instead of one object per record: a 1,000-record batch must
encode and decode in one msgpack C call; per-record Python objects would cost more
than the LMDB writes themselves. Validation of a decoded entry uses `map(type, ...)`
so that it also stays in C.

Wire format (`ReplicateRequest.payload`): msgpack array
`[1, seq, epoch, keys, values, write_ids, results]`; 1 is the format version.
A write_id is client_id (16 bytes) + request_seq (8 bytes big-endian), or b"" when
the op carries none (then nothing is recorded for it, and an entry holds none).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
import msgpack

logger = logging.getLogger(__name__)

ENTRY_FORMAT_VERSION = 1
WRITE_ID_BYTES = 24     # client_id (16) + request_seq (8, big-endian)
_ENTRY_FIELDS = 7
_BYTES_TYPES: frozenset[type] = frozenset({bytes})
_VALUE_TYPES: frozenset[type] = frozenset({bytes, type(None)})


def write_id_of(client_id: bytes, request_seq: int) -> bytes:
    """The idempotency key of one client request (b"" when the client sent none)."""
    if not client_id:
        return b""
    assert len(client_id) == 16, f"client_id must be 16 bytes, got {len(client_id)}"
    return client_id + request_seq.to_bytes(8, "big")


@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    """Write `value` (msgpack) under `key`. Result: None."""

    key: bytes
    value: bytes
    write_id: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    """Remove `key`. Result: whether it existed (bool)."""

    key: bytes
    write_id: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class CompareAndSet:
    """Swap `key` if its current value equals `expected` (compared as decoded msgpack).

    `expect_absent`: the key must be missing instead (and `expected` is ignored).
    On a match, write `value`, or delete the key when `delete` is true.
    Result: `(swapped, current_found, current)`, where `current` is the value the
    key held before this op (None when it was missing), as stored.
    `open_current(key, stored)`: what the comparison sees of the stored value (an encrypted
    dataset opens it: node/encryption.py); None compares the stored bytes' document as is.
    """

    key: bytes
    expect_absent: bool
    expected: bytes
    delete: bool
    value: bytes
    write_id: bytes = b""
    open_current: Callable[[bytes, bytes], bytes] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PutBatch:
    """Write `values[i]` under `keys[i]`, in order. Result: the count written (int)."""

    keys: Sequence[bytes]
    values: Sequence[bytes]
    write_id: bytes = b""


Op = Put | Delete | CompareAndSet | PutBatch


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """The decided effects of one group of ops, applied atomically as sequence `seq`.

    `values[i]` is the new value of `keys[i]`, or None for a delete; effects apply in
    list order (a key may appear twice). `results[i]` is the msgpack result recorded
    for `write_ids[i]`.
    """

    seq: int
    epoch: int
    keys: list[bytes]
    values: list[bytes | None]
    write_ids: list[bytes]
    results: list[bytes]
    # The wire form once made or received: a group is encoded once, though both its store
    # (storage/entry_log.py) and its replication send it. Not part of the value.
    encoded: bytes | None = dataclasses.field(default=None, compare=False, repr=False)

    def encode(self) -> bytes:
        """The wire form: one msgpack array, format version first."""
        if self.encoded is None:
            payload = msgpack.packb(
                [ENTRY_FORMAT_VERSION, self.seq, self.epoch, self.keys, self.values,
                 self.write_ids, self.results],
                use_bin_type=True,
            )
            object.__setattr__(self, "encoded", payload)   # a cache of a frozen value, not a change of it
        assert self.encoded is not None
        return self.encoded

    @classmethod
    def decode(cls, payload: bytes) -> Entry:
        """Parse `payload`; raise ValueError for anything but a well-formed v1 entry."""
        try:
            fields = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise ValueError(f"entry is not valid msgpack: {exc}") from exc
        if type(fields) is not list or len(fields) != _ENTRY_FIELDS:
            raise ValueError("entry must be a msgpack array of 7 fields")
        version, seq, epoch, keys, values, write_ids, results = fields
        if version != ENTRY_FORMAT_VERSION or type(version) is not int:
            raise ValueError(f"unsupported entry format version {version!r}")
        _check_counter("seq", seq, minimum=1)
        _check_counter("epoch", epoch, minimum=0)
        _check_column("keys", keys, _BYTES_TYPES)
        _check_column("values", values, _VALUE_TYPES)
        _check_column("write_ids", write_ids, _BYTES_TYPES)
        _check_column("results", results, _BYTES_TYPES)
        if len(keys) != len(values):
            raise ValueError(f"entry has {len(keys)} keys but {len(values)} values")
        if len(write_ids) != len(results):
            raise ValueError(f"entry has {len(write_ids)} write ids but {len(results)} results")
        if not {WRITE_ID_BYTES}.issuperset(map(len, write_ids)):   # else LMDB refuses the idempotency rows
            raise ValueError(f"entry write ids must be {WRITE_ID_BYTES} bytes each")
        return cls(seq, epoch, keys, values, write_ids, results, bytes(payload))


def _check_counter(name: str, value: object, *, minimum: int) -> None:
    if type(value) is not int or not minimum <= value < 2**64:
        raise ValueError(f"entry {name} must be an integer in [{minimum}, 2**64), got {value!r}")


def _check_column(name: str, column: object, allowed: frozenset[type]) -> None:
    if type(column) is not list:
        raise ValueError(f"entry {name} must be an array, got {type(column).__name__}")
    if not allowed.issuperset(map(type, column)):
        raise ValueError(f"entry {name} holds an element of a wrong type")
