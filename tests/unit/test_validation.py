"""Request validation of the node: the fast whole-batch path agrees with the per-record checks."""
from __future__ import annotations

import pathlib

import msgpack
import pytest

from shoal.client.wire.routing import shard_for_key
from shoal.node.config import NodeConfig
from shoal.node.errors import InvalidRequestError, TooLargeError, WrongShardError
from shoal.node.validation import check_batch

CONFIG = NodeConfig(node_id="n1", data_dir=pathlib.Path("/nonexistent"), value_bytes_max=1000)


def _batch(count: int, shard: int = 0, shards: int = 1) -> tuple[list[bytes], list[bytes]]:
    keys = [k for k in (f"k{i}".encode() for i in range(count * shards * 4)) if shard_for_key(k, shards) == shard]
    keys = keys[:count]
    return keys, [msgpack.packb({"i": i}) for i in range(len(keys))]


def test_check_batch_accepts_a_valid_batch_and_returns_its_size() -> None:
    """A well-formed batch passes and its size is the sum of key and value bytes."""
    keys, values = _batch(100, shard=1, shards=3)
    assert check_batch(CONFIG, "ds", keys, values, 3, 1) == sum(map(len, keys)) + sum(map(len, values))


@pytest.mark.parametrize("corrupt, error, message", [
    (lambda k, v: v.__setitem__(5, b"\xc1"), InvalidRequestError, "k"),           # never-used msgpack byte
    (lambda k, v: v.__setitem__(5, v[5] + v[6]), InvalidRequestError, "msgpack"),  # two objects in one value
    (lambda k, v: v.__setitem__(5, v[5][:-1]), InvalidRequestError, "msgpack"),    # truncated value
    (lambda k, v: v.__setitem__(5, b""), InvalidRequestError, "msgpack"),          # empty value
    (lambda k, v: v.__setitem__(5, msgpack.packb("x" * 2000)), TooLargeError, "limit"),
    (lambda k, v: k.__setitem__(5, b""), InvalidRequestError, "empty key"),
    (lambda k, v: k.__setitem__(5, b"x" * 600), TooLargeError, "limit"),
    (lambda k, v: k.append(b"extra"), InvalidRequestError, "keys and"),
])
def test_check_batch_rejects_each_bad_record(corrupt, error, message) -> None:  # type: ignore[no-untyped-def]
    """Every kind of bad record is caught and the error names the problem."""
    keys, values = _batch(20)
    corrupt(keys, values)
    with pytest.raises(error, match=message):
        check_batch(CONFIG, "ds", keys, values, 1, 0)


def test_check_batch_rejects_a_key_of_another_shard() -> None:
    """A key that hashes elsewhere is WRONG_SHARD, naming the right shard."""
    keys, values = _batch(10, shard=0, shards=2)
    other = next(k for k in (f"o{i}".encode() for i in range(100)) if shard_for_key(k, 2) == 1)
    keys[3] = other
    with pytest.raises(WrongShardError, match="belongs to shard 1"):
        check_batch(CONFIG, "ds", keys, values, 2, 0)
