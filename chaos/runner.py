"""Run one scenario with one seed: cluster, workload, faults, checks, report.

Shape of a run (the etcd robustness pattern, notes/fault-injection.md 4.1):
start the cluster, create the dataset and wait until every shard takes a write, start
the workload, inject and heal faults on the precomputed schedule, probe liveness right
after the final heal, stop the workload, read everything back, wait for the replicas to
converge, stop the cluster, run the checkers, write the report.

When the workload stops is `workload_stop`: not before the schedule's end (`duration_s`,
every fault healed) and not before `checks.ops_min` operations are recorded, unless the
scenario's `ops_deadline_s` passed. A busy machine makes the run longer; only a workload
that cannot reach ops_min by the deadline makes it invalid.

Network namespaces: nodes in namespaces are only reachable from a namespace on their
bridge, and the harness must talk to them (readiness, leader lookup, the workload, the
checksums). So a netns run is two processes: this one builds the netlab in the root
namespace and re-runs itself (`python -m shoal.chaos.runner inner ...`) inside the
client namespace, where the whole run happens; then it tears the netlab down whatever
happened (and a dead parent's leftovers are removed by the next run, see netlab.py).
Without root the run goes on over loopback and the network faults are "unavailable".
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import replace
from types import FrameType
from typing import Any, Literal

from shoal.chaos import netlab
from shoal.chaos.faults import Fault, FaultRecord, Schedule, build_schedule
from shoal.chaos.history import History
from shoal.chaos.judgements import run_checks
from shoal.chaos.membership import Membership, MembershipWatch, watch_membership
from shoal.chaos.report import RunReport, report_from_dict, write_report
from shoal.chaos.repro import write_repro
from shoal.chaos.restoration import (
    Copies, Restoration, RestoreWatch, learner_log_lines, restore_budget_s, shard_copies, short_of, written_bytes,
)
from shoal.chaos.scenario import MEMBERSHIP_FAULTS, ONE_SHOT_STATUS, Scenario, ScenarioError, load_scenario
from shoal.chaos.screen import render_verdict
from shoal.chaos.workloads import CLIENT_TIMEOUT_S, FinalState, ProbeResult, make_workload, probe_liveness

logger = logging.getLogger(__name__)

NETNS_BASE_PORT = 7400            # every node has its own namespace, so the ports never clash
CLUSTER_START_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 60.0
SETUP_RETRY_PAUSE_S = 0.2         # fixed pacing of the dataset-create retries (the cluster is settling)
FINAL_READ_TIMEOUT_S = 30.0
OPS_POLL_INTERVAL_S = 0.1         # how often the runner counts operations after the schedule

WorkloadStop = Literal["continue", "complete", "deadline"]


def new_seed() -> int:
    return secrets.randbelow(2**31)


def run(scenario: Scenario | str, *, seed: int | None = None, report_dir: pathlib.Path | None = None,
        duration_s: float | None = None, quiet: bool = False) -> RunReport:
    """Run a scenario (object, shipped name or path); return its report (also on disk)."""
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    if duration_s is not None:
        scenario = with_duration(scenario, duration_s)
    seed = new_seed() if seed is None else seed
    report_dir = pathlib.Path(report_dir or tempfile.mkdtemp(prefix=f"shoal-chaos-{scenario.name}-{seed}-"))
    report_dir.mkdir(parents=True, exist_ok=True)
    _say(quiet, f"chaos run {scenario.name} seed={seed} report={report_dir}")
    available, reason = netlab.availability()
    if available:
        netlab.cleanup_stale()        # namespaces of harnesses that died (SIGKILL, crash)
    with _exit_on_signals():
        if scenario.needs_netns and available:
            report = _run_in_netlab(scenario, seed, report_dir, quiet)
        else:
            lab_reason = reason or "the scenario runs its nodes on loopback"
            report = execute(scenario, seed, report_dir, lab=None, lab_reason=lab_reason)
    if not quiet:
        render_verdict(report, report_dir)
    return report


@contextlib.contextmanager
def _exit_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP act like Ctrl-C during a run, so `finally` blocks stop the nodes (they
    run in their own sessions and would outlive a harness killed by the default action)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, leave) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def workload_stop(elapsed_s: float, ops: int, *, schedule_end_s: float, ops_min: int,
                  deadline_s: float) -> WorkloadStop:
    """Whether the workload may stop now; pure, the rule of the run length.

    "complete": the schedule is over (every fault injected and healed) and `ops_min`
    operations are recorded. "deadline": `deadline_s` passed without them; the run stops
    and workload_valid judges it (INVALID below ops_min). Otherwise "continue": never before
    `schedule_end_s`, so faults keep their planned times whatever the machine's speed.
    """
    assert deadline_s >= schedule_end_s, (deadline_s, schedule_end_s)
    if elapsed_s < schedule_end_s:
        return "continue"
    if ops >= ops_min:
        return "complete"
    return "deadline" if elapsed_s >= deadline_s else "continue"


def with_duration(scenario: Scenario, duration_s: float) -> Scenario:
    """The scenario run for `duration_s`; a longer run repeats the fault schedule (see faults).
    An explicit ops_deadline_s keeps its ratio to the duration (the default one does anyway)."""
    latest_end_s = max((f.start_s.high + f.duration_s.high for f in scenario.faults), default=0.0)
    if duration_s <= latest_end_s:
        raise ScenarioError(f"--duration {duration_s:g} s is too short: a fault of {scenario.name} may "
                            f"last until {latest_end_s:g} s")
    # a join or drain happens once: a node joins once, and a drain each period would empty the cluster
    repeats = scenario.faults and not any(f.kind in MEMBERSHIP_FAULTS for f in scenario.faults)
    period_s = scenario.duration_s if duration_s >= 2 * scenario.duration_s and repeats else 0.0
    deadline_s = scenario.ops_deadline_s * duration_s / scenario.duration_s
    return replace(scenario, duration_s=duration_s, fault_period_s=period_s, ops_deadline_s=deadline_s)


def _run_in_netlab(scenario: Scenario, seed: int, report_dir: pathlib.Path, quiet: bool) -> RunReport:
    scenario_file = report_dir / "scenario.toml"
    scenario_file.write_text(scenario.text)
    (report_dir / "report.json").unlink(missing_ok=True)
    lab = netlab.NetLab(scenario.cluster.nodes, clients=1)
    started = _utc_now()
    try:
        lab.up()
        argv = [*lab.exec_prefix(lab.client_namespace(1)), sys.executable, "-m", "shoal.chaos.runner",
                "inner", "--scenario", str(scenario_file), "--seed", str(seed), "--report", str(report_dir),
                "--duration", repr(scenario.duration_s), "--netlab-prefix", lab.prefix, "--name", scenario.name]
        env = {**os.environ, "SHOAL_CHAOS_LOG": logging.getLevelName(logging.getLogger().getEffectiveLevel())}
        completed = subprocess.run(argv, check=False, env=env)
        report_path = report_dir / "report.json"
        if report_path.exists():
            return report_from_dict(json.loads(report_path.read_text()))
        error = f"the run inside namespace {lab.client_namespace(1)} exited {completed.returncode} without a report"
    except netlab.NetLabError as exc:
        error = str(exc)
    finally:
        lab.down()
    report = RunReport(scenario=scenario.name, seed=seed, started_at=started, error=error,
                       scenario_file=scenario.source)
    write_report(report_dir, report, [])
    return report


def execute(scenario: Scenario, seed: int, report_dir: pathlib.Path, *, lab: netlab.NetLab | None,
            lab_reason: str) -> RunReport:
    """The run itself, in the namespace that can reach the nodes (see module docstring)."""
    from shoal.client.local import LocalCluster

    schedule = build_schedule(scenario, seed)
    report = RunReport(scenario=scenario.name, seed=seed, started_at=_utc_now(), schedule=schedule.to_dict(),
                       scenario_file=scenario.source, schedule_s=scenario.duration_s,
                       ops_deadline_s=scenario.workload_deadline_s)
    started_s = time.monotonic()
    work_dir = report_dir / "work"
    cluster = LocalCluster(work_dir / "cluster", **_cluster_layout(scenario, lab))
    faults = [Fault(plan, cluster, dataset=scenario.workload.dataset, lab=lab, lab_reason=lab_reason)
              for plan in schedule.faults]
    records = [_record(fault, cluster) for fault in faults]
    history = History()
    run = _Run(scenario, schedule, cluster, faults, records, history)
    try:
        run.go()
    except Exception as exc:   # noqa: BLE001 - a harness failure is a failed verdict with its reason
        logger.exception("chaos run failed")
        report.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        run.heal_all()
        run.logs = _safe_logs(cluster)    # node states and log tails while the nodes still run
        cluster.stop(timeout_s=10.0)
    operations = run.history.operations()
    report.faults = [record.to_dict() for record in records]
    report.ops_by_outcome = {k: v for k, v in run.history.outcome_counts().items() if k != "pending"}
    if not report.error:
        report.checks = run_checks(scenario, schedule, operations, records, run.final, run.probe, run.convergence,
                                   workload_s=run.workload_s, metadata_versions=run.metadata_versions,
                                   restoration=run.restoration, final_copies=run.final_copies,
                                   learner_logs=run.learner_logs, membership=run.membership)
    report.ops_s_before_first_fault = _rate_before(operations, schedule)
    report.workload_s, report.workload_stop = run.workload_s, run.stop
    report.duration_s = time.monotonic() - started_s
    (report_dir / "history.jsonl").write_text(run.history.to_json())
    if not report.passed:
        report.repro_dir = str(write_repro(report_dir, scenario.text, scenario.name, seed, work_dir, run.logs))
    elif work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)
    write_report(report_dir, report, operations)
    return report


class _Run:
    """The moving parts of one run, so `execute` stays readable."""

    def __init__(self, scenario: Scenario, schedule: Schedule, cluster: Any, faults: list[Fault],
                 records: list[FaultRecord], history: History) -> None:
        self.scenario, self.schedule, self.cluster = scenario, schedule, cluster
        self.faults, self.records, self.history = faults, records, history
        self.final = FinalState(complete=False, detail="the workload did not finish")
        self.probe: ProbeResult | None = None
        self.convergence: Any = None
        self.metadata_versions: dict[str, int | None] | None = None   # node -> applied metadata version
        self.restoration: Restoration | None = None          # checks.replication_restored: the watch's result
        self.final_copies: dict[str, Copies] | None = None   # ... and the copies after the convergence wait
        self.learner_logs: dict[str, list[str]] = {}         # checks.copy_resumed: learner lines per target node
        self._restore_watch: RestoreWatch | None = None
        self._membership_watch: MembershipWatch | None = None
        self.membership: Membership | None = None            # checks.load_even / drained: what they judge
        self._datasets: list[str] = []
        self.logs = ""
        self._probe_thread: threading.Thread | None = None
        self._probe_client: Any = None
        self._t0 = 0.0
        self.workload_s = 0.0               # seconds the workload ran (schedule + extension)
        self.stop: WorkloadStop = "continue"  # why it stopped: complete | deadline

    def go(self) -> None:
        spec = self.scenario.workload
        _start_cluster(self.cluster, [f"n{number}" for number in self.scenario.cluster.held_back])
        admin = self.cluster.client(timeout_s=CLIENT_TIMEOUT_S)
        # The liveness probe after the final heal uses a client that lived through the faults
        # (its map is from before them), as an application's would: a fresh client could hide
        # a client that stays stuck on stale routing.
        self._probe_client = self.cluster.client(timeout_s=CLIENT_TIMEOUT_S)
        try:
            workload = make_workload(spec, self.history, lambda timeout_s: self.cluster.client(timeout_s=timeout_s),
                                     self.schedule.workload_seed, shards=self.scenario.cluster.shards)
            self._datasets = list(workload.datasets)
            for dataset in workload.datasets:
                _create_dataset(admin, self.scenario, dataset)
            ready = probe_liveness(self._probe_client, spec.dataset, self.scenario.cluster.shards, SETUP_TIMEOUT_S)
            if not ready.passed:
                raise RuntimeError(f"dataset {spec.dataset} not writable on every shard: {ready.detail}")
            with self.cluster.client(timeout_s=SETUP_TIMEOUT_S) as loader:
                workload.setup(loader)
            for fault in self.faults:
                fault.jobs = admin.jobs
            self._t0 = time.monotonic()
            self.history = workload.history = History(run_start_s=self._t0)
            workload.start()
            try:
                self._drive_faults()
                self._wait_workload_stop()
            finally:
                workload.stop()
                self.workload_s = time.monotonic() - self._t0
            if self._probe_thread is None:
                self._start_probe()
            self.final = workload.final(admin, time.monotonic() + FINAL_READ_TIMEOUT_S)
            assert self._probe_thread is not None
            self._probe_thread.join()
            if self._restore_watch is not None:
                self.restoration = self._restore_watch.join()
            if self._membership_watch is not None:
                self._membership_watch.join()
            self.convergence, self.metadata_versions, self.final_copies = _wait_converged(
                self.cluster, workload.datasets, self.scenario.checks.converge_within_s,
                restored=self.scenario.checks.replication_restored)
            if not self.scenario.checks.replication_restored:
                self.final_copies = None
            if self._membership_watch is not None:
                self.membership = self._membership_watch.finish()
            self.learner_logs = self._learner_logs()
        finally:
            if self._probe_thread is not None:
                self._probe_thread.join()
            for watch in (self._restore_watch, self._membership_watch):
                if watch is not None:
                    watch.stop()
            admin.close()
            self._probe_client.close()

    def _wait_workload_stop(self) -> None:
        """Until `workload_stop` allows it: the schedule is over and ops_min operations are
        recorded, or the deadline passed (then workload_valid fails, naming the numbers)."""
        checks, scenario = self.scenario.checks, self.scenario
        _pace_until(self._t0 + scenario.duration_s)     # the planned length comes first in any case
        while True:
            counts = self.history.outcome_counts()
            ops = counts["ok"] + counts["failed"] + counts["unknown"]
            self.stop = workload_stop(time.monotonic() - self._t0, ops, schedule_end_s=scenario.duration_s,
                                      ops_min=checks.ops_min, deadline_s=scenario.workload_deadline_s)
            if self.stop == "deadline":
                logger.warning("workload stopped at ops_deadline_s %.1f s with %d operations (need %d)",
                               scenario.workload_deadline_s, ops, checks.ops_min)
            if self.stop != "continue":
                return
            time.sleep(OPS_POLL_INTERVAL_S)

    def _drive_faults(self) -> None:
        """Inject and heal on schedule; start the liveness probe at the final heal."""
        events = sorted([(p.start_s, 1, i) for i, p in enumerate(f.plan for f in self.faults)]
                        + [(p.end_s, 0, i) for i, p in enumerate(f.plan for f in self.faults)])
        for at_s, is_inject, index in events:
            fault, record = self.faults[index], self.records[index]
            if record.status == "unavailable":
                continue
            _pace_until(self._t0 + at_s)
            if is_inject:
                self._inject(fault, record)
            elif record.status == "injected":
                self._heal(fault, record)
        if any(r.status != "unavailable" for r in self.records):
            self._start_probe()
            self._start_restore_watch()
            self._membership_watch = watch_membership(self.scenario, self.records, self.cluster, self._datasets,
                                                      self.history.operations())

    def _inject(self, fault: Fault, record: FaultRecord) -> None:
        record.start_s = self.history.elapsed_s()
        fault.earlier_targets = {node_id for other in self.records for node_id in other.targets}
        try:
            record.targets = list(fault.inject())
            record.learning, record.learners, record.replicas = dict(fault.learning), dict(fault.learners), fault.replicas
            record.status = "injected"
        except Exception as exc:   # noqa: BLE001 - recorded; the faults check fails with it
            record.status, record.reason = "error", f"inject: {type(exc).__name__}: {exc}"
            logger.warning("fault %s not injected: %s", fault.name, exc)
        record.injected_s = self.history.elapsed_s()

    def _heal(self, fault: Fault, record: FaultRecord) -> None:
        if fault.plan.kind in ONE_SHOT_STATUS:   # never healed: its band on the timeline runs to the end
            fault.heal()
            record.status = ONE_SHOT_STATUS[fault.plan.kind]
            return
        try:
            fault.heal()
            record.status = "healed"
        except Exception as exc:   # noqa: BLE001
            record.status, record.reason = "error", f"heal: {type(exc).__name__}: {exc}"
            logger.warning("fault %s not healed: %s", fault.name, exc)
        record.end_s = self.history.elapsed_s()

    def heal_all(self) -> None:
        """Heal whatever is still injected (the run was interrupted)."""
        for fault, record in zip(self.faults, self.records):
            if record.status == "injected":
                self._heal(fault, record)

    def _start_restore_watch(self) -> None:
        """checks.replication_restored: watch the copies from the final heal, for up to T."""
        scenario = self.scenario
        if not scenario.checks.replication_restored:
            return
        written = written_bytes(scenario.workload, self.history.operations())
        budget_s = restore_budget_s(float(scenario.cluster.knobs["node_dead_after_s"]), written,
                                    scenario.cluster.replication,
                                    int(scenario.cluster.knobs.get("repair_bytes_per_s", 0)))
        datasets = self._datasets
        self._restore_watch = RestoreWatch(
            lambda: shard_copies(self.cluster.cluster_map(), self.cluster.statuses(), datasets), budget_s, written)
        self._restore_watch.start()

    def _learner_logs(self) -> dict[str, list[str]]:
        """checks.copy_resumed: the learner lines of each node a `learner` fault hit, and of each
        learner a `copy-source` fault's target was sending to (their whole logs)."""
        logs: dict[str, list[str]] = {}
        for record in self.records:
            for node_id in (set(record.learners.values()) or record.targets) if record.learning else ():
                path = self.cluster.node(node_id).log_path
                logs[node_id] = learner_log_lines(path.read_text(errors="replace")) if path.exists() else []
        return logs

    def _start_probe(self) -> None:
        def probe() -> None:
            self.probe = probe_liveness(self._probe_client, self.scenario.workload.dataset,
                                        self.scenario.cluster.shards, self.scenario.checks.live_within_s)
        self._probe_thread = threading.Thread(target=probe, name="chaos-probe", daemon=True)
        self._probe_thread.start()


def _cluster_layout(scenario: Scenario, lab: netlab.NetLab | None) -> dict[str, Any]:
    shape = scenario.cluster
    env = {f"SHOAL_{name.upper()}": (str(value).lower() if isinstance(value, bool) else str(value))
           for name, value in shape.knobs.items()}
    layout: dict[str, Any] = {"nodes": shape.nodes, "voters": shape.voters, "env": env}
    if lab is not None:
        layout["hosts"] = [lab.node_address(i) for i in range(1, shape.nodes + 1)]
        layout["base_port"] = NETNS_BASE_PORT
        layout["command_prefix"] = lambda index: lab.exec_prefix(lab.node_namespace(index + 1))
    return layout


def _start_cluster(cluster: Any, held_back: list[str]) -> None:
    """Start every node but the held-back ones (a `join` fault starts those) and wait until ready."""
    if not held_back:
        cluster.start(timeout_s=CLUSTER_START_TIMEOUT_S)
        return
    for node in cluster.nodes:
        if node.id not in held_back:
            cluster.start_node(node.id)
    cluster.wait_ready(CLUSTER_START_TIMEOUT_S)


def _record(fault: Fault, cluster: Any) -> FaultRecord:
    available, reason = fault.available(cluster)
    return FaultRecord(name=fault.name, kind=fault.plan.kind, planned_start_s=fault.plan.start_s,
                       planned_end_s=fault.plan.end_s, status="planned" if available else "unavailable",
                       reason=reason)


def _create_dataset(client: Any, scenario: Scenario, dataset: str) -> None:
    """Create a workload dataset, retrying retriable errors until SETUP_TIMEOUT_S.

    DatasetExistsError counts as done, on any attempt: after a retry it means an earlier
    attempt of ours created the dataset and its reply was lost.
    """
    from shoal.client import DatasetExistsError, ShoalError
    from shoal.client.wire.retry import RetryPolicy, retry

    def attempt() -> None:
        try:
            client.create_dataset(dataset, shards=scenario.cluster.shards, replication=scenario.cluster.replication)
        except DatasetExistsError:
            return

    retry(attempt, policy=RetryPolicy.fixed(SETUP_RETRY_PAUSE_S),
          deadline_s=time.monotonic() + SETUP_TIMEOUT_S,
          retry_on=lambda exc: isinstance(exc, ShoalError) and exc.retriable)


def _wait_converged(cluster: Any, datasets: list[str], within_s: float, *,
                    restored: bool = False) -> tuple[Any, dict[str, int | None], dict[str, Copies]]:
    """Poll every node's status until the in-sync replicas of every shard have equal checksums
    and every running node has applied the same metadata version (and, when `restored`, every
    shard is served `replication` times: restoration.short_of), or the bound; returns the
    checksum verdict, the versions (judgements.check_metadata_converged) and the copies."""
    from shoal.chaos.checkers import check_convergence
    from shoal.chaos.judgements import metadata_lag

    deadline_s = time.monotonic() + within_s
    while True:
        cluster_map, statuses = cluster.cluster_map(), cluster.statuses()
        checksums: dict[Hashable, Mapping[Hashable, tuple[int, Any]]] = {}
        for dataset in datasets:
            for shard, replicas in replica_checksums(cluster_map, statuses, dataset).items():
                checksums[shard if len(datasets) == 1 else f"{dataset}/{shard}"] = replicas
        result = check_convergence(checksums)
        versions = {node_id: (int(statuses[node_id].metadata_version) if node_id in statuses else None)
                    for node_id in cluster.running()}
        copies = shard_copies(cluster_map, statuses, datasets)
        settled = result.ok and not metadata_lag(versions) and not (restored and short_of(copies))
        if settled or time.monotonic() >= deadline_s:
            return result, versions, copies
        time.sleep(0.5)


def replica_checksums(cluster_map: Any, statuses: dict[str, Any],
                      dataset: str) -> dict[Hashable, Mapping[Hashable, tuple[int, Any]]]:
    """shard -> in-sync replica (from the map) -> (applied seq, checksum) from its own
    GetNodeStatus; a replica that does not answer counts as (-1, "no answer"), so it
    never passes as converged."""
    reported = {(node_id, shard.index): (int(shard.seq), int(shard.checksum))
                for node_id, status in statuses.items() for shard in status.shards if shard.dataset == dataset}
    result: dict[Hashable, Mapping[Hashable, tuple[int, Any]]] = {}
    for info in cluster_map.datasets:
        if info.name != dataset:
            continue
        for shard in info.shard_map:
            result[shard.index] = {node_id: reported.get((node_id, shard.index), (-1, "no answer"))
                                   for node_id in shard.replicas}
    if not result:
        result[-1] = {"map": (-1, f"dataset {dataset} not in the cluster map")}
    return result


def _pace_until(monotonic_s: float) -> None:
    """Schedule pacing (not a wait for a state): sleep until the planned moment."""
    delay_s = monotonic_s - time.monotonic()
    if delay_s > 0:
        time.sleep(delay_s)


def _rate_before(operations: list[Any], schedule: Schedule) -> float | None:
    window_s = schedule.first_fault_s
    if not operations:
        return 0.0
    if window_s is None:
        window_s = max(op.end_s for op in operations)
    done = sum(1 for op in operations if op.end_s <= window_s)
    return round(done / window_s, 1) if window_s > 0 else None


def _safe_logs(cluster: Any) -> str:
    try:
        return str(cluster.dump_logs(200))
    except Exception as exc:   # noqa: BLE001
        return f"(logs unavailable: {exc})"


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def _inner_main(argv: list[str]) -> int:
    """`python -m shoal.chaos.runner inner ...`: the run inside the client namespace."""
    parser = argparse.ArgumentParser(prog="shoal.chaos.runner inner")
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--netlab-prefix", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    scenario = replace(with_duration(load_scenario(args.scenario), args.duration), name=args.name)
    lab = netlab.NetLab.attach(args.netlab_prefix, scenario.cluster.nodes, clients=1)
    report = execute(scenario, args.seed, pathlib.Path(args.report), lab=lab, lab_reason="")
    return 0 if report.passed else 1


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("SHOAL_CHAOS_LOG", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if sys.argv[1:2] != ["inner"]:
        sys.exit("usage: python -m shoal.chaos.runner inner --scenario FILE --seed N --report DIR ...")
    sys.exit(_inner_main(sys.argv[2:]))
