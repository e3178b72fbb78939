"""Node processes of a local cluster: spawn, signal, inspect via /proc, and reap at exit.

Why it works the way it does:
- Each node runs in its own session (start_new_session=True): Ctrl-C in a terminal reaches
  only `shoal up`, which then stops the nodes itself instead of racing their own handlers.
  The node's process group id is its pid, so kill and pause signal the whole group: a
  command_prefix wrapper and the node's worker processes die or freeze with it. A graceful
  stop sends SIGTERM to the node alone (signal_pid; it shuts its own workers down), then
  sweeps the group (signal_group).
- A pid recorded in cluster.json is only trusted (adopted) when /proc/PID/cmdline still
  names shoal and this node's data dir (is_node_process), so a recycled pid is never
  signalled; an adopted pid that does not lead its own group is signalled alone.
- kill_children is the finalizer of a LocalCluster with detach=False; it gets the pid table,
  never the cluster, so it can run after the cluster is collected or at interpreter exit.

The package (shoal.client.local) re-exports process_state, is_node_process and read_tail.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.client.local.layout import NodeHandle

logger = logging.getLogger(__name__)

LOG_TAIL_READ_BYTES = 256 * 1024    # read_tail looks no further back than this


@dataclasses.dataclass(slots=True)
class NodeProcess:
    """A node's process as LocalCluster tracks it (mutable: `paused` follows pause/resume)."""
    pid: int
    popen: subprocess.Popen[bytes] | None   # None: adopted from cluster.json
    paused: bool = False


def spawn(node: NodeHandle, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start argv in node's data dir, in a new session, output appended to node.log after a header."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    with open(node.log_path, "ab") as log:
        log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} local cluster starts {node.id}: "
                  f"{shlex.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=node.data_dir, start_new_session=True, close_fds=True)


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
            fh.seek(max(0, size - LOG_TAIL_READ_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def signal_pid(proc: NodeProcess, sig: int) -> None:
    """Signal the node's process alone; a process that is gone already is not an error."""
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def signal_group(proc: NodeProcess, sig: int) -> None:
    """Signal the node's process group (its own session); an adopted pid only if it leads one."""
    try:
        if proc.popen is None and os.getpgid(proc.pid) != proc.pid:
            os.kill(proc.pid, sig)
        else:
            os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def kill_children(procs: dict[str, NodeProcess], tmp_dirs: Sequence[Path] = ()) -> None:
    """Finalizer: SIGKILL and reap every child still running, remove the nodes' TMPDIRs.
    Must not reference the cluster."""
    for proc in list(procs.values()):
        if proc.popen is not None and proc.popen.poll() is None:
            signal_group(proc, signal.SIGKILL)
            try:
                proc.popen.wait(5.0)
            except subprocess.TimeoutExpired:
                logger.error("node pid %d survived SIGKILL", proc.pid)
    for tmp_dir in tmp_dirs:
        shutil.rmtree(tmp_dir, ignore_errors=True)
