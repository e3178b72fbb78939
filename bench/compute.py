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
  latency       submit-to-result of the same query over 1,000 records on the running
                3-node cluster (replication 3): median and p90 of `--latency-runs` runs

Each pass runs the ceiling, Dask, the 1-node cluster, the 3-node cluster and the ceiling
again, one system at a time (a cluster is started, loaded, measured and stopped inside its
pass). Every figure is the median of `--repeats` timed runs after one untimed warm-up. The
ratios are against the map ceiling of the same run (median of its figures in every pass).
Targets (issue 17): schema-less >= 0.9x the map ceiling, schema >= 1.5x the map ceiling,
ahead of Dask, latency < 50 ms. `--profile` then profiles the node's task function
(shoal.node.compute.worker.run_query) with cProfile on one shard file of each layout.

    SHOAL_LMDB_SYNC=0 is set for the nodes (throwaway data).
    python bench/compute.py [--records 1000000] [--passes 2] [--shards 6] [--profile]
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import io
import logging
import os
import multiprocessing
import pathlib
import pstats
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

CEILING_PROCESSES = 2          # the baselines.md ceiling: 2 processes (this machine class has 2 cores)
LATENCY_RECORDS = 1000
NODE_ENV = {"SHOAL_LMDB_SYNC": "0"}
FIELDS = list(TYPED_SCHEMA)
COUNTRY, AMOUNT = FIELDS.index("country"), FIELDS.index("amount")
T = TypeVar("T")
Groups = dict[str, list[int]]        # country -> [count, sum(amount), count(amount > 900)]
Figures = dict[str, list[float]]     # contender -> seconds per pass (median of the repeats)


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


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds and result of fn(), after flushing dirty pages (a load's writeback must not
    land in the next measurement; the nodes run with SHOAL_LMDB_SYNC=0)."""
    os.sync()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


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
        groups: Groups = {}
        with env.begin(db=records, buffers=False) as txn:
            for value in txn.cursor(records).iternext(keys=False, values=True):
                record = unpackb(value)
                country, amount = record[2], record[3]
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
                 repeats: int) -> list[float]:
    pool.map(scan, paths)                                  # warm: page cache and both processes
    runs = []
    for _ in range(repeats):
        seconds, groups = timed(lambda: merge(pool.map(scan, paths, chunksize=1)))
        check_groups(groups, expected, scan.__name__)
        runs.append(seconds)
    return runs


# --- Dask (b) of notes/baselines.md: futures over the same files ---

def dask_available() -> bool:
    try:
        import dask.distributed  # noqa: F401  # an optional peer, not a shoal dependency
    except ImportError:
        return False
    return True


def dask_seconds(paths: list[str], expected: Groups, repeats: int) -> float:
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster as DaskCluster

    with DaskCluster(n_workers=CEILING_PROCESSES, threads_per_worker=1, processes=True, dashboard_address=None,
                     silence_logs=logging.ERROR) as cluster, DaskClient(cluster) as client:
        def run() -> Groups:
            return merge(client.gather(client.map(scan_maps, paths, pure=False)))
        check_groups(run(), expected, "dask")                 # warm: workers import lmdb, page cache
        runs = []
        for _ in range(repeats):
            seconds, groups = timed(run)
            check_groups(groups, expected, "dask")
            runs.append(seconds)
    return statistics.median(runs)


# --- Shoal ---

def load(client: Client, name: str, count: int, shards: int, replication: int, typed: bool) -> int:
    client.create_dataset(name, shards=shards, replication=replication, schema=TYPED_SCHEMA if typed else None)
    written = client.put_many(name, typed_records(count))
    assert written == count, (name, written, count)
    return written


def job_seconds(client: Client, dataset: str, expected: Groups) -> tuple[float, Any]:
    job = query(client, dataset)
    seconds, rows = timed(lambda: list(job.collect(timeout=600)))
    check_rows(rows, expected, dataset)
    return seconds, rows


def tasks_per_node(client: Client, dataset: str) -> str:
    """Where the last job over `dataset` ran: node -> tasks (the first attempt to commit)."""
    job = query(client, dataset).submit()
    job.wait(timeout=600)
    placed = collections.Counter(task.node for task in job.progress().tasks)
    return " ".join(f"{node}:{placed[node]}" for node in sorted(placed))


def shoal_phase(root: pathlib.Path, nodes: int, datasets: dict[str, tuple[int, bool]], count: int, shards: int,
                expected: Groups, repeats: int, latency_runs: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Start a cluster of `nodes`, load every dataset {label: (replication, typed)}, measure, stop.

    Returns (label -> median seconds, extra: load rates, placement, latency samples)."""
    extra: dict[str, Any] = {}
    with LocalCluster(root, nodes=nodes, env=NODE_ENV) as cluster, cluster.client() as client:
        for label, (replication, typed) in datasets.items():
            seconds, _ = timed(lambda: load(client, label, count, shards, replication, typed))
            extra[f"load {label}"] = count / seconds
            job_seconds(client, label, expected)                        # warm-up, untimed
            extra[f"placement {label}"] = tasks_per_node(client, label)
        runs: dict[str, list[float]] = {label: [] for label in datasets}
        for _ in range(repeats):
            for label in datasets:                                      # interleaved against drift
                runs[label].append(job_seconds(client, label, expected)[0])
        if latency_runs:
            extra["latency"] = latency_samples(client, shards, latency_runs)
    return {label: statistics.median(seconds) for label, seconds in runs.items()}, extra


def latency_samples(client: Client, shards: int, runs: int) -> list[float]:
    client.create_dataset("small", shards=shards, replication=3)
    client.put_many("small", typed_records(LATENCY_RECORDS))
    expected = reference(LATENCY_RECORDS)
    for _ in range(2):
        job_seconds(client, "small", expected)                          # warm-up
    return [job_seconds(client, "small", expected)[0] for _ in range(runs)]


# --- one pass, the run, the report ---

def one_pass(root: pathlib.Path, pool: Any, files: dict[str, list[str]], options: argparse.Namespace,
             expected: Groups, figures: Figures, extras: dict[str, list[Any]]) -> None:
    """Ceiling, Dask, 1 node, 3 nodes, ceiling again; appends one figure per contender."""
    count, shards, repeats = options.records, options.shards, options.repeats
    maps = ceiling_runs(pool, scan_maps, files["map"], expected, repeats)
    arrays = ceiling_runs(pool, scan_arrays, files["array"], expected, repeats)
    if options.dask:
        figures[DASK].append(dask_seconds(files["map"], expected, repeats))
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
    figures[CEILING_MAP].append(statistics.median(maps + late_maps))
    figures[CEILING_ARRAY].append(statistics.median(arrays + late_arrays))
    extras["ceiling drift"].append(f"maps {count / statistics.median(maps):,.0f} -> "
                                   f"{count / statistics.median(late_maps):,.0f} rec/s")


CEILING_MAP, CEILING_ARRAY, DASK = "ceiling: maps, 2 procs", "ceiling: arrays, 2 procs", "dask futures, 2 procs"
TARGETS = {   # contender -> (what it is compared with, the least ratio)
    "shoal 1 node, schema-less": (CEILING_MAP, 0.9), "shoal 3 nodes R=1, schema-less": (CEILING_MAP, 0.9),
    "shoal 1 node, schema": (CEILING_MAP, 1.5), "shoal 3 nodes R=1, schema": (CEILING_MAP, 1.5),
}


def report(figures: Figures, extras: dict[str, list[Any]], options: argparse.Namespace) -> None:
    count = options.records
    top = count / statistics.median(figures[CEILING_MAP])
    dask = count / statistics.median(figures[DASK]) if figures.get(DASK) else None
    rows: list[tuple[str, ...]] = []
    for name, seconds in figures.items():
        rate = count / statistics.median(seconds)
        per_pass = " / ".join(f"{count / s:,.0f}" for s in seconds)
        target = ""
        if name in TARGETS:
            least = TARGETS[name][1]
            target = f">= {least}x: {'met' if rate / top >= least else 'MISSED'}"
            if dask is not None:
                target += f"; vs dask {rate / dask:.2f}x: {'ahead' if rate > dask else 'BEHIND'}"
        rows.append((name, f"{statistics.median(seconds):.3f}", f"{rate:,.0f}", f"{rate / top:.2f}x", per_pass, target))
    print(f"\ngroup-by job over {count:,} records, {options.shards} shards, {options.passes} passes x "
          f"{options.repeats} repeats, {machine()}")
    print_table(rows, ("what", "median s", "records/s", "vs map ceiling", "records/s per pass", "target"))
    for label, runs in extras.items():
        for number, extra in enumerate(runs, 1):
            if isinstance(extra, dict):
                latency = extra.pop("latency", None)
                if latency:
                    ordered = sorted(latency)
                    p90 = ordered[max(0, int(len(ordered) * 0.9 + 0.5) - 1)]
                    print(f"latency pass {number}: {LATENCY_RECORDS:,} records, {len(latency)} runs, median "
                          f"{statistics.median(latency) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms "
                          f"(target < 50 ms: {'met' if statistics.median(latency) < 0.05 else 'MISSED'}); "
                          f"min {ordered[0] * 1000:.1f} max {ordered[-1] * 1000:.1f} ms")
                text = ", ".join(f"{k} {v:,.0f} rec/s" if isinstance(v, float) else f"{k} [{v}]"
                                 for k, v in extra.items())
            else:
                text = str(extra)
            print(f"{label} pass {number}: {text}")


# --- profiles: the node's task function, in this process, on one shard file ---

def profile(files: dict[str, list[str]], root: pathlib.Path) -> None:
    """cProfile of shoal.node.compute.worker.run_query on shard 0 of each layout, plus a
    stage breakdown (cursor only, + decode, the ceiling's loop, run_query) on the same file."""
    from shoal.node.compute.worker import run_query
    spec_bytes = msgpack.packb(SPEC, use_bin_type=True)
    for layout, fields in (("map", None), ("array", FIELDS)):
        source = files[layout][0]
        path = root / f"profile-{layout}"           # a copy: run_query keeps its environments open
        path.mkdir()
        (path / "data.mdb").write_bytes((pathlib.Path(source) / "data.mdb").read_bytes())
        run_query(str(path), spec_bytes, fields, 1 << 30)      # warm: compile, open
        stages = breakdown(source, str(path), spec_bytes, fields, layout)
        print(f"\nstages on one {layout} shard file ({stages.pop('records'):,} records), single process, "
              "best of 3, records/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in stages.items()))
        profiler = cProfile.Profile()
        profiler.enable()
        run_query(str(path), spec_bytes, fields, 1 << 30)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        print(f"cProfile of run_query over the {layout} shard, by own time:")
        print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def breakdown(source: str, copy: str, spec_bytes: bytes, fields: list[str] | None, layout: str) -> dict[str, Any]:
    from functools import partial

    from shoal.node.compute.worker import run_query
    env = lmdb.open(source, readonly=True, lock=False, subdir=True, max_dbs=4)
    records = env.open_db(b"records", create=False)
    with env.begin(db=records) as txn:
        count = txn.stat(records)["entries"]
    decode_kwargs = partial(msgpack.unpackb, raw=False, strict_map_key=False)

    def scan(decode: Callable[[bytes], Any] | None) -> float:
        start = time.perf_counter()
        with env.begin(db=records, buffers=False) as txn:
            values = txn.cursor(records).iternext(keys=False, values=True)
            collections.deque(values if decode is None else map(decode, values), maxlen=0)
        return time.perf_counter() - start

    def best(fn: Callable[[], Any]) -> float:
        return count / min(timed(fn)[0] for _ in range(3))
    stages = {"records": count, "cursor only": best(lambda: scan(None)),
              "+ unpackb": best(lambda: scan(msgpack.unpackb)),
              "+ unpackb(raw=False, strict_map_key=False) as the worker calls it": best(lambda: scan(decode_kwargs))}
    env.close()
    stages["ceiling loop"] = best(lambda: (scan_maps if layout == "map" else scan_arrays)(source))
    stages["run_query"] = best(lambda: run_query(copy, spec_bytes, fields, 1 << 30))
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure and pass (median)")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--no-replication3", dest="replication3", action="store_false")
    parser.add_argument("--no-dask", dest="dask", action="store_false")
    parser.add_argument("--profile", action="store_true", help="profile run_query on one shard file at the end")
    options = parser.parse_args()
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
                print(f"pass {number + 1} of {options.passes} ...", flush=True)
                one_pass(root / f"pass{number}", pool, files, options, expected, figures, extras)
        report(figures, extras, options)
        if options.profile:
            profile(files, root)


if __name__ == "__main__":
    main()
