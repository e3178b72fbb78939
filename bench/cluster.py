"""Replicated cluster benchmarks (issue 4), on real local node processes.

  ingest    put_many with R=3 on a 3-node cluster vs R=1 on a single node (ratio)
  single    single-key put and get latency p50/p99 and throughput, 1 and 64 callers
            (threads sharing one Client), on the 3-node R=3 cluster

Targets (bench/RESULTS.md): R=3 ingest >= 300,000 records/s; puts at 64 callers
>= 3,000/s (a 3-member etcd here); put p99 at 1 caller < 10 ms.

    python bench/cluster.py [--records 300000] [--ops 3000] [--passes 2]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import machine, print_table, records, timed  # noqa: E402

from shoal.client import Client  # noqa: E402
from shoal.client.local import LocalCluster  # noqa: E402


def ingest(cluster: LocalCluster, dataset: str, replication: int, count: int) -> float:
    with cluster.client() as client:
        client.create_dataset(dataset, shards=6, replication=replication)
        seconds, written = timed(lambda: client.put_many(dataset, records(count)))
    assert written == count, (written, count)
    return count / seconds


def single_key(client: Client, dataset: str, callers: int, ops: int, kind: str) -> tuple[float, float, float]:
    """(ops/s, p50 ms, p99 ms) for `ops` puts or gets spread over `callers` threads."""
    def one(i: int) -> float:
        key = f"k{i % 5000}"
        start = time.perf_counter()
        if kind == "put":
            client.put(dataset, key, {"i": i, "pad": "x" * 64})
        else:
            client.get(dataset, key)
        return time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=callers) as pool:
        latencies = sorted(pool.map(one, range(ops)))
    elapsed = time.perf_counter() - start
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return ops / elapsed, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=2)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = pathlib.Path(tmp)
        with LocalCluster(root / "one", nodes=1) as one, LocalCluster(root / "three", nodes=3) as three:
            for run in range(options.passes):
                r1 = ingest(one, f"r1-{run}", 1, options.records)
                r3 = ingest(three, f"r3-{run}", 3, options.records)
                rows.append((f"ingest pass {run + 1}", f"R=1: {r1:,.0f} rec/s", f"R=3: {r3:,.0f} rec/s",
                             f"R=3/R=1 {r3 / r1:.2f}x"))
            with three.client() as client:
                client.create_dataset("kv", shards=6, replication=3)
                single_key(client, "kv", 8, 500, "put")   # warm up channels and leases
                for run in range(options.passes):
                    for callers in (1, 64):
                        for kind in ("put", "get"):
                            ops = options.ops if callers > 1 else options.ops // 3
                            rate, p50, p99 = single_key(client, "kv", callers, ops, kind)
                            rows.append((f"{kind} pass {run + 1}", f"{callers} callers", f"{rate:,.0f} ops/s",
                                         f"p50 {p50:.2f} ms p99 {p99:.2f} ms"))
    print(f"cluster benchmarks, {machine()}, all nodes and the client on this machine")
    print_table(rows, ("what", "", "", ""))


if __name__ == "__main__":
    main()
