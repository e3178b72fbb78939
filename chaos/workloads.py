"""Workloads: concurrent clients that record every operation in a History.

Each client thread has its own Client and its own `random.Random` (seeded from the
schedule), and records `invoke` before sending and `complete` after the reply, with
outcome ok | failed | unknown. Classification (Jepsen's :ok / :fail / :info):
- a read that raises did nothing: failed (the checker drops it either way);
- a write that raises is unknown when it may have been applied (shoal's
  `may_have_applied`: UnknownOutcomeError, deadlines, lost connections after sending),
  failed only on a definite rejection (NOT_PRIMARY, STALE_EPOCH, ...);
- any other exception is unknown, and logged: it is a bug somewhere.
After an unknown outcome the thread continues as a new process id (an open operation
stays open for the rest of the history, and a process runs one operation at a time).

Shard groups: threads are split into groups of at least two, and each group works on the
keys of its own shards (register keys are named so that key i lands on shard i mod N). A
call to a shard that is down blocks its thread until the call's deadline; without groups
every thread soon waits on the one dead shard and the whole run shows no traffic, while
with them the other shards keep their load (and the timeline shows which part stalled)
and the dead shard's group keeps probing it.

- register: read / write / cas over a few keys; every written value is unique, so a
  read names the write it saw. cas expects the last value anyone observed (None = absent).
- set: adds of unique elements (one key each, spread over the shards), read back by one
  final scan.
- bulk: put_many batches of unique keys; the final scan counts every batch.
- jobs: compute jobs over a dataset written at setup (chaos/job_workload.py).
Probe keys (the liveness check) start with "probe-" and are ignored by the final scans.

Preload (`workload.preload_records`, register / set / bulk): records `pre-<n>` with string
values of `preload_value_bytes`, written into the workload's dataset at setup (before t = 0,
no fault yet), so that a repair has data to copy (issue 18.8); the final reads and scans
skip them (register keys start with "r", set elements with "e", bulk keys with "b").
"""
from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from shoal.chaos.history import History
from shoal.chaos.scenario import WorkloadSpec

if TYPE_CHECKING:
    from shoal.client.wire.retry import RetryPolicy

logger = logging.getLogger(__name__)

PROBE_PREFIX = "probe-"
PRELOAD_PREFIX = "pre-"
PRELOAD_BATCH_BYTES = 2 * 2**20   # one put_many of the preload: far below message_bytes_max
RETRY_PAUSE_S = 0.05              # after a failed/unknown op, so a down cluster is not spun on
SCAN_RETRY_PAUSE_S = RETRY_PAUSE_S * 4
FINAL_PROCESS_BASE = 1_000_000    # process ids of the final reads
JOIN_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 1.0            # one workload call (retries included); then failed or unknown


class RecordClient(Protocol):
    """What the workloads use of shoal.client.Client."""

    def put(self, dataset: str, key: str, value: Any) -> Any: ...
    def get(self, dataset: str, key: str) -> Any: ...
    def compare_and_set(self, dataset: str, key: str, expected: Any, new: Any) -> Any: ...
    def put_many(self, dataset: str, records: Iterable[tuple[str, Any]]) -> Any: ...
    def scan(self, dataset: str) -> Iterable[tuple[Any, Any]]: ...


def classify_error(exc: BaseException, *, write: bool) -> str:
    """failed | unknown for an exception raised by a client call (see module docstring)."""
    from shoal.client import ShoalError, may_have_applied

    if isinstance(exc, ShoalError):
        if not write:
            return "failed"
        return "unknown" if may_have_applied(exc) else "failed"
    logger.warning("unexpected %s from the client: %s", type(exc).__name__, exc)
    return "unknown"


def absent() -> Any:
    from shoal.client import ABSENT
    return ABSENT


@dataclass(slots=True)
class FinalState:
    """What the workload read back after the run, for the lost-write checks."""

    complete: bool = True           # every final read succeeded
    detail: str = ""
    values: dict[str, Any] = field(default_factory=dict)   # register key -> value
    elements: set[Any] = field(default_factory=set)        # set / bulk: what the scan found
    reference: Any = None           # jobs: the exact answers (job_workload.Reference)


class Workload:
    """Base: threads, process ids, pacing. Subclasses define `operation` and `final`."""

    kind = ""
    client_timeout_s = CLIENT_TIMEOUT_S   # what the runner's client_factory(timeout_s) gives each thread

    def __init__(self, spec: WorkloadSpec, history: History, client_factory: Callable[[float], RecordClient],
                 seed: int, *, shards: int = 1) -> None:
        self.spec = spec
        self.shards = shards
        self.groups = max(1, min(shards, spec.clients // 2))   # >= 2 threads per group
        self.dataset = spec.dataset
        self.history = history
        self.client_factory = client_factory
        self.seed = seed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[RecordClient] = []
        self._counters = [0] * spec.clients

    # ---- lifecycle: the runner creates `datasets`, then setup, start, stop, final ----
    @property
    def datasets(self) -> list[str]:
        """The datasets the runner creates (and checks for convergence) before `setup`."""
        return [self.dataset]

    def setup(self, client: Any) -> None:
        """Before the workload's t = 0 (no fault yet): load what the workload needs (the preload)."""
        records, value_bytes = self.spec.preload_records, self.spec.preload_value_bytes
        batch = max(1, PRELOAD_BATCH_BYTES // (value_bytes + 16))
        for first in range(0, records, batch):
            client.put_many(self.dataset, ((f"{PRELOAD_PREFIX}{n:08d}", _filler(n, value_bytes))
                                           for n in range(first, min(records, first + batch))))

    def start(self) -> None:
        self._clients = [self.client_factory(self.client_timeout_s) for _ in range(self.spec.clients)]
        for index in range(self.spec.clients):
            thread = threading.Thread(target=self._loop, args=(index,), name=f"chaos-{self.kind}-{index}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("%s still in a client call after %.0f s", thread.name, JOIN_TIMEOUT_S)
        for client in self._clients:
            close = getattr(client, "close", None)
            if close is not None:
                close()

    def metrics(self) -> dict[str, Any]:
        return {"kind": self.kind, "clients": self.spec.clients, **self.history.outcome_counts()}

    def group_of_thread(self, index: int) -> int:
        return index % self.groups

    def group_of_key(self, key: str) -> int:
        return shard_of(key, self.shards) % self.groups

    def unique_value(self, index: int) -> int:
        """Values never repeat across threads: counter * clients + index + 1 (never 0)."""
        value = self._counters[index] * self.spec.clients + index + 1
        self._counters[index] += 1
        return value

    def _loop(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000 + index)
        process = index
        client = self._clients[index]
        while not self._stop.is_set():
            outcome = self.operation(client, rng, index, process)
            if outcome == "unknown":
                process += self.spec.clients
            if outcome != "ok":
                self._stop.wait(RETRY_PAUSE_S)

    def _call(self, process: int, kind: str, key: str, input: Any, write: bool,
              call: Callable[[], Any]) -> tuple[str, Any]:
        token = self.history.invoke(process, kind, key, input)
        try:
            result = call()
        except Exception as exc:   # noqa: BLE001 - every outcome is recorded, none is lost
            outcome = classify_error(exc, write=write)
            # the checkers ignore the output of failed and unknown ops; people read it
            self.history.complete(token, outcome, {"error": f"{type(exc).__name__}: {exc}"[:300]})
            return outcome, None
        self.history.complete(token, "ok", result)
        return "ok", result

    def operation(self, client: RecordClient, rng: random.Random, index: int, process: int) -> str:
        raise NotImplementedError

    def final(self, client: RecordClient, deadline_s: float) -> FinalState:
        raise NotImplementedError


class RegisterWorkload(Workload):
    """read 50 %, write 25 %, cas 25 % over `keys` registers."""

    kind = "register"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = [key_on_shard(f"r{i}-", i % self.shards, self.shards) for i in range(self.spec.keys)]
        self._last_seen: dict[str, Any] = {}
        self._home_keys = [[k for k in self.keys if self.group_of_key(k) == self.group_of_thread(t)] or self.keys
                           for t in range(self.spec.clients)]

    def operation(self, client: RecordClient, rng: random.Random, index: int, process: int) -> str:
        key = rng.choice(self._home_keys[index])
        roll = rng.random()
        if roll < 0.5:
            outcome, value = self._call(process, "read", key, None, False, lambda: client.get(self.dataset, key))
            if outcome == "ok":
                self._last_seen[key] = value
            return outcome
        new = self.unique_value(index)
        if roll < 0.75:
            outcome, _ = self._call(process, "write", key, new, True,
                                    lambda: client.put(self.dataset, key, new))
            if outcome == "ok":
                self._last_seen[key] = new
            return outcome
        expected = self._last_seen.get(key)
        sent = absent() if expected is None else expected
        outcome, swapped = self._call(process, "cas", key, (expected, new), True,
                                      lambda: _swapped(client.compare_and_set(self.dataset, key, sent, new)))
        if outcome == "ok" and swapped:
            self._last_seen[key] = new
        return outcome

    def final(self, client: RecordClient, deadline_s: float) -> FinalState:
        """Read every key until it answers (recorded: the checker sees the final reads)."""
        state = FinalState()
        for position, key in enumerate(self.keys):
            process = FINAL_PROCESS_BASE + position
            backoff = _fixed_retry_policy(RETRY_PAUSE_S).backoff()
            while True:
                outcome, value = self._call(process, "read", key, None, False, lambda: client.get(self.dataset, key))
                if outcome == "ok":
                    state.values[key] = value
                    break
                if time.monotonic() >= deadline_s:
                    state.complete = False
                    state.detail = f"final read of {key} did not succeed before the deadline"
                    break
                backoff.sleep(deadline_s)
        return state


class SetWorkload(Workload):
    """Unique adds (one key per element), read back by a final scan."""

    kind = "set"

    def operation(self, client: RecordClient, rng: random.Random, index: int, process: int) -> str:
        element = self.unique_value(index)
        while self.group_of_key(f"e{element}") != self.group_of_thread(index):
            element = self.unique_value(index)     # skipped values are simply never used
        outcome, _ = self._call(process, "add", self.dataset, element, True,
                                lambda: client.put(self.dataset, f"e{element}", element))
        return outcome

    def final(self, client: RecordClient, deadline_s: float) -> FinalState:
        state = _scan_until(client, self.dataset, deadline_s)
        state.elements = {int(key[1:]) for key in state.elements if key.startswith("e")}
        if state.complete:
            self.history.complete(self.history.invoke(FINAL_PROCESS_BASE, "read", self.dataset), "ok",
                                  sorted(state.elements))
        return state


class BulkWorkload(Workload):
    """put_many batches of `batch_records` unique keys `b<batch>-<i>`."""

    kind = "bulk"

    def operation(self, client: RecordClient, rng: random.Random, index: int, process: int) -> str:
        batch = self.unique_value(index)
        records = [(f"b{batch}-{i}", i) for i in range(self.spec.batch_records)]
        outcome, _ = self._call(process, "add_batch", self.dataset, batch, True,
                                lambda: client.put_many(self.dataset, records))
        return outcome

    def final(self, client: RecordClient, deadline_s: float) -> FinalState:
        state = _scan_until(client, self.dataset, deadline_s)
        state.elements = {key for key in state.elements if key.startswith("b")}
        return state


def _filler(n: int, size: int) -> str:
    """A preloaded value: `size` characters, different for every record."""
    head = f"{n:08d}:"
    return (head * (size // len(head) + 1))[:size]


def _swapped(result: Any) -> bool:
    """compare_and_set returns a bool or an object with `swapped`."""
    return bool(getattr(result, "swapped", result))


def _fixed_retry_policy(pause_s: float) -> RetryPolicy:
    """The shared RetryPolicy (shoal.client.wire.retry) with a fixed pause between attempts:
    the workloads wait for a cluster to come back, not for contention to clear."""
    from shoal.client.wire.retry import RetryPolicy
    return RetryPolicy.fixed(pause_s)


def _scan_until(client: RecordClient, dataset: str, deadline_s: float) -> FinalState:
    """A complete scan of the dataset (retried until the deadline): every non-probe key."""
    from shoal.client.wire.retry import retry

    def scan() -> set[str]:
        return {str(key) for key, _ in client.scan(dataset) if not str(key).startswith(PROBE_PREFIX)}

    try:
        keys = retry(scan, policy=_fixed_retry_policy(SCAN_RETRY_PAUSE_S), deadline_s=deadline_s,
                     retry_on=lambda exc: True)
    except Exception as exc:   # noqa: BLE001 - retried until the deadline, then reported
        return FinalState(complete=False, detail=f"final scan failed: {exc}")
    return FinalState(elements=set(keys))


def make_workload(spec: WorkloadSpec, history: History, client_factory: Callable[[float], RecordClient],
                  seed: int, *, shards: int) -> Workload:
    from shoal.chaos.job_workload import JobWorkload   # it builds on this module

    kinds: dict[str, type[Workload]] = {"register": RegisterWorkload, "set": SetWorkload, "bulk": BulkWorkload,
                                        "jobs": JobWorkload}
    return kinds[spec.kind](spec, history, client_factory, seed, shards=shards)


# ---- the liveness probe: a write and a read on every shard after the final heal ----
def shard_of(key: str, shards: int) -> int:
    from shoal.client.wire.routing import encode_key, shard_for_key
    return shard_for_key(encode_key(key), shards)


def key_on_shard(prefix: str, shard: int, shards: int) -> str:
    """The first `<prefix><n>` that hashes to `shard` (as the client routes it)."""
    return next(f"{prefix}{n}" for n in itertools.count() if shard_of(f"{prefix}{n}", shards) == shard)


def probe_keys(shards: int) -> list[str]:
    """One key per shard, `probe-<shard>-<n>`."""
    return [key_on_shard(f"{PROBE_PREFIX}{shard}-", shard, shards) for shard in range(shards)]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    passed: bool
    elapsed_s: float                # from the probe start to the last shard answering
    detail: str


def probe_liveness(client: RecordClient, dataset: str, shards: int, within_s: float) -> ProbeResult:
    """Until every shard took a write and returned it on a read, or `within_s` passed."""
    started_s = time.monotonic()
    pending = dict.fromkeys(probe_keys(shards), "not tried")
    backoff = _fixed_retry_policy(RETRY_PAUSE_S).backoff()
    attempt = 0
    while pending:
        attempt += 1
        for key in list(pending):
            try:
                client.put(dataset, key, attempt)
                value = client.get(dataset, key)
                if value == attempt:
                    del pending[key]
                else:
                    pending[key] = f"read {value!r} after writing {attempt}"
            except Exception as exc:   # noqa: BLE001 - reported if it persists
                pending[key] = f"{type(exc).__name__}: {exc}"
        elapsed_s = time.monotonic() - started_s
        if pending and elapsed_s >= within_s:
            detail = "; ".join(f"{key}: {why}" for key, why in pending.items())
            return ProbeResult(False, elapsed_s, f"after {elapsed_s:.1f} s: {detail}")
        if pending:
            backoff.sleep(started_s + within_s)
    elapsed_s = time.monotonic() - started_s
    if elapsed_s > within_s:   # the last round succeeded, but too late
        return ProbeResult(False, elapsed_s,
                           f"every shard answered only after {elapsed_s:.2f} s (bound {within_s:g} s)")
    return ProbeResult(True, elapsed_s, f"every shard wrote and read back within {elapsed_s:.2f} s")
