"""ClientConfig: every tunable of a client in one frozen object.

`Client(addresses, timeout_s=...)` builds one; pass `config=ClientConfig(...)` to set the
rest. TLS credentials and the bearer token are fields here too (they plug into the wire
factory, `shoal.client.wire.channels.Wire`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from shoal.client._arguments import GRPC_INT_MAX, check_int, check_seconds
from shoal.client._batcher import batch_limits
from shoal.client._codec import MESSAGE_HEADROOM_BYTES
from shoal.client._errors import InvalidArgumentError
from shoal.client.wire.channels import MESSAGE_BYTES_MAX, Wire
from shoal.client.wire.retry import RetryPolicy
from shoal.client.wire.tls import TlsFiles

DEFAULT_ADDRESS: Final = "127.0.0.1:7400"
ATTEMPTS_PER_CALL_MAX: Final = 1000        # more only shortens attempts to attempt_timeout_s_min
STREAM_WINDOW_BATCHES_MAX: Final = 1024    # more only holds memory: the node reads a window of its own
MESSAGE_BYTES_RANGE: Final = (MESSAGE_HEADROOM_BYTES + 1, GRPC_INT_MAX)   # room for a value; a C int for gRPC


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    addresses: tuple[str, ...] = (DEFAULT_ADDRESS,)   # seed nodes, HOST:PORT
    timeout_s: float = 10.0                 # every call, retries included
    connect_timeout_s: float = 1.0          # first contact: until some seed has answered, a call waits at
                                            # most this long (all seeds at once) for one to complete its
                                            # gRPC handshake, then fails without retrying (_contact.py)
    attempts_per_call: int = 4              # one attempt waits at most timeout_s / attempts_per_call ...
    attempt_timeout_s_min: float = 1.0      # ... but at least this, so a paused node is retried around
    map_timeout_s: float = 2.0              # one GetClusterMap try (a local read on the node); at most
                                            # half the time left while other nodes remain to be asked
    unresponsive_hold_s: float = 3.0        # a node that did not answer an attempt (deadline, unreachable)
                                            # is asked last for maps this long, and gets no request until
                                            # a map reload that began after its silence (_channel.py)
    status_timeout_s: float = 2.0           # per node in status(): slower nodes are reported, not awaited
    message_bytes_max: int = MESSAGE_BYTES_MAX   # gRPC message limit, both ways (the node's default)
    put_many_batch_records: int = 2000      # records per PutStream batch ...
    put_many_batch_bytes: int = 2 * 1024 * 1024   # ... and bytes (notes/baselines.md: measured best here)
    stream_window_batches: int = 8          # unacknowledged batches per shard stream
    tls_dir: str = ""                       # mutual TLS with DIR/ca.pem, client.pem, client.key (shoal certs init); "" = plaintext
    token: str = dataclasses.field(default="", repr=False)   # bearer token (shoal token create); "" = none
    retry: RetryPolicy = RetryPolicy(first_s=0.02, max_s=0.5)   # backoff between attempts

    def validate(self) -> ClientConfig:
        """Raise InvalidArgumentError naming the field; return self.

        Counts are ints, seconds ints or floats, and a bool is neither. Every field has
        bounds: seconds within (0, SECONDS_MAX] (_arguments.py), counts within the ranges
        of _int_ranges (a message limit gRPC can hold, batches that fit in a message).
        """
        message_minimum, message_maximum = MESSAGE_BYTES_RANGE
        ranges = _int_ranges(check_int(self.message_bytes_max, "message_bytes_max", minimum=message_minimum,
                                       maximum=message_maximum))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(field.default, float):
                check_seconds(value, field.name)
            elif isinstance(field.default, int):
                minimum, maximum = ranges[field.name]   # every int field has its range
                check_int(value, field.name, minimum=minimum, maximum=maximum)
        if not isinstance(self.addresses, tuple) or not all(isinstance(item, str) for item in self.addresses):
            raise InvalidArgumentError(f"addresses must be a tuple of str, not {type(self.addresses).__name__}")
        if not isinstance(self.retry, RetryPolicy):
            raise InvalidArgumentError(f"retry must be a RetryPolicy, not {type(self.retry).__name__}")
        if not self.addresses:
            raise InvalidArgumentError("no cluster address given (expected HOST:PORT[,HOST:PORT...])")
        if not isinstance(self.token, str) or not all(" " < char < "\x7f" for char in self.token):
            # gRPC refuses such metadata with a bare "Invalid metadata" on every call; the token is not shown
            raise InvalidArgumentError("token must be printable ASCII without spaces or line breaks (as shoal "
                                       "token create prints it): check SHOAL_TOKEN or the token file")
        return self

    def wire(self) -> Wire:
        tls = TlsFiles.from_dir(self.tls_dir, "client") if self.tls_dir else None
        return Wire(message_bytes_max=self.message_bytes_max, tls=tls, token=self.token)

    def attempt_timeout_s(self) -> float:
        """How long one attempt may wait for a node: a share of the call's time, at least the minimum.

        Without a cap, one paused node would eat the whole deadline; with it, the retry loop
        reloads the map and reaches the node the controller promoted in its place.
        """
        return max(self.attempt_timeout_s_min, self.timeout_s / self.attempts_per_call)


def _int_ranges(message_bytes_max: int) -> dict[str, tuple[int, int]]:
    """The bounds of the int fields (the batch sizes depend on the message limit)."""
    records_max, bytes_max = batch_limits(message_bytes_max)
    return {"message_bytes_max": MESSAGE_BYTES_RANGE, "attempts_per_call": (1, ATTEMPTS_PER_CALL_MAX),
            "put_many_batch_records": (1, records_max),
            "put_many_batch_bytes": (1, bytes_max), "stream_window_batches": (1, STREAM_WINDOW_BATCHES_MAX)}


def parse_addresses(addresses: str | Sequence[str]) -> tuple[str, ...]:
    """"a:1,b:2" or ["a:1", "b:2"] -> ("a:1", "b:2"), checking each is HOST:PORT."""
    if not isinstance(addresses, (str, list, tuple)):
        raise InvalidArgumentError(f"addresses must be a str or a list of str, not {type(addresses).__name__}")
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    seeds = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not seeds:
        raise InvalidArgumentError("no cluster address given (expected HOST:PORT[,HOST:PORT...])")
    for seed in seeds:
        host, sep, port = seed.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgumentError(f"bad cluster address {seed!r}: expected HOST:PORT")
    return seeds
