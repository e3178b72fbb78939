"""Linearizability checker for per-key registers with read / write / cas.

The core is Wing & Gong's search with Lowe's memoization, as Porcupine
(anishathalye/porcupine) implements it, written anew here, plus three reductions
for unknown operations, which are what makes this search blow up in practice:

- P-compositionality: linearizability is local, so the history is split by key
  and each key is checked on its own (smallest first, so one hard key cannot
  starve the easy ones of the time budget).
- Model: state = the value (None = absent). read(v) is legal iff state == v;
  write(v) sets v; cas(expected, new) swaps and outputs True iff state ==
  expected, else outputs False and leaves the state.
- Outcomes: "failed" ops are dropped (they did not happen). "unknown" ops get a
  return time of +infinity and an unconstrained output: they may take effect at
  any time after their start, or never. Unknown reads constrain nothing: dropped.
- Search: call and return events sorted by time (calls before returns at equal
  times: touching intervals count as concurrent, the lenient reading) form a
  doubly linked list. At a call the search tries to linearize that op next
  (legal in the model and (set of linearized ops, state) not seen before: push,
  and unlink its call and return); reaching a return whose call is not
  linearized is a dead end: pop the last choice and try the next call. An empty
  stack at a return means no linearization exists. The stack is an explicit
  list: no recursion limit. Done when every ok op is linearized: leftover
  unknown ops go last (or never happened).
- Reduction 1, bounding (etcd's robustness suite does the same): an unknown op
  that alone writes a value (not None) which an ok op observed must have taken
  effect before that observer ended; its return is set there.
- Reduction 2, pruning: unknown ops whose value nobody observes, and that no
  failed-looking ok cas could need, are dropped (`_unexplained_false_cas_end_s`
  has the argument).
- Reduction 3, canonical order: any linearization can be rewritten so that each
  unknown op it places changes the value and is needed by the op right after it
  (else drop it to the end, or swap the next ok op before it). The search only
  builds such orders, and only pushes a pending unknown op if one of the calls
  that may go next wants the value it writes (`_Search._side_candidates`); those
  ops live outside the event list, looked up by value, and are tried first at
  each level (trying them last measured far slower). Without this, k unknown
  writes pending till the end make it try all 2^k subsets everywhere.
- The reductions are checked against the plain search and a brute-force
  checker on random small histories (tests), and were run on Porcupine's
  Jepsen etcd histories (test_data/jepsen: all 102 verdicts agree).
- Limits: a wall-clock budget for the whole check, and a cap on the memo's
  estimated bytes. Exceeding either gives "timeout", which callers must treat
  as a failure (DESIGN.md section 6).
"""
from __future__ import annotations

import bisect
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, Iterable, Mapping

from shoal.chaos.history import Operation

logger = logging.getLogger(__name__)

REGISTER_KINDS = ("read", "write", "cas")
CACHE_BYTES_MAX_DEFAULT = 2 * 1024**3   # the memo's estimated size cap per key
_READ, _WRITE, _CAS = 0, 1, 2
_CODES = {"read": _READ, "write": _WRITE, "cas": _CAS}
_DEADLINE_CHECK_EVERY = 1024            # search iterations between clock reads
_EXPLANATION_OPS_MAX = 16
_SIDE = -2                              # scan position: this level's pending unknown ops
_PRUNING_ROUNDS_MAX = 64                # each round costs O(n log n); 2-3 are typical


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """The verdict for one key and, unless ok, why."""

    key: str
    verdict: str                # "ok" | "illegal" | "timeout"
    operations_checked: int     # after dropping failed ops, unknown reads and pruned ops
    operations_pruned: int      # unknown writes/cas whose value nobody could observe
    operations_bounded: int     # unknown writes/cas whose return was set to a first observer
    elapsed_s: float
    explanation: str            # "" when ok; the ops around the dead end when illegal


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """Overall verdict: "illegal" if any key is, else "timeout" if any key is, else "ok"."""

    verdict: str
    per_key: Mapping[str, KeyVerdict] = field(hash=False)
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def summary(self) -> str:
        """Human text: one line per key, then the explanation of every key not ok."""
        lines = [f"linearizability: {self.verdict} ({len(self.per_key)} keys, "
                 f"{self.elapsed_s:.2f} s)"]
        for key_verdict in self.per_key.values():
            lines.append(f"  {key_verdict.key!r}: {key_verdict.verdict}, "
                         f"{key_verdict.operations_checked} ops checked, "
                         f"{key_verdict.operations_pruned} pruned, "
                         f"{key_verdict.operations_bounded} bounded, {key_verdict.elapsed_s:.2f} s")
        lines.extend(kv.explanation for kv in self.per_key.values() if kv.verdict != "ok")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the run report."""
        return {"verdict": self.verdict, "elapsed_s": self.elapsed_s,
                "per_key": {key: {"verdict": kv.verdict,
                                  "operations_checked": kv.operations_checked,
                                  "operations_pruned": kv.operations_pruned,
                                  "operations_bounded": kv.operations_bounded,
                                  "elapsed_s": kv.elapsed_s, "explanation": kv.explanation}
                            for key, kv in self.per_key.items()}}


@dataclass(frozen=True, slots=True)
class _Step:
    """One operation normalized for the search."""

    code: int
    argument: Hashable      # value written; expected value for cas
    new: Hashable           # new value for cas
    output: Hashable        # value read (frozen); bool for cas
    unknown: bool
    start_s: float
    end_s: float            # +inf for unknown
    source: Operation


@dataclass(frozen=True, slots=True)
class _SearchOutcome:
    verdict: str
    prefix: list[int]       # the longest linearizable prefix found (step indexes, in order)
    blocked: int            # the step whose return ended that prefix; -1 if none
    detail: str


def check_register(history_ops: Iterable[Operation], timeout_s: float, *,
                   cache_bytes_max: int = CACHE_BYTES_MAX_DEFAULT,
                   reduce_unknown: bool = True) -> LinearizabilityResult:
    """Check that the read/write/cas operations of every key are linearizable.

    `timeout_s` bounds the whole check; keys left unchecked when it runs out
    are "timeout". `reduce_unknown=False` runs the plain search without the
    reductions for unknown ops (module docstring), for cross-checks: it can be
    exponentially slower. Raises ValueError on an operation of another kind or a
    malformed one (e.g. an ok cas whose output is not a bool).
    """
    started_s = time.monotonic()
    deadline_s = started_s + timeout_s
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for operation in history_ops:
        by_key[operation.key].append(operation)
    prepared = {key: _prepare_key(ops, reduce_unknown) for key, ops in by_key.items()}
    per_key: dict[str, KeyVerdict] = {}
    for key in sorted(prepared, key=lambda k: (len(prepared[k][0]), k)):
        steps, pruned, bounded = prepared[key]
        key_started_s = time.monotonic()
        entries_max = max(1, cache_bytes_max // (len(steps) // 8 + 150))
        outcome = _Search(steps, canonical=reduce_unknown).run(deadline_s, entries_max)
        explanation = "" if outcome.verdict == "ok" else _explain(key, steps, outcome)
        per_key[key] = KeyVerdict(key, outcome.verdict, len(steps), pruned, bounded,
                                  time.monotonic() - key_started_s, explanation)
        if outcome.verdict != "ok":
            logger.info("key %r is %s: %s", key, outcome.verdict, outcome.detail)
    verdicts = {kv.verdict for kv in per_key.values()}
    verdict = "illegal" if "illegal" in verdicts else "timeout" if "timeout" in verdicts else "ok"
    return LinearizabilityResult(verdict, dict(sorted(per_key.items())),
                                 time.monotonic() - started_s)


def _prepare_key(operations: list[Operation],
                 simplify: bool) -> tuple[list[_Step], int, int]:
    """Normalize one key's operations: drop failed ops and unknown reads, then (if
    `simplify`) prune and bound unknown writes. Returns (steps, pruned, bounded)."""
    steps = [step for step in map(_step_of, operations) if step is not None]
    return _simplify_unknown(steps) if simplify else (steps, 0, 0)


def _simplify_unknown(steps: list[_Step]) -> tuple[list[_Step], int, int]:
    """Bound the unknown writes/cas whose value is unique and observed, then prune those
    that nobody can observe. Both keep the verdict (see `_first_observer_end_s` and
    `_unexplained_false_cas_end_s`). Returns (steps, pruned, bounded)."""
    writers = _writers(steps, set())
    observer_end_s = _first_observer_end_s(steps)
    bounded = 0
    for position, step in enumerate(steps):
        value = _written(step) if step.unknown else None
        if value is not None and len(writers[value]) == 1 and value in observer_end_s:
            steps[position] = replace(step, end_s=max(step.start_s, observer_end_s[value]))
            bounded += 1
    read = {s.output for s in steps if s.code == _READ}
    read.update(s.argument for s in steps if s.code == _CAS and s.output is True)
    pruned = {i for i, s in enumerate(steps) if s.unknown}
    for _ in range(_PRUNING_ROUNDS_MAX):  # the largest set all prunable without it
        observed = read | {s.argument for i, s in enumerate(steps)
                           if s.code == _CAS and s.unknown and i not in pruned}
        helped_until_s = _unexplained_false_cas_end_s(steps, pruned)
        blocked = {i for i in pruned if _written(steps[i]) in observed
                   or not helped_until_s < steps[i].start_s}
        if not blocked:
            break
        pruned -= blocked
    else:
        pruned = set()         # no fixed point within the limit: prune nothing (always sound)
    return [step for i, step in enumerate(steps) if i not in pruned], len(pruned), bounded


def _writers(steps: list[_Step], excluded: set[int]) -> dict[Hashable, list[_Step]]:
    """Per value, the steps that may write it (a cas that returned False wrote nothing)."""
    writers: dict[Hashable, list[_Step]] = defaultdict(list)
    for index, step in enumerate(steps):
        if index not in excluded and (step.code == _WRITE
                                      or (step.code == _CAS and step.output is not False)):
            writers[_written(step)].append(step)
    return writers


def _first_observer_end_s(steps: list[_Step]) -> dict[Hashable, float]:
    """Per value, the earliest end of an ok op that needs the register to hold it (a read
    of it, a cas that swapped it). If one op alone can write a value other than the
    initial None, it must take effect before that end: etcd's robustness suite bounds its
    unique-value unknown writes the same way."""
    observer_end_s: dict[Hashable, float] = {}
    for step in steps:
        if not step.unknown and (step.code == _READ or step.output is True):
            value = step.output if step.code == _READ else step.argument
            observer_end_s[value] = min(observer_end_s.get(value, math.inf), step.end_s)
    return observer_end_s


def _unexplained_false_cas_end_s(steps: list[_Step], pruned: set[int]) -> float:
    """For pruning the set `pruned` of unknown ops whose values no ok op reads or expects
    (nor an unknown cas outside the set): the latest end of an ok cas that returned
    False and that an op of the set could have helped; each op of the set that starts
    after it can go.

    Why: take a linearization using some of the set and drop the earliest, u (value v).
    The ops between u and the next effective write saw v, so they are only no-op
    unknown cas (move them to the end) and ok cas that returned False (any other op
    would need v). Those now see the value u overwrote, written by an op Y outside the
    set; a cas(e, _) breaks only if Y wrote e. It cannot if e is never written outside
    the set (or, for None, some write ended before it started), or if e has a single
    writer that took effect before another write started and ended before the cas
    started: that write lies between Y and the cas, yet nothing effective does. If the
    next effective write was an unknown cas expecting v, it is in the set and now a
    no-op: move it to the end and repeat the argument for it, then for the next u."""
    writers = _writers(steps, pruned)
    definite = sorted((s.start_s, s.end_s) for group in writers.values() for s in group)
    starts_s = [start_s for start_s, _ in definite]
    suffix_end_s = [math.inf] * (len(definite) + 1)
    for position in range(len(definite) - 1, -1, -1):
        suffix_end_s[position] = min(definite[position][1], suffix_end_s[position + 1])

    def overwritten_s(expected: Hashable) -> float:
        """When `expected` stops being a possible value for good (+inf: never known)."""
        sources = writers.get(expected, [])
        if not sources:
            return suffix_end_s[0] if expected is None else -math.inf
        if len(sources) > 1 or expected is None:
            return math.inf
        return suffix_end_s[bisect.bisect_right(starts_s, sources[0].end_s)]

    return max((s.end_s for s in steps
                if s.code == _CAS and not s.unknown and s.output is False
                and not overwritten_s(s.argument) < s.start_s), default=-math.inf)


def _step_of(operation: Operation) -> _Step | None:
    if operation.kind not in _CODES:
        raise ValueError(f"not a register operation: {operation.describe()}")
    code = _CODES[operation.kind]
    unknown = operation.outcome == "unknown"
    if operation.outcome == "failed" or (unknown and code == _READ):
        return None
    end_s = math.inf if unknown else operation.end_s
    if code == _READ:
        return _Step(code, None, None, _freeze(operation.output), False, operation.start_s,
                     end_s, operation)
    if code == _WRITE:
        return _Step(code, _freeze(operation.input), None, None, unknown, operation.start_s,
                     end_s, operation)
    expected, new = operation.input
    if not unknown and not isinstance(operation.output, bool):
        raise ValueError(f"an ok cas must output a bool: {operation.describe()}")
    return _Step(code, _freeze(expected), _freeze(new), operation.output, unknown,
                 operation.start_s, end_s, operation)


def _written(step: _Step) -> Hashable:
    return step.argument if step.code == _WRITE else step.new


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a JSON value: lists become tuples; bools are tagged so
    that True never equals 1 (Python's bool is an int)."""
    if isinstance(value, bool):
        return ("<bool>", value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return ("<dict>", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    assert value is None or isinstance(value, (str, int, float)), f"not JSON-able: {value!r}"
    return value


def _apply(step: _Step, state: Hashable) -> tuple[bool, Hashable]:
    """The register model: (is this step legal in `state`, the state after it)."""
    if step.code == _READ:
        return state == step.output, state
    if step.code == _WRITE:
        return True, step.argument
    swapped = state == step.argument
    return (step.unknown or step.output is swapped), (step.new if swapped else state)


class _Search:
    """The search over one key's steps (see the module docstring). With reduction 3 the
    unbounded unknown steps are kept out of the event list, in `side`: a level only
    tries those that a call which may go next wants (`_side_candidates`), so a long
    history does not walk past every pending unknown op at every level."""

    def __init__(self, steps: list[_Step], canonical: bool) -> None:
        self.steps = steps
        self.canonical = canonical
        self.side = [i for i, s in enumerate(steps)
                     if canonical and s.unknown and s.end_s == math.inf]
        self.nxt, self.prv, self.step_of, self.match, self.node_time_s, self.return_node = (
            _linked_events(steps, set(self.side)))
        self.head = len(self.step_of)             # the sentinel node before every event
        self.side_by_written: dict[Hashable, list[int]] = defaultdict(list)
        self.side_cas_by_expected: dict[Hashable, list[int]] = defaultdict(list)
        self.pending_expected: dict[Hashable, int] = defaultdict(int)  # by unplaced side cas
        for index in self.side:
            self.side_by_written[_written(steps[index])].append(index)
            if steps[index].code == _CAS:
                self.side_cas_by_expected[steps[index].argument].append(index)
                self.pending_expected[steps[index].argument] += 1
        self.stack: list[int] = []                # event nodes, or ~index for side steps
        self.stack_states: list[Hashable] = []    # the state before each pushed step
        self.side_todo: list[list[int] | None] = [None]   # per level, side steps to try
        self.side_placed: set[int] = set()        # side steps on the stack

    def run(self, deadline_s: float, entries_max: int) -> _SearchOutcome:
        steps, nxt, step_of, match = self.steps, self.nxt, self.step_of, self.match
        canonical, stack = self.canonical, self.stack
        bits = [1 << index for index in range(len(steps))]
        cache: set[tuple[Any, ...]] = set()
        best: list[int] = []
        blocked = tail = -1                   # tail: the top of the stack if it is unknown
        state: Hashable = None
        linearized = iterations = 0
        ok_left = sum(1 for step in steps if not step.unknown)
        node = _SIDE
        while ok_left:                        # unknown ops left over go last, or never
            iterations += 1
            if iterations % _DEADLINE_CHECK_EVERY == 0 and time.monotonic() > deadline_s:
                return self._outcome("timeout", best, blocked,
                                     f"time budget spent after {iterations} iterations")
            if node == _SIDE:                     # first the wanted pending unknown ops
                picked = self._next_side(state, tail) if self.side else None
                if picked is None:
                    node = nxt[self.head]
                    continue
                index, new_state = picked
                entry = ~index
            elif match[node] < 0:                 # a return not yet linearized: dead end
                if len(stack) > len(best) or blocked < 0:
                    best, blocked = stack.copy(), step_of[node]
                if not stack:
                    return self._outcome("illegal", best, blocked,
                                         f"no linearization after {iterations} iterations")
                node, state, index, tail = self._pop()
                linearized ^= bits[index]
                ok_left += not steps[index].unknown
                continue
            else:                                 # a call: try to linearize it next
                index = step_of[node]
                legal, new_state = _apply(steps[index], state)
                if legal and canonical and (steps[index].unknown or tail >= 0):
                    legal = self._allowed(index, node, state, new_state, tail)
                if not legal:
                    node = nxt[node]
                    continue
                entry = node
            unknown = steps[index].unknown
            lin = linearized | bits[index]
            key = (lin, new_state, index, state) if unknown else (lin, new_state)
            if key in cache or (lin, new_state) in cache:
                node = _SIDE if entry < 0 else nxt[node]
                continue
            if len(cache) >= entries_max:
                return self._outcome("timeout", best, blocked,
                                     f"memo cap of {entries_max} entries reached")
            cache.add(key)
            self._push(entry, index, state)
            linearized, state = lin, new_state
            tail = index if unknown else -1
            ok_left -= not unknown
            node = _SIDE
        return self._outcome("ok", stack, -1, "")

    def _push(self, entry: int, index: int, state: Hashable) -> None:
        self.stack.append(entry)
        self.stack_states.append(state)
        self.side_todo.append(None)
        if entry >= 0:
            _lift(self.nxt, self.prv, entry, self.match[entry])
        else:
            self.side_placed.add(index)
            if self.steps[index].code == _CAS:
                self.pending_expected[self.steps[index].argument] -= 1

    def _pop(self) -> tuple[int, Hashable, int, int]:
        """Undo the last push: (where the scan resumes, state, step index, new tail)."""
        entry = self.stack.pop()
        state = self.stack_states.pop()
        self.side_todo.pop()
        if entry >= 0:
            index = self.step_of[entry]
            _unlift(self.nxt, self.prv, entry, self.match[entry])
            node = self.nxt[entry]
        else:
            index, node = ~entry, _SIDE
            self.side_placed.discard(index)
            if self.steps[index].code == _CAS:
                self.pending_expected[self.steps[index].argument] += 1
        tail = self._index_of(self.stack[-1]) if self.stack else -1
        return node, state, index, tail if tail >= 0 and self.steps[tail].unknown else -1

    def _index_of(self, entry: int) -> int:
        return self.step_of[entry] if entry >= 0 else ~entry

    def _outcome(self, verdict: str, entries: list[int], blocked: int,
                 detail: str) -> _SearchOutcome:
        return _SearchOutcome(verdict, [self._index_of(e) for e in entries], blocked, detail)

    def _allowed(self, index: int, node: int, state: Hashable, new_state: Hashable,
                 tail: int) -> bool:
        """May the legal step `index` go next? Only in the search's canonical form: every
        unknown op it places changes the value and is needed by the op right after it.
        Any linearization can be rewritten into that form (module docstring)."""
        if self.steps[index].unknown and new_state == state:   # a no-op: move it last
            return False
        return tail < 0 or self._needs(tail, index, node, self.stack_states[-1], new_state)

    def _needs(self, tail: int, index: int, node: int, before_tail: Hashable,
               state_after: Hashable) -> bool:
        """Does step `index`, legal right after the unknown step `tail`, need it there?
        Not if it is also legal before `tail` and leaves the same value (drop `tail`),
        nor if it is ok, could go first in real time, and going first ends the same
        (swap them: ok steps move earlier, unknown ones later)."""
        legal, middle = _apply(self.steps[index], before_tail)
        if not legal:
            return True
        if middle == state_after:
            return False
        return not (not self.steps[index].unknown and node < self.return_node[tail]
                    and _apply(self.steps[tail], middle)[1] == state_after)

    def _next_side(self, state: Hashable, tail: int) -> tuple[int, Hashable] | None:
        """The next pending unknown op this level tries, with the state after it."""
        todo = self.side_todo[-1]
        if todo is None:
            todo = self.side_todo[-1] = self._side_candidates(state, tail)
        while todo:
            index = todo.pop()
            new_state = _written(self.steps[index])
            if tail < 0 or self._needs(tail, index, -1, self.stack_states[-1], new_state):
                return index, new_state
        return None

    def _side_candidates(self, state: Hashable, tail: int) -> list[int]:
        """Pending unknown ops that started before the first return still in the list,
        that change the value here, and that a call which may go next could need: after
        an unknown op only a cas expecting this value (a chain); else one writing a value
        such a call wants (a read of it, a cas expecting it, also pending unknown cas) or
        any value if an ok cas that returned False expects this one. Last to try first."""
        values, any_change, first_return_s = self._wants(state)
        if tail >= 0:
            pool: Iterable[int] = self.side_cas_by_expected.get(state, ())
        elif any_change:
            pool = self.side
        else:
            values.update(v for v, count in self.pending_expected.items() if count)
            pool = {i for value in values for i in self.side_by_written.get(value, ())}
        chosen = [i for i in pool if i not in self.side_placed
                  and self.steps[i].start_s <= first_return_s
                  and _apply(self.steps[i], state)[1] != state]
        return sorted(chosen, key=lambda i: (self.steps[i].start_s, i), reverse=True)

    def _wants(self, state: Hashable) -> tuple[set[Hashable], bool, float]:
        """Over the calls that may go next: the values an unknown op would have to write
        for one of them to need it, whether any change of value would do (an ok cas that
        returned False expects `state`), and the time of the first return."""
        values: set[Hashable] = set()
        any_change = False
        node = self.nxt[self.head]
        while self.match[node] >= 0:
            step = self.steps[self.step_of[node]]
            if step.code == _READ:
                values.add(step.output)
            elif step.code == _CAS and (step.unknown or step.output is True):
                values.add(step.argument)
            elif step.code == _CAS:
                any_change = any_change or step.argument == state
            node = self.nxt[node]
        return values, any_change, self.node_time_s[node]


def _linked_events(steps: list[_Step], excluded: set[int]) -> tuple[
        list[int], list[int], list[int], list[int], list[float], list[int]]:
    """The sorted call/return events of the steps not `excluded`, as a doubly linked list
    over node numbers (their sorted positions), the sentinel head being node
    len(events). Returns next, previous, the step of each node, the return node of each
    call node (-1 for returns), each node's time and each step's return node (-1 if
    excluded)."""
    kept = [i for i in range(len(steps)) if i not in excluded]
    events = sorted([(steps[i].start_s, 0, i) for i in kept]
                    + [(steps[i].end_s, 1, i) for i in kept])
    count = len(events)
    nxt = list(range(1, count + 1)) + [0 if count else -1]
    if count:
        nxt[count - 1] = -1
    prv = [count] + list(range(count - 1)) + [-1]
    step_of = [index for _, _, index in events]
    return_node = [-1] * len(steps)
    for node, (_, kind, index) in enumerate(events):
        if kind == 1:
            return_node[index] = node
    match = [return_node[index] if kind == 0 else -1 for _, kind, index in events]
    return nxt, prv, step_of, match, [time_s for time_s, _, _ in events], return_node


def _lift(nxt: list[int], prv: list[int], call: int, returned: int) -> None:
    """Unlink a call and its return (their own links are kept for `_unlift`)."""
    nxt[prv[call]] = nxt[call]
    prv[nxt[call]] = prv[call]
    nxt[prv[returned]] = nxt[returned]
    if nxt[returned] != -1:
        prv[nxt[returned]] = prv[returned]


def _unlift(nxt: list[int], prv: list[int], call: int, returned: int) -> None:
    """Relink what `_lift` unlinked; must run in reverse order of the lifts."""
    nxt[prv[returned]] = returned
    if nxt[returned] != -1:
        prv[nxt[returned]] = returned
    nxt[prv[call]] = call
    prv[nxt[call]] = call


def _explain(key: str, steps: list[_Step], outcome: _SearchOutcome) -> str:
    """The longest linearizable prefix, its final state, the op that could not be placed
    and the ops around it, for a human to see e.g. the stale read."""
    state: Hashable = None
    for index in outcome.prefix:
        state = _apply(steps[index], state)[1]
    lines = [f"key {key!r}: {outcome.verdict} ({outcome.detail}); the longest linearizable "
             f"prefix has {len(outcome.prefix)} of {len(steps)} ops and leaves the value "
             f"{_thaw(state)!r}"]
    if outcome.blocked < 0:
        return "\n".join(lines)
    blocked = steps[outcome.blocked]
    label = "cannot place" if outcome.verdict == "illegal" else "deepest dead end at"
    lines.append(f"  {label}: {blocked.source.describe()}")
    lines.append("  (ops nearby; an unknown op may take effect at any time after its start)")
    position = {index: rank for rank, index in enumerate(outcome.prefix)}
    recent = outcome.prefix[-_EXPLANATION_OPS_MAX // 2:]
    candidates = sorted((i for i, s in enumerate(steps)
                         if i not in position and s.start_s <= blocked.end_s),
                        key=lambda i: steps[i].start_s)
    pending = {outcome.blocked, *candidates[-_EXPLANATION_OPS_MAX // 2:]}
    for index in sorted(set(recent) | pending, key=lambda i: steps[i].start_s):
        tag = f"linearized #{position[index] + 1}" if index in position else "not linearized"
        marker = ">" if index == outcome.blocked else " "
        lines.append(f"  {marker} {steps[index].source.describe()}   ({tag})")
    return "\n".join(lines)


def _thaw(value: Hashable) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "<bool>":
        return value[1]
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "<dict>":
        return {k: _thaw(v) for k, v in value[1]}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value
