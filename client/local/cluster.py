"""LocalCluster: start, stop, kill, pause, wait for and inspect the node processes of one local cluster.

The class is glue over its helpers: the layout and cluster.json (layout), the processes
(processes), readiness and metadata readings (probe), free ports (ports); the package
docstring (shoal.client.local) says why it works the way it does. NodeExit reports
what stop, kill and terminate did to one node.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shoal.client.local import ports
from shoal.client.local.errors import (
    ClusterLayoutError, ClusterNotReadyError, ClusterRunningError, LocalClusterError, NodeExitedError,
    PortInUseError,
)
from shoal.client.local.layout import (
    ADMIN_TOKEN_FILE, CLUSTER_FILE, PASSWORD_FILE, NodeHandle, check_fresh_dir, ensure_password_file,
    layout_from_record, new_layout, node_argv, node_handle, read_record, write_record,
)
from shoal.client.local.probe import Probe, primary_in_map, raft_leader_of
from shoal.client.local.processes import (
    NodeProcess, is_node_process, kill_children, process_state, read_tail, signal_group, signal_pid, spawn,
)
from shoal.client.wire.keyfile import write_key_file
from shoal.client.wire.pb import data_pb2

if TYPE_CHECKING:
    from shoal.client import Client

__all__ = ["POLL_INTERVAL_S", "REAP_TIMEOUT_S", "LocalCluster", "NodeExit"]

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
REAP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class NodeExit:
    """What stop/kill/terminate did to one node."""
    id: str
    pid: int
    returncode: int | None       # None for an adopted process (not our child)
    forced: bool                 # True: it needed SIGKILL (or was killed on purpose)


class LocalCluster:
    """Start, stop, kill, pause and inspect the node processes of one local cluster."""

    def __init__(self, data_dir: Path | str, *, nodes: int | None = None, voters: int | None = None,
                 base_port: int | None = None, host: str = "127.0.0.1", hosts: Sequence[str] | None = None,
                 command_prefix: Callable[[int], list[str]] | None = None,
                 env: Mapping[str, str] | None = None, zones: Sequence[str] | None = None,
                 detach: bool = False, tls: bool = False, encryption_key_file: Path | str | None = None,
                 auth: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.detach = detach
        self._command_prefix = command_prefix
        self._lock = threading.RLock()
        self._auth = auth   # start() makes an admin token into data_dir/admin.token (auth on from then)
        token_file = self.data_dir / ADMIN_TOKEN_FILE
        # bearer token for client() and the readiness probe, once the cluster holds tokens
        self.token = token_file.read_text().strip() if token_file.exists() else ""
        self._procs: dict[str, NodeProcess] = {}
        record = read_record(self.data_dir)
        if record is None:
            check_fresh_dir(self.data_dir)
            count = nodes or (len(hosts) if hosts else 3)
            layout = new_layout(count, voters, base_port, list(hosts or [host] * count), zones)
            self._env: dict[str, str] = dict(env or {})
            if tls:   # mutual TLS: the CA and certificates in data_dir/tls, named in every node's env
                from shoal.client.certs import init as make_certs
                make_certs(self.data_dir / "tls", list(dict.fromkeys(layout[2])))
                self._env["SHOAL_TLS_DIR"] = str(self.data_dir / "tls")
        else:
            layout = layout_from_record(self.data_dir, record, nodes, voters, base_port, hosts, zones)
            self._env = {**record.get("env", {}), **(env or {})}
            self._adopt(record)
        if encryption_key_file is not None:   # every node gets the key of encrypted datasets (made if missing)
            key_path = Path(encryption_key_file).resolve()
            if not key_path.exists():
                key_path.parent.mkdir(parents=True, exist_ok=True)
                write_key_file(key_path)
            self._env["SHOAL_ENCRYPTION_KEY_FILE"] = str(key_path)
        self.base_port, self.voters, hosts_list, zones_list = layout
        self._nodes = tuple(node_handle(self.data_dir, self.base_port, self.voters, i, hosts_list[i], zones_list[i])
                            for i in range(len(hosts_list)))
        self._by_id = {node.id: node for node in self._nodes}
        self._down = {node.id for node in self._nodes if node.id not in self._procs}
        if not detach:
            self._finalizer = weakref.finalize(self, kill_children, self._procs,
                                              [node.tmp_dir for node in self._nodes])

    @classmethod
    def open(cls, data_dir: Path | str, **kwargs: Any) -> LocalCluster:
        """The cluster recorded in data_dir; ClusterLayoutError if there is none."""
        if read_record(Path(data_dir).resolve()) is None:
            raise ClusterLayoutError(f"no {CLUSTER_FILE} in {data_dir}: not a local cluster directory")
        return cls(data_dir, **kwargs)

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

    @property
    def tls_dir(self) -> str:
        """The TLS files of a cluster started with tls=True (or SHOAL_TLS_DIR in its env); "" = plaintext."""
        return self._env.get("SHOAL_TLS_DIR", "")

    @property
    def http_scheme(self) -> str:
        """"https" when the nodes have TLS (their HTTP ports then serve the node certificate), else "http"."""
        return "https" if self.tls_dir else "http"

    def client(self, **kwargs: Any) -> Client:
        """A client of this cluster, with its TLS files and `token` unless `config` is given."""
        from shoal.client import Client, ClientConfig
        if (self.tls_dir or self.token) and "config" not in kwargs:
            kwargs["config"] = ClientConfig(tls_dir=self.tls_dir, token=self.token)
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
                if self._auth and not self.token:
                    self._create_admin_token()
            except BaseException:
                self.stop(timeout_s=5.0)
                raise

    def _create_admin_token(self) -> None:
        """The cluster's first token, an admin's, into data_dir/admin.token (mode 0600): auth is on from now."""
        with self.client() as client:
            token = client.create_token("admin", "shoal up")["token"]
        fd = os.open(self.data_dir / ADMIN_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        self.token = token

    @property
    def admin_token_file(self) -> Path | None:
        """data_dir/admin.token of a cluster started with auth=True (None otherwise)."""
        path = self.data_dir / ADMIN_TOKEN_FILE
        return path if path.exists() else None

    def start_missing(self, timeout_s: float = 60.0) -> list[str]:
        """Start the nodes that are not running (e.g. after a kill -9) and wait until ready."""
        missing = [node.id for node in self._nodes if not self.is_running(node.id)]
        for node_id in missing:
            self.start_node(node_id)
        self.wait_ready(timeout_s)
        return missing

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
            signal_group(proc, signal.SIGKILL)
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
            signal_group(proc, signal.SIGSTOP)
            proc.paused = True
            self._wait_stopped(node, proc, stopped=True)

    def resume(self, node_id: str) -> None:
        """SIGCONT the node's process group; return once it runs again."""
        with self._lock:
            node, proc = self._running(node_id)
            signal_group(proc, signal.SIGCONT)
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
            for node in self._nodes:
                shutil.rmtree(node.tmp_dir, ignore_errors=True)
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
        with Probe(self.tls_dir, self.token) as probe:
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
        with Probe(self.tls_dir, self.token) as probe:
            for node in self._nodes:
                if self.is_running(node.id) and not self.is_paused(node.id):
                    status = probe.node_status(node)
                    if status is not None:
                        result[node.id] = status
        return result

    def raft_leader(self) -> str | None:
        """The node that reports raft_role leader; with several (a deposed one not yet stepped
        down), the one most nodes name as controller. None if no answering node leads."""
        return raft_leader_of(self.statuses())

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
        with Probe(self.tls_dir, self.token) as probe:
            for node in order:
                if self.is_running(node.id) and not self.is_paused(node.id):
                    cluster_map = probe.cluster_map(node)
                    if cluster_map is not None:
                        return cluster_map
        raise ClusterNotReadyError(f"no node of {self.data_dir} answered GetClusterMap")

    def primary_of(self, dataset: str, key_or_shard: str | bytes | int) -> str:
        """Node id of the primary of a shard (given by index) or of the shard holding a key."""
        return primary_in_map(self.cluster_map(), dataset, key_or_shard)

    # ---- internals ----

    def _running(self, node_id: str) -> tuple[NodeHandle, NodeProcess]:
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
                 for node in nodes for address in (node.address, node.raft_address, node.http_address) if address]
        busy = ports.first_port_in_use(pairs)
        if busy is not None:
            raise PortInUseError(f"port {busy[1]} on {busy[0]} is already in use "
                                 "(another cluster running? pick another base port or run shoal down)")

    def _spawn(self, node: NodeHandle) -> None:
        argv = [*(self._command_prefix(node.index) if self._command_prefix else []), *self._node_argv(node)]
        node.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, **self._env, "SHOAL_RAFT_PASSWORD_FILE": str(self.password_file),
               "PYTHONUNBUFFERED": "1", "TMPDIR": str(node.tmp_dir)}
        popen = spawn(node, argv, env)
        self._procs[node.id] = NodeProcess(pid=popen.pid, popen=popen)
        self._down.discard(node.id)
        logger.info("started %s (pid %d) on %s", node.id, popen.pid, node.address)

    def _node_argv(self, node: NodeHandle) -> list[str]:
        voters = [other for other in self._nodes if other.voter]
        seed = None if node.voter else next((other for other in voters if self.is_running(other.id)), voters[0])
        return node_argv(node, voters, seed)

    def _send_term(self, proc: NodeProcess) -> None:
        signal_pid(proc, signal.SIGTERM)
        signal_group(proc, signal.SIGCONT)   # a stopped process (paused, maybe by others) acts on it only then
        proc.paused = False

    def _finish_stop(self, node: NodeHandle, proc: NodeProcess, deadline: float) -> NodeExit:
        if self._wait_exit(node, proc, deadline):
            signal_group(proc, signal.SIGKILL)     # sweep leftover group members (workers)
            return self._reaped(node, proc, forced=False, timeout_s=REAP_TIMEOUT_S)
        logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", node.id, proc.pid)
        signal_group(proc, signal.SIGKILL)
        return self._reaped(node, proc, forced=True, timeout_s=REAP_TIMEOUT_S)

    def _wait_exit(self, node: NodeHandle, proc: NodeProcess, deadline: float) -> bool:
        while self.is_running(node.id):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _wait_stopped(self, node: NodeHandle, proc: NodeProcess, *, stopped: bool) -> None:
        """Signals arrive asynchronously: poll /proc until the process is (or is no longer) stopped."""
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while (process_state(proc.pid) == "T") != stopped:
            if time.monotonic() >= deadline or not self.is_running(node.id):
                raise LocalClusterError(f"{node.id} (pid {proc.pid}) did not {'stop' if stopped else 'continue'}")
            time.sleep(0.01)

    def _reaped(self, node: NodeHandle, proc: NodeProcess, *, forced: bool, timeout_s: float) -> NodeExit:
        code = None
        if proc.popen is not None:
            code = proc.popen.wait(timeout_s)
        elif not self._wait_exit(node, proc, time.monotonic() + timeout_s):
            raise LocalClusterError(f"{node.id} (pid {proc.pid}) survived SIGKILL")
        self._procs.pop(node.id, None)
        self._down.add(node.id)
        shutil.rmtree(node.tmp_dir, ignore_errors=True)
        self._write_record()
        return NodeExit(id=node.id, pid=proc.pid, returncode=code, forced=forced)

    def _adopt(self, record: Mapping[str, Any]) -> None:
        for entry in record.get("nodes", []):
            pid = entry.get("pid")
            if pid and is_node_process(int(pid), Path(entry["data_dir"])):
                self._procs[entry["id"]] = NodeProcess(pid=int(pid), popen=None)

    def _write_record(self) -> None:
        write_record(self.data_dir, base_port=self.base_port, voters=self.voters, password_file=self.password_file,
                     env=self._env, nodes=[(node, self.pid(node.id)) for node in self._nodes])
