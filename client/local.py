"""LocalCluster: a cluster of real node processes on this machine, for `shoal up`, tests and chaos.

Layout of a data dir: `raft-password` (0600, made once, reused), `cluster.json` (the record:
layout, knobs and pids; DESIGN.md section 9), and one folder per node, `n1/` .. `nN/`, holding
that node's data and `node.log` (its stdout and stderr, appended across restarts). Node i
(0-based) listens on gRPC base+i and, if it is a metadata voter, Raft base+100+i.

Why it works the way it does:
- Each node runs in its own session (start_new_session=True): Ctrl-C in a terminal reaches
  only `shoal up`, which then stops the nodes itself instead of racing their own handlers.
  The node's process group id is its pid, so kill and pause signal the whole group: a
  command_prefix wrapper and the node's worker processes die or freeze with it. A graceful
  stop sends SIGTERM to the node alone (it shuts its own workers down), then sweeps the group.
- cluster.json is authoritative for an existing data dir: reopening restores ids, ports,
  voters and knobs, so a restart is the same cluster. Recorded pids are *adopted* when
  /proc/PID/cmdline still names shoal and this node's data dir, which is how `shoal down`
  stops a detached cluster without ever signalling a recycled pid.
- Readiness uses the raw stubs (health, GetNodeStatus, GetClusterMap), not shoal.client:
  it must see each node's own answer, not one the client's retries and routing smoothed over.
- detach=False registers a finalizer (it also runs at interpreter exit) that kills every
  child, so no node outlives the Python process that started it, short of a SIGKILL of it.
- Nodes in network namespaces (hosts=..., command_prefix=lambda i: ["ip", "netns", "exec",
  f"ns{i}"]) are only reachable from a namespace on their bridge: run the Python process
  that owns the LocalCluster there (fault-injection.md 3.2).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.client import _ports
from shoal.client._pb import data_pb2, data_pb2_grpc
from shoal.client._routing import encode_key, shard_for_key

if TYPE_CHECKING:
    from shoal.client import Client

logger = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
PASSWORD_FILE = "raft-password"
LOG_FILE = "node.log"
RECORD_FORMAT = 1
POLL_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 1.0
REAP_TIMEOUT_S = 10.0
_SECRET_MARKERS = ("PASSWORD", "TOKEN", "SECRET")   # env knobs never written to cluster.json


class LocalClusterError(Exception):
    """Base of local cluster errors. `summary` is one line; str() adds details such as log tails."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary + (f"\n{details}" if details else ""))
        self.summary = summary


class ClusterLayoutError(LocalClusterError):
    """The data dir holds another cluster (or no cluster) than the one asked for."""


class ClusterRunningError(LocalClusterError):
    """Nodes of this data dir are already running."""


class PortInUseError(LocalClusterError):
    """A port of the layout already has a listener."""


class NodeExitedError(LocalClusterError):
    """A node process exited while it was expected to run."""


class ClusterNotReadyError(LocalClusterError):
    """The cluster did not become ready before the deadline."""


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

    @property
    def voter(self) -> bool:
        return bool(self.raft_address)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeExit:
    """What stop/kill/terminate did to one node."""
    id: str
    pid: int
    returncode: int | None       # None for an adopted process (not our child)
    forced: bool                 # True: it needed SIGKILL (or was killed on purpose)


@dataclasses.dataclass(slots=True)
class _Process:
    pid: int
    popen: subprocess.Popen[bytes] | None   # None: adopted from cluster.json
    paused: bool = False


def default_voters(nodes: int) -> int:
    """All nodes when 1, 3 or 5; otherwise 3 (or 1 below 3)."""
    return nodes if nodes in (1, 3, 5) else (3 if nodes > 3 else 1)


class LocalCluster:
    """Start, stop, kill, pause and inspect the node processes of one local cluster."""

    def __init__(self, data_dir: Path | str, *, nodes: int | None = None, voters: int | None = None,
                 base_port: int | None = None, host: str = "127.0.0.1", hosts: Sequence[str] | None = None,
                 command_prefix: Callable[[int], list[str]] | None = None,
                 env: Mapping[str, str] | None = None, zones: Sequence[str] | None = None,
                 detach: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.detach = detach
        self._command_prefix = command_prefix
        self._lock = threading.RLock()
        self._procs: dict[str, _Process] = {}
        record = read_record(self.data_dir)
        if record is None:
            _check_fresh_dir(self.data_dir)
            count = nodes or (len(hosts) if hosts else 3)
            layout = _new_layout(count, voters, base_port, list(hosts or [host] * count), zones)
            self._env: dict[str, str] = dict(env or {})
        else:
            layout = _layout_from_record(self.data_dir, record, nodes, voters, base_port, hosts, zones)
            self._env = {**record.get("env", {}), **(env or {})}
            self._adopt(record)
        self.base_port, self.voters, hosts_list, zones_list = layout
        self._nodes = tuple(self._handle(i, hosts_list[i], zones_list[i]) for i in range(len(hosts_list)))
        self._by_id = {node.id: node for node in self._nodes}
        self._down = {node.id for node in self._nodes if node.id not in self._procs}
        if not detach:
            self._finalizer = weakref.finalize(self, _kill_children, self._procs)

    @classmethod
    def open(cls, data_dir: Path | str, **kwargs: Any) -> LocalCluster:
        """The cluster recorded in data_dir; ClusterLayoutError if there is none."""
        if read_record(Path(data_dir).resolve()) is None:
            raise ClusterLayoutError(f"no {CLUSTER_FILE} in {data_dir}: not a local cluster directory")
        return cls(data_dir, **kwargs)

    def _handle(self, index: int, host: str, zone: str) -> NodeHandle:
        node_dir = self.data_dir / f"n{index + 1}"
        raft = (_ports.format_address(host, self.base_port + _ports.RAFT_PORT_OFFSET + index)
                if index < self.voters else "")
        return NodeHandle(id=f"n{index + 1}", address=_ports.format_address(host, self.base_port + index),
                          raft_address=raft, data_dir=node_dir, log_path=node_dir / LOG_FILE,
                          index=index, host=host, zone=zone)

    # ---- inspection ----

    @property
    def nodes(self) -> tuple[NodeHandle, ...]:
        return self._nodes

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self._nodes]

    @property
    def cluster_address(self) -> str:
        """Comma-separated gRPC addresses, the value for SHOAL_CLUSTER."""
        return ",".join(self.addresses)

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    def node(self, node_id: str) -> NodeHandle:
        try:
            return self._by_id[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in {self.data_dir} (have {', '.join(self._by_id)})") from None

    def pid(self, node_id: str) -> int | None:
        proc = self._procs.get(self.node(node_id).id)
        return proc.pid if proc is not None and self.is_running(node_id) else None

    def is_running(self, node_id: str) -> bool:
        """The node's process exists (a paused node is running)."""
        node = self.node(node_id)
        proc = self._procs.get(node.id)
        if proc is None:
            return False
        if proc.popen is not None:
            return proc.popen.poll() is None
        return is_node_process(proc.pid, node.data_dir)

    def is_paused(self, node_id: str) -> bool:
        proc = self._procs.get(self.node(node_id).id)
        return proc is not None and proc.paused and self.is_running(node_id)

    def running(self) -> list[str]:
        return [node.id for node in self._nodes if self.is_running(node.id)]

    def log_tail(self, node_id: str, lines: int = 50) -> str:
        return read_tail(self.node(node_id).log_path, lines)

    def dump_logs(self, lines: int = 50) -> str:
        """The tail of every node log, headed by the node's state: for failure reports."""
        parts = []
        for node in self._nodes:
            state = ("paused" if self.is_paused(node.id) else "running") if self.is_running(node.id) else "down"
            parts.append(f"----- {node.id} ({state}) {node.log_path} -----\n{self.log_tail(node.id, lines)}")
        return "\n".join(parts)

    def client(self, **kwargs: Any) -> Client:
        from shoal.client import Client
        return Client(self.addresses, **kwargs)

    # ---- lifecycle ----

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every node and wait until the cluster is ready; on any failure stop them all."""
        with self._lock:
            running = [f"{node_id} (pid {self.pid(node_id)})" for node_id in self.running()]
            if running:
                raise ClusterRunningError(f"the cluster in {self.data_dir} is already running "
                                          f"({', '.join(running)}); stop it first (shoal down)")
            self._prepare_dir()
            self._check_ports(self._nodes)
            try:
                for node in self._nodes:
                    self._spawn(node)
                self._write_record()
                self.wait_ready(timeout_s)
            except BaseException:
                self.stop(timeout_s=5.0)
                raise

    def start_node(self, node_id: str) -> None:
        """Start one stopped node; returns at once (see wait_ready)."""
        with self._lock:
            node = self.node(node_id)
            if self.is_running(node.id):
                raise ClusterRunningError(f"{node.id} is already running (pid {self.pid(node.id)})")
            self._prepare_dir()
            self._check_ports([node])
            self._spawn(node)
            self._write_record()

    def restart(self, node_id: str, graceful: bool = False, timeout_s: float = 15.0) -> None:
        """Stop (SIGTERM if graceful, else SIGKILL) and start again; returns at once."""
        if self.is_running(node_id):
            if graceful:
                self.terminate(node_id, timeout_s)
            else:
                self.kill(node_id)
        self.start_node(node_id)

    def kill(self, node_id: str) -> NodeExit:
        """SIGKILL the node's process group and reap it."""
        with self._lock:
            node, proc = self._running(node_id)
            _signal_group(proc, signal.SIGKILL)
            return self._reaped(node, proc, forced=True, timeout_s=REAP_TIMEOUT_S)

    def terminate(self, node_id: str, timeout_s: float = 15.0) -> NodeExit:
        """Graceful stop: SIGTERM, wait up to timeout_s, then SIGKILL."""
        with self._lock:
            node, proc = self._running(node_id)
            self._send_term(proc)
            return self._finish_stop(node, proc, time.monotonic() + timeout_s)

    def pause(self, node_id: str) -> None:
        """SIGSTOP the node's process group (its workers freeze with it); return once it is stopped."""
        with self._lock:
            node, proc = self._running(node_id)
            _signal_group(proc, signal.SIGSTOP)
            proc.paused = True
            self._wait_stopped(node, proc, stopped=True)

    def resume(self, node_id: str) -> None:
        """SIGCONT the node's process group; return once it runs again."""
        with self._lock:
            node, proc = self._running(node_id)
            _signal_group(proc, signal.SIGCONT)
            proc.paused = False
            self._wait_stopped(node, proc, stopped=False)

    def stop(self, timeout_s: float = 15.0) -> list[NodeExit]:
        """Stop every running node (SIGTERM, then SIGKILL after timeout_s); report what was stopped."""
        with self._lock:
            targets = [(node, self._procs[node.id]) for node in self._nodes if self.is_running(node.id)]
            for _, proc in targets:
                self._send_term(proc)
            deadline = time.monotonic() + timeout_s
            exits = [self._finish_stop(node, proc, deadline) for node, proc in targets]
            self._procs.clear()      # also forgets nodes that had exited on their own
            self._down.update(node.id for node in self._nodes)
            if self.data_dir.joinpath(CLUSTER_FILE).exists():
                self._write_record()
            return exits

    def __enter__(self) -> LocalCluster:
        """Start the cluster unless some node already runs; stop it on exit, also on errors."""
        if not self.running():
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- readiness and metadata ----

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll until every node that should run is SERVING and answers, every voter knows a
        controller, and each node's map lists every such node alive. Raise at once if one exits,
        or with the log tails at the deadline."""
        deadline = time.monotonic() + timeout_s
        expected = [node for node in self._nodes if node.id not in self._down]
        with _Probe() as probe:
            while True:
                self._raise_if_exited(expected)
                missing = [problem for node in expected
                           if (problem := probe.readiness_problem(node, expected))]
                if not missing:
                    return
                if time.monotonic() >= deadline:
                    raise ClusterNotReadyError(
                        f"cluster in {self.data_dir} not ready after {timeout_s:g} s: {'; '.join(missing)}",
                        self.dump_logs(30))
                time.sleep(POLL_INTERVAL_S)

    def statuses(self) -> dict[str, data_pb2.NodeStatus]:
        """GetNodeStatus of every running, unpaused node that answers."""
        result = {}
        with _Probe() as probe:
            for node in self._nodes:
                if self.is_running(node.id) and not self.is_paused(node.id):
                    status = probe.node_status(node)
                    if status is not None:
                        result[node.id] = status
        return result

    def raft_leader(self) -> str | None:
        """The node that reports raft_role leader; with several (a deposed one not yet stepped
        down), the one most nodes name as controller. None if no answering node leads."""
        statuses = self.statuses()
        leaders = [node_id for node_id, status in statuses.items() if status.raft_role == "leader"]
        if len(leaders) <= 1:
            return leaders[0] if leaders else None
        votes = collections.Counter(status.controller for status in statuses.values())
        return max(leaders, key=lambda node_id: votes[node_id])

    def wait_raft_leader(self, timeout_s: float = 30.0, exclude: Sequence[str] = ()) -> str:
        """Poll raft_leader() until it names a node not in `exclude`."""
        deadline = time.monotonic() + timeout_s
        while (leader := self.raft_leader()) is None or leader in exclude:
            if time.monotonic() >= deadline:
                raise ClusterNotReadyError(f"no Raft leader (other than {list(exclude)}) after {timeout_s:g} s",
                                           self.dump_logs(30))
            time.sleep(POLL_INTERVAL_S)
        return leader

    def cluster_map(self) -> data_pb2.ClusterMap:
        """The cluster map as the Raft leader has it (else the first node that answers)."""
        leader = self.raft_leader()
        order = sorted(self._nodes, key=lambda node: node.id != leader)
        with _Probe() as probe:
            for node in order:
                if self.is_running(node.id) and not self.is_paused(node.id):
                    cluster_map = probe.cluster_map(node)
                    if cluster_map is not None:
                        return cluster_map
        raise ClusterNotReadyError(f"no node of {self.data_dir} answered GetClusterMap")

    def primary_of(self, dataset: str, key_or_shard: str | bytes | int) -> str:
        """Node id of the primary of a shard (given by index) or of the shard holding a key."""
        for info in self.cluster_map().datasets:
            if info.name == dataset:
                shard = (key_or_shard if isinstance(key_or_shard, int)
                         else shard_for_key(encode_key(key_or_shard), info.shards))
                for shard_info in info.shard_map:
                    if shard_info.index == shard:
                        return str(shard_info.primary)
                raise LocalClusterError(f"dataset {dataset!r} has no shard {shard}")
        raise LocalClusterError(f"dataset {dataset!r} is not in the cluster map")

    # ---- internals ----

    def _running(self, node_id: str) -> tuple[NodeHandle, _Process]:
        node = self.node(node_id)
        if not self.is_running(node.id):
            raise NodeExitedError(f"{node.id} is not running")
        return node, self._procs[node.id]

    def _raise_if_exited(self, expected: Sequence[NodeHandle]) -> None:
        for node in expected:
            if not self.is_running(node.id):
                proc = self._procs.get(node.id)
                code = proc.popen.returncode if proc is not None and proc.popen is not None else None
                tail = self.log_tail(node.id, 40)
                last = tail.splitlines()[-1].strip() if tail else ""
                raise NodeExitedError(f"node {node.id} exited (code {code}){': ' + last if last else ''}; "
                                      f"log: {node.log_path}", tail)

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_password_file(self.password_file)
        if not self.data_dir.joinpath(CLUSTER_FILE).exists():
            self._write_record()

    def _check_ports(self, nodes: Sequence[NodeHandle]) -> None:
        pairs = [(node.host, int(address.rpartition(":")[2]))
                 for node in nodes for address in (node.address, node.raft_address) if address]
        busy = _ports.first_port_in_use(pairs)
        if busy is not None:
            raise PortInUseError(f"port {busy[1]} on {busy[0]} is already in use "
                                 "(another cluster running? pick another base port or run shoal down)")

    def _spawn(self, node: NodeHandle) -> None:
        argv = [*(self._command_prefix(node.index) if self._command_prefix else []), *self._node_argv(node)]
        env = {**os.environ, **self._env, "SHOAL_RAFT_PASSWORD_FILE": str(self.password_file),
               "PYTHONUNBUFFERED": "1"}
        node.data_dir.mkdir(parents=True, exist_ok=True)
        with open(node.log_path, "ab") as log:
            log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} local cluster starts {node.id}: "
                      f"{shlex.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=node.data_dir, start_new_session=True, close_fds=True)
        self._procs[node.id] = _Process(pid=popen.pid, popen=popen)
        self._down.discard(node.id)
        logger.info("started %s (pid %d) on %s", node.id, popen.pid, node.address)

    def _node_argv(self, node: NodeHandle) -> list[str]:
        argv = [sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", node.id,
                "--data-dir", str(node.data_dir), "--listen", node.address]
        if node.voter:
            argv += ["--raft", node.raft_address]
            peers = [other.raft_address for other in self._nodes if other.voter and other.id != node.id]
            if peers:
                argv += ["--raft-peers", ",".join(peers)]
        else:
            voters = [other for other in self._nodes if other.voter]
            seed = next((other for other in voters if self.is_running(other.id)), voters[0])
            argv += ["--join", seed.address]
        if node.zone:
            argv += ["--zone", node.zone]
        return argv

    def _send_term(self, proc: _Process) -> None:
        _signal_pid(proc, signal.SIGTERM)
        _signal_group(proc, signal.SIGCONT)   # a stopped process (paused, maybe by others) acts on it only then
        proc.paused = False

    def _finish_stop(self, node: NodeHandle, proc: _Process, deadline: float) -> NodeExit:
        if self._wait_exit(node, proc, deadline):
            _signal_group(proc, signal.SIGKILL)     # sweep leftover group members (workers)
            return self._reaped(node, proc, forced=False, timeout_s=REAP_TIMEOUT_S)
        logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", node.id, proc.pid)
        _signal_group(proc, signal.SIGKILL)
        return self._reaped(node, proc, forced=True, timeout_s=REAP_TIMEOUT_S)

    def _wait_exit(self, node: NodeHandle, proc: _Process, deadline: float) -> bool:
        while self.is_running(node.id):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _wait_stopped(self, node: NodeHandle, proc: _Process, *, stopped: bool) -> None:
        """Signals arrive asynchronously: poll /proc until the process is (or is no longer) stopped."""
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while (process_state(proc.pid) == "T") != stopped:
            if time.monotonic() >= deadline or not self.is_running(node.id):
                raise LocalClusterError(f"{node.id} (pid {proc.pid}) did not {'stop' if stopped else 'continue'}")
            time.sleep(0.01)

    def _reaped(self, node: NodeHandle, proc: _Process, *, forced: bool, timeout_s: float) -> NodeExit:
        code = None
        if proc.popen is not None:
            code = proc.popen.wait(timeout_s)
        elif not self._wait_exit(node, proc, time.monotonic() + timeout_s):
            raise LocalClusterError(f"{node.id} (pid {proc.pid}) survived SIGKILL")
        self._procs.pop(node.id, None)
        self._down.add(node.id)
        self._write_record()
        return NodeExit(id=node.id, pid=proc.pid, returncode=code, forced=forced)

    def _adopt(self, record: Mapping[str, Any]) -> None:
        for entry in record.get("nodes", []):
            pid = entry.get("pid")
            if pid and is_node_process(int(pid), Path(entry["data_dir"])):
                self._procs[entry["id"]] = _Process(pid=int(pid), popen=None)

    def _write_record(self) -> None:
        record = {
            "format": RECORD_FORMAT, "tls": False, "base_port": self.base_port, "voters": self.voters,
            "password_file": str(self.password_file),
            "env": {k: v for k, v in self._env.items() if not any(m in k.upper() for m in _SECRET_MARKERS)},
            "nodes": [{"id": node.id, "pid": self.pid(node.id), "address": node.address,
                       "raft_address": node.raft_address, "host": node.host, "zone": node.zone,
                       "data_dir": str(node.data_dir), "log": str(node.log_path)} for node in self._nodes],
        }
        path = self.data_dir / CLUSTER_FILE
        tmp = path.with_name(CLUSTER_FILE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)


class _Probe:
    """Short-deadline health and status calls, one channel per node, closed on exit."""

    _OPTIONS = [("grpc.enable_retries", 0), ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024)]

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _channel(self, node: NodeHandle) -> grpc.Channel:
        if node.address not in self._channels:
            self._channels[node.address] = grpc.insecure_channel(node.address, options=self._OPTIONS)
        return self._channels[node.address]

    def serving(self, node: NodeHandle) -> bool:
        stub = health_pb2_grpc.HealthStub(self._channel(node))
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            return bool(exc.code() == grpc.StatusCode.UNIMPLEMENTED)  # no health service: judge by status
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _stub(self, node: NodeHandle) -> data_pb2_grpc.DataStub:
        return data_pb2_grpc.DataStub(self._channel(node))

    def node_status(self, node: NodeHandle) -> data_pb2.NodeStatus | None:
        try:
            status: data_pb2.NodeStatus = self._stub(node).GetNodeStatus(
                data_pb2.NodeStatusRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError:
            return None
        return status

    def cluster_map(self, node: NodeHandle) -> data_pb2.ClusterMap | None:
        try:
            cluster_map: data_pb2.ClusterMap = self._stub(node).GetClusterMap(
                data_pb2.ClusterMapRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError:
            return None
        return cluster_map

    def readiness_problem(self, node: NodeHandle, expected: Sequence[NodeHandle]) -> str | None:
        """None when `node` is ready; otherwise what is missing, in a few words."""
        if not self.serving(node):
            return f"{node.id} not serving"
        status = self.node_status(node)
        if status is None:
            return f"{node.id} does not answer GetNodeStatus"
        cluster_map = self.cluster_map(node)
        if cluster_map is None:
            return f"{node.id} does not answer GetClusterMap"
        if node.voter and not (status.controller or cluster_map.controller):   # data-only nodes may not say
            return f"{node.id} knows no controller"
        states = {info.id: info.state for info in cluster_map.nodes}
        not_alive = [f"{other.id}={states.get(other.id, 'absent')}" for other in expected
                     if states.get(other.id) != "alive"]
        return f"{node.id}'s map has {', '.join(not_alive)}" if not_alive else None


# ---- data dir, record and process helpers ----

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
    return record


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


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T, Z, ...), or "" if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def is_node_process(pid: int, data_dir: Path) -> bool:
    """True if pid is a live (not zombie) shoal process started for data_dir."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (process_state(pid) not in ("", "Z", "X") and any(b"shoal" in arg for arg in args)
            and os.fsencode(str(data_dir)) in args)


def read_tail(path: Path, lines: int = 50) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _check_fresh_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise ClusterLayoutError(f"{data_dir} exists and is not a directory")
    if data_dir.is_dir() and {entry.name for entry in data_dir.iterdir()} - {PASSWORD_FILE}:
        raise ClusterLayoutError(f"{data_dir} is not empty and has no {CLUSTER_FILE}: "
                                 "not a local cluster directory (use a new or empty data dir)")


_Layout = tuple[int, int, list[str], list[str]]   # base_port, voters, host per node, zone per node


def _new_layout(nodes: int, voters: int | None, base_port: int | None, hosts: list[str],
                zones: Sequence[str] | None) -> _Layout:
    if nodes < 1:
        raise ClusterLayoutError(f"a cluster needs at least one node, got {nodes}")
    voters = voters if voters is not None else default_voters(nodes)
    if voters not in (1, 3, 5) or voters > nodes:
        raise ClusterLayoutError(f"voters must be 1, 3 or 5 and at most the node count ({nodes}), got {voters}")
    if len(hosts) != nodes:
        raise ClusterLayoutError(f"hosts needs one address per node ({nodes}), got {len(hosts)}")
    if base_port is None:
        base_port = _ports.free_base_port(hosts, nodes)
    elif not 1 <= base_port <= 65535 - _ports.RAFT_PORT_OFFSET - nodes:
        raise ClusterLayoutError(f"base port {base_port} leaves no room for {nodes} nodes (Raft at +100)")
    zone_list = [zones[i % len(zones)] for i in range(nodes)] if zones else [""] * nodes
    return base_port, voters, hosts, zone_list


def _layout_from_record(data_dir: Path, record: Mapping[str, Any], nodes: int | None, voters: int | None,
                        base_port: int | None, hosts: Sequence[str] | None,
                        zones: Sequence[str] | None) -> _Layout:
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


def _signal_pid(proc: _Process, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(proc: _Process, sig: int) -> None:
    """Signal the node's process group (its own session); an adopted pid only if it leads one."""
    try:
        if proc.popen is None and os.getpgid(proc.pid) != proc.pid:
            os.kill(proc.pid, sig)
        else:
            os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _kill_children(procs: dict[str, _Process]) -> None:
    """Finalizer: SIGKILL and reap every child still running. Must not reference the cluster."""
    for proc in list(procs.values()):
        if proc.popen is not None and proc.popen.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.popen.wait(5.0)
            except subprocess.TimeoutExpired:
                logger.error("node pid %d survived SIGKILL", proc.pid)
