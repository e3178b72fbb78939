"""Job: a handle on a compute job recorded in the cluster's Raft log.

A job outlives the process that submitted it: `Client.job(job_id)` reattaches from any
process. `wait` long-polls the node (GetJob with wait_s), so a finished job is noticed
at once without a busy loop; `result` gets the rows merged by a metadata voter, inside
the long poll's answer when they are small (64 KiB), else streamed (GetJobResult).

Job calls go to the controller first, then the other nodes (Transport.candidates);
a data-only node keeps no results and answers NOT_PRIMARY, so the next one is asked.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import msgpack

from shoal.client._arguments import check_optional_seconds
from shoal.client._channel import rpc_errors, unreachable
from shoal.client._errors import JobFailedError, JobTimeoutError, NoControllerError, NotPrimaryError, ShoalError
from shoal.client.wire.pb import jobs_pb2

if TYPE_CHECKING:
    from shoal.client._client import Client

WAIT_POLL_S = 5.0    # one GetJob long poll; the node caps it too (job_wait_s_max)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskProgress:
    index: int                # the shard (a map-reduce job's last task is its reduce)
    done: bool
    nodes: tuple[str, ...]    # the node of each attempt, in order
    node: str                 # the node whose attempt committed first
    records: int


@dataclasses.dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: str
    dataset: str
    kind: str                 # query | map_reduce
    state: str                # running | done | failed | cancelled
    tasks_total: int
    tasks_done: int
    records_scanned: int      # by the tasks done so far
    elapsed_s: float          # from submission to now (running) or to the end
    attempts: int             # attempts started, re-runs and speculative copies included
    error: str = ""
    error_code: str = ""
    tasks: tuple[TaskProgress, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def records_per_s(self) -> float:
        return self.records_scanned / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @classmethod
    def from_message(cls, message: jobs_pb2.JobStatus) -> JobProgress:
        end_s = message.finished_at_s or time.time()
        return cls(message.job_id, message.dataset, message.kind, message.state, message.tasks_total,
                   message.tasks_done, message.records_scanned, max(0.0, end_s - message.submitted_at_s),
                   message.attempts, message.error, message.error_code,
                   tuple(TaskProgress(t.index, t.done, tuple(t.nodes), t.node, t.records) for t in message.tasks))


class Job:
    def __init__(self, client: Client, job_id: str, status: jobs_pb2.JobStatus | None = None) -> None:
        self._client = client
        self.id = job_id
        self._last = status
        self._rows: list[dict[str, Any]] | None = None
        self.columns: list[str] = []

    def __repr__(self) -> str:
        state = self._last.state if self._last is not None else "?"
        return f"Job({self.id!r}, {state})"

    def progress(self) -> JobProgress:
        """The job's state now (tasks done, records scanned, rate)."""
        return self._status(wait_s=0.0)

    def wait(self, timeout: float | None = None) -> JobProgress:
        """Block until the job finished or `timeout` seconds passed; the last progress either way.

        timeout: None = until it finishes, 0 = look once, else seconds (at most SECONDS_MAX)."""
        return self._wait(check_timeout(timeout), with_rows=False)

    def _wait(self, timeout: float | None, with_rows: bool) -> JobProgress:
        """Long polls from the first call on (a small job is usually done within the first)."""
        give_up_s = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining_s = WAIT_POLL_S if give_up_s is None else min(WAIT_POLL_S, give_up_s - time.monotonic())
            progress = self._status(wait_s=max(0.0, remaining_s), with_rows=with_rows)
            if progress.finished or remaining_s <= 0:
                return progress

    def result(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait (timeout as in `wait`), then the result rows. JobFailedError (the message names
        shard and node) if the job failed or was cancelled; JobTimeoutError (a
        DeadlineExceededError, and a built-in TimeoutError too) if it still runs after `timeout`
        seconds: the job goes on, `client.job(error.job_id)` reattaches to it."""
        timeout = check_timeout(timeout)
        if self._rows is not None:
            return self._rows
        progress = self._wait(timeout, with_rows=True)
        if not progress.finished:
            raise JobTimeoutError(f"job {self.id} still running after {timeout:g} s ({progress.tasks_done}/"
                                  f"{progress.tasks_total} tasks done); it goes on: reattach with "
                                  f"client.job({self.id!r})", job_id=self.id, dataset=progress.dataset)
        if progress.state != "done":
            raise JobFailedError(progress.error or f"job {self.id} was {progress.state}", dataset=progress.dataset,
                                 code=progress.error_code or None)
        if self._last is not None and self._last.rows_included:     # small: it came with the status
            self.columns = list(self._last.columns)
            self._rows = msgpack.unpackb(self._last.rows, raw=False, strict_map_key=False)
        else:
            self._rows = self._client._job_call("fetch job result", lambda stub, timeout_s: self._fetch(stub, timeout_s))
        return self._rows

    def _fetch(self, stub: Any, timeout_s: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in stub.GetJobResult(jobs_pb2.JobRequest(job_id=self.id), timeout=timeout_s):
            if chunk.columns:
                self.columns = list(chunk.columns)
            rows.extend(msgpack.unpackb(chunk.rows, raw=False, strict_map_key=False))
        return rows

    def cancel(self) -> JobProgress:
        status = self._client._job_call("cancel job", lambda stub, timeout_s: stub.CancelJob(
            jobs_pb2.JobRequest(job_id=self.id), timeout=timeout_s))
        self._last = status
        return JobProgress.from_message(status)

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        import pandas
        rows = self.result()
        return pandas.DataFrame(rows, columns=self.columns or None)

    def to_arrow(self) -> Any:
        """The rows as a pyarrow Table (needs pyarrow)."""
        import pyarrow
        return pyarrow.Table.from_pylist(self.result())

    def _status(self, wait_s: float, with_rows: bool = False) -> JobProgress:
        request = jobs_pb2.JobRequest(job_id=self.id, wait_s=wait_s, with_rows=with_rows)
        status = self._client._job_call("job status", lambda stub, timeout_s: stub.GetJob(
            request, timeout=timeout_s + wait_s), extra_s=wait_s)
        self._last = status
        return JobProgress.from_message(status)


def check_timeout(timeout: object) -> float | None:
    """A job wait's timeout: None (no limit) or seconds within [0, SECONDS_MAX]; else InvalidArgumentError."""
    return check_optional_seconds(timeout, "timeout", zero_ok=True)


def try_nodes(client: Client, what: str, call: Any, deadline_s: float) -> Any:
    """call(stub, timeout_s) on the controller, then the next node when one is unreachable,
    keeps no job results (data-only) or cannot reach the Raft leader."""
    transport = client._transport
    last: ShoalError | None = None
    tried: list[str] = []
    for address in transport.candidates():
        tried.append(address)
        try:
            with rpc_errors(what, node=address):
                return call(transport.jobs_stub(address), max(0.1, deadline_s - time.monotonic()))
        except ShoalError as exc:
            transport.note_failure(address, exc)
            moves_on = unreachable(exc) or isinstance(exc, (NotPrimaryError, NoControllerError))   # cut off: ask another
            if not moves_on or time.monotonic() >= deadline_s:
                raise
            last = exc
    raise transport.unreachable_error(tried, last) from last
