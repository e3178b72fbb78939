"""Key -> shard hashing: pure, no I/O.

Client and node both import `shard_for_key`, so they always agree on where a key lives.
"""
from __future__ import annotations

import xxhash


def encode_key(key: str | bytes) -> bytes:
    """Keys travel and are stored as bytes; str keys are UTF-8."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


def shard_for_key(key: bytes, shard_count: int) -> int:
    """Stable across processes and versions (xxh64, not Python's salted hash)."""
    assert shard_count > 0
    return xxhash.xxh64_intdigest(key) % shard_count
