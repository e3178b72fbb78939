"""PutCombiner: concurrent put() calls to one shard travel together as one PutRecords call.

Python gRPC costs a few hundred microseconds of CPU per unary call on each side; with
many threads putting at once, that, not the disk, caps throughput. So the first caller
to find a shard idle becomes its *sender*: it sends its own put, and meanwhile later
callers queue; when the call returns, the sender takes everything queued and sends it
as one batch, until the queue is empty. No extra threads, and a lone caller pays no
added latency. A batch is one write (one write id, one group on the primary), so a
retry applies it once and every put in it has the same outcome; when a batch fails for
good because one record was rejected (too large for the node, say), each put is sent
alone, so only that caller gets the error.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from typing import Callable

from shoal.client._errors import InvalidArgumentError, ShoalError

BATCH_RECORDS_MAX = 1000
BATCH_BYTES_MAX = 1024 * 1024


@dataclasses.dataclass(slots=True)
class PendingPut:
    key: str | bytes               # as the caller gave it, for error messages
    key_bytes: bytes
    value_bytes: bytes
    done: concurrent.futures.Future[None] = dataclasses.field(default_factory=concurrent.futures.Future)


SendBatch = Callable[[str, int, list[PendingPut]], None]   # raises ShoalError for the whole batch
SendOne = Callable[[str, PendingPut], None]


class PutCombiner:
    def __init__(self, send_batch: SendBatch, send_one: SendOne) -> None:
        self._send_batch = send_batch
        self._send_one = send_one
        self._lock = threading.Lock()
        self._queued: dict[tuple[str, int], list[PendingPut]] = {}
        self._sending: set[tuple[str, int]] = set()

    def put(self, dataset: str, shard: int, pending: PendingPut) -> None:
        """Store one record (blocks until its batch is acknowledged or fails)."""
        lane = (dataset, shard)
        with self._lock:
            self._queued.setdefault(lane, []).append(pending)
            sender = lane not in self._sending
            if sender:
                self._sending.add(lane)
        if sender:
            self._drain(lane)
        pending.done.result()

    def _drain(self, lane: tuple[str, int]) -> None:
        while True:
            with self._lock:
                queued = self._queued.get(lane, [])
                batch, rest = _take(queued)
                self._queued[lane] = rest
                if not batch:
                    self._sending.discard(lane)
                    return
            self._send(lane, batch)

    def _send(self, lane: tuple[str, int], batch: list[PendingPut]) -> None:
        dataset, shard = lane
        try:
            self._send_batch(dataset, shard, batch)
        except ShoalError as exc:
            if len(batch) > 1 and isinstance(exc, InvalidArgumentError):
                for pending in batch:   # rejected, nothing applied: find the culprit, store the rest
                    self._send_alone(dataset, pending)
                return
            for pending in batch:
                pending.done.set_exception(exc)
        except BaseException as exc:   # a bug or KeyboardInterrupt: no caller may wait forever
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(exc)
            raise
        else:
            for pending in batch:
                pending.done.set_result(None)

    def _send_alone(self, dataset: str, pending: PendingPut) -> None:
        try:
            self._send_one(dataset, pending)
        except ShoalError as exc:
            pending.done.set_exception(exc)
        else:
            pending.done.set_result(None)


def _take(queued: list[PendingPut]) -> tuple[list[PendingPut], list[PendingPut]]:
    """The next batch (bounded by records and bytes) and what stays queued."""
    size = 0
    for index, pending in enumerate(queued):
        size += len(pending.key_bytes) + len(pending.value_bytes)
        if index >= BATCH_RECORDS_MAX or (index > 0 and size > BATCH_BYTES_MAX):
            return queued[:index], queued[index:]
    return queued, []
