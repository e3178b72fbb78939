"""Fuzz target 4 (issue 19.7): every RPC of one real node process.

Starts one node (LocalCluster, plaintext, loopback) holding a schema-less dataset, a typed
dataset and a finished job, then sends it hypothesis-generated requests for every method of
the Data, Jobs and Peer services, enumerated from the proto descriptors (so a new RPC is
fuzzed without a change here; streaming ones too: Scan, CopyShard, GetJobResult, PutStream).
Each request is a message whose every field is generated from its proto type (empty, huge,
64-bit-edge numbers, NaN, arbitrary bytes) or aimed at the node (its cluster id, dataset
names, ids and epochs, documents, query specs, replication entries, Raft commands), or raw
bytes in place of the serialized message (unknown fields, wrong wire types, invalid UTF-8).
Asserts: every call is answered, within CALL_TIMEOUT_S, OK or with a status the node maps
from its own errors (node/interceptors.py: the status plus the shoal-error code in the
trailing metadata), never UNKNOWN or INTERNAL (an uncaught exception); raw bytes that do not
parse as the request get INVALID_ARGUMENT "malformed"; after each target the node still
serves a put and a get (on a dataset the fuzz never names).

Not fuzzed, on purpose: peer messages that name this node (as the sender of a Join or a
Heartbeat, in a proposed command) and Propose of become_controller: the peer API trusts the
members of its cluster, and those would move the node's address or depose its controller
(behaviour, not a decoding bug).
"""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import msgpack
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from fuzz_targets import SCHEMA_JSON
from shoal.client.local import LocalCluster
from shoal.client.wire.codes import ERROR_CODES, ERROR_METADATA_KEY, metadata_value
from shoal.client.wire.pb import data_pb2, jobs_pb2, jobs_pb2_grpc, peer_pb2
from shoal.client.wire.routing import shard_for_key
from shoal.node.metadata import commands
from test_fuzz_commands import ENVELOPES, MSGPACK_VALUES, shaped_command
from test_fuzz_expressions import GOOD_SPECS, SPECS
from test_fuzz_formats import ENTRY_PAYLOADS

DOCS, TYPED, CHECK = "fuzzdocs", "fuzztyped", "fuzzcheck"   # the fuzz never names CHECK
SHARDS = 2                       # of DOCS and TYPED
CALL_TIMEOUT_S = 20.0            # a proposal retries up to propose_timeout_s (5 s); past this, a hang
NODE_START_TIMEOUT_S = 60.0
# Past a Raft command's 64 KiB; made by a map so that the strategy's repr (in warnings) stays short.
BIG_TEXT = st.integers(70_000, 70_100).map(lambda length: "x" * length)
MAPPED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED})
SERVICES = {"Data": data_pb2, "Jobs": jobs_pb2, "Peer": peer_pb2}
_U32_EDGES = st.sampled_from([2**31, 2**32 - 1])
_U64_EDGES = st.sampled_from([2**32, 2**63, 2**64 - 1])


# The strategies are large trees: hypothesis warns when it prints one (not a finding).
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


class Raw(bytes):
    """Bytes sent in place of a serialized request."""


@dataclasses.dataclass(frozen=True)
class Call:
    """One generated call; its repr stays short (a failing example is printed, fields hold 70 KB)."""

    method: MethodDescriptor
    request: Any

    def __repr__(self) -> str:
        return f"Call({self.method.name}, {_shown(self.request)})"


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, (bytes, list)) else repr(str(value))
    return text if len(text) <= 600 else f"{text[:600]}... ({len(text)} characters)"


@dataclasses.dataclass(frozen=True)
class FuzzNode:
    cluster: LocalCluster
    channel: grpc.Channel
    node_id: str
    cluster_id: str
    dataset_ids: dict[str, str]


def _mostly(good: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, else `other`."""
    return st.integers(0, 3).flatmap(lambda pick: good if pick else other)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzNode]:
    """One node with DOCS (2 shards), TYPED (2 shards, SCHEMA_JSON), CHECK, some records and a done job."""
    cluster = LocalCluster(tmp_path_factory.mktemp("fuzz-rpc") / "cluster", nodes=1)
    cluster.start(NODE_START_TIMEOUT_S)
    channel = grpc.insecure_channel(cluster.addresses[0])
    try:
        with cluster.client() as client:
            client.create_dataset(DOCS, shards=SHARDS, replication=1)
            client.create_dataset(TYPED, shards=SHARDS, replication=1, schema=SCHEMA_JSON)
            client.create_dataset(CHECK, shards=1, replication=1)
            client.put_many(DOCS, [(f"d{i}", {"i": i, "s": "ab"[i % 2], "m": [i]}) for i in range(20)])
            client.put_many(TYPED, [(f"t{i}", {"i": i, "f": i / 2, "t": i * 1000}) for i in range(20)])
            cluster_map = client.cluster_map()
        jobs = jobs_pb2_grpc.JobsStub(channel)
        jobs.SubmitJob(jobs_pb2.SubmitJobRequest(job_id="fz-job-setup", dataset=DOCS, kind="query",
                                                 spec=msgpack.packb({"aggs": [["n", "count", None]]})))
        deadline_s = time.monotonic() + NODE_START_TIMEOUT_S
        while jobs.GetJob(jobs_pb2.JobRequest(job_id="fz-job-setup", wait_s=1.0)).state == "running":
            assert time.monotonic() < deadline_s, "the setup job did not finish"
        yield FuzzNode(cluster, channel, cluster.nodes[0].id, cluster_map.cluster_id,
                       {d.name: d.id for d in cluster_map.datasets if d.name != CHECK})
    finally:
        channel.close()
        cluster.stop()
        assert not cluster.running()


def _aimed(node: FuzzNode) -> dict[str, st.SearchStrategy[Any]]:
    """Field values aimed at the node, by "Message.field" or "field" (scalar fields only)."""
    text = st.text(max_size=12).filter(lambda value: value != CHECK)

    def names(*known: str) -> st.SearchStrategy[str]:
        return _mostly(st.sampled_from(known), st.one_of(text, st.just(""), BIG_TEXT, st.just("nope")))
    documents = st.one_of(MSGPACK_VALUES, st.fixed_dictionaries({"i": st.integers(-2**63, 2**64 - 1)},
                                                                optional={"f": st.floats(), "s": st.text(max_size=4),
                                                                          "t": st.integers(-2**63, 2**63),
                                                                          "x": st.none()}))
    values = _mostly(documents.map(lambda document: msgpack.packb(document, use_bin_type=True)), st.binary(max_size=24))
    shaped = st.one_of(*(shaped_command(op) for op in sorted(commands.OPS - {"become_controller"})))
    propose = st.one_of(st.binary(max_size=64), MSGPACK_VALUES.map(msgpack.packb), ENVELOPES.map(msgpack.packb),
                        shaped.map(lambda data: _renamed(data, node.node_id)))
    return {
        "dataset": names(DOCS, TYPED), "dataset_id": names(*node.dataset_ids.values(), "", f"{DOCS}@1"),
        "name": names("fz-a", "fz-b", "a b", "x" * 129), "cluster_id": names(node.cluster_id),
        "node_id": names("fz-node", "n9"), "learner": names(node.node_id, "fz-node"),
        "primary": names(node.node_id, "fz-node"), "job_id": names("fz-job-1", "fz-job-2", "fz-job-setup", "x" * 200),
        "snapshot_id": names("", "00ab", "not-hex"), "kind": names("query", "query", "map_reduce"),
        "new_raft_address": names("127.0.0.1:1", "h:99999", ""), "incarnation": names("a" * 32),
        "shard": _mostly(st.integers(0, SHARDS), _U32_EDGES), "epoch": _mostly(st.integers(0, 3), _U64_EDGES),
        "CreateDatasetRequest.shards": st.sampled_from([0, 1, 2, 4097, 2**32 - 1]),   # not thousands of LMDB envs
        "replication": _mostly(st.integers(0, 3), _U32_EDGES),
        "key": _mostly(st.binary(min_size=1, max_size=8), st.sampled_from([b"", b"k" * 600])),
        "keys": _mostly(st.binary(min_size=1, max_size=8), st.sampled_from([b"", b"k" * 600])),
        "value": values, "values": values, "expected": values,
        "client_id": _mostly(st.binary(min_size=16, max_size=16), st.binary(max_size=20)),
        "schema_json": _mostly(st.sampled_from([json.dumps(SCHEMA_JSON), '{"fields": []}', "{}", "[]", "1"]), text),
        "spec": _mostly(st.one_of(GOOD_SPECS, SPECS).map(lambda spec: msgpack.packb(spec, use_bin_type=True)),
                        st.one_of(st.binary(max_size=32), BIG_TEXT.map(lambda text: msgpack.packb({"where": text})))),
        "wait_s": _mostly(st.sampled_from([0.0, 0.05]), st.floats()),
        "payload": ENTRY_PAYLOADS, "command": propose,
    }


def _renamed(command: bytes, own_id: str) -> bytes:
    """A shaped command that names "fz-node" wherever it named this node (a register_node of it
    would move its address: a trusted peer's word, see the module docstring)."""
    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: rename(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rename(item) for item in value]
        return "fz-node" if value == own_id else value
    return msgpack.packb(rename(msgpack.unpackb(command, raw=False, strict_map_key=False)), use_bin_type=True)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_STRING,):
        return st.one_of(st.text(max_size=16), BIG_TEXT)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _mostly(st.integers(0, 4), st.one_of(_U32_EDGES, st.integers(0, 2**32 - 1)))
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _mostly(st.integers(0, 4), st.one_of(_U64_EDGES, st.integers(0, 2**64 - 1)))
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([value.number for value in field.enum_type.values])
    raise AssertionError(f"no strategy for {field.full_name} (type {kind}): add one")


def message_strategy(descriptor: Descriptor, aimed: dict[str, st.SearchStrategy[Any]],
                     fix: Callable[[Any], Any]) -> st.SearchStrategy[Any]:
    """Messages of `descriptor` with every field generated (aimed values first); three in four
    passed through `fix` (which makes them consistent enough to get past the first checks)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue   # no request has a map field
            value = message_strategy(field.message_type, aimed, lambda message: message)
        else:
            value = aimed.get(f"{descriptor.name}.{field.name}", aimed.get(field.name))
            value = _scalar(field) if value is None else value
        fields[field.name] = st.lists(value, max_size=4) if field.is_repeated else value
    message_class = message_factory.GetMessageClass(descriptor)
    return st.tuples(st.fixed_dictionaries(fields), st.integers(0, 3)).map(
        lambda drawn: fix(message_class(**drawn[0])) if drawn[1] else message_class(**drawn[0]))


def consistent(dataset_ids: dict[str, str]) -> Callable[[Any], Any]:
    """A fix for message_strategy: a message naming DOCS or TYPED gets that dataset's id, its epoch 1
    (theirs), and the shard of its key (a batch: only the keys of its first key's shard)."""
    def fix(message: Any) -> Any:
        fields = message.DESCRIPTOR.fields_by_name
        holder = message.target if "target" in fields else message
        own = holder.DESCRIPTOR.fields_by_name
        if "dataset" not in own or holder.dataset not in dataset_ids:
            return message
        if "dataset_id" in own:
            holder.dataset_id = dataset_ids[holder.dataset]
        if "epoch" in own:
            holder.epoch = 1
        if "key" in fields and message.key:
            holder.shard = shard_for_key(message.key, SHARDS)
        elif "keys" in fields and message.keys:
            shard = shard_for_key(message.keys[0], SHARDS)
            pairs = [(k, v) for k, v in zip(message.keys, message.values) if shard_for_key(k, SHARDS) == shard]
            holder.shard = shard
            del message.keys[:], message.values[:]
            message.keys.extend(k for k, _ in pairs)
            message.values.extend(v for _, v in pairs)
        return message
    return fix


def requests(service: str, aimed: dict[str, st.SearchStrategy[Any]],
             fix: Callable[[Any], Any]) -> st.SearchStrategy[Call]:
    """Calls of every method of `service`: a message (a list of them for client streaming) or,
    for the others, Raw bytes one time in eight."""
    choices = []
    for method in SERVICES[service].DESCRIPTOR.services_by_name[service].methods:
        message = message_strategy(method.input_type, aimed, fix)
        request = st.lists(message, max_size=3) if method.client_streaming else st.integers(0, 7).flatmap(
            lambda pick, message=message: message if pick else st.binary(max_size=48).map(Raw))
        choices.append(request.map(lambda request, method=method: Call(method, request)))
    return st.one_of(*choices)


def call(node: FuzzNode, generated: Call) -> grpc.StatusCode:
    """Send one request; assert the answer is OK or a status the node mapped (module docstring)."""
    method, request = generated.method, generated.request
    path = f"/{method.containing_service.full_name}/{method.name}"
    input_class = message_factory.GetMessageClass(method.input_type)
    output_class = message_factory.GetMessageClass(method.output_type)
    factory: Callable[..., Any] = {
        (False, False): node.channel.unary_unary, (False, True): node.channel.unary_stream,
        (True, False): node.channel.stream_unary, (True, True): node.channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    raw = isinstance(request, Raw)
    stub = factory(path, request_serializer=None if raw else input_class.SerializeToString,
                   response_deserializer=output_class.FromString)
    try:
        argument = bytes(request) if raw else iter(request) if method.client_streaming else request
        answer = stub(argument, timeout=CALL_TIMEOUT_S)
        if method.server_streaming:
            list(answer)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code, details, trailing = exc.code(), exc.details(), exc.trailing_metadata()
    shown = f"{generated!r} -> {code} {_shown(details)}"
    if raw and not _parses(input_class, request):   # node/interceptors.py ErrorMapping, not gRPC's UNKNOWN
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in str(details), shown
    assert code in MAPPED, f"not a mapped status: {shown}"
    assert metadata_value(trailing, ERROR_METADATA_KEY) in ERROR_CODES, f"no shoal error code: {shown}"
    return code


def _parses(message_class: Any, data: bytes) -> bool:
    try:
        message_class.FromString(data)
    except DecodeError:
        return False
    return True


def still_serves(node: FuzzNode) -> None:
    """A put and a get on CHECK (which the fuzz never names) give back what was written."""
    key, value = f"alive-{uuid.uuid4().hex}", {"at_s": time.time()}
    with node.cluster.client() as client:
        client.put(CHECK, key, value)
        assert client.get(CHECK, key) == value


def _fuzz_service(service: str, fuzz: Any, node: FuzzNode, ci_examples: int) -> None:
    fuzz(f"rpc.{service}", requests(service, _aimed(node), consistent(node.dataset_ids)),
         lambda generated: call(node, generated),
         ci_examples=ci_examples)
    still_serves(node)


def test_fuzz_rpc_data_service(fuzz: Any, fuzz_node: FuzzNode, dump_logs_on_failure: Any) -> None:
    """Every Data RPC (Put, Get, CompareAndSet, PutStream, Scan, CreateDataset, ...) with fuzzed requests."""
    dump_logs_on_failure("fuzz node", fuzz_node.cluster.dump_logs)
    _fuzz_service("Data", fuzz, fuzz_node, ci_examples=30)


def test_fuzz_rpc_jobs_service(fuzz: Any, fuzz_node: FuzzNode, dump_logs_on_failure: Any) -> None:
    """Every Jobs RPC (SubmitJob with fuzzed specs, GetJob, GetJobResult, CancelJob, ListJobs)."""
    dump_logs_on_failure("fuzz node", fuzz_node.cluster.dump_logs)
    _fuzz_service("Jobs", fuzz, fuzz_node, ci_examples=20)


def test_fuzz_rpc_peer_service(fuzz: Any, fuzz_node: FuzzNode, dump_logs_on_failure: Any) -> None:
    """Every Peer RPC (Replicate with fuzzed entries, Propose with fuzzed commands, CopyShard, ...);
    last, as a fuzzed Replicate or BeginEpoch at a newer epoch fences this node's primaries."""
    dump_logs_on_failure("fuzz node", fuzz_node.cluster.dump_logs)
    _fuzz_service("Peer", fuzz, fuzz_node, ci_examples=30)


def _method(service: str, name: str) -> MethodDescriptor:
    found: MethodDescriptor = SERVICES[service].DESCRIPTOR.services_by_name[service].methods_by_name[name]
    return found


def test_issue_19_7_rpc_findings_get_mapped_statuses(fuzz_node: FuzzNode, dump_logs_on_failure: Any) -> None:
    """The RPC findings of the fuzz, once each (they answered UNKNOWN, or RESOURCE_EXHAUSTED without
    a code, before the fixes): bytes that are no request, names and ids too long for a Raft
    command, a status message past gRPC's metadata limit, a bad spec entry, a reused write id."""
    dump_logs_on_failure("fuzz node", fuzz_node.cluster.dump_logs)
    big, key = "x" * 70_000, b"regression-key"
    target = data_pb2.RecordTarget(dataset=CHECK, shard=0, epoch=1)   # one shard; the fuzz never fences it
    write = data_pb2.WriteId(client_id=uuid.uuid4().bytes, request_seq=1)
    jobs = "Jobs"
    cases = [
        (Call(_method("Data", "Put"), Raw(b"\x00")), grpc.StatusCode.INVALID_ARGUMENT),
        (Call(_method("Data", "CreateDataset"), data_pb2.CreateDatasetRequest(name=big, shards=1)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (Call(_method("Data", "Put"), data_pb2.PutRequest(target=data_pb2.RecordTarget(dataset=big), key=key)),
         grpc.StatusCode.NOT_FOUND),
        (Call(_method(jobs, "SubmitJob"), jobs_pb2.SubmitJobRequest(job_id="j" * 200, dataset=DOCS, kind="query",
                                                                     spec=msgpack.packb({}))),
         grpc.StatusCode.INVALID_ARGUMENT),
        (Call(_method(jobs, "SubmitJob"), jobs_pb2.SubmitJobRequest(dataset=DOCS, kind="query",
                                                                     spec=msgpack.packb({"group_by": [None]}))),
         grpc.StatusCode.INVALID_ARGUMENT),
        (Call(_method("Data", "Put"), data_pb2.PutRequest(target=target, key=key, value=msgpack.packb(1),
                                                          write_id=write)), grpc.StatusCode.OK),
        (Call(_method("Data", "PutRecords"), data_pb2.PutBatch(target=target, write_id=write, keys=[key],
                                                               values=[msgpack.packb(2)])),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]
    assert [call(fuzz_node, generated) for generated, _ in cases] == [code for _, code in cases]
