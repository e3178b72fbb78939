"""Group-by compute jobs against the raw scan ceiling and Dask, in one run (issue 17, point 9).

The workload of notes/baselines.md: N records, GROUP BY country -> count, sum(amount) and
count(amount > 900), the last as `sum` over the boolean `amount > 900` (a bool sums as 0/1,
node/compute/aggregates.py), so the whole query is one job. Every answer is checked against
a reference computed here. Measured, `--passes` times each, in one process tree:

  ceiling       2 processes (a warm fork Pool) scanning LMDB files that hold the records split
                exactly like the cluster's shards (same hash, same shard count), decoding msgpack
                maps and aggregating in a plain loop; and the same over positional arrays
  shoal         a 1-node cluster and a 3-node local cluster (replication 1: each node scans
                its own shards; and replication 3), schema-less and with a declared schema:
                wall time from submit to result (Query.collect), data loaded beforehand
  dask          dask.distributed futures, one task per ceiling file (the ceiling's scan
                function), LocalCluster(2 processes x 1 thread), when dask is installed
  latency       submit-to-result of the same query over 1,000 records (6 shards, replication 3)
                on the running 3-node cluster, after JOBS_RETAINED untimed jobs (a running
                cluster's job table is full): median and p90 of `--latency-runs` runs, and the
                medians of its parts (SubmitJob; the long poll that brings the rows)

Each pass runs the ceiling, Dask, the 1-node cluster, the 3-node cluster and the ceiling
again, one system at a time (a cluster is started, loaded, measured and stopped inside its
pass; loading is never timed). Every figure is the median of `--repeats` timed runs after
one untimed warm-up. The ratios are against the map ceiling of the same run (the median of
its per-pass figures). Targets (issue 17): schema-less >= 0.9x the map ceiling, schema
>= 1.5x the map ceiling, ahead of Dask, latency < 50 ms.

`--profile` adds, on one shard file of each layout in this process, the CPU cost per record
of each stage (cursor, decoding, the ceiling's loop, the node's task function
shoal.node.compute.worker.run_query) and a cProfile of run_query; `--profile-nodes` runs
the latency measurement again with the three node daemons under cProfile (their main threads
and, separately, pysyncobj's tick threads, where commands are applied and Raft messages sent).

    python bench/compute.py [--records 1000000] [--passes 2] [--shards 6] [--profile] [--profile-nodes]
    python bench/compute.py --latency-only [--passes 2] [--profile-nodes]   # just the latency, a fresh 3-node cluster per pass

The nodes run with SHOAL_LMDB_SYNC=0 (throwaway data); Dask is measured when
`dask.distributed` is importable (pip install 'dask[distributed]'; not a shoal dependency).
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import dataclasses
import importlib.util
import io
import itertools
import logging
import multiprocessing
import os
import pathlib
import pstats
import runpy
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

import lmdb
import msgpack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import TYPED_SCHEMA, machine, print_table, typed_records  # noqa: E402

from shoal.client import Client  # noqa: E402
from shoal.client.local import LocalCluster  # noqa: E402
from shoal.client.wire.routing import shard_for_key  # noqa: E402
from shoal.node.compute.worker import run_query  # noqa: E402
from shoal.node.metadata.jobs import JOBS_RETAINED  # noqa: E402

CEILING_PROCESSES = 2          # the baselines.md ceiling: 2 processes (this machine class has 2 cores)
LATENCY_RECORDS = 1000
NODE_ENV = {"SHOAL_LMDB_SYNC": "0"}
FIELDS = list(TYPED_SCHEMA)
COUNTRY, AMOUNT = FIELDS.index("country"), FIELDS.index("amount")
T = TypeVar("T")
Groups = dict[str, list[int]]        # country -> [count, sum(amount), count(amount > 900)]


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    wall_s: float     # elapsed
    cpu_s: float      # user + system CPU of this process and every descendant (nodes, workers, pools)


def median_run(runs: list[Run]) -> Run:
    return Run(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs))


Figures = dict[str, list[Run]]       # contender -> one Run per pass (medians of its repeats)


# --- the workload: records, reference, query ---

def reference(count: int) -> Groups:
    groups: Groups = {}
    for _, record in typed_records(count):
        group = groups.setdefault(record["country"], [0, 0, 0])
        group[0] += 1
        group[1] += record["amount"]
        group[2] += record["amount"] > 900
    return groups


AGGS = {"n": ("count", None), "total": ("sum", "amount"), "big": ("sum", "amount > 900")}
SPEC = {"group_by": ["country"], "aggs": [[name, function, argument] for name, (function, argument) in AGGS.items()]}


def query(client: Client, dataset: str) -> Any:
    return client.query(dataset).group_by("country").agg(**AGGS)


def check_rows(rows: list[dict[str, Any]], expected: Groups, what: str) -> None:
    got = {row["country"]: [row["n"], row["total"], row["big"]] for row in rows}
    assert got == expected, f"{what}: wrong answer ({len(got)} groups, e.g. {rows[:1]})"


def check_groups(got: Groups, expected: Groups, what: str) -> None:
    assert got == expected, f"{what}: wrong answer ({len(got)} groups)"


def timed(fn: Callable[[], T]) -> tuple[Run, T]:
    """Wall and process-tree CPU seconds of fn(), and its result, after flushing dirty pages
    (a load's writeback must not land in the next measurement; the nodes run with
    SHOAL_LMDB_SYNC=0). CPU seconds barely move when other work shares the machine, wall
    seconds do: the CPU ratios are the steadier comparison on a shared machine."""
    os.sync()
    cpu_start_s = tree_cpu_s()
    start = time.perf_counter()
    result = fn()
    wall_s = time.perf_counter() - start
    return Run(wall_s, tree_cpu_s() - cpu_start_s), result


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process and its live descendants, including what they
    collected from their reaped children (/proc/PID/stat utime, stime, cutime, cstime)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:            # gone meanwhile
            continue
        pid = int(entry.name)                  # fields after the name: state, ppid, ... (proc(5))
        children[int(fields[1])].append(pid)
        used[pid] = sum(int(field) for field in fields[11:15])
    total, pending = 0, [os.getpid()]
    while pending:
        pid = pending.pop()
        total += used.get(pid, 0)
        pending.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


# --- the ceiling: shard files, and the scan that the ceiling and Dask both run ---

def write_shard_files(root: pathlib.Path, count: int, shards: int, layout: str) -> list[str]:
    """One LMDB environment per shard (named db `records`, as a node stores it), keys hashed
    to shards as the client does; values msgpack maps ("map") or positional arrays ("array")."""
    buckets: list[list[tuple[bytes, bytes]]] = [[] for _ in range(shards)]
    packer = msgpack.Packer(use_bin_type=True)
    for key, record in typed_records(count):
        raw_key = key.encode()
        value = packer.pack(record if layout == "map" else [record[name] for name in FIELDS])
        buckets[shard_for_key(raw_key, shards)].append((raw_key, value))
    paths = []
    for index, items in enumerate(buckets):
        path = root / f"{layout}-{index}"
        env = lmdb.open(str(path), map_size=4 << 30, subdir=True, max_dbs=4, sync=False)
        records = env.open_db(b"records")
        with env.begin(write=True, db=records) as txn:
            txn.cursor().putmulti(sorted(items), append=True)
        env.sync(True)
        env.close()
        paths.append(str(path))
    return paths


def scan_maps(path: str) -> Groups:
    """The raw ceiling over one file of msgpack maps: cursor, unpackb, dict aggregation."""
    env = lmdb.open(path, readonly=True, lock=False, subdir=True, max_dbs=4)
    try:
        records = env.open_db(b"records", create=False)
        unpackb = msgpack.unpackb
        groups: Groups = {}
        with env.begin(db=records, buffers=False) as txn:
            for value in txn.cursor(records).iternext(keys=False, values=True):
                record = unpackb(value)
                country, amount = record["country"], record["amount"]
                group = groups.get(country)
                if group is None:
                    group = groups[country] = [0, 0, 0]
                group[0] += 1
                group[1] += amount
                if amount > 900:
                    group[2] += 1
        return groups
    finally:
        env.close()


def scan_arrays(path: str) -> Groups:
    """scan_maps over positional arrays in TYPED_SCHEMA order."""
    env = lmdb.open(path, readonly=True, lock=False, subdir=True, max_dbs=4)
    try:
        records = env.open_db(b"records", create=False)
        unpackb = msgpack.unpackb
        country_at, amount_at = COUNTRY, AMOUNT
        groups: Groups = {}
        with env.begin(db=records, buffers=False) as txn:
            for value in txn.cursor(records).iternext(keys=False, values=True):
                record = unpackb(value)
                country, amount = record[country_at], record[amount_at]
                group = groups.get(country)
                if group is None:
                    group = groups[country] = [0, 0, 0]
                group[0] += 1
                group[1] += amount
                if amount > 900:
                    group[2] += 1
        return groups
    finally:
        env.close()


def merge(partials: list[Groups]) -> Groups:
    total: Groups = {}
    for partial in partials:
        for country, values in partial.items():
            group = total.setdefault(country, [0, 0, 0])
            for i, value in enumerate(values):
                group[i] += value
    return total


def ceiling_runs(pool: Any, scan: Callable[[str], Groups], paths: list[str], expected: Groups,
                 repeats: int) -> list[Run]:
    pool.map(scan, paths)                                  # warm: page cache and both processes
    runs = []
    for _ in range(repeats):
        run, groups = timed(lambda: merge(pool.map(scan, paths, chunksize=1)))
        check_groups(groups, expected, scan.__name__)
        runs.append(run)
    return runs


# --- Dask (b) of notes/baselines.md: futures over the same files ---

def dask_available() -> bool:
    """Whether dask.distributed can be imported (an optional peer, not a shoal dependency)."""
    try:
        return importlib.util.find_spec("dask.distributed") is not None
    except ImportError:
        return False


def dask_runs(paths: list[str], expected: Groups, repeats: int) -> Run:
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster as DaskCluster

    with DaskCluster(n_workers=CEILING_PROCESSES, threads_per_worker=1, processes=True, dashboard_address=":0",
                     silence_logs=logging.ERROR) as cluster, DaskClient(cluster) as client:
        def run() -> Groups:
            return merge(client.gather(client.map(scan_maps, paths, pure=False)))
        check_groups(run(), expected, "dask")                 # warm: workers import lmdb, page cache
        runs = []
        for _ in range(repeats):
            measured, groups = timed(run)
            check_groups(groups, expected, "dask")
            runs.append(measured)
    return median_run(runs)


# --- Shoal ---

def load(client: Client, name: str, count: int, shards: int, replication: int, typed: bool) -> int:
    client.create_dataset(name, shards=shards, replication=replication, schema=TYPED_SCHEMA if typed else None)
    written = client.put_many(name, typed_records(count))
    assert written == count, (name, written, count)
    return written


def job_run(client: Client, dataset: str, expected: Groups) -> Run:
    job = query(client, dataset)
    run, rows = timed(lambda: list(job.collect(timeout=600)))
    check_rows(rows, expected, dataset)
    return run


def tasks_per_node(client: Client, dataset: str) -> str:
    """Where the last job over `dataset` ran: node -> tasks (the first attempt to commit)."""
    job = query(client, dataset).submit()
    job.wait(timeout=600)
    placed = collections.Counter(task.node for task in job.progress().tasks)
    return " ".join(f"{node}:{placed[node]}" for node in sorted(placed))


def shoal_phase(root: pathlib.Path, nodes: int, datasets: dict[str, tuple[int, bool]], count: int, shards: int,
                expected: Groups, repeats: int, latency_runs: int) -> tuple[dict[str, Run], dict[str, Any]]:
    """Start a cluster of `nodes`, load every dataset {label: (replication, typed)}, measure, stop.

    Returns (label -> median Run, extra: load rates, placement, latency samples)."""
    extra: dict[str, Any] = {}
    with LocalCluster(root, nodes=nodes, env=NODE_ENV) as cluster, cluster.client() as client:
        for label, (replication, typed) in datasets.items():
            loaded, _ = timed(lambda: load(client, label, count, shards, replication, typed))
            extra[f"load {label}"] = count / loaded.wall_s
            job_run(client, label, expected)                            # warm-up, untimed
            extra[f"placement {label}"] = tasks_per_node(client, label)
        runs: dict[str, list[Run]] = {label: [] for label in datasets}
        for _ in range(repeats):
            for label in datasets:                                      # interleaved against drift
                runs[label].append(job_run(client, label, expected))
        if latency_runs:
            extra["latency"] = latency_samples(client, shards, latency_runs)
    shutil.rmtree(root)                   # the next phase's page cache and disk, not this one's data
    return {label: median_run(measured) for label, measured in runs.items()}, extra


def latency_samples(client: Client, shards: int, runs: int) -> dict[str, list[float]]:
    """Submit-to-result seconds of `runs` jobs over LATENCY_RECORDS records, after JOBS_RETAINED
    untimed jobs: a running cluster's job table holds that many finished jobs, and every
    metadata change rebuilds the view of each (node/metadata/view.py), so an empty table
    would flatter. Also the parts: submit (SubmitJob), result (GetJob long polls until done,
    whose last answer carries the rows of so small a result)."""
    client.create_dataset("small", shards=shards, replication=3)
    client.put_many("small", typed_records(LATENCY_RECORDS))
    expected = reference(LATENCY_RECORDS)
    for _ in range(JOBS_RETAINED):
        job_run(client, "small", expected)                              # warm-up, fills the job table
    parts: dict[str, list[float]] = {"total": [], "submit": [], "result": [], "cpu": []}
    for _ in range(runs):
        os.sync()
        cpu_start_s = tree_cpu_s()
        start = time.perf_counter()
        job = query(client, "small").submit()
        submitted = time.perf_counter()
        rows = job.result(timeout=60)           # what Query.collect does after submit
        fetched = time.perf_counter()
        parts["cpu"].append(tree_cpu_s() - cpu_start_s)
        check_rows(rows, expected, "small")
        for name, seconds in (("total", fetched - start), ("submit", submitted - start),
                              ("result", fetched - submitted)):
            parts[name].append(seconds)
    return parts


# --- one pass, the run, the report ---

def one_pass(root: pathlib.Path, pool: Any, files: dict[str, list[str]], options: argparse.Namespace,
             expected: Groups, figures: Figures, extras: dict[str, list[Any]]) -> None:
    """Ceiling, Dask, 1 node, 3 nodes, ceiling again; appends one figure per contender."""
    count, shards, repeats = options.records, options.shards, options.repeats
    maps = ceiling_runs(pool, scan_maps, files["map"], expected, repeats)
    arrays = ceiling_runs(pool, scan_arrays, files["array"], expected, repeats)
    if options.dask:
        figures[DASK].append(dask_runs(files["map"], expected, repeats))
    one, extra = shoal_phase(root / "one", 1, {"plain": (1, False), "typed": (1, True)}, count, shards,
                             expected, repeats, 0)
    figures["shoal 1 node, schema-less"].append(one["plain"])
    figures["shoal 1 node, schema"].append(one["typed"])
    extras["1 node"].append(extra)
    datasets = {"plain1": (1, False), "typed1": (1, True)}
    if options.replication3:
        datasets |= {"plain3": (3, False), "typed3": (3, True)}
    three, extra = shoal_phase(root / "three", 3, datasets, count, shards, expected, repeats, options.latency_runs)
    figures["shoal 3 nodes R=1, schema-less"].append(three["plain1"])
    figures["shoal 3 nodes R=1, schema"].append(three["typed1"])
    if options.replication3:
        figures["shoal 3 nodes R=3, schema-less"].append(three["plain3"])
        figures["shoal 3 nodes R=3, schema"].append(three["typed3"])
    extras["3 nodes"].append(extra)
    late_maps = ceiling_runs(pool, scan_maps, files["map"], expected, repeats)
    late_arrays = ceiling_runs(pool, scan_arrays, files["array"], expected, repeats)
    figures[CEILING_MAP].append(median_run(maps + late_maps))
    figures[CEILING_ARRAY].append(median_run(arrays + late_arrays))
    extras["ceiling drift"].append(f"maps {count / median_run(maps).wall_s:,.0f} -> "
                                   f"{count / median_run(late_maps).wall_s:,.0f} rec/s")


CEILING_MAP, CEILING_ARRAY, DASK = "ceiling: maps, 2 procs", "ceiling: arrays, 2 procs", "dask futures, 2 procs"
TARGETS = {   # contender -> (what it is compared with, the least ratio)
    "shoal 1 node, schema-less": (CEILING_MAP, 0.9), "shoal 3 nodes R=1, schema-less": (CEILING_MAP, 0.9),
    "shoal 1 node, schema": (CEILING_MAP, 1.5), "shoal 3 nodes R=1, schema": (CEILING_MAP, 1.5),
}


def report(figures: Figures, extras: dict[str, list[Any]], options: argparse.Namespace) -> None:
    """Two tables: records/s from wall time, and CPU seconds of the process tree; each with its
    ratio to the map ceiling of this run and the target verdicts. A CPU ratio is what the wall
    ratio would be if both sides kept both cores busy, which they do here (2 processes; 6 tasks
    over 2 workers per node), so it is the figure to trust when the machine is shared."""
    count = options.records
    print(f"\ngroup-by job over {count:,} records, {options.shards} shards, {options.passes} passes x "
          f"{options.repeats} repeats, {machine()}")
    for title, value, unit in (("wall time", lambda run: count / run.wall_s, "records/s"),
                               ("CPU time of the process tree", lambda run: count / run.cpu_s,
                                "records per CPU-s")):
        print(f"\nby {title}:")
        print_table(figure_rows(figures, value), ("what", f"{unit} (median)", "vs map ceiling",
                                                  f"{unit} per pass", "targets"))
    for label, runs in extras.items():
        for number, extra in enumerate(runs, 1):
            if isinstance(extra, dict):
                latency = extra.pop("latency", None)
                if latency:
                    print(f"latency pass {number}: " + latency_text(latency))
                text = ", ".join(f"{k} {v:,.0f} rec/s" if isinstance(v, float) else f"{k} [{v}]"
                                 for k, v in extra.items())
            else:
                text = str(extra)
            print(f"{label} pass {number}: {text}")


def figure_rows(figures: Figures, value: Callable[[Run], float]) -> list[tuple[str, ...]]:
    def rate(runs: list[Run]) -> float:
        return statistics.median(map(value, runs))
    top = rate(figures[CEILING_MAP])
    dask = rate(figures[DASK]) if figures.get(DASK) else None
    rows: list[tuple[str, ...]] = []
    for name, runs in figures.items():
        mine = rate(runs)
        target = ""
        if name in TARGETS:
            least = TARGETS[name][1]
            target = f">= {least}x: {'met' if mine / top >= least else 'MISSED'}"
            if dask is not None:
                target += f"; vs dask {mine / dask:.2f}x: {'ahead' if mine > dask else 'BEHIND'}"
        rows.append((name, f"{mine:,.0f}", f"{mine / top:.2f}x", " / ".join(f"{value(run):,.0f}" for run in runs),
                     target))
    return rows


def latency_text(parts: dict[str, list[float]]) -> str:
    total = sorted(parts["total"])
    p90 = total[max(0, int(len(total) * 0.9 + 0.5) - 1)]
    median = statistics.median(total)
    split = ", ".join(f"{name} {statistics.median(parts[name]) * 1000:.1f}"
                      for name in ("submit", "result", "cpu"))
    return (f"{LATENCY_RECORDS:,} records, {len(total)} runs after {JOBS_RETAINED} untimed: median "
            f"{median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms (target < 50 ms: {'met' if median < 0.05 else 'MISSED'}); "
            f"min {total[0] * 1000:.1f}, max {total[-1] * 1000:.1f}; medians of the parts (ms; cpu = CPU of the whole cluster and client per job): {split}; "
            f"cpu mean {statistics.fmean(parts['cpu']) * 1000:.1f} (clock ticks are {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms: "
            "the mean over the runs is the finer figure)")


# --- profiles: the node's task function, in this process, on one shard file ---

def profile(files: dict[str, list[str]], root: pathlib.Path) -> None:
    """Where a task's time goes: CPU microseconds per record of each stage on shard 0 of each
    layout, in this process (CPU time, interleaved, best of PROFILE_ROUNDS: steadier than wall
    time on a shared machine), then cProfile of the node's task function on the same shard."""
    spec_bytes = msgpack.packb(SPEC, use_bin_type=True)
    costs: dict[str, dict[str, float]] = {}
    medians: dict[str, dict[str, float]] = {}
    for layout, fields in (("map", None), ("array", FIELDS)):
        copies = {}
        for role in ("ceiling", "stages", "task"):   # one environment per path and process (py-lmdb)
            copies[role] = root / f"profile-{layout}-{role}"
            copies[role].mkdir()
            (copies[role] / "data.mdb").write_bytes((pathlib.Path(files[layout][0]) / "data.mdb").read_bytes())
        costs[layout], medians[layout], count = stage_costs(copies, spec_bytes, fields, layout)
        print(f"\nCPU per record on one {layout} shard ({count:,} records), one process, best and median of "
              f"{PROFILE_ROUNDS} (interleaved; on a shared machine the best flatters the batch engine, whose "
              "batches live in the caches the other processes also use, more than the ceiling's loop):")
        ceiling_us = costs["map"]["ceiling loop (decode + aggregate)"]
        ceiling_median_us = medians["map"]["ceiling loop (decode + aggregate)"]
        print_table([(name, f"{us:.3f}", f"{1 / us * 1e6:,.0f}", f"{ceiling_us / us:.2f}x",
                      f"{medians[layout][name]:.3f}", f"{ceiling_median_us / medians[layout][name]:.2f}x")
                     for name, us in costs[layout].items()],
                    ("stage", "us/record (best)", "records/s per core", "vs map ceiling loop",
                     "us/record (median)", "vs map ceiling loop (medians)"))
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(PROFILE_ROUNDS):
            run_query(str(copies["task"]), spec_bytes, fields, 1 << 30)
        profiler.disable()
        print(f"cProfile of run_query, {PROFILE_ROUNDS} runs over the {layout} shard, by own time (calls made "
              "from C, such as map(unpackb, ...) or the cursor under islice, count in their caller):")
        print_stats(pstats.Stats(profiler), "tottime", 12)


def print_stats(stats: pstats.Stats, order: str, lines: int, restriction: str = "") -> None:
    out = io.StringIO()
    stats.stream = out    # type: ignore[attr-defined]
    stats.sort_stats(order).print_stats(*([restriction] if restriction else []), lines)
    text = [line.replace(str(SOURCE_ROOT), "") for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(text) if line.lstrip().startswith("ncalls"))
    print("\n".join(text[start:]))


SOURCE_ROOT = pathlib.Path(__file__).resolve().parent.parent
PROFILE_ROUNDS = 15
BATCH = 256    # node/compute/query.py BATCH_RECORDS


def stage_costs(copies: dict[str, pathlib.Path], spec_bytes: bytes, fields: list[str] | None,
                layout: str) -> tuple[dict[str, float], dict[str, float], int]:
    """CPU us/record of: the cursor alone, + decoding (one call per value, or one per batch),
    the ceiling's loop, and run_query as a worker runs it: the best and the median of the rounds."""
    env = lmdb.open(str(copies["stages"]), readonly=True, lock=False, subdir=True, max_dbs=4)
    records = env.open_db(b"records", create=False)
    with env.begin(db=records) as txn:
        count = txn.stat(records)["entries"]
    def scan(keys: bool, decode: Callable[[bytes], Any] | None) -> None:
        with env.begin(db=records, buffers=False) as txn:
            items = txn.cursor(records).iternext(keys=keys, values=True)
            collections.deque(items if decode is None else map(decode, items), maxlen=0)

    def scan_joined() -> None:
        """Decode BATCH values with one unpackb of a msgpack array made of them (a proposal)."""
        with env.begin(db=records, buffers=False) as txn:
            values = txn.cursor(records).iternext(keys=False, values=True)
            while raws := list(itertools.islice(values, BATCH)):
                msgpack.unpackb(b"\xdd" + len(raws).to_bytes(4, "big") + b"".join(raws))

    stages: dict[str, Callable[[], Any]] = {
        "cursor, values": lambda: scan(False, None),
        "cursor, keys and values": lambda: scan(True, None),
        "+ msgpack.unpackb per value": lambda: scan(False, msgpack.unpackb),
        f"+ one unpackb per {BATCH} values (joined)": scan_joined,
        "ceiling loop (decode + aggregate)": lambda: (scan_maps if layout == "map" else scan_arrays)(
            str(copies["ceiling"])),
        "run_query, as a worker runs it": lambda: run_query(str(copies["task"]), spec_bytes, fields, 1 << 30),
    }
    samples: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(PROFILE_ROUNDS):
        for name, stage in stages.items():
            started = time.process_time()
            stage()
            samples[name].append(time.process_time() - started)
    env.close()
    return ({name: min(seconds) / count * 1e6 for name, seconds in samples.items()},
            {name: statistics.median(seconds) / count * 1e6 for name, seconds in samples.items()}, count)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


NODE_PROFILE_FLAG = "--as-profiled-node"


def node_profile(root: pathlib.Path, shards: int, runs: int) -> None:
    """The latency measurement again on a 3-node cluster whose daemons run under cProfile (their
    main thread: the event loop), then the merged profile of the three daemons."""
    out = root / "node-profiles"
    out.mkdir()
    prefix = [sys.executable, str(pathlib.Path(__file__).resolve()), NODE_PROFILE_FLAG, str(out)]
    with LocalCluster(root / "profiled", nodes=3, env=NODE_ENV, command_prefix=lambda index: prefix) as cluster, \
            cluster.client() as client:
        parts = latency_samples(client, shards, runs)
    print(f"\nlatency with the 3 daemons under cProfile: {latency_text(parts)}")
    for thread, pattern in (("main threads", "*.prof"), ("Raft tick threads", "*.tick.prof")):
        files = [str(path) for path in sorted(out.glob(pattern)) if thread != "main threads" or ".tick." not in path.name]
        if not files:
            continue
        stats = pstats.Stats(*files)
        print(f"cProfile of the 3 node daemons ({thread}, start-up included), shoal functions by cumulative time:")
        print_stats(stats, "cumulative", 25, "/node/")
        print("the same, every function by own time:")
        print_stats(stats, "tottime", 15)


def latency_only(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-bench-latency-") as tmp:
        for number in range(options.passes):
            with LocalCluster(pathlib.Path(tmp) / f"pass{number}", nodes=3, env=NODE_ENV) as cluster, \
                    cluster.client() as client:
                parts = latency_samples(client, options.shards, options.latency_runs)
            print(f"latency pass {number + 1} (load average {load_average()}): {latency_text(parts)}", flush=True)


def profiled_node(argv: list[str]) -> None:
    """`compute.py --as-profiled-node DIR python -m MODULE ARGS...`: run the module as __main__
    under cProfile and write DIR/<pid>.prof when it exits (LocalCluster's command_prefix)."""
    out_dir, _python, flag, module, *arguments = argv
    assert flag == "-m", argv
    sys.argv = [module, *arguments]
    profiler = cProfile.Profile()
    tick_profiler = cProfile.Profile()    # pysyncobj's tick thread: applies commands, sends Raft messages
    real_exit = os._exit
    from pysyncobj import SyncObj
    tick_thread = SyncObj._autoTickThread

    def profiled_tick_thread(self: Any) -> None:
        tick_profiler.enable()
        try:
            tick_thread(self)
        finally:
            tick_profiler.disable()
    SyncObj._autoTickThread = profiled_tick_thread    # type: ignore[method-assign]

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(os.path.join(out_dir, f"{os.getpid()}.prof"))
        tick_profiler.dump_stats(os.path.join(out_dir, f"{os.getpid()}.tick.prof"))

    def exit_after_dump(code: int) -> None:    # the node ends with os._exit after an orderly stop
        dump()
        real_exit(code)
    os._exit = exit_after_dump  # type: ignore[assignment]
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        dump()


def main() -> None:
    if sys.argv[1:2] == [NODE_PROFILE_FLAG]:
        profiled_node(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure and pass (median)")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--latency-only", action="store_true",
                        help="only the latency measurement, on a fresh 3-node cluster per pass")
    parser.add_argument("--no-replication3", dest="replication3", action="store_false")
    parser.add_argument("--no-dask", dest="dask", action="store_false")
    parser.add_argument("--profile", action="store_true", help="profile run_query on one shard file at the end")
    parser.add_argument("--profile-nodes", action="store_true",
                        help="at the end, the latency runs again with the node daemons under cProfile")
    options = parser.parse_args()
    if options.latency_only:
        latency_only(options)
        if options.profile_nodes:
            with tempfile.TemporaryDirectory(prefix="shoal-bench-latency-") as tmp:
                node_profile(pathlib.Path(tmp), options.shards, options.latency_runs)
        return
    options.dask = options.dask and dask_available()
    if not options.dask:
        print("dask.distributed is not importable (or --no-dask): no Dask row")
    expected = reference(options.records)
    figures: Figures = collections.defaultdict(list)
    extras: dict[str, list[Any]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-compute-") as tmp:
        root = pathlib.Path(tmp)
        files = {layout: write_shard_files(root, options.records, options.shards, layout) for layout in ("map", "array")}
        # fork before any thread exists (the clusters' and Dask's come later); the pool lives for the run
        with multiprocessing.get_context("fork").Pool(CEILING_PROCESSES) as pool:
            for number in range(options.passes):
                print(f"pass {number + 1} of {options.passes}: load average {load_average()}", flush=True)
                one_pass(root / f"pass{number}", pool, files, options, expected, figures, extras)
        print(f"after the passes: load average {load_average()} (other processes on the machine count too)")
        report(figures, extras, options)
        if options.profile:
            profile(files, root)
        if options.profile_nodes:
            node_profile(root, options.shards, options.latency_runs)


if __name__ == "__main__":
    main()
