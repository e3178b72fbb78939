"""WorkerPool: the node's worker processes for compute tasks.

`forkserver`, never `fork` (notes/dependencies.md 2.6 and 3.9): a forked child would
inherit the daemon's LMDB environments and gRPC state. `warm()` starts the forkserver and
every worker in the background when the node starts, so the first job does not pay the
~1-2 s of starting Python processes (a job over 1,000 records should answer in tens of
milliseconds).

Each worker is one process with one socket to the daemon, driven from the event loop
(`loop.sock_sendall` / `sock_recv_into`): a task is one pickled (function, args) frame out
and one (ok | error, value) frame back. Not `concurrent.futures.ProcessPoolExecutor`: its
hand-off crosses two helper threads in the daemon (the queue feeder and the result
manager), and each crossing waits for the GIL behind the Raft tick thread and gRPC; with
one busy thread beside the loop its round trip was 5 ms median, 40 ms p90, against 0.1-0.2
ms here (DESIGN.md beside this file, "Latency of a small job"). A worker that dies
(killed, out of memory) fails only its own task with WorkerLostError and is replaced by the
next task; a task cancelled while it runs lets its worker finish in the background before
the worker takes another one (its answer must not reach the next task).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from shoal.node.compute.orphans import watch_parent

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HEADER = struct.Struct("!Q")      # the length of the pickled frame that follows
_PRELOAD = ["shoal.node.compute.forkserver_watch", "shoal.node.compute.worker"]


class WorkerLostError(Exception):
    """A worker process died while it ran the task (killed, out of memory)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers: int           # processes the pool may run at once
    started: int           # tasks handed to the pool
    running: int           # tasks submitted and not finished
    broken: int            # workers lost while running a task (then replaced)


class _Worker:
    def __init__(self, process: Any, channel: socket.socket) -> None:
        self.process = process
        self.channel = channel

    async def exchange(self, function: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Send one call, receive its answer: (True, result) or (False, the exception it raised)."""
        loop = asyncio.get_running_loop()
        payload = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            await loop.sock_sendall(self.channel, _HEADER.pack(len(payload)) + payload)
            (size,) = _HEADER.unpack(await self._receive(_HEADER.size))
            answer = await self._receive(size)
        except (ConnectionError, EOFError, OSError) as exc:
            raise WorkerLostError(f"a worker process died while running the task (pid {self.process.pid}, "
                                  f"exit code {self.process.exitcode}): {exc}") from None
        ok, value = pickle.loads(answer)  # nosec B301 - from our own worker, over a socketpair only the two ends hold
        return bool(ok), value

    async def _receive(self, size: int) -> bytes:
        loop = asyncio.get_running_loop()
        buffer = bytearray(size)
        view = memoryview(buffer)
        received = 0
        while received < size:
            count = await loop.sock_recv_into(self.channel, view[received:])
            if count == 0:
                raise EOFError("the worker closed its socket")
            received += count
        return bytes(buffer)

    def kill(self) -> None:
        try:
            os.kill(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, TypeError):   # gone already, or never started
            pass
        self.channel.close()


class WorkerPool:
    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0
        self._waiters: collections.deque[asyncio.Future[_Worker]] = collections.deque()
        self._started = 0
        self._running = 0
        self._broken = 0
        self._closed = False

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(self.workers, self._started, self._running, self._broken)

    async def warm(self) -> None:
        """Start every worker process now (each runs one no-op)."""
        results = await asyncio.gather(*(self.run(_ready) for _ in range(self.workers)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            logger.warning("worker pool did not start: %s", failed[0])

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run function(*args) in a worker process; raises what it raised, or WorkerLostError."""
        worker = await self._acquire()
        self._started += 1
        self._running += 1
        exchange = asyncio.get_running_loop().create_task(worker.exchange(function, args))
        exchange.add_done_callback(lambda done: self._finished(worker, done))
        ok, value = await asyncio.shield(exchange)   # cancelled: the worker still finishes this call first
        if not ok:
            raise value
        result: T = value
        return result

    def close(self) -> None:
        """Kill the workers without waiting for running tasks (their results no longer matter:
        another attempt re-runs them); never blocks node shutdown on a worker."""
        self._closed = True
        for worker in list(self._all):
            worker.kill()
        self._all.clear()
        self._idle.clear()

    async def _acquire(self) -> _Worker:
        if self._closed:
            raise WorkerLostError("the worker pool is closed (the node is stopping)")
        if self._idle:
            return self._idle.pop()
        if len(self._all) + self._starting < self.workers:
            return await self._start()
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())   # handed over as we were cancelled: pass it on
            raise

    async def _start(self) -> _Worker:
        self._starting += 1
        try:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            ours, theirs = socket.socketpair()
            process = context.Process(target=_serve, args=(theirs,), name="shoal-worker", daemon=True)
            try:
                await asyncio.to_thread(process.start)   # the first start also starts the forkserver
            finally:
                theirs.close()
            ours.setblocking(False)
            worker = _Worker(process, ours)
        finally:
            self._starting -= 1
        if self._closed:
            worker.kill()
            raise WorkerLostError("the worker pool is closed (the node is stopping)")
        self._all.add(worker)
        return worker

    def _finished(self, worker: _Worker, exchange: asyncio.Task[tuple[bool, Any]]) -> None:
        self._running -= 1
        failure = None if exchange.cancelled() else exchange.exception()
        if exchange.cancelled() or failure is not None:
            if isinstance(failure, WorkerLostError):
                self._broken += 1
            self._all.discard(worker)
            worker.kill()
            self._wake_one_for_start()
            return
        self._release(worker)

    def _release(self, worker: _Worker) -> None:
        if self._closed or worker not in self._all:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _wake_one_for_start(self) -> None:
        """A worker was lost: the first waiter starts its replacement."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                task = asyncio.get_running_loop().create_task(self._start())
                task.add_done_callback(lambda started: _hand_over(started, waiter))
                return


def _hand_over(started: asyncio.Task[_Worker], waiter: asyncio.Future[_Worker]) -> None:
    if waiter.done():
        if not started.cancelled() and started.exception() is None:
            started.result().kill()
        return
    if started.cancelled():
        waiter.cancel()
    elif started.exception() is not None:
        waiter.set_exception(started.exception())   # type: ignore[arg-type]
    else:
        waiter.set_result(started.result())


def _ready() -> bool:
    return True


# ---- in the worker process ----

def _serve(channel: socket.socket) -> None:
    """The worker's loop: read a call, run it, answer; exit when the daemon's end closes."""
    watch_parent()
    channel.setblocking(True)
    while True:
        header = _read(channel, _HEADER.size)
        if header is None:
            return
        payload = _read(channel, _HEADER.unpack(header)[0])
        if payload is None:
            return
        try:
            function, args = pickle.loads(payload)  # nosec B301 - from the daemon that started us (our socketpair)
            answer = pickle.dumps((True, function(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:   # everything the task raised goes back to the daemon
            answer = _error_answer(exc)
        channel.sendall(_HEADER.pack(len(answer)) + answer)


def _error_answer(exc: BaseException) -> bytes:
    try:
        answer = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(answer)  # nosec B301 - our own bytes: an exception that does not unpickle would fail the daemon
        return answer
    except Exception:
        return pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")), protocol=pickle.HIGHEST_PROTOCOL)


def _read(channel: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = channel.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return bytes(buffer)
