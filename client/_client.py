"""Client: the synchronous Python API of Shoal.

Every call has one overall deadline (`timeout_s`) and runs in a retry loop driven by the
error flags: `refresh_routing` (or a node that does not answer: it may have been
replaced) reloads the shard map; `retriable` backs off (20 ms, doubling, capped at
500 ms) and tries again, with the same write id for writes, so a write the node already
applied is not applied twice. One attempt gets at most a quarter of the deadline, so a
paused node cannot eat it all. A node that did not answer an attempt gets no request
from any call before a map reload that began after its silence, and is asked last for
maps (Transport.primary, _channel.py), so calls follow a failover as soon as the map
names the new primary. A write whose attempts may have reached a node (lost
connection after sending, deadline, UNKNOWN_OUTCOME) and that runs out of time raises
UnknownOutcomeError, never a plain failure: the caller must not assume it was not written.

Records go straight to their shard's primary (key -> shard with the same hash the node
uses), naming the shard and the epoch of our map; dataset operations go to any node,
the controller first. Bulk ingest: put_many encodes and batches records per shard
(_batcher.ShardBatcher) and hands the batches to one _ingest_stream.ShardStream per shard.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar

import msgpack

from shoal.client import _status
from shoal.client._admin import AdminCalls
from shoal.client._arguments import (
    LIMIT_MAX, REPLICATION_MAX, SHARDS_MAX, check_bound, check_int, check_name, check_optional_int, check_records,
    check_schema, check_seconds,
)
from shoal.client._combiner import PendingPut, PutCombiner
from shoal.client._config import ClientConfig, parse_addresses
from shoal.client._channel import (
    Transport, needs_refresh, rpc_errors, unreachable,
)
from shoal.client._errors import (
    DeadlineExceededError, InvalidArgumentError, NotPrimaryError, OverloadedError, ShoalError, UnknownOutcomeError,
    may_have_applied,
)
from shoal.client._jobs import Job, JobProgress, try_nodes
from shoal.client._query import Query
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import jobs_pb2
from shoal.client._batcher import ShardBatcher, batch_limits
from shoal.client._codec import ABSENT, ValueEncoder, decode_key, decode_value, encode_key
from shoal.client._ingest_stream import ShardStream
from shoal.client.wire.routing import shard_for_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

NULL_DOCUMENT: Final = b"\xc0"   # msgpack's nil, the only encoding of None
CAS_NONE_ROUNDS_MAX: Final = 8   # compare_and_set(expected=None) while the key flips between missing and None


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    shards: int
    replication: int
    encryption_key_id: str = ""   # the key its values are sealed with at rest; "" = not encrypted

    @classmethod
    def from_message(cls, message: pb.DatasetInfo) -> DatasetInfo:
        return cls(message.name, message.shards, message.replication, message.encryption_key_id)


class Client(AdminCalls):
    """A connection to a Shoal cluster; thread-safe, one per process is enough.

    `addresses` are seed nodes ("host:port", a list or a comma-separated string); the
    client learns the other nodes from the cluster map. Nothing connects until the first
    call. `timeout_s` bounds every call, retries included.
    """

    def __init__(self, addresses: str | Sequence[str] | None = None, *, timeout_s: float | None = None,
                 config: ClientConfig | None = None) -> None:
        changes: dict[str, Any] = {}
        if addresses is not None:
            changes["addresses"] = parse_addresses(addresses)
        if timeout_s is not None:
            changes["timeout_s"] = check_seconds(timeout_s, "timeout_s")
        if config is not None and not isinstance(config, ClientConfig):
            raise InvalidArgumentError(f"config must be a ClientConfig, not {type(config).__name__}")
        self.config = dataclasses.replace(config or ClientConfig(), **changes).validate()
        self.timeout_s = self.config.timeout_s
        self.seeds = self.config.addresses
        self.client_id = os.urandom(16)
        self._seq = itertools.count(1)
        self._combiner = PutCombiner(self._put_batch, self._put_one)
        self._seq_lock = threading.Lock()
        self._transport = Transport(self.config)
        # Closed at exit too if the caller never closes it: gRPC's threads kept an unclosed
        # client's process from exiting (a script without `with` or close() hung at its end).
        self._closer = weakref.finalize(self, self._transport.close)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every channel; later calls raise ShoalError."""
        self._closer()

    def __repr__(self) -> str:
        return f"Client({','.join(self.seeds)!r}, timeout_s={self.timeout_s})"

    # ---- datasets ----

    def create_dataset(self, name: str, shards: int = 8, replication: int = 0,
                       schema: Mapping[str, Any] | None = None, encrypted: bool = False) -> DatasetInfo:
        """Create a dataset of `shards` shards; replication 0 means min(3, live nodes). encrypted: values
        sealed at rest with the nodes' key (README "Encryption at rest"). schema: typed fields, checked
        on every write and stored as positional arrays, e.g. {"carrier": "str", "arr_delay": "float?"}
        ("?" = nullable) or {"fields": [{"name": "carrier", "type": "str", "nullable": False}, ...]};
        types are int, float, str, bool and timestamp. Only None = schema-less (any msgpack document):
        an empty schema ({}) is refused, as is a field name that is not a str.
        shards: 1..SHARDS_MAX (4096); replication: 0..REPLICATION_MAX (9).
        """
        check_name(name, "name")
        check_int(shards, "shards", minimum=1, maximum=SHARDS_MAX, dataset=name)
        check_int(replication, "replication", minimum=0, maximum=REPLICATION_MAX, dataset=name)
        schema_json = check_schema(schema, name)
        # The same request id on every retry: created once. Replication 0: the node picks the default.
        request = pb.CreateDatasetRequest(name=name, shards=shards, replication=replication,
                                          request_id=uuid.uuid4().hex, encrypted=bool(encrypted),
                                          schema_json=schema_json)

        def attempt(deadline_s: float) -> pb.DatasetInfo:
            info: pb.DatasetInfo = self._metadata_call("CreateDataset", request, deadline_s, "create dataset", name)
            return info

        info = self._retry("create dataset", attempt, write=True, dataset=name)
        self._transport.update_dataset(name, info if len(info.shard_map) else None)
        return DatasetInfo.from_message(info)

    def list_datasets(self) -> list[DatasetInfo]:
        response = self._retry("list datasets", lambda deadline_s: self._metadata_call(
            "ListDatasets", pb.ListDatasetsRequest(), deadline_s, "list datasets", None), write=False)
        return [DatasetInfo.from_message(info) for info in response.datasets]

    def drop_dataset(self, name: str) -> None:
        """Drop a dataset and all its records; DatasetNotFoundError if there is none."""
        check_name(name, "name")
        request = pb.DropDatasetRequest(name=name, request_id=uuid.uuid4().hex)
        self._retry("drop dataset", lambda deadline_s: self._metadata_call(
            "DropDataset", request, deadline_s, "drop dataset", name), write=True, dataset=name)
        self._transport.update_dataset(name, None)

    # ---- compute jobs (DESIGN.md section 5) ----

    def query(self, dataset: str) -> Query:
        """A query over `dataset`, run on the nodes that hold it: see shoal.client.Query."""
        check_name(dataset, "dataset")
        return Query(self, dataset)

    def _submit_job(self, dataset: str, kind: str, spec: Mapping[str, Any]) -> Job:
        """Record a job ("query" or "map_reduce") and return its handle without waiting."""
        job_id = uuid.uuid4().hex     # chosen here: a retried submit names the same job
        request = jobs_pb2.SubmitJobRequest(job_id=job_id, dataset=dataset, kind=kind,
                                            spec=msgpack.packb(dict(spec), use_bin_type=True))
        status = self._retry("submit job", lambda deadline_s: try_nodes(
            self, "submit job", lambda stub, timeout_s: stub.SubmitJob(request, timeout=timeout_s), deadline_s),
            write=True, dataset=dataset)
        return Job(self, job_id, status)

    def map_reduce(self, dataset: str, mapper: Callable[[str, Any], Iterable[tuple[Any, Any]]],
                   reducer: Callable[[Any, list[Any]], Any], *, output: str) -> Job:
        """Run mapper(key, value) -> [(out_key, out_value), ...] over every record and
        reducer(out_key, [out_value, ...]) -> value per out_key; the results are written
        into the existing dataset `output` (keys: str(out_key)). The functions travel with
        cloudpickle and run only on a cluster started with user code enabled (--user-code);
        otherwise UserCodeDisabledError."""
        check_name(dataset, "dataset")
        check_name(output, "output")
        spec = {"mapper": _pickled(mapper), "reducer": _pickled(reducer), "output": output}
        return self._submit_job(dataset, "map_reduce", spec)

    def job(self, job_id: str) -> Job:
        """Reattach to a job by id (from any process); JobNotFoundError if the cluster has no such job."""
        check_name(job_id, "job_id")
        job = Job(self, job_id)
        job.progress()
        return job

    def jobs(self) -> list[JobProgress]:
        """Running and recent jobs, oldest first."""
        response = self._job_call("list jobs", lambda stub, timeout_s: stub.ListJobs(
            jobs_pb2.ListJobsRequest(), timeout=timeout_s))
        return [JobProgress.from_message(status) for status in response.jobs]

    def _job_call(self, what: str, call: Callable[[Any, float], T], *, extra_s: float = 0.0) -> T:
        """call(jobs stub, timeout_s) with the client's retries; extra_s for a long poll."""
        result: T = self._retry(what, lambda deadline_s: try_nodes(self, what, call, deadline_s + extra_s),
                                write=False, extra_s=extra_s)
        return result

    # ---- records ----

    def put(self, dataset: str, key: str | bytes, value: Any) -> None:
        """Store one record. Concurrent puts to one shard share one call (client/_combiner.py)."""
        check_name(dataset)
        key_bytes = encode_key(dataset, key)
        pending = PendingPut(key, key_bytes, ValueEncoder(self.config.message_bytes_max).encode(dataset, key, value))
        route = self._retry("put", lambda deadline_s: self._transport.dataset(dataset, deadline_s),
                            write=False, dataset=dataset, key=key)
        self._combiner.put(dataset, shard_for_key(key_bytes, route.shards), pending)

    def _put_one(self, dataset: str, pending: PendingPut) -> None:
        write_id = self._write_id()

        def attempt(deadline_s: float) -> None:
            address, target = self._target(dataset, pending.key_bytes, deadline_s)
            request = pb.PutRequest(target=target, key=pending.key_bytes, value=pending.value_bytes,
                                    write_id=write_id)
            self._transport.call(address, "Put", request, deadline_s, what="put", dataset=dataset,
                                 key=pending.key, shard=target.shard)

        self._retry("put", attempt, write=True, dataset=dataset, key=pending.key)

    def _put_batch(self, dataset: str, shard: int, batch: list[PendingPut]) -> None:
        if len(batch) == 1:
            return self._put_one(dataset, batch[0])
        write_id = self._write_id()
        keys, values = [p.key_bytes for p in batch], [p.value_bytes for p in batch]

        def attempt(deadline_s: float) -> None:
            address, target = self._target(dataset, keys[0], deadline_s)
            request = pb.PutBatch(target=target, write_id=write_id, keys=keys, values=values)
            self._transport.call(address, "PutRecords", request, deadline_s, what=f"put of {len(keys)} records",
                                 dataset=dataset, shard=shard)

        self._retry("put", attempt, write=True, dataset=dataset)
        return None

    def get(self, dataset: str, key: str | bytes, default: Any = None) -> Any:
        """The value stored under `key`, or `default` when there is none; read from the shard's primary.

        With the default None, a missing key and a stored None both read as None, and
        compare_and_set(expected=None) matches both, so `v = get(...)` then
        `compare_and_set(..., v, new)` works on a missing key. Pass `default=ABSENT` to tell
        the two apart: a missing key then reads as ABSENT, a stored None as None.
        """
        check_name(dataset)
        key_bytes = encode_key(dataset, key)

        def attempt(deadline_s: float) -> pb.GetResponse:
            address, target = self._target(dataset, key_bytes, deadline_s)
            response: pb.GetResponse = self._transport.call(
                address, "Get", pb.GetRequest(target=target, key=key_bytes), deadline_s, what="get",
                dataset=dataset, key=key, shard=target.shard)
            return response

        response = self._retry("get", attempt, write=False, dataset=dataset, key=key)
        return decode_value(response.value) if response.found else default

    def delete(self, dataset: str, key: str | bytes) -> bool:
        """Delete `key`; True if it existed."""
        check_name(dataset)
        key_bytes = encode_key(dataset, key)
        write_id = self._write_id()

        def attempt(deadline_s: float) -> pb.DeleteResponse:
            address, target = self._target(dataset, key_bytes, deadline_s)
            request = pb.DeleteRequest(target=target, key=key_bytes, write_id=write_id)
            response: pb.DeleteResponse = self._transport.call(address, "Delete", request, deadline_s,
                                                               what="delete", dataset=dataset, key=key,
                                                               shard=target.shard)
            return response

        return bool(self._retry("delete", attempt, write=True, dataset=dataset, key=key).existed)

    def compare_and_set(self, dataset: str, key: str | bytes, expected: Any, new: Any) -> bool:
        """Set `key` to `new` only if it holds `expected`; True if it did, False if it held something else.

        `expected` matches:
        - ABSENT: only a missing key.
        - None: a missing key or a stored None, the two things `get` reads as None, so the
          read-modify-write idiom works on a missing key too:
          `v = c.get(ds, k); c.compare_and_set(ds, k, v, f(v))`.
          Pass ABSENT to require a missing key; read with `get(ds, k, ABSENT)` to tell them apart.
        - any other value: a stored value equal to it by the node's rule (node/storage/documents.py):
          both are compared as decoded msgpack documents, so dict key order and int width do
          not matter, but types do: 1 does not match 1.0, True does not match 1, "a" does not
          match b"a". A tuple matches the list of the same items (msgpack has no tuple; values
          read back as lists). Nested values compare by the same rule.

        new=ABSENT deletes the key on a match. Each attempt on the node is atomic. With
        expected=None, a try that finds the other of the two (None where the key was expected
        missing, or the reverse) is followed by one for it, up to CAS_NONE_ROUNDS_MAX tries;
        False means the last try saw a value other than None.
        """
        check_name(dataset)
        key_bytes = encode_key(dataset, key)
        encoder = ValueEncoder(self.config.message_bytes_max)
        value = b"" if new is ABSENT else encoder.encode(dataset, key, new)
        if expected is not None:
            expected_bytes = None if expected is ABSENT else encoder.encode(dataset, key, expected)
            return self._compare_and_set(dataset, key, key_bytes, expected_bytes, value, new is ABSENT).swapped
        expected_bytes = None   # a missing key first: the usual case of expected=None
        for _ in range(CAS_NONE_ROUNDS_MAX):
            response = self._compare_and_set(dataset, key, key_bytes, expected_bytes, value, new is ABSENT)
            if response.swapped:
                return True
            if response.current_found and response.current != NULL_DOCUMENT:
                return False
            expected_bytes = NULL_DOCUMENT if response.current_found else None
        return False

    def _compare_and_set(self, dataset: str, key: str | bytes, key_bytes: bytes, expected: bytes | None,
                         value: bytes, delete: bool) -> pb.CompareAndSetResponse:
        """One CompareAndSet, retried with its write id; expected=None: the key must be missing."""
        request = pb.CompareAndSetRequest(key=key_bytes, expect_absent=expected is None, expected=expected or b"",
                                          delete=delete, value=value, write_id=self._write_id())

        def attempt(deadline_s: float) -> pb.CompareAndSetResponse:
            address, target = self._target(dataset, key_bytes, deadline_s)
            request.target.CopyFrom(target)
            response: pb.CompareAndSetResponse = self._transport.call(
                address, "CompareAndSet", request, deadline_s, what="compare_and_set", dataset=dataset, key=key,
                shard=target.shard)
            return response

        return self._retry("compare_and_set", attempt, write=True, dataset=dataset, key=key)

    def put_many(self, dataset: str, records: Iterable[tuple[str | bytes, Any]], *, batch_records: int | None = None,
                 batch_bytes: int | None = None) -> int:
        """Store many records, streamed in batches per shard; returns how many were stored.

        Batches go to each shard's primary over one stream per shard with at most
        ClientConfig.stream_window_batches unacknowledged. A failure raises after stopping the streams:
        batches acknowledged before it are stored; with UnknownOutcomeError some others may
        be too. A record the client refuses (it cannot be encoded, or is over the client's
        limit) raises InvalidArgumentError naming it: records after it are not read, earlier
        ones may be stored. A record a node refuses (over its value_bytes_max) raises when the
        refusal arrives, and by then later records may be stored too (in other shards' batches
        or later ones of the same shard); a put overwrites, so sending them again is harmless. batch_bytes and batch_records are
        at most what one message of ClientConfig.message_bytes_max holds (_batcher.batch_limits).
        """
        check_name(dataset)
        records = check_records(records, dataset)
        records_max, bytes_max = batch_limits(self.config.message_bytes_max)
        check_optional_int(batch_records, "batch_records", minimum=1, maximum=records_max, dataset=dataset)
        check_optional_int(batch_bytes, "batch_bytes", minimum=1, maximum=bytes_max, dataset=dataset)
        route = self._retry("put_many", lambda deadline_s: self._transport.dataset(dataset, deadline_s),
                            write=False, dataset=dataset)
        batcher = ShardBatcher(route.shards, batch_records=batch_records or self.config.put_many_batch_records,
                               batch_bytes=batch_bytes or self.config.put_many_batch_bytes,
                               message_bytes_max=self.config.message_bytes_max)
        encoder = ValueEncoder(self.config.message_bytes_max)
        streams: dict[int, ShardStream] = {}

        def send(shard: int, keys: list[bytes], values: list[bytes]) -> None:
            stream = streams.get(shard)
            if stream is None:
                stream = streams[shard] = ShardStream(self._transport, dataset, shard, route.shards)
            target = route.target(shard)
            stream.submit(pb.PutBatch(target=target, write_id=self._write_id(), keys=keys, values=values))

        with ShardStream.watching(streams):
            try:
                for sealed in batcher.fill(dataset, records, encoder):
                    send(sealed.shard, sealed.keys, sealed.values)
                for batch in batcher.flush():
                    send(batch.shard, batch.keys, batch.values)
                return ShardStream.finish_all(list(streams.values()))
            finally:
                ShardStream.stop_all(list(streams.values()))

    def scan(self, dataset: str, *, start: str | bytes | None = None, end: str | bytes | None = None,
             prefix: str | bytes | None = None, limit: int | None = None) -> Iterator[tuple[str | bytes, Any]]:
        """Yield (key, value) pairs, shard by shard, in key order within each shard.

        `start` is inclusive, `end` exclusive, `prefix` filters; `limit` (0..2**63 - 1) caps the total.
        Keys come back as str when they are valid UTF-8, else as bytes. The order across
        shards follows the hash, not the keys. A scan interrupted by a failover resumes
        after the last key it yielded.
        """
        check_name(dataset)
        bounds = tuple(check_bound(value, name, dataset) for name, value in
                       (("start", start), ("end", end), ("prefix", prefix)))
        check_optional_int(limit, "limit", minimum=0, maximum=LIMIT_MAX, dataset=dataset)
        return self._scan(dataset, bounds[0], bounds[1], bounds[2], limit)

    # ---- cluster ----

    def cluster_map(self) -> pb.ClusterMap:
        """A fresh shoal.v1.ClusterMap (nodes, datasets with their shard maps, controller)."""
        deadline_s = time.monotonic() + self.timeout_s
        return self._transport.refresh(deadline_s, seen_version=self._transport.version).message

    def node_status(self, address: str) -> pb.NodeStatus:
        """The shoal.v1.NodeStatus of the node at `address` (one attempt, no retry)."""
        check_name(address, "address")
        deadline_s = time.monotonic() + self.timeout_s
        status: pb.NodeStatus = self._transport.call(address, "GetNodeStatus", pb.NodeStatusRequest(), deadline_s,
                                                     what="node status")
        return status

    def status(self) -> dict[str, Any]:
        """The cluster at a glance (the `shoal status --json` contract, DESIGN.md 9)."""
        cluster_map = self.cluster_map()
        return _status.collect(cluster_map, self.node_status_or_error,
                               timeout_s=min(self.timeout_s, self.config.status_timeout_s))

    def node_status_or_error(self, address: str, timeout_s: float) -> pb.NodeStatus | ShoalError:
        check_name(address, "address")
        timeout_s = check_seconds(timeout_s, "timeout_s")
        try:
            status: pb.NodeStatus = self._transport.call(address, "GetNodeStatus", pb.NodeStatusRequest(),
                                                         time.monotonic() + timeout_s, what="node status")
            return status
        except ShoalError as exc:
            return exc

    # ---- internals ----

    def _write_id(self) -> pb.WriteId:
        with self._seq_lock:
            seq = next(self._seq)
        return pb.WriteId(client_id=self.client_id, request_seq=seq)

    def _retry(self, what: str, attempt: Callable[[float], T], *, write: bool, dataset: str | None = None,
               key: str | bytes | None = None, extra_s: float = 0.0) -> T:
        """Run `attempt(deadline_s)` until it succeeds, fails for good or time runs out."""
        deadline_s = time.monotonic() + self.timeout_s + extra_s
        backoff = self.config.retry.backoff()
        maybe_applied = False
        last: ShoalError | None = None
        while time.monotonic() < deadline_s:
            attempt_deadline_s = min(deadline_s, time.monotonic() + self.config.attempt_timeout_s())
            try:
                return attempt(attempt_deadline_s)
            except ShoalError as exc:
                last = exc
                outcome_open = write and may_have_applied(exc)
                maybe_applied = maybe_applied or outcome_open
                attempt_expired = isinstance(exc, DeadlineExceededError) and attempt_deadline_s < deadline_s
                if not exc.retriable and not attempt_expired:
                    if outcome_open:
                        raise _unknown_outcome(what, exc, dataset, key) from exc
                    raise
                logger.debug("%s: retrying after %s", what, exc)
            if needs_refresh(last):
                try:    # the failed attempt routed with this map or an older one
                    self._transport.refresh(deadline_s, seen_version=self._transport.version)
                except ShoalError as exc:
                    last = exc
            backoff.sleep(deadline_s, at_least_s=retry_hint_s(last))
        if last is None:
            last = DeadlineExceededError(f"{what} failed: no time left", dataset=dataset, key=key)
        elif dataset is not None and key is not None:   # a shard with no copy on an alive node: say so
            last = self._transport.explained(last, what, dataset, key=key, key_bytes=encode_key(dataset, key))
        if maybe_applied:
            raise _unknown_outcome(what, last, dataset, key) from last
        raise last

    def _target(self, dataset: str, key_bytes: bytes, deadline_s: float) -> tuple[str, pb.RecordTarget]:
        """The primary's address and the RecordTarget for one key (a primary that did not
        answer an attempt is named again only after a map reload: Transport.primary)."""
        route, shard = self._transport.primary(dataset, deadline_s,
                                               lambda route: shard_for_key(key_bytes, route.shards))
        if not shard.address:
            raise NotPrimaryError("the shard has no primary in our cluster map", dataset=dataset,
                                  shard=shard.shard)
        return shard.address, route.target(shard.shard)

    def _admin_call(self, what: str, method: str, request: Any) -> Any:
        return self._retry(what, lambda deadline_s: self._metadata_call(method, request, deadline_s, what, None),
                           write=True)

    def _metadata_call(self, method: str, request: Any, deadline_s: float, what: str,
                       dataset: str | None) -> Any:
        """A dataset operation: the controller first, the next node when one is unreachable."""
        last: ShoalError | None = None
        tried: list[str] = []
        for address in self._transport.candidates():
            tried.append(address)
            try:
                return self._transport.call(address, method, request, deadline_s, what=what, dataset=dataset)
            except ShoalError as exc:
                if not unreachable(exc) or time.monotonic() >= deadline_s:
                    raise
                last = exc
        raise self._transport.unreachable_error(tried, last) from last

    def _scan(self, dataset: str, start: bytes, end: bytes, prefix: bytes,
              limit: int | None) -> Iterator[tuple[str | bytes, Any]]:
        route = self._retry("scan", lambda deadline_s: self._transport.dataset(dataset, deadline_s),
                            write=False, dataset=dataset)
        left = limit
        for shard in range(route.shards):
            if left == 0:
                return
            for key, value in self._scan_shard(dataset, shard, start, end, prefix, left):
                yield decode_key(key), decode_value(value)
                if left is not None:
                    left -= 1

    def _scan_shard(self, dataset: str, shard: int, start: bytes, end: bytes, prefix: bytes,
                    limit: int | None) -> Iterator[tuple[bytes, bytes]]:
        """One shard's records; retries and resumes after the last key yielded.

        Each Scan call gets an attempt's share of the deadline; the time the caller spends
        between records counts against it, so a slow consumer just causes resumes.
        """
        deadline_s = time.monotonic() + self.timeout_s
        backoff = self.config.retry.backoff()
        while True:
            progressed = False
            attempt_deadline_s = min(deadline_s, time.monotonic() + self.config.attempt_timeout_s())
            try:
                dataset_route, route = self._transport.primary(dataset, attempt_deadline_s, lambda _: shard)
                if not route.address:
                    raise NotPrimaryError("the shard has no primary in our cluster map", dataset=dataset,
                                          shard=shard)
                target = dataset_route.target(shard)
                request = pb.ScanRequest(target=target, start_key=start, end_key=end, prefix=prefix,
                                         limit=limit or 0)
                call = self._transport.stub(route.address).Scan(
                    request, timeout=max(0.001, attempt_deadline_s - time.monotonic()))
                try:
                    with rpc_errors("scan", node=route.address, dataset=dataset, shard=shard):
                        for chunk in call:
                            for key, value in zip(chunk.keys, chunk.values):
                                yield key, value
                                start, progressed = key + b"\x00", True   # next key after `key`
                                if limit is not None:
                                    limit -= 1
                finally:
                    call.cancel()
                self._transport.unresponsive.clear(route.address)
                return
            except ShoalError as exc:
                slow_consumer = progressed and isinstance(exc, DeadlineExceededError)   # not a silent node
                if exc.node is not None and not slow_consumer:
                    self._transport.note_failure(exc.node, exc)
                if progressed:     # a long scan is not a stuck one: a new deadline per resume
                    deadline_s = time.monotonic() + self.timeout_s
                    backoff.reset()
                expired = isinstance(exc, DeadlineExceededError) and (progressed or attempt_deadline_s < deadline_s)
                resumable = exc.retriable or expired
                if not resumable or time.monotonic() >= deadline_s or limit == 0:
                    raise self._transport.explained(exc, "scan", dataset, shard=shard) from None
                if needs_refresh(exc):
                    with contextlib.suppress(ShoalError):   # the next attempt meets it again
                        self._transport.refresh(deadline_s, seen_version=self._transport.version)
                backoff.sleep(deadline_s)


def _pickled(function: Callable[..., Any]) -> bytes:
    """cloudpickle `function` with its own module by value: the nodes cannot import the
    caller's script or test module, only the installed packages."""
    import cloudpickle
    if not callable(function):
        raise InvalidArgumentError(f"mapper and reducer must be functions, not {type(function).__name__}")
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    by_value = module is not None and module.__name__ not in ("__main__", "builtins") \
        and not module.__name__.startswith("shoal.") and "site-packages" not in (getattr(module, "__file__", "") or "")
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps(function)
        return data
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def retry_hint_s(exc: ShoalError | None) -> float:
    """The node's own retry hint (OVERLOADED answers carry one), else 0."""
    return exc.retry_after_s if isinstance(exc, OverloadedError) else 0.0


def _unknown_outcome(what: str, cause: ShoalError, dataset: str | None,
                     key: str | bytes | None) -> UnknownOutcomeError:
    return UnknownOutcomeError(f"{what}: the write may or may not have been applied ({cause.message})",
                               dataset=dataset, key=key, node=cause.node, shard=cause.shard, code=cause.code,
                               status=cause.status)

