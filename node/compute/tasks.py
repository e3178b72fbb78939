"""TaskRunner: runs the task attempts the metadata assigns to this node, and commits them.

A reconciler over the job table (DESIGN.md section 5): on every metadata change it
starts each attempt assigned to this node that is not running here yet, runs it in the
worker pool, and commits the outcome through Raft: its completion with the attempt
number (the first attempt of a task to commit wins; a loser is told `discarded`), in one
`complete_tasks` command with the attempts of its job that finish with it here
(completions.py: one Raft commit per node and job instead of one per task), or
`fail_job` naming the shard, the node and the cause when the task itself is wrong (a
type error in a record, a result over the limit, a worker that died). A replica this
node no longer holds is skipped: the controller re-runs the task elsewhere.

Attempts survive nothing: after a restart the node starts afresh whatever the table
still assigns to it, which is safe because a task only reads.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from shoal.node.compute import EvaluationError, QueryError, map_reduce
from shoal.node.compute.completions import Completion, CompletionBatcher
from shoal.node.compute.pool import WorkerLostError, WorkerPool
from shoal.node.compute.schema import Schema
from shoal.node.compute.worker import ResultTooLargeError, run_query
from shoal.node.encryption import NodeKey
from shoal.node.errors import EncryptionKeyError, NodeError
from shoal.node.log_labels import labelled
from shoal.node.metadata import commands

if TYPE_CHECKING:
    import pathlib

    from shoal.node.config import NodeConfig
    from shoal.node.encryption import DatasetCipher
    from shoal.node.metadata import MetadataStore
    from shoal.node.metadata.view import JobView, MetadataView

logger = logging.getLogger(__name__)

AttemptKey = tuple[str, int, int]   # (job id, task, attempt)


class ReplicaPaths(Protocol):
    def local_path(self, dataset_id: str, index: int) -> pathlib.Path | None: ...


class Proposer(Protocol):
    async def propose(self, command: bytes, *, deadline_s: float) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class TaskStatistics:
    running: int          # attempts running on this node now
    completed: int        # attempts this node committed first
    discarded: int        # attempts that finished after another attempt of the task had won
    failed: int           # attempts that failed their job
    skipped: int = 0      # attempts not run: no local replica of their shard (the controller re-runs them)
    uncommitted: int = 0  # attempts whose outcome got no answer from the log (run again at the next reconcile)
    refused: int = 0      # outcomes the log refused (e.g. the job had ended)
    completion_commands: int = 0   # complete_tasks commands proposed (each carries the completions of one batch)


class TaskRunner:
    def __init__(self, config: NodeConfig, metadata: MetadataStore, replicas: ReplicaPaths, pool: WorkerPool,
                 proposer: Proposer, output: map_reduce.OutputWriter, keys: NodeKey | None = None) -> None:
        self.config = config
        self.metadata = metadata
        self.replicas = replicas
        self.pool = pool
        self.proposer = proposer
        self.output = output
        self.keys = keys or NodeKey(config.node_id, None)   # opens an encrypted dataset's values (node/encryption.py)
        self._completions = CompletionBatcher(proposer, config.task_commit_timeout_s)
        self._running: dict[AttemptKey, asyncio.Task[None]] = {}
        self._finished: set[AttemptKey] = set()
        self._completed = self._discarded = self._failed = 0
        self._skipped = self._uncommitted = self._refused = 0
        self._closed = False

    def statistics(self) -> TaskStatistics:
        return TaskStatistics(len(self._running), self._completed, self._discarded, self._failed,
                              self._skipped, self._uncommitted, self._refused, self._completions.commands)

    def close(self) -> None:
        """Stop every attempt (node shutdown): first, so no task keeps proposing into a stopping
        Raft store and holds the node's exit (another attempt re-runs it)."""
        self._closed = True
        for task in self._running.values():
            task.cancel()
        self._completions.close()

    def reconcile(self) -> None:
        """Start this node's new attempts; stop waiting for those of finished jobs."""
        if self._closed:
            return
        view = self.metadata.view
        wanted = set(self._assigned(view))
        for key, task in list(self._running.items()):
            if key not in wanted:
                task.cancel()   # the job finished or was cancelled: its result no longer matters
        for key in wanted - set(self._running) - self._finished:
            job = view.jobs[key[0]]
            self._running[key] = asyncio.get_running_loop().create_task(
                self._run(job, key), context=labelled(dataset=job.dataset, job=job.id, task=key[1], attempt=key[2]))
        self._finished &= wanted | {k for k in self._finished if k[0] in view.jobs}

    def _assigned(self, view: MetadataView) -> list[AttemptKey]:
        me = self.config.node_id
        return [(job.id, task.index, attempt) for job in view.jobs.values() if job.running
                for task in job.tasks if not task.done for attempt, node in task.attempts if node == me]

    async def _run(self, job: JobView, key: AttemptKey) -> None:
        decided = True
        self._completions.computing(job.id)
        held = True
        try:
            outcome = await self._attempt(job, key)
            held = False
            if isinstance(outcome, tuple):
                decided = await self._complete(outcome, key)
            else:
                self._completions.done_computing(job.id)
                if outcome is not None:
                    decided = await self._commit(outcome, key)
        except asyncio.CancelledError:
            raise
        except Exception:   # a bug here must not kill the node's task group
            logger.exception("task %s of job %s failed unexpectedly", key[1], key[0])
        finally:
            if held:
                self._completions.done_computing(job.id)
            self._running.pop(key, None)
            if decided:   # an attempt whose outcome never reached the log runs again at the next reconcile
                self._finished.add(key)

    async def _attempt(self, job: JobView, key: AttemptKey) -> Completion | bytes | None:
        """Run the attempt; its completion, or the fail_job command that reports it, or None."""
        _, index, attempt = key
        where = f"task {index} of job {job.id} (dataset {job.dataset}) on node {self.config.node_id}"
        try:
            if job.kind == "map_reduce" and index == len(job.tasks) - 1:
                result, records = await map_reduce.reduce(self.pool, self.output, job, self.config)
            else:
                path = self.replicas.local_path(job.dataset_id, index)
                if path is None:
                    self._skipped += 1
                    logger.info("%s: no local replica of shard %d; the controller re-runs it elsewhere", where, index)
                    return None
                cipher = self._cipher(job)
                if job.kind == "map_reduce":
                    result, records = await map_reduce.map_shard(self.pool, job, str(path), self.config, cipher)
                else:
                    result, records, _ = await self.pool.run(run_query, str(path), job.spec, self._fields(job),
                                                             self.config.task_result_bytes_max, cipher)
        except ResultTooLargeError as exc:
            return commands.fail_job(job.id, commands.LIMIT_EXCEEDED, f"{where}: {exc}", time.time())
        except (QueryError, EvaluationError, WorkerLostError, map_reduce.UserCodeError, EncryptionKeyError) as exc:
            return commands.fail_job(job.id, commands.JOB_FAILED, f"{where}: {exc}", time.time())
        except Exception as exc:   # lmdb errors, bugs: one clear failure instead of a job that never ends
            logger.exception("%s failed", where)
            return commands.fail_job(job.id, commands.JOB_FAILED, f"{where}: {type(exc).__name__}: {exc}", time.time())
        return job.id, index, attempt, result, records

    def _cipher(self, job: JobView) -> DatasetCipher | None:
        """The job's dataset's cipher when it is encrypted; EncryptionKeyError when this node lacks its key."""
        dataset = self.metadata.view.dataset(job.dataset)
        if dataset is None or dataset.id != job.dataset_id:
            return None
        return self.keys.cipher(dataset)

    def _fields(self, job: JobView) -> list[str] | None:
        dataset = self.metadata.view.dataset(job.dataset)
        if dataset is None or dataset.id != job.dataset_id or not dataset.schema:
            return None
        return Schema.from_json(dataset.schema).names

    async def _complete(self, completion: Completion, key: AttemptKey) -> bool:
        """Commit the completion (with what finishes beside it); False when no answer came: run it again."""
        return await self._decide(self._completions.commit(completion), key, failing=False)

    async def _commit(self, command: bytes, key: AttemptKey) -> bool:
        """Propose until decided or task_commit_timeout_s (the command is idempotent by request
        id); False when no answer came (no controller, unknown outcome): run it again."""
        return await self._decide(self.proposer.propose(command, deadline_s=self.config.task_commit_timeout_s), key,
                                  failing=commands.decode_command(command)["op"] == "fail_job")

    async def _decide(self, proposal: Awaitable[dict[str, Any]], key: AttemptKey, *, failing: bool) -> bool:
        """Await a task's commit and count its outcome; False when no answer came (run it again)."""
        try:
            result = await proposal
        except NodeError as exc:
            self._uncommitted += 1
            logger.warning("could not commit task %s of job %s (will run it again): %s", key[1], key[0], exc)
            return False
        if not result.get("ok"):
            self._refused += 1
            logger.info("task %s of job %s not committed: %s", key[1], key[0], result.get("message"))
        elif result.get("discarded") and result.get("winner") != key[2]:   # winner: a retry of a commit that won
            self._discarded += 1
        elif failing:
            self._failed += 1
        else:
            self._completed += 1
        return True
