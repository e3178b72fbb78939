"""The client's error tree, the gRPC -> ShoalError mapping and the retry loop it drives.

Method: a real sync gRPC server on a loopback port runs a scripted Data servicer (no
node, no mocks of gRPC): each RPC takes the next scripted action (abort with a status
and a "shoal-error" trailing code, hang, or answer). The client under test talks to it
over a real channel.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import msgpack
import pytest

from shoal.client import (
    ABSENT, AlreadyExistsError, Client, ClientConfig, ClusterUnreachableError, DatasetExistsError, DatasetNotFoundError,
    DeadlineExceededError, InternalError, InvalidArgumentError, NoControllerError, NoLeaseError, NotEnoughNodesError,
    NotFoundError, NotPrimaryError, OverloadedError, ReplicationFailedError, ResourceExhaustedError, ShoalError,
    StaleEpochError, StorageFullError, TooLargeError, UnavailableError, UnknownOutcomeError, WrongShardError,
)
from shoal.client._errors import error_from_rpc, may_have_applied
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc
from shoal.client.wire.routing import shard_for_key

HANG_S_MAX = 5.0
SHARDS = 2

# (ErrorCode name, status the node sends: node/server.py STATUS_OF, expected class, retriable, refresh)
NODE_ERRORS = [
    ("UNKNOWN_DATASET", grpc.StatusCode.NOT_FOUND, DatasetNotFoundError, False, False),
    ("DATASET_EXISTS", grpc.StatusCode.ALREADY_EXISTS, DatasetExistsError, False, False),
    ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError, False, False),
    ("TOO_LARGE", grpc.StatusCode.INVALID_ARGUMENT, TooLargeError, False, False),
    ("WRONG_SHARD", grpc.StatusCode.INVALID_ARGUMENT, WrongShardError, True, True),
    ("STORAGE_FULL", grpc.StatusCode.RESOURCE_EXHAUSTED, StorageFullError, False, False),
    ("OVERLOADED", grpc.StatusCode.RESOURCE_EXHAUSTED, OverloadedError, True, False),
    ("NOT_PRIMARY", grpc.StatusCode.UNAVAILABLE, NotPrimaryError, True, True),
    ("STALE_EPOCH", grpc.StatusCode.FAILED_PRECONDITION, StaleEpochError, True, True),
    ("NO_LEASE", grpc.StatusCode.UNAVAILABLE, NoLeaseError, True, True),
    ("NO_CONTROLLER", grpc.StatusCode.UNAVAILABLE, NoControllerError, True, False),
    ("UNKNOWN_OUTCOME", grpc.StatusCode.UNAVAILABLE, UnknownOutcomeError, True, False),
    ("NOT_ENOUGH_NODES", grpc.StatusCode.FAILED_PRECONDITION, NotEnoughNodesError, False, False),
    ("REPLICATION_FAILED", grpc.StatusCode.UNAVAILABLE, ReplicationFailedError, True, False),
]


class ScriptedData(pb_grpc.DataServicer):
    """Data service whose record RPCs follow a per-method script of actions.

    Actions: None = answer normally; ("abort", StatusCode, code or None); ("hang",) = wait
    until the test ends, then answer; for PutStream batches also ("ack", "CODE") = a
    failed PutBatchAck. An exhausted script answers normally.
    """

    def __init__(self) -> None:
        self.address = ""
        self.cluster_map: Callable[[int], pb.ClusterMap] | None = None   # GetClusterMap call number -> map
        self.script: dict[str, list[Any]] = collections.defaultdict(list)
        self.calls: dict[str, list[Any]] = collections.defaultdict(list)
        self.records: dict[bytes, bytes] = {}
        self.released = threading.Event()
        self.lock = threading.Lock()

    def _act(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.calls[method].append(request)
            action = self.script[method].pop(0) if self.script[method] else None
        if action is not None and action[0] == "abort":
            if action[2] is not None:
                context.set_trailing_metadata((("shoal-error", action[2]),))
            context.abort(action[1], f"scripted {action[2] or action[1].name}")
        if action is not None and action[0] == "hang":
            self.released.wait(HANG_S_MAX)
        return action

    def GetClusterMap(self, request: Any, context: grpc.ServicerContext) -> pb.ClusterMap:
        self._act("GetClusterMap", request, context)
        if self.cluster_map is not None:
            return self.cluster_map(len(self.calls["GetClusterMap"]))
        shard_map = [pb.ShardInfo(index=i, epoch=3, primary="n1", replicas=["n1"]) for i in range(SHARDS)]
        return pb.ClusterMap(
            version=len(self.calls["GetClusterMap"]), controller="n1",
            nodes=[pb.NodeInfo(id="n1", address=self.address, state="alive")],
            datasets=[pb.DatasetInfo(name="ds", shards=SHARDS, replication=1, shard_map=shard_map)])

    def Put(self, request: pb.PutRequest, context: grpc.ServicerContext) -> pb.PutResponse:
        self._act("Put", request, context)
        self.records[request.key] = request.value
        return pb.PutResponse()

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.GetResponse:
        self._act("Get", request, context)
        value = self.records.get(request.key)
        return pb.GetResponse(found=value is not None, value=value or b"")

    def CreateDataset(self, request: pb.CreateDatasetRequest, context: grpc.ServicerContext) -> pb.DatasetInfo:
        self._act("CreateDataset", request, context)
        return pb.DatasetInfo(name=request.name, shards=request.shards, replication=request.replication)

    def Scan(self, request: pb.ScanRequest, context: grpc.ServicerContext) -> Iterator[pb.ScanChunk]:
        """Two records per chunk; the action ("break",) fails the stream after the first chunk."""
        action = self._act("Scan", request, context)
        keys = sorted(k for k in self.records if shard_for_key(k, SHARDS) == request.target.shard
                      and k >= request.start_key and k.startswith(request.prefix))
        keys = keys[:request.limit or None]
        for index in range(0, len(keys), 2):
            if index > 0 and action is not None and action[0] == "break":
                context.abort(grpc.StatusCode.UNAVAILABLE, "scripted stream break")
            chunk = keys[index:index + 2]
            yield pb.ScanChunk(keys=chunk, values=[self.records[k] for k in chunk])

    def PutStream(self, request_iterator: Iterator[pb.PutBatch],
                  context: grpc.ServicerContext) -> Iterator[pb.PutBatchAck]:
        for batch in request_iterator:
            action = self._act("PutBatch", batch, context)
            if action is not None and action[0] == "ack":
                yield pb.PutBatchAck(request_seq=batch.write_id.request_seq, error=pb.ErrorCode.Value(action[1]),
                                     error_message=f"scripted {action[1]}")
                continue
            self.records.update(zip(batch.keys, batch.values))
            yield pb.PutBatchAck(request_seq=batch.write_id.request_seq, count=len(batch.keys))


@contextlib.contextmanager
def scripted_server(kind: type[ScriptedData] = ScriptedData) -> Iterator[ScriptedData]:
    """A real gRPC server on a loopback port serving `kind()`; stopped (and unblocked) on exit."""
    servicer = kind()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_DataServicer_to_server(servicer, server)
    servicer.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield servicer
    finally:
        servicer.released.set()
        server.stop(None).wait()


@pytest.fixture
def fake() -> Iterator[ScriptedData]:
    with scripted_server() as servicer:
        yield servicer


@pytest.fixture
def stub(fake: ScriptedData) -> Iterator[pb_grpc.DataStub]:
    with grpc.insecure_channel(fake.address) as channel:
        yield pb_grpc.DataStub(channel)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_error_tree_matches_the_contract() -> None:
    """The hierarchy and the class flags are what callers (and the retry loop) rely on."""
    expected_parents = {
        DatasetNotFoundError: NotFoundError, TooLargeError: InvalidArgumentError,
        DatasetExistsError: AlreadyExistsError, StorageFullError: ResourceExhaustedError,
        OverloadedError: ResourceExhaustedError, NotPrimaryError: UnavailableError, NoLeaseError: UnavailableError,
        NoControllerError: UnavailableError, ClusterUnreachableError: UnavailableError,
    }
    for child, parent in expected_parents.items():
        assert issubclass(child, parent) and issubclass(child, ShoalError)
    for top in (StaleEpochError, NotEnoughNodesError, DeadlineExceededError, UnknownOutcomeError, InternalError):
        assert top.__bases__ == (ShoalError,)
    assert not issubclass(UnknownOutcomeError, UnavailableError)   # never a plain failure
    assert (UnavailableError.retriable, OverloadedError.retriable, StaleEpochError.retriable) == (True,) * 3
    assert (NotPrimaryError.refresh_routing, NoLeaseError.refresh_routing, StaleEpochError.refresh_routing) \
        == (True,) * 3
    assert not (ShoalError.retriable or StorageFullError.retriable or NotEnoughNodesError.retriable)


def test_error_message_names_what_and_where() -> None:
    """str(error) carries the message and the dataset, shard, key and node it concerns."""
    error = NotPrimaryError("put failed: not the primary", dataset="events", shard=3, key="k1", node="10.0.0.1:7400")
    assert str(error) == "put failed: not the primary [dataset=events shard=3 key='k1' node=10.0.0.1:7400]"
    assert (error.dataset, error.shard, error.key, error.node) == ("events", 3, "k1", "10.0.0.1:7400")
    assert str(ShoalError("plain")) == "plain"


@pytest.mark.parametrize(("code", "status", "cls", "retriable", "refresh"), NODE_ERRORS,
                         ids=[row[0] for row in NODE_ERRORS])
def test_error_from_rpc_maps_node_codes(fake: ScriptedData, stub: pb_grpc.DataStub, code: str,
                                        status: grpc.StatusCode, cls: type[ShoalError], retriable: bool,
                                        refresh: bool) -> None:
    """Each status + "shoal-error" code the node sends becomes its class, with its flags and context."""
    fake.script["Get"].append(("abort", status, code))
    with pytest.raises(grpc.RpcError) as info:
        stub.Get(pb.GetRequest(key=b"k"), timeout=5)
    error = error_from_rpc(info.value, "get", node=fake.address, dataset="ds", key="k", shard=1)
    assert type(error) is cls
    assert (error.retriable, error.refresh_routing) == (retriable, refresh)
    assert (error.code, error.status, error.node, error.dataset, error.shard) == (code, status.name, fake.address,
                                                                                 "ds", 1)
    assert str(error).startswith(f"get failed: scripted {code} [dataset=ds shard=1 key='k' node=")


@pytest.mark.parametrize(("status", "cls"), [
    (grpc.StatusCode.NOT_FOUND, NotFoundError), (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
    (grpc.StatusCode.ALREADY_EXISTS, AlreadyExistsError), (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    (grpc.StatusCode.UNAVAILABLE, UnavailableError), (grpc.StatusCode.INTERNAL, InternalError),
    (grpc.StatusCode.UNIMPLEMENTED, InternalError), (grpc.StatusCode.FAILED_PRECONDITION, ShoalError),
])
def test_error_from_rpc_maps_plain_statuses(fake: ScriptedData, stub: pb_grpc.DataStub, status: grpc.StatusCode,
                                            cls: type[ShoalError]) -> None:
    """Without a "shoal-error" code the gRPC status alone picks the class."""
    fake.script["Get"].append(("abort", status, None))
    with pytest.raises(grpc.RpcError) as info:
        stub.Get(pb.GetRequest(key=b"k"), timeout=5)
    error = error_from_rpc(info.value, "get")
    assert type(error) is cls and error.code is None and error.status == status.name


def test_error_from_rpc_deadline_and_refused_connection(fake: ScriptedData, stub: pb_grpc.DataStub) -> None:
    """A deadline may have applied a write; a refused connection certainly did not."""
    fake.script["Put"].append(("hang",))
    with pytest.raises(grpc.RpcError) as info:
        stub.Put(pb.PutRequest(key=b"k"), timeout=0.05)
    deadline = error_from_rpc(info.value, "put")
    assert type(deadline) is DeadlineExceededError and may_have_applied(deadline)
    with grpc.insecure_channel(f"127.0.0.1:{closed_port()}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.DataStub(channel).Put(pb.PutRequest(key=b"k"), timeout=5)
    refused = error_from_rpc(info.value, "put")
    assert type(refused) is UnavailableError and not refused.sent and not may_have_applied(refused)
    assert "Connection refused" in refused.message


def test_client_put_retries_not_primary_with_the_same_write_id(fake: ScriptedData) -> None:
    """NOT_PRIMARY twice: the client reloads the map and retries until it succeeds, one write id."""
    fake.script["Put"] += [("abort", grpc.StatusCode.UNAVAILABLE, "NOT_PRIMARY")] * 2
    with Client(fake.address, timeout_s=5) as client:
        client.put("ds", "k1", {"a": 1})
        assert client.get("ds", "k1") == {"a": 1}
    puts = fake.calls["Put"]
    assert len(puts) == 3 and len({p.write_id.SerializeToString() for p in puts}) == 1
    assert puts[0].write_id.client_id and len(puts[0].write_id.client_id) == 16
    assert (puts[0].target.dataset, puts[0].target.epoch) == ("ds", 3)
    assert len(fake.calls["GetClusterMap"]) >= 3     # first load + one refresh per NOT_PRIMARY


def test_client_write_unknown_outcome_when_time_runs_out(fake: ScriptedData) -> None:
    """UNKNOWN_OUTCOME until the deadline: UnknownOutcomeError, every attempt with the same write id.
    (A 1 s budget: first contact and the map must fit in it on a busy machine.)"""
    fake.script["Put"] += [("abort", grpc.StatusCode.UNAVAILABLE, "UNKNOWN_OUTCOME")] * 1000
    with Client(fake.address, timeout_s=1.0) as client, pytest.raises(UnknownOutcomeError) as info:
        client.put("ds", "k1", 1)
    assert info.value.dataset == "ds" and info.value.key == "k1"
    assert len({p.write_id.request_seq for p in fake.calls["Put"]}) == 1 and len(fake.calls["Put"]) >= 2


def test_client_write_deadline_is_unknown_outcome_but_read_deadline_is_not(fake: ScriptedData) -> None:
    """A hung node: a put reports an unknown outcome, a get a plain DeadlineExceededError.

    The budget (1 s) leaves room for first contact and the map on a busy machine, so the
    put is certainly sent before the deadline (a put never sent would be a plain failure)."""
    fake.script["Put"].append(("hang",))
    fake.script["Get"].append(("hang",))
    with Client(fake.address, timeout_s=1.0) as client:
        with pytest.raises(UnknownOutcomeError):
            client.put("ds", "k1", 1)
        with pytest.raises(DeadlineExceededError):
            client.get("ds", "k1")


def test_client_definite_rejection_is_raised_at_once(fake: ScriptedData) -> None:
    """STORAGE_FULL is not retriable: one attempt, StorageFullError naming dataset, key and node."""
    fake.script["Put"].append(("abort", grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL"))
    with Client(fake.address, timeout_s=5) as client, pytest.raises(StorageFullError) as info:
        client.put("ds", "k1", 1)
    assert len(fake.calls["Put"]) == 1
    assert (info.value.dataset, info.value.key, info.value.node) == ("ds", "k1", fake.address)


def test_client_bad_input_is_rejected_before_sending(fake: ScriptedData) -> None:
    """Unencodable values, empty or non-str keys and unknown datasets never reach a Put."""
    with Client(fake.address, timeout_s=5) as client:
        for key, value in (("k", object()), ("k", 2**70), ("", 1), (7, 1)):
            with pytest.raises(InvalidArgumentError) as info:
                client.put("ds", key, value)   # type: ignore[arg-type]
            assert info.value.dataset == "ds"
        with pytest.raises(InvalidArgumentError, match="'bad'"):
            client.compare_and_set("ds", "bad", ABSENT, {1, 2})
        with pytest.raises(DatasetNotFoundError):
            client.put("nope", "k", 1)
    assert fake.calls["Put"] == [] and fake.calls["CompareAndSet"] == []


def test_client_unreachable_cluster_names_the_address() -> None:
    """Nothing listens: ClusterUnreachableError says which address could not be reached."""
    address = f"127.0.0.1:{closed_port()}"
    with Client(address, timeout_s=0.1) as client, pytest.raises(ClusterUnreachableError) as info:
        client.get("ds", "k")
    assert str(info.value).startswith(f"cannot reach the cluster at {address} (")


def test_client_create_dataset_default_replication_and_retry(fake: ScriptedData) -> None:
    """NO_CONTROLLER is retried with the same request id; replication 0 goes to the node as 0.

    The default (min(3, alive nodes)) has one definition, on the node (metadata/view.py):
    the client never derives it from its possibly stale map.
    """
    fake.script["CreateDataset"].append(("abort", grpc.StatusCode.UNAVAILABLE, "NO_CONTROLLER"))
    with Client(fake.address, timeout_s=5) as client:
        info = client.create_dataset("fresh", shards=4)
    assert (info.name, info.shards) == ("fresh", 4)
    first, second = fake.calls["CreateDataset"]
    assert first.request_id == second.request_id and first.replication == second.replication == 0


def test_put_many_resends_failed_batches_with_their_write_ids(fake: ScriptedData) -> None:
    """A NOT_PRIMARY batch ack and a broken stream: every batch is stored, resent with its own write id."""
    fake.script["PutBatch"] += [("ack", "NOT_PRIMARY"), None, ("abort", grpc.StatusCode.UNAVAILABLE, None)]
    records = [(f"key{i}", {"i": i}) for i in range(500)]
    with Client(fake.address, timeout_s=5) as client:
        assert client.put_many("ds", records, batch_records=50) == 500
    assert fake.records == {k.encode(): msgpack.packb(v, use_bin_type=True) for k, v in records}
    batches = fake.calls["PutBatch"]
    by_seq = collections.defaultdict(set)
    for batch in batches:
        by_seq[batch.write_id.request_seq].add(tuple(batch.keys))
    assert all(len(keys) == 1 for keys in by_seq.values())     # a resend carries the same records
    assert len(batches) > len(by_seq) >= 10                     # some batches were sent twice


def test_put_many_definite_batch_error_stops_the_load(fake: ScriptedData) -> None:
    """A TOO_LARGE ack is not retried: put_many raises TooLargeError and stops every stream."""
    fake.script["PutBatch"] += [("ack", "TOO_LARGE")]
    started = time.monotonic()
    with Client(fake.address, timeout_s=5) as client, pytest.raises(TooLargeError) as info:
        client.put_many("ds", ((f"key{i}", i) for i in range(10_000)), batch_records=100)
    assert info.value.dataset == "ds" and time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("shoal-ingest")]   # all joined


def test_put_many_bad_record_names_its_key(fake: ScriptedData) -> None:
    """A value msgpack cannot encode: InvalidArgumentError with dataset and key, no batch holds it."""
    records = [("good", 1), ("bad", object()), ("never", 2)]
    with Client(fake.address, timeout_s=5) as client, pytest.raises(InvalidArgumentError) as info:
        client.put_many("ds", records)
    assert (info.value.dataset, info.value.key) == ("ds", "bad")
    assert all(b"bad" not in batch.keys and b"never" not in batch.keys for batch in fake.calls["PutBatch"])


def test_client_scan_resumes_after_the_last_key(fake: ScriptedData) -> None:
    """A scan stream that breaks mid-shard resumes after the last key it yielded: no loss, no repeats."""
    records = {f"k{i:02d}": i for i in range(12)}
    with Client(fake.address, timeout_s=5) as client:
        client.put_many("ds", records.items())
        fake.script["Scan"] += [("break",), None, ("break",), None]
        assert dict(client.scan("ds")) == records and len(list(client.scan("ds"))) == 12
        assert len(list(client.scan("ds", limit=5))) == 5
        assert sorted(key for key, _ in client.scan("ds", prefix="k0")) == [f"k0{i}" for i in range(10)]
    resumed = [request for request in fake.calls["Scan"] if request.start_key]
    assert resumed and all(request.start_key.endswith(b"\x00") for request in resumed)


# ---- issue 15.3: a node that did not answer an attempt is not asked again before a map reload ----
ATTEMPT_S = 0.3
FAST = ClientConfig(timeout_s=2.0, attempts_per_call=8, attempt_timeout_s_min=ATTEMPT_S, map_timeout_s=ATTEMPT_S)


def shard_map_of(version: int, controller: str, primary: str, *nodes: ScriptedData) -> pb.ClusterMap:
    """A map of nodes "a", "b", ... (in the order given) with every shard of "ds" on `primary`."""
    ids = [chr(ord("a") + i) for i in range(len(nodes))]
    shard_map = [pb.ShardInfo(index=i, epoch=version, primary=primary, replicas=ids) for i in range(SHARDS)]
    return pb.ClusterMap(
        version=version, controller=controller,
        nodes=[pb.NodeInfo(id=i, address=n.address, state="alive") for i, n in zip(ids, nodes)],
        datasets=[pb.DatasetInfo(name="ds", shards=SHARDS, replication=len(nodes), shard_map=shard_map)])


@pytest.fixture
def failover() -> Iterator[tuple[ScriptedData, ScriptedData]]:
    """Node a serves map 1 (a controller and primary) once, then hangs like a paused process;
    node b serves map 2, where b has replaced a."""
    with scripted_server() as a, scripted_server() as b:
        a.cluster_map = lambda calls: shard_map_of(1, "a", "a", a, b)
        b.cluster_map = lambda calls: shard_map_of(2, "b", "b", a, b)
        a.script["GetClusterMap"] += [None] + [("hang",)] * 20
        yield a, b


def test_client_issue15_silent_primary_is_replaced_within_one_attempt(
        failover: tuple[ScriptedData, ScriptedData]) -> None:
    """Issue 15.3: the map names a primary and a hangs. The put waits one attempt on a, reloads
    the map from b (a, the old controller, is asked last: not at all once b answered), and
    succeeds on b with the same write id; a gets one Put and no second map request."""
    a, b = failover
    a.script["Put"].append(("hang",))
    with Client([a.address, b.address], config=FAST) as client:
        started = time.monotonic()
        client.put("ds", "k1", 1)
        elapsed_s = time.monotonic() - started
        assert client.get("ds", "k1") == 1
    assert ATTEMPT_S <= elapsed_s < ATTEMPT_S + 0.5
    assert len(a.calls["Put"]) == 1 and len(a.calls["GetClusterMap"]) == 1 and not a.calls["Get"]
    assert [p.write_id for p in b.calls["Put"]] == [a.calls["Put"][0].write_id]


def test_client_issue15_next_call_reloads_before_the_silent_primary(
        failover: tuple[ScriptedData, ScriptedData]) -> None:
    """Calls of one attempt each (the chaos workload's): the put that meets the hung a has no
    time left to reload and ends unknown; the next call reloads first, from b, and reads there
    instead of waiting on a again (the bug: 12 s of calls to the paused old primary)."""
    a, b = failover
    a.script["Put"].append(("hang",))
    a.script["Get"].append(("hang",))
    b.records[b"k1"] = msgpack.packb(7)
    config = dataclasses.replace(FAST, timeout_s=ATTEMPT_S)
    with Client([a.address, b.address], config=config) as client:
        with pytest.raises(UnknownOutcomeError):
            client.put("ds", "k1", 1)
        started = time.monotonic()
        assert client.get("ds", "k1") == 7
        assert time.monotonic() - started < ATTEMPT_S / 2
    assert len(a.calls["Put"]) == 1 and not a.calls["Get"] and len(a.calls["GetClusterMap"]) == 1


def test_client_issue15_scan_moves_off_a_silent_primary(failover: tuple[ScriptedData, ScriptedData]) -> None:
    """A scan whose Scan call on a hangs reloads the map and reads every shard from b; a is
    asked once."""
    a, b = failover
    a.script["Scan"].append(("hang",))
    records = {f"k{i}": i for i in range(9)}
    b.records.update({k.encode(): msgpack.packb(v) for k, v in records.items()})
    with Client([a.address, b.address], config=FAST) as client:
        started = time.monotonic()
        assert dict(client.scan("ds")) == records
        assert time.monotonic() - started < ATTEMPT_S + 0.5
    assert len(a.calls["Scan"]) == 1 and len(a.calls["GetClusterMap"]) == 1


def test_client_issue15_put_many_resends_to_the_new_primary(failover: tuple[ScriptedData, ScriptedData]) -> None:
    """put_many streams to a stall (no ack for an attempt's time): each shard's stream is
    dropped, the map reloaded from b, and every batch resent to b; no stream reopens to a."""
    a, b = failover
    a.script["PutBatch"] += [("hang",)] * SHARDS
    records = [(f"key{i}", i) for i in range(300)]
    with Client([a.address, b.address], config=FAST) as client:
        assert client.put_many("ds", records, batch_records=50) == 300
    assert b.records == {k.encode(): msgpack.packb(v) for k, v in records}
    assert len(a.calls["PutBatch"]) <= SHARDS and len(a.calls["GetClusterMap"]) == 1


def test_client_issue15_hung_controller_is_asked_last_after_one_silence() -> None:
    """The map names a as controller and a hangs: the first reload (after NOT_PRIMARY from b)
    loses one map try on a, then b answers; later reloads ask b first and, b having answered,
    never wait on a again."""
    with scripted_server() as a, scripted_server() as b:
        b.cluster_map = lambda calls: shard_map_of(min(calls, 2), "a", "b", a, b)
        a.script["GetClusterMap"] += [("hang",)] * 20
        b.script["Put"] += [("abort", grpc.StatusCode.UNAVAILABLE, "NOT_PRIMARY"), None] * 2
        with Client([b.address, a.address], config=FAST) as client:
            started = time.monotonic()
            client.put("ds", "k1", 1)
            assert ATTEMPT_S <= time.monotonic() - started < ATTEMPT_S + 0.5
            started = time.monotonic()
            client.put("ds", "k2", 2)     # NOT_PRIMARY again: b has nothing newer, a is not waited for
            assert time.monotonic() - started < ATTEMPT_S / 2
        assert len(a.calls["GetClusterMap"]) == 1 and len(b.calls["Put"]) == 4


def test_unresponsive_nodes_hold_until_a_later_map_reload_or_expiry() -> None:
    """A silent node is held until a map reload that began after its silence was answered,
    and asked last until hold_s passes or it answers; deterministic clock."""
    from shoal.client._channel import UnresponsiveNodes

    now = [100.0]
    nodes = UnresponsiveNodes(3.0, clock=lambda: now[0])
    nodes.map_checked(99.0)
    nodes.mark("a:1")
    assert nodes.held("a:1") and nodes.recent() == {"a:1"} and not nodes.held("b:1")
    nodes.map_checked(99.5)                 # a reload that began before the silence does not count
    assert nodes.held("a:1")
    now[0] = 101.0
    nodes.map_checked(100.5)
    assert not nodes.held("a:1") and nodes.recent() == {"a:1"}
    nodes.mark("a:1")                       # silent again after that reload: held again
    assert nodes.held("a:1")
    now[0] = 104.5
    assert not nodes.held("a:1") and not nodes.recent()
    nodes.mark("b:1")
    nodes.clear("b:1")                      # it answered
    assert not nodes.held("b:1") and not nodes.recent()
