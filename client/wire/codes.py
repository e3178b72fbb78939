"""Error codes on the wire, and the trailing-metadata keys that carry them.

A failed RPC carries its gRPC status plus, in the trailing metadata, the name of a
shoal.v1.ErrorCode under ERROR_METADATA_KEY: several codes share one gRPC status
(NOT_PRIMARY, NO_LEASE and UNKNOWN_OUTCOME are all UNAVAILABLE), and the client must tell
them apart. OVERLOADED answers also carry RETRY_AFTER_METADATA_KEY, milliseconds the
caller should wait before trying again.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from shoal.client.wire.pb import data_pb2

ERROR_METADATA_KEY: Final = "shoal-error"
RETRY_AFTER_METADATA_KEY: Final = "shoal-retry-after-ms"

ERROR_CODES: Final = frozenset(data_pb2.ErrorCode.keys())   # names of shoal.v1.ErrorCode


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The value of `key` in gRPC (trailing) metadata, as str; None when absent."""
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return None
