"""WorkerPool: the node's worker processes for compute tasks.

`forkserver`, never `fork` (notes/dependencies.md 2.6 and 3.9): a forked child would
inherit the daemon's LMDB environments and gRPC state. The pool starts on first use;
`warm()` starts the forkserver and every worker in the background when the node starts,
so the first job does not pay the ~1-2 s of starting Python processes (a job over 1,000
records should answer in tens of milliseconds). A pool broken by a dead worker (killed by
the OOM killer, a signal) is replaced and the task is reported failed with the cause.
After `close()` (the node is stopping) a task fails with WorkerLostError instead of
starting a new pool that nobody would stop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from shoal.node.compute.orphans import watch_parent

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerLostError(Exception):
    """A worker process died while it ran the task (killed, out of memory)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers: int           # processes the pool may run at once
    started: int           # tasks handed to the pool
    running: int           # tasks submitted and not finished
    broken: int            # times the pool was replaced after a worker died


class WorkerPool:
    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._started = 0
        self._running = 0
        self._broken = 0
        self._closed = False   # after close() no task starts a new pool (the node is stopping)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(self.workers, self._started, self._running, self._broken)

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._closed:
            raise WorkerLostError("the worker pool is closed (the node is stopping)")
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["shoal.node.compute.forkserver_watch", "shoal.node.compute.worker"])
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                                                initializer=watch_parent)
        return self._pool

    async def warm(self) -> None:
        """Start every worker process now (each runs one no-op), off the event loop."""
        if self._closed:
            return
        pool = self._executor()
        futures = [asyncio.wrap_future(pool.submit(_ready)) for _ in range(self.workers)]
        try:
            await asyncio.gather(*futures)
        except BrokenProcessPool as exc:
            logger.warning("worker pool did not start: %s", exc)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run function(*args) in a worker process; raises what it raised, or WorkerLostError."""
        pool = self._executor()
        self._started += 1
        self._running += 1
        try:
            return await asyncio.wrap_future(pool.submit(function, *args))
        except BrokenProcessPool as exc:
            if self._pool is pool:
                self._broken += 1
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerLostError(f"a worker process died while running the task ({exc})") from None
        finally:
            self._running -= 1

    def close(self) -> None:
        """Stop the workers without waiting for running tasks (their results no longer matter:
        another attempt re-runs them); never blocks node shutdown on a worker.

        The workers are killed first and `shutdown` runs in a daemon thread: on Python 3.11
        `ProcessPoolExecutor.shutdown` can block forever on its full wake-up pipe (CPython
        gh-105829), and a node that does not stop on SIGTERM is worse than an untidy pool."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for pid in list(getattr(pool, "_processes", None) or {}):   # pids; private, read defensively
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        threading.Thread(target=pool.shutdown, kwargs={"wait": False, "cancel_futures": True},
                         name="worker-pool-shutdown", daemon=True).start()


def _ready() -> bool:
    return True
