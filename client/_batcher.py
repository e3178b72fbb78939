"""Records to batches (pure): ShardBatcher groups encoded records per shard into RecordBatch.

Batches are columnar and bounded by a record count and a byte size, the shape of
PutBatch. Ingest is the hot path: one reused msgpack.Packer per put_many call and two
plain lists per batch, never a protobuf message per record (notes/dependencies.md 3.4:
per-record messages cap ingest near 0.5 M records/s, packed columns run several times
faster). _ingest_stream sends the batches.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Final

from shoal.client._codec import KEY_BYTES_MAX, MESSAGE_HEADROOM_BYTES, ValueEncoder, encode_key, unpack_record
from shoal.client._errors import InvalidArgumentError
from shoal.client.wire.channels import MESSAGE_BYTES_MAX
from shoal.client.wire.routing import shard_for_key

logger = logging.getLogger(__name__)

RECORD_OVERHEAD_BYTES: Final = 8              # protobuf tags and lengths of one key + value
RECORD_BYTES_MIN: Final = 1 + 1 + RECORD_OVERHEAD_BYTES   # a 1-byte key, msgpack nil and the framing


def batch_limits(message_bytes_max: int) -> tuple[int, int]:
    """(records, bytes): the most one PutBatch within `message_bytes_max` can carry.

    Bytes: the message less its headroom (target, write id); records: that many bytes of
    the smallest records. Upper bounds of put_many's batch_records and batch_bytes.
    """
    bytes_max = message_bytes_max - MESSAGE_HEADROOM_BYTES
    return max(1, bytes_max // RECORD_BYTES_MIN), bytes_max


@dataclasses.dataclass(slots=True)
class RecordBatch:
    """Records of one shard, columnar: keys[i] -> values[i]."""

    shard: int
    keys: list[bytes] = dataclasses.field(default_factory=list)
    values: list[bytes] = dataclasses.field(default_factory=list)
    size_bytes: int = 0

    def __len__(self) -> int:
        return len(self.keys)


class ShardBatcher:
    """Routes encoded records to per-shard batches and hands out the full ones.

    A batch holds at most `batch_records` records and at most `batch_bytes` bytes
    (keys + values + per-record framing), except that a single record larger than
    `batch_bytes` travels alone.
    """

    __slots__ = ("_shard_count", "_records_max", "_bytes_max", "_open")

    def __init__(self, shard_count: int, *, batch_records: int, batch_bytes: int,
                 message_bytes_max: int = MESSAGE_BYTES_MAX) -> None:
        records_max, bytes_max = batch_limits(message_bytes_max)
        if not 1 <= batch_records <= records_max:
            raise InvalidArgumentError(f"batch_records must be within 1..{records_max}, got {batch_records}")
        if not 1 <= batch_bytes <= bytes_max:
            raise InvalidArgumentError(f"batch_bytes must be within 1..{bytes_max}, got {batch_bytes}")
        assert shard_count > 0
        self._shard_count = shard_count
        self._records_max = batch_records
        self._bytes_max = batch_bytes
        self._open: dict[int, RecordBatch] = {}

    def add(self, key: bytes, value: bytes) -> RecordBatch | None:
        """Add one record; return a batch that is now full (at most one), else None."""
        shard = shard_for_key(key, self._shard_count)
        size_bytes = len(key) + len(value) + RECORD_OVERHEAD_BYTES
        batch = self._open.get(shard)
        sealed = None
        if batch is not None and batch.size_bytes + size_bytes > self._bytes_max:
            sealed = self._open.pop(shard)
            batch = None
        if batch is None:
            batch = self._open[shard] = RecordBatch(shard)
        batch.keys.append(key)
        batch.values.append(value)
        batch.size_bytes += size_bytes
        if sealed is None and (len(batch) >= self._records_max or batch.size_bytes >= self._bytes_max):
            sealed = self._open.pop(shard)
        # When a byte overflow sealed the old batch, the new one holds one record, below
        # batch_records (the old one had fewer than batch_records, so the limit is >= 2);
        # if that record alone reaches batch_bytes it is sealed by the next add or flush.
        return sealed

    def fill(self, dataset: str, records: Iterable[Any], encoder: ValueEncoder) -> Iterator[RecordBatch]:
        """The ingest hot loop: encode, route and batch (key, value) records, yielding full batches.

        Same result as `add(encode_key(...), encoder.encode(...))` per record, without the
        per-record function calls; anything unusual goes through those slow paths, which
        raise the precise error naming the record.
        """
        pack = encoder.pack
        shard_count, records_max, bytes_max = self._shard_count, self._records_max, self._bytes_max
        value_max = encoder.value_bytes_max
        batches = self._open
        for record in records:
            try:
                key, value = record
                raw = key.encode("utf-8") if type(key) is str else key
                packed = pack(value)
                fast = type(raw) is bytes and 0 < len(raw) <= KEY_BYTES_MAX and len(packed) <= value_max
            except Exception:   # any problem: the slow path below names it precisely
                fast = False
            if not fast:
                key, value = unpack_record(dataset, record)
                raw, packed = encode_key(dataset, key), encoder.encode(dataset, key, value)
            shard = shard_for_key(raw, shard_count)
            batch = batches.get(shard)
            size_bytes = len(raw) + len(packed) + RECORD_OVERHEAD_BYTES
            if batch is not None and batch.size_bytes + size_bytes > bytes_max:
                yield batches.pop(shard)
                batch = None
            if batch is None:
                batch = batches[shard] = RecordBatch(shard)
            batch.keys.append(raw)
            batch.values.append(packed)
            batch.size_bytes += size_bytes
            if len(batch.keys) >= records_max or batch.size_bytes >= bytes_max:
                yield batches.pop(shard)

    def flush(self) -> Iterator[RecordBatch]:
        """Hand out every partly filled batch (end of input)."""
        while self._open:
            _, batch = self._open.popitem()
            yield batch
