"""Fuzz target 3 (issue 19.7): the replication entry, typed record values and copy chunks.

Feeds
- `Entry.decode` (a ReplicateRequest's payload) with arbitrary bytes, 7-field msgpack arrays
  of fuzzed field types and values (64-bit edges, empty and over-long keys and write ids,
  ragged columns) and well-formed entries, and applies each entry that decodes to a real
  LMDB backup store as its next entry;
- `Schema.from_json` + `RecordCodec.stored` / `document` (a typed dataset's Put and Get) with
  fuzzed schemas (short, long and junk forms) and values (documents with fields of every
  type, timestamps as strings and ints, arbitrary bytes);
- the learner's `check_piece` (a CopyShardChunk: one piece of a snapshot file) with pieces of
  junk, of a real snapshot, a damaged or cut one, at right and wrong offsets, of known or new
  snapshot ids (valid or not), with right or wrong digests and file lengths; each accepted
  piece goes to a real staging file, and a whole one is verified and prepared (opened by LMDB).
Asserts (fuzz_targets.check_entry / check_record / check_chunk): each decoder answers a value
or its callers' error (ValueError, SchemaError, InvalidRequestError, CopyFailed,
BadSnapshotError) and nothing
else; what decodes round-trips, and applying or installing it works or is refused with a
NodeError the server maps (never an LMDB or msgpack exception).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import strategies as st

from fuzz_targets import SCHEMA_JSON, ScratchStores, check_chunk, check_entry, check_record, valid_snapshot
from shoal.client.wire.pb import peer_pb2
from shoal.node.replication.copy_source import digest

_U64_EDGES = st.sampled_from([0, 1, 2, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1])
_COUNTERS = st.one_of(st.integers(0, 5), _U64_EDGES, st.integers(-2**63, -1))
_KEYS = st.one_of(st.binary(min_size=1, max_size=12), st.just(b""), st.binary(min_size=500, max_size=520))
_WRITE_IDS = st.one_of(st.binary(min_size=24, max_size=24), st.binary(max_size=30), st.binary(min_size=504,
                                                                                                max_size=600))
_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=4),
                 st.binary(max_size=4))


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, else `bad` (one_of weighs its flattened branches, not its arguments)."""
    return st.integers(0, 3).flatmap(lambda pick: good if pick else bad)


def _column(items: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(items, max_size=4), st.lists(items, max_size=4), st.lists(_ANY, max_size=2), _ANY)


_ENTRY_FIELDS = st.tuples(
    st.sampled_from([1, 1, 1, 0, 2, True, 1.0]), _COUNTERS, _COUNTERS, _column(_KEYS),
    _column(st.one_of(st.none(), st.binary(max_size=16), st.just(msgpack.packb({"a": 1})))),
    _column(_WRITE_IDS), _column(st.binary(max_size=8)))
_ENTRY_COLUMNS = st.tuples(   # columns of matching lengths, with fuzzed keys and write ids
    _mostly(st.just(1), st.sampled_from([0, 2, True, 1.0])), _mostly(st.integers(1, 5), _COUNTERS),
    _mostly(st.integers(0, 5), _COUNTERS),
    st.lists(st.tuples(_KEYS, st.none() | st.binary(max_size=8)), max_size=4),
    st.lists(st.tuples(_WRITE_IDS, st.binary(max_size=8)), max_size=3)).map(
    lambda c: msgpack.packb([c[0], c[1], c[2], [k for k, _ in c[3]], [v for _, v in c[3]], [w for w, _ in c[4]],
                             [r for _, r in c[4]]], use_bin_type=True))
ENTRY_PAYLOADS = _mostly(_ENTRY_COLUMNS, st.one_of(
    st.binary(max_size=128),
    _ENTRY_FIELDS.map(lambda fields: msgpack.packb(list(fields), use_bin_type=True)),
    _ENTRY_FIELDS.map(lambda fields: msgpack.packb(list(fields)[:6], use_bin_type=True))))

_TYPES = st.sampled_from(["int", "float", "str", "bool", "timestamp"])
_BAD_TYPES = st.sampled_from(["double", "", "?", "int??", "Int"])
_FIELD_NAMES = st.one_of(st.sampled_from(["i", "s", "t"]), st.text(min_size=1, max_size=5))
_SCHEMA_JSONS = _mostly(
    st.one_of(st.just(SCHEMA_JSON),
              st.dictionaries(_FIELD_NAMES, st.one_of(_TYPES, _TYPES.map("{}?".format)), min_size=1, max_size=4),
              st.fixed_dictionaries({"fields": st.lists(st.fixed_dictionaries(
                  {"name": _FIELD_NAMES, "type": _TYPES}, optional={"nullable": st.booleans()}), min_size=1,
                  max_size=3)})),
    st.one_of(st.dictionaries(st.one_of(_FIELD_NAMES, _ANY), st.one_of(_TYPES, _BAD_TYPES, _ANY), max_size=3),
              st.fixed_dictionaries({"fields": st.lists(st.fixed_dictionaries(
                  {"name": st.one_of(_FIELD_NAMES, _ANY), "type": st.one_of(_TYPES, _BAD_TYPES, _ANY)},
                  optional={"nullable": st.one_of(st.booleans(), _ANY), "extra": _ANY}), max_size=3)}),
              _ANY))
_TIMESTAMPS = st.one_of(st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01", "0001-01-01T00:00:00+14:00",
                                         "9999-12-31T23:59:59.999-12:00", "2024-13-01", "", "now"]),
                        st.integers(-2**63, 2**64 - 1), st.datetimes().map(lambda moment: moment.isoformat()),
                        st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()))
_SOMETIMES_WRONG = st.one_of(_ANY, _TIMESTAMPS, st.lists(_ANY, max_size=2))
_BY_FIELD = {"i": st.integers(-2**63, 2**64 - 1), "f": st.one_of(st.floats(), st.integers(-2**63, 2**64 - 1)),
             "s": st.text(max_size=8), "b": st.booleans(), "t": _TIMESTAMPS, "extra": _SOMETIMES_WRONG}
_DOCUMENTS = _mostly(   # mostly documents of SCHEMA_JSON's fields, each value mostly of its field's type
    st.fixed_dictionaries({"i": _mostly(_BY_FIELD["i"], _SOMETIMES_WRONG)},
                          optional={name: _mostly(values, st.one_of(st.none(), _SOMETIMES_WRONG))
                                    for name, values in _BY_FIELD.items() if name not in ("i", "extra")}),
    st.one_of(st.fixed_dictionaries({}, optional={name: _SOMETIMES_WRONG for name in _BY_FIELD}),
              st.dictionaries(st.one_of(st.text(max_size=3), st.integers(-9, 9)), _SOMETIMES_WRONG, max_size=3),
              _ANY))
RECORD_VALUES = st.one_of(_DOCUMENTS.map(lambda document: msgpack.packb(document, use_bin_type=True)),
                          st.binary(max_size=32))

def _snapshot_data() -> st.SearchStrategy[tuple[bytes, int]]:
    """(what a piece carries, the whole-file digest an honest sender names): junk; a whole real
    snapshot; one damaged on the way (a flipped byte, or cut short) under the real file's digest."""
    whole = st.just(b"").map(lambda _: valid_snapshot())
    return st.one_of(st.binary(max_size=64).map(lambda junk: (junk, digest(junk))),
                     whole.map(lambda data: (data, digest(data))),
                     st.tuples(whole, st.integers(0, 1 << 20)).map(lambda wi: (_flip(*wi), digest(wi[0]))),
                     st.tuples(whole, st.integers(1, 12288)).map(lambda wi: (wi[0][:wi[1]], digest(wi[0]))))


def _flip(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:]


CHUNKS = st.tuples(
    st.sampled_from(["", "00ab"]),                                           # the snapshot held
    st.sampled_from([0, 0, 1, 4096]),                                        # bytes held of it
    st.sampled_from(["00ab", "00ab", "beef", "", "xyz", "AB", "a" * 65]),    # the piece's snapshot id
    _snapshot_data(),
    st.sampled_from(["held", "held", "0", "1", "4096", "edge"]),             # the piece's offset
    st.sampled_from(["end", "end", "end", "more", "0", "huge"]),             # snapshot_bytes
    _U64_EDGES, st.sampled_from(["right", "right", "right", "wrong"]),       # seq, digest
    st.sampled_from(["right", "right", "wrong"]))                            # snapshot_digest


@pytest.fixture(scope="module")
def stores() -> Iterator[ScratchStores]:
    scratch = ScratchStores()
    yield scratch
    scratch.close()


def test_fuzz_entry_payload_decodes_or_raises_value_error(fuzz: Any, stores: ScratchStores) -> None:
    """Replication payloads: Entry.decode answers an entry or ValueError; a backup applies a decoded
    entry or refuses it with InvalidRequestError (Replicate's INVALID_ARGUMENT)."""
    fuzz("formats.entry", ENTRY_PAYLOADS, lambda payload: check_entry(payload, stores), ci_examples=60)


def test_fuzz_typed_record_values_store_or_raise_invalid_request(fuzz: Any) -> None:
    """A typed dataset's Put: any schema and value give a positional record or InvalidRequestError,
    and a stored record reads back as a document that stores the same."""
    fuzz("formats.record", st.tuples(_SCHEMA_JSONS, RECORD_VALUES), lambda example: check_record(*example),
         ci_examples=80)


def test_fuzz_copy_pieces_are_received_or_raise_copy_failed(fuzz: Any, stores: ScratchStores) -> None:
    """A learner's copy: any CopyShardChunk is received (and a whole snapshot prepared) or refused with
    CopyFailed / BadSnapshotError, never another error."""
    def check(example: tuple[str, int, str, tuple[bytes, int], str, str, int, str, str]) -> None:
        held_id, held_bytes, piece_id, (data, whole), offset_kind, size_kind, seq, digest_kind, file_digest_kind = \
            example
        held_bytes = held_bytes if held_id else 0
        offset = {"held": held_bytes if piece_id == held_id else 0, "0": 0, "1": 1, "4096": 4096,
                  "edge": 2**64 - 1}[offset_kind]
        end = offset + len(data)
        size = min(2**64 - 1, {"end": end, "more": end + 4096, "0": 0, "huge": 2**63}[size_kind])
        right = digest(data)
        message = peer_pb2.CopyShardChunk(
            snapshot_id=piece_id, offset=offset, data=data, snapshot_bytes=size, seq=seq,
            digest=right if digest_kind == "right" else right ^ 1,
            snapshot_digest=whole if file_digest_kind == "right" else whole ^ 1)
        check_chunk(message, held_id, held_bytes, stores)
    fuzz("formats.chunk", CHUNKS, check, ci_examples=60)
