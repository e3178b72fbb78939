"""The metadata state machine: `apply(state, command) -> (new_state, result)`. Pure.

Why pure, total and copy-on-write (see DESIGN.md beside this file):
- pysyncobj re-applies every logged command after a restart, and retries forever a
  command whose replicated method raises (notes/dependencies.md section 0, items 1 and 4).
  So `apply` does no I/O, never raises (any exception becomes an error result with the
  state unchanged) and depends only on its arguments. Side effects live in reconcilers
  that read the state.
- The state is read by gRPC handlers on other threads while the Raft tick thread applies
  commands. `apply` never mutates its input: it builds new dicts along the changed path
  and shares the rest, so a reader holding an old state sees a consistent snapshot, and
  publishing a new state is one attribute assignment.
- The state is plain dicts, lists, str and int, so pickle (pysyncobj dumps) and msgpack
  (LocalMetadata) both store it.

State layout:
  version   +1 per applied command that changed nodes, datasets or tokens (leases name it)
  jobs_version  +1 per applied job command that changed the job table (jobs.py; not `version`)
  nodes     {node_id: {"address", "zone", "state", "raft_address"}}
  datasets  {name: {"shards", "replication", "shard_map": [{"epoch", "primary",
             "replicas" (primary first, the in-sync set), "learners"}]}}
            learners (issue 18): nodes being filled with a copy, never in the in-sync set;
            add_learner (controller) and dropping one (remove_replica, the node removed) keep
            the epoch; join_in_sync (the primary) moves one into the in-sync set, epoch + 1
  cluster_id  made once at bootstrap (init_cluster; "" before): every peer message carries it
  datasets[name]["id"]  "<name>@<version it was created at>": a dataset dropped and re-created
            under one name is a different dataset (states from before ids: the id is the name)
  shard_map[i]["incarnations"]  {node_id: incarnation of its in-sync replica}, recorded by
            the node once it opened the replica; a replica whose LMDB environment is not
            the recorded one (wiped, restored, re-created) is new, never in sync
  controller  {"node_id", "term"}: the Raft leader that last took control (become_controller)
            and its Raft term; controller decisions (set_node_state, promote, add_learner,
            remove_replica by the controller) carry the term they were decided in and are refused
            (STALE_CONTROLLER) unless it is this one. Absent in states from before it: read
            it with controller_of(), which answers {"node_id": "", "term": 0} then
  datasets[name]["schema"]  Schema.to_json() of a typed dataset, {} (or absent) when schema-less
  datasets[name]["encryption_key_id"]  id of the key its values are sealed with (node/encryption.py);
            absent when not encrypted
  jobs      compute jobs and their tasks: see jobs.py
  tokens    {token_id: {"digest", "role", "name", "created_at_s"}}: bearer tokens (tokens.py)
  requests  {request_id: result} for the last REQUESTS_MAX commands (errors included, so
            a retried request always gets the first answer); noop is not recorded
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from shoal.node import placement
from shoal.node.compute.schema import Schema, SchemaError
from shoal.node.metadata import commands, jobs, tokens
from shoal.node.metadata.view import MetadataView, dataset_name, default_replication
from shoal.node.metadata.commands import (
    DATASET_EXISTS, INVALID_ARGUMENT, NOT_ENOUGH_NODES, STALE_CONTROLLER, STALE_EPOCH, UNKNOWN_DATASET, error, ok,
)

logger = logging.getLogger(__name__)

State = dict[str, Any]
Result = dict[str, Any]
Changes = dict[str, Any] | None   # top-level keys to replace; None = no change

REQUESTS_MAX = 10_000
_JOB_KEYS = frozenset({"jobs", "jobs_version"})   # job-only changes leave `version` alone (jobs.py)
SHARDS_MAX = 4096
REPLICATION_MAX = 9                 # more copies than this is a typo, not a plan
TEXT_CHARS_MAX = 256                # addresses and zones
NODE_ID_CHARS_MAX = 128
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")   # used with fullmatch
_KEY_ID = re.compile(r"[0-9a-f]{0,64}")   # an encrypted dataset's key id ("" = plain); fullmatch


def initial_state() -> State:
    return {"version": 0, "cluster_id": "", "nodes": {}, "datasets": {}, "jobs": {}, "tokens": {}, "requests": {},
            "controller": {"node_id": "", "term": 0}, "jobs_version": 0}


def apply(state: State, command: bytes) -> tuple[State, Result]:
    """Apply one command. Total: never raises; on any error the state is returned unchanged."""
    try:
        return _apply(state, command)
    except Exception as exc:  # a bug here must not wedge the Raft log (see module docstring)
        return state, error(INVALID_ARGUMENT, f"internal error applying command: {type(exc).__name__}: {exc}")


def _apply(state: State, command: bytes) -> tuple[State, Result]:
    try:
        decoded = commands.decode_command(command)
    except ValueError as exc:
        return state, error(INVALID_ARGUMENT, f"malformed command: {exc}")
    op = decoded["op"]
    if op == "noop":
        return state, ok()
    request_id = decoded["request_id"]
    stored = state["requests"].get(request_id)
    if stored is not None:
        return state, stored
    changes, result = _HANDLERS[op](state, decoded)
    new_state = dict(state)
    if changes:
        new_state.update(changes)
        if set(changes) - _JOB_KEYS:
            new_state["version"] = state["version"] + 1
    new_state["requests"] = _remember(state["requests"], request_id, result)
    return new_state, result


def _remember(requests: dict[str, Result], request_id: str, result: Result) -> dict[str, Result]:
    remembered = dict(requests)
    remembered[request_id] = result
    while len(remembered) > REQUESTS_MAX:
        del remembered[next(iter(remembered))]   # dicts keep insertion order: the oldest goes
    return remembered


# ---- handlers: (state, command) -> (changes, result); they may assume decoded types ----

def _register_node(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    node_id = cmd["node_id"]
    problem = _node_id_problem(node_id) or _text_problem(cmd, ("address", "zone", "raft_address"))
    if problem:
        return None, error(INVALID_ARGUMENT, problem)
    if not cmd["address"]:
        return None, error(INVALID_ARGUMENT, "register_node: address must not be empty")
    raft_address = cmd["raft_address"]
    owner = MetadataView.from_state(state).node_by_raft_address(raft_address)
    if owner is not None and owner.id != node_id:
        return None, error(INVALID_ARGUMENT, f"raft address {raft_address} already belongs to node {owner.id}")
    if state["nodes"].get(node_id, {}).get("state") == "removed":
        return None, error(INVALID_ARGUMENT, f"node {node_id} was removed from the cluster: start it under a "
                                             "new id with an empty data dir")
    entry = {"address": cmd["address"], "zone": cmd["zone"], "state": "alive", "raft_address": raft_address}
    if state["nodes"].get(node_id) == entry:
        return None, ok(node_id=node_id)
    # a restart (node.py serves only once registered alive) ends a drain: the result says so, the proposer logs it
    extra = {"drain_cancelled": True} if state["nodes"].get(node_id, {}).get("state") == "draining" else {}
    return {"nodes": {**state["nodes"], node_id: entry}}, ok(node_id=node_id, **extra)


def _set_node_state(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    refused = _controller_problem(state, cmd["controller_term"], decision=True)
    if refused:
        return None, refused
    node_id, node_state = cmd["node_id"], cmd["state"]
    if node_state not in commands.NODE_STATES:
        return None, error(INVALID_ARGUMENT, f"node state must be one of {', '.join(commands.NODE_STATES)}, "
                                             f"got {node_state!r}")
    entry = state["nodes"].get(node_id)
    if entry is None:
        return None, error(INVALID_ARGUMENT, f"unknown node {node_id!r}")
    if entry["state"] == node_state:
        return None, ok(node_id=node_id, state=node_state)
    changes: dict[str, Any] = {"nodes": {**state["nodes"], node_id: {**entry, "state": node_state}}}
    if node_state == "removed":   # its unfinished copies go with it; its in-sync replicas move by controller
        changes["datasets"] = _without_learner(state["datasets"], node_id)
    return changes, ok(node_id=node_id, state=node_state)


def _drain_node(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    node_id = cmd["node_id"]
    entry = state["nodes"].get(node_id)
    if entry is None:
        return None, error(INVALID_ARGUMENT, f"unknown node {node_id[:80]!r}")
    if entry["state"] == "removed":
        return None, error(INVALID_ARGUMENT, f"node {node_id} was removed: nothing to drain")
    if entry["state"] == "draining":
        return None, ok(node_id=node_id, state="draining")
    refused = _drain_problem(state, node_id) if cmd["checked"] else None   # older logged drains: unchecked
    if refused:
        return None, refused
    nodes = {**state["nodes"], node_id: {**entry, "state": "draining"}}
    return {"nodes": nodes, "datasets": _without_learner(state["datasets"], node_id)}, ok(node_id=node_id,
                                                                                            state="draining")


def _drain_problem(state: State, node_id: str) -> Result | None:
    """Why a drain could never end: the node is not alive (it hands nothing off, and draining it could
    never be removed), or fewer other alive nodes than the replication of a dataset it holds."""
    node_state = state["nodes"][node_id]["state"]
    if node_state != "alive":
        return error(INVALID_ARGUMENT, f"cannot drain {node_id}: {node_id} is {node_state}: use shoal node "
                                       "remove/replace (its copies elsewhere are rebuilt without a drain)")
    others = sum(1 for other, n in state["nodes"].items() if other != node_id and n["state"] == "alive")
    held = [(-dataset["replication"], name) for name, dataset in state["datasets"].items()
            if any(node_id in entry["replicas"] for entry in dataset["shard_map"])]
    replication, name = (-min(held)[0], min(held)[1]) if held else (1, "")   # the highest factor it holds
    if replication <= others:
        return None
    what = f"dataset {name} has replication {replication} and only" if held else "it is the last alive node:"
    return error(NOT_ENOUGH_NODES, f"cannot drain {node_id}: {what} {others} other alive nodes")


def _remove_node(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """Why refuse a node that is alive or still holds copies while draining: removing it would
    take away copies the cluster still counts on. A dead node ("dead" = silent for a while: it
    may be rebooting) holding a shard's only copy is refused unless forced: waiting for it keeps
    the data, forcing loses it (the lost shards are named in the result)."""
    node_id = cmd["node_id"]
    entry = state["nodes"].get(node_id)
    if entry is None:
        return None, error(INVALID_ARGUMENT, f"unknown node {node_id[:80]!r}")
    if entry["state"] == "removed":
        return None, ok(node_id=node_id, state="removed", lost=[])
    view = MetadataView.from_state(state)
    if entry["state"] in ("alive", "suspect"):
        return None, error(INVALID_ARGUMENT, f"node {node_id} is {entry['state']}: drain it (shoal node drain "
                                             f"{node_id}) or stop it and wait until it is declared dead")
    held = [shard.name for shard in view.shards() if shard.holds(node_id)]
    if entry["state"] == "draining" and held:
        return None, error(INVALID_ARGUMENT, f"node {node_id} is draining and still holds {len(held)} "
                                             f"replicas ({', '.join(held[:5])}): wait for the drain")
    lost = [shard.name for shard in view.shards() if shard.replicas == (node_id,)]
    if lost and not cmd["force"]:
        named = ", ".join(lost[:10]) + (f" and {len(lost) - 10} more" if len(lost) > 10 else "")
        return None, error(INVALID_ARGUMENT, f"node {node_id} holds the only copy of {len(lost)} shards ({named}): "
                                             "removing it loses them; start it again (and drain it), or "
                                             "pass --force to accept the loss")
    nodes = {**state["nodes"], node_id: {**entry, "state": "removed"}}
    return {"nodes": nodes, "datasets": _without_learner(state["datasets"], node_id)}, ok(
        node_id=node_id, state="removed", lost=lost)


def _create_dataset(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    name, shards, replication = cmd["name"], cmd["shards"], cmd["replication"]
    if not _DATASET_NAME.fullmatch(name):
        return None, error(INVALID_ARGUMENT, f"dataset name {name[:140]!r} must match "
                                             "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
    if not 1 <= shards <= SHARDS_MAX:
        return None, error(INVALID_ARGUMENT, f"shards must be within 1..{SHARDS_MAX}, got {shards}")
    if not 0 <= replication <= REPLICATION_MAX:
        return None, error(INVALID_ARGUMENT, f"replication must be within 0..{REPLICATION_MAX} "
                                             f"(0 = default), got {replication}")
    if name in state["datasets"]:
        return None, error(DATASET_EXISTS, f"dataset {name} already exists")
    if not _KEY_ID.fullmatch(cmd["encryption_key_id"]):
        return None, error(INVALID_ARGUMENT, f"dataset {name}: encryption key id must be 0..64 hex digits")
    if cmd["schema"]:
        try:
            Schema.from_json(cmd["schema"])
        except SchemaError as exc:
            return None, error(INVALID_ARGUMENT, f"dataset {name}: {exc}")
    alive = {node_id: n["zone"] for node_id, n in state["nodes"].items() if n["state"] == "alive"}
    replication = replication or default_replication(len(alive))
    if len(alive) < replication:
        return None, error(NOT_ENOUGH_NODES, f"replication {replication} needs {replication} alive nodes, "
                                             f"{len(alive)} alive")
    load, primary_load = _loads(state)
    chosen = placement.place(alive, load, primary_load, shards, replication)
    shard_map = [{"epoch": 1, "primary": nodes[0], "replicas": nodes, "learners": [], "incarnations": {}}
                 for nodes in chosen]
    dataset_id = f"{name}@{state['version'] + 1}"   # the version this command creates: unique, never reused
    dataset = {"id": dataset_id, "shards": shards, "replication": replication, "shard_map": shard_map,
               "schema": cmd["schema"]}
    if cmd["encryption_key_id"]:   # only then: the state of a plain dataset stays as it was
        dataset["encryption_key_id"] = cmd["encryption_key_id"]
    return ({"datasets": {**state["datasets"], name: dataset}},
            ok(dataset=name, dataset_id=dataset_id, shards=shards, replication=replication))


def _drop_dataset(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    name = cmd["name"]
    if name not in state["datasets"]:
        return None, error(UNKNOWN_DATASET, f"unknown dataset {name[:140]!r}")
    datasets = {k: v for k, v in state["datasets"].items() if k != name}
    return {"datasets": datasets}, ok(dataset=name)


def _remove_replica(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    # controller_term 0: a primary fences out a backup that failed a write (its epoch fences it)
    refused = _controller_problem(state, cmd["controller_term"], decision=cmd["controller_term"] != 0)
    if refused:
        return None, refused
    located = _locate(state, cmd["dataset"], cmd["shard"], cmd["expected_epoch"])
    if "error" in located:
        return None, located
    current, node_id = located["shard"], cmd["node_id"]
    learners = current.get("learners", [])
    if node_id not in current["replicas"] and node_id in learners:
        # a learner is not in the in-sync set: dropping it changes no write's quorum, the epoch stays
        changed = {**current, "learners": [n for n in learners if n != node_id]}
        return _replace_shard(state, cmd["dataset"], cmd["shard"], changed), ok(epoch=current["epoch"])
    if node_id not in current["replicas"]:
        return None, ok(epoch=current["epoch"])       # already fenced out: idempotent
    if node_id == current["primary"]:
        return None, error(INVALID_ARGUMENT, f"{node_id} is the primary of {cmd['dataset']}/{cmd['shard']}: "
                                             "promote another replica instead of removing it")
    if len(current["replicas"]) <= 1:
        return None, error(INVALID_ARGUMENT, "the last replica of a shard is never removed")
    replicas = [r for r in current["replicas"] if r != node_id]
    changed = {**current, "epoch": current["epoch"] + 1, "replicas": replicas}
    return _replace_shard(state, cmd["dataset"], cmd["shard"], changed), ok(epoch=changed["epoch"])


def _promote(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    # controller_term 0: a primary stepping down for a backup that holds more (primary.py
    # _step_down); like its remove_replica, expected_epoch fences it, not a controller term.
    refused = _controller_problem(state, cmd["controller_term"], decision=cmd["controller_term"] != 0)
    if refused:
        return None, refused
    located = _locate(state, cmd["dataset"], cmd["shard"], cmd["expected_epoch"])
    if "error" in located:
        return None, located
    current, new_primary = located["shard"], cmd["new_primary"]
    if new_primary == current["primary"]:
        return None, ok(epoch=current["epoch"])
    if new_primary not in current["replicas"]:
        return None, error(INVALID_ARGUMENT, f"{new_primary!r} is not an in-sync replica of "
                                             f"{cmd['dataset']}/{cmd['shard']}")
    node_state = state["nodes"].get(new_primary, {}).get("state")
    if node_state in ("dead", "removed"):
        return None, error(INVALID_ARGUMENT, f"cannot promote {new_primary}: node is {node_state}")
    replicas = [new_primary] + [r for r in current["replicas"] if r not in (new_primary, current["primary"])]
    changed = {**current, "epoch": current["epoch"] + 1, "primary": new_primary, "replicas": replicas}
    return _replace_shard(state, cmd["dataset"], cmd["shard"], changed), ok(epoch=changed["epoch"])


def _add_learner(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """A controller decision: an alive node holding no copy of the shard starts learning it (epoch stays)."""
    refused = _controller_problem(state, cmd["controller_term"], decision=True)
    if refused:
        return None, refused
    name, index, node_id = cmd["dataset"], cmd["shard"], cmd["node_id"]
    found = _find(state, name, index)
    if "error" in found:
        return None, found
    current = found["shard"]
    learners = current.get("learners", [])
    if node_id in learners:
        return None, ok(epoch=current["epoch"])       # already added: idempotent, whatever the epoch now
    stale = _stale_epoch(name, index, current, cmd["expected_epoch"])
    if stale:
        return None, stale
    if node_id in current["replicas"]:
        return None, error(INVALID_ARGUMENT, f"{node_id} is already an in-sync replica of {name}/{index}")
    node_state = state["nodes"].get(node_id, {}).get("state")
    if node_state != "alive":
        return None, error(INVALID_ARGUMENT, f"cannot add {node_id[:140]!r} as a learner of {name}/{index}: "
                                             f"node is {node_state or 'not registered'}")
    changed = {**current, "learners": [*learners, node_id]}
    return _replace_shard(state, name, index, changed), ok(epoch=current["epoch"])


def _join_in_sync(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """The primary's word that a learner caught up: it joins the in-sync set (epoch + 1) with its
    replica's incarnation recorded. expected_epoch fences a deposed primary, as for its remove_replica."""
    name, index, node_id, incarnation = cmd["dataset"], cmd["shard"], cmd["node_id"], cmd["incarnation"]
    if not 0 < len(incarnation) <= commands.INCARNATION_CHARS_MAX:
        return None, error(INVALID_ARGUMENT, f"incarnation must be 1..{commands.INCARNATION_CHARS_MAX} characters")
    found = _find(state, name, index)
    if "error" in found:
        return None, found
    current = found["shard"]
    if node_id in current["replicas"] and current.get("incarnations", {}).get(node_id) == incarnation:
        return None, ok(epoch=current["epoch"])       # already joined with this replica: idempotent
    stale = _stale_epoch(name, index, current, cmd["expected_epoch"])
    if stale:
        return None, stale
    learners = current.get("learners", [])
    if node_id not in learners:
        return None, error(INVALID_ARGUMENT, f"{node_id[:140]!r} is not a learner of {name}/{index}")
    node_state = state["nodes"].get(node_id, {}).get("state")
    if node_state in ("dead", "removed"):
        return None, error(INVALID_ARGUMENT, f"{node_id} cannot join {name}/{index}: node is {node_state}")
    changed = {**current, "epoch": current["epoch"] + 1, "replicas": [*current["replicas"], node_id],
               "learners": [n for n in learners if n != node_id],
               "incarnations": {**current.get("incarnations", {}), node_id: incarnation}}
    return _replace_shard(state, name, index, changed), ok(epoch=changed["epoch"])


def _init_cluster(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    cluster_id = cmd["cluster_id"]
    if state.get("cluster_id"):
        return None, ok(cluster_id=state["cluster_id"])   # the first init won
    if not 0 < len(cluster_id) <= TEXT_CHARS_MAX or any(c.isspace() for c in cluster_id):
        return None, error(INVALID_ARGUMENT, f"cluster id must be 1..{TEXT_CHARS_MAX} characters without spaces")
    return {"cluster_id": cluster_id}, ok(cluster_id=cluster_id)


def _record_incarnations(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """Record first incarnations; answer the (dataset_id, shard) whose record differs (`mismatched`)."""
    node_id, datasets, mismatched = cmd["node_id"], state["datasets"], []
    changed: dict[str, dict[str, Any]] = {}
    for item in cmd["replicas"]:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and type(item[1]) is int
                and isinstance(item[2], str) and 0 < len(item[2]) <= commands.INCARNATION_CHARS_MAX):
            return None, error(INVALID_ARGUMENT, f"record_incarnations: bad item {str(item)[:80]}")
        dataset_id, index, incarnation = item
        name = dataset_name(dataset_id)
        dataset = changed.get(name) or datasets.get(name)
        if dataset is None or dataset_of_id(dataset, name) != dataset_id or not 0 <= index < dataset["shards"]:
            continue   # dropped or re-created meanwhile: nothing to record
        entry = dataset["shard_map"][index]
        recorded = entry.get("incarnations", {}).get(node_id)
        if node_id not in entry["replicas"] or recorded == incarnation:
            continue
        if recorded is not None:
            mismatched.append([dataset_id, index])
            continue
        shard_map = list(dataset["shard_map"])
        shard_map[index] = {**entry, "incarnations": {**entry.get("incarnations", {}), node_id: incarnation}}
        changed[name] = {**dataset, "shard_map": shard_map}
    changes = {"datasets": {**datasets, **changed}} if changed else None
    return changes, ok(mismatched=mismatched)


def _replica_lost(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """The node's replica is not the recorded one: it leaves the in-sync set (epoch + 1).

    If it was the primary, the first other in-sync replica on an alive node takes over:
    every in-sync replica holds every acknowledged write, and the new primary catches up
    from backups that are ahead before it serves. A lost sole replica leaves the shard with
    no replica and no primary: unavailable (status and every request say so) until the old
    copy is restored or the dataset dropped. It used to be replaced by the new, empty one,
    which served an empty shard while status said all was well: silent loss of its data.
    """
    dataset_id, index, node_id, incarnation = cmd["dataset_id"], cmd["shard"], cmd["node_id"], cmd["incarnation"]
    name = dataset_name(dataset_id)
    dataset = state["datasets"].get(name)
    if dataset is None or dataset_of_id(dataset, name) != dataset_id or not 0 <= index < dataset["shards"]:
        return None, error(UNKNOWN_DATASET, f"unknown dataset {dataset_id[:140]!r} or shard {index}")
    entry = dataset["shard_map"][index]
    recorded = entry.get("incarnations", {}).get(node_id)
    if node_id not in entry["replicas"]:
        return None, ok(epoch=entry["epoch"])        # already out: idempotent
    if recorded is None or recorded == incarnation:
        return None, error(INVALID_ARGUMENT, f"{node_id}'s replica of {dataset_id}/{index} is the recorded one")
    others = [r for r in entry["replicas"] if r != node_id]
    alive = [r for r in others if state["nodes"].get(r, {}).get("state") == "alive"]
    if not others:
        changed = {**entry, "epoch": entry["epoch"] + 1, "primary": "", "replicas": []}
    elif entry["primary"] == node_id and not alive:
        return None, error(INVALID_ARGUMENT, f"{dataset_id}/{index}: no alive in-sync replica to take over")
    else:
        primary = entry["primary"] if entry["primary"] != node_id else alive[0]
        changed = {**entry, "epoch": entry["epoch"] + 1, "primary": primary,
                   "replicas": [primary] + [r for r in others if r != primary]}
    return _replace_shard(state, name, index, changed), ok(epoch=changed["epoch"], primary=changed["primary"])


def _become_controller(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    """The Raft leader of `term` takes control. Terms only grow: an older term is refused
    (a deposed leader, e.g. one woken from a pause), and so is another node in the same term
    (Raft has one leader per term). The same controller and term again is a no-op."""
    node_id, term = cmd["node_id"], cmd["term"]
    problem = _node_id_problem(node_id)
    if problem or term < 0:
        return None, error(INVALID_ARGUMENT, problem or f"become_controller: term must be >= 0, got {term}")
    recorded = controller_of(state)
    if (recorded["node_id"], recorded["term"]) == (node_id, term):
        return None, ok(node_id=node_id, term=term)
    if term <= recorded["term"]:
        return None, error(STALE_CONTROLLER, f"{node_id} cannot take control in term {term}: "
                                             f"{recorded['node_id']} controls since term {recorded['term']}",
                           controller=recorded["node_id"], term=recorded["term"])
    return {"controller": {"node_id": node_id, "term": term}}, ok(node_id=node_id, term=term)


_HANDLERS: dict[str, Callable[[State, dict[str, Any]], tuple[Changes, Result]]] = {
    "register_node": _register_node,
    "set_node_state": _set_node_state,
    "drain_node": _drain_node,
    "remove_node": _remove_node,
    "create_dataset": _create_dataset,
    "drop_dataset": _drop_dataset,
    "remove_replica": _remove_replica,
    "promote": _promote,
    "add_learner": _add_learner,
    "join_in_sync": _join_in_sync,
    "become_controller": _become_controller,
    "init_cluster": _init_cluster,
    "record_incarnations": _record_incarnations,
    "replica_lost": _replica_lost,
    "assign_tasks": lambda state, cmd: (
        (None, refused) if (refused := _controller_problem(state, cmd["controller_term"], decision=True))
        else jobs.assign_tasks(state, cmd)),
    **{op: handler for op, handler in jobs.HANDLERS.items() if op != "assign_tasks"},
    **tokens.HANDLERS,
}
assert set(_HANDLERS) == commands.OPS - {"noop"}


# ---- small pure helpers ----

def _locate(state: State, dataset: str, index: int, expected_epoch: int) -> dict[str, Any]:
    """{"shard": shard} when it exists at the expected epoch, else an error result."""
    found = _find(state, dataset, index)
    if "error" in found:
        return found
    return _stale_epoch(dataset, index, found["shard"], expected_epoch) or found


def _find(state: State, dataset: str, index: int) -> dict[str, Any]:
    """{"shard": shard} when it exists (at any epoch), else an error result."""
    if dataset not in state["datasets"]:
        return error(UNKNOWN_DATASET, f"unknown dataset {dataset[:140]!r}")
    found = shard(state, dataset, index)
    if found is None:
        count = state["datasets"][dataset]["shards"]
        return error(INVALID_ARGUMENT, f"shard {index} out of range 0..{count - 1} in {dataset}")
    return {"shard": found}


def _stale_epoch(dataset: str, index: int, entry: dict[str, Any], expected_epoch: int) -> Result | None:
    if entry["epoch"] == expected_epoch:
        return None
    return error(STALE_EPOCH, f"{dataset}/{index} is at epoch {entry['epoch']}, not {expected_epoch}",
                 epoch=entry["epoch"])


def _replace_shard(state: State, dataset: str, index: int, new_shard: dict[str, Any]) -> dict[str, Any]:
    """The changes that put `new_shard` in place; incarnations are kept for in-sync replicas only."""
    old = state["datasets"][dataset]
    shard_map = list(old["shard_map"])
    incarnations = new_shard.get("incarnations", {})
    if any(node_id not in new_shard["replicas"] for node_id in incarnations):
        new_shard = {**new_shard, "incarnations": {n: i for n, i in incarnations.items() if n in new_shard["replicas"]}}
    shard_map[index] = new_shard
    return {"datasets": {**state["datasets"], dataset: {**old, "shard_map": shard_map}}}


def _without_learner(datasets: dict[str, Any], node_id: str) -> dict[str, Any]:
    """`datasets` with `node_id` dropped from every shard's learners (copy-on-write: changed shards only)."""
    changed = {}
    for name, dataset in datasets.items():
        shard_map = [{**entry, "learners": [n for n in entry["learners"] if n != node_id]}
                     if node_id in entry.get("learners", ()) else entry for entry in dataset["shard_map"]]
        if any(new is not old for new, old in zip(shard_map, dataset["shard_map"])):
            changed[name] = {**dataset, "shard_map": shard_map}
    return {**datasets, **changed} if changed else datasets


def _loads(state: State) -> tuple[dict[str, int], dict[str, int]]:
    """Replicas and primaries per node over every dataset."""
    load: dict[str, int] = {}
    primary_load: dict[str, int] = {}
    for dataset in state["datasets"].values():
        for entry in dataset["shard_map"]:
            primary_load[entry["primary"]] = primary_load.get(entry["primary"], 0) + 1
            for node_id in entry["replicas"]:
                load[node_id] = load.get(node_id, 0) + 1
    return load, primary_load


def _controller_problem(state: State, controller_term: int, *, decision: bool) -> Result | None:
    """An error result when a controller decision was not taken by the recorded controller.

    A decision carries the term of the controller's become_controller; any other term is
    refused: lower is a deposed controller, higher one that has not taken control yet.
    Term 0 is the term of "no controller recorded" (states and journals from before
    controllers were recorded, a standalone node).
    """
    if controller_term < 0:
        return error(INVALID_ARGUMENT, f"controller_term must be >= 0, got {controller_term}")
    recorded = controller_of(state)
    if not decision or controller_term == recorded["term"]:
        return None
    return error(STALE_CONTROLLER, f"decision of the controller of term {controller_term} refused: "
                                   f"{recorded['node_id'] or 'no controller'} controls in term {recorded['term']}",
                 controller=recorded["node_id"], term=recorded["term"])


def _node_id_problem(node_id: str) -> str | None:
    if not 0 < len(node_id) <= NODE_ID_CHARS_MAX or any(c.isspace() for c in node_id):
        return f"node id must be 1..{NODE_ID_CHARS_MAX} characters without spaces"
    return None


def _text_problem(cmd: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for field in fields:
        if len(cmd[field]) > TEXT_CHARS_MAX:
            return f"{field} longer than {TEXT_CHARS_MAX} characters"
    return None


# ---- read helpers for the handlers (readers outside the FSM use view.MetadataView) ----

def controller_of(state: State) -> dict[str, Any]:
    """{"node_id", "term"} of the recorded controller; states from before it have none (term 0)."""
    recorded: dict[str, Any] = state.get("controller") or {"node_id": "", "term": 0}
    return recorded


def dataset_of_id(dataset: dict[str, Any], name: str) -> str:
    """A dataset's id; datasets created before ids existed use their name."""
    return str(dataset.get("id", name))


def shard(state: State, dataset: str, index: int) -> dict[str, Any] | None:
    """The shard map entry, or None if the dataset or index does not exist."""
    entry = state["datasets"].get(dataset)
    if entry is None or not 0 <= index < len(entry["shard_map"]):
        return None
    found: dict[str, Any] = entry["shard_map"][index]
    return found
