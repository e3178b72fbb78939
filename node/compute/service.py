"""JobService: the `Jobs` gRPC service (proto/shoal/v1/jobs.proto).

SubmitJob checks everything that can be checked before a task runs (the dataset, the
expressions and the spec's shape, the user-code policy), places attempt 1 of each task
(controller/jobs.first_attempts) and records the job in Raft. GetJob answers from this
node's copy of the job table (read through the log when it says "running", so a job
that finished is never reported running by a node that lags), optionally waiting for the job to finish (long poll) and
carrying a done job's rows when they are small (ROWS_INLINE_BYTES_MAX: a small job's
result in one round trip fewer); GetJobResult merges the committed partial results (the first attempt of each task to
commit) in a thread, once per job, and streams rows in chunks bounded by bytes.

Only metadata voters keep task results (data-only nodes receive the job table without
them), so GetJobResult on a data-only node answers NOT_PRIMARY: ask a voter.
"""
from __future__ import annotations

import collections
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgpack

from shoal.client.wire.pb import jobs_pb2, jobs_pb2_grpc
from shoal.node import errors
from shoal.node.compute import EvaluationError, QueryError, compile_query, map_reduce, validate_spec
from shoal.node.compute.schema import Schema
from shoal.node.compute.typecheck import schema_types
from shoal.node.controller.jobs import first_attempts, running_attempts
from shoal.node.metadata import commands
from shoal.node.server import command_for, propose_or_raise, result_error

if TYPE_CHECKING:
    from shoal.node.changes import ChangeSignal
    from shoal.node.metadata.view import DatasetView, JobView
    from shoal.node.server import ServedNode

RESULT_CHUNK_BYTES = 2 * 1024 * 1024
ROWS_INLINE_BYTES_MAX = 64 * 1024   # a done job's rows ride in GetJob's answer up to this (aggregates do)
MERGED_CACHE_JOBS = 8
MERGE_INLINE_BYTES_MAX = 16 * 1024  # partials up to this merge on the event loop (~1 ms), larger ones in a thread


class JobService(jobs_pb2_grpc.JobsServicer):
    def __init__(self, node: ServedNode, changes: ChangeSignal) -> None:
        self.node = node
        self.config = node.config
        self.changes = changes
        self._merged: collections.OrderedDict[str, tuple[list[str], list[dict[str, Any]]]] = \
            collections.OrderedDict()

    async def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: Any) -> jobs_pb2.JobStatus:
        view = self.node.metadata.view
        dataset = view.dataset(request.dataset)
        if dataset is None:
            raise errors.UnknownDatasetError(f"unknown dataset {request.dataset[:140]!r}")
        job_id = request.job_id or uuid.uuid4().hex
        self._check_spec(request, dataset)
        attempts = first_attempts(view, dataset, running_attempts(view))
        command = command_for(commands.submit_job, job_id, dataset.name, request.kind, request.spec, time.time(),
                              attempts)
        await propose_or_raise(self.node.context, command, self.config.propose_timeout_s)
        job = await self._job(job_id)
        return _status(job)

    def _check_spec(self, request: jobs_pb2.SubmitJobRequest, dataset: DatasetView) -> None:
        try:
            spec = msgpack.unpackb(request.spec, raw=False)
        except Exception as exc:   # msgpack raises several types
            raise errors.InvalidQueryError(f"job spec is not msgpack: {exc}") from None
        if request.kind == "query":
            try:
                schema = Schema.from_json(dataset.schema) if dataset.schema else None
                validate_spec(spec, schema.names if schema else None, schema_types(schema) if schema else None)
            except QueryError as exc:
                raise errors.InvalidQueryError(f"dataset {dataset.name}: {exc}") from None
        elif request.kind == "map_reduce":
            if not self.config.user_code:
                raise errors.UserCodeDisabledError(
                    "map_reduce runs your Python functions, and this cluster does not accept user code: start "
                    "its nodes with --user-code (SHOAL_USER_CODE=1)")
            map_reduce.check_spec(spec, self.node.metadata.view)
        else:
            raise errors.InvalidQueryError(f"job kind must be query or map_reduce, got {request.kind[:40]!r}")

    async def _job(self, job_id: str) -> JobView:
        job = self.node.metadata.view.job(job_id)
        if job is None:   # submitted through another node, and not applied here yet?
            await self._read_through_log(f"job {job_id[:80]!r}")
            job = self.node.metadata.view.job(job_id)
        if job is None:
            raise errors.UnknownJobError(f"unknown job {job_id[:80]!r} (finished jobs are kept only while they "
                                         "are among the newest)")
        return job

    async def _read_through_log(self, what: str) -> None:
        """A Raft barrier; NoControllerError (the client asks another node) when this node cannot
        reach the leader, whatever the barrier's own error (no leader, or an unknown outcome)."""
        try:
            await self.node.metadata.barrier(self.config.barrier_timeout_s)
        except (errors.NoControllerError, errors.UnknownOutcomeError):
            raise errors.NoControllerError(f"node {self.config.node_id} cannot reach the Raft leader to confirm "
                                           f"{what}: ask another node") from None

    async def GetJob(self, request: jobs_pb2.JobRequest, context: Any) -> jobs_pb2.JobStatus:
        job = await self._job(request.job_id)
        give_up_s = time.monotonic() + min(max(request.wait_s, 0.0), self.config.job_wait_s_max)
        while job.running and (remaining_s := give_up_s - time.monotonic()) > 0:
            await self.changes.wait(remaining_s)
            job = await self._job(request.job_id)
        if job.running:
            # still running here (the wait ran out, or none was asked): this node's copy may lag
            # (a follower behind, one cut off from the leader would say "running" forever), so
            # read through the log once (NoControllerError there sends the client elsewhere)
            await self._read_through_log(f"the state of job {job.id}")
            job = await self._job(request.job_id)
        status = _status(job)
        if request.with_rows and job.state == "done" and self._keeps_results():
            try:
                columns, rows = await self._merged_rows(job)
            except errors.JobFailedError:   # the status still answers; GetJobResult gives the error
                return status
            packed = msgpack.packb(rows, use_bin_type=True)
            if len(packed) <= ROWS_INLINE_BYTES_MAX:     # else the client streams them (GetJobResult)
                status.rows_included, status.rows = True, packed
                status.columns.extend(columns)
        return status

    async def CancelJob(self, request: jobs_pb2.JobRequest, context: Any) -> jobs_pb2.JobStatus:
        await self._job(request.job_id)
        await propose_or_raise(self.node.context, commands.cancel_job(request.job_id, time.time()),
                               self.config.propose_timeout_s)
        return _status(await self._job(request.job_id))

    async def ListJobs(self, request: Any, context: Any) -> jobs_pb2.ListJobsResponse:
        return jobs_pb2.ListJobsResponse(jobs=[_status(j) for j in self.node.metadata.view.jobs.values()])

    async def GetJobResult(self, request: jobs_pb2.JobRequest, context: Any) -> AsyncIterator[jobs_pb2.JobResultChunk]:
        job = await self._job(request.job_id)
        if job.state == "failed":   # LIMIT_EXCEEDED (a partial or the job's results over their cap) is RESOURCE_EXHAUSTED
            raise result_error({"error": job.error_code, "message": job.error}) if job.error_code == "LIMIT_EXCEEDED" \
                else errors.JobFailedError(job.error)
        if job.state != "done":
            raise errors.InvalidRequestError(f"job {job.id} is {job.state}: no result")
        if not self._keeps_results():
            raise errors.NotPrimaryError(f"node {self.config.node_id} is data-only and keeps no job results: "
                                         "ask a metadata voter")
        columns, rows = await self._merged_rows(job)
        chunk: list[dict[str, Any]] = []
        size = 0
        first = True
        for row in rows:
            packed = len(msgpack.packb(row, use_bin_type=True))
            if chunk and size + packed > RESULT_CHUNK_BYTES:
                yield _chunk(chunk, columns if first else [])
                chunk, size, first = [], 0, False
            chunk.append(row)
            size += packed
        yield _chunk(chunk, columns if first else [])

    def _keeps_results(self) -> bool:
        return bool(self.config.raft or self.config.standalone)

    async def _merged_rows(self, job: JobView) -> tuple[list[str], list[dict[str, Any]]]:
        cached = self._merged.get(job.id)
        if cached is None and sum(len(t.result) for t in job.tasks) <= MERGE_INLINE_BYTES_MAX:
            cached = self._merge(job)    # small: a thread hop (and its GIL wait) would cost more than the merge
        elif cached is None:
            cached = await self.node.context.run_blocking(self._merge, job)
        if job.id not in self._merged:
            self._merged[job.id] = cached
            while len(self._merged) > MERGED_CACHE_JOBS:
                self._merged.popitem(last=False)
        return cached

    def _merge(self, job: JobView) -> tuple[list[str], list[dict[str, Any]]]:
        if job.kind == "map_reduce":
            return map_reduce.result_rows(job)
        dataset = self.node.metadata.view.dataset(job.dataset)
        fields = Schema.from_json(dataset.schema).names if dataset is not None and dataset.schema else None
        compiled = compile_query(msgpack.unpackb(job.spec, raw=False), fields)
        partials = [msgpack.unpackb(t.result, raw=False, strict_map_key=False) for t in job.tasks]
        try:
            return compiled.columns, compiled.merge(partials)
        except EvaluationError as exc:   # every task succeeded, but the merged value cannot be sent (a huge sum)
            raise errors.JobFailedError(f"job {job.id} (dataset {job.dataset}): {exc}") from None


def _chunk(rows: list[dict[str, Any]], columns: list[str]) -> jobs_pb2.JobResultChunk:
    return jobs_pb2.JobResultChunk(rows=msgpack.packb(rows, use_bin_type=True), columns=columns)


def _status(job: JobView) -> jobs_pb2.JobStatus:
    return jobs_pb2.JobStatus(
        job_id=job.id, dataset=job.dataset, kind=job.kind, state=job.state, error_code=job.error_code,
        error=job.error, tasks_total=len(job.tasks), tasks_done=job.tasks_done, records_scanned=job.records_scanned,
        submitted_at_s=job.submitted_at_s, finished_at_s=job.finished_at_s,
        attempts=sum(len(t.attempts) for t in job.tasks),
        tasks=[jobs_pb2.TaskStatus(index=t.index, done=bool(t.done), nodes=t.attempt_nodes(), node=t.node,
                                   records=t.records) for t in job.tasks])
