"""Regression tests for what the fuzz targets of issue 19.7 found, one per finding, in process.

Each names the input the fuzzer found (shrunk) and asserts the fixed behaviour: the decoder's
own error instead of another exception, or an answer in bounded time. The findings that need
a node (RPC edge mapping) are at the end of test_fuzz_rpc.py.
"""
from __future__ import annotations

import time

import msgpack
import pytest

from shoal.client.wire.pb import data_pb2, peer_pb2
from shoal.node import errors, interceptors
from shoal.node.compute import QueryError, compile_query
from shoal.node.compute.columns import compile_expression
from shoal.node.compute.expressions import parse_expression
from shoal.node.metadata import commands
from shoal.node.replication.copy_source import digest
from shoal.node.replication.learner import CopyFailed, check_piece
from shoal.node.server import check_replay, command_for
from shoal.node.storage.entry import Entry


@pytest.mark.parametrize("spec", [{"group_by": [None]}, {"select": [1]}])
def test_issue_19_7_non_string_group_by_or_select_is_a_query_error(spec: dict[str, object]) -> None:
    """Found: {"group_by": [None]} raised AttributeError ('NoneType' has no 'strip') in parse_spec,
    so SubmitJob answered UNKNOWN; now the entry's QueryError (INVALID_QUERY)."""
    with pytest.raises(QueryError, match="expected an expression string"):
        compile_query(spec)


@pytest.mark.parametrize("text", ["²", "1²", "٣"])
def test_issue_19_7_non_ascii_digits_are_a_query_error(text: str) -> None:
    """Found: '²' passed str.isdigit() in the tokenizer and int('²') raised ValueError (not a
    QueryError, which callers catch); numbers are ASCII digits only."""
    with pytest.raises(QueryError):
        parse_expression(text)


def test_issue_19_7_round_with_huge_negative_digits_answers_at_once() -> None:
    """Found: round(i, -9223372036854775807) spent hours in int.__round__ (10 ** 9.2e18): a hung
    worker, or a hung node when folded as a constant at SubmitJob. Now 0, as round() would say."""
    started_s = time.monotonic()
    assert compile_expression(parse_expression("round(5, -9223372036854775807)")).value == 0
    query = compile_query({"select": ["round(i, -4611686018427387904)", "round(i, -1)"]})
    partial, _ = query.partial([(b"k", msgpack.packb({"i": 15}))], lambda raw: msgpack.unpackb(raw))
    assert query.merge([partial]) == [{"round(i, -4611686018427387904)": 0, "round(i, -1)": 20}]
    assert time.monotonic() - started_s < 1.0


def test_issue_19_7_entry_with_an_over_long_write_id_is_refused_at_decode() -> None:
    """Found: an entry whose write id was 504 bytes decoded, then ShardStore.apply raised
    lmdb.BadValsizeError (Replicate answered UNKNOWN); write ids are 24 bytes, checked at decode."""
    payload = Entry(1, 1, [b"k"], [b"\x01"], [b"w" * 504], [b"\xc0"]).encode()
    with pytest.raises(ValueError, match="write ids must be 24 bytes"):
        Entry.decode(payload)


@pytest.mark.parametrize("snapshot_id, offset, data, snapshot_bytes, seq", [
    ("xyz", 0, b"d", 1, 1),                  # not a snapshot id
    ("", 0, b"d", 1, 1),                     # no snapshot id
    ("0" * 65, 0, b"d", 1, 1),               # an id past 64 characters
    ("ab", 4096, b"d", 8192, 1),             # a new snapshot must start at 0
    ("00", 8, b"d", 8192, 1),                # the held one goes on where the staging file ends (4)
    ("ab", 0, b"dd", 1, 1),                  # a piece past the file's end
    ("ab", 0, b"", 10, 1),                   # an empty piece before the end
    ("ab", 0, b"d", 0, 1),                   # an empty file
    ("ab", 0, b"d", 2**40, 1),               # a file larger than the map
    ("ab", 0, b"d", 1, 2**64 - 1),           # fill_base holds seq + 1 in 8 bytes
])
def test_issue_19_7_a_chunk_with_a_right_digest_but_bad_content_is_copy_failed(
        snapshot_id: str, offset: int, data: bytes, snapshot_bytes: int, seq: int) -> None:
    """Found (in the record copy): the learner decoded chunks without checks, so such chunks raised
    msgpack, TypeError, lmdb or OverflowError out of fill_replica ("learner crashed"). The snapshot
    copy's pieces are checked the same way: a learner holding 4 bytes of snapshot "00" refuses them."""
    message = peer_pb2.CopyShardChunk(snapshot_id=snapshot_id, offset=offset, data=data, digest=digest(data),
                                      snapshot_bytes=snapshot_bytes, seq=seq)
    with pytest.raises(CopyFailed):
        check_piece(message, b"00", 4, 1 << 30)


def test_issue_19_7_a_request_too_long_for_a_command_is_invalid_request() -> None:
    """Found: a 70 KB dataset name (or a job id past 121 characters) made the command constructor
    raise ValueError (UNKNOWN over gRPC); the server turns it into InvalidRequestError."""
    with pytest.raises(errors.InvalidRequestError, match="cannot be recorded"):
        command_for(commands.create_dataset, "x" * 70_000, 1)
    with pytest.raises(errors.InvalidRequestError, match="request_id"):
        command_for(commands.submit_job, "j" * 200, "ds", "query", b"\x80", 0.0, [])


def test_issue_19_7_status_details_stay_under_the_metadata_limit() -> None:
    """Found: "unknown dataset '<70 KB name>'" exceeded gRPC's 16 KiB metadata limit and the client
    got RESOURCE_EXHAUSTED without the error code; details are cut to ERROR_DETAILS_CHARS_MAX."""
    shown = interceptors.details(errors.UnknownDatasetError("unknown dataset " + "x" * 70_000))
    assert len(shown) < interceptors.ERROR_DETAILS_CHARS_MAX + 40 and shown.endswith("(70016 characters)")
    assert interceptors.details(errors.UnknownDatasetError("short")) == "short"


def test_issue_19_7_a_write_id_reused_for_another_kind_of_write_is_invalid_request() -> None:
    """Found: PutRecords with the write id of an earlier Put replayed the Put's result (None) and
    int(None) raised TypeError; a replayed result of the wrong kind is InvalidRequestError."""
    write = data_pb2.WriteId(client_id=b"\x00" * 16, request_seq=0)
    check_replay(True, write)
    with pytest.raises(errors.InvalidRequestError, match="another kind of write"):
        check_replay(False, write)
