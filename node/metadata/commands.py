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

Re-replication (issue 18): `add_learner` (a controller decision: a node starts filling a
copy of a shard; the epoch stays, a learner is not in the in-sync set) and `join_in_sync`
(the shard's primary: a caught-up learner joins the in-sync set, epoch + 1, its replica's
incarnation recorded); `remove_replica` also drops a learner (epoch unchanged).

Job ops (`submit_job`, `assign_task`, `complete_task`, `complete_tasks`, `fail_job`, `cancel_job`) are
handled in jobs.py beside this file; token ops (`put_token`, `revoke_token`: an operator's
bearer tokens, stored as the SHA-256 of their secret) in tokens.py.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

import msgpack

logger = logging.getLogger(__name__)

COMMAND_VERSION = 1
TASK_RESULT_BYTES_MAX = 4 * 1024 * 1024   # one task's partial result travels in complete_task(s)
COMPLETIONS_MAX = 64                       # attempts in one complete_tasks (their results add up to at most
                                           # TASK_RESULT_BYTES_MAX: compute/completions.py)
_RESULT_OPS = frozenset({"complete_task", "complete_tasks"})
SMALL_COMMAND_BYTES_MAX = 64 * 1024        # every other command is small; anything bigger is a bug
COMMAND_BYTES_MAX = TASK_RESULT_BYTES_MAX + SMALL_COMMAND_BYTES_MAX
REQUEST_ID_CHARS_MAX = 128

# Error codes used here: names of shoal.v1.ErrorCode (a unit test checks them against the proto).
UNKNOWN_DATASET = "UNKNOWN_DATASET"
DATASET_EXISTS = "DATASET_EXISTS"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
STALE_EPOCH = "STALE_EPOCH"
NOT_ENOUGH_NODES = "NOT_ENOUGH_NODES"
STALE_CONTROLLER = "STALE_CONTROLLER"   # a controller decision from a term a newer controller replaced
UNKNOWN_JOB = "UNKNOWN_JOB"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"       # a job limit (active jobs, result size)
JOB_FAILED = "JOB_FAILED"               # a task failed: the job's error names the shard and node
ERROR_CODES = frozenset({UNKNOWN_DATASET, DATASET_EXISTS, INVALID_ARGUMENT, STALE_EPOCH, NOT_ENOUGH_NODES,
                         STALE_CONTROLLER, UNKNOWN_JOB, LIMIT_EXCEEDED, JOB_FAILED})
INCARNATION_CHARS_MAX = 64

NODE_STATES = ("alive", "suspect", "dead", "draining", "removed")

# op -> {argument: type}. Every argument is required; no other key is allowed.
_SCHEMAS: dict[str, dict[str, type]] = {
    "register_node": {"node_id": str, "address": str, "zone": str, "raft_address": str},
    "set_node_state": {"node_id": str, "state": str, "controller_term": int},
    "create_dataset": {"name": str, "shards": int, "replication": int, "schema": dict, "encryption_key_id": str},
    "drop_dataset": {"name": str},
    "remove_replica": {"dataset": str, "shard": int, "node_id": str, "expected_epoch": int, "controller_term": int},
    "promote": {"dataset": str, "shard": int, "new_primary": str, "expected_epoch": int, "controller_term": int},
    "noop": {},
    # re-replication (issue 18): a learner is filled by the primary, then joins the in-sync set
    "add_learner": {"dataset": str, "shard": int, "node_id": str, "expected_epoch": int, "controller_term": int},
    "drain_node": {"node_id": str, "checked": bool},   # an operator's request: every replica moves off the node
    "remove_node": {"node_id": str, "force": bool},   # an operator's request: a dead or drained node leaves
    "join_in_sync": {"dataset": str, "shard": int, "node_id": str, "expected_epoch": int, "incarnation": str},
    # identity (issue 15): the cluster id, and which LMDB environment each in-sync replica is
    "init_cluster": {"cluster_id": str},
    "record_incarnations": {"node_id": str, "replicas": list},   # [[dataset_id, shard, incarnation], ...]
    "replica_lost": {"dataset_id": str, "shard": int, "node_id": str, "incarnation": str},
    # controller fencing (issue 15): the Raft leader records the term it controls in before deciding
    "become_controller": {"node_id": str, "term": int},
    # compute jobs (issue 17, jobs.py): times are the proposer's wall clock, for display only
    "submit_job": {"job_id": str, "dataset": str, "kind": str, "spec": bytes, "at_s": float,
                   "attempts": list},                               # [[task, node_id], ...]: attempt 1 of each
    "assign_tasks": {"job_id": str, "attempts": list, "controller_term": int},   # [[task, attempt, node_id]]
    "complete_task": {"job_id": str, "task": int, "attempt": int, "result": bytes, "records": int,
                      "at_s": float},
    "complete_tasks": {"completions": list, "at_s": float},   # [[job_id, task, attempt, result, records], ...]
    "fail_job": {"job_id": str, "code": str, "message": str, "at_s": float},
    "cancel_job": {"job_id": str, "at_s": float},
    # bearer tokens (issue 19, tokens.py): the digest is the secret's SHA-256, never the secret
    "put_token": {"token_id": str, "digest": str, "role": str, "name": str, "at_s": float},
    "revoke_token": {"token_id": str},
}
# Arguments added after commands were already logged: a command from an older journal
# lacks them and decodes with this value, so replaying it gives the result it had then.
# controller_term 0 = "not fenced by a controller term" (fsm.py: _controller_problem).
_ADDED_LATER: dict[str, dict[str, Any]] = {
    "set_node_state": {"controller_term": 0},
    "remove_replica": {"controller_term": 0},
    "promote": {"controller_term": 0},
    "create_dataset": {"schema": {}, "encryption_key_id": ""},   # {} = schema-less, "" = not encrypted
    "drain_node": {"checked": False},   # logged before a drain was checked (a node not alive, too few nodes)
    "remove_node": {"force": True},     # logged before the loss of a shard's only copy was refused
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
    if op not in _RESULT_OPS and len(data) > SMALL_COMMAND_BYTES_MAX:
        raise ValueError(f"{op} command of {len(data)} bytes exceeds {SMALL_COMMAND_BYTES_MAX}")
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


def drain_node(node_id: str, *, request_id: str | None = None) -> bytes:
    """The operator's `shoal node drain`: the node becomes "draining"; the controller moves its
    replicas to other nodes (controller/repair.py). Not a controller decision. Checked: refused
    for a node that is not alive, or when the others cannot hold its datasets' replication."""
    return _encode("drain_node", request_id, node_id=node_id, checked=True)


def remove_node(node_id: str, *, force: bool = False, request_id: str | None = None) -> bytes:
    """The operator's `shoal node remove|replace`: a dead or drained node becomes "removed" for
    good (never alive again, never registered again). Not a controller decision. Refused when
    it holds the only copy of a shard unless `force` (the operator accepts losing it)."""
    return _encode("remove_node", request_id, node_id=node_id, force=force)


def create_dataset(name: str, shards: int, replication: int = 0, *, schema: dict[str, Any] | None = None,
                   encryption_key_id: str = "", request_id: str | None = None) -> bytes:
    """replication 0 = the default, min(3, alive nodes); schema: Schema.to_json() or None (schema-less);
    encryption_key_id: the id of the key its values are sealed with (node/encryption.py), "" = plain."""
    return _encode("create_dataset", request_id, name=name, shards=shards, replication=replication,
                   schema=schema or {}, encryption_key_id=encryption_key_id)


def drop_dataset(name: str, *, request_id: str | None = None) -> bytes:
    return _encode("drop_dataset", request_id, name=name)


def remove_replica(dataset: str, shard: int, node_id: str, expected_epoch: int, *, controller_term: int = 0,
                   request_id: str | None = None) -> bytes:
    """Fence a failed backup out of the in-sync set (epoch + 1), or drop a learner (epoch unchanged).

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


def add_learner(dataset: str, shard: int, node_id: str, expected_epoch: int, *, controller_term: int,
                request_id: str | None = None) -> bytes:
    """A controller decision: `node_id` (alive, holding no copy of the shard) becomes a learner,
    to be filled by the primary. The epoch stays: a learner is not in the in-sync set."""
    return _encode("add_learner", request_id, dataset=dataset, shard=shard, node_id=node_id,
                   expected_epoch=expected_epoch, controller_term=controller_term)


def join_in_sync(dataset: str, shard: int, node_id: str, expected_epoch: int, incarnation: str, *,
                 request_id: str | None = None) -> bytes:
    """Proposed by the shard's primary once learner `node_id` caught up: it joins the in-sync set
    (epoch + 1) with its replica's `incarnation` recorded. Not a controller decision:
    expected_epoch fences it (a deposed primary's epoch is stale)."""
    return _encode("join_in_sync", request_id, dataset=dataset, shard=shard, node_id=node_id,
                   expected_epoch=expected_epoch, incarnation=incarnation)


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


def submit_job(job_id: str, dataset: str, kind: str, spec: bytes, at_s: float,
               attempts: list[tuple[int, str]], *, request_id: str | None = None) -> bytes:
    """Record a job over `dataset` with one task per shard (the node checked `spec` before);
    attempts: [(task, node_id)], the first attempt of each task the submitting node placed."""
    return _encode("submit_job", request_id or f"submit:{job_id}", job_id=job_id, dataset=dataset, kind=kind,
                   spec=spec, at_s=float(at_s), attempts=[[task, node] for task, node in attempts])


def assign_tasks(job_id: str, attempts: list[tuple[int, int, str]], *, controller_term: int,
                 request_id: str | None = None) -> bytes:
    """A controller decision: attempt number `attempt` of task `task` runs on `node_id`."""
    return _encode("assign_tasks", request_id, job_id=job_id, controller_term=controller_term,
                   attempts=[[task, attempt, node] for task, attempt, node in attempts])


def complete_task(job_id: str, task: int, attempt: int, result: bytes, records: int, at_s: float) -> bytes:
    """The first attempt of a task to commit wins; later ones are answered `discarded`."""
    return _encode("complete_task", f"complete:{job_id}:{task}:{attempt}", job_id=job_id, task=task,
                   attempt=attempt, result=result, records=records, at_s=float(at_s))


def complete_tasks(completions: list[tuple[str, int, int, bytes, int]], at_s: float) -> bytes:
    """Several attempts' complete_task in one command (one node's group commit): [(job_id, task,
    attempt, result, records)], applied in order, each with the first-attempt-wins rule. The
    request id names the attempts, so a retry with the same bytes is answered from the request table."""
    assert 0 < len(completions) <= COMPLETIONS_MAX, len(completions)
    names = "\n".join(f"{job_id}:{task}:{attempt}" for job_id, task, attempt, _, _ in completions)
    return _encode("complete_tasks", "completes:" + hashlib.sha256(names.encode()).hexdigest()[:32],
                   completions=[[job_id, task, attempt, result, records]
                                for job_id, task, attempt, result, records in completions], at_s=float(at_s))


def fail_job(job_id: str, code: str, message: str, at_s: float, *, request_id: str | None = None) -> bytes:
    """A running job fails with `code` (an ERROR_CODES name) and a message naming shard and node."""
    return _encode("fail_job", request_id, job_id=job_id, code=code, message=message, at_s=float(at_s))


def cancel_job(job_id: str, at_s: float, *, request_id: str | None = None) -> bytes:
    return _encode("cancel_job", request_id, job_id=job_id, at_s=float(at_s))


def put_token(token_id: str, digest: str, role: str, name: str, at_s: float, *,
              request_id: str | None = None) -> bytes:
    """Record a bearer token (node/auth.py). Idempotent: the same id and digest again is ok."""
    return _encode("put_token", request_id, token_id=token_id, digest=digest, role=role, name=name, at_s=at_s)


def revoke_token(token_id: str, *, request_id: str | None = None) -> bytes:
    return _encode("revoke_token", request_id, token_id=token_id)


def noop(*, request_id: str | None = None) -> bytes:
    """A barrier: changes nothing and is not recorded in the request table."""
    return _encode("noop", request_id)
