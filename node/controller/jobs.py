"""Task placement for compute jobs: first attempts, re-runs and speculative copies. Planner.

- `first_attempts(view, job_dataset, load)`: where attempt 1 of each task runs, chosen by
  the node that accepts the job (so a job starts after one Raft commit): a node holding
  an in-sync replica of the shard on an alive node (locality: the data never moves),
  the least loaded first, the primary on a tie; the reduce task of a map-reduce job
  waits for its maps and is placed by the controller.
- `JobPlanner.plan(view, now_s)`: each controller round, for every running job:
  - a task none of whose attempts is on an alive in-sync holder (its node died, was
    declared dead after a pause or a partition, or lost the replica) gets a new attempt;
  - a task whose only live attempt runs more than `speculative_after_factor` times the
    median of its finished siblings (and at least `speculative_after_s_min`; with no
    sibling finished, 5x that) gets a speculative copy on another holder;
  - a shard with no in-sync replica on an alive node fails the job, naming the shard;
  - a job whose dataset was dropped fails, naming it.
  At most `tasks_per_node_max` unfinished attempts are placed on one node; the first
  attempt to commit wins (metadata/jobs.py), so extra copies never double-count.

Durations are this controller's own observations (monotonic, from when it first saw an
attempt until it saw the task done): a new controller starts observing afresh.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from typing import TYPE_CHECKING

from shoal.node.metadata import commands

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import DatasetView, JobView, MetadataView, TaskView

logger = logging.getLogger(__name__)

NO_SIBLING_FACTOR = 5.0


def running_attempts(view: MetadataView) -> Counter[str]:
    """Unfinished attempts per node over the running jobs."""
    load: Counter[str] = Counter()
    for job in view.jobs.values():
        if job.running:
            for task in job.tasks:
                if not task.done:
                    load.update(task.attempt_nodes())
    return load


def holders(view: MetadataView, dataset: DatasetView, index: int) -> list[str]:
    """Nodes that may run task `index`: in-sync holders on alive nodes (primary first);
    for the reduce task (index past the shards) every alive metadata voter (they keep results)."""
    shard = dataset.shard(index)
    if shard is None:
        return sorted(n.id for n in view.alive_nodes() if n.voter)
    return [node for node in shard.replicas if view.is_alive(node)]


def first_attempts(view: MetadataView, dataset: DatasetView, load: Counter[str]) -> list[tuple[int, str]]:
    """[(task, node)] for attempt 1 of every shard's task; `load` is updated as placed."""
    placed = []
    for index in range(dataset.shards):
        candidates = holders(view, dataset, index)
        if candidates:
            node = min(candidates, key=lambda n: (load[n], candidates.index(n)))
            load[node] += 1
            placed.append((index, node))
    return placed


class JobPlanner:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._seen_s: dict[tuple[str, int, int], float] = {}   # (job, task, attempt) -> first seen
        self._took_s: dict[str, list[float]] = {}               # job -> durations of its finished tasks

    def plan(self, view: MetadataView, now_s: float, *, controller_term: int) -> list[bytes]:
        planned: list[bytes] = []
        load = running_attempts(view)
        running = {job.id for job in view.jobs.values() if job.running}
        self._forget(running)
        for job in view.jobs.values():
            if job.running:
                planned.extend(self._plan_job(view, job, load, now_s, controller_term))
        return planned

    def _plan_job(self, view: MetadataView, job: JobView, load: Counter[str], now_s: float,
                  term: int) -> list[bytes]:
        dataset = view.dataset(job.dataset)
        if dataset is None or dataset.id != job.dataset_id:
            return [commands.fail_job(job.id, commands.UNKNOWN_DATASET,
                                      f"dataset {job.dataset} was dropped while job {job.id} ran", time.time(),
                                      request_id=f"fail:{job.id}:dropped")]
        self._observe(job, now_s)
        maps_done = all(t.done for t in job.tasks[:dataset.shards])
        attempts: list[tuple[int, int, str]] = []
        for task in job.tasks:
            if task.done or (task.index >= dataset.shards and not maps_done):
                continue
            candidates = holders(view, dataset, task.index)
            if not candidates:
                return [commands.fail_job(job.id, commands.JOB_FAILED, _no_replica(job, dataset, task), time.time(),
                                          request_id=f"fail:{job.id}:{task.index}:no-replica")]
            node = self._next_node(job, task, candidates, load, now_s)
            if node is not None:
                load[node] += 1
                attempts.append((task.index, len(task.attempts) + 1, node))
        if not attempts:
            return []
        return [commands.assign_tasks(job.id, attempts, controller_term=term)]

    def _next_node(self, job: JobView, task: TaskView, candidates: list[str], load: Counter[str],
                   now_s: float) -> str | None:
        """The node of a new attempt for this task, or None when none is needed (or possible now)."""
        live = [(number, node) for number, node in task.attempts if node in candidates]
        if len(live) >= 2:
            return None
        if live and not self._straggling(job, (job.id, task.index, live[0][0]), now_s):
            return None
        busy = {node for _, node in live}
        free = [n for n in candidates if n not in busy and load[n] < self.config.tasks_per_node_max]
        if not free:
            return None
        node = min(free, key=lambda n: (load[n], candidates.index(n)))
        reason = "speculative copy" if live else "re-run"
        logger.info("job %s: %s of task %d on %s", job.id, reason, task.index, node)
        return node

    def _straggling(self, job: JobView, key: tuple[str, int, int], now_s: float) -> bool:
        elapsed_s = now_s - self._seen_s.get(key, now_s)
        took = self._took_s.get(job.id)
        floor_s = self.config.speculative_after_s_min
        if not took:
            return elapsed_s > NO_SIBLING_FACTOR * floor_s
        return elapsed_s > max(floor_s, self.config.speculative_after_factor * statistics.median(took))

    def _observe(self, job: JobView, now_s: float) -> None:
        for task in job.tasks:
            for number, _ in task.attempts:
                key = (job.id, task.index, number)
                if key not in self._seen_s:
                    self._seen_s[key] = now_s
            done_key = (job.id, task.index, -1)
            if task.done and done_key not in self._seen_s:
                self._seen_s[done_key] = now_s
                started_s = self._seen_s.get((job.id, task.index, task.done), now_s)
                self._took_s.setdefault(job.id, []).append(now_s - started_s)

    def _forget(self, running: set[str]) -> None:
        self._seen_s = {k: v for k, v in self._seen_s.items() if k[0] in running}
        self._took_s = {k: v for k, v in self._took_s.items() if k in running}


def _no_replica(job: JobView, dataset: DatasetView, task: TaskView) -> str:
    shard = dataset.shard(task.index)
    replicas = ", ".join(shard.replicas) if shard is not None else "none"
    return (f"job {job.id}: shard {task.index} of dataset {dataset.name} has no in-sync replica on an alive node "
            f"(in-sync replicas: {replicas or 'none'})")

