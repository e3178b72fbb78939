"""Metadata commands: the messages written to the Raft log, and the shape of their results.

A command is a msgpack map `{"v": 1, "op": str, "request_id": str, ...args}`. It is an
explicit, versioned message rather than pickled method arguments because it persists in
the journal and in snapshots: a later release must still read it (DESIGN.md section 3).
`request_id` makes every command idempotent: after an unknown outcome (timeout, leader
change) the caller re-proposes the *same bytes*, and the state machine answers the stored
result instead of applying it twice.

`decode_command` checks the envelope and the type of every argument and raises
ValueError on anything else; the state machine (fsm.py) checks the values (name syntax,
ranges, existence) and answers an error result. Constructors decode what they encode, so
a programming error surfaces at the call site instead of in the log.

Results are plain dicts: `{"ok": True, ...}` or `{"ok": False, "error": CODE, "message": str}`,
CODE being a name of `shoal.v1.ErrorCode` (proto/shoal/v1/data.proto).

Room left, not implemented: job ops (`submit_job`, `finish_task`, ...) and token ops
(`put_token`, `revoke_token`) will add entries to `_SCHEMAS` and handlers in fsm.py; the
state already carries empty `jobs` and `tokens` maps so that adding them needs no state
migration.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

import msgpack

logger = logging.getLogger(__name__)

COMMAND_VERSION = 1
COMMAND_BYTES_MAX = 64 * 1024        # metadata commands are small; anything bigger is a bug
REQUEST_ID_CHARS_MAX = 128

# Error codes used here: names of shoal.v1.ErrorCode (a unit test checks them against the proto).
UNKNOWN_DATASET = "UNKNOWN_DATASET"
DATASET_EXISTS = "DATASET_EXISTS"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
STALE_EPOCH = "STALE_EPOCH"
NOT_ENOUGH_NODES = "NOT_ENOUGH_NODES"
STALE_CONTROLLER = "STALE_CONTROLLER"   # a controller decision from a term a newer controller replaced
ERROR_CODES = frozenset({UNKNOWN_DATASET, DATASET_EXISTS, INVALID_ARGUMENT, STALE_EPOCH, NOT_ENOUGH_NODES,
                         STALE_CONTROLLER})
INCARNATION_CHARS_MAX = 64

NODE_STATES = ("alive", "suspect", "dead", "draining", "removed")

# op -> {argument: type}. Every argument is required; no other key is allowed.
_SCHEMAS: dict[str, dict[str, type]] = {
    "register_node": {"node_id": str, "address": str, "zone": str, "raft_address": str},
    "set_node_state": {"node_id": str, "state": str, "controller_term": int},
    "create_dataset": {"name": str, "shards": int, "replication": int},
    "drop_dataset": {"name": str},
    "remove_replica": {"dataset": str, "shard": int, "node_id": str, "expected_epoch": int, "controller_term": int},
    "promote": {"dataset": str, "shard": int, "new_primary": str, "expected_epoch": int, "controller_term": int},
    "noop": {},
    # identity (issue 15): the cluster id, and which LMDB environment each in-sync replica is
    "init_cluster": {"cluster_id": str},
    "record_incarnations": {"node_id": str, "replicas": list},   # [[dataset_id, shard, incarnation], ...]
    "replica_lost": {"dataset_id": str, "shard": int, "node_id": str, "incarnation": str},
    # controller fencing (issue 15): the Raft leader records the term it controls in before deciding
    "become_controller": {"node_id": str, "term": int},
}
# Arguments added after commands were already logged: a command from an older journal
# lacks them and decodes with this value, so replaying it gives the result it had then.
# controller_term 0 = "not fenced by a controller term" (fsm.py: _controller_problem).
_ADDED_LATER: dict[str, dict[str, Any]] = {
    "set_node_state": {"controller_term": 0},
    "remove_replica": {"controller_term": 0},
    "promote": {"controller_term": 0},
}
OPS = frozenset(_SCHEMAS)
_ENVELOPE = frozenset({"v", "op", "request_id"})


def ok(**fields: Any) -> dict[str, Any]:
    """A success result carrying `fields`."""
    return {"ok": True, **fields}


def error(code: str, message: str, **fields: Any) -> dict[str, Any]:
    """A failure result; `code` must be one of ERROR_CODES."""
    assert code in ERROR_CODES, code
    return {"ok": False, "error": code, "message": message, **fields}


def new_request_id() -> str:
    return uuid.uuid4().hex


def decode_command(data: bytes) -> dict[str, Any]:
    """Decode and type-check one command; raise ValueError naming what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"a command is bytes, not {type(data).__name__}")
    if len(data) > COMMAND_BYTES_MAX:
        raise ValueError(f"command of {len(data)} bytes exceeds {COMMAND_BYTES_MAX}")
    try:
        command = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, TypeError, ...)
        raise ValueError(f"not a msgpack document: {exc}") from None
    if not isinstance(command, dict):
        raise ValueError(f"a command is a map, not {type(command).__name__}")
    if command.get("v") != COMMAND_VERSION or type(command.get("v")) is not int:
        raise ValueError(f"unsupported command version {command.get('v')!r}")
    op = command.get("op")
    if not isinstance(op, str) or op not in _SCHEMAS:
        raise ValueError(f"unknown op {op!r}")
    request_id = command.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= REQUEST_ID_CHARS_MAX:
        raise ValueError(f"request_id must be a string of 1..{REQUEST_ID_CHARS_MAX} characters")
    schema = _SCHEMAS[op]
    for name, value in _ADDED_LATER.get(op, {}).items():
        command.setdefault(name, value)
    extra = set(command) - _ENVELOPE - set(schema)
    if extra:
        raise ValueError(f"{op}: unexpected arguments {sorted(map(str, extra))}")
    for name, kind in schema.items():
        if name not in command:
            raise ValueError(f"{op}: missing argument {name!r}")
        value = command[name]
        # bool is an int subclass: reject it explicitly for int arguments
        if type(value) is not kind:
            raise ValueError(f"{op}: {name} must be {kind.__name__}, not {type(value).__name__}")
    return command


def _encode(op: str, request_id: str | None, **args: Any) -> bytes:
    command = {"v": COMMAND_VERSION, "op": op, "request_id": request_id or new_request_id(), **args}
    data: bytes = msgpack.packb(command, use_bin_type=True)
    decode_command(data)   # raises ValueError at the call site, not later in the log
    return data


def register_node(node_id: str, address: str, zone: str, raft_address: str, *,
                  request_id: str | None = None) -> bytes:
    """Insert or update a node; its state becomes "alive"."""
    return _encode("register_node", request_id, node_id=node_id, address=address, zone=zone,
                   raft_address=raft_address)


def set_node_state(node_id: str, state: str, *, controller_term: int = 0, request_id: str | None = None) -> bytes:
    """state: one of NODE_STATES. A controller decision: controller_term is the term of the
    controller's become_controller (0 only while no controller was ever recorded)."""
    return _encode("set_node_state", request_id, node_id=node_id, state=state, controller_term=controller_term)


def create_dataset(name: str, shards: int, replication: int = 0, *, request_id: str | None = None) -> bytes:
    """replication 0 = the default, min(3, alive nodes)."""
    return _encode("create_dataset", request_id, name=name, shards=shards, replication=replication)


def drop_dataset(name: str, *, request_id: str | None = None) -> bytes:
    return _encode("drop_dataset", request_id, name=name)


def remove_replica(dataset: str, shard: int, node_id: str, expected_epoch: int, *, controller_term: int = 0,
                   request_id: str | None = None) -> bytes:
    """Fence a failed backup out of the in-sync set (epoch + 1).

    controller_term: the controller's term when the controller decides it (a dead node's
    replica); 0 when the shard's primary fences out a backup that failed a write, which
    is not a controller decision: expected_epoch fences that one (a deposed primary's
    epoch is stale).
    """
    return _encode("remove_replica", request_id, dataset=dataset, shard=shard, node_id=node_id,
                   expected_epoch=expected_epoch, controller_term=controller_term)


def promote(dataset: str, shard: int, new_primary: str, expected_epoch: int, *, controller_term: int = 0,
            request_id: str | None = None) -> bytes:
    """Make an in-sync backup the primary; the old primary leaves the in-sync set (epoch + 1).

    controller_term: the controller's term when the controller decides it (a dead primary);
    0 when a primary steps down for a backup that holds more than it (fenced by expected_epoch).
    """
    return _encode("promote", request_id, dataset=dataset, shard=shard, new_primary=new_primary,
                   expected_epoch=expected_epoch, controller_term=controller_term)


def become_controller(node_id: str, term: int, *, request_id: str | None = None) -> bytes:
    """The Raft leader of `term` takes control; refused (STALE_CONTROLLER) unless term is
    after the recorded controller's (or is the same controller's term again)."""
    return _encode("become_controller", request_id, node_id=node_id, term=term)


def init_cluster(cluster_id: str, *, request_id: str | None = None) -> bytes:
    """Give the cluster its id, once: the first committed init wins, later ones answer its id."""
    return _encode("init_cluster", request_id, cluster_id=cluster_id)


def record_incarnations(node_id: str, replicas: list[tuple[str, int, str]], *,
                        request_id: str | None = None) -> bytes:
    """Record the incarnation of replicas of `node_id` that have none recorded yet."""
    return _encode("record_incarnations", request_id, node_id=node_id,
                   replicas=[[dataset_id, shard, incarnation] for dataset_id, shard, incarnation in replicas])


def replica_lost(dataset_id: str, shard: int, node_id: str, incarnation: str, *,
                 request_id: str | None = None) -> bytes:
    """The node's replica is not the one recorded (wiped, restored, re-created): it leaves the in-sync set."""
    return _encode("replica_lost", request_id, dataset_id=dataset_id, shard=shard, node_id=node_id,
                   incarnation=incarnation)


def noop(*, request_id: str | None = None) -> bytes:
    """A barrier: changes nothing and is not recorded in the request table."""
    return _encode("noop", request_id)
