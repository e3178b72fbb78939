"""RecordCodec: what a typed dataset stores, and what its readers get back.

A dataset created with a schema stores each value as a positional msgpack array in
field order (about 2x faster to decode than a map, notes/baselines.md row 27), checked
on the primary before it is written: a value that does not fit is one InvalidRequestError
naming the dataset, the key and the field, and nothing of its batch is written. Reads
(Get, Scan, CompareAndSet's current value) turn the array back into the document, so
clients see documents whatever the dataset; compute tasks read the arrays directly.
Backups apply what their primary wrote and never convert.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from shoal.node.compute.schema import RecordError, Schema
from shoal.node.errors import InvalidRequestError

_unpackb = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


class RecordCodec:
    # A compare-and-set compares stored forms as they are (an encrypted dataset's SealedCodec opens them first).
    open_current: Callable[[bytes, bytes], bytes] | None = None

    def __init__(self, dataset: str, schema: Schema) -> None:
        self.dataset = dataset
        self.schema = schema

    def stored(self, key: bytes, value: bytes) -> bytes:
        """The positional array to store for a client's document; InvalidRequestError if it does not fit."""
        try:
            document = _unpackb(value)
            stored: bytes = msgpack.packb(self.schema.encode(document), use_bin_type=True)
            return stored
        except (RecordError, ValueError, TypeError) as exc:
            name = key.decode("utf-8", "replace")[:80]
            raise InvalidRequestError(f"dataset {self.dataset}, key {name!r}: {exc}") from None

    def comparable(self, key: bytes, value: bytes) -> bytes:
        """A compare-and-set's expected document in the form the stored value compares with: stored()."""
        return self.stored(key, value)

    def document(self, stored: bytes, key: bytes = b"") -> bytes:
        """The document for a stored positional array (a value stored before the schema passes as is);
        `key` is unused here (SealedCodec needs it)."""
        values = _unpackb(stored)
        if not isinstance(values, list):
            return stored
        document: bytes = msgpack.packb(self.schema.decode(values), use_bin_type=True)
        return document


_CODECS: dict[str, RecordCodec] = {}   # by dataset id: a dataset's schema never changes
_CODECS_MAX = 1024


def codec_for(dataset: str, dataset_id: str, schema: Mapping[str, Any]) -> RecordCodec | None:
    """The codec of a typed dataset (cached per dataset id), None for a schema-less one."""
    if not schema:
        return None
    codec = _CODECS.get(dataset_id)
    if codec is None:
        if len(_CODECS) >= _CODECS_MAX:
            _CODECS.clear()
        codec = _CODECS[dataset_id] = RecordCodec(dataset, Schema.from_json(dict(schema)))
    return codec
