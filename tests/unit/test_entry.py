"""Unit tests for node/storage/entry.py: the replication entry wire format and the ops."""
from __future__ import annotations

import dataclasses

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import given, settings

from shoal.node.storage.entry import (
    ENTRY_FORMAT_VERSION, Delete, Entry, Put, PutBatch, write_id_of,
)

_WRITE_ID = b"c" * 16 + (7).to_bytes(8, "big")


def _sample_entry() -> Entry:
    return Entry(
        seq=42, epoch=3,
        keys=[b"a", b"b", b"a"], values=[b"\x01", None, b"\x02"],
        write_ids=[_WRITE_ID], results=[msgpack.packb([True, True, b"\x01"])],
    )


def test_entry_encode_decode_round_trip() -> None:
    """An entry with puts, a delete (None) and an idempotency row decodes to itself."""
    entry = _sample_entry()
    assert Entry.decode(entry.encode()) == entry


def test_entry_encode_is_one_versioned_msgpack_array() -> None:
    """The payload is a single msgpack array whose first field is the format version 1."""
    fields = msgpack.unpackb(_sample_entry().encode())
    assert fields[0] == ENTRY_FORMAT_VERSION == 1
    assert fields[1:3] == [42, 3]


def test_entry_decode_empty_entry() -> None:
    """An entry with no effects and no idempotency rows (a pure replay group) is valid."""
    entry = Entry(seq=1, epoch=0, keys=[], values=[], write_ids=[], results=[])
    assert Entry.decode(entry.encode()) == entry


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",                                            # reserved msgpack byte
    b"\x93\x01\x02",                                    # truncated array
    b"garbage that is not msgpack at all \x00\xff",
    msgpack.packb({"seq": 1}),                          # a map, not an array
    msgpack.packb([1, 1, 0, [], [], []]),               # 6 fields
    msgpack.packb([2, 1, 0, [], [], [], []]),           # wrong version
    msgpack.packb([True, 1, 0, [], [], [], []]),        # version as bool
    msgpack.packb([1, 0, 0, [], [], [], []]),           # seq 0
    msgpack.packb([1, -1, 0, [], [], [], []]),          # negative seq
    msgpack.packb([1, 1, -1, [], [], [], []]),          # negative epoch
    msgpack.packb([1, 1, 0, b"k", [], [], []]),         # keys not an array
    msgpack.packb([1, 1, 0, ["k"], [b"v"], [], []]),    # str key
    msgpack.packb([1, 1, 0, [b"k"], [5], [], []]),      # int value
    msgpack.packb([1, 1, 0, [b"k"], [], [], []]),       # ragged keys/values
    msgpack.packb([1, 1, 0, [], [], [b"w"], []]),       # ragged write_ids/results
    msgpack.packb([1, 1, 0, [], [], [b"w"], [None]]),   # result not bytes
    msgpack.packb([1, 1, 0, [], [], [], []]) + b"\x00",  # trailing data
])
def test_entry_decode_garbage_raises_value_error(payload: bytes) -> None:
    """Every malformed payload raises ValueError (never another type, never an Entry)."""
    with pytest.raises(ValueError):
        Entry.decode(payload)


@settings(max_examples=200, derandomize=True, database=None)
@given(st.binary(max_size=64))
def test_entry_decode_random_bytes_raises_value_error_or_decodes(payload: bytes) -> None:
    """Arbitrary bytes either decode to a well-typed Entry or raise ValueError."""
    try:
        entry = Entry.decode(payload)
    except ValueError:
        return
    assert Entry.decode(entry.encode()) == entry


@settings(max_examples=100, derandomize=True, database=None)
@given(
    st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1),
    st.lists(st.tuples(st.binary(min_size=1, max_size=32),
                       st.none() | st.binary(max_size=64)), max_size=20),
    st.lists(st.tuples(st.binary(min_size=24, max_size=24), st.binary(max_size=16)),
             max_size=5),
)
def test_entry_round_trip_property(seq: int, epoch: int, effects: list[tuple[bytes, bytes | None]],
                                   rows: list[tuple[bytes, bytes]]) -> None:
    """Any well-formed entry survives encode/decode unchanged."""
    entry = Entry(seq, epoch, [k for k, _ in effects], [v for _, v in effects],
                  [w for w, _ in rows], [r for _, r in rows])
    assert Entry.decode(entry.encode()) == entry


def test_ops_frozen_and_write_id_layout() -> None:
    """Ops are immutable; a write id is the 16-byte client id plus the big-endian request seq."""
    op = Put(b"k", b"v", write_id_of(b"c" * 16, 7))
    assert op.write_id == _WRITE_ID
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.key = b"other"  # type: ignore[misc]
    assert write_id_of(b"", 7) == b""
    assert Delete(b"k").write_id == b""
    assert PutBatch([b"a"], [b"1"]).write_id == b""
