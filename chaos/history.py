"""The record of every client operation of a chaos run, and its JSON form.

A workload calls `History.invoke()` just before it sends a request and
`History.complete()` just after the reply (or the give-up), so each recorded
interval [start_s, end_s] contains the moment the operation really happened.
Times are `time.monotonic()` seconds relative to the run start: wall clocks may
be skewed on purpose by a fault, the monotonic clock of the harness is not.

Outcomes follow Jepsen: "ok" (acknowledged), "failed" (the client was told the
operation definitely did not happen) and "unknown" (timeout, lost connection:
it may take effect at any time after start_s, even after end_s, or never). An
operation still pending when the history is read counts as unknown; end_s is
then the moment it was read.

JSON form: JSON lines, a header line `{"format": "shoal-history", "version": 1}`
then one object per operation with the `Operation` field names. `from_json`
also accepts one JSON document: a list of operations or {"operations": [...]}.
The cas input (expected, new) is a 2-tuple in memory and a 2-list in JSON.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

logger = logging.getLogger(__name__)

OUTCOMES = ("ok", "failed", "unknown")
JSON_FORMAT = "shoal-history"
JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: what was asked, what came back, and when."""

    process: int          # client id; one process runs one operation at a time
    kind: str             # "read" | "write" | "cas" | "add" | ... (the workload's verbs)
    key: str              # register key or set name
    input: Any            # value written / added; (expected, new) for cas; None for read
    output: Any           # value read / bool swapped for cas / None
    outcome: str          # "ok" | "failed" | "unknown"
    start_s: float        # monotonic seconds since the run start, taken before sending
    end_s: float          # reply time; for "unknown" the time the client gave up

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if not self.end_s >= self.start_s:
            raise ValueError(f"operation ends before it starts: {self!r}")

    def describe(self) -> str:
        """One human line, e.g. `p3 cas k1 (1, 2) -> True ok [0.100, 0.250]`."""
        result = "" if self.kind in ("write", "add") else f" -> {self.output!r}"
        argument = "" if self.kind == "read" else f" {_describe_input(self.input)}"
        return (f"p{self.process} {self.kind} {self.key}{argument}{result} "
                f"{self.outcome} [{self.start_s:.3f}, {self.end_s:.3f}]")


@dataclass(frozen=True, slots=True)
class ThroughputWindow:
    """Completed operations per second in [start_s, start_s + window_s), by end time."""

    start_s: float
    window_s: float
    ok_per_s: float
    failed_per_s: float
    unknown_per_s: float


@dataclass(slots=True)
class _Pending:
    process: int
    kind: str
    key: str
    input: Any
    start_s: float


class History:
    """Thread-safe recorder of operations (one per run, shared by all clients)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 run_start_s: float | None = None) -> None:
        self._clock = clock
        self._run_start_s = clock() if run_start_s is None else run_start_s
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._completed: list[Operation] = []
        self._next_token = 0

    @classmethod
    def from_operations(cls, operations: Iterable[Operation]) -> History:
        """A history holding already-completed operations (e.g. loaded from JSON)."""
        history = cls()
        history._completed = list(operations)
        return history

    def elapsed_s(self) -> float:
        """Seconds since the run start, on the clock the operations use."""
        return self._clock() - self._run_start_s

    def invoke(self, process: int, kind: str, key: str, input: Any = None) -> int:
        """Record the start of an operation; returns the token for `complete`."""
        start_s = self.elapsed_s()
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._pending[token] = _Pending(process, kind, key, _freeze_cas_input(kind, input),
                                            start_s)
        return token

    def complete(self, token: int, outcome: str, output: Any = None) -> Operation:
        """Record the end of the operation `token`; each token completes once."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        end_s = self.elapsed_s()
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is None:
                raise ValueError(f"token {token} is unknown or already completed")
            operation = Operation(pending.process, pending.kind, pending.key, pending.input,
                                  output, outcome, pending.start_s, max(end_s, pending.start_s))
            self._completed.append(operation)
        return operation

    def operations(self) -> list[Operation]:
        """Every operation sorted by start; still-pending ones as "unknown" ending now."""
        now_s = self.elapsed_s()
        with self._lock:
            operations = list(self._completed)
            pending = list(self._pending.values())
        operations.extend(
            Operation(p.process, p.kind, p.key, p.input, None, "unknown", p.start_s,
                      max(now_s, p.start_s))
            for p in pending)
        operations.sort(key=lambda operation: (operation.start_s, operation.end_s))
        return operations

    def outcome_counts(self) -> dict[str, int]:
        """Operations per outcome, plus "pending" (not yet completed; unknown if read now)."""
        with self._lock:
            counts = {outcome: 0 for outcome in OUTCOMES}
            for operation in self._completed:
                counts[operation.outcome] += 1
            counts["pending"] = len(self._pending)
        return counts

    def ops_per_second(self, window_s: float = 1.0) -> list[ThroughputWindow]:
        """Throughput timeline of completed operations, empty windows included (gaps show
        unavailability), from 0 to the last completion."""
        assert window_s > 0, "window_s must be positive"
        with self._lock:
            completed = list(self._completed)
        if not completed:
            return []
        windows_count = max(1, math.ceil(max(op.end_s for op in completed) / window_s + 1e-9))
        counts = [{outcome: 0 for outcome in OUTCOMES} for _ in range(windows_count)]
        for operation in completed:
            index = min(int(operation.end_s // window_s), windows_count - 1)
            counts[index][operation.outcome] += 1
        return [ThroughputWindow(index * window_s, window_s, c["ok"] / window_s,
                                 c["failed"] / window_s, c["unknown"] / window_s)
                for index, c in enumerate(counts)]

    def to_json(self) -> str:
        """JSON lines: a header, then `operations()` one per line."""
        return operations_to_json(self.operations())

    @classmethod
    def from_json(cls, text: str) -> History:
        """Inverse of `to_json`; also accepts a single JSON document."""
        return cls.from_operations(operations_from_json(text))


def operations_to_json(operations: Iterable[Operation]) -> str:
    """JSON lines form of `operations` (see the module docstring)."""
    lines = [json.dumps({"format": JSON_FORMAT, "version": JSON_VERSION})]
    lines.extend(json.dumps(asdict(operation), separators=(",", ":")) for operation in operations)
    return "\n".join(lines) + "\n"


def operations_from_json(text: str) -> list[Operation]:
    """Parse JSON lines (header optional) or one JSON document into operations."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        document = json.loads(stripped)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    else:
        if isinstance(document, dict) and "operations" in document:
            records = list(document["operations"])
        elif isinstance(document, list):
            records = document
        else:
            records = [document]
    return [_operation_from_record(record) for record in records if "format" not in record]


def _operation_from_record(record: dict[str, Any]) -> Operation:
    kind = str(record["kind"])
    return Operation(int(record["process"]), kind, str(record["key"]),
                     _freeze_cas_input(kind, record.get("input")), record.get("output"),
                     str(record["outcome"]), float(record["start_s"]), float(record["end_s"]))


def _freeze_cas_input(kind: str, input: Any) -> Any:
    """(expected, new) as a tuple, whichever sequence type it arrived as."""
    if kind == "cas":
        if not isinstance(input, (list, tuple)) or len(input) != 2:
            raise ValueError(f"cas input must be (expected, new), not {input!r}")
        return (input[0], input[1])
    return input


def _describe_input(input: Any) -> str:
    if isinstance(input, tuple) and len(input) == 2:
        return f"({input[0]!r}, {input[1]!r})"
    return repr(input)
