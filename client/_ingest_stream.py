"""Batches to a shard's primary: ShardStream sends one shard's batches over PutStream.

It keeps a bounded window of unacknowledged batches and, after failures, resends them
with their original write ids on a new stream (the class docstring has the threading).
The batches come from _batcher.ShardBatcher.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

from shoal.client._channel import DatasetRoute, Transport, needs_refresh, rpc_errors
from shoal.client._errors import (
    DeadlineExceededError, InternalError, InvalidArgumentError, NotPrimaryError, ShoalError, UnavailableError,
    UnknownOutcomeError, error_from_code, may_have_applied,
)
from shoal.client.wire.pb import data_pb2 as pb

logger = logging.getLogger(__name__)

POLL_S: Final = 0.05                          # how often ingest threads look at flags and deadlines


@dataclasses.dataclass(slots=True)
class _Pending:
    message: pb.PutBatch
    deadline_s: float          # submitted + timeout_s: unacknowledged after it, put_many gives up


@dataclasses.dataclass(slots=True)
class _Attempt:
    over: bool = False         # the stream ended; its request generator must return
    sent_any: bool = False     # a batch was handed to gRPC on this stream


class ShardStream:
    """Sends one shard's batches to its primary over PutStream, a bounded window at a time.

    Three threads touch it: the put_many caller submits batches (blocking while
    `window` are unacknowledged); a sender thread opens the stream and reads the acks;
    gRPC's request thread pulls batches from `_requests`. After a stream error or a
    retriable batch error the sender refreshes the map when told to, backs off and opens
    a new stream that resends every unacknowledged batch with its original write id. A
    primary that went silent (stall, deadline, lost connection) is recorded with the
    transport, so no stream or call reopens to it before a map reload (Transport.primary).
    A batch not acknowledged `timeout_s` after it was submitted ends the stream; the
    watchdog (`watching`) enforces that even while the sender is blocked reading acks,
    which is why the stream itself carries no gRPC deadline. The watchdog also drops a
    stream that acknowledged nothing for `ClientConfig.attempt_timeout_s()`: a paused or cut
    off primary is replaced by the controller within seconds, while gRPC keepalive would
    only notice it after about 15 s, so the batches go to the new primary instead.
    """

    def __init__(self, transport: Transport, dataset: str, shard: int, shard_count: int) -> None:
        config = transport.config
        self._transport = transport
        self._retry = config.retry
        self._dataset, self._shard, self._shard_count = dataset, shard, shard_count
        self._dataset_id = ""   # the incarnation the batches were routed to (their targets name it)
        self._window, self._timeout_s = config.stream_window_batches, config.timeout_s
        self._cond = threading.Condition()
        self._pending: dict[int, _Pending] = {}      # request_seq -> batch, in submit order
        self._input_done = self._stopped = self._deadline_hit = self._maybe_applied = False
        self._call: Any = None
        self._address = ""
        self._progress_s = time.monotonic()       # last ack, or the current stream's start
        self._stall_s = config.attempt_timeout_s()
        self._cancelled: ShoalError | None = None   # why the watchdog cancelled the current stream
        self._last: ShoalError | None = None
        self.acked_records = 0
        self.error: ShoalError | None = None
        self._thread = threading.Thread(target=self._run, name=f"shoal-ingest-{dataset}-{shard}", daemon=True)
        self._thread.start()

    # ---- the caller's side ----

    def submit(self, message: pb.PutBatch) -> None:
        with self._cond:
            while len(self._pending) >= self._window and self.error is None and not self._stopped:
                self._cond.wait(POLL_S)
            if self.error is not None:
                raise self.error
            assert not self._stopped and not self._input_done
            self._pending[message.write_id.request_seq] = _Pending(message, time.monotonic() + self._timeout_s)
            self._dataset_id = self._dataset_id or message.target.dataset_id
            self._cond.notify_all()

    def check_progress(self) -> None:
        """Watchdog: end the stream when a batch is overdue or when no ack came for a while."""
        now = time.monotonic()
        with self._cond:
            if not self._pending or self._deadline_hit:
                return
            if now > next(iter(self._pending.values())).deadline_s:
                self._deadline_hit = True
                self._cancel_locked(DeadlineExceededError(
                    f"put_many failed: a batch was not acknowledged within {self._timeout_s:g} s"))
                self._cond.notify_all()
            elif self._call is not None and now - self._progress_s > self._stall_s:
                self._cancel_locked(UnavailableError(
                    f"put_many failed: no acknowledgement for {now - self._progress_s:.1f} s, reconnecting"))
                self._progress_s = now

    def _cancel_locked(self, reason: ShoalError) -> None:
        if self._call is not None:
            reason.dataset, reason.shard, reason.node = self._dataset, self._shard, self._address
            self._cancelled = reason
            self._call.cancel()

    def _close(self, *, stop: bool) -> None:
        with self._cond:
            self._input_done = True
            if stop:
                self._stopped = True
                if self._call is not None:
                    self._call.cancel()
            self._cond.notify_all()

    @staticmethod
    def finish_all(streams: list[ShardStream]) -> int:
        """End the input, wait for every ack; raise the first failure, else count records."""
        for stream in streams:
            stream._close(stop=False)
        for stream in streams:
            stream._thread.join()
        errors = [stream.error for stream in streams if stream.error is not None]
        if errors:
            raise next((e for e in errors if isinstance(e, UnknownOutcomeError)), errors[0])
        return sum(stream.acked_records for stream in streams)

    @staticmethod
    def stop_all(streams: list[ShardStream]) -> None:
        for stream in streams:
            stream._close(stop=True)
        for stream in streams:
            stream._thread.join()

    @staticmethod
    @contextlib.contextmanager
    def watching(streams: dict[int, ShardStream]) -> Iterator[None]:
        """Run the deadline watchdog over `streams` (which may grow) during the block."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(POLL_S):
                for stream in list(streams.values()):
                    stream.check_progress()

        thread = threading.Thread(target=watch, name="shoal-ingest-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # ---- the sender thread ----

    def _run(self) -> None:
        try:
            self._send_loop()
        except BaseException as exc:   # a bug: never leave submit() waiting on a dead sender
            with self._cond:
                self.error = InternalError(f"put_many sender failed: {exc!r}", dataset=self._dataset,
                                           shard=self._shard)
                self._cond.notify_all()
            raise

    def _send_loop(self) -> None:
        backoff = self._retry.backoff()
        failures = 0    # attempts in a row without an ack: log the first at INFO, the rest at DEBUG
        while True:
            with self._cond:
                while not self._pending and not self._input_done and not self._stopped:
                    self._cond.wait(POLL_S)
                if self._stopped or not self._pending:
                    return
                if self._deadline_hit or time.monotonic() > next(iter(self._pending.values())).deadline_s:
                    self._fail_locked(None)
                    return
            acked_before = self.acked_records
            try:
                self._attempt()
                error: ShoalError = UnavailableError("put_many stream ended before every batch was acknowledged",
                                                     dataset=self._dataset, shard=self._shard)
            except ShoalError as exc:
                error = exc
            with self._cond:
                if self._stopped or not self._pending:
                    continue        # (a stream we cancelled says nothing about its node)
                self._last = error
                if error.node:
                    self._transport.note_failure(error.node, error)
                if not error.retriable and not self._deadline_hit:
                    self._fail_locked(error)
                    return
            progressed = self.acked_records > acked_before
            if progressed:
                backoff.reset()
            logger.log(logging.INFO if progressed or failures == 0 else logging.DEBUG,
                       "put_many %s/%d: resending %d batches after %s", self._dataset, self._shard,
                       len(self._pending), error)
            failures = 0 if progressed else failures + 1
            if needs_refresh(error):
                with contextlib.suppress(ShoalError):
                    self._transport.refresh(time.monotonic() + self._timeout_s,
                                            seen_version=self._transport.version)
            backoff.sleep(time.monotonic() + self._retry.max_s, at_least_s=getattr(error, "retry_after_s", 0.0))

    def _attempt(self) -> None:
        """One stream: send what is pending (and what comes), read acks until it ends."""
        deadline_s = time.monotonic() + self._timeout_s
        _, shard = self._transport.primary(self._dataset, deadline_s, self._same_shard)
        if not shard.address:
            raise NotPrimaryError("the shard has no primary in our cluster map", dataset=self._dataset,
                                  shard=self._shard)
        attempt = _Attempt()
        call = self._transport.stub(shard.address).PutStream(self._requests(attempt, shard.epoch))
        with self._cond:
            self._call, self._address, self._progress_s = call, shard.address, time.monotonic()
            self._cancelled = None
            if self._stopped or self._deadline_hit:
                call.cancel()
        try:
            with rpc_errors("put_many", node=shard.address, dataset=self._dataset, shard=self._shard):
                for ack in call:
                    self._on_ack(ack, shard.address)
        except ShoalError as exc:
            with self._cond:
                reason, self._cancelled = self._cancelled, None
            error = reason if reason is not None and exc.status == "CANCELLED" else exc
            if attempt.sent_any and may_have_applied(error):
                self._maybe_applied = True
            if error is exc:
                raise
            raise error from exc
        finally:
            with self._cond:
                attempt.over, self._call = True, None
                self._cond.notify_all()
            call.cancel()

    def _same_shard(self, route: DatasetRoute) -> int:
        recreated = route.shards != self._shard_count or (self._dataset_id and route.id != self._dataset_id)
        if recreated:   # never resend into another incarnation of the dataset
            raise InvalidArgumentError(f"dataset was dropped and re-created ({route.id}, {route.shards} shards) "
                                       "during put_many", dataset=self._dataset)
        return self._shard

    def _requests(self, attempt: _Attempt, epoch: int) -> Iterator[pb.PutBatch]:
        """Runs on gRPC's request thread: pending batches in order, then new ones."""
        sent: set[int] = set()
        while True:
            with self._cond:
                batch = None
                while not attempt.over and not self._stopped:
                    batch = next((p for seq, p in self._pending.items() if seq not in sent), None)
                    if batch is not None or self._input_done:
                        break
                    self._cond.wait(POLL_S)
                if batch is None or attempt.over or self._stopped:
                    return          # half-close: everything is sent (or the stream is over)
                sent.add(batch.message.write_id.request_seq)
                attempt.sent_any = True
            message = batch.message
            if message.target.epoch != epoch:
                message = pb.PutBatch()
                message.CopyFrom(batch.message)
                message.target.epoch = epoch
            yield message

    def _on_ack(self, ack: pb.PutBatchAck, address: str) -> None:
        if ack.error == pb.ERROR_CODE_UNSPECIFIED:
            with self._cond:
                pending = self._pending.pop(ack.request_seq, None)
                if pending is not None:
                    self.acked_records += len(pending.message.keys)
                    self._progress_s = time.monotonic()
                self._cond.notify_all()
            self._transport.unresponsive.clear(address)
            return
        try:
            code = pb.ErrorCode.Name(ack.error)
        except ValueError:
            code = "ERROR_CODE_UNSPECIFIED"
        error = error_from_code(code, f"put_many batch failed: {ack.error_message}", node=address,
                                dataset=self._dataset, shard=self._shard)
        if may_have_applied(error):
            self._maybe_applied = True
        raise error

    def _fail_locked(self, error: ShoalError | None) -> None:
        last = error or self._last or DeadlineExceededError(
            "put_many failed: no acknowledgement in time", dataset=self._dataset, shard=self._shard)
        if error is None and self._maybe_applied:
            unknown = UnknownOutcomeError(
                f"put_many: {len(self._pending)} batches may or may not have been written ({last.message})",
                dataset=self._dataset, shard=self._shard, node=last.node)
            unknown.__cause__ = last
            last = unknown
        self.error = last
        self._cond.notify_all()
