"""Single-node ingest against the raw LMDB ceiling (issue 3).

Measures, in one run and on the same records:
  ceiling   raw py-lmdb putmulti, 1,000 records per transaction, fsync per commit
  put_many  shoal.client.Client.put_many into a standalone node (values encoded by the client)
  load      `shoal load` of the same records as a JSON-lines file (includes JSON parsing)
and prints each rate with its ratio to the ceiling. Every measurement runs `--passes`
times (default 2, our machines swing 30-70%) and the median is reported.

    python bench/ingest.py [--records 500000] [--passes 2]
"""
from __future__ import annotations

import argparse
import gc
import json
import pathlib
import subprocess
import sys
import tempfile

import lmdb
import msgpack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import Measurement, machine, print_table, records, timed  # noqa: E402

from shoal.client import Client  # noqa: E402
from shoal.client.local import LocalCluster  # noqa: E402


def ceiling(path: pathlib.Path, items: list[tuple[bytes, bytes]]) -> int:
    env = lmdb.open(str(path), map_size=8 << 30, subdir=True, max_dbs=4, writemap=False, sync=True)
    db = env.open_db(b"records")
    for start in range(0, len(items), 1000):
        with env.begin(write=True, db=db) as txn:
            txn.cursor().putmulti(items[start:start + 1000])
    env.close()
    return len(items)


def ingest_put_many(address: str, dataset: str, rows: list[tuple[str, dict[str, object]]]) -> int:
    with Client(address) as client:
        client.create_dataset(dataset, shards=4, replication=1)
        return client.put_many(dataset, rows)


def ingest_load(address: str, dataset: str, path: pathlib.Path, count: int) -> int:
    with Client(address) as client:
        client.create_dataset(dataset, shards=4, replication=1)
    subprocess.run([sys.executable, "-m", "shoal.client.cli", "--cluster", address, "load", dataset, str(path),
                    "--key", "key"], check=True, stdout=subprocess.DEVNULL)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--passes", type=int, default=2)
    options = parser.parse_args()
    count = options.records
    # Inputs are built before any timing, for every contender: the ceiling gets encoded
    # bytes, put_many the Python records (encoding them is part of its job), load a file.
    # The ceiling's inputs exist only around its own run: a million extra live objects
    # would make every garbage collection during the next contender's run slower.
    rows = list(records(count))
    packer = msgpack.Packer(use_bin_type=True)
    results: dict[str, list[float]] = {"ceiling": [], "put_many": [], "load": []}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = pathlib.Path(tmp)
        jsonl = root / "records.jsonl"
        with jsonl.open("w") as fh:
            for key, value in records(count):
                fh.write(json.dumps({"key": key, **value}) + "\n")
        with LocalCluster(root / "cluster", nodes=1) as cluster:
            address = cluster.addresses[0]
            for run in range(options.passes):
                items = [(k.encode(), packer.pack(v)) for k, v in rows]
                results["ceiling"].append(timed(lambda: ceiling(root / f"ceiling{run}", items))[0])
                del items
                gc.collect()
                results["put_many"].append(timed(lambda: ingest_put_many(address, f"pm{run}", rows))[0])
                results["load"].append(timed(lambda: ingest_load(address, f"ld{run}", jsonl, count))[0])
    measured = {name: Measurement(name, seconds, count) for name, seconds in results.items()}
    top = measured["ceiling"].rate
    print(f"ingest of {count:,} records, {options.passes} passes, {machine()}")
    print_table([(m.name, f"{m.rate:,.0f}", f"{m.rate / top:.2f}x",
                  " / ".join(f"{count / s:,.0f}" for s in m.seconds)) for m in measured.values()],
                ("what", "records/s (median)", "vs ceiling", "per pass"))


if __name__ == "__main__":
    main()
