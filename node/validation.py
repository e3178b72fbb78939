"""Checks on client requests, done before anything is queued or written. Pure."""
from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from shoal.client.wire.routing import shard_for_key
from shoal.node.errors import (
    InvalidRequestError, NotPrimaryError, StaleEpochError, TooLargeError, UnknownDatasetError, WrongShardError,
)

from shoal.node.metadata.view import created_at_version

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import DatasetView, MetadataView, NodeView, ShardView


def dataset_of(view: MetadataView, name: str) -> DatasetView:
    dataset = view.dataset(name)
    if dataset is None:
        raise UnknownDatasetError(f"unknown dataset {name!r}")
    return dataset


def node_of(view: MetadataView, node_id: str) -> NodeView:
    node = view.node(node_id)
    if node is None:
        raise InvalidRequestError(f"unknown node {node_id[:80]!r} (nodes: {', '.join(view.nodes) or 'none'})")
    return node


def check_raft_address(address: str) -> None:
    """HOST:PORT with a port in 1..65535, or InvalidRequestError naming the value."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535 or len(address) > 300:
        raise InvalidRequestError(f"raft address: expected HOST:PORT, got {address[:80]!r}")


def shard_of(view: MetadataView, name: str, index: int, epoch: int, dataset_id: str = "") -> ShardView:
    """The shard, after checking the caller's dataset id (when given) and epoch against ours."""
    if view.dataset(name) is None and epoch > 0:
        # The caller saw the dataset in a shard map (epochs start at 1): our copy of the
        # metadata is behind (a data-only node between heartbeats), not the caller wrong.
        raise NotPrimaryError(f"shard {name}/{index}: this node has not seen dataset {name!r} yet "
                              f"(metadata version {view.version})")
    dataset = dataset_of(view, name)
    if dataset_id and dataset_id != dataset.id:
        older = (created_at_version(dataset_id) or 0) < (created_at_version(dataset.id) or 0)
        if older:   # the caller's map names a dropped incarnation of this name
            raise StaleEpochError(f"dataset {name!r} was re-created: the caller's map names {dataset_id}, "
                                  f"it is {dataset.id} now")
        raise NotPrimaryError(f"dataset {name!r}: this node has not seen {dataset_id} yet (it has {dataset.id})")
    shard = dataset.shard(index)
    if shard is None:
        raise InvalidRequestError(f"dataset {name!r} has {dataset.shards} shards, no shard {index}")
    if epoch < shard.epoch:
        raise StaleEpochError(f"shard {name}/{index}: request for epoch {epoch}, current epoch is {shard.epoch}")
    if epoch > shard.epoch:
        raise NotPrimaryError(f"shard {name}/{index}: this node has not seen epoch {epoch} yet")
    return shard


def check_key(config: NodeConfig, dataset: str, key: bytes, shards: int, index: int) -> None:
    if not key:
        raise InvalidRequestError(f"dataset {dataset!r}: empty key")
    if len(key) > config.key_bytes_max:
        raise TooLargeError(f"dataset {dataset!r}: key {key[:40]!r}... is {len(key)} bytes, "
                            f"limit {config.key_bytes_max}")
    if shard_for_key(key, shards) != index:
        raise WrongShardError(f"dataset {dataset!r}: key {key[:60]!r} belongs to shard "
                              f"{shard_for_key(key, shards)}, not {index}")


def check_value(config: NodeConfig, dataset: str, key: bytes, value: bytes) -> None:
    if len(value) > config.value_bytes_max:
        raise TooLargeError(f"dataset {dataset!r}: value of key {key[:60]!r} is {len(value)} bytes, "
                            f"limit {config.value_bytes_max}")
    try:
        msgpack.unpackb(value, raw=False, strict_map_key=False)
    except Exception as exc:   # msgpack raises several unrelated types for bad input
        raise InvalidRequestError(f"dataset {dataset!r}: value of key {key[:60]!r} is not valid msgpack "
                                  f"({type(exc).__name__})") from None


def check_batch(config: NodeConfig, dataset: str, keys: list[bytes], values: list[bytes],
                shards: int, index: int) -> int:
    """Validate a PutBatch; return its size in bytes.

    The hot path of ingest: whole-batch checks (map, one Unpacker over all values) so
    that a 1,000-record batch costs well under a microsecond per record. On any
    failure, the per-record checks run to name the offending key.
    """
    if len(keys) != len(values):
        raise InvalidRequestError(f"dataset {dataset!r}: batch has {len(keys)} keys and {len(values)} values")
    if len(keys) > config.batch_records_max:
        raise TooLargeError(f"dataset {dataset!r}: batch of {len(keys)} records, limit {config.batch_records_max}")
    if not keys:
        return 0
    key_lengths = list(map(len, keys))
    value_lengths = list(map(len, values))
    fine = (min(key_lengths) > 0 and max(key_lengths) <= config.key_bytes_max
            and max(value_lengths) <= config.value_bytes_max
            and all(shard_for_key(k, shards) == index for k in keys) and _all_msgpack(values, value_lengths))
    if not fine:
        for key, value in zip(keys, values):
            check_key(config, dataset, key, shards, index)
            check_value(config, dataset, key, value)
    return sum(key_lengths) + sum(value_lengths)


def _all_msgpack(values: list[bytes], lengths: list[int]) -> bool:
    """True when every value is exactly one msgpack object."""
    data = b"".join(values)
    unpacker = msgpack.Unpacker(max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    skip, tell = unpacker.skip, unpacker.tell
    offset = 0
    try:
        for length in lengths:
            offset += length
            skip()
            if tell() != offset:
                return False
    except Exception:   # OutOfData, ExtraData, FormatError...: not valid msgpack
        return False
    return True
