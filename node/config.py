"""NodeConfig: every tunable of a node in one frozen object, validated at start.

Built once in `__main__` from an optional TOML file, then `SHOAL_*` environment
variables, then flags (later sources win), and passed down explicitly.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
from typing import Any

from shoal.node.errors import ConfigError
from shoal.node.metadata.commands import TASK_RESULT_BYTES_MAX

MiB = 1024 * 1024
GiB = 1024 * MiB
REPLY_HEADROOM_BYTES = 64 * 1024   # a bounded reply's own framing, beyond its byte bound
_ZERO_HAS_MEANING = frozenset({"workers", "repair_bytes_per_s", "repair_pacing_latency_factor",
                               "scrub_interval_s"})   # 0 = one per core / unlimited / never (checked below)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    # identity and addresses
    node_id: str                          # unique, stable across restarts
    cluster_id: str = ""                  # expected cluster; empty = whichever this data dir joined first
    data_dir: pathlib.Path                # shards/, raft/, node.lock live here
    listen: str = "127.0.0.1:7400"        # gRPC host:port (client and peer API)
    advertise: str = ""                   # address others dial; defaults to listen
    zone: str = ""                        # placement spreads replicas across zones
    http_listen: str = ""                 # HTTP host:port (/metrics, /healthz, /readyz); empty = off
    tls_dir: str = ""                     # mutual TLS on the gRPC port and to peers, HTTPS on the HTTP port: DIR from `shoal certs init`; "" = off
    encryption_key_file: str = ""         # the cluster's key (`shoal key init FILE`): serves encrypted datasets; "" = none

    # metadata (Raft). raft empty and join empty = standalone single node (local metadata).
    raft: str = ""                        # this voter's Raft host:port
    raft_peers: tuple[str, ...] = ()      # the other voters' Raft host:port
    raft_password: str = ""               # mandatory with raft; the Raft port unpickles input
    join: str = ""                        # data-only node: any member's gRPC host:port
    leader_fallback_timeout_s: float = 2.0  # a cut-off Raft leader steps down after this

    raft_log_compaction_min_entries: int = 5000   # dump + truncate the journal after this many entries ...
    raft_log_compaction_min_time_s: float = 300.0  # ... and at most this often
    raft_commands_queue_max: int = 10_000          # proposals queued in pysyncobj before it refuses more
    raft_connection_retry_s: float = 1.0           # reconnect period between voters

    # metadata proposals and reads through the log (seconds)
    propose_timeout_s: float = 5.0            # a client's create/drop dataset or a node's join, retries included
    propose_attempt_timeout_s: float = 2.0    # one attempt of a proposal through the log
    propose_forward_timeout_s: float = 3.0    # a proposal forwarded to this voter by a data-only node
    propose_backoff_s_min: float = 0.05       # between attempts after NO_CONTROLLER / UNKNOWN_OUTCOME ...
    propose_backoff_s_max: float = 0.5        # ... doubling up to this
    barrier_timeout_s: float = 2.0            # wait for the local copy to catch up after a proposal
    register_retry_s: float = 0.2             # pacing of start-up registration until the cluster accepts us

    # storage
    map_size_bytes: int = 64 * GiB        # LMDB map per shard: address space, files are sparse
    lmdb_sync: bool = True                # fsync each commit (off only for throwaway benches)
    lmdb_threads: int = 4                 # threads for blocking LMDB work (commits fsync): never the event loop
    lmdb_max_readers: int = 1024          # concurrent read transactions per shard environment
    idempotency_retain_writes: int = 100_000   # write ids remembered per shard, so retries apply once

    # limits (TOO_LARGE / RESOURCE_EXHAUSTED beyond them)
    key_bytes_max: int = 511              # LMDB 0.9's key limit
    value_bytes_max: int = 1 * MiB
    batch_records_max: int = 10_000
    message_bytes_max: int = 16 * MiB     # gRPC receive limit on both ends
    inflight_requests_max: int = 2_000    # concurrent RPCs before OVERLOADED
    overload_retry_after_s: float = 0.05  # the retry hint sent with OVERLOADED
    put_stream_window_batches: int = 32   # batches of one PutStream read and not yet acknowledged ...
    put_stream_window_bytes_max: int = 32 * MiB   # ... and their bytes (one batch always fits): memory per stream
    streams_max: int = 64                 # streaming RPCs open at once (scans, PutStreams, copies, watches) before OVERLOADED
    stream_idle_timeout_s: float = 60.0   # a stream whose client takes no message (or sends none, nothing in flight) this long is closed
    scan_chunk_records: int = 1000        # records per Scan chunk when the caller does not say
    scan_chunk_records_max: int = 10_000  # the most a caller may ask for per chunk
    scan_chunk_bytes_max: int = 4 * MiB   # a Scan chunk ends before this many bytes (one record always fits)
    fetch_entries_bytes_max: int = 4 * MiB   # a FetchEntries reply ends before this (one entry always goes)

    # replication
    group_ops_max: int = 512              # client ops committed as one entry (group commit) ...
    group_bytes_max: int = 8 * MiB        # ... and their bytes (one op alone may exceed it): one Replicate message
    entry_ring_entries_max: int = 4096    # recent entries kept in memory per shard for catch-up ...
    entry_ring_bytes_max: int = 64 * MiB  # ... and their bytes
    entry_log_entries_max: int = 1024     # recent entries also kept in the shard's LMDB file, so a restarted ...
    entry_log_bytes_max: int = 1 * MiB    # ... primary can catch a backup up (a larger entry is not kept)
    peer_retry_s: float = 0.1             # pacing of Replicate/BeginEpoch retries to one backup

    # failure detection and leases (seconds). The controller declares a node dead only
    # after its lease certainly expired, even one granted by a deposed Raft leader:
    # node_dead_after_s > lease_s + leader_fallback_timeout_s + margin (validate()).
    heartbeat_interval_s: float = 0.5
    lease_s: float = 2.0
    node_suspect_after_s: float = 2.0
    node_dead_after_s: float = 6.0
    replicate_timeout_s: float = 2.0      # a backup slower than this is fenced out of the in-sync set
    controller_proposals_per_tick_max: int = 32   # bounded work per controller tick (heartbeat_interval_s)
    controller_propose_timeout_s: float = 3.0     # one controller decision through the log, retries included

    # re-replication (issue 18): the controller adds learners, their shard's primary fills them
    repair_transfers_per_node_max: int = 1   # learners (incoming copies) the controller keeps on one node at once
                                             # (1, not HDFS's 2: on 2 cores 2 copied at half the rate, bench/RESULTS.md)
    repair_bytes_per_s: int = 64 * MiB       # send rate cap of all copies this node sends (copy_source.Throttle); 0 = unlimited
    # 64 MiB/s, 2 transfers kept for page copies: 388 MiB restored in 4.5 s at it (bench/repair.py); other rates not measured yet
    repair_pacing_latency_factor: float = 2.0   # copies slow while client write p90 > this x usual (replication/pacing.py); 0 = off
    scrub_interval_s: float = 3600.0         # every replica re-verified this often (node/scrubber.py); 0 = never

    # compute (DESIGN.md section 5)
    workers: int = 0                      # worker processes for tasks; 0 = one per core
    task_result_bytes_max: int = 4 * MiB  # one task's packed partial result (it travels through the Raft log)
    task_commit_timeout_s: float = 30.0   # committing a finished task through the log, retries included
    tasks_per_node_max: int = 8           # attempts the controller keeps running on one node at once
    speculative_after_factor: float = 3.0   # a task running this many times its finished siblings' median ...
    speculative_after_s_min: float = 2.0    # ... and at least this long gets a speculative copy elsewhere
    job_wait_s_max: float = 10.0          # the longest one GetJob call waits for a change (long poll)
    user_code: bool = False               # accept map_reduce with cloudpickled functions (off: refused)
    user_code_cpu_s: int = 300            # RLIMIT_CPU of a user-code task process
    user_code_memory_bytes: int = 2 * GiB   # RLIMIT_AS of a user-code task process
    user_code_wall_s: float = 600.0       # a user-code task still running after this is killed
    user_code_sandbox: bool = True        # user code without network or node secrets (compute/sandbox.py)

    # operations
    log_level: str = "INFO"
    log_format: str = "text"              # text | json
    chaos_reports_dir: str = ""           # the dashboard lists the chaos reports (DIR/*/report.json) here; "" = data_dir/../chaos

    @property
    def address(self) -> str:
        return self.advertise or self.listen

    @property
    def standalone(self) -> bool:
        return not self.raft and not self.join

    def validate(self) -> NodeConfig:
        """Raise ConfigError naming the field; return self for chaining."""
        if not self.node_id or any(c.isspace() for c in self.node_id):
            raise ConfigError("node_id must be a non-empty string without spaces")
        for name in ("listen", "advertise", "raft", "join", "http_listen", *()):
            value = getattr(self, name)
            if value:
                parse_host_port(value, name)
        for peer in self.raft_peers:
            parse_host_port(peer, "raft_peers")
        if self.raft_peers and not self.raft:
            raise ConfigError("raft_peers given without raft: a voter needs its own --raft HOST:PORT")
        if self.raft and self.join:
            raise ConfigError("give either --raft (a metadata voter) or --join (a data-only node), not both")
        if self.raft and len(self.raft_peers) + 1 not in (1, 3, 5):
            raise ConfigError(f"a Raft group has 1, 3 or 5 voters, got {len(self.raft_peers) + 1}")
        if self.raft and len(self.raft_password) < 8:
            raise ConfigError("a Raft password of at least 8 characters is mandatory with --raft "
                              "(SHOAL_RAFT_PASSWORD_FILE, SHOAL_RAFT_PASSWORD or raft_password_file in the config file): "
                              "the Raft port unpickles what it receives")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", "float") and not value > 0 and field.name not in _ZERO_HAS_MEANING:
                raise ConfigError(f"{field.name} must be positive, got {value}")
        if self.propose_backoff_s_min > self.propose_backoff_s_max:
            raise ConfigError("propose_backoff_s_min must not exceed propose_backoff_s_max")
        if self.scan_chunk_records > self.scan_chunk_records_max:
            raise ConfigError("scan_chunk_records must not exceed scan_chunk_records_max")
        if self.map_size_bytes < 1 * MiB:
            raise ConfigError(f"map_size_bytes must be at least 1 MiB, got {self.map_size_bytes}")
        if not 1 <= self.key_bytes_max <= 511:
            raise ConfigError(f"key_bytes_max must be within 1..511 (LMDB), got {self.key_bytes_max}")
        if self.value_bytes_max + self.key_bytes_max + 4096 > self.message_bytes_max:
            raise ConfigError("message_bytes_max must exceed value_bytes_max + key_bytes_max + 4096")
        for name in ("scan_chunk_bytes_max", "fetch_entries_bytes_max", "group_bytes_max"):
            if getattr(self, name) + REPLY_HEADROOM_BYTES > self.message_bytes_max:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at most message_bytes_max "
                                  f"- {REPLY_HEADROOM_BYTES} ({self.message_bytes_max - REPLY_HEADROOM_BYTES})")
        if self.batch_records_max < 1 or self.inflight_requests_max < 1:
            raise ConfigError("batch_records_max and inflight_requests_max must be positive")
        if not 0.5 <= self.leader_fallback_timeout_s <= 5:
            raise ConfigError("leader_fallback_timeout_s must be within 0.5..5 s (pysyncobj's 30 s default "
                              "leaves a deposed leader in charge far too long)")
        if not 0 < self.heartbeat_interval_s < self.lease_s:
            raise ConfigError("heartbeat_interval_s must be positive and below lease_s")
        margin_s = 2 * self.heartbeat_interval_s
        if self.node_dead_after_s <= self.lease_s + self.leader_fallback_timeout_s + margin_s:
            raise ConfigError(
                f"node_dead_after_s ({self.node_dead_after_s}) must exceed lease_s + leader_fallback_timeout_s "
                f"+ 2 x heartbeat_interval_s ({self.lease_s + self.leader_fallback_timeout_s + margin_s}): "
                "a new primary may only be promoted after the old one's lease expired")
        if not 0 < self.node_suspect_after_s <= self.node_dead_after_s:
            raise ConfigError("node_suspect_after_s must be positive and at most node_dead_after_s")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 (one per core) or more, got {self.workers}")
        if self.scrub_interval_s < 0:
            raise ConfigError(f"scrub_interval_s must be 0 (never) or more, got {self.scrub_interval_s}")
        if self.repair_bytes_per_s < 0:
            raise ConfigError(f"repair_bytes_per_s must be 0 (unlimited) or more, got {self.repair_bytes_per_s}")
        if self.repair_pacing_latency_factor != 0 and not self.repair_pacing_latency_factor > 1:
            raise ConfigError("repair_pacing_latency_factor must be 0 (copies never slow down) or above 1 (a multiple "
                              f"of the usual client write latency), got {self.repair_pacing_latency_factor}")
        if self.task_result_bytes_max > TASK_RESULT_BYTES_MAX:
            raise ConfigError(f"task_result_bytes_max must be at most {TASK_RESULT_BYTES_MAX} (a result travels in "
                              f"one Raft command), got {self.task_result_bytes_max}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, got {self.log_format!r}")
        return self


def parse_host_port(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{field}: expected HOST:PORT, got {value!r}")
    return host, int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, with a precise error."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}")
    kind = _FIELDS[name].type
    try:
        if kind == "pathlib.Path":
            return pathlib.Path(raw)
        if kind == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(s.strip() for s in items if s.strip())
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot read {raw!r} as {kind}") from None


def load_config(flags: dict[str, Any], config_file: str | None = None,
                environ: dict[str, str] | None = None) -> NodeConfig:
    """Merge TOML file < SHOAL_<FIELD> environment < flags (None = unset), then validate."""
    values: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                table = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        settings = dict(table.get("node", table))
        if "raft_password_file" in settings:   # a file name, read below: not a field of NodeConfig
            values["raft_password_file"] = str(settings.pop("raft_password_file"))
        values.update({k: _coerce(k, v) for k, v in settings.items()})
    env = os.environ if environ is None else environ
    for name in _FIELDS:
        raw = env.get("SHOAL_" + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw)
    file_setting = values.pop("raft_password_file", None)
    password_file = env.get("SHOAL_RAFT_PASSWORD_FILE") or file_setting
    if password_file and flags.get("raft_password") is None:
        values["raft_password"] = _read_secret(str(password_file))
    for name, raw in flags.items():
        if raw is not None:
            values[name] = _coerce(name, raw)
    for required in ("node_id", "data_dir"):
        if required not in values:
            raise ConfigError(f"{required} is required (flag, SHOAL_{required.upper()} or config file)")
    return NodeConfig(**values).validate()


def _read_secret(path: str) -> str:
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read raft password file {path}: {exc.strerror}") from None
