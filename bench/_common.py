"""Shared pieces of the benchmarks: the record generator, timing, a report table."""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Callable, Iterator

COUNTRIES = [f"C{i:02d}" for i in range(50)]


def records(count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """The workload of notes/baselines.md: 16-byte keys, ~65-byte msgpack map values."""
    for i in range(count):
        yield f"user:{i:011d}", {"id": i, "user": i % 10_000, "country": COUNTRIES[i % 50],
                                 "amount": (i * 7919) % 1000, "ts": 1_700_000_000 + i}


# The compute workload (bench/compute.py): the records above with `user` a str, so that the
# same documents fit a declared schema; positional arrays follow TYPED_SCHEMA's field order.
TYPED_SCHEMA = {"id": "int", "user": "str", "country": "str", "amount": "int", "ts": "int"}


def typed_records(count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """records() with `user` a str, 1 of 10,000 ("u00042"): 44-48-byte msgpack maps, 18-22-byte arrays."""
    for i in range(count):
        yield f"user:{i:011d}", {"id": i, "user": f"u{i % 10_000:05d}", "country": COUNTRIES[i % 50],
                                 "amount": (i * 7919) % 1000, "ts": 1_700_000_000 + i}


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    seconds: list[float]
    count: int

    @property
    def rate(self) -> float:
        return self.count / statistics.median(self.seconds)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """Seconds and result of fn(); flushes dirty pages first, so that the previous
    measurement's writeback does not land in this one's fsyncs."""
    os.sync()
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def machine() -> str:
    return f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}"


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
