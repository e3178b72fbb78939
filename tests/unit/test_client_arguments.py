"""Issue 16 point 4, API traps: compare_and_set after get on a missing key, and argument checks.

Method: the scripted fake Data server of test_client_errors (a real gRPC server on a
loopback port), given a CompareAndSet that follows the node's comparison rule
(node/storage/documents.py); the client talks to it over a real channel. Argument checks
must fail before any record RPC is sent.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import grpc
import msgpack
import pytest

from shoal.client import ABSENT, Client, ClientConfig, InvalidArgumentError
from shoal.client._client import CAS_NONE_ROUNDS_MAX
from shoal.client.wire.pb import data_pb2 as pb
from shoal.node.storage.documents import same_document
from test_client_errors import ScriptedData, scripted_server

NULL = msgpack.packb(None)


class CasData(ScriptedData):
    """ScriptedData with CompareAndSet, compared like the node; `flip` toggles missing <-> None after each call."""

    flip = False

    def CompareAndSet(self, request: pb.CompareAndSetRequest,
                      context: grpc.ServicerContext) -> pb.CompareAndSetResponse:
        self._act("CompareAndSet", request, context)
        with self.lock:
            current = self.records.get(request.key)
            if request.expect_absent:
                swapped = current is None
            else:
                swapped = current is not None and same_document(current, request.expected)
            if swapped and request.delete:
                self.records.pop(request.key, None)
            elif swapped:
                self.records[request.key] = request.value
            elif self.flip:
                if current is None:
                    self.records[request.key] = NULL
                else:
                    self.records.pop(request.key)
        return pb.CompareAndSetResponse(swapped=swapped, current_found=current is not None, current=current or b"")


@pytest.fixture
def fake() -> Iterator[CasData]:
    with scripted_server(CasData) as servicer:
        assert isinstance(servicer, CasData)
        yield servicer


@pytest.fixture
def client(fake: CasData) -> Iterator[Client]:
    with Client(fake.address, timeout_s=5) as client:
        yield client


def test_issue16_read_modify_write_from_a_missing_key(fake: CasData, client: Client) -> None:
    """get -> None on a missing key, then compare_and_set(None, ...) swaps: a counter from nothing.

    Method: five rounds of the idiom, each must swap on its first try.
    """
    for round_ in range(5):
        value = client.get("ds", "counter")
        assert value == (None if round_ == 0 else round_)
        assert client.compare_and_set("ds", "counter", value, (value or 0) + 1)
    assert client.get("ds", "counter") == 5
    first = fake.calls["CompareAndSet"][0]
    assert first.expect_absent and len(fake.calls["CompareAndSet"]) == 5


def test_issue16_expected_none_also_matches_a_stored_none(fake: CasData, client: Client) -> None:
    """A stored None reads as None too, so expected=None matches it: a second try, its own write id."""
    client.put("ds", "k", None)
    assert client.compare_and_set("ds", "k", client.get("ds", "k"), "set")
    assert client.get("ds", "k") == "set"
    missing_try, null_try = fake.calls["CompareAndSet"]
    assert missing_try.expect_absent and not null_try.expect_absent and null_try.expected == NULL
    assert missing_try.write_id != null_try.write_id


def test_issue16_expected_none_fails_on_another_value_after_one_try(fake: CasData, client: Client) -> None:
    """expected=None does not match 0, "" or False: False after the one try that saw the value."""
    for stored in (0, "", False, [], {}):
        fake.calls["CompareAndSet"].clear()
        client.put("ds", "k", stored)
        assert not client.compare_and_set("ds", "k", None, "x")
        assert client.get("ds", "k") == stored and len(fake.calls["CompareAndSet"]) == 1


def test_issue16_absent_is_strict_and_get_tells_absent_from_none(fake: CasData, client: Client) -> None:
    """ABSENT matches only a missing key; get(default=ABSENT) tells a missing key from a stored None."""
    client.put("ds", "null", None)
    assert not client.compare_and_set("ds", "null", ABSENT, 1)
    assert client.get("ds", "null", ABSENT) is None
    assert client.get("ds", "missing", ABSENT) is ABSENT
    assert client.get("ds", "missing") is None
    assert client.compare_and_set("ds", "missing", ABSENT, 1)
    assert client.compare_and_set("ds", "null", None, ABSENT)   # new=ABSENT deletes
    assert client.get("ds", "null", ABSENT) is ABSENT


def test_issue16_expected_none_gives_up_when_the_key_keeps_flipping(fake: CasData, client: Client) -> None:
    """A key flipping between missing and None under every try: False after CAS_NONE_ROUNDS_MAX tries."""
    fake.flip = True
    client.put("ds", "k", None)
    assert not client.compare_and_set("ds", "k", None, 1)
    assert len(fake.calls["CompareAndSet"]) == CAS_NONE_ROUNDS_MAX


GOOD: dict[str, tuple[Any, ...]] = {
    "create_dataset": ("x",), "drop_dataset": ("x",), "put": ("ds", "k", 1), "get": ("ds", "k"),
    "delete": ("ds", "k"), "compare_and_set": ("ds", "k", 1, 2), "put_many": ("ds", []), "scan": ("ds",),
    "node_status": ("127.0.0.1:1",), "node_status_or_error": ("127.0.0.1:1", 1.0),
    "query": ("ds",), "job": ("0123abcd",), "map_reduce": ("ds", len, len), "drain_node": ("n1",),
    "remove_node": ("n1",), "create_token": ("reader",), "revoke_token": ("0123456789ab",),
}

# (method, positional arguments, keyword arguments, words the message must contain)
BAD_ARGUMENTS: list[tuple[str, tuple[Any, ...], dict[str, Any], tuple[str, ...]]] = [
    ("create_dataset", ("x",), {"shards": "4"}, ("shards", "int", "str")),
    ("create_dataset", ("x",), {"shards": True}, ("shards", "bool")),
    ("create_dataset", ("x",), {"shards": 4.0}, ("shards", "float")),
    ("create_dataset", ("x",), {"shards": 0}, ("shards", "1..4096", "got 0")),
    ("create_dataset", ("x",), {"shards": 2**32}, ("shards", "1..4096", "4294967296")),
    ("create_dataset", ("x",), {"replication": "3"}, ("replication", "str")),
    ("create_dataset", ("x",), {"replication": -1}, ("replication", "0..9")),
    ("create_dataset", ("x",), {"replication": 2**32}, ("replication", "0..9", "4294967296")),
    ("create_dataset", ("x",), {"schema": {}}, ("schema", "at least one field")),
    ("create_dataset", ("x",), {"schema": {1: "int"}}, ("field name 1", "str")),
    ("create_dataset", (7,), {}, ("name", "int")),
    ("create_dataset", ("",), {}, ("name", "empty")),
    ("drop_dataset", (None,), {}, ("name", "NoneType")),
    ("put", (b"ds", "k", 1), {}, ("dataset", "bytes")),
    ("put", ("ds", 7, 1), {}, ("key", "int")),
    ("put", ("ds", "k", object()), {}, ("value", "encoded")),
    ("get", (["ds"], "k"), {}, ("dataset", "list")),
    ("get", ("ds", None), {}, ("key", "NoneType")),
    ("delete", (5, "k"), {}, ("dataset", "int")),
    ("delete", ("ds", 1.5), {}, ("key", "float")),
    ("compare_and_set", (None, "k", 1, 2), {}, ("dataset", "NoneType")),
    ("compare_and_set", ("ds", ("k",), 1, 2), {}, ("key", "tuple")),
    ("compare_and_set", ("ds", "k", {1}, 2), {}, ("value", "encoded")),
    ("put_many", (1, []), {}, ("dataset", "int")),
    ("put_many", ("ds", 5), {}, ("records", "int")),
    ("put_many", ("ds", "ab"), {}, ("records", "str")),
    ("put_many", ("ds", {"ab": 1}), {}, ("records", "items()")),
    ("put_many", ("ds", []), {"batch_records": "10"}, ("batch_records", "str")),
    ("put_many", ("ds", []), {"batch_records": 0}, ("batch_records", "1..")),
    ("put_many", ("ds", []), {"batch_bytes": 2**70}, ("batch_bytes", "1..", str(2**70))),
    ("put_many", ("ds", []), {"batch_bytes": True}, ("batch_bytes", "bool")),
    ("scan", (3,), {}, ("dataset", "int")),
    ("scan", ("ds",), {"limit": "5"}, ("limit", "str")),
    ("scan", ("ds",), {"limit": False}, ("limit", "bool")),
    ("scan", ("ds",), {"limit": -1}, ("limit", "0..9223372036854775807")),
    ("scan", ("ds",), {"limit": 2**70}, ("limit", "0..9223372036854775807", str(2**70))),
    ("scan", ("ds",), {"start": 5}, ("start", "int")),
    ("scan", ("ds",), {"end": 1.0}, ("end", "float")),
    ("scan", ("ds",), {"prefix": ["a"]}, ("prefix", "list")),
    ("node_status", (7400,), {}, ("address", "int")),
    ("node_status_or_error", (None, 1.0), {}, ("address", "NoneType")),
    ("node_status_or_error", ("127.0.0.1:1", "2"), {}, ("timeout_s", "str")),
    ("node_status_or_error", ("127.0.0.1:1", True), {}, ("timeout_s", "bool")),
    ("node_status_or_error", ("127.0.0.1:1", float("inf")), {}, ("timeout_s", "finite", "inf")),
    ("query", (None,), {}, ("dataset", "NoneType")),
    ("query", ("",), {}, ("dataset", "empty")),
    ("job", (12,), {}, ("job_id", "int")),
    ("drain_node", (4,), {}, ("node_id", "int")),
    ("drain_node", ("",), {}, ("node_id",)),
    ("remove_node", (None,), {}, ("node_id", "NoneType")),
    ("remove_node", ("n1",), {"replacement_raft": 5}, ("replacement_raft", "int")),
    ("create_token", (5,), {}, ("role", "int")),
    ("create_token", ("root",), {}, ("role", "root", "reader")),
    ("create_token", ("reader", 7), {}, ("name", "int")),
    ("revoke_token", (None,), {}, ("token_id", "NoneType")),
    ("map_reduce", ("ds", "not a function", len), {"output": "out"}, ("functions", "str")),
    ("map_reduce", (3, len, len), {"output": "out"}, ("dataset", "int")),
    ("map_reduce", ("ds", len, len), {"output": None}, ("output", "NoneType")),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "words"), BAD_ARGUMENTS,
                         ids=[f"{m}-{'-'.join(w)}" for m, _, _, w in BAD_ARGUMENTS])
def test_issue16_bad_arguments_raise_invalid_argument_before_sending(
        fake: CasData, client: Client, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        words: tuple[str, ...]) -> None:
    """Each public method: a wrong type or range is InvalidArgumentError naming the argument and type, sent nowhere."""
    with pytest.raises(InvalidArgumentError) as info:
        result = getattr(client, method)(*args, **kwargs)
        if inspect.isgenerator(result):
            next(result)
    for word in words:
        assert word in str(info.value)
    assert {name for name, calls in fake.calls.items() if calls} <= {"GetClusterMap"}


def test_issue16_every_public_method_with_arguments_is_covered() -> None:
    """The table above names every public Client method that takes arguments (a new one must be added)."""
    public = {name for name, member in inspect.getmembers(Client, inspect.isfunction)
              if not name.startswith("_") and len(inspect.signature(member).parameters) > 1}
    assert public == {method for method, *_ in BAD_ARGUMENTS} == set(GOOD)


def test_issue16_good_arguments_pass_the_checks(fake: CasData, client: Client) -> None:
    """The baseline of the table: the same methods with good arguments raise no InvalidArgumentError."""
    for method, args in GOOD.items():
        result = None
        try:
            result = getattr(client, method)(*args)
        except InvalidArgumentError:
            pytest.fail(f"{method}{args!r} rejected good arguments")
        except Exception:   # the fake does not serve every RPC: anything but a bad argument is fine
            pass
        if inspect.isgenerator(result):
            list(result)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"timeout_s": "5"}, ("timeout_s", "str")),
    ({"timeout_s": True}, ("timeout_s", "bool")),
    ({"timeout_s": 0}, ("timeout_s", "(0, 31536000]")),
    ({"timeout_s": float("inf")}, ("timeout_s", "finite", "(0, 31536000]", "got inf")),
    ({"timeout_s": 1e12}, ("timeout_s", "(0, 31536000]", "1000000000000.0")),
    ({"config": ClientConfig(connect_timeout_s=float("nan"))}, ("connect_timeout_s", "got nan")),
    ({"config": ClientConfig(message_bytes_max=2**31)}, ("message_bytes_max", "..2147483647")),
    ({"addresses": 7400}, ("addresses", "int")),
    ({"config": {"timeout_s": 1}}, ("config", "dict")),
    ({"config": ClientConfig(attempts_per_call=2.5)}, ("attempts_per_call", "int", "float")),
    ({"config": ClientConfig(map_timeout_s="1")}, ("map_timeout_s", "str")),
    ({"config": ClientConfig(addresses="127.0.0.1:7400")}, ("addresses", "tuple")),  # type: ignore[arg-type]
])
def test_issue16_client_constructor_checks_its_arguments(kwargs: dict[str, Any], words: tuple[str, ...]) -> None:
    """Client(...) and ClientConfig fields: InvalidArgumentError naming the argument, no TypeError later."""
    with pytest.raises(InvalidArgumentError) as info:
        Client(**kwargs)
    for word in words:
        assert word in str(info.value)
