"""History recorder: intervals, outcomes, pending ops, JSON round trip, throughput, threads."""
from __future__ import annotations

import json
import threading

import pytest

from shoal.chaos.history import History, Operation, operations_from_json


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now_s: float = 100.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def test_history_records_interval_relative_to_run_start() -> None:
    """Goal: start_s/end_s are seconds since the run start. Method: fake clock at 100 s."""
    clock = FakeClock(100.0)
    history = History(clock=clock)
    clock.now_s = 101.5
    token = history.invoke(3, "write", "k", 7)
    clock.now_s = 102.0
    operation = history.complete(token, "ok")
    assert operation == Operation(3, "write", "k", 7, None, "ok", 1.5, 2.0)
    assert history.operations() == [operation]


def test_history_reports_pending_operation_as_unknown() -> None:
    """Goal: an op never completed counts as unknown, ending when read. Method: invoke only."""
    clock = FakeClock(0.0)
    history = History(clock=clock)
    history.invoke(1, "cas", "k", [1, 2])
    clock.now_s = 4.0
    (operation,) = history.operations()
    assert (operation.outcome, operation.start_s, operation.end_s) == ("unknown", 0.0, 4.0)
    assert operation.input == (1, 2)
    assert history.outcome_counts() == {"ok": 0, "failed": 0, "unknown": 0, "pending": 1}


def test_history_complete_rejects_reuse_and_bad_outcome() -> None:
    """Goal: programmer errors are loud. Method: complete twice; complete with "timeout"."""
    history = History()
    token = history.invoke(1, "read", "k")
    with pytest.raises(ValueError, match="outcome"):
        history.complete(token, "timeout")
    history.complete(token, "ok", 3)
    with pytest.raises(ValueError, match="already completed"):
        history.complete(token, "ok", 3)


def test_history_outcome_counts_by_outcome() -> None:
    """Goal: counts per outcome for the report. Method: one op of each outcome + a pending one."""
    history = History()
    for outcome in ("ok", "ok", "failed", "unknown"):
        history.complete(history.invoke(1, "add", "s", "e"), outcome)
    history.invoke(2, "add", "s", "f")
    assert history.outcome_counts() == {"ok": 2, "failed": 1, "unknown": 1, "pending": 1}


def test_history_json_round_trip_keeps_every_field() -> None:
    """Goal: to_json/from_json are inverse, cas input stays a tuple, list values survive.
    Method: record reads/writes/cas with str, int, None and list values; compare."""
    clock = FakeClock(0.0)
    history = History(clock=clock)
    records = [(1, "write", "a", ["x", 1], None, "ok"), (2, "read", "a", None, ["x", 1], "ok"),
               (3, "cas", "b", (None, "v"), True, "unknown"), (4, "read", "b", None, None, "failed")]
    for process, kind, key, value, output, outcome in records:
        token = history.invoke(process, kind, key, value)
        clock.now_s += 0.25
        history.complete(token, outcome, output)
    text = history.to_json()
    assert json.loads(text.splitlines()[0]) == {"format": "shoal-history", "version": 1}
    assert History.from_json(text).operations() == history.operations()
    assert operations_from_json(text)[2].input == (None, "v")


def test_history_from_json_accepts_single_document() -> None:
    """Goal: a JSON list or {"operations": [...]} loads too. Method: dump both shapes."""
    record = {"process": 1, "kind": "read", "key": "k", "input": None, "output": 2,
              "outcome": "ok", "start_s": 0.5, "end_s": 0.75}
    expected = [Operation(1, "read", "k", None, 2, "ok", 0.5, 0.75)]
    assert operations_from_json(json.dumps([record])) == expected
    assert operations_from_json(json.dumps({"operations": [record]})) == expected
    assert operations_from_json("") == []


def test_operation_rejects_interval_ending_before_start() -> None:
    """Goal: corrupt records fail at load. Method: end_s < start_s, and a bad outcome."""
    with pytest.raises(ValueError, match="ends before"):
        Operation(1, "read", "k", None, None, "ok", 2.0, 1.0)
    with pytest.raises(ValueError, match="outcome"):
        Operation(1, "read", "k", None, None, "info", 1.0, 2.0)


def test_operation_describe_is_one_readable_line() -> None:
    """Goal: explanations are readable. Method: describe a cas and a read."""
    cas = Operation(3, "cas", "k1", (1, 2), True, "ok", 0.1, 0.25)
    assert cas.describe() == "p3 cas k1 (1, 2) -> True ok [0.100, 0.250]"
    read = Operation(4, "read", "k1", None, "v", "ok", 1.0, 2.0)
    assert read.describe() == "p4 read k1 -> 'v' ok [1.000, 2.000]"


def test_history_ops_per_second_includes_empty_windows() -> None:
    """Goal: the throughput timeline shows gaps (unavailability). Method: ops completing in
    windows 0 and 2 of 1 s; window 1 must be present with zero rates."""
    clock = FakeClock(0.0)
    history = History(clock=clock)
    for end_s, outcome in ((0.2, "ok"), (0.4, "ok"), (2.5, "failed"), (2.6, "unknown")):
        token = history.invoke(1, "write", "k", 1)
        clock.now_s = end_s
        history.complete(token, outcome)
    windows = history.ops_per_second(window_s=1.0)
    assert [w.start_s for w in windows] == [0.0, 1.0, 2.0]
    assert [(w.ok_per_s, w.failed_per_s, w.unknown_per_s) for w in windows] == [
        (2.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 1.0)]
    assert History().ops_per_second() == []


def test_history_records_from_many_threads() -> None:
    """Goal: the recorder is thread safe. Method: 8 threads x 500 invoke/complete pairs; every
    op recorded once, tokens unique."""
    history = History()
    tokens: list[int] = []
    tokens_lock = threading.Lock()

    def client(process: int) -> None:
        for index in range(500):
            token = history.invoke(process, "add", "s", f"{process}-{index}")
            with tokens_lock:
                tokens.append(token)
            history.complete(token, "ok")

    threads = [threading.Thread(target=client, args=(process,)) for process in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 4000
    operations = history.operations()
    assert len({operation.input for operation in operations}) == 4000
    assert history.outcome_counts()["ok"] == 4000
