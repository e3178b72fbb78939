"""WGL register checker: hand-made legal and illegal histories, limits, and properties
(sequential executions are always ok; corrupted ones are illegal; verdicts equal a brute
force over all orders, with and without the reductions for unknown ops)."""
from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.chaos.checkers import check_register
from shoal.chaos.history import Operation, operations_from_json, operations_to_json


def write(process: int, value: Any, start_s: float, end_s: float, outcome: str = "ok",
          key: str = "k") -> Operation:
    return Operation(process, "write", key, value, None, outcome, start_s, end_s)


def read(process: int, value: Any, start_s: float, end_s: float, outcome: str = "ok",
         key: str = "k") -> Operation:
    return Operation(process, "read", key, None, value, outcome, start_s, end_s)


def cas(process: int, expected: Any, new: Any, swapped: bool | None, start_s: float,
        end_s: float, outcome: str = "ok", key: str = "k") -> Operation:
    return Operation(process, "cas", key, (expected, new), swapped, outcome, start_s, end_s)


def verdict(operations: list[Operation]) -> str:
    """The verdict, asserted equal with and without the reductions for unknown ops."""
    reduced = check_register(operations, timeout_s=10.0).verdict
    assert check_register(operations, timeout_s=10.0, reduce_unknown=False).verdict == reduced
    return reduced


# ---------------------------------------------------------------- legal histories


def test_check_register_accepts_concurrent_writes_with_overlapping_reads() -> None:
    """Goal: reads overlapping two concurrent writes may see either order. Method: w1 and w2
    overlap; one read sees 2 then a later one sees 1 while both writes still run."""
    history = [write(1, 1, 0.0, 10.0), write(2, 2, 0.0, 10.0), read(3, None, 0.0, 0.5),
               read(3, 2, 1.0, 2.0), read(4, 1, 3.0, 4.0), read(3, 1, 11.0, 12.0)]
    assert verdict(history) == "ok"


def test_check_register_accepts_cas_chain() -> None:
    """Goal: a chain of cas with successes and honest failures is legal. Method: counter-like
    cas 0->1->2->3 with a concurrent loser that correctly reports False."""
    history = [write(1, 0, 0.0, 1.0), cas(1, 0, 1, True, 2.0, 3.0), cas(2, 1, 2, True, 4.0, 6.0),
               cas(3, 1, 2, False, 5.0, 7.0), cas(1, 2, 3, True, 8.0, 9.0), read(2, 3, 10.0, 11.0)]
    assert verdict(history) == "ok"


def test_check_register_accepts_unknown_write_that_took_effect() -> None:
    """Goal: an unknown write may have happened. Method: the write times out, a later read
    returns its value."""
    history = [write(1, 1, 0.0, 1.0), write(2, 2, 2.0, 3.0, outcome="unknown"),
               read(3, 2, 4.0, 5.0)]
    assert verdict(history) == "ok"


def test_check_register_accepts_unknown_write_that_never_took_effect() -> None:
    """Goal: an unknown write may never happen. Method: reads after it keep seeing the old
    value until the end."""
    history = [write(1, 1, 0.0, 1.0), write(2, 2, 2.0, 3.0, outcome="unknown"),
               read(3, 1, 4.0, 5.0), read(3, 1, 6.0, 7.0)]
    assert verdict(history) == "ok"


def test_check_register_accepts_unknown_write_taking_effect_after_client_gave_up() -> None:
    """Goal: an unknown op can take effect long after end_s (the client's give-up time).
    Method: reads see the old value, then the unknown write's value much later."""
    history = [write(1, 1, 0.0, 1.0), write(2, 2, 2.0, 3.0, outcome="unknown"),
               read(3, 1, 4.0, 5.0), read(3, 1, 6.0, 7.0), read(4, 2, 20.0, 21.0)]
    assert verdict(history) == "ok"


def test_check_register_accepts_unknown_cas_either_way() -> None:
    """Goal: an unknown cas may have swapped or not. Method: two keys, same shape, one read
    sees the swap and the other does not."""
    history = [write(1, 1, 0.0, 1.0, key="a"), cas(2, 1, 5, None, 2.0, 3.0, "unknown", key="a"),
               read(3, 5, 4.0, 5.0, key="a"),
               write(1, 1, 0.0, 1.0, key="b"), cas(2, 1, 5, None, 2.0, 3.0, "unknown", key="b"),
               read(3, 1, 4.0, 5.0, key="b")]
    assert verdict(history) == "ok"


def test_check_register_drops_failed_operations() -> None:
    """Goal: a failed op did not happen. Method: a failed write whose value nobody reads is
    fine; a read of the value only a failed write wrote is illegal."""
    failed_unseen = [write(1, 1, 0.0, 1.0), write(2, 9, 2.0, 3.0, outcome="failed"),
                     read(3, 1, 4.0, 5.0)]
    assert verdict(failed_unseen) == "ok"
    failed_seen = [write(1, 1, 0.0, 1.0), write(2, 9, 2.0, 3.0, outcome="failed"),
                   read(3, 9, 4.0, 5.0)]
    assert verdict(failed_seen) == "illegal"


def test_check_register_accepts_empty_and_read_only_histories() -> None:
    """Goal: trivial histories are ok. Method: no ops; reads of None (absent key)."""
    assert check_register([], timeout_s=1.0).verdict == "ok"
    assert verdict([read(1, None, 0.0, 1.0), read(2, None, 0.5, 2.0)]) == "ok"


# ---------------------------------------------------------------- illegal histories


def test_check_register_rejects_stale_read() -> None:
    """Goal: a read after a completed newer write must not return the older value. Method:
    w(1), w(2) complete, then a read returns 1; the explanation names that read."""
    stale = read(3, 1, 4.0, 5.0)
    result = check_register([write(1, 1, 0.0, 1.0), write(2, 2, 2.0, 3.0), stale], 10.0)
    assert result.verdict == "illegal" and not result.ok
    explanation = result.per_key["k"].explanation
    assert f"cannot place: {stale.describe()}" in explanation
    assert "leaves the value 2" in explanation


def test_check_register_rejects_lost_write() -> None:
    """Goal: an acknowledged write must be visible. Method: w(1); w(2) ok; a later read
    without overlap returns 1 (the previous value)."""
    history = [write(1, 1, 0.0, 1.0), read(2, 1, 1.5, 2.0), write(1, 2, 3.0, 4.0),
               read(2, 1, 5.0, 6.0)]
    assert verdict(history) == "illegal"


def test_check_register_rejects_double_applied_cas() -> None:
    """Goal: a retried cas must not apply twice. Method: counter-like chain where cas(1->2)
    takes effect, another client's cas(2->3) succeeds, then the register is 2 again, as if
    the first cas re-applied on a retry (and a second success is reported)."""
    history = [write(1, 1, 0.0, 1.0), cas(1, 1, 2, True, 2.0, 3.0), cas(2, 2, 3, True, 4.0, 5.0),
               cas(1, 1, 2, True, 6.0, 7.0), read(3, 2, 8.0, 9.0)]
    assert verdict(history) == "illegal"
    effect_seen_twice = [write(1, 1, 0.0, 1.0), cas(1, 1, 2, True, 2.0, 3.0),
                         cas(2, 2, 3, True, 4.0, 5.0), read(3, 2, 6.0, 7.0)]
    assert verdict(effect_seen_twice) == "illegal"


def test_check_register_rejects_read_of_never_written_value() -> None:
    """Goal: garbage reads are caught. Method: only 1 and 2 are written; a read returns 7."""
    history = [write(1, 1, 0.0, 1.0), write(2, 2, 0.5, 3.0), read(3, 7, 1.0, 4.0)]
    assert verdict(history) == "illegal"


def test_check_register_rejects_cas_lying_about_failure() -> None:
    """Goal: a cas that reports False although the value matched is caught. Method: w(1),
    then cas(1->2) says False with nothing concurrent."""
    history = [write(1, 1, 0.0, 1.0), cas(2, 1, 2, False, 2.0, 3.0)]
    assert verdict(history) == "illegal"


def test_check_register_checks_keys_independently() -> None:
    """Goal: per-key verdicts; one bad key makes the whole illegal. Method: key a is fine,
    key b has a stale read."""
    history = [write(1, 1, 0.0, 1.0, key="a"), read(2, 1, 2.0, 3.0, key="a"),
               write(1, 1, 0.0, 1.0, key="b"), write(1, 2, 2.0, 3.0, key="b"),
               read(2, 1, 4.0, 5.0, key="b")]
    result = check_register(history, timeout_s=10.0)
    assert result.verdict == "illegal"
    assert {key: kv.verdict for key, kv in result.per_key.items()} == {"a": "ok", "b": "illegal"}
    assert result.per_key["a"].explanation == ""
    assert "key 'b': illegal" in result.summary()
    assert json.loads(json.dumps(result.to_dict()))["per_key"]["b"]["verdict"] == "illegal"


# ---------------------------------------------------------------- limits and input errors


def test_check_register_reports_timeout_on_pathological_history() -> None:
    """Goal: a search that cannot finish in the budget says "timeout" (a failure for callers).
    Method: 24 fully concurrent writes of distinct values and a concurrent read of a value
    nobody wrote: proving it illegal means trying every subset of the writes."""
    history = [write(i, i, 0.0, 10.0) for i in range(24)] + [read(99, -1, 0.0, 10.0)]
    result = check_register(history, timeout_s=0.3)
    assert result.verdict == "timeout" and not result.ok
    assert result.elapsed_s < 5.0
    assert "time budget" in result.per_key["k"].explanation


def test_check_register_reports_timeout_when_memo_cap_is_reached() -> None:
    """Goal: memory is bounded too. Method: a tiny cache_bytes_max on a concurrent history."""
    history = [write(i, i, 0.0, 10.0) for i in range(6)] + [read(99, 3, 0.0, 10.0)]
    result = check_register(history, timeout_s=10.0, cache_bytes_max=1)
    assert result.verdict == "timeout"
    assert "memo cap" in result.per_key["k"].explanation


def test_check_register_rejects_malformed_operations() -> None:
    """Goal: wrong input is a ValueError, not a wrong verdict. Method: an add op; an ok cas
    whose output is not a bool."""
    with pytest.raises(ValueError, match="not a register operation"):
        check_register([Operation(1, "add", "k", "e", None, "ok", 0.0, 1.0)], 1.0)
    with pytest.raises(ValueError, match="must output a bool"):
        check_register([cas(1, None, 1, None, 0.0, 1.0)], 1.0)


def test_check_register_compares_json_values_exactly() -> None:
    """Goal: list values survive JSON (list vs tuple) and True is not 1. Method: round trip a
    history with list values through JSON; a read of True after write(1) is illegal."""
    history = [write(1, ["a", 1], 0.0, 1.0), cas(2, ["a", 1], ["b"], True, 2.0, 3.0),
               read(3, ["b"], 4.0, 5.0)]
    assert verdict(operations_from_json(operations_to_json(history))) == "ok"
    assert verdict([write(1, 1, 0.0, 1.0), read(2, True, 2.0, 3.0)]) == "illegal"


def test_check_register_handles_long_histories() -> None:
    """Goal: thousands of ops per key, no recursion limit, within a second or so. Method: a
    seeded sequential execution, 5 keys x 1,000 ops, 4 clients overlapping, 1 % unknown."""
    history = _simulated(random.Random(7), operations_count=5000, keys=5, unknown_ratio=0.01)
    result = check_register(history, timeout_s=30.0)
    assert result.verdict == "ok"
    assert result.elapsed_s < 5.0


# ---------------------------------------------------------------- properties


def _simulated(rng: random.Random, operations_count: int, keys: int,
               unknown_ratio: float) -> list[Operation]:
    """Ops from 4 clients, each op taking effect at one instant inside its interval (unknown
    ones maybe after it, or never), outputs from a real register: linearizable."""
    clock_s = [0.0] * 4
    planned = []
    for index in range(operations_count):
        process = rng.randrange(4)
        start_s = clock_s[process] + rng.random() * 0.01
        end_s = start_s + rng.random() * 0.05
        clock_s[process] = end_s
        unknown = rng.random() < unknown_ratio
        effect_s = start_s + rng.random() * (end_s - start_s) * (5 if unknown else 1)
        happens = not unknown or rng.random() < 0.5
        kind = rng.choice(["read", "write", "cas"])
        argument = (rng.randrange(4), index) if kind == "cas" else index
        planned.append((effect_s if happens else math.inf, process, kind, f"k{rng.randrange(keys)}",
                        argument, start_s, end_s, unknown))
    state: dict[str, Any] = {}
    operations = []
    for effect_s, process, kind, key, argument, start_s, end_s, unknown in sorted(planned):
        output: Any = None
        if effect_s < math.inf:
            output, state[key] = _register_step(state.get(key), kind, argument)
        if unknown:
            operations.append(Operation(process, kind, key, argument, None, "unknown",
                                        start_s, end_s))
        elif kind != "read" or effect_s < math.inf:
            operations.append(Operation(process, kind, key, argument, output, "ok",
                                        start_s, end_s))
    return operations


def _register_step(value: Any, kind: str, argument: Any) -> tuple[Any, Any]:
    """(output, new value) of a sequential register."""
    if kind == "read":
        return value, value
    if kind == "write":
        return None, argument
    expected, new = argument
    return (True, new) if value == expected else (False, value)


_VALUES = st.sampled_from([None, 0, 1, 2])


@st.composite
def sequential_executions(draw: st.DrawFn) -> list[Operation]:
    """Random ops executed one after another on real registers at instants 0, 1, 2, ...,
    each recorded with an interval around its instant (intervals overlap freely); unknown
    ops may take effect after the client gave up, or never; failed ops never do."""
    state: dict[str, Any] = {}
    operations = []
    for index in range(draw(st.integers(1, 30))):
        key = draw(st.sampled_from(["a", "b"]))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        argument = None if kind == "read" else draw(_VALUES) if kind == "write" else (
            draw(_VALUES), draw(_VALUES))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "unknown", "failed"]))
        happens = outcome == "ok" or (outcome == "unknown" and draw(st.booleans()))
        output: Any = None
        if happens:
            output, state[key] = _register_step(state.get(key), kind, argument)
        start_s = index - draw(st.integers(0, 30)) / 10
        end_s = index + draw(st.integers(0, 30)) / 10
        if outcome == "unknown":
            end_s = start_s + draw(st.integers(0, 30)) / 10   # gave up, maybe before it happened
        operations.append(Operation(index % 5, kind, key, argument,
                                    output if outcome == "ok" else None, outcome, start_s, end_s))
    return operations


@settings(max_examples=150, deadline=None)
@given(sequential_executions())
def test_check_register_accepts_every_sequential_execution(history: list[Operation]) -> None:
    """Goal: no false alarms. Method: histories produced by real sequential registers (with
    overlapping intervals, unknown and failed ops) are always ok, reduced or not."""
    assert verdict(history) == "ok"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["read", "write", "cas"]), _VALUES, _VALUES),
                min_size=1, max_size=25), st.data())
def test_check_register_rejects_corrupted_sequential_execution(
        steps: list[tuple[str, Any, Any]], data: st.DataObject) -> None:
    """Goal: no missed bugs. Method: a sequential execution with disjoint intervals (so the
    order is forced) and every op ok; change the output of one read or cas: illegal."""
    value: Any = None
    history = []
    for index, (kind, first, second) in enumerate(steps):
        argument = first if kind == "write" else (first, second) if kind == "cas" else None
        output, value = _register_step(value, kind, argument)
        history.append(Operation(1, kind, "k", argument, output, "ok", index, index + 0.5))
    observing = [i for i, operation in enumerate(history) if operation.kind != "write"]
    if not observing:
        history.append(Operation(1, "read", "k", None, value, "ok", len(steps), len(steps) + 0.5))
        observing = [len(history) - 1]
    position = data.draw(st.sampled_from(observing))
    original = history[position]
    wrong = (not original.output if original.kind == "cas"
             else data.draw(_VALUES.filter(lambda v: v != original.output)))
    history[position] = Operation(1, original.kind, "k", original.input, wrong, "ok",
                                  original.start_s, original.end_s)
    assert verdict(history) == "illegal"


def _brute_force_ok(history: list[Operation]) -> bool:
    """Linearizable iff some order of the ok ops plus any subset of the unknown writes/cas
    respects real time (unknown ones never end) and the register model."""
    kept = [op for op in history if op.outcome == "ok" or (op.outcome == "unknown"
                                                         and op.kind != "read")]
    required = [op for op in kept if op.outcome == "ok"]
    optional = [op for op in kept if op.outcome == "unknown"]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(required + list(chosen)):
                if _order_legal(order):
                    return True
    return False


def _order_legal(order: tuple[Operation, ...]) -> bool:
    for position, operation in enumerate(order):
        if any(later.outcome == "ok" and later.end_s < operation.start_s
               for later in order[position + 1:]):
            return False
    value: Any = None
    for operation in order:
        output, value = _register_step(value, operation.kind, operation.input)
        if operation.outcome == "ok" and operation.kind != "write" and output != operation.output:
            return False
        if operation.outcome == "ok" and operation.kind == "cas" and output is not operation.output:
            return False
    return True


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    """Up to 6 ops with arbitrary outputs and outcomes on one key: mostly nonsense, often
    borderline. Half of them write unique values (a cas expects an earlier one), the shape
    the pruning and bounding of unknown ops apply to."""
    unique = draw(st.booleans())
    written: list[Any] = [None]
    operations = []
    for index in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        outcome = draw(st.sampled_from(["ok", "ok", "unknown", "failed"]))
        values = st.sampled_from(written) if unique else _VALUES
        new = f"v{index}" if unique else draw(_VALUES)
        argument = None if kind == "read" else new if kind == "write" else (draw(values), new)
        output = (draw(values) if kind == "read" else draw(st.booleans()) if kind == "cas"
                  else None) if outcome == "ok" else None
        written.append(new)
        start_s = draw(st.integers(0, 8))
        operations.append(Operation(index, kind, "k", argument, output, outcome, start_s,
                                    start_s + draw(st.integers(0, 4))))
    return operations


@settings(max_examples=300, deadline=None)
@given(small_histories())
def test_check_register_matches_brute_force(history: list[Operation]) -> None:
    """Goal: the search and its reductions are exact. Method: compare with trying every order
    and every subset of unknown ops, on small random histories."""
    expected = "ok" if _brute_force_ok(history) else "illegal"
    assert verdict(history) == expected
