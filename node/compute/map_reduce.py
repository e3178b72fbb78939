"""Map-reduce jobs with user code (cloudpickled Python functions).

Spec: {"mapper": cloudpickle bytes of mapper(key: str (bytes when not UTF-8), value) -> iterable of (out_key, out_value),
       "reducer": cloudpickle bytes of reducer(out_key, values: list) -> value,
       "output": name of the dataset the results are written into}

- A map task runs the mapper over one shard (one read transaction) and groups its output
  by key; that grouping is its partial result (bounded like any task result).
- The reduce task (the job's last task, placed on a metadata voter once every map task
  committed) runs the reducer per key over the winning map partials and the daemon
  writes (out_key, value) into the output dataset through the shards' primaries. Keys are
  the user's keys and write ids derive from the job id, so a re-run of the reduce writes
  the same records again (idempotent puts), never a second copy.
- User code runs only when the node was started with `user_code` (SubmitJob refuses
  otherwise), each task in its own fresh worker process under RLIMIT_CPU
  (`user_code_cpu_s`), RLIMIT_AS (`user_code_memory_bytes`) and a wall-time limit
  (`user_code_wall_s`, the process is killed past it), and in the sandbox of sandbox.py
  (no network, no node secrets; `user_code_sandbox`). A function that raises fails the
  job with its exception, naming the task.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import multiprocessing
import resource
import traceback
from typing import TYPE_CHECKING, Any

import msgpack

from shoal.client.wire.pb import data_pb2
from shoal.client.wire.routing import encode_key, shard_for_key
from shoal.node import errors
from shoal.node.compute import sandbox
from shoal.node.compute.orphans import watch_parent
from shoal.node.compute.values import record_key

if TYPE_CHECKING:
    from shoal.node.compute.pool import WorkerPool
    from shoal.node.config import NodeConfig
    from shoal.node.encryption import DatasetCipher
    from shoal.node.metadata.view import JobView, MetadataView
    from shoal.node.replication.peers import PeerClients

_unpackb = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)
OUTPUT_BATCH_RECORDS = 1000


class UserCodeError(Exception):
    """The user's function raised, or its process hit a limit."""


def check_spec(spec: object, view: MetadataView) -> None:
    """InvalidQueryError / UnknownDatasetError before the job is recorded."""
    if not isinstance(spec, dict) or not isinstance(spec.get("mapper"), bytes) \
            or not isinstance(spec.get("reducer"), bytes) or not isinstance(spec.get("output"), str):
        raise errors.InvalidQueryError("a map_reduce spec is {mapper: bytes, reducer: bytes, output: str}")
    if view.dataset(spec["output"]) is None:
        raise errors.UnknownDatasetError(f"unknown output dataset {spec['output'][:140]!r}: create it first")


# ---- in the worker process ----

_sandbox_failure: str | None = None   # why this worker could not enter its sandbox (its tasks fail with it)


def _limit(cpu_s: int, memory_bytes: int, hidden: list[str] | None) -> None:
    global _sandbox_failure
    if hidden is not None:   # first, while single-threaded (a user namespace needs it)
        try:
            sandbox.enter(hidden)
        except OSError as exc:
            _sandbox_failure = str(exc)
    watch_parent()   # ends with its forkserver, and so with the node (orphans.py)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _in_sandbox() -> None:
    if _sandbox_failure is not None:
        raise UserCodeError(_sandbox_failure)


def _map_in_worker(path: str, mapper_bytes: bytes, result_bytes_max: int,
                   cipher: DatasetCipher | None = None) -> tuple[bytes, int]:
    _in_sandbox()
    import cloudpickle   # only user-code processes load it

    from shoal.node.compute.worker import scan_records
    mapper = cloudpickle.loads(mapper_bytes)
    grouped: dict[Any, list[Any]] = {}
    records = scan_records(path, cipher)
    for key, raw in records:
        for out_key, out_value in _user("mapper", mapper, record_key(key), _unpackb(raw)):
            grouped.setdefault(out_key, []).append(out_value)
    packed: bytes = msgpack.packb([[k, v] for k, v in grouped.items()], use_bin_type=True)
    if len(packed) > result_bytes_max:
        raise UserCodeError(f"the map output of this shard is {len(packed)} bytes, over task_result_bytes_max = "
                            f"{result_bytes_max}: emit fewer or smaller values per shard")
    return packed, len(records)


def _reduce_in_worker(partials: list[bytes], reducer_bytes: bytes) -> list[tuple[bytes, bytes]]:
    _in_sandbox()
    import cloudpickle

    reducer = cloudpickle.loads(reducer_bytes)
    grouped: dict[Any, list[Any]] = {}
    for partial in partials:
        for out_key, values in _unpackb(partial):
            grouped.setdefault(out_key, []).extend(values)
    return [(encode_key(k if isinstance(k, (str, bytes)) else str(k)),
             msgpack.packb(_user("reducer", reducer, k, values), use_bin_type=True))
            for k, values in sorted(grouped.items(), key=lambda item: str(item[0]))]


def _user(name: str, function: Any, *args: Any) -> Any:
    try:
        result = function(*args)
        return list(result) if name == "mapper" else result
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise UserCodeError(f"{name} raised {last}") from None


async def _isolated(config: NodeConfig, function: Any, *args: Any) -> Any:
    """function(*args) in a fresh worker process under the user-code limits."""
    context = multiprocessing.get_context("forkserver")
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_limit,
        initargs=(config.user_code_cpu_s, config.user_code_memory_bytes,
                  sandbox.secrets_of(config.data_dir, config.encryption_key_file)
                  if config.user_code_sandbox else None))
    try:
        async with asyncio.timeout(config.user_code_wall_s):   # not wait_for: 3.11's can drop a cancel
            return await asyncio.wrap_future(pool.submit(function, *args))
    except TimeoutError:
        raise UserCodeError(f"still running after user_code_wall_s = {config.user_code_wall_s} s: killed") from None
    except concurrent.futures.process.BrokenProcessPool:
        raise UserCodeError(f"its process died (user_code_cpu_s = {config.user_code_cpu_s}, "
                            f"user_code_memory_bytes = {config.user_code_memory_bytes})") from None
    except MemoryError:
        raise UserCodeError(f"out of memory (user_code_memory_bytes = {config.user_code_memory_bytes})") from None
    except UserCodeError:
        raise
    except Exception as exc:   # e.g. the functions do not unpickle here (a module the node lacks)
        raise UserCodeError(f"{type(exc).__name__}: {exc}") from None
    finally:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


# ---- in the daemon ----

async def map_shard(pool: WorkerPool, job: JobView, path: str, config: NodeConfig,
                    cipher: DatasetCipher | None = None) -> tuple[bytes, int]:
    """Map one shard in a user-code process; an encrypted dataset's gets its cipher (that dataset's
    key only: the node's key file stays hidden in the sandbox)."""
    spec = _unpackb(job.spec)
    result: tuple[bytes, int] = await _isolated(config, _map_in_worker, path, spec["mapper"],
                                                config.task_result_bytes_max, cipher)
    return result


async def reduce(pool: WorkerPool, output: OutputWriter, job: JobView, config: NodeConfig) -> tuple[bytes, int]:
    spec = _unpackb(job.spec)
    partials = [task.result for task in job.tasks[:-1]]
    pairs = await _isolated(config, _reduce_in_worker, partials, spec["reducer"])
    written = await output.write(spec["output"], pairs, job.id)
    return msgpack.packb({"output": spec["output"], "records": written}, use_bin_type=True), written


def result_rows(job: JobView) -> tuple[list[str], list[dict[str, Any]]]:
    row = _unpackb(job.tasks[-1].result)
    return ["output", "records"], [row]


class OutputWriter:
    """Writes records into a dataset through its shards' primaries (PutRecords), retried
    with the same write id until the deadline: a job's output write is idempotent."""

    def __init__(self, peers: PeerClients, metadata_view: Any, config: NodeConfig) -> None:
        self.peers = peers
        self.view = metadata_view    # callable returning the current MetadataView
        self.config = config

    async def write(self, dataset_name: str, pairs: list[tuple[bytes, bytes]], job_id: str) -> int:
        view = self.view()
        dataset = view.dataset(dataset_name)
        if dataset is None:
            raise UserCodeError(f"output dataset {dataset_name} no longer exists")
        by_shard: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in pairs:
            by_shard.setdefault(shard_for_key(key, dataset.shards), []).append((key, value))
        client_id = hashlib.sha256(f"job:{job_id}".encode()).digest()[:16]
        for index, records in sorted(by_shard.items()):
            for start in range(0, len(records), OUTPUT_BATCH_RECORDS):
                batch = records[start:start + OUTPUT_BATCH_RECORDS]
                await self._put(dataset_name, index, batch, client_id, index * 1_000_000 + start + 1)
        return len(pairs)

    async def _put(self, name: str, index: int, batch: list[tuple[bytes, bytes]], client_id: bytes,
                   seq: int) -> None:
        loop = asyncio.get_running_loop()
        give_up_s = loop.time() + self.config.task_commit_timeout_s
        while True:
            shard = self.view().shard(name, index)
            node = self.view().node(shard.primary) if shard is not None else None
            if shard is None or node is None:
                raise UserCodeError(f"output dataset {name} shard {index} is gone")
            request = data_pb2.PutBatch(
                target=data_pb2.RecordTarget(dataset=name, shard=index, epoch=shard.epoch, dataset_id=shard.dataset_id),
                write_id=data_pb2.WriteId(client_id=client_id, request_seq=seq),
                keys=[k for k, _ in batch], values=[v for _, v in batch])
            try:
                await self.peers.data(node.address).PutRecords(request, timeout=self.config.replicate_timeout_s * 2)
                return
            except Exception as exc:   # grpc.aio.AioRpcError: not primary, no lease, unavailable: retry
                if loop.time() > give_up_s:
                    raise UserCodeError(f"could not write the output into {name} shard {index}: {exc}") from None
                await asyncio.sleep(self.config.peer_retry_s)   # pacing between retries, not a wait for a state
