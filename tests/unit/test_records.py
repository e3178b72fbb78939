"""Record encoding and ingest batching (client/_codec.py, client/_batcher.py): pure functions, no network.

Method: direct calls, plus a hypothesis property for the batch bounds: whatever the
record sizes, every batch respects batch_records and batch_bytes (a lone oversized
record excepted), and every record lands exactly once, in its shard, in input order.
"""
from __future__ import annotations

import pickle

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from shoal.client import ABSENT, InvalidArgumentError, TooLargeError
from shoal.client._batcher import RECORD_OVERHEAD_BYTES, RecordBatch, ShardBatcher
from shoal.client._codec import KEY_BYTES_MAX, ValueEncoder, decode_key, decode_value, encode_key
from shoal.client.wire.routing import shard_for_key


def test_encode_key_accepts_str_and_bytes() -> None:
    """str keys travel as UTF-8, bytes as they are."""
    assert encode_key("ds", "ключ") == "ключ".encode()
    assert encode_key("ds", b"\x00\xff") == b"\x00\xff"


@pytest.mark.parametrize(("key", "error", "text"), [
    ("", InvalidArgumentError, "empty"),
    (b"", InvalidArgumentError, "empty"),
    (17, InvalidArgumentError, r"not int \(17\)"),
    (None, InvalidArgumentError, "not NoneType"),
    ("\ud800", InvalidArgumentError, "UTF-8"),
    ("k" * (KEY_BYTES_MAX + 1), TooLargeError, "512 bytes"),
])
def test_encode_key_rejects_bad_keys(key: object, error: type[Exception], text: str) -> None:
    """Bad keys raise InvalidArgumentError (TooLargeError past 511 bytes) naming the dataset."""
    with pytest.raises(error, match=text) as info:
        encode_key("events", key)
    assert type(info.value) is error and info.value.dataset == "events"   # type: ignore[attr-defined]


def test_value_encoder_round_trips_documents() -> None:
    """msgpack keeps str and bytes apart; tuples come back as lists; int map keys survive."""
    encoder = ValueEncoder()
    value = {"s": "text", "b": b"\x00raw", "n": [1, -2, 3.5, None, True], "t": (1, 2), "m": {1: "one"}}
    assert decode_value(encoder.encode("ds", "k", value)) == {**value, "t": [1, 2]}


@pytest.mark.parametrize("value", [object(), 2**64, {1, 2}, "\udcff", complex(1, 2)])
def test_value_encoder_rejects_unencodable_values_naming_the_key(value: object) -> None:
    """TypeError/OverflowError/ValueError from msgpack become InvalidArgumentError with dataset and key."""
    encoder = ValueEncoder()
    with pytest.raises(InvalidArgumentError, match="cannot be encoded") as info:
        encoder.encode("events", "k7", value)
    assert (info.value.dataset, info.value.key) == ("events", "k7")
    assert "key='k7'" in str(info.value)
    assert decode_value(encoder.encode("events", "k8", [1])) == [1]   # the packer is clean after an error


def test_value_encoder_rejects_self_referencing_values() -> None:
    """A cyclic value hits msgpack's nesting limit: a clear error, not a crash."""
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(InvalidArgumentError, match="cannot be encoded"):
        ValueEncoder().encode("ds", "loop", cyclic)


def test_decode_key_returns_str_only_for_valid_utf8() -> None:
    """Keys come back as str when they are valid UTF-8, else as bytes."""
    assert decode_key(b"plain") == "plain"
    assert decode_key(b"\xff\xfe") == b"\xff\xfe"


def test_absent_is_a_singleton_that_survives_pickle() -> None:
    """ABSENT compares by identity, so it must stay one object, also across pickle."""
    assert repr(ABSENT) == "ABSENT"
    assert type(ABSENT)() is ABSENT
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT


def test_shard_batcher_seals_at_the_record_limit() -> None:
    """With one shard, every batch_records-th record seals a batch; flush returns the rest."""
    batcher = ShardBatcher(1, batch_records=3, batch_bytes=1 << 20)
    sealed = [batcher.add(f"k{i}".encode(), b"v") for i in range(7)]
    full = [batch for batch in sealed if batch is not None]
    assert [len(batch) for batch in full] == [3, 3]
    rest = list(batcher.flush())
    assert [batch.keys for batch in rest] == [[b"k6"]] and list(batcher.flush()) == []


def test_shard_batcher_seals_before_the_byte_limit() -> None:
    """A record that would push a batch past batch_bytes seals the batch first."""
    record_bytes = 2 + 40 + RECORD_OVERHEAD_BYTES
    batcher = ShardBatcher(1, batch_records=1000, batch_bytes=2 * record_bytes + 10)
    outputs = [batcher.add(f"k{i}".encode(), b"x" * 40) for i in range(5)]
    full = [batch for batch in outputs if batch is not None]
    assert [len(batch) for batch in full] == [2, 2]
    assert all(batch.size_bytes <= 2 * record_bytes + 10 for batch in full)


def test_shard_batcher_sends_an_oversized_record_alone() -> None:
    """A record larger than batch_bytes travels in a batch of its own."""
    batcher = ShardBatcher(1, batch_records=1000, batch_bytes=100)
    assert batcher.add(b"small", b"s") is None
    first = batcher.add(b"big", b"x" * 500)
    assert first is not None and first.keys == [b"small"]
    second = batcher.add(b"next", b"n")
    assert second is not None and second.keys == [b"big"]
    assert [batch.keys for batch in batcher.flush()] == [[b"next"]]


def test_shard_batcher_rejects_bad_limits() -> None:
    """batch_records below 1 or batch_bytes outside 1..16 MiB minus headroom are errors."""
    for records, size in ((0, 100), (10, 0), (10, 64 << 20)):
        with pytest.raises(InvalidArgumentError):
            ShardBatcher(4, batch_records=records, batch_bytes=size)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=300), max_size=200),
       shards=st.integers(min_value=1, max_value=5), batch_records=st.integers(min_value=1, max_value=20),
       batch_bytes=st.integers(min_value=1, max_value=600))
def test_shard_batcher_bounds_hold_for_any_input(sizes: list[int], shards: int, batch_records: int,
                                                 batch_bytes: int) -> None:
    """Every batch within both limits (or one oversized record); every record once, in order, in its shard."""
    batcher = ShardBatcher(shards, batch_records=batch_records, batch_bytes=batch_bytes)
    records = [(f"key{i}".encode(), b"v" * size) for i, size in enumerate(sizes)]
    batches: list[RecordBatch] = []
    for key, value in records:
        sealed = batcher.add(key, value)
        if sealed is not None:
            batches.append(sealed)
    batches += batcher.flush()
    for batch in batches:
        assert 1 <= len(batch) <= batch_records
        assert batch.size_bytes <= batch_bytes or len(batch) == 1
        assert batch.size_bytes == sum(len(k) + len(v) + RECORD_OVERHEAD_BYTES
                                       for k, v in zip(batch.keys, batch.values))
        assert all(shard_for_key(key, shards) == batch.shard for key in batch.keys)
    for shard in range(shards):
        expected = [key for key, _ in records if shard_for_key(key, shards) == shard]
        got = [key for batch in batches if batch.shard == shard for key in batch.keys]
        assert got == expected


def test_fill_matches_add_record_for_record() -> None:
    """The ingest hot loop builds exactly the batches that add() builds, mixed keys and values included."""
    records = [(f"k{i}", {"i": i}) if i % 3 else (f"k{i}".encode(), [i, "x" * (i % 50)]) for i in range(5000)]
    slow, fast = (ShardBatcher(5, batch_records=97, batch_bytes=4096) for _ in range(2))
    encoder = ValueEncoder()
    expected = [b for key, value in records
                if (b := slow.add(encode_key("ds", key), encoder.encode("ds", key, value))) is not None]
    expected += list(slow.flush())
    got = list(fast.fill("ds", records, encoder)) + list(fast.flush())
    assert [(b.shard, b.keys, b.values) for b in got] == [(b.shard, b.keys, b.values) for b in expected]


@pytest.mark.parametrize("bad, error, match", [
    (("k", object()), InvalidArgumentError, "encoded"),
    ((b"", 1), InvalidArgumentError, "empty"),
    (("k" * 600, 1), TooLargeError, "key"),
    ((7, 1), InvalidArgumentError, "str or bytes"),
    ("just-a-string", InvalidArgumentError, "pairs"),
])
def test_fill_names_the_bad_record(bad, error, match) -> None:  # type: ignore[no-untyped-def]
    """A bad record in the hot loop raises the same precise error as the slow path."""
    batcher = ShardBatcher(3, batch_records=10, batch_bytes=1 << 20)
    with pytest.raises(error, match=match):
        list(batcher.fill("ds", [("ok", 1), bad], ValueEncoder()))
