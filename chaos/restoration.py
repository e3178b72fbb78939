"""Replication restored (issue 18.8): every shard back to its replication factor within T.

After the final heal (for a `crash`, which is never healed: its injection) the runner polls
the cluster map and every running node's status (`RestoreWatch`) until each shard of the
workload's datasets has `replication` in-sync replicas on running nodes that serve it, or
until T. The bound is computed from the scenario and the data, never tuned per run
(`restore_budget_s`):

    T = node_dead_after_s + (replication - 1) x bytes_written / copy_rate + RESTORE_MARGIN_S

- node_dead_after_s (cluster.knobs; required by the check): the cluster must first declare
  the node dead before it rebuilds its replicas elsewhere.
- bytes_written (`written_bytes`): what the harness wrote into the datasets up to the final
  heal, counted from above: ROW_BYTES per record the workload wrote (key, small value, its
  write-id rows in the idempotency tables, LMDB and chunk overhead), and per preloaded
  record its value bytes + PRELOAD_ROW_BYTES (key and overhead; one write id per batch).
- (replication - 1) x: every copy of every shard but one rebuilt, one after the other (a
  dead node holds about replication/nodes of the data; refills of a node fenced out while
  it was down, and a second death, come on top).
- copy_rate: the scenario's repair_bytes_per_s knob, but at most COPY_BYTES_PER_S_MIN, a
  rate a copy reaches on a busy 2-core machine (the node's 64 MiB/s default is a cap, not a
  promise).
- RESTORE_MARGIN_S: a node's start-up (~3 s on 2 cores), a promotion, the controller's
  tick, the replay of the entries written during the copy and the join through Raft.

"Serving" means: the map lists the node in the shard's in-sync set, the node runs and
answers GetNodeStatus, and its own status reports the shard as primary or backup (a wiped
node restarted before its death was declared is still listed in sync, but reports
`stale`: it does not count until it has been refilled), and the map does not list the node
as draining (its copies are leaving; the controller does not count them either).

`check_replication_restored` passes when the watch saw every shard served `replication`
times within T, and at the end of the run (after the convergence wait) every shard still
has them and the in-sync replicas' checksums are equal (the `converged` machinery).

`check_copy_resumed` judges faults with target `learner` or `copy-source` (then it reads the
logs of the learners the killed sender was filling): the learner's node logs "learner starts a
copy" once per shard and receives one snapshot, so the copy it was killed in went on from
what it had installed (a restarted copy logs the line again, or a second snapshot id), and it logs "learner joined the in-sync set" for
each shard it was learning; a kill before any record was installed tested nothing.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from shoal.chaos.report import CheckResult

logger = logging.getLogger(__name__)

ROW_BYTES = 200                     # one record as a repair copies it, counted from above
PRELOAD_ROW_BYTES = 64              # a preloaded record besides its value (key, overhead)
COPY_BYTES_PER_S_MIN = 1 * 2**20    # a copy's rate on a busy 2-core machine, at least
RESTORE_MARGIN_S = 10.0             # start-up, promotion, controller tick, replay and join
RESTORE_POLL_S = 0.5
SERVING_ROLES = ("primary", "backup")
WRITE_KINDS = ("write", "cas", "add", "add_batch")
STARTS_COPY = "learner starts a copy"
RECEIVES_SNAPSHOT = "learner receives snapshot"   # + " <id> of <node>": a copy from a new snapshot starts at byte 0
JOINED = "learner joined the in-sync set"


@dataclass(frozen=True, slots=True)
class Copies:
    """One shard's copies as the map and the nodes tell them."""

    want: int                       # the dataset's replication factor
    serving: tuple[str, ...]        # in-sync, running, and reporting the shard as primary/backup
    in_sync: tuple[str, ...]        # the map's in-sync set
    learners: tuple[str, ...]       # the map's learners


@dataclass(slots=True)
class Restoration:
    """What the watch saw: when every shard had its copies (seconds after the final heal)."""

    budget_s: float                 # T
    bytes_written: int
    restored_s: float | None = None  # None: not within budget_s
    polls: int = 0
    short: dict[str, str] = field(default_factory=dict)   # at the last poll: shard -> why
    error: str = ""                 # the last error of a poll (a node missing a deadline)


def restore_budget_s(node_dead_after_s: float, bytes_written: int, replication: int,
                     repair_bytes_per_s: int = 0) -> float:
    """T: see the module docstring; pure. repair_bytes_per_s 0 = the node's cap is not set."""
    assert node_dead_after_s > 0 and bytes_written >= 0 and replication >= 1, \
        (node_dead_after_s, bytes_written, replication)
    rate = min(repair_bytes_per_s, COPY_BYTES_PER_S_MIN) if repair_bytes_per_s > 0 else COPY_BYTES_PER_S_MIN
    return node_dead_after_s + (replication - 1) * bytes_written / rate + RESTORE_MARGIN_S


def written_bytes(workload: Any, operations: Sequence[Any], *, until_s: float | None = None) -> int:
    """Bytes the harness wrote (from above): setup records, then every write that may have
    applied (ok or unknown) invoked before `until_s`; `workload` is a WorkloadSpec."""
    total = int(workload.preload_records) * (PRELOAD_ROW_BYTES + int(workload.preload_value_bytes))
    if workload.kind == "jobs":
        total += int(workload.records) * ROW_BYTES
    for op in operations:
        if op.kind in WRITE_KINDS and op.outcome in ("ok", "unknown") and (until_s is None or op.start_s <= until_s):
            total += ROW_BYTES * (int(workload.batch_records) if op.kind == "add_batch" else 1)
    return total


def shard_copies(cluster_map: Any, statuses: dict[str, Any], datasets: Sequence[str]) -> dict[str, Copies]:
    """"dataset/index" -> Copies for every shard of `datasets`, from a ClusterMap and the
    NodeStatus of every node that answered (a node that did not is not serving); pure."""
    reported = {(node_id, shard.dataset, shard.index): shard
                for node_id, status in statuses.items() for shard in status.shards}
    leaving = {node.id for node in cluster_map.nodes if node.state == "draining"}
    result: dict[str, Copies] = {}
    for info in cluster_map.datasets:
        if info.name not in datasets:
            continue
        for shard in info.shard_map:
            serving = []
            for node_id in shard.replicas:
                own = reported.get((node_id, info.name, shard.index))
                if own is not None and own.role in SERVING_ROLES and node_id not in leaving and \
                        (not info.id or not own.dataset_id or own.dataset_id == info.id):
                    serving.append(node_id)
            result[f"{info.name}/{shard.index}"] = Copies(int(info.replication), tuple(serving),
                                                          tuple(shard.replicas), tuple(shard.learners))
    for dataset in datasets:
        if not any(name.rpartition("/")[0] == dataset for name in result):
            result[f"{dataset}/?"] = Copies(1, (), (), ())     # not in the map: never restored
    return result


def short_of(copies: dict[str, Copies]) -> dict[str, str]:
    """Shards with fewer serving copies than wanted -> why (for people); {} = restored."""
    return {name: (f"{len(c.serving)} of {c.want} serving ({', '.join(c.serving) or 'none'}); "
                   f"in sync {', '.join(c.in_sync) or 'none'}; learners {', '.join(c.learners) or 'none'}")
            for name, c in sorted(copies.items()) if len(c.serving) < c.want}


class RestoreWatch:
    """Polls `read()` (-> shard_copies) every RESTORE_POLL_S from its start until every shard
    is served `want` times, the budget passed or `stop()`; the result is in `restoration`.
    Another condition: `judge` maps what `read()` returns to what is still missing ({} =
    settled; membership.py watches the load and a drain so), `what` names it in the log."""

    def __init__(self, read: Callable[[], Any], budget_s: float, bytes_written: int, *,
                 judge: Callable[[Any], dict[str, str]] = short_of, what: str = "replication restored") -> None:
        self.read, self.judge, self.what = read, judge, what
        self.restoration = Restoration(budget_s=budget_s, bytes_written=bytes_written)
        self._thread = threading.Thread(target=self._watch, name="chaos-restore", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The run ends early (a harness error): poll no more."""
        self._stopped.set()

    def join(self) -> Restoration:
        self._thread.join()
        return self.restoration

    def _watch(self) -> None:
        started_s = time.monotonic()
        result = self.restoration
        while True:
            try:
                result.short = self.judge(self.read())
            except Exception as exc:   # noqa: BLE001 - a busy node may miss one deadline; the next poll retries
                result.short = result.short or {"(cluster)": "not read yet"}
                result.error = f"{type(exc).__name__}: {exc}"
            result.polls += 1
            elapsed_s = time.monotonic() - started_s
            if not result.short:
                result.restored_s = elapsed_s
                logger.info("%s %.1f s after the final heal", self.what, elapsed_s)
                return
            if elapsed_s >= result.budget_s:
                return
            if self._stopped.wait(min(RESTORE_POLL_S, result.budget_s - elapsed_s)):
                return


def check_replication_restored(restoration: Restoration | None, final_copies: dict[str, Copies] | None,
                               convergence: Any) -> CheckResult:
    """Restored within T (the watch), still restored at the end, equal checksums at the end."""
    name = "replication_restored"
    if restoration is None or final_copies is None:
        return CheckResult(name, False, "the copies were not watched (the run ended before the final heal)", {})
    budget_s = restoration.budget_s
    restored_s = restoration.restored_s
    details: dict[str, Any] = {"budget_s": round(budget_s, 1), "bytes_written": restoration.bytes_written,
                               "restored_s": None if restored_s is None else round(restored_s, 2),
                               "polls": restoration.polls, "short_at_deadline": restoration.short,
                               "last_poll_error": restoration.error}
    problems = []
    if restoration.restored_s is None:
        first = next(iter(restoration.short.items()), ("?", "?"))
        problems.append(f"not restored within T = {budget_s:.1f} s of the final heal: {len(restoration.short)} "
                        f"shards short, e.g. {first[0]}: {first[1]}")
    end_short = short_of(final_copies)
    details["short_at_end"] = end_short
    if end_short and restoration.restored_s is not None:
        first = next(iter(end_short.items()))
        problems.append(f"short again at the end: {first[0]}: {first[1]}")
    if convergence is None or not convergence.ok:
        lines = convergence.summary().splitlines()[1:3] if convergence is not None else ["not collected"]
        problems.append("in-sync replicas differ at the end: " + "; ".join(line.strip() for line in lines))
    if problems:
        return CheckResult(name, False, "; ".join(problems), details)
    shards = len(final_copies)
    return CheckResult(name, True, f"{shards} shards back to their replication factor {restoration.restored_s:.1f} s "
                       f"after the final heal (T = {budget_s:.1f} s), checksums equal", details)


def learner_log_lines(text: str) -> list[str]:
    """The lines of a node log that the copy_resumed check reads."""
    return [line for line in text.splitlines() if "learner" in line or "filling from" in line]


def check_copy_resumed(faults: Sequence[dict[str, Any]], logs: dict[str, list[str]]) -> CheckResult:
    """Each fault that hit a learner, or the sender of a copy (target copy-source): the
    learner's node started each shard's copy once, and every shard it was learning joined;
    records were installed at the kill (else nothing was tested)."""
    name = "copy_resumed"
    judged = [f for f in faults if f.get("learning")]
    if not judged:
        return CheckResult(name, False, "no fault hit a learner or a copy's sender (see the faults check)", {})
    problems: list[str] = []
    details: dict[str, Any] = {}
    for fault in judged:
        target = (fault.get("targets") or ["?"])[0]
        learning: dict[str, int] = fault["learning"]
        learners: dict[str, str] = fault.get("learners") or {}
        for node in sorted({learners.get(shard, target) for shard in learning}):
            lines = logs.get(node, [])
            mine = {shard: done for shard, done in learning.items() if learners.get(shard, target) == node}
            starts = copy_starts(lines)
            details[node] = {"learning_at_kill": mine, "killed": target, "copy_starts": starts,
                             "lines": [line[-240:] for line in lines][:60]}
            for shard, count in sorted(starts.items()):
                if count > 1:
                    problems.append(f"{node} started the copy of {shard} {count} times (a resumed copy starts once)")
            for shard in sorted(mine):
                if starts.get(shard, 0) == 0:
                    problems.append(f"{node} never logged '{STARTS_COPY}' for {shard}, which it was learning")
                if not any(f"shard {shard}: {JOINED}" in line for line in lines):
                    problems.append(f"{node} never joined the in-sync set of {shard} after the kill of {target}")
        if max(learning.values(), default=-1) <= 0:
            problems.append(f"{fault.get('name')}: no record of {', '.join(sorted(learning))} was installed at "
                            f"the kill of {target}: nothing to resume, the run tested nothing")
    if problems:
        return CheckResult(name, False, "; ".join(problems[:4]), details)
    summary = "; ".join(
        ", ".join(f"{(f.get('learners') or {}).get(shard, (f.get('targets') or ['?'])[0])} resumed {shard} "
                  f"(from {done} records)" for shard, done in sorted(f["learning"].items()))
        + f" after the kill of {(f.get('targets') or ['?'])[0]}" for f in judged)
    return CheckResult(name, True, summary + ": one copy start per shard, every one joined", details)


def copy_starts(lines: Sequence[str]) -> dict[str, int]:
    """shard -> how many times its copy began from zero: the "learner starts a copy" lines, or
    the snapshots received (each new one is sent from byte 0, even from the same source), if more."""
    starts = _count_by_shard(lines, STARTS_COPY)
    snapshots: dict[str, set[str]] = {}
    for line in lines:
        head, found, tail = line.partition(f": {RECEIVES_SNAPSHOT} ")
        if found and "shard " in head:
            snapshots.setdefault(head.rpartition("shard ")[2], set()).add(tail.split(" ", 1)[0])
    for shard, ids in snapshots.items():
        starts[shard] = max(starts.get(shard, 0), len(ids))
    return starts


def _count_by_shard(lines: Sequence[str], marker: str) -> dict[str, int]:
    """shard -> lines `shard <name>: <marker>`."""
    counts: dict[str, int] = {}
    for line in lines:
        head, found, _ = line.partition(f": {marker}")
        if found and "shard " in head:
            shard = head.rpartition("shard ")[2]
            counts[shard] = counts.get(shard, 0) + 1
    return counts
