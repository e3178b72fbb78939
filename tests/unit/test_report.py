"""The run report from synthetic histories, and the workloads' bookkeeping on a fake register.

The fake (an in-memory dict behind a lock, with scripted failures) is used only here, to
check what the workload records; runs against real nodes are in tests/integration.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from shoal.chaos.faults import FaultRecord
from shoal.chaos.history import History, Operation
from shoal.chaos.judgements import check_faults, check_linearizable, check_lost_writes, check_workload_valid
from shoal.chaos.report import REPORT_FILE, TIMELINE_FILE, CheckResult, RunReport, report_from_dict, write_report
from shoal.chaos.repro import write_repro
from shoal.chaos.scenario import WorkloadSpec
from shoal.chaos.timeline import throughput
from shoal.chaos.workloads import FinalState, RegisterWorkload, SetWorkload, classify_error, probe_keys
from shoal.client import ABSENT, NotPrimaryError, UnknownOutcomeError


def op(process: int, kind: str, key: str, input: Any, output: Any, outcome: str, start: float,
       end: float) -> Operation:
    return Operation(process, kind, key, input, output, outcome, start, end)


def synthetic_history(ops_count: int = 400) -> list[Operation]:
    """Writes then reads of k0 every 10 ms, a gap of unknowns between 2 and 3 s."""
    ops = []
    for i in range(ops_count):
        start = i * 0.01
        outcome = "unknown" if 2.0 <= start < 3.0 else "ok"
        if i % 2 == 0:
            ops.append(op(0, "write", "k0", i, None, outcome, start, start + 0.005))
        else:
            ops.append(op(0, "read", "k0", None, i - 1, "ok", start, start + 0.005))
    return ops


def test_report_json_contract(tmp_path) -> None:
    """report.json has verdict, seed, ops and one entry per check; the timeline PNG exists."""
    report = RunReport(scenario="demo", seed=42, started_at="2026-01-01T00:00:00+00:00",
                       ops_by_outcome={"ok": 10, "failed": 2, "unknown": 1}, workload_s=11.25, schedule_s=8.0,
                       ops_deadline_s=32.0, workload_stop="complete",
                       checks=[CheckResult("linearizable", True, "fine"), CheckResult("converged", True, "equal")],
                       faults=[FaultRecord("kill leader", "kill", 1.0, 3.0, status="healed", targets=["n2"],
                                           start_s=1.0, end_s=3.1).to_dict()])
    path = write_report(tmp_path, report, synthetic_history())
    data = json.loads(path.read_text())
    assert data["verdict"] == "pass" and data["seed"] == 42 and data["ops"] == 13
    assert (data["workload_s"], data["schedule_s"], data["ops_deadline_s"]) == (11.25, 8.0, 32.0)
    assert data["checks"]["linearizable"]["passed"] is True and set(data["checks"]) == {"linearizable", "converged"}
    assert (tmp_path / TIMELINE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report_from_dict(data).to_dict() == data


def test_report_fails_on_any_failed_check_or_error() -> None:
    """One failed check or a harness error makes the verdict fail, with the reason listed."""
    report = RunReport(scenario="demo", seed=1, started_at="",
                       checks=[CheckResult("a", True, "ok"), CheckResult("b", False, "lost 3 writes")])
    assert report.verdict == "fail" and report.reasons() == ["b: lost 3 writes"]
    assert RunReport(scenario="d", seed=1, started_at="", error="no cluster").verdict == "fail"
    assert RunReport(scenario="d", seed=1, started_at="").verdict == "fail"   # no checks: nothing proven


def test_report_throughput_windows() -> None:
    """Throughput per 0.5 s counts ops by end time and outcome."""
    series = throughput(synthetic_history(), 0.5)
    assert sum(series["ok"]) + sum(series["unknown"]) == 400
    assert series["unknown"][4] == 25 and series["ok"][4] == 25    # 2.0-2.5 s: writes unknown, reads ok


def test_report_workload_invalid_below_bounds() -> None:
    """Too few ops by the deadline, or too few ok ops before the first fault (a stuck
    workload), is an INVALID run naming the numbers. Both bounds are counts, not rates."""
    ops = synthetic_history(400)                  # 100 ops/s over 4 s, 200 ok before 2.0 s
    assert check_workload_valid(ops, 2.0, 300, 20).passed
    low_count = check_workload_valid(ops, 2.0, 2000, 20)
    assert not low_count.passed and "only 400 operations (need 2000)" in low_count.summary
    at_deadline = check_workload_valid(ops, 2.0, 2000, 20, workload_s=32.0, deadline_s=32.0)
    assert "only 400 operations in 32.0 s (need 2000 by ops_deadline_s = 32 s)" in at_deadline.summary
    stuck = check_workload_valid(ops, 2.0, 100, 250)
    assert not stuck.passed and "INVALID" in stuck.summary
    assert "only 200 ok operations before the first fault at 2.0 s (need 250)" in stuck.summary
    assert stuck.details["ok_ops_before_first_fault"] == 200


def test_report_workload_valid_slow_but_enough() -> None:
    """Issue 16.6: a slow machine (40 ops/s) whose workload ran on past its schedule until it
    had ops_min operations passes: a correctness check must not depend on spare CPU."""
    ops = [op(0, "read", "k0", None, None, "ok", i * 0.025, i * 0.025 + 0.02) for i in range(2_000)]
    result = check_workload_valid(ops, 2.5, 2000, 20, workload_s=50.0, deadline_s=64.0)
    assert result.passed and result.summary == "2000 operations in 50.0 s, 100 ok before the first fault"


def test_report_unavailable_fault_fails_faults_check() -> None:
    """An unavailable fault is named in the verdict, never silently skipped."""
    records = [FaultRecord("partition leader", "partition", 2, 5, status="unavailable",
                           reason="network namespaces and nftables need root").to_dict()]
    result = check_faults(records)
    assert not result.passed and "partition leader: unavailable (network namespaces" in result.summary


def test_report_linearizability_detects_stale_read() -> None:
    """A read of an overwritten value after the overwrite was acknowledged fails the check."""
    good = [op(0, "write", "k", 1, None, "ok", 0, 1), op(1, "read", "k", None, 1, "ok", 2, 3)]
    assert check_linearizable(good, 5).passed
    bad = good + [op(0, "write", "k", 2, None, "ok", 4, 5), op(1, "read", "k", None, 1, "ok", 6, 7)]
    result = check_linearizable(bad, 5)
    assert not result.passed and result.summary.startswith("NOT linearizable")


def test_report_register_lost_write() -> None:
    """A register that is absent after an acknowledged write, or holds a value no write wrote, fails."""
    spec = WorkloadSpec(kind="register")
    ops = [op(0, "write", "r0", 7, None, "ok", 0, 1), op(0, "write", "r1", 8, None, "failed", 0, 1)]
    assert check_lost_writes(spec, ops, FinalState(values={"r0": 7, "r1": None})).passed
    lost = check_lost_writes(spec, ops, FinalState(values={"r0": None, "r1": None}))
    assert not lost.passed and "r0: absent after acknowledged writes" in lost.summary
    ghost = check_lost_writes(spec, ops, FinalState(values={"r0": 7, "r1": 8}))
    assert not ghost.passed and "r1: holds 8" in ghost.summary
    incomplete = check_lost_writes(spec, ops, FinalState(complete=False, detail="final read of r3 timed out"))
    assert not incomplete.passed and "r3" in incomplete.summary


def test_report_bulk_incomplete_batch() -> None:
    """Every record of an acknowledged batch must be found."""
    spec = WorkloadSpec(kind="bulk", batch_records=3)
    ops = [op(0, "add_batch", "chaos", 1, 3, "ok", 0, 1), op(1, "add_batch", "chaos", 2, None, "unknown", 0, 1)]
    keys = {"b1-0", "b1-1", "b1-2", "b2-0"}
    assert check_lost_writes(spec, ops, FinalState(elements=keys)).passed
    result = check_lost_writes(spec, ops, FinalState(elements=keys - {"b1-1"} | {"b9-0"}))
    assert not result.passed and "1 acknowledged batches incomplete" in result.summary
    assert "keys from batches never sent" in result.summary


def test_report_repro_folder(tmp_path) -> None:
    """On failure the repro folder has seed, scenario, history, node logs and the data dirs."""
    work = tmp_path / "work"
    (work / "cluster" / "n1").mkdir(parents=True)
    (work / "cluster" / "n1" / "node.log").write_text("n1 says hello\n")
    (tmp_path / "history.jsonl").write_text("{}\n")
    repro = write_repro(tmp_path, "duration_s = 5\n", "demo", 77, work, "tails")
    assert (repro / "seed").read_text() == "77\n"
    assert (repro / "scenario.toml").read_text() == "duration_s = 5\n"
    assert (repro / "history.jsonl").exists() and (repro / "logs" / "n1.log").read_text() == "n1 says hello\n"
    assert (repro / "data" / "cluster" / "n1").is_dir() and not work.exists()
    assert "--seed 77" in (repro / "README").read_text()


# ---- workload bookkeeping against a fake register (unit tests only) ----
class FakeRegisterClient:
    """A dict behind a lock; `fail_every` turns every n-th write into the given error."""

    def __init__(self, store: dict[str, Any], lock: threading.Lock, error: Exception | None = None,
                 fail_every: int = 0) -> None:
        self.store, self.lock, self.error, self.fail_every = store, lock, error, fail_every
        self.writes = 0

    def _maybe_fail(self) -> None:
        self.writes += 1
        if self.error is not None and self.fail_every and self.writes % self.fail_every == 0:
            raise self.error

    def get(self, dataset: str, key: str) -> Any:
        with self.lock:
            return self.store.get(key)

    def put(self, dataset: str, key: str, value: Any) -> None:
        self._maybe_fail()
        with self.lock:
            self.store[key] = value

    def compare_and_set(self, dataset: str, key: str, expected: Any, new: Any) -> bool:
        self._maybe_fail()
        with self.lock:
            current = self.store.get(key, ABSENT)
            if current != expected:
                return False
            self.store[key] = new
            return True

    def put_many(self, dataset: str, records: Any) -> int:
        raise NotImplementedError

    def scan(self, dataset: str) -> Any:
        with self.lock:
            return list(self.store.items())


def run_workload(workload_class: type, error: Exception | None, until_ops: int) -> tuple[Any, History]:
    store: dict[str, Any] = {}
    lock = threading.Lock()
    history = History()
    workload = workload_class(WorkloadSpec(kind=workload_class.kind, clients=3, keys=4), history,
                              lambda _timeout_s: FakeRegisterClient(store, lock, error, fail_every=7), seed=11)
    workload.start()
    deadline = time.monotonic() + 20
    while len(history.operations()) < until_ops:
        assert time.monotonic() < deadline, "the workload made no progress"
        time.sleep(0.01)
    workload.stop()
    return workload, history


def test_workload_register_records_linearizable_history() -> None:
    """Against a correct register every op is recorded ok, values are unique, and it checks linearizable."""
    workload, history = run_workload(RegisterWorkload, None, 600)
    ops = history.operations()
    writes = [o.input for o in ops if o.kind == "write"] + [o.input[1] for o in ops if o.kind == "cas"]
    assert len(writes) == len(set(writes)) and 0 not in writes
    assert {o.outcome for o in ops} == {"ok"} and {o.kind for o in ops} == {"read", "write", "cas"}
    assert any(o.kind == "cas" and o.output is True for o in ops)
    final = workload.final(FakeRegisterClient({}, threading.Lock()), time.monotonic() + 5)
    assert final.complete and check_linearizable(ops, 10).passed


def test_workload_unknown_outcome_moves_process() -> None:
    """An UnknownOutcomeError is recorded unknown and the thread goes on as a new process."""
    _, history = run_workload(RegisterWorkload, UnknownOutcomeError("put failed: maybe"), 600)
    ops = history.operations()
    unknown = [o for o in ops if o.outcome == "unknown"]
    assert unknown and all(o.kind in ("write", "cas") for o in unknown)
    for o in unknown:   # no later op of the same process: an open op stays open
        assert not [later for later in ops if later.process == o.process and later.start_s > o.start_s]
    assert check_linearizable(ops, 10).passed


def test_workload_definite_rejection_is_failed() -> None:
    """NOT_PRIMARY means the write was not applied: failed, and the process continues."""
    _, history = run_workload(RegisterWorkload, NotPrimaryError("not the primary"), 300)
    failed = [o for o in history.operations() if o.outcome == "failed"]
    assert failed and {o.process for o in failed} <= {0, 1, 2}
    assert classify_error(NotPrimaryError("x"), write=False) == "failed"
    assert classify_error(RuntimeError("bug"), write=True) == "unknown"


def test_workload_set_final_read() -> None:
    """Set adds are unique keys; the final scan finds exactly the applied ones."""
    workload, history = run_workload(SetWorkload, None, 200)
    client = workload._clients[0]
    with client.lock:
        client.store["probe-0-0"] = 1
    final = workload.final(client, time.monotonic() + 5)
    added = {o.input for o in history.operations() if o.kind == "add" and o.outcome == "ok"}
    assert final.complete and final.elements == added


@pytest.mark.parametrize("shards", [1, 4, 16])
def test_workload_probe_keys_cover_every_shard(shards: int) -> None:
    """The liveness probe has one key per shard."""
    from shoal.client.wire.routing import encode_key, shard_for_key

    keys = probe_keys(shards)
    assert [shard_for_key(encode_key(k), shards) for k in keys] == list(range(shards))


class DownClient(FakeRegisterClient):
    """Every call fails as a stopped cluster would."""

    def put(self, dataset: str, key: str, value: Any) -> None:
        raise NotPrimaryError("no primary")


def test_workload_probe_liveness_pass_and_fail() -> None:
    """The probe passes when every shard writes and reads back; otherwise it fails after the bound, saying why."""
    from shoal.chaos.workloads import probe_liveness

    good = probe_liveness(FakeRegisterClient({}, threading.Lock()), "chaos", 4, within_s=5)
    assert good.passed and good.elapsed_s < 5
    started = time.monotonic()
    bad = probe_liveness(DownClient({}, threading.Lock()), "chaos", 4, within_s=0.3)
    assert not bad.passed and 0.3 <= time.monotonic() - started < 5
    assert "NotPrimaryError: no primary" in bad.detail and bad.detail.count("probe-") == 4


def test_report_set_lost_and_ghost_adds() -> None:
    """Set: an acknowledged add missing, or a definitely failed add present, fails the check."""
    spec = WorkloadSpec(kind="set")
    ops = [op(0, "add", "chaos", 1, None, "ok", 0, 1), op(1, "add", "chaos", 2, None, "unknown", 0, 1),
           op(2, "add", "chaos", 3, None, "failed", 0, 1)]
    assert check_lost_writes(spec, ops, FinalState(elements={1, 2})).passed
    assert check_lost_writes(spec, ops, FinalState(elements={1})).passed        # unknown may be absent
    lost = check_lost_writes(spec, ops, FinalState(elements={2}))
    assert not lost.passed and lost.details["lost"] == ["1"]
    ghost = check_lost_writes(spec, ops, FinalState(elements={1, 3}))
    assert not ghost.passed and ghost.details["failed_but_present"] == ["3"]


def test_report_convergence_from_node_statuses() -> None:
    """In-sync replicas (from the map) compared by their own checksums; a silent replica never passes."""
    from shoal.chaos.checkers import check_convergence
    from shoal.chaos.judgements import check_converged
    from shoal.chaos.runner import replica_checksums
    from shoal.client.wire.pb import data_pb2 as pb

    cluster_map = pb.ClusterMap(datasets=[pb.DatasetInfo(name="chaos", shards=2, shard_map=[
        pb.ShardInfo(index=0, primary="n1", replicas=["n1", "n2"]),
        pb.ShardInfo(index=1, primary="n2", replicas=["n2", "n3"])])])

    def status(node: str, *shards: tuple[int, int, int]) -> pb.NodeStatus:
        return pb.NodeStatus(id=node, shards=[pb.ShardStatus(dataset="chaos", index=i, seq=seq, checksum=checksum)
                                              for i, seq, checksum in shards])

    statuses = {"n1": status("n1", (0, 5, 11)), "n2": status("n2", (0, 5, 11), (1, 7, 22)),
                "n3": status("n3", (1, 7, 22), (0, 1, 99))}     # n3's stale copy of shard 0 is not in sync
    assert check_converged(check_convergence(replica_checksums(cluster_map, statuses, "chaos")), 30).passed
    statuses["n3"] = status("n3", (1, 7, 23))
    diverged = check_converged(check_convergence(replica_checksums(cluster_map, statuses, "chaos")), 30)
    assert not diverged.passed and "shard 1" in diverged.summary
    del statuses["n3"]
    silent = check_converged(check_convergence(replica_checksums(cluster_map, statuses, "chaos")), 30)
    assert not silent.passed and "no answer" in silent.summary


def test_workload_register_shard_groups() -> None:
    """With 8 clients on 4 shards each pair of threads owns one shard's keys, so a dead shard stalls
    only its own pair; keys are spread evenly over the shards."""
    from shoal.chaos.workloads import shard_of

    workload = RegisterWorkload(WorkloadSpec(kind="register", clients=8, keys=8), History(),
                                lambda _timeout_s: FakeRegisterClient({}, threading.Lock()), seed=1, shards=4)
    assert sorted(shard_of(key, 4) for key in workload.keys) == [0, 0, 1, 1, 2, 2, 3, 3]
    for thread in range(8):
        shards = {shard_of(key, 4) for key in workload._home_keys[thread]}
        assert shards == {thread % 4} and len(workload._home_keys[thread]) == 2


def key_ops(key: str, start_s: float, end_s: float, outcome: str = "ok", every_s: float = 0.05,
            length_s: float = 0.01) -> list[Operation]:
    """Reads of `key` invoked every `every_s` in [start_s, end_s), each lasting `length_s`."""
    count = round((end_s - start_s) / every_s)
    return [Operation(0, "read", key, None, None, outcome, start_s + i * every_s, start_s + i * every_s + length_s)
            for i in range(count)]


PAUSE = {"name": "pause primary", "kind": "pause", "status": "healed", "targets": ["n2"], "start_s": 2.9,
         "injected_s": 3.0, "end_s": 16.0}


def test_check_recovered_fails_when_one_key_stalls_while_others_progress() -> None:
    """Issue 15.3: r1 fails for 13 s after the injection (1 s timeouts) while r0, r2 and r3
    stay served: any-key progress used to pass this; per key it fails, naming r1 and its stall.
    r1's ok reads between the start of the injection (target lookup) and the moment it was in
    force (injected_s) do not count as recovered."""
    from shoal.chaos.judgements import check_recovered

    ops = [op for key in ("r0", "r2", "r3") for op in key_ops(key, 0.0, 20.0)]
    ops += key_ops("r1", 0.0, 3.0) + key_ops("r1", 3.0, 16.0, "failed", every_s=1.0, length_s=1.0)
    ops += key_ops("r1", 16.5, 20.0)
    result = check_recovered([PAUSE], ops, 7.0, nodes=3)
    assert not result.passed
    assert result.summary == ("pause primary: key r1 stalled 13.0 s after the injection at 3.0 s "
                              "(ok again at 16.5 s; 1 of 4 keys over 7 s)")
    assert result.details["worst"] == {"unit": "key r1", "stall_s": 13.0, "fault": "pause primary"}


def test_check_recovered_passes_when_every_key_recovers() -> None:
    """Every key of the paused primary fails for 4 s and then succeeds: a pass within 7 s. A key
    not tried during the fault (the workload picks keys at random) is not counted as stalled."""
    from shoal.chaos.judgements import check_recovered

    ops = [op for key in ("r0", "r1") for op in key_ops(key, 0.0, 3.0) + key_ops(key, 7.0, 20.0)]
    ops += [op for key in ("r0", "r1") for op in key_ops(key, 3.0, 7.0, "unknown", every_s=1.0, length_s=1.0)]
    ops += key_ops("r2", 0.0, 3.0) + key_ops("r2", 12.0, 20.0)      # not tried from 3 to 12 s
    result = check_recovered([PAUSE], ops, 7.0, nodes=3)
    assert result.passed and result.details["judged"] == 1
    assert result.summary == ("1 faults judged per key: every key had an ok operation within 7 s; "
                              "worst: key r0 4.0 s (pause primary)")


def test_check_recovered_skips_majority_faults_and_judges_set_shards() -> None:
    """A fault that takes a majority down (with the faults overlapping it) is not judged; the
    set workload is judged per shard of the added element."""
    from shoal.chaos.judgements import check_recovered, recovery_unit
    from shoal.chaos.workloads import key_on_shard

    stuck = key_ops("r1", 3.0, 16.0, "failed", every_s=1.0, length_s=1.0)
    second = dict(PAUSE, name="kill follower", kind="kill", targets=["n3"], start_s=5.0, injected_s=5.1, end_s=8.0)
    majority = check_recovered([PAUSE, second], stuck, 7.0, nodes=3)
    assert majority.passed and majority.details["judged"] == 0
    assert majority.details["not_judged"] == ["pause primary: 2 of 3 nodes down", "kill follower: 2 of 3 nodes down"]

    def adds(shard: int, start_s: float, end_s: float, outcome: str = "ok") -> list[Operation]:
        element = int(key_on_shard("e", shard, 4)[1:])
        return [Operation(0, "add", "chaos", element, None, outcome, o.start_s, o.end_s)
                for o in key_ops("", start_s, end_s, every_s=1.0, length_s=1.0)]

    ops = adds(0, 0.0, 20.0) + adds(2, 0.0, 3.0) + adds(2, 3.0, 14.0, "unknown") + adds(2, 14.0, 20.0)
    result = check_recovered([PAUSE], ops, 7.0, nodes=3, unit_of=recovery_unit("set", 4))
    assert not result.passed and result.summary.startswith("pause primary: shard 2 stalled 11.0 s")
