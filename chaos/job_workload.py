"""The jobs workload: compute jobs over a dataset whose exact answer the harness knows.

At setup (before the workload's t = 0, so before any fault) it writes `records` records
`{"id", "country" (one of 20), "amount" (0..999)}` drawn from the workload seed into its
own dataset (`<dataset>-jobs`: the liveness probe writes into `<dataset>`, and a job must
see no concurrent write, DESIGN.md section 5), and computes the reference answers itself
from what it wrote. Then each client thread submits jobs back to back, half of them a
group-by (count, sum, min, max, count_distinct of amount per country), half a plain count,
whose answer is the number of records: a shard counted twice or missed shows directly.

Each job is one operation in the History, kind "job", key the dataset, input the query
name, from submit to result:
- ok: the job finished and its rows were fetched; output = `JobOutcome.to_output()`
  (rows, tasks, attempts, each task's attempt nodes and records) for `jobs_exact`;
- failed: the submit was refused (the job does not exist), or the job ended failed
  (JobFailedError: e.g. no replica left); output names the stage and the error;
- unknown: the submit may have recorded the job, or the job was still running
  JOB_TIMEOUT_S after the submit (output says `stuck`: jobs_exact fails on it).
A submit names its job (the client draws the id), so the client retries it for up to
SUBMIT_TIMEOUT_S, across a controller failover, as an application would: with the 1 s of
the other workloads, every job submitted while the controller was dead ended unknown, and
whether any ok job overlapped a controller kill was down to luck (a CI failure, seed 3).
While a job runs, client errors of the status and result calls (node down, no controller)
are retried until JOB_TIMEOUT_S: the job lives in the cluster, not in the client, and an
application reattaches the same way.

`final` runs one job of each query after the final heal, again until it answers ok (recorded
too, as the register workload's final reads are): what `no_lost_writes` judges for this
workload.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from shoal.chaos.workloads import (
    FINAL_PROCESS_BASE, RETRY_PAUSE_S, FinalState, Workload, classify_error, shard_of,
)

if TYPE_CHECKING:
    from shoal.client import Client, Job, JobProgress

logger = logging.getLogger(__name__)

COUNTRIES = ("AR", "AU", "BR", "CA", "CN", "DE", "EG", "ES", "FR", "GB",
             "IN", "IT", "JP", "KR", "MX", "NG", "NL", "PL", "SE", "US")
AMOUNT_MAX = 999
QUERIES = ("group_by", "count")
JOB_TIMEOUT_S = 30.0            # from submit; a job still running then is "stuck" (unknown)
SUBMIT_TIMEOUT_S = 10.0         # one client call, retries included: > a Raft election + controller start
STATUS_RETRY_PAUSE_S = 0.1      # between status/result calls that failed on the client side
SETUP_TIMEOUT_S = 120.0         # dataset write at setup, retries included
DATASET_SUFFIX = "-jobs"


def job_dataset(dataset: str) -> str:
    """The dataset the jobs read: next to the probe's, never written during the run."""
    return f"{dataset}{DATASET_SUFFIX}"


def make_records(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """The dataset, a pure function of (count, seed): key `j<7 digits>`."""
    rng = random.Random(seed)
    return [(f"j{i:07d}", {"id": i, "country": COUNTRIES[rng.randrange(len(COUNTRIES))],
                           "amount": rng.randrange(AMOUNT_MAX + 1)}) for i in range(count)]


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    """The exact answers, computed by the harness from the records it wrote."""

    records: int
    shard_records: tuple[int, ...]              # records per shard (the client's routing)
    rows: dict[str, list[dict[str, Any]]]       # query name -> rows, sorted as `normalized_rows`

    @classmethod
    def of(cls, records: list[tuple[str, dict[str, Any]]], shards: int) -> Reference:
        per_shard = Counter(shard_of(key, shards) for key, _ in records)
        groups: dict[str, list[int]] = {}
        for _, value in records:
            groups.setdefault(value["country"], []).append(value["amount"])
        group_rows = [{"country": country, "n": len(amounts), "total": sum(amounts), "low": min(amounts),
                       "high": max(amounts), "distinct": len(set(amounts))}
                      for country, amounts in sorted(groups.items())]
        return cls(len(records), tuple(per_shard.get(shard, 0) for shard in range(shards)),
                   {"group_by": group_rows, "count": [{"n": len(records)}]})

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "shard_records": list(self.shard_records), "rows": self.rows}


def build_query(client: Client, dataset: str, name: str) -> Any:
    """The query `name` (QUERIES) over `dataset`, not yet submitted."""
    query = client.query(dataset)
    if name == "group_by":
        return query.group_by("country").agg(n=("count", None), total=("sum", "amount"), low=("min", "amount"),
                                             high=("max", "amount"), distinct=("count_distinct", "amount"))
    assert name == "count", name
    return query.agg(n=("count", None))


def normalized_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in a canonical order (a group-by's row order is not part of its answer)."""
    return sorted(rows, key=lambda row: str(row.get("country", "")))


@dataclasses.dataclass(frozen=True, slots=True)
class JobOutcome:
    """What one job returned, as recorded in the history (JSON-friendly)."""

    job_id: str
    rows: list[dict[str, Any]]
    tasks_total: int
    tasks_done: int
    attempts: int
    records_scanned: int
    tasks: list[dict[str, Any]]     # per task: index, records, nodes (one per attempt), node (the winner)

    @classmethod
    def of(cls, job_id: str, rows: list[dict[str, Any]], progress: JobProgress) -> JobOutcome:
        tasks = [{"index": t.index, "records": t.records, "nodes": list(t.nodes), "node": t.node}
                 for t in progress.tasks]
        return cls(job_id, normalized_rows(rows), progress.tasks_total, progress.tasks_done, progress.attempts,
                   progress.records_scanned, tasks)

    def to_output(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class JobWorkload(Workload):
    """Jobs back to back over a dataset written once at setup."""

    kind = "jobs"
    client_timeout_s = SUBMIT_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_dataset = job_dataset(self.dataset)
        self.reference: Reference | None = None

    @property
    def datasets(self) -> list[str]:
        return [self.dataset, self.data_dataset]

    def setup(self, client: Any) -> None:
        """Write the records (put_many is idempotent: a failed call is retried whole) and
        compute the reference answers."""
        from shoal.client import ShoalError
        from shoal.client.wire.retry import RetryPolicy, retry

        records = make_records(self.spec.records, self.seed)
        started_s = time.monotonic()
        retry(lambda: client.put_many(self.data_dataset, records), policy=RetryPolicy.fixed(0.5),
              deadline_s=started_s + SETUP_TIMEOUT_S, retry_on=lambda exc: isinstance(exc, ShoalError))
        self.reference = Reference.of(records, self.shards)
        logger.info("jobs workload: %d records written into %s in %.1f s", len(records), self.data_dataset,
                    time.monotonic() - started_s)

    def operation(self, client: Any, rng: random.Random, index: int, process: int) -> str:
        name = QUERIES[rng.randrange(len(QUERIES))]
        return self.run_job(client, process, name)

    def run_job(self, client: Any, process: int, name: str) -> str:
        """Submit the query `name`, wait for its result; record it; return the outcome."""
        token = self.history.invoke(process, "job", self.data_dataset, name)
        outcome, output = self._submit_and_wait(client, name)
        self.history.complete(token, outcome, output)
        return outcome

    def _submit_and_wait(self, client: Any, name: str) -> tuple[str, dict[str, Any]]:
        give_up_s = time.monotonic() + JOB_TIMEOUT_S
        try:
            job = build_query(client, self.data_dataset, name).submit()
        except Exception as exc:   # noqa: BLE001 - every outcome is recorded
            return classify_error(exc, write=True), {"stage": "submit", "error": _error_text(exc)}
        return await_result(job, give_up_s)

    def final(self, client: Any, deadline_s: float) -> FinalState:
        """One job of each query after the final heal, each tried again until it answers ok
        or `deadline_s` passes (as the register workload's final reads are: right after a
        heal a submit may meet an election); complete when both answered. Every attempt is
        recorded, each as a new process (an unknown one may still be running)."""
        state = FinalState(reference=self.reference)
        for position, name in enumerate(QUERIES):
            for attempt in itertools.count():
                outcome = self.run_job(client, FINAL_PROCESS_BASE + attempt * len(QUERIES) + position, name)
                if outcome == "ok":
                    break
                if time.monotonic() >= deadline_s:
                    state.complete = False
                    state.detail = f"the final {name} job did not answer ok before the deadline (last: {outcome})"
                    break
                time.sleep(RETRY_PAUSE_S)
        return state


def await_result(job: Job, give_up_s: float) -> tuple[str, dict[str, Any]]:
    """(outcome, output) of a submitted job: ok with what it returned, failed when the job
    failed, unknown when it is still running at `give_up_s` (stuck) or was forgotten.
    Client-side errors of the status and result calls are retried until `give_up_s`."""
    from shoal.client import JobFailedError, JobNotFoundError, ShoalError

    last_error = ""
    while (remaining_s := give_up_s - time.monotonic()) > 0:
        try:
            rows = job.result(timeout=remaining_s)
            return "ok", JobOutcome.of(job.id, rows, job.progress()).to_output()
        except JobFailedError as exc:
            return "failed", {"stage": "job", "job_id": job.id, "error": _error_text(exc)}
        except JobNotFoundError as exc:
            return "unknown", {"stage": "result", "job_id": job.id, "error": _error_text(exc)}
        except TimeoutError:
            break
        except ShoalError as exc:
            last_error = _error_text(exc)
            time.sleep(STATUS_RETRY_PAUSE_S)
    why = f"still running {JOB_TIMEOUT_S:g} s after the submit"
    return "unknown", {"stage": "result", "job_id": job.id, "stuck": True, "seen": _last_seen(job),
                       "error": why + (f" (last client error: {last_error})" if last_error else "")}


def _last_seen(job: Job) -> dict[str, Any]:
    """What the node the client asks says of a stuck job (for people reading the history)."""
    try:
        progress = job.progress()
    except Exception as exc:   # noqa: BLE001 - best effort
        return {"error": _error_text(exc)}
    return {"state": progress.state, "tasks": [{"index": t.index, "done": t.done, "nodes": list(t.nodes)}
                                               for t in progress.tasks]}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
