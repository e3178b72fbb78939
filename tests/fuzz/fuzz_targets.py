"""The checks behind the in-process fuzz targets: one input in, an AssertionError out if it breaks a rule.

Shared by the hypothesis tests (test_fuzz_commands.py, test_fuzz_expressions.py,
test_fuzz_formats.py) and the atheris runner (fuzz_atheris.py), so both fuzzers hold the
node to the same rules. Each `check_*` feeds one input to one decoder and asserts that it
either decodes or refuses with the error its callers handle; any other exception escapes
and fails the target. No I/O except the LMDB stores of `ScratchStores` (a temp dir).
"""
from __future__ import annotations

import functools
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import xxhash

from shoal.client.wire.pb import peer_pb2
from shoal.node.compute import EvaluationError, MsgpackDecoder, QueryError, compile_query
from shoal.node.compute.batch import Batch
from shoal.node.compute.columns import compile_expression
from shoal.node.compute.expressions import parse_expression
from shoal.node.compute.query import JoinedArrayDecoder
from shoal.node.compute.schema import Schema, SchemaError
from shoal.node.errors import InvalidRequestError, StorageFullError
from shoal.node.metadata import commands, fsm, jobs
from shoal.node.metadata.view import MetadataView
from shoal.node.records import RecordCodec
from shoal.node.replication.learner import CopyFailed, check_piece
from shoal.node.storage import fill
from shoal.node.storage.entry import Entry
from shoal.node.storage.shard_store import ShardStore

INTERNAL_ERROR = "internal error applying command"   # fsm.apply's catch-all: a handler raised
NODES = ("n1", "n2", "n3", "n4")
SCHEMA_JSON = {"i": "int", "f": "float?", "s": "str?", "b": "bool?", "t": "timestamp?"}
SCHEMA_FIELDS = list(SCHEMA_JSON)
_pack = functools.partial(msgpack.packb, use_bin_type=True)


# ---- the Raft command decoder and the state machine ----

@functools.cache
def populated_state() -> dict[str, Any]:
    """A state where most commands can succeed: four alive nodes in two zones, a controller
    (n1, term 1), a 4-shard R=2 dataset "ds" with a learner on shard 0, a typed dataset
    "typed", and a running job "job1" with one task assigned."""
    state = fsm.initial_state()
    setup = [commands.init_cluster("cluster-1")]
    setup += [commands.register_node(node, f"10.0.0.{i}:7400", f"z{i % 2}", f"10.0.0.{i}:7500")
              for i, node in enumerate(NODES)]
    setup += [commands.become_controller("n1", 1), commands.create_dataset("ds", 4, 2),
              commands.create_dataset("typed", 2, 1, schema=SCHEMA_JSON)]
    for command in setup:
        state, result = fsm.apply(state, command)
        assert result["ok"], result
    shard = state["datasets"]["ds"]["shard_map"][0]
    learner = next(node for node in NODES if node not in shard["replicas"])
    for command in (commands.add_learner("ds", 0, learner, shard["epoch"], controller_term=1),
                    commands.submit_job("job1", "ds", "query", _pack({"aggs": [["n", "count", None]]}), 1.0,
                                        [(0, shard["primary"])]),
                    commands.assign_tasks("job1", [(1, 1, "n2")], controller_term=1)):
        state, result = fsm.apply(state, command)
        assert result["ok"], result
    return state


def check_command(data: bytes) -> None:
    """decode_command answers a command whose arguments have their schema types, or ValueError;
    apply over the populated state obeys check_apply."""
    try:
        decoded = commands.decode_command(data)
    except ValueError:
        pass
    else:
        schema = commands._SCHEMAS[decoded["op"]]
        assert set(decoded) == {"v", "op", "request_id", *schema}, decoded
        assert all(type(decoded[name]) is kind for name, kind in schema.items()), decoded
    check_apply(populated_state(), data)


def check_apply(state: dict[str, Any], data: bytes) -> dict[str, Any]:
    """fsm.apply is total, pure and deterministic, and keeps the state's invariants; returns the new state.

    Total means more than "does not raise" (apply catches everything): no handler may raise,
    which apply would report as INTERNAL_ERROR. An error result changes nothing but the
    request table. The state stays msgpack- and pickle-serializable and readable by
    MetadataView (every node builds one per change).
    """
    before = _pack(state)
    new_state, result = fsm.apply(state, data)
    assert _pack(state) == before, "apply changed its input state"
    assert isinstance(result, dict) and type(result.get("ok")) is bool, result
    if not result["ok"]:
        assert not result["message"].startswith(INTERNAL_ERROR), result["message"]
        assert result["error"] in commands.ERROR_CODES, result
        assert all(new_state[key] is state[key] for key in state if key != "requests"), "error changed the state"
    again_state, again = fsm.apply(state, data)
    assert _pack(again_state) == _pack(new_state) and _pack(again) == _pack(result), "apply is not deterministic"
    check_state(new_state)
    return new_state


def check_state(state: dict[str, Any]) -> None:
    """The invariants every node relies on when it reads the state."""
    assert type(state["version"]) is int and state["version"] >= 0
    for node_id, node in state["nodes"].items():
        assert type(node_id) is str and node["state"] in commands.NODE_STATES, node
        assert all(type(node[key]) is str for key in ("address", "zone", "raft_address")), node
    for name, dataset in state["datasets"].items():
        assert len(dataset["shard_map"]) == dataset["shards"] >= 1, name
        for entry in dataset["shard_map"]:
            replicas, learners = entry["replicas"], entry.get("learners", [])
            assert replicas and replicas[0] == entry["primary"] and len(set(replicas)) == len(replicas), entry
            assert not set(learners) & set(replicas) and len(set(learners)) == len(learners), entry
            assert set(entry.get("incarnations", {})) <= set(replicas) and entry["epoch"] >= 1, entry
        if dataset.get("schema"):
            Schema.from_json(dataset["schema"])
    for job in state["jobs"].values():
        assert job["state"] in ("running", *jobs.FINISHED), job["state"]
        for task in job["tasks"]:
            assert all(type(a) is int and type(n) is str for a, n in task["attempts"]), task
    assert len(state["requests"]) <= fsm.REQUESTS_MAX
    packed = _pack(state)
    assert _pack(msgpack.unpackb(packed, raw=False, strict_map_key=False)) == packed
    pickle.dumps(state)
    view = MetadataView.from_state(state)
    view.under_replicated()
    MetadataView.from_state(jobs.without_results(state))


# ---- the expression parser and the query compiler ----

DOCUMENTS: list[Any] = [
    {"i": 1, "f": 2.5, "s": "ab", "b": True, "t": 0, "n": None, "m": {"x": [1, "a"]}},
    {"i": -2**63, "f": float("nan"), "s": "", "b": False, "l": [1, 2], "m": {"x": None}},
    {"i": 2**64 - 1, "f": float("-inf"), "s": "\udcff", "x": b"\x00\xff"},
    {}, None, 7, "text", [1, "a", None], {"i": "1", "f": "x", "s": 3, "b": 0, "m": 5}]
# a typed dataset's records as stored: always a full positional list (the node encodes every write)
POSITIONAL: list[Any] = [[1, 2.5, "ab", True, 0], [-5, None, None, None, None], [2**64 - 1, float("nan"), "", False, -2**40],
                         [-2**63, float("-inf"), "\x00", None, 253402300799999]]


def check_expression(text: str) -> None:
    """parse_expression answers an AST or QueryError; compile_expression (documents or a schema's
    fields) answers a column function or QueryError; evaluating it, by batch or record by record,
    answers values or EvaluationError."""
    try:
        node = parse_expression(text)
    except QueryError:
        return
    for fields, records in ((None, DOCUMENTS), (SCHEMA_FIELDS, POSITIONAL)):
        try:
            compiled = compile_expression(node, fields=fields)
        except QueryError:
            continue
        keys = [b"k%d" % index for index in range(len(records))] + [b"\xff\xfe"]
        batch_records = [*records, records[0]]
        try:
            compiled(Batch(list(batch_records), keys))
        except EvaluationError:
            pass
        for record, key in zip(batch_records, keys):
            try:
                compiled.evaluate(record, key)
            except EvaluationError:
                pass


def check_spec(spec: object, records: list[Any]) -> None:
    """compile_query answers a query or QueryError, for documents and for a typed dataset's
    positional records; a shard's partial() over `records` answers a msgpack-safe partial or
    EvaluationError; merge() of the partials (run on the node's event loop side) never raises."""
    pairs = [(b"k%04d" % index, _pack(record)) for index, record in enumerate(records)]
    positional = [(key, _pack(stored)) for key, stored in ((key, _positional(raw)) for key, raw in pairs)
                  if stored is not None]
    for fields, rows, decoder in ((None, pairs, MsgpackDecoder()),
                                  (SCHEMA_FIELDS, positional, JoinedArrayDecoder())):
        try:
            query = compile_query(spec, fields)  # type: ignore[arg-type]   # any object, on purpose
        except QueryError:
            continue
        partials = []
        for part in (rows[::2], rows[1::2]):
            try:
                partial, _ = query.partial(part, decoder)
            except EvaluationError:
                continue
            partials.append(msgpack.unpackb(_pack(partial), raw=False, strict_map_key=False))
        _pack(query.merge(partials))
        _pack(query.merge(partials[::-1]))


def _positional(raw: bytes) -> list[Any] | None:
    """A document as the typed dataset stores it; None for one its Put would refuse."""
    try:
        return Schema.from_json(SCHEMA_JSON).encode(msgpack.unpackb(raw, raw=False, strict_map_key=False))
    except ValueError:
        return None


# ---- replication entries, typed records and copy pieces ----

MAP_SIZE_BYTES = 256 << 20


class ScratchStores:
    """Two LMDB shard stores in a temp dir (removed by close()): one that applies entries,
    one that receives copy pieces. sync off: the checks never reopen them."""

    def __init__(self, base: Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="shoal-fuzz-", dir=base))
        self.backup = ShardStore(self.path / "backup", map_size_bytes=MAP_SIZE_BYTES, sync=False)
        self.learner = ShardStore(self.path / "learner", map_size_bytes=MAP_SIZE_BYTES, sync=False)
        fill.begin(self.learner, "n1")

    def close(self) -> None:
        self.backup.close()
        self.learner.close()
        shutil.rmtree(self.path, ignore_errors=True)


def check_entry(payload: bytes, stores: ScratchStores) -> None:
    """Entry.decode answers an entry that encodes back to the same fields, or ValueError; a
    backup applying it as its next entry stores it or refuses with InvalidRequestError (what
    Replicate answers INVALID_ARGUMENT), or StorageFullError."""
    try:
        entry = Entry.decode(payload)
    except ValueError:
        return
    assert Entry.decode(entry.encode()) == entry
    store = stores.backup
    next_entry = Entry(store.state.seq + 1, entry.epoch, entry.keys, entry.values, entry.write_ids, entry.results)
    try:
        state = store.apply(Entry.decode(next_entry.encode()))
    except (InvalidRequestError, StorageFullError):
        return
    assert state.seq == next_entry.seq and store.verify() == (state.records, state.checksum)


def check_record(schema_json: object, value: bytes) -> None:
    """Schema.from_json answers a schema or SchemaError; RecordCodec.stored answers the positional
    record or InvalidRequestError; document() of what was stored answers the document again."""
    try:
        schema = Schema.from_json(schema_json)
    except SchemaError:
        return
    codec = RecordCodec("typed", schema)
    try:
        stored = codec.stored(b"key", value)
    except InvalidRequestError:
        return
    document = msgpack.unpackb(codec.document(stored), raw=False, strict_map_key=False)
    assert codec.stored(b"key", _pack(document)) == stored, "a stored record does not survive a read"


def check_chunk(message: peer_pb2.CopyShardChunk, held_id: str, held_bytes: int, stores: ScratchStores) -> None:
    """A learner holding `held_bytes` of snapshot `held_id` checks a CopyShardChunk (check_piece) or
    refuses it with CopyFailed (damaged on the way, or not what a primary sends); a piece it accepts
    is written to its staging file where the file ends, and once the file is whole the learner
    verifies it (whole-file digest) and prepares it for installing (an LMDB open of what arrived),
    each of which answers or raises BadSnapshotError, never another error or a crash."""
    learner = stores.learner
    state = fill.FillState("n1", -1, fill.COPYING, held_id.encode())
    state = fill.restart_staging(learner, state, held_id, sync=False)
    if held_bytes:
        fill.append(learner, 0, b"\0" * held_bytes, sync=False)
    try:
        check_piece(message, state.cursor, held_bytes, MAP_SIZE_BYTES)
    except CopyFailed:
        return
    assert xxhash.xxh64_intdigest(message.data) == message.digest
    if message.snapshot_id != held_id:
        assert message.offset == 0
        state = fill.restart_staging(learner, state, message.snapshot_id, sync=False)
    else:
        assert message.offset == held_bytes
    end = fill.append(learner, message.offset, message.data, sync=False)
    assert end <= message.snapshot_bytes <= MAP_SIZE_BYTES
    if end < message.snapshot_bytes:
        return
    try:
        state = fill.received(learner, state, message.snapshot_digest)
        state = fill.prepare(learner, "n1", False, MAP_SIZE_BYTES)
    except fill.BadSnapshotError:
        assert not fill.staging_path(learner).exists()
        return
    assert state.table == fill.REPLAYING and state.base == 1   # the real snapshot, prepared
    fill.staging_path(learner).unlink()


def valid_snapshot() -> bytes:
    """A snapshot file of a small shard replica (what a primary sends), made once."""
    global _VALID_SNAPSHOT
    if _VALID_SNAPSHOT is None:
        scratch = Path(tempfile.mkdtemp(prefix="shoal-fuzz-snapshot-"))
        try:
            with ShardStore(scratch / "p", map_size_bytes=MAP_SIZE_BYTES, sync=False) as primary:
                primary.apply(Entry(1, 1, [b"a", b"b"], [b"\x01", b"\x02"], [b"w" * 24], [b"\xc0"]))
                fill.write_snapshot(primary, scratch / "s.mdb")
            _VALID_SNAPSHOT = (scratch / "s.mdb").read_bytes()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _VALID_SNAPSHOT


_VALID_SNAPSHOT: bytes | None = None
