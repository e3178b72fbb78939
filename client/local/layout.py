"""The layout of a local cluster: NodeHandle, node command lines, cluster.json, the Raft password.

Layout of a data dir: `raft-password` (0600, made once, reused), `cluster.json` (the record:
layout, knobs and pids; DESIGN.md section 9), and one folder per node, `n1/` .. `nN/`, holding
that node's data and `node.log` (its stdout and stderr, appended across restarts); a node's
temporary files go to `NodeHandle.tmp_dir`, outside the data dir (see there). Node i
(0-based) listens on gRPC base+i, HTTP base+200+i and, if it is a metadata voter, Raft base+100+i.

cluster.json is authoritative for an existing data dir: layout_from_record restores ids,
ports, voters and zones, and asking for a different layout is an error, not a silent
rebuild, so a reopened data dir is the same cluster. Env knobs whose names look secret
(PASSWORD, TOKEN, SECRET) are never written to it. It is replaced atomically (write a
temp file, then rename) so a reader never sees half a record.

Everything here is pure or touches only the data dir's files; the package
(shoal.client.local) re-exports the public names (NodeHandle, default_voters, read_record, ...).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.client.local import ports
from shoal.client.local.errors import ClusterLayoutError

logger = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
PASSWORD_FILE = "raft-password"
ADMIN_TOKEN_FILE = "admin.token"   # the first admin token of a cluster started with auth (shoal up --auth)
LOG_FILE = "node.log"
RECORD_FORMAT = 1
_SECRET_MARKERS = ("PASSWORD", "TOKEN", "SECRET")   # env knobs never written to cluster.json

Layout = tuple[int, int, list[str], list[str]]   # base_port, voters, host per node, zone per node


@dataclasses.dataclass(frozen=True, slots=True)
class NodeHandle:
    id: str
    address: str                 # gRPC host:port
    raft_address: str            # "" for a data-only node
    data_dir: Path
    log_path: Path
    index: int                   # 0-based position; ports are base+index
    host: str = "127.0.0.1"
    zone: str = ""
    http_address: str = ""       # host:port of the node's web dashboard and /metrics

    @property
    def voter(self) -> bool:
        return bool(self.raft_address)

    @property
    def tmp_dir(self) -> Path:
        """The node process's TMPDIR: <system temp>/shoal-<hash of data_dir>, made at spawn, removed at reap.

        Its multiprocessing forkserver makes pymp-* folders there that a SIGKILLed node
        never removes. Not inside data_dir: the forkserver's AF_UNIX socket path must stay
        under 108 bytes, and test data dirs alone come close to that.
        """
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"shoal-{digest}"


def default_voters(nodes: int) -> int:
    """All nodes when 1, 3 or 5; otherwise 3 (or 1 below 3)."""
    return nodes if nodes in (1, 3, 5) else (3 if nodes > 3 else 1)


def node_handle(data_dir: Path, base_port: int, voters: int, index: int, host: str, zone: str) -> NodeHandle:
    """Node `index` (0-based) of the layout: id n<index+1>, folder data_dir/n<index+1>."""
    node_dir = data_dir / f"n{index + 1}"
    raft = ports.format_address(host, base_port + ports.RAFT_PORT_OFFSET + index) if index < voters else ""
    return NodeHandle(id=f"n{index + 1}", address=ports.format_address(host, base_port + index),
                      raft_address=raft, data_dir=node_dir, log_path=node_dir / LOG_FILE,
                      index=index, host=host, zone=zone,
                      http_address=ports.format_address(host, base_port + ports.HTTP_PORT_OFFSET + index))


def node_argv(node: NodeHandle, voters: Sequence[NodeHandle], seed: NodeHandle | None) -> list[str]:
    """The `shoal node start` command of node. A voter gets its Raft address and the other voters'
    as peers; a data-only node joins through seed (LocalCluster picks a running voter if any)."""
    argv = [sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", node.id,
            "--data-dir", str(node.data_dir), "--listen", node.address]
    if node.http_address:
        argv += ["--http-listen", node.http_address]
    if node.voter:
        argv += ["--raft", node.raft_address]
        peers = [other.raft_address for other in voters if other.id != node.id]
        if peers:
            argv += ["--raft-peers", ",".join(peers)]
    else:
        assert seed is not None, f"data-only node {node.id} needs a seed to join"
        argv += ["--join", seed.address]
    if node.zone:
        argv += ["--zone", node.zone]
    return argv


def read_record(data_dir: Path) -> dict[str, Any] | None:
    """The parsed cluster.json of data_dir, or None if there is none."""
    path = data_dir / CLUSTER_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterLayoutError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not record.get("nodes"):
        raise ClusterLayoutError(f"{path} was not written by this version of shoal up")
    problem = _record_problem(record)
    if problem:
        raise ClusterLayoutError(f"{path} is damaged ({problem}): not as shoal up writes it")
    return record


def _record_problem(record: Mapping[str, Any]) -> str:
    """What a cluster.json of the right format lacks (a hand edit, a cut-off copy), or ""."""
    for name, kind in (("voters", int), ("base_port", int), ("nodes", list), ("env", dict)):
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
            return f"{name!r} missing or not a {kind.__name__}"
    for index, entry in enumerate(record["nodes"]):
        if not isinstance(entry, dict):
            return f"nodes[{index}] is not an object"
        for name in ("id", "host", "address", "data_dir"):
            if not isinstance(entry.get(name), str):
                return f"nodes[{index}].{name} missing or not a string"
        if entry.get("pid") is not None and (not isinstance(entry["pid"], int) or isinstance(entry["pid"], bool)):
            return f"nodes[{index}].pid is not an int"
    return ""


def write_record(data_dir: Path, *, base_port: int, voters: int, password_file: Path, env: Mapping[str, str],
                 nodes: Sequence[tuple[NodeHandle, int | None]]) -> None:
    """Replace data_dir/cluster.json with the layout, the non-secret env knobs and each node's pid."""
    record = {
        "format": RECORD_FORMAT, "tls": bool(env.get("SHOAL_TLS_DIR")), "base_port": base_port, "voters": voters,
        "password_file": str(password_file),
        "env": {k: v for k, v in env.items() if not any(m in k.upper() for m in _SECRET_MARKERS)},
        "nodes": [{"id": node.id, "pid": pid, "address": node.address,
                   "raft_address": node.raft_address, "http_address": node.http_address,
                   "host": node.host, "zone": node.zone,
                   "data_dir": str(node.data_dir), "log": str(node.log_path)} for node, pid in nodes],
    }
    path = data_dir / CLUSTER_FILE
    tmp = path.with_name(CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def ensure_password_file(path: Path) -> str:
    """Create the Raft password once (0600, never rewritten) and return it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def check_fresh_dir(data_dir: Path) -> None:
    """A data dir without cluster.json must be new or empty (a leftover raft-password is fine)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ClusterLayoutError(f"{data_dir} exists and is not a directory")
    if data_dir.is_dir() and {entry.name for entry in data_dir.iterdir()} - {PASSWORD_FILE}:
        raise ClusterLayoutError(f"{data_dir} is not empty and has no {CLUSTER_FILE}: "
                                 "not a local cluster directory (use a new or empty data dir)")


def new_layout(nodes: int, voters: int | None, base_port: int | None, hosts: list[str],
               zones: Sequence[str] | None) -> Layout:
    """The layout of a new cluster; a free base port is picked when none is given."""
    if nodes < 1:
        raise ClusterLayoutError(f"a cluster needs at least one node, got {nodes}")
    voters = voters if voters is not None else default_voters(nodes)
    if voters not in (1, 3, 5) or voters > nodes:
        raise ClusterLayoutError(f"voters must be 1, 3 or 5 and at most the node count ({nodes}), got {voters}")
    if len(hosts) != nodes:
        raise ClusterLayoutError(f"hosts needs one address per node ({nodes}), got {len(hosts)}")
    if base_port is None:
        base_port = ports.free_base_port(hosts, nodes)
    elif not 1 <= base_port <= 65535 - ports.HTTP_PORT_OFFSET - nodes:
        raise ClusterLayoutError(f"base port {base_port} leaves no room for {nodes} nodes (Raft at +100, "
                                 "HTTP at +200)")
    zone_list = [zones[i % len(zones)] for i in range(nodes)] if zones else [""] * nodes
    return base_port, voters, hosts, zone_list


def layout_from_record(data_dir: Path, record: Mapping[str, Any], nodes: int | None, voters: int | None,
                       base_port: int | None, hosts: Sequence[str] | None,
                       zones: Sequence[str] | None) -> Layout:
    """The recorded layout; asking for a different one is an error, not a silent rebuild."""
    entries = record["nodes"]
    if [entry.get("id") for entry in entries] != [f"n{i + 1}" for i in range(len(entries))]:
        raise ClusterLayoutError(f"{data_dir / CLUSTER_FILE} lists unexpected node ids")
    recorded = (len(entries), int(record["voters"]), int(record["base_port"]),
                [str(entry["host"]) for entry in entries])
    wanted = (nodes, voters, base_port, list(hosts) if hosts is not None else None)
    for name, have, want in zip(("nodes", "voters", "base port", "hosts"), recorded, wanted):
        if want is not None and want != have:
            raise ClusterLayoutError(f"{data_dir} holds another cluster ({name} {have}, asked for {want}); "
                                     "use another data dir, or shoal down and delete it")
    count = recorded[0]
    zone_list = ([zones[i % len(zones)] for i in range(count)] if zones
                 else [str(entry.get("zone", "")) for entry in entries])
    return recorded[2], recorded[1], recorded[3], zone_list
