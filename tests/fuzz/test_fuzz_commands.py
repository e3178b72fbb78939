"""Fuzz target 1 (issue 19.7): the Raft command decoder and the metadata state machine.

Feeds `commands.decode_command` and `fsm.apply` (over a populated state: nodes, a controller,
datasets with a learner, a running job) with
- arbitrary bytes and arbitrary msgpack documents (mostly refused by the decoder), and
- structurally valid commands built from `commands._SCHEMAS`: every op, every argument of
  its schema type, with fuzzed values (names of existing and unknown nodes, datasets and
  jobs, empty and over-long strings, negative, zero and 64-bit-edge integers, NaN, odd
  lists and schemas), applied in sequences so later commands see earlier changes.
Asserts (fuzz_targets.check_command / check_apply): the decoder answers a well-typed command
or ValueError; apply never reaches its catch-all ("internal error", i.e. no handler raises),
never changes its input, answers the same for the same input, changes only the request table
on an error, and leaves a state whose invariants hold and that msgpack, pickle and
MetadataView all read.
"""
from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

from fuzz_targets import NODES, SCHEMA_JSON, check_apply, check_command, populated_state
from shoal.node.metadata import commands, jobs

_STATE = populated_state()
_DATASET_IDS = sorted(dataset["id"] for dataset in _STATE["datasets"].values())
_NAMES = [*NODES, "n9", "ds", "typed", "job1", "nope", *_DATASET_IDS, "ds@1", "", " ", "a b", "x" * 129,
          *commands.NODE_STATES, *jobs.JOB_KINDS, *commands.ERROR_CODES, "10.0.0.1:7500", "h:1", "a" * 32, "a" * 65]
_STRINGS = st.one_of(st.sampled_from(_NAMES), st.text(max_size=24))
_INTS = st.one_of(st.integers(-2, 6), st.sampled_from([2**63 - 1, -2**63, 2**64 - 1, 4096, 4097, 10]),
                  st.integers(-2**63, 2**64 - 1))
_FLOATS = st.floats(allow_nan=True, allow_infinity=True)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _STRINGS, st.binary(max_size=16))
_SCHEMAS = st.one_of(
    st.just({}), st.just(SCHEMA_JSON), st.just({"fields": [{"name": "a", "type": "int"}]}),
    st.dictionaries(_STRINGS, st.one_of(st.sampled_from(["int", "float?", "str", "bool", "timestamp?", "?", ""]),
                                        _SCALARS), max_size=4),
    st.fixed_dictionaries({"fields": st.lists(st.dictionaries(st.sampled_from(["name", "type", "nullable", "x"]),
                                                              _SCALARS, max_size=4), max_size=3)}))
_LISTS = st.one_of(
    st.lists(st.lists(st.one_of(_INTS, _STRINGS), max_size=4), max_size=4),   # attempts, replicas
    st.lists(st.tuples(st.sampled_from(_DATASET_IDS), st.integers(-1, 4), st.sampled_from(["a" * 32, "", "b"]))
             .map(list), max_size=3),
    st.lists(_SCALARS, max_size=3))
_BY_TYPE: dict[type, st.SearchStrategy[Any]] = {
    str: _STRINGS, int: _INTS, float: _FLOATS, bool: st.booleans(), dict: _SCHEMAS, list: _LISTS,
    bytes: st.one_of(st.binary(max_size=64), st.just(msgpack.packb({"where": "i > 1"}))),
}
_REQUEST_IDS = st.one_of(st.uuids().map(str), st.sampled_from(["r1", "r2", "x" * 128]))
_NODE_IDS = st.sampled_from([*NODES, "n9", ""])
_TASKS = st.integers(-1, 4)
_ATTEMPTS = st.integers(0, 3)
# Values aimed at the populated state, so that commands succeed often enough to change it
# (each is mixed with any value of the argument's type in shaped_command).
_AIMED: dict[str, st.SearchStrategy[Any]] = {
    "node_id": _NODE_IDS, "new_primary": _NODE_IDS, "dataset": st.sampled_from(["ds", "typed", "nope"]),
    "dataset_id": st.sampled_from([*_DATASET_IDS, "ds@1"]), "shard": _TASKS, "task": _TASKS, "attempt": _ATTEMPTS,
    "expected_epoch": st.integers(0, 4), "controller_term": st.sampled_from([1, 1, 0, 2]), "term": st.integers(0, 3),
    "job_id": st.sampled_from(["job1", "job2", ""]), "state": st.sampled_from([*commands.NODE_STATES, "zombie"]),
    "kind": st.sampled_from(jobs.JOB_KINDS), "code": st.sampled_from([*commands.ERROR_CODES, ""]),
    "incarnation": st.sampled_from(["a" * 32, "b" * 32, ""]), "name": st.sampled_from(["ds", "new1", "typed", "a b"]),
    "shards": st.integers(-1, 6), "replication": st.integers(-1, 5), "cluster_id": st.sampled_from(["c2", ""]),
    "address": st.sampled_from(["10.0.0.9:7400", ""]), "raft_address": st.sampled_from(["10.0.0.1:7500", "r:9", ""]),
    "attempts": st.one_of(st.lists(st.tuples(_TASKS, _NODE_IDS).map(list), max_size=3),
                          st.lists(st.tuples(_TASKS, _ATTEMPTS, _NODE_IDS).map(list), max_size=3)),
    "replicas": st.lists(st.tuples(st.sampled_from(_DATASET_IDS), _TASKS, st.sampled_from(["a" * 32, ""])).map(list),
                         max_size=3),
}


def shaped_command(op: str) -> st.SearchStrategy[bytes]:
    arguments = {name: st.one_of(_AIMED[name], _AIMED[name], _BY_TYPE[kind]) if name in _AIMED else _BY_TYPE[kind]
                 for name, kind in commands._SCHEMAS[op].items()}
    return st.fixed_dictionaries({"v": st.just(1), "op": st.just(op), "request_id": _REQUEST_IDS, **arguments}) \
        .map(lambda command: msgpack.packb(command, use_bin_type=True))


SHAPED_COMMANDS = st.one_of(*(shaped_command(op) for op in sorted(commands.OPS)))
MSGPACK_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(_STRINGS, st.binary(max_size=4), _INTS), inner,
                                                 max_size=4)), max_leaves=12)
ENVELOPES = st.dictionaries(
    st.sampled_from(["v", "op", "request_id", *{name for schema in commands._SCHEMAS.values() for name in schema}]),
    st.one_of(_SCALARS, st.sampled_from([1, 2, *commands.OPS]), _LISTS), max_size=8)
ANY_COMMAND = st.one_of(
    st.binary(max_size=256),
    MSGPACK_VALUES.map(lambda value: msgpack.packb(value, use_bin_type=True)),
    ENVELOPES.map(lambda value: msgpack.packb(value, use_bin_type=True)),
    SHAPED_COMMANDS)


def _apply_in_order(sequence: list[bytes]) -> None:
    state = _STATE
    for command in sequence:
        state = check_apply(state, command)


def test_fuzz_command_decoder_refuses_or_decodes(fuzz: Any) -> None:
    """Arbitrary bytes, msgpack documents, envelopes and schema-shaped commands, one at a time:
    decode_command types every argument or raises ValueError, and apply is total (check_apply)."""
    fuzz("commands.decode", ANY_COMMAND, check_command, ci_examples=80)


def test_fuzz_command_sequences_keep_the_state_machine_total(fuzz: Any) -> None:
    """Sequences of schema-shaped commands with fuzzed values (and some garbage) over the
    populated state: every apply is total, pure and deterministic, and every state on the
    way keeps the invariants and serializes."""
    sequences = st.lists(st.one_of(SHAPED_COMMANDS, SHAPED_COMMANDS, ANY_COMMAND), min_size=1, max_size=8)
    fuzz("commands.sequences", sequences, _apply_in_order, ci_examples=40)
