"""A node's group commit of finished attempts (node/compute/completions.py), with a fake proposer.

The batcher decides when to propose and what goes in one complete_tasks command; the state
machine's side (each completion decided on its own) is in test_fsm_jobs.py. No Raft here: the
fake proposer applies the command to a real state with fsm.apply, so results are the real ones.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.node.compute.completions import CompletionBatcher
from shoal.node.errors import NoControllerError
from shoal.node.metadata import commands, fsm
from test_fsm_jobs import submitted


class FakeLog:
    """Applies proposals to a state; `fail` makes every proposal raise (no controller)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.proposed: list[dict[str, Any]] = []
        self.fail = False

    async def propose(self, command: bytes, *, deadline_s: float) -> dict[str, Any]:
        self.proposed.append(commands.decode_command(command))
        if self.fail:
            raise NoControllerError("no controller")
        self.state, result = fsm.apply(self.state, command)
        return result


def test_siblings_computing_here_commit_in_one_command() -> None:
    """Two attempts of a job computing on this node: the first to finish waits for the second,
    then both go in one complete_tasks and each gets its own result; the job is done."""
    async def scenario() -> None:
        log = FakeLog(submitted())
        batcher = CompletionBatcher(log, commit_timeout_s=5.0, linger_s=30.0)
        batcher.computing("j1")
        batcher.computing("j1")
        first = asyncio.ensure_future(batcher.commit(("j1", 0, 1, b"p0", 3)))
        await asyncio.sleep(0)   # one loop turn: let the first register (not a wait for a state)
        assert not first.done() and log.proposed == []
        second = await batcher.commit(("j1", 1, 1, b"p1", 4))
        assert (await first)["discarded"] is False and second["state"] == "done"
        assert [p["op"] for p in log.proposed] == ["complete_tasks"] and batcher.commands == 1
        assert len(log.proposed[0]["completions"]) == 2
    asyncio.run(scenario())


def test_a_straggling_sibling_holds_a_completion_at_most_linger_s() -> None:
    """The sibling never finishes: the waiting completion is proposed alone after linger_s."""
    async def scenario() -> None:
        log = FakeLog(submitted())
        batcher = CompletionBatcher(log, commit_timeout_s=5.0, linger_s=0.02)
        batcher.computing("j1")
        batcher.computing("j1")
        loop = asyncio.get_running_loop()
        started_s = loop.time()
        result = await batcher.commit(("j1", 0, 1, b"p0", 3))
        assert result["ok"] and loop.time() - started_s >= 0.02
        assert len(log.proposed) == 1 and len(log.proposed[0]["completions"]) == 1
        batcher.close()
    asyncio.run(scenario())


def test_a_sibling_that_ends_without_a_result_releases_the_wait() -> None:
    """A sibling that failed or was skipped (done_computing) lets the waiting completion go at once;
    attempts of another job computing here do not hold it."""
    async def scenario() -> None:
        log = FakeLog(submitted())
        batcher = CompletionBatcher(log, commit_timeout_s=5.0, linger_s=30.0)
        batcher.computing("j1")
        batcher.computing("j1")
        batcher.computing("other-job")
        waiting = asyncio.ensure_future(batcher.commit(("j1", 0, 1, b"p0", 3)))
        await asyncio.sleep(0)
        assert not waiting.done()
        batcher.done_computing("j1")
        assert (await waiting)["ok"] and len(log.proposed) == 1
    asyncio.run(scenario())


def test_no_answer_from_the_log_reaches_every_attempt_of_the_batch() -> None:
    """A batch whose proposal gets no answer raises NodeError to each of its attempts (they run again)."""
    async def scenario() -> None:
        log = FakeLog(submitted())
        log.fail = True
        batcher = CompletionBatcher(log, commit_timeout_s=5.0, linger_s=30.0)
        batcher.computing("j1")
        batcher.computing("j1")
        first = asyncio.ensure_future(batcher.commit(("j1", 0, 1, b"p0", 3)))
        await asyncio.sleep(0)
        with pytest.raises(NoControllerError):
            await batcher.commit(("j1", 1, 1, b"p1", 4))
        with pytest.raises(NoControllerError):
            await first
        assert len(log.proposed) == 1
    asyncio.run(scenario())


def test_batches_respect_the_command_limits() -> None:
    """More than COMPLETIONS_MAX completions, or results past BATCH_RESULT_BYTES_MAX, split into
    several commands, each under the log's command size limit."""
    async def scenario() -> None:
        state = submitted(attempts=[])
        log = FakeLog(state)
        batcher = CompletionBatcher(log, commit_timeout_s=5.0, linger_s=30.0)
        big = b"x" * (700 * 1024)
        items = [("j1", 0, 1, big, 1), ("j1", 1, 1, big, 1)]
        items += [("gone", i, 1, b"", 0) for i in range(commands.COMPLETIONS_MAX + 1)]
        for item in items:
            batcher.computing(item[0])
        results = await asyncio.gather(*(batcher.commit(item) for item in items))
        assert len(results) == len(items) and results[-1]["error"] == commands.UNKNOWN_JOB
        assert sorted(len(p["completions"]) for p in log.proposed) == [1, 1, 1, commands.COMPLETIONS_MAX]
        assert all(len(commands.complete_tasks([tuple(c) for c in p["completions"]], 1.0)) <= commands.COMMAND_BYTES_MAX
                   for p in log.proposed)
    asyncio.run(scenario())
