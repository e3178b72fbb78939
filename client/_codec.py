"""Records on the wire: key and value encoding, and ABSENT.

- Keys travel as bytes (str keys as UTF-8); values as msgpack documents packed with
  `use_bin_type=True`, so str and bytes stay distinct after a round trip.
- Bad input is rejected here, before anything is sent, as InvalidArgumentError naming
  the dataset and the key (TooLargeError past the key or message limit).
- ValueEncoder reuses one msgpack.Packer (one per put_many call or thread): ingest is the
  hot path, see _batcher.
"""
from __future__ import annotations

import logging
from typing import Any, Final

import msgpack

from shoal.client._errors import InvalidArgumentError, TooLargeError
from shoal.client.wire.channels import MESSAGE_BYTES_MAX
from shoal.client.wire.ints import WIRE_INT_RANGE, int_past_64_bits, shown_int

logger = logging.getLogger(__name__)

KEY_BYTES_MAX: Final = 511                    # LMDB's key limit; nodes may set a lower one
MESSAGE_HEADROOM_BYTES: Final = 64 * 1024     # target, write id and protobuf framing


class _Absent:
    """The type of ABSENT; one instance only."""

    __slots__ = ()
    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
"""compare_and_set: expected=ABSENT means "the key must not exist" (expected=None means
"missing or None"); new=ABSENT deletes. get(dataset, key, ABSENT) returns it for a missing key."""


def encode_key(dataset: str, key: object) -> bytes:
    """Validate a key and return its bytes; raise InvalidArgumentError naming it."""
    if isinstance(key, str):
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(f"key is not valid UTF-8 ({exc.reason})", dataset=dataset,
                                       key=key) from None
    elif isinstance(key, bytes):
        raw = key
    else:
        raise InvalidArgumentError(f"key must be str or bytes, not {type(key).__name__} ({key!r:.60})",
                                   dataset=dataset)
    if not raw:
        raise InvalidArgumentError("key must not be empty", dataset=dataset, key=key)
    if len(raw) > KEY_BYTES_MAX:
        raise TooLargeError(f"key is {len(raw)} bytes, the limit is {KEY_BYTES_MAX}", dataset=dataset,
                            key=key)
    return raw


def unpack_record(dataset: str, record: Any) -> tuple[Any, Any]:
    """A put_many record as (key, value), or InvalidArgumentError."""
    try:
        key, value = record
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"put_many records must be (key, value) pairs, got {type(record).__name__}",
                                   dataset=dataset) from None
    return key, value


def decode_key(raw: bytes) -> str | bytes:
    """Keys come back as str when they are valid UTF-8, else as bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def decode_value(raw: bytes) -> Any:
    """Inverse of ValueEncoder: msgpack str -> str, bin -> bytes, arrays -> lists."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


class ValueEncoder:
    """Packs values with one reused Packer; not thread-safe (one per call or thread)."""

    __slots__ = ("_packer", "message_bytes_max", "value_bytes_max")

    def __init__(self, message_bytes_max: int = MESSAGE_BYTES_MAX) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)
        self.message_bytes_max = message_bytes_max   # ClientConfig.message_bytes_max
        self.value_bytes_max = message_bytes_max - MESSAGE_HEADROOM_BYTES

    def pack(self, value: Any) -> bytes:
        """Pack without checks (the hot loop checks and falls back to `encode`)."""
        packed: bytes = self._packer.pack(value)
        return packed

    def encode(self, dataset: str, key: str | bytes, value: Any) -> bytes:
        try:
            packed: bytes = self._packer.pack(value)
        except (TypeError, OverflowError, ValueError) as exc:
            found = int_past_64_bits(value) if isinstance(exc, OverflowError) else None
            reason = str(exc) if found is None else (
                f"{found[0] if found[0][:1].isalpha() else 'the value' + found[0]} is {shown_int(found[1])}, an "
                f"integer outside {WIRE_INT_RANGE} (64 bits, what msgpack stores): store it as a str or a float")
            raise InvalidArgumentError(f"value cannot be encoded as msgpack ({reason})", dataset=dataset,
                                       key=key) from None
        if len(packed) > self.value_bytes_max:
            raise TooLargeError(f"value is {len(packed)} bytes, over the {self.message_bytes_max} byte message "
                                "limit", dataset=dataset, key=key)
        return packed

