"""CompletionBatcher: the attempts that finish together on this node, committed in one command.

A job's tasks on one node start together and finish within milliseconds of each other. One
`complete_tasks` command for all of them costs one Raft commit instead of one each: fewer
messages, journal syncs, applies, view rebuilds and reconciles on every node (DESIGN.md beside
this file, "Latency of a small job"). So a finished attempt waits while attempts of its job are
still computing here, at most LINGER_S: the job is done only once every task committed, so
the wait costs the job nothing unless a sibling here straggles, and LINGER_S bounds that.
Batches are not serialized: a batch proposes at once, even while another is in flight.

Exactness is unchanged: the state machine applies the completions one by one, each with the
first-attempt-wins rule (metadata/jobs.py). A batch whose outcome stays unknown (no answer
until the proposer's deadline) raises to every attempt in it, which then runs again; a later
commit of an attempt that had in fact won is answered `discarded` with `winner` = itself.
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.compute.tasks import Proposer

Completion = tuple[str, int, int, bytes, int]   # (job id, task, attempt, packed partial, records scanned)

LINGER_S = 0.05                     # the longest a finished attempt waits for its job's siblings on this node
BATCH_RESULT_BYTES_MAX = 1 << 20    # partial results in one command (a larger one travels alone)


class CompletionBatcher:
    def __init__(self, proposer: Proposer, commit_timeout_s: float, *, linger_s: float = LINGER_S) -> None:
        self.proposer = proposer
        self.commit_timeout_s = commit_timeout_s
        self.linger_s = linger_s
        self._computing: collections.Counter[str] = collections.Counter()   # job id -> its attempts computing here
        self._ready: list[tuple[Completion, asyncio.Future[dict[str, Any]]]] = []
        self._ready_since_s = 0.0           # loop time the oldest ready completion arrived
        self._timer: asyncio.TimerHandle | None = None
        self._proposals: set[asyncio.Task[None]] = set()
        self.commands = 0                   # complete_tasks commands proposed (statistics)

    def computing(self, job_id: str) -> None:
        """An attempt of `job_id` started computing here: its finished siblings wait for it."""
        self._computing[job_id] += 1

    def done_computing(self, job_id: str) -> None:
        """That attempt stopped without a completion (failed, skipped, cancelled)."""
        self._release(job_id)
        self._flush_if_due()

    async def commit(self, completion: Completion) -> dict[str, Any]:
        """Release the attempt's hold and commit its completion with whatever else is ready; the
        state machine's result for it. Raises NodeError when the log gave no answer in time."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        if not self._ready:
            self._ready_since_s = loop.time()
        self._ready.append((completion, future))
        self._release(completion[0])
        self._flush_if_due()
        try:
            return await future
        except asyncio.CancelledError:   # the job ended meanwhile: do not propose it any more
            self._ready = [entry for entry in self._ready if entry[1] is not future]
            raise

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._proposals:
            task.cancel()

    def _release(self, job_id: str) -> None:
        self._computing[job_id] -= 1
        if self._computing[job_id] <= 0:
            del self._computing[job_id]

    def _flush_if_due(self) -> None:
        if not self._ready:
            return
        loop = asyncio.get_running_loop()
        waiting = any(self._computing[job_id] for job_id in {c[0] for c, _ in self._ready})
        due_s = self._ready_since_s + self.linger_s
        if waiting and loop.time() < due_s:
            if self._timer is None:
                self._timer = loop.call_at(due_s, self._on_timer)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ready, self._ready = self._ready, []
        for batch in _batches(ready):
            task = loop.create_task(self._propose(batch))
            self._proposals.add(task)
            task.add_done_callback(self._proposals.discard)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush_if_due()

    async def _propose(self, batch: list[tuple[Completion, asyncio.Future[dict[str, Any]]]]) -> None:
        command = commands.complete_tasks([completion for completion, _ in batch], time.time())
        self.commands += 1
        try:
            result = await self.proposer.propose(command, deadline_s=self.commit_timeout_s)
        except Exception as exc:   # NodeError (no answer) or a bug: every attempt in the batch hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        results = result.get("results") if result.get("ok") else None
        for index, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(results[index] if results is not None and index < len(results) else result)


def _batches(ready: list[tuple[Completion, asyncio.Future[dict[str, Any]]]]) \
        -> list[list[tuple[Completion, asyncio.Future[dict[str, Any]]]]]:
    """Split into commands of at most COMPLETIONS_MAX completions and BATCH_RESULT_BYTES_MAX of results."""
    batches: list[list[tuple[Completion, asyncio.Future[dict[str, Any]]]]] = []
    size = 0
    for entry in ready:
        result_bytes = len(entry[0][3])
        if not batches or len(batches[-1]) >= commands.COMPLETIONS_MAX or size + result_bytes > BATCH_RESULT_BYTES_MAX:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += result_bytes
    return batches
