"""shoal.client.local: a cluster of real node processes on this machine, for `shoal up`, tests and chaos.

    with LocalCluster(tmp_path / "cluster", nodes=3) as cluster:
        client = cluster.client()

A data dir holds `raft-password`, `cluster.json` (the record: layout, knobs and pids; DESIGN.md
section 9) and one folder per node, `n1/` .. `nN/`, with that node's data and `node.log`. Node
i (0-based) listens on gRPC base+i, HTTP (dashboard, /metrics) base+200+i and, if it is a
metadata voter, Raft base+100+i.

Everything public is re-exported here (import it from here); the modules, one job each:
- cluster: LocalCluster (start, stop, kill, pause, readiness, inspection) and NodeExit.
- errors: the LocalClusterError tree (ClusterLayoutError, PortInUseError, ...).
- layout: NodeHandle, the layout (ports, voters, hosts, zones), cluster.json and the
  Raft password file (read_record, ensure_password_file, default_voters, ...).
- processes: spawning and signalling node processes, /proc checks (process_state,
  is_node_process), log tails (read_tail), and the finalizer that kills children.
- probe: the raw-stub readiness probe and readings of its answers.
- ports: free port blocks and address formatting.

Why it works the way it does:
- Each node runs in its own session and group, so kill and pause signal the whole group
  (wrapper and workers included) and Ctrl-C reaches only `shoal up`; see processes.
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

from shoal.client.local.cluster import POLL_INTERVAL_S, REAP_TIMEOUT_S, LocalCluster, NodeExit
from shoal.client.local.errors import (
    ClusterLayoutError, ClusterNotReadyError, ClusterRunningError, LocalClusterError, NodeExitedError,
    PortInUseError,
)
from shoal.client.local.layout import (
    CLUSTER_FILE, LOG_FILE, PASSWORD_FILE, RECORD_FORMAT, NodeHandle, default_voters, ensure_password_file,
    read_record,
)
from shoal.client.local.probe import PROBE_TIMEOUT_S
from shoal.client.local.processes import is_node_process, process_state, read_tail
# encode_key and shard_for_key were importable from here before the split; they stay so.
from shoal.client.wire.routing import encode_key as encode_key, shard_for_key as shard_for_key

__all__ = [
    "CLUSTER_FILE", "LOG_FILE", "PASSWORD_FILE", "POLL_INTERVAL_S", "PROBE_TIMEOUT_S", "REAP_TIMEOUT_S",
    "RECORD_FORMAT", "ClusterLayoutError", "ClusterNotReadyError", "ClusterRunningError", "LocalCluster",
    "LocalClusterError", "NodeExit", "NodeExitedError", "NodeHandle", "PortInUseError", "default_voters",
    "ensure_password_file", "is_node_process", "process_state", "read_record", "read_tail",
]
