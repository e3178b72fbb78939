"""Time to restore R=3 after kill -9 of one of 4 nodes, and what the repair costs clients (issue 18, point 9).

Each pass, on a fresh 4-node local cluster (real processes; 3 Raft voters n1-n3 and n4
data-only, joined through a voter; fast failure detection as tests/integration FAST:
heartbeat 0.2 s, lease 1 s, suspect after 1 s, dead after 3.6 s, replicate timeout 1 s;
SHOAL_REPAIR_BYTES_PER_S=0, an unthrottled copy, so the copy rate is the engine's own
(`--repair-bytes-per-s N` sets the nodes' throttle instead, to see what it buys the clients;
`--transfers N` the learners per node, repair_transfers_per_node_max);
SHOAL_LMDB_SYNC=0, throwaway data; an LMDB map 4x a shard's share):

  load       a dataset of `--shards` shards, R=3, with `--bytes` of 1 KiB values (`put_many`),
             untimed; then a wait until every shard has 3 in-sync replicas with one checksum and no
             learner (with a 1 s replicate timeout a heavy load can fence a slow backup out, and
             its refill must be over before the fault), and os.sync(), so the load's writeback
             does not land in what follows
  writer     a background thread putting 64-byte values to new keys one at a time on its own
             client, recording (start, latency) of every acknowledged put; it runs `--warmup-s`,
             then `--before-s` (the "before" window), through the repair and `--after-s` past it
  fault      kill -9 of one node holding replicas that is not the controller (neither the
             `controller` of `status()` nor the node reporting itself Raft leader), chosen just
             before the kill because the controller can move under load: the primary of the most
             shards (so promotion is measured), then the most replicas, then the lowest id; or
             `--victim ID`; `--spare-seed` never chooses a node the data-only node joined through
  watch      a second client polls the cluster map every POLL_INTERVAL_S (the node states are
             the `state` of `shoal status`) until every shard is restored, with a deadline of
             restore_timeout_s(); a pass that misses it is reported NOT RESTORED with what the
             map and each node's own status showed, and the next pass runs
  copyfd     the raw LMDB copy rate on this machine, after the repair (writer stopped): py-lmdb
             `Environment.copyfd` of one re-replicated shard from a surviving node's data dir
             (opened read-only with the reader lock, as node/compute/worker.py opens replicas) to
             a file, compact=False and compact=True, COPYFD_REPEATS times each after os.sync(), no
             fsync of the copy (the nodes run without): the shard's used pages / median seconds

Reported per pass, in seconds from the kill:
  detection   the victim shown "dead" in the map
  promotion   every shard has its primary on an alive node and one put to each shard whose
              primary was the victim is acknowledged (the puts start once the map shows it, on a
              third client that wrote to every shard before the kill, so its map is the old one)
  learner     the first learner in the map (a backup fenced out by a write can get one before
              the victim is declared dead)
  restored    every shard has 3 in-sync replicas on running nodes
  copy        restored - first learner: the copy, replay and join of every lost replica

Copy rate: the bytes of the shards that had a replica on the victim (each source primary's
GetNodeStatus size_bytes, its used pages, read just before the kill) / copy seconds, against
the copyfd rate (target >= 0.5x; printed against both modes, judged against the faster).
Put p99 during the repair (puts started between detection and restoration) against the
"before" window (puts that started in it and ended before the kill; target <= 2x); the table
also shows kill -> restored with the puts in flight at the kill, the failover alone (kill to
promotion) and the copy alone (promotion to restoration). After the repair the writer stops,
the three replicas of every shard must reach one checksum, a sample of acknowledged writes is
read back, and the node logs written after the kill are searched for copies started more than
once, interrupted fills and ring misses (a copy started again because the primary's recent
entries no longer reached back); the same counts before the kill show what the load did.

    python bench/repair.py [--bytes 1073741824] [--passes 2] [--shards 8] [--repair-bytes-per-s 0]
                           [--transfers 0] [--victim ID] [--spare-seed] [--keep-logs DIR]
    python bench/repair.py --bytes 268435456 --passes 2      # a few minutes

`--keep-logs DIR` copies each pass's node logs to DIR/pass<N>/<node>.log. A pass's cluster
lives in a temp dir and is stopped (and the dir removed) inside the pass.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import lmdb

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402

from shoal.client import Client, ShoalError  # noqa: E402
from shoal.client.local import LocalCluster  # noqa: E402
from shoal.client.wire.pb import data_pb2 as pb  # noqa: E402
from shoal.client.wire.routing import encode_key, shard_for_key  # noqa: E402

MiB = 1 << 20
FAST = {"SHOAL_HEARTBEAT_INTERVAL_S": "0.2", "SHOAL_LEASE_S": "1.0", "SHOAL_NODE_SUSPECT_AFTER_S": "1.0",
        "SHOAL_NODE_DEAD_AFTER_S": "3.6", "SHOAL_REPLICATE_TIMEOUT_S": "1.0"}   # tests/integration FAST
NODES = 4
REPLICATION = 3
DATASET = "repair"
VALUE_BYTES = 1024                 # a loaded value (msgpack bin: 3 bytes more on the wire)
WRITER_VALUE = b"w" * 64
WRITER_PUTS_MAX = 5_000_000        # the writer's bound by count (its bound by time: the restore deadline)
POLL_INTERVAL_S = 0.1              # the watcher's map polls: the resolution of every phase time
COPYFD_REPEATS = 5
CONVERGE_TIMEOUT_S = 60.0
READ_BACK_SAMPLE = 500             # acknowledged writer keys read back after the repair
COPY_RATIO_MIN = 0.5               # issue 18 point 9: copy rate >= 0.5x copyfd
P99_RATIO_MAX = 2.0                # ... and put p99 during the repair <= 2x before


# --- the cluster: environment, load, victim, sizes ---

def node_env(total_bytes: int, shards: int, repair_bytes_per_s: int, transfers: int = 0) -> dict[str, str]:
    """Fast detection, the repair rate (0 = unthrottled), no fsync, and an LMDB map 4x a shard's
    share (at least 256 MiB); `transfers` > 0 sets repair_transfers_per_node_max (else the default)."""
    map_bytes = max(256 * MiB, (4 * total_bytes // shards + MiB - 1) // MiB * MiB)
    env = {**FAST, "SHOAL_LMDB_SYNC": "0", "SHOAL_REPAIR_BYTES_PER_S": str(repair_bytes_per_s),
           "SHOAL_MAP_SIZE_BYTES": str(map_bytes)}
    if transfers > 0:
        env["SHOAL_REPAIR_TRANSFERS_PER_NODE_MAX"] = str(transfers)
    return env


def loaded_records(count: int) -> Iterator[tuple[str, bytes]]:
    pad = b"v" * (VALUE_BYTES - 12)
    for i in range(count):
        yield f"k{i:011d}", b"%012d" % i + pad


def dataset_info(cluster_map: pb.ClusterMap) -> pb.DatasetInfo:
    return {d.name: d for d in cluster_map.datasets}[DATASET]


def choose_victim(cluster_map: pb.ClusterMap, excluded: set[str]) -> str:
    """A replica holder not in `excluded` (the controller): the primary of the most shards, then
    the most replicas, then the lowest id."""
    primaries: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for shard in dataset_info(cluster_map).shard_map:
        primaries[shard.primary] = primaries.get(shard.primary, 0) + 1
        for node in shard.replicas:
            replicas[node] = replicas.get(node, 0) + 1
    candidates = [node for node in replicas if node not in excluded]
    assert candidates, (excluded, replicas)
    return max(sorted(candidates), key=lambda node: (primaries.get(node, 0), replicas[node]))


def join_seeds(cluster: LocalCluster) -> set[str]:
    """The nodes that data-only nodes joined through (`--join` on their command line)."""
    by_address = {node.address: node.id for node in cluster.nodes}
    seeds = set()
    for node in cluster.nodes:
        pid = cluster.pid(node.id)
        if pid is None:
            continue
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        if "--join" in argv:
            seeds.add(by_address.get(argv[argv.index("--join") + 1], ""))
    return seeds - {""}


def shard_statuses(client: Client, cluster: LocalCluster, role: str) -> dict[tuple[str, int], pb.ShardStatus]:
    """(node, shard) -> GetNodeStatus entry of every running node's replicas with `role` ("" = any)."""
    found = {}
    for node in cluster.nodes:
        if cluster.is_running(node.id):
            for shard in client.node_status(node.address).shards:
                if shard.dataset == DATASET and (not role or shard.role == role):
                    found[(node.id, shard.index)] = shard
    return found


# --- the raw ceiling: copyfd of one shard ---

def copyfd_runs(env: lmdb.Environment, out_dir: pathlib.Path) -> dict[bool, list[float]]:
    """compact -> seconds of each of COPYFD_REPEATS copyfd calls to a new file (no fsync, like the
    nodes with SHOAL_LMDB_SYNC=0); dirty pages are flushed before each."""
    runs: dict[bool, list[float]] = {False: [], True: []}
    for compact in (False, True):
        for repeat in range(COPYFD_REPEATS):
            target = out_dir / f"copy-{int(compact)}-{repeat}.mdb"
            os.sync()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    started = time.perf_counter()
                    env.copyfd(fd, compact=compact)
                except lmdb.MapResizedError:     # the node's writes passed the map read at open
                    env.set_mapsize(0)           # adopt the node's map, as node/compute/worker.py does
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    started = time.perf_counter()
                    env.copyfd(fd, compact=compact)
                runs[compact].append(time.perf_counter() - started)
            finally:
                os.close(fd)
                target.unlink()
    return runs


def used_bytes(env: lmdb.Environment) -> int:
    """Bytes of the pages in use, as the node's size_bytes counts them (storage/shard_store.py)."""
    with env.begin():              # info() reads the last committed meta page
        return int((env.info()["last_pgno"] + 1) * env.stat()["psize"])


# --- the writer ---

@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    started_s: float      # time.monotonic() at the call
    latency_s: float
    ok: bool


class Writer(threading.Thread):
    """Puts WRITER_VALUE to new keys one at a time until stopped, WRITER_PUTS_MAX puts or `until_s`."""

    def __init__(self, client: Client, until_s: float) -> None:
        super().__init__(daemon=True, name="bench-writer")
        self.client, self.until_s = client, until_s
        self.puts: list[Put] = []
        self.acked: list[str] = []
        self.stopping = threading.Event()
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(WRITER_PUTS_MAX):
                if self.stopping.is_set() or time.monotonic() > self.until_s:
                    return
                key = f"w{i:09d}"
                started_s = time.monotonic()
                try:
                    self.client.put(DATASET, key, WRITER_VALUE)
                except ShoalError:
                    self.puts.append(Put(started_s, time.monotonic() - started_s, False))
                    continue
                self.puts.append(Put(started_s, time.monotonic() - started_s, True))
                self.acked.append(key)
        except BaseException as exc:     # surfaced by stop(): a dead writer must fail the bench
            self.crash = exc

    def wait_puts_after(self, moment_s: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(put.started_s >= moment_s for put in self.puts[-50:]):
            assert self.crash is None and self.is_alive(), f"the writer stopped: {self.crash!r}"
            assert time.monotonic() < deadline, f"no put started after {moment_s} within {timeout_s} s"
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)
        assert not self.is_alive(), "the writer did not stop"
        assert self.crash is None, repr(self.crash)


# --- the watch: phase times from the cluster map ---

@dataclasses.dataclass(slots=True)
class Marks:
    """Monotonic times of what the watcher saw (None: not seen)."""
    kill_s: float
    suspect_s: float | None = None
    dead_s: float | None = None
    primaries_s: float | None = None   # every shard's primary on an alive node
    promoted_s: float | None = None    # ... and a put to each shard the victim led acknowledged
    learner_s: float | None = None     # the first learner in the map
    restored_s: float | None = None
    learners: dict[int, float] = dataclasses.field(default_factory=dict)    # shard -> learner first seen
    joined: dict[int, float] = dataclasses.field(default_factory=dict)      # shard -> back to 3 in sync
    polls: int = 0
    poll_max_s: float = 0.0            # the longest map poll
    probes: list[float] = dataclasses.field(default_factory=list)      # seconds of each probe put
    probe_error: ShoalError | None = None


class NotRestoredError(Exception):
    """The watch's deadline passed before every shard had its replicas back (the message says
    what the map and each node's own status showed)."""


def not_restored(client: Client, cluster: LocalCluster, marks: Marks) -> NotRestoredError:
    """What stayed short: the map's shards below REPLICATION, and each running node's own word on them."""
    lines = [f"R={REPLICATION} not restored {time.monotonic() - marks.kill_s:.0f} s after the kill"]
    try:
        cluster_map = client.cluster_map()
        short = {s.index for s in dataset_info(cluster_map).shard_map
                 if len([n for n in s.replicas if cluster.is_running(n)]) < REPLICATION}
        lines.append(f"map version {cluster_map.version}, controller {cluster_map.controller}: " + "; ".join(
            f"shard {s.index} epoch {s.epoch} primary {s.primary} replicas {list(s.replicas)} learners "
            f"{list(s.learners)}" for s in dataset_info(cluster_map).shard_map if s.index in short))
        for node in cluster.nodes:
            if cluster.is_running(node.id):
                status = client.node_status(node.address)
                lines.append(f"{node.id} (metadata version {status.metadata_version}, controller "
                             f"{status.controller}): " + "; ".join(
                                 f"shard {shard.index} {shard.role} epoch {shard.epoch} seq {shard.seq}"
                                 for shard in status.shards if shard.dataset == DATASET and shard.index in short))
    except ShoalError as exc:
        lines.append(f"(status unavailable: {exc})")
    return NotRestoredError("\n  ".join(lines))


def watch(client: Client, prober: Client, cluster: LocalCluster, victim: str, marks: Marks,
          probe_keys: list[str], deadline_s: float) -> None:
    """Poll the map until every shard has REPLICATION in-sync replicas on running nodes. Once the
    map shows every primary alive, a thread puts one key to each shard the victim led (on its own
    client, warmed before the kill), so the polls go on while those puts wait."""
    prober_thread: threading.Thread | None = None
    while marks.restored_s is None or marks.promoted_s is None:
        if time.monotonic() > deadline_s:
            raise not_restored(client, cluster, marks)
        if marks.probe_error is not None:
            raise marks.probe_error
        started = time.monotonic()
        try:
            cluster_map = client.cluster_map()
        except ShoalError:
            cluster_map = None
        now = time.monotonic()
        marks.poll_max_s = max(marks.poll_max_s, now - started)
        if cluster_map is not None:
            marks.polls += 1
            note_map(cluster_map, cluster, victim, marks, now)
        if marks.primaries_s is not None and prober_thread is None:
            prober_thread = threading.Thread(target=probe, args=(prober, probe_keys, marks), daemon=True)
            prober_thread.start()
        if marks.restored_s is None or marks.promoted_s is None:
            time.sleep(POLL_INTERVAL_S)
    assert prober_thread is not None
    prober_thread.join()


def probe(client: Client, keys: list[str], marks: Marks) -> None:
    """Put one key per shard the victim led; promoted_s when every put is acknowledged."""
    try:
        for key in keys:
            started = time.monotonic()
            client.put(DATASET, key, WRITER_VALUE)
            marks.probes.append(time.monotonic() - started)
    except ShoalError as exc:       # raised by watch(): the promotion is not measured
        marks.probe_error = exc
        return
    marks.promoted_s = time.monotonic()


def note_map(cluster_map: pb.ClusterMap, cluster: LocalCluster, victim: str, marks: Marks, now: float) -> None:
    states = {node.id: node.state for node in cluster_map.nodes}
    if marks.suspect_s is None and states.get(victim) in ("suspect", "dead"):
        marks.suspect_s = now
    if marks.dead_s is None and states.get(victim) == "dead":
        marks.dead_s = now
    shards = dataset_info(cluster_map).shard_map
    if marks.primaries_s is None and all(states.get(s.primary) == "alive" and s.primary != victim for s in shards):
        marks.primaries_s = now
    restored = True
    for shard in shards:
        if shard.learners:
            marks.learners.setdefault(shard.index, now)
            marks.learner_s = marks.learner_s or now
        in_sync = [node for node in shard.replicas if node != victim and cluster.is_running(node)]
        if len(in_sync) >= REPLICATION:
            if shard.index in marks.learners:
                marks.joined.setdefault(shard.index, now)
        else:
            restored = False
    if restored and marks.restored_s is None:
        marks.restored_s = now


def probe_keys_for(shards: list[int], shard_count: int) -> list[str]:
    """One key per shard in `shards` (keys of the probe puts that time the promotion)."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < len(shards):
        key = f"probe{i:06d}"
        shard = shard_for_key(encode_key(key), shard_count)
        if shard in shards:
            keys.setdefault(shard, key)
        i += 1
    return [keys[shard] for shard in shards]


# --- after the repair: checks and the node logs ---

def wait_converged(client: Client, cluster: LocalCluster, timeout_s: float) -> float:
    """Seconds until every shard's in-sync replicas on running nodes show one (seq, checksum)."""
    started = time.monotonic()
    while True:
        states: dict[int, set[tuple[int, int]]] = {}
        replicas = {s.index: set(s.replicas) for s in dataset_info(client.cluster_map()).shard_map}
        for (node, index), shard in shard_statuses(client, cluster, "").items():
            if node in replicas[index]:
                states.setdefault(index, set()).add((shard.seq, shard.checksum))
        if len(states) == len(replicas) and all(len(found) == 1 for found in states.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"replicas not converged after {timeout_s} s: {states}\n{cluster.dump_logs(40)}")
        time.sleep(POLL_INTERVAL_S)


def read_back(client: Client, acked: list[str]) -> tuple[int, int]:
    """(sampled, missing) of about READ_BACK_SAMPLE acknowledged writer keys read back."""
    sample = acked[::max(1, len(acked) // READ_BACK_SAMPLE)]
    return len(sample), sum(1 for key in sample if client.get(DATASET, key) != WRITER_VALUE)


LOG_PATTERNS = {   # what the learners and the controller say (node/replication/learner.py, controller/repair.py)
    "copies started": "learner starts a copy",
    "copies resumed": "learner resumes its copy",
    "fills interrupted": "interrupted (",
    "ring misses (copy again)": "copy again",
    "ring misses (entries gone)": "no longer reach back",
    "backups fenced out": "fenced out of the in-sync set",
    "promotions": "promoting",
    "learners planned": "): learner ",
    "learners dropped": "learner dropped",
    "joined": "learner joined the in-sync set",
}
JOIN_LINE = re.compile(r"shard (\S+): learner joined the in-sync set \(copy and replay took ([0-9.]+) s\)")


def log_offsets(cluster: LocalCluster) -> dict[str, int]:
    return {node.id: node.log_path.stat().st_size if node.log_path.exists() else 0 for node in cluster.nodes}


def log_texts(cluster: LocalCluster, offsets: dict[str, int]) -> tuple[str, str]:
    """Every node log, split at `offsets`: (what came before, what came after)."""
    before, after = [], []
    for node in cluster.nodes:
        raw = node.log_path.read_bytes() if node.log_path.exists() else b""
        before.append(raw[:offsets[node.id]].decode(errors="replace"))
        after.append(raw[offsets[node.id]:].decode(errors="replace"))
    return "".join(before), "".join(after)


def log_notes(text: str) -> tuple[dict[str, int], list[tuple[int, float]], list[str]]:
    """Counts of LOG_PATTERNS in `text`, the per-shard join times, and the interrupted lines."""
    counts = {name: text.count(pattern) for name, pattern in LOG_PATTERNS.items()}
    joins = [(int(shard.rpartition("/")[2]), float(seconds)) for shard, seconds in JOIN_LINE.findall(text)
             if shard.startswith(DATASET + "/")]
    interrupted = [line.strip() for line in text.splitlines() if "interrupted (" in line]
    return counts, joins, interrupted


def wait_settled(client: Client, cluster: LocalCluster, timeout_s: float) -> float:
    """Seconds until every shard has REPLICATION in-sync replicas and no learner (a load can fence
    a slow backup out, and its refill must be over before the fault), then one checksum each."""
    started = time.monotonic()
    while True:
        shards = dataset_info(client.cluster_map()).shard_map
        if all(len(s.replicas) == REPLICATION and not s.learners for s in shards):
            break
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the loaded dataset did not settle in {timeout_s} s\n{cluster.dump_logs(40)}")
        time.sleep(POLL_INTERVAL_S)
    wait_converged(client, cluster, timeout_s)
    return time.monotonic() - started


# --- one pass ---

@dataclasses.dataclass(slots=True)
class PassResult:
    victim: str = ""
    lost_shards: list[int] = dataclasses.field(default_factory=list)    # shards with a replica on the victim
    led_shards: list[int] = dataclasses.field(default_factory=list)     # shards the victim was primary of
    lost_bytes: int = 0            # size_bytes of the lost shards' primaries, before the kill
    shard_bytes: dict[int, int] = dataclasses.field(default_factory=dict)   # ... per shard
    lost_records: int = 0
    new_bytes: int = 0             # size_bytes of the new replicas, after the repair
    copyfd_shard_bytes: int = 0
    copyfd: dict[bool, list[float]] = dataclasses.field(default_factory=lambda: {False: [], True: []})
    marks: Marks | None = None
    puts: list[Put] = dataclasses.field(default_factory=list)
    writer_started_s: float = 0.0
    writer_stopped_s: float = 0.0
    converged_s: float = 0.0
    missing: int = 0
    read_back: int = 0             # acknowledged writer keys sampled
    logs: tuple[dict[str, int], list[tuple[int, float]], list[str]] = ({}, [], [])   # after the kill
    logs_before: dict[str, int] = dataclasses.field(default_factory=dict)   # LOG_PATTERNS before the kill
    log_offsets: dict[str, int] = dataclasses.field(default_factory=dict)   # node log sizes at the kill
    settle_s: float = 0.0
    failure: str = ""              # NotRestoredError's message: the pass has no figures
    seeds: list[str] = dataclasses.field(default_factory=list)    # nodes the data-only nodes joined through
    spared: list[str] = dataclasses.field(default_factory=list)   # not chosen as the victim (--spare-seed)
    load_s: float = 0.0
    load_average: str = ""


def one_pass(root: pathlib.Path, options: argparse.Namespace) -> PassResult:
    result = PassResult(load_average=load_average())
    count = options.bytes // VALUE_BYTES
    with LocalCluster(root / "cluster", nodes=NODES, env=node_env(options.bytes, options.shards, options.repair_bytes_per_s, options.transfers)) as cluster, \
            cluster.client(timeout_s=30) as monitor, cluster.client(timeout_s=30) as writer_client, \
            cluster.client(timeout_s=30) as prober:
        monitor.create_dataset(DATASET, shards=options.shards, replication=REPLICATION)
        started = time.monotonic()
        assert monitor.put_many(DATASET, loaded_records(count)) == count
        result.load_s = time.monotonic() - started
        result.settle_s = wait_settled(monitor, cluster, restore_timeout_s(options.bytes))
        os.sync()
        holders_before = {s.index: set(s.replicas) for s in dataset_info(monitor.cluster_map()).shard_map}
        try:
            repair_phase(cluster, (monitor, writer_client, prober), options, result)
        except NotRestoredError as exc:
            result.failure = str(exc)
        measure_copyfd(cluster, monitor.cluster_map(), root, result)
        result.new_bytes = sum(shard.size_bytes for (node, index), shard in shard_statuses(monitor, cluster, "").items()
                               if node not in holders_before[index])
        before, after = log_texts(cluster, result.log_offsets)
        result.logs, result.logs_before = log_notes(after), log_notes(before)[0]
    return result


def measure_copyfd(cluster: LocalCluster, cluster_map: pb.ClusterMap, out_dir: pathlib.Path,
                   result: PassResult) -> None:
    """copyfd of one lost shard from a surviving holder's data dir, opened read-only (worker.py's way)."""
    info = dataset_info(cluster_map)
    shard = next(s for s in info.shard_map if s.index == result.lost_shards[0])
    source = next(n for n in (shard.primary, *shard.replicas) if n != result.victim and cluster.is_running(n))
    path = cluster.node(source).data_dir / "shards" / f"{info.id or info.name}-{shard.index}"
    assert (path / "data.mdb").exists(), path
    env = lmdb.open(str(path), readonly=True, lock=True, subdir=True, max_dbs=4, lib_version=0, create=False)
    try:
        result.copyfd_shard_bytes = used_bytes(env)
        result.copyfd = copyfd_runs(env, out_dir)
    finally:
        env.close()


def repair_phase(cluster: LocalCluster, clients: tuple[Client, Client, Client], options: argparse.Namespace,
                 result: PassResult) -> None:
    """Writer, before window, the victim, kill -9, watch until restored, after window; then the checks."""
    monitor, writer_client, prober = clients
    every_shard = probe_keys_for(list(range(options.shards)), options.shards)
    for key in every_shard:       # the prober's map and channels are those of a client that was writing
        prober.put(DATASET, key, WRITER_VALUE)
    writer = Writer(writer_client, time.monotonic() + 60 + options.warmup_s + options.before_s + options.after_s
                    + restore_timeout_s(options.bytes))
    result.writer_started_s = time.monotonic()
    writer.start()
    try:
        time.sleep(options.warmup_s + options.before_s)     # the writer's warm-up and "before" window: timed, not a state
        writer.wait_puts_after(result.writer_started_s, 30)
        victim = choose_target(cluster, monitor, options, result)
        result.log_offsets = log_offsets(cluster)
        marks = result.marks = Marks(kill_s=time.monotonic())
        cluster.kill(victim)
        watch(monitor, prober, cluster, victim, marks, [every_shard[i] for i in result.led_shards],
              marks.kill_s + restore_timeout_s(options.bytes))
        time.sleep(options.after_s)                          # the "after" window
    finally:
        writer.stop()
    result.writer_stopped_s = time.monotonic()
    result.puts = writer.puts
    result.converged_s = wait_converged(monitor, cluster, CONVERGE_TIMEOUT_S)
    result.read_back, result.missing = read_back(monitor, writer.acked)


def choose_target(cluster: LocalCluster, monitor: Client, options: argparse.Namespace, result: PassResult) -> str:
    """The victim, chosen just before the kill (the controller can move under load), and the
    sizes of the shards it holds."""
    excluded = {str(monitor.status()["controller"]), cluster.raft_leader() or ""}
    result.spared = sorted(join_seeds(cluster)) if options.spare_seed else []
    cluster_map = monitor.cluster_map()
    victim = result.victim = options.victim or choose_victim(cluster_map, excluded | set(result.spared))
    assert victim not in excluded, f"{victim} is the controller ({excluded})"
    shards = dataset_info(cluster_map).shard_map
    result.lost_shards = [s.index for s in shards if victim in s.replicas]
    result.led_shards = [s.index for s in shards if s.primary == victim]
    primaries = {index: shard for (node, index), shard in shard_statuses(monitor, cluster, "primary").items()}
    result.shard_bytes = {i: primaries[i].size_bytes for i in result.lost_shards}
    result.lost_bytes = sum(result.shard_bytes.values())
    result.lost_records = sum(primaries[i].records for i in result.lost_shards)
    result.seeds = sorted(join_seeds(cluster))
    return victim


def restore_timeout_s(total_bytes: int) -> float:
    """The watch's deadline: detection and promotion, and the copy at no less than 2 MiB/s."""
    return 60.0 + total_bytes / (2 * MiB)


# --- the report ---

def quantile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.5) - 1))]


def window(puts: list[Put], start_s: float | None, end_s: float | None, *, in_flight_at: float | None = None,
           whole: bool = False) -> dict[str, Any] | None:
    """Puts started in [start_s, end_s), plus those started earlier and still in flight at
    `in_flight_at`; with `whole`, only puts that also ended before end_s. Count, failures and
    p50, p99, max latency (ms) of the acknowledged ones."""
    if start_s is None or end_s is None:
        return None

    def inside(put: Put) -> bool:
        if whole and put.started_s + put.latency_s >= end_s:
            return False
        if in_flight_at is not None and put.started_s < in_flight_at <= put.started_s + put.latency_s:
            return True
        return start_s <= put.started_s < end_s
    chosen = [put for put in puts if inside(put)]
    ok = [put.latency_s * 1000 for put in chosen if put.ok]
    figures: dict[str, Any] = {"puts": len(chosen), "failed": len(chosen) - len(ok), "p50": None, "p99": None,
                               "max": None, "seconds": end_s - start_s}
    if ok:
        figures.update(p50=statistics.median(ok), p99=quantile(ok, 0.99), max=max(ok))
    return figures


def since_kill(marks: Marks, moment: float | None) -> str:
    return "not seen" if moment is None else f"{moment - marks.kill_s:.2f}"


def rate_mib_s(count_bytes: int, seconds: float | None) -> float | None:
    return None if not seconds else count_bytes / MiB / seconds


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def pass_figures(result: PassResult, options: argparse.Namespace) -> dict[str, Any]:
    marks = result.marks
    assert marks is not None and marks.restored_s is not None and marks.learner_s is not None
    copy_s = marks.restored_s - marks.learner_s
    copyfd = {compact: rate_mib_s(result.copyfd_shard_bytes, statistics.median(runs))
              for compact, runs in result.copyfd.items()}
    puts, kill_s = result.puts, marks.kill_s
    windows = {   # the first two are the target's pair; every put is counted by its start, see window()
        f"before ({options.before_s:g} s, ended before the kill)": window(puts, kill_s - options.before_s, kill_s,
                                                                         whole=True),
        "during the repair (started detection -> restored)": window(puts, marks.dead_s, marks.restored_s),
        "kill -> restored (and those in flight at the kill)": window(puts, kill_s, marks.restored_s,
                                                                     in_flight_at=kill_s),
        "failover (kill -> promotion, and in flight at the kill)": window(puts, kill_s, marks.promoted_s,
                                                                          in_flight_at=kill_s),
        "copy (promotion -> restored)": window(puts, marks.promoted_s, marks.restored_s),
        "after (restored -> writer stopped)": window(puts, marks.restored_s, result.writer_stopped_s),
    }
    return {"copy_s": copy_s, "copy_rate": rate_mib_s(result.lost_bytes, copy_s),
            "end_to_end_rate": rate_mib_s(result.lost_bytes, marks.restored_s - marks.kill_s),
            "copyfd": copyfd, "windows": windows}


def p99_verdict(ratio: float | None) -> str:
    return "not measured (no put started in the window)" if ratio is None else verdict(ratio <= P99_RATIO_MAX)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report_pass(number: int, result: PassResult, options: argparse.Namespace) -> dict[str, Any] | None:
    """Print one pass; its figures, or None when the repair did not finish before the deadline."""
    marks = result.marks
    assert marks is not None
    print(f"\npass {number}: load average at its start {result.load_average}; loaded "
          f"{options.bytes // VALUE_BYTES:,} records in {result.load_s:.1f} s, settled (3 equal in-sync replicas per "
          f"shard) {result.settle_s:.1f} s later; victim {result.victim} (replicas of "
          f"shards {result.lost_shards}, primary of {result.led_shards}; data-only nodes joined through "
          f"{', '.join(result.seeds) or '-'}{'; spared ' + ', '.join(result.spared) if result.spared else ''}); "
          f"{marks.polls} map polls, the longest "
          f"{marks.poll_max_s:.2f} s")
    copy_note = "" if marks.restored_s is None or marks.learner_s is None else \
        f"copy = restored - first learner = {marks.restored_s - marks.learner_s:.2f} s"
    print_table([
        ("suspect (victim suspect or dead in the map)", since_kill(marks, marks.suspect_s), ""),
        ("detection (victim dead in the map)", since_kill(marks, marks.dead_s), ""),
        ("promotion (primaries alive, a put to each led shard acked)", since_kill(marks, marks.promoted_s),
         f"primaries alive in the map at {since_kill(marks, marks.primaries_s)}; probe puts "
         + ", ".join(f"{seconds:.2f}" for seconds in marks.probes) + " s"),
        ("first learner in the map", since_kill(marks, marks.learner_s), ""),
        ("restored (3 in-sync replicas per shard)", since_kill(marks, marks.restored_s), copy_note),
    ], ("phase", "s from kill", "note"))
    print("per shard, learner seen -> joined (s from kill): " + ", ".join(
        f"{index}: {seen - marks.kill_s:.1f}->{since_kill(marks, marks.joined.get(index))}"
        for index, seen in sorted(marks.learners.items())))
    figures = None
    if result.failure:
        print(f"NOT RESTORED: {result.failure}")
    else:
        figures = pass_figures(result, options)
        report_figures(result, figures)
    report_logs(result)
    return figures


def report_figures(result: PassResult, figures: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [
        ("re-replicated: size_bytes of the lost shards", f"{result.lost_bytes / MiB:,.1f} MiB",
         f"{len(result.lost_shards)} shards, {result.lost_records:,} records; new replicas "
         f"{result.new_bytes / MiB:,.1f} MiB after"),
        ("copy rate (first learner -> restored)", f"{figures['copy_rate']:,.1f} MiB/s", ""),
        ("end to end (kill -> restored)", f"{figures['end_to_end_rate']:,.1f} MiB/s", "")]
    for compact, rate in figures["copyfd"].items():
        ratio = figures["copy_rate"] / rate
        rows.append((f"copyfd compact={compact} of one shard ({result.copyfd_shard_bytes / MiB:,.1f} MiB)",
                     f"{rate:,.1f} MiB/s",
                     f"median of {len(result.copyfd[compact])} ({', '.join(f'{s:.3f}' for s in result.copyfd[compact])}"
                     f" s); copy rate / this = {ratio:.2f}x (>= {COPY_RATIO_MIN}x: {verdict(ratio >= COPY_RATIO_MIN)})"))
    print_table(rows, ("what", "figure", "note"))
    print_table([(name, str(w["puts"]), str(w["failed"]), ms(w["p50"]), ms(w["p99"]), ms(w["max"]),
                  f"{w['seconds']:.1f}") if w else (name, "-", "-", "-", "-", "-", "-")
                 for name, w in figures["windows"].items()],
                ("put latency window (by start)", "puts", "failed", "p50 ms", "p99 ms", "max ms", "window s"))
    before, during = (figures["windows"][key] for key in list(figures["windows"])[:2])
    p99_ratio = during["p99"] / before["p99"] if before and during and before["p99"] and during["p99"] else None
    figures["p99_ratio"] = p99_ratio
    print(f"put p99 during the repair / before: {'-' if p99_ratio is None else f'{p99_ratio:.2f}x'} "
          f"(<= {P99_RATIO_MAX}x: {p99_verdict(p99_ratio)})")
    print(f"checks: replicas converged to one checksum {result.converged_s:.1f} s after the writer stopped; "
          f"{result.missing} of {result.read_back} sampled acknowledged writes missing")


def report_logs(result: PassResult) -> None:
    counts, joins, interrupted = result.logs
    print("node logs after the kill: " + ", ".join(f"{name} {value}" for name, value in counts.items()))
    print("node logs before the kill (load, settling): " + ", ".join(
        f"{name} {value}" for name, value in result.logs_before.items() if value))
    print("per learner, from its log (copy and replay; the shard's size_bytes / that): " + ", ".join(
        f"shard {index} {seconds:.1f} s {result.shard_bytes.get(index, 0) / MiB / seconds:,.1f} MiB/s"
        for index, seconds in sorted(joins)))
    for line in interrupted[:10]:
        print(f"  interrupted: {line}")
    if len(interrupted) > 10:
        print(f"  ... {len(interrupted) - 10} more interrupted fills")


def report_summary(results: list[tuple[PassResult, dict[str, Any] | None]]) -> None:
    print(f"\nsummary, {machine()}:")
    rows: list[tuple[str, ...]] = []
    verdicts: list[str] = []
    for number, (result, figures) in enumerate(results, 1):
        marks = result.marks
        if marks is None:
            rows.append((str(number), "-", "-", "-", "FAILED BEFORE THE FAULT", *("-",) * 5))
            verdicts.append(f"pass {number}: failed before the fault")
            continue
        if figures is None:
            rows.append((str(number), since_kill(marks, marks.dead_s), since_kill(marks, marks.promoted_s),
                         "-", "NOT RESTORED", *("-",) * 5))
            verdicts.append(f"pass {number}: not restored")
            continue
        plain, compact = figures["copyfd"][False], figures["copyfd"][True]
        before, during = (figures["windows"][key] for key in list(figures["windows"])[:2])
        ratio, p99_ratio = figures["copy_rate"] / max(plain, compact), figures["p99_ratio"]
        rows.append((str(number), since_kill(marks, marks.dead_s), since_kill(marks, marks.promoted_s),
                     f"{figures['copy_s']:.2f}", since_kill(marks, marks.restored_s),
                     f"{figures['copy_rate']:,.1f}", f"{plain:,.0f} / {compact:,.0f}",
                     f"{figures['copy_rate'] / plain:.2f}x / {figures['copy_rate'] / compact:.2f}x",
                     f"{ms(before['p99'])} -> {ms(during['p99'])}",
                     "-" if p99_ratio is None else f"{p99_ratio:.2f}x"))
        verdicts.append(f"pass {number}: copy rate >= {COPY_RATIO_MIN}x copyfd (the faster mode) "
                        f"{verdict(ratio >= COPY_RATIO_MIN)}, put p99 during repair <= {P99_RATIO_MAX}x before "
                        f"{p99_verdict(p99_ratio)}")
    print_table(rows, ("pass", "detection s", "promotion s", "copy s", "restored s", "copy MiB/s",
                       "copyfd MiB/s plain / compact", "copy / copyfd", "put p99 ms before -> repair",
                       "p99 ratio"))
    print("targets: " + "; ".join(verdicts))


def keep_logs(cluster_dir: pathlib.Path, target: pathlib.Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in sorted(cluster_dir.glob("n*/node.log")):
        shutil.copyfile(log, target / f"{log.parent.name}.log")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1 << 30, help="bytes of values loaded (1 KiB each)")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--warmup-s", type=float, default=1.0, help="writer running before the 'before' window")
    parser.add_argument("--before-s", type=float, default=5.0, help="the 'before' window of put latencies")
    parser.add_argument("--after-s", type=float, default=3.0, help="writer running after the restoration")
    parser.add_argument("--repair-bytes-per-s", type=int, default=0,
                        help="SHOAL_REPAIR_BYTES_PER_S of the nodes (0 = unthrottled, the copy-rate figure)")
    parser.add_argument("--transfers", type=int, default=0,
                        help="SHOAL_REPAIR_TRANSFERS_PER_NODE_MAX of the nodes (0 = the node default)")
    parser.add_argument("--victim", help="the node to kill (default: chosen, see choose_victim)")
    parser.add_argument("--spare-seed", action="store_true",
                        help="never choose a node that data-only nodes joined through (see RESULTS.md)")
    parser.add_argument("--keep-logs", type=pathlib.Path, help="copy each pass's node logs to DIR/pass<N>/")
    options = parser.parse_args()
    assert options.bytes >= VALUE_BYTES * options.shards, "--bytes too small for one record per shard"
    print(f"repair after kill -9 of 1 of {NODES} nodes: {options.bytes / MiB:,.0f} MiB of {VALUE_BYTES}-byte "
          f"values, {options.shards} shards, R={REPLICATION}, {options.passes} passes; node env "
          f"{node_env(options.bytes, options.shards, options.repair_bytes_per_s, options.transfers)}", flush=True)
    results: list[tuple[PassResult, dict[str, Any] | None]] = []
    for number in range(1, options.passes + 1):
        with tempfile.TemporaryDirectory(prefix="shoal-bench-repair-") as tmp:
            try:
                result = one_pass(pathlib.Path(tmp), options)
            except (ShoalError, TimeoutError) as exc:     # the load or the settling failed: no fault injected
                print(f"\npass {number}: failed before the fault: {type(exc).__name__}: {exc}", flush=True)
                results.append((PassResult(failure=f"before the fault: {exc}"), None))
                continue
            finally:
                if options.keep_logs:
                    keep_logs(pathlib.Path(tmp) / "cluster", options.keep_logs / f"pass{number}")
        results.append((result, report_pass(number, result, options)))
        sys.stdout.flush()
    report_summary(results)


if __name__ == "__main__":
    main()
