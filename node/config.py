"""NodeConfig: every tunable of a node in one frozen object, validated at start.

Built once in `__main__` from an optional TOML file, then `SHOAL_*` environment
variables, then flags (later sources win), and passed down explicitly.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tomllib
from typing import Any

from shoal.node.errors import ConfigError
from shoal.node.metadata.commands import TASK_RESULT_BYTES_MAX

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
HOUR_S, DAY_S, WEEK_S = 3600.0, 86400.0, 7 * 86400.0
REPLY_HEADROOM_BYTES = 64 * 1024   # a bounded reply's own framing, beyond its byte bound
GRPC_BYTES_MAX = 2**31 - 1         # gRPC's message-size channel options are C ints
MAP_SIZE_BYTES_MAX = 1 * TiB       # LMDB maps it whole per shard; x86-64 gives a process 128 TiB (mmap fails above)
CPUS = os.cpu_count() or 1
_ZERO_HAS_MEANING = frozenset({"workers", "repair_bytes_per_s", "repair_pacing_latency_factor",
                               "scrub_interval_s"})   # 0 = one per core / unlimited / never (checked below)

_PACE = "a pacing interval: below 10 ms it spins a core, above a minute recovery stalls"
_TIMEOUT = "a timeout: at least 10 ms, at most an hour so a stuck call is noticed"
_SILENT = "a silent node must be noticed within a day"
_COUNT = "held in memory"
# Every numeric setting's range (inclusive) and why; validate() refuses a value outside it, NaN and
# infinity in one line, so nothing is accepted only to crash, hang or overload the node later.
# For _ZERO_HAS_MEANING, 0 is accepted too and the range holds the other values.
RANGES: dict[str, tuple[float, float, str]] = {
    "leader_fallback_timeout_s": (0.5, 5.0, "pysyncobj's 30 s default leaves a deposed leader in charge far too long"),
    "raft_log_compaction_min_entries": (1, 100_000_000, "the Raft journal until a dump"),
    "raft_log_compaction_min_time_s": (1.0, DAY_S, "a dump of the whole metadata at most every second"),
    "raft_commands_queue_max": (1, 1_000_000, _COUNT),
    "raft_connection_retry_s": (0.01, 60.0, _PACE),
    "propose_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "propose_attempt_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "propose_forward_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "propose_backoff_s_min": (0.01, 60.0, _PACE),
    "propose_backoff_s_max": (0.01, 60.0, _PACE),
    "barrier_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "register_retry_s": (0.01, 60.0, _PACE),
    "map_size_bytes": (MiB, MAP_SIZE_BYTES_MAX, "1 MiB..1 TiB: LMDB maps it whole per shard, a process has 128 TiB "
                       "of address space on x86-64, and py-lmdb overflows above 2**64-1"),
    "lmdb_threads": (1, 256, "OS threads for blocking LMDB work: more only contend for the disk"),
    "lmdb_max_readers": (1, 65_536, "reader slots of 64 B in each shard's lock file; py-lmdb overflows above 2**31-1"),
    "idempotency_retain_writes": (1, 100_000_000, "write ids kept in each shard"),
    "key_bytes_max": (1, 511, "LMDB 0.9's key limit"),
    "value_bytes_max": (1, GRPC_BYTES_MAX, "a value travels in one gRPC message"),
    "batch_records_max": (1, 10_000_000, _COUNT),
    "message_bytes_max": (1, GRPC_BYTES_MAX, "gRPC's message-size options are C ints"),
    "inflight_requests_max": (1, 1_000_000, _COUNT),
    "overload_retry_after_s": (0.01, 60.0, _PACE),
    "put_stream_window_batches": (1, 100_000, _COUNT),
    "put_stream_window_bytes_max": (1, 4 * GiB, "memory per stream"),
    "streams_max": (1, 100_000, _COUNT),
    "stream_idle_timeout_s": (0.01, DAY_S, "an idle stream holds one of streams_max for this long"),
    "scan_chunk_records": (1, 10_000_000, _COUNT),
    "scan_chunk_records_max": (1, 10_000_000, _COUNT),
    "scan_chunk_bytes_max": (1, GRPC_BYTES_MAX, "one gRPC message"),
    "fetch_entries_bytes_max": (1, GRPC_BYTES_MAX, "one gRPC message"),
    "group_ops_max": (1, 1_000_000, _COUNT),
    "group_bytes_max": (1, GRPC_BYTES_MAX, "one gRPC message"),
    "entry_ring_entries_max": (1, 100_000_000, _COUNT),
    "entry_ring_bytes_max": (1, 16 * GiB, "memory per shard"),
    "entry_log_entries_max": (1, 100_000_000, "kept in each shard's LMDB file"),
    "entry_log_bytes_max": (1, 16 * GiB, "kept in each shard's LMDB file"),
    "peer_retry_s": (0.01, 60.0, _PACE),
    "heartbeat_interval_s": (0.01, 60.0, _PACE),
    "lease_s": (0.01, HOUR_S, "a primary lost is replaced only after its lease"),
    "node_suspect_after_s": (0.01, DAY_S, _SILENT),
    "node_dead_after_s": (0.01, DAY_S, _SILENT),
    "replicate_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "controller_proposals_per_tick_max": (1, 100_000, _COUNT),
    "controller_propose_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "repair_transfers_per_node_max": (1, 64, "each incoming copy is a stream and a disk writer"),
    "repair_bytes_per_s": (1, 100 * GiB, "above any disk or network; 0 = unlimited"),
    "repair_pacing_latency_factor": (1.0, 1000.0, "a multiple of the usual write latency; 0 = off"),
    "scrub_interval_s": (1.0, WEEK_S, "each pass re-reads every replica; 0 = never"),
    "workers": (1, 4 * CPUS, f"0 = one per core; at most 4 x this machine's {CPUS} cores: tasks are CPU-bound, "
                "more processes only take memory, and thousands exhaust the process table"),
    "task_result_bytes_max": (1, TASK_RESULT_BYTES_MAX, "a result travels in one Raft command"),
    "task_commit_timeout_s": (0.01, HOUR_S, _TIMEOUT),
    "tasks_per_node_max": (1, 10_000, _COUNT),
    "speculative_after_factor": (1.0, 1000.0, "a multiple of the median: below 1 every task gets a copy"),
    "speculative_after_s_min": (0.01, DAY_S, "a running task's age"),
    "job_wait_s_max": (0.01, HOUR_S, "one long poll"),
    "user_code_cpu_s": (1, int(WEEK_S), "RLIMIT_CPU of one task"),
    "user_code_memory_bytes": (1, 1 * TiB, "RLIMIT_AS of one task"),
    "user_code_wall_s": (0.01, WEEK_S, "one task's run"),
}


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
        # Others dial these, so port 0 (any free port) cannot be one. A standalone node's listen may
        # be port 0, and http_listen always (its bound address is logged): no peer dials them.
        dialed = {"advertise", "raft", "join"} | ({"listen"} if not self.advertise and not self.standalone else set())
        for name in ("listen", "advertise", "raft", "join", "http_listen"):
            value = getattr(self, name)
            if value:
                parse_host_port(value, name, dialable=name in dialed)
        seen = {_address_key(self.raft): "raft"} if self.raft else {}
        for peer in self.raft_peers:
            key = _address_key(parse_host_port(peer, "raft_peers", dialable=True))
            if key in seen:
                twice = "is this node's own --raft address" if seen[key] == "raft" else "is listed twice"
                raise ConfigError(f"raft_peers: {peer!r} {twice}; list each other voter's Raft HOST:PORT once")
            seen[key] = "raft_peers"
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
            if field.type in ("int", "float"):
                _check_number(field.name, field.type, getattr(self, field.name))
        if self.propose_backoff_s_min > self.propose_backoff_s_max:
            raise ConfigError("propose_backoff_s_min must not exceed propose_backoff_s_max")
        if self.scan_chunk_records > self.scan_chunk_records_max:
            raise ConfigError("scan_chunk_records must not exceed scan_chunk_records_max")
        if self.value_bytes_max + self.key_bytes_max + 4096 > self.message_bytes_max:
            raise ConfigError("message_bytes_max must exceed value_bytes_max + key_bytes_max + 4096")
        for name in ("scan_chunk_bytes_max", "fetch_entries_bytes_max", "group_bytes_max"):
            if getattr(self, name) + REPLY_HEADROOM_BYTES > self.message_bytes_max:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at most message_bytes_max "
                                  f"- {REPLY_HEADROOM_BYTES} ({self.message_bytes_max - REPLY_HEADROOM_BYTES})")
        if not self.heartbeat_interval_s < self.lease_s:
            raise ConfigError(f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be below lease_s ({self.lease_s})")
        margin_s = 2 * self.heartbeat_interval_s
        if self.node_dead_after_s <= self.lease_s + self.leader_fallback_timeout_s + margin_s:
            raise ConfigError(
                f"node_dead_after_s ({self.node_dead_after_s}) must exceed lease_s + leader_fallback_timeout_s "
                f"+ 2 x heartbeat_interval_s ({self.lease_s + self.leader_fallback_timeout_s + margin_s}): "
                "a new primary may only be promoted after the old one's lease expired")
        if not self.node_suspect_after_s <= self.node_dead_after_s:
            raise ConfigError(f"node_suspect_after_s ({self.node_suspect_after_s}) must be at most node_dead_after_s "
                              f"({self.node_dead_after_s})")
        if self.repair_pacing_latency_factor != 0 and not self.repair_pacing_latency_factor > 1:
            raise ConfigError("repair_pacing_latency_factor must be 0 (copies never slow down) or above 1 (a multiple "
                              f"of the usual client write latency), got {self.repair_pacing_latency_factor}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, got {self.log_format!r}")
        return self


def parse_host_port(value: str, field: str, *, dialable: bool = False) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{field}: expected HOST:PORT, got {value!r}")
    if dialable and int(port) == 0:
        raise ConfigError(f"{field}: port 0 is not a dialable address, got {value!r}; give the port others dial")
    return host, int(port)


def _address_key(address: str | tuple[str, int]) -> tuple[str, int]:
    host, port = parse_host_port(address, "raft") if isinstance(address, str) else address
    return host.strip("[]").lower(), port


def _check_number(name: str, kind: str, value: Any) -> None:
    """Refuse, in one line naming the setting and its range, a wrong type, NaN, infinity or a value out of RANGES."""
    low, high, why = RANGES[name]
    zero_ok = name in _ZERO_HAS_MEANING
    allowed = f"{'0 or ' if zero_ok else ''}within {_show(low)}..{_show(high)} ({why})"
    wrong_type = isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float))
    if (wrong_type or (isinstance(value, float) and not math.isfinite(value))
            or not (low <= value <= high or (zero_ok and value == 0))):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ConfigError(f"{name} must be {allowed}, got {shown}")


def _show(number: float) -> str:
    return f"{number:_}" if isinstance(number, int) else f"{number:g}"


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, with a precise error."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}")
    kind = _FIELDS[name].type
    expected = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "tuple[str, ...]": "a list of strings", "pathlib.Path": "a path"}[str(kind)]
    if isinstance(raw, str) or (kind == "pathlib.Path" and isinstance(raw, os.PathLike)):
        pass   # the environment's and the flags' text, parsed below
    elif (isinstance(raw, bool) != (kind == "bool") or (kind == "int" and not isinstance(raw, int))
          or (kind == "float" and not isinstance(raw, (int, float)))
          or (kind == "tuple[str, ...]" and not (isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw)))
          or kind in ("str", "pathlib.Path")):
        raise ConfigError(f"{name}: expected {expected}, got {raw!r} ({type(raw).__name__})")
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
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file}: not a TOML file: {exc}") from None
        settings = table.get("node", table)
        if not isinstance(settings, dict):
            raise ConfigError(f"config file {config_file}: node must be a table ([node]) of settings, "
                              f"got {settings!r}")
        settings = dict(settings)
        if "raft_password_file" in settings:   # a file name, read below: not a field of NodeConfig
            values["raft_password_file"] = settings.pop("raft_password_file")
            if not isinstance(values["raft_password_file"], str):
                raise ConfigError(f"raft_password_file: expected a path, got {values['raft_password_file']!r}")
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
        return pathlib.Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read raft password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"raft password file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
