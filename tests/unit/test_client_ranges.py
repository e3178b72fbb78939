"""Bounds of the client's arguments: every int has a maximum, every timeout a finite range,
a schema at least one field, and a job wait's timeout is checked before anything is sent.

Method: the scripted fake Data server of test_client_errors (a real gRPC server on a
loopback port), plus a fake Jobs service on the same server whose jobs never finish.
A refused argument must be an InvalidArgumentError naming the argument, the value and the
range, with no RPC sent but the cluster map; the maximum itself must go through to the
wire (protobuf, msgpack, gRPC deadline) without a ValueError or OverflowError. The
client's copies of the node's limits are pinned to the node's constants.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import time
import types
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import msgpack
import pytest

from shoal.client import (
    Client, ClientConfig, DeadlineExceededError, InvalidArgumentError, JobTimeoutError, ShoalError,
)
from shoal.client._arguments import (
    GRPC_INT_MAX, LIMIT_MAX, REPLICATION_MAX, SCHEMA_EMPTY, SECONDS_MAX, SHARDS_MAX, check_int, check_optional_int,
)
from shoal.client._batcher import batch_limits
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc
from shoal.client.wire.pb import jobs_pb2, jobs_pb2_grpc
from test_client_errors import ScriptedData

RUNNING_POLL_S_MAX = 0.05   # the fake's long poll: a running job stays running


class FakeJobs(jobs_pb2_grpc.JobsServicer):
    """Jobs that never finish; records every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def _status(self, job_id: str) -> jobs_pb2.JobStatus:
        return jobs_pb2.JobStatus(job_id=job_id, dataset="ds", kind="query", state="running", tasks_total=2,
                                  tasks_done=1)

    def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: grpc.ServicerContext) -> jobs_pb2.JobStatus:
        self.calls.append(("SubmitJob", request))
        return self._status(request.job_id)

    def GetJob(self, request: jobs_pb2.JobRequest, context: grpc.ServicerContext) -> jobs_pb2.JobStatus:
        self.calls.append(("GetJob", request))
        time.sleep(min(request.wait_s, RUNNING_POLL_S_MAX))
        return self._status(request.job_id)


@dataclasses.dataclass
class Fakes:
    data: ScriptedData
    jobs: FakeJobs

    def sent(self) -> set[str]:
        """The RPCs that reached the fakes, the cluster map aside."""
        data = {name for name, calls in self.data.calls.items() if calls and name != "GetClusterMap"}
        return data | {name for name, _ in self.jobs.calls}


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    data, jobs = ScriptedData(), FakeJobs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_DataServicer_to_server(data, server)
    jobs_pb2_grpc.add_JobsServicer_to_server(jobs, server)
    data.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield Fakes(data, jobs)
    finally:
        data.released.set()
        server.stop(None).wait()


@pytest.fixture
def client(fakes: Fakes) -> Iterator[Client]:
    with Client(fakes.data.address, timeout_s=5) as client:
        yield client


def test_client_limits_are_the_nodes() -> None:
    """The client's copies of the node's bounds equal the node's constants (the client cannot import them)."""
    from shoal.node.compute import spec
    from shoal.node.metadata import fsm
    assert (SHARDS_MAX, REPLICATION_MAX, LIMIT_MAX) == (fsm.SHARDS_MAX, fsm.REPLICATION_MAX, spec.LIMIT_MAX)


def test_check_int_has_no_unbounded_form() -> None:
    """Every int check names its maximum: `maximum` is a required keyword, so no call site can forget it."""
    for check in (check_int, check_optional_int):
        assert inspect.signature(check).parameters["maximum"].default is inspect.Parameter.empty


# (what, call, words): each int of the API one past its maximum, and far past the protobuf field
TOO_BIG: list[tuple[str, Any, tuple[str, ...]]] = [
    ("shards", lambda c: c.create_dataset("x", shards=SHARDS_MAX + 1), ("shards", f"1..{SHARDS_MAX}")),
    ("shards uint32", lambda c: c.create_dataset("x", shards=2**32), ("shards", str(2**32))),
    ("replication", lambda c: c.create_dataset("x", replication=REPLICATION_MAX + 1), ("replication", "0..9")),
    ("replication uint32", lambda c: c.create_dataset("x", replication=2**32), ("replication", str(2**32))),
    ("scan limit", lambda c: next(c.scan("ds", limit=LIMIT_MAX + 1)), ("limit", f"0..{LIMIT_MAX}")),
    ("scan limit uint64", lambda c: next(c.scan("ds", limit=2**70)), ("limit", str(2**70))),
    ("query limit", lambda c: c.query("ds").limit(LIMIT_MAX + 1), ("limit", f"0..{LIMIT_MAX}")),
    ("query limit msgpack", lambda c: c.query("ds").limit(2**70), ("limit", str(2**70))),
    ("huge int", lambda c: c.query("ds").limit(10**5000), ("limit", "an int of 16610 bits")),
    ("batch_records", lambda c: c.put_many("ds", [], batch_records=batch_limits(c.config.message_bytes_max)[0] + 1),
     ("batch_records", "1..")),
    ("batch_bytes", lambda c: c.put_many("ds", [], batch_bytes=batch_limits(c.config.message_bytes_max)[1] + 1),
     ("batch_bytes", "1..")),
]


@pytest.mark.parametrize(("what", "call", "words"), TOO_BIG, ids=[row[0] for row in TOO_BIG])
def test_client_int_past_its_maximum_is_invalid_argument(fakes: Fakes, client: Client, what: str, call: Any,
                                                         words: tuple[str, ...]) -> None:
    """F6: never a protobuf ValueError or a msgpack OverflowError: InvalidArgumentError naming value and range."""
    with pytest.raises(InvalidArgumentError) as info:
        call(client)
    assert all(word in str(info.value) for word in words), str(info.value)
    assert "must be within" in str(info.value)
    assert fakes.sent() == set()


def test_client_int_maxima_reach_the_wire(fakes: Fakes, client: Client) -> None:
    """The maxima themselves fit their fields: CreateDataset's uint32s, the scan's uint64, the query's msgpack
    spec (which the node's parser accepts)."""
    from shoal.node.compute.spec import parse_spec
    client.create_dataset("x", shards=SHARDS_MAX, replication=REPLICATION_MAX)
    request = fakes.data.calls["CreateDataset"][0]
    assert (request.shards, request.replication) == (SHARDS_MAX, REPLICATION_MAX)
    assert list(client.scan("ds", limit=LIMIT_MAX)) == []
    assert {call.limit for call in fakes.data.calls["Scan"]} == {LIMIT_MAX}
    spec = client.query("ds").limit(LIMIT_MAX).spec
    assert parse_spec(msgpack.unpackb(msgpack.packb(spec, use_bin_type=True), raw=False)).limit == LIMIT_MAX


def _int_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ClientConfig) if type(f.default) is int]


def _seconds_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ClientConfig) if type(f.default) is float]


@pytest.mark.parametrize("name", _int_fields())
def test_client_config_every_int_field_has_a_maximum(name: str) -> None:
    """F6 for ClientConfig: an int field far past any use (2**70) is refused naming the field and its range."""
    with pytest.raises(InvalidArgumentError, match=f"^{name} must be within [0-9]+\\.\\.[0-9]+, got {2**70}"):
        ClientConfig(**{name: 2**70}).validate()


@pytest.mark.parametrize("name", _seconds_fields())
@pytest.mark.parametrize("value", [float("inf"), 1e308, 1e12, SECONDS_MAX + 1, float("nan"), 0, -1.0])
def test_client_config_every_seconds_field_is_finite(name: str, value: float) -> None:
    """F7: inf, 1e308, 1e12 (past time_t once a deadline is added), NaN, 0 and negatives are refused."""
    with pytest.raises(InvalidArgumentError, match=f"^{name} must be a finite number of seconds within "
                                                   f"\\(0, {SECONDS_MAX}\\]"):
        ClientConfig(**{name: value}).validate()


def test_client_config_maxima_work(fakes: Fakes) -> None:
    """F7 and F6: at the longest timeout a real call runs (gRPC deadline, lock waits: no time_t overflow),
    and a gRPC channel takes the largest message limit."""
    biggest = {name: SECONDS_MAX for name in _seconds_fields()}
    config = ClientConfig(message_bytes_max=GRPC_INT_MAX, **biggest).validate()
    with Client(fakes.data.address, config=config) as client:
        client.put("ds", "k", 1)
        assert client.get("ds", "k") == 1
    config.wire().channel("127.0.0.1:1").close()
    with pytest.raises(InvalidArgumentError, match="put_many_batch_bytes must be within 1..983040"):
        ClientConfig(message_bytes_max=1 << 20).validate()   # the default batch does not fit the message


@pytest.mark.parametrize("schema", [{}, [], "", types.MappingProxyType({})])
def test_client_empty_schema_is_refused_not_schema_less(fakes: Fakes, client: Client, schema: Any) -> None:
    """F12: only schema=None is schema-less; an empty one is refused in the node's words, before sending."""
    from shoal.node.compute.schema import Schema, SchemaError
    with pytest.raises(SchemaError, match=f"^{SCHEMA_EMPTY}$"):
        Schema.from_json({"fields": []})
    with pytest.raises(InvalidArgumentError, match=f"bad schema: {SCHEMA_EMPTY}"):
        client.create_dataset("x", shards=1, schema=schema)
    assert fakes.sent() == set()


@pytest.mark.parametrize(("schema", "words"), [
    ({1: "int"}, "field name 1 must be a str, not int"),
    ({"a": "int", (1, 2): "str"}, "field name (1, 2) must be a str, not tuple"),
    ({"fields": [{"name": "a", "type": "int", None: True}]}, "key None in schema['fields'][0] must be a str"),
    ({"a": int}, "not JSON serializable"),
    ({"a": float("nan")}, "not JSON compliant"),
])
def test_client_schema_names_must_be_str(fakes: Fakes, client: Client, schema: Any, words: str) -> None:
    """F12: JSON would silently turn a non-str name into a str one; refused naming it, before sending."""
    with pytest.raises(InvalidArgumentError) as info:
        client.create_dataset("x", shards=1, schema=schema)
    assert words in str(info.value)
    assert fakes.sent() == set()


def test_client_schema_reaches_the_node_as_json(fakes: Fakes, client: Client) -> None:
    """Good schemas, short and long, any Mapping, go as the JSON Schema.from_json reads; None as ""."""
    from shoal.node.compute.schema import Schema
    long = {"fields": ({"name": "b", "type": "str", "nullable": True},)}
    for schema in ({"a": "int?"}, types.MappingProxyType(long), None):
        client.create_dataset("x", shards=1, schema=schema)
    short, long_form, none = (call.schema_json for call in fakes.data.calls["CreateDataset"])
    assert Schema.from_json(json.loads(short)).names == ["a"]
    assert Schema.from_json(json.loads(long_form)).to_json() == {"fields": [dict(long["fields"][0])]}
    assert none == ""


BAD_TIMEOUTS = [-1, -0.001, float("nan"), float("inf"), SECONDS_MAX + 1, "5", True]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_client_collect_checks_its_timeout_before_submitting(fakes: Fakes, client: Client, timeout: Any) -> None:
    """F17: collect(timeout=-1) used to submit the job, then raise a bare TimeoutError."""
    with pytest.raises(InvalidArgumentError, match="^timeout must be"):
        client.query("ds").collect(timeout=timeout)
    assert fakes.sent() == set()


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_client_job_wait_and_result_check_their_timeout(fakes: Fakes, client: Client, timeout: Any) -> None:
    """F17: Job.wait and Job.result refuse a bad timeout before asking the node anything."""
    job = client.query("ds").submit()
    fakes.jobs.calls.clear()
    for method in (job.wait, job.result):
        with pytest.raises(InvalidArgumentError, match="^timeout must be"):
            method(timeout)
    assert fakes.jobs.calls == []


def test_client_job_timeout_names_the_running_job(fakes: Fakes, client: Client) -> None:
    """F17: a timeout that passes is JobTimeoutError (a ShoalError; a TimeoutError for older callers) naming
    the job, which still runs and can be reattached; wait() returns its progress instead; 0 looks once."""
    job = client.query("ds").submit()
    assert not job.wait(timeout=0).finished
    for timeout in (0, 0.05):
        with pytest.raises(JobTimeoutError) as info:
            job.result(timeout=timeout)
        error = info.value
        assert isinstance(error, DeadlineExceededError) and isinstance(error, ShoalError)
        assert isinstance(error, TimeoutError)
        assert error.job_id == job.id and error.dataset == "ds"
        assert f"job {job.id} still running" in str(error) and f"client.job({job.id!r})" in str(error)
    assert client.job(error.job_id).progress().state == "running"


def test_job_timeout_error_pickles() -> None:
    """Errors cross process boundaries (chaos workers): JobTimeoutError survives a pickle round trip."""
    import pickle
    error = pickle.loads(pickle.dumps(JobTimeoutError("job j still running", job_id="j")))
    assert isinstance(error, JobTimeoutError) and str(error) == "job j still running"


def test_node_status_or_error_bounds_its_timeout(client: Client) -> None:
    """F7 on the one public method with a seconds argument besides the job waits."""
    for value in (float("inf"), 1e12, float("nan"), -1):
        with pytest.raises(InvalidArgumentError, match="timeout_s must be a finite number"):
            client.node_status_or_error("127.0.0.1:1", value)
    assert isinstance(client.node_status_or_error("127.0.0.1:1", 0.2), ShoalError)   # nothing listens there


@pytest.mark.parametrize(("value", "named"), [
    ({"i": 2 ** 64}, "field 'i' is 18446744073709551616"),
    ({"a": {"b": [1, -(2 ** 63) - 1]}}, "field 'a'['b'][1] is -9223372036854775809"),
    ([1, [2 ** 65]], "the value[1][0] is 36893488147419103232"),
    (10 ** 5000, "the value is an int of 16610 bits"),
], ids=["field", "nested", "list", "huge"])
def test_an_int_past_64_bits_in_a_value_is_named_by_its_field(value: Any, named: str) -> None:
    """Found by hand: put of {"i": 2**64} said only "Integer value out of range" (msgpack's words)."""
    from shoal.client._codec import ValueEncoder
    with pytest.raises(InvalidArgumentError, match="an integer outside -2\\^63..2\\^64-1") as info:
        ValueEncoder().encode("typed", "k", value)
    assert named in str(info.value) and "dataset=typed" in str(info.value)
