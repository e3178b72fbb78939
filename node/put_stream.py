"""One PutStream's flow: batches in, written concurrently within a bounded window, acks out.

Shapes: batches are shoal.v1.PutBatch messages (about 1,000 records or 1 MiB each, at most
message_bytes_max); each gets one PutBatchAck, in the order the writes finish.

Bounds (issue 19.6), so that neither a fast nor a stuck client can grow the node's memory:
- the window: batches read but whose ack the client has not yet taken, at most
  `batches_max` of them and `bytes_max` bytes (one batch always fits, whatever its size).
  A batch holds its share until its ack is handed to gRPC, not merely until it is written:
  a client that sends on and never reads its acks stalls at the window, instead of
  piling acks up in memory; the stalled ack send is then ended by node/streams.py;
- the idle timeout: a stream with nothing being written that receives no batch for
  `idle_timeout_s` is closed with StreamIdleError ("stream ... idle" in the log). The Python
  client opens a new stream when it has batches again, so a slow producer costs nothing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from shoal.client.wire.pb import data_pb2
from shoal.node.errors import StreamIdleError

Store = Callable[[data_pb2.PutBatch], Awaitable[data_pb2.PutBatchAck]]


class Window:
    """Batches of one stream between their arrival and their ack's send: a count and a byte bound."""

    def __init__(self, batches_max: int, bytes_max: int) -> None:
        assert batches_max > 0 and bytes_max > 0
        self.batches_max = batches_max
        self.bytes_max = bytes_max
        self.batches = 0
        self.bytes = 0
        self._changed = asyncio.Condition()

    def _fits(self, size: int) -> bool:
        return self.batches == 0 or (self.batches < self.batches_max and self.bytes + size <= self.bytes_max)

    async def acquire(self, size: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._fits(size))
            self.batches += 1
            self.bytes += size

    async def release(self, size: int) -> None:
        async with self._changed:
            self.batches -= 1
            self.bytes -= size
            self._changed.notify_all()


@dataclasses.dataclass(slots=True)
class _Progress:
    received_s: float      # monotonic time of the last batch received (or of the stream's start)
    writing: int = 0       # batches received whose write has not finished


async def acks(batches: AsyncIterator[data_pb2.PutBatch], store: Store, *, batches_max: int, bytes_max: int,
               idle_timeout_s: float) -> AsyncIterator[data_pb2.PutBatchAck]:
    """The acks of `batches`, each batch written by `store` (which answers failures in its ack).

    Raises StreamIdleError after idle_timeout_s with nothing received and nothing being written.
    """
    window = Window(batches_max, bytes_max)
    done: asyncio.Queue[tuple[data_pb2.PutBatchAck, int] | None] = asyncio.Queue()   # at most batches_max: the window
    progress = _Progress(time.monotonic())

    async def write(batch: data_pb2.PutBatch, size: int) -> None:
        try:
            ack = await store(batch)
        finally:
            progress.writing -= 1
        done.put_nowait((ack, size))

    async def read() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                async for batch in batches:
                    progress.received_s = time.monotonic()
                    size = batch.ByteSize()
                    await window.acquire(size)
                    progress.writing += 1
                    group.create_task(write(batch, size))
        finally:
            done.put_nowait(None)   # also after a failure: the loop below then re-raises it

    reader = asyncio.create_task(read())
    try:
        while (item := await _next(done, progress, idle_timeout_s)) is not None:
            ack, size = item
            yield ack
            await window.release(size)
        await reader
    finally:
        reader.cancel()


async def _next(done: asyncio.Queue[tuple[data_pb2.PutBatchAck, int] | None], progress: _Progress,
                idle_timeout_s: float) -> tuple[data_pb2.PutBatchAck, int] | None:
    while True:
        wait_s = idle_timeout_s
        if progress.writing == 0:
            wait_s -= time.monotonic() - progress.received_s
            if wait_s <= 0:
                raise StreamIdleError(f"PutStream: no batch for {idle_timeout_s:g} s and none being written "
                                      "(stream_idle_timeout_s): the node closed the stream; open a new one")
        try:
            async with asyncio.timeout(wait_s):
                return await done.get()
        except TimeoutError:
            continue
