"""The worker pool (node/compute/pool.py): real forkserver workers behind a ProcessPoolExecutor, driven from asyncio.

The functions run in the workers are from the standard library (importable there by name).
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from shoal.node.compute.pool import WorkerLostError, WorkerPool


def test_pool_runs_tasks_raises_their_errors_and_bounds_its_workers() -> None:
    """A result comes back; an exception raised in the worker is raised here; more tasks than
    workers queue (never more processes than `workers`); statistics count them."""
    async def scenario() -> None:
        pool = WorkerPool(2)
        try:
            await pool.warm()
            warmed = pool.statistics().started
            assert await pool.run(int, "42") == 42
            with pytest.raises(ValueError, match="invalid literal"):
                await pool.run(int, "not a number")
            pids = await asyncio.gather(*(pool.run(os.getpid) for _ in range(6)))
            assert len(set(pids)) <= 2 and os.getpid() not in pids
            stats = pool.statistics()
            assert stats.workers == 2 and stats.started - warmed == 8 and stats.running == 0 and stats.broken == 0
        finally:
            pool.close()
    asyncio.run(scenario())


def test_a_dead_worker_fails_its_task_and_the_pool_is_replaced() -> None:
    """A worker that dies mid-task (os._exit here; the OOM killer in life) fails that task with
    WorkerLostError (with ProcessPoolExecutor, so would every task running beside it: the whole
    pool breaks); the next task runs on a new worker of a new pool."""
    async def scenario() -> None:
        pool = WorkerPool(1)
        try:
            before = await pool.run(os.getpid)
            with pytest.raises(WorkerLostError, match="died while running the task"):
                await pool.run(os._exit, 3)
            after = await pool.run(os.getpid)
            assert after != before and pool.statistics().broken == 1
        finally:
            pool.close()
    asyncio.run(scenario())


def test_a_cancelled_task_never_hands_its_answer_to_the_next() -> None:
    """A task cancelled while its worker runs it (its job ended): the worker finishes that call
    before it takes the next task, so the next task gets its own answer, not the stale one."""
    async def scenario() -> None:
        pool = WorkerPool(1)
        try:
            await pool.warm()
            running = asyncio.ensure_future(pool.run(time.sleep, 0.2))
            await asyncio.sleep(0.05)   # let the worker start sleeping (a time offset, not a wait for a state)
            running.cancel()
            assert await pool.run(int, "7") == 7
            assert pool.statistics().broken == 0
        finally:
            pool.close()
        with pytest.raises(WorkerLostError, match="closed"):   # a stopping node starts no new workers
            await pool.run(int, "1")
    asyncio.run(scenario())
