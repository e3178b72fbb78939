"""NextIndexFloor: keeps a Raft leader's next index for a diverged follower from going back up.

The pysyncobj 0.3.17 bug it works around (notes/dependencies.md 1.10 has the family;
`bench/repro_pysyncobj_catchup.py` reproduces it; `tests/unit/test_raft_catch_up.py` tests
the rule, `tests/integration/test_raft_metadata.py` the fix on a real Raft group):

A follower that rejects an AppendEntries answers `next_node_idx` with `reset=True` and one
of two values: `prevLogIdx` when its entry at `prevLogIdx` has another term (walk back one
entry: the Raft §5.3 search), or its own last index + 1 when it lacks `prevLogIdx`. The
leader sends optimistically: in one round it sends batch after batch (each at most
`appendEntriesBatchSizeBytes`) while advancing its next index past each. So when a deposed
leader with an uncommitted suffix rejoins and the new leader is more than one batch ahead,
every round brings back one "walk back" answer followed by "I lack it" answers for the later
batches (large entries, or many small ones), and the last answer wins: the next index returns to the follower's end + 1 and the
search never gets below the conflicting suffix. The deposed leader stays behind forever
(seen as a job chaos scenario that never converged: a task result is a large entry).

The fix, applied to the messages the leader receives: between two successful answers from a
follower, a `reset` answer may lower the next index but never raise it above the lowest
reset seen. Lowering a next index is always safe in Raft (the leader re-sends entries the
follower checks by `prevLogIdx`/`prevLogTerm`); a success answer ends the search and clears
the floor, so a follower in sync is never affected.
"""
from __future__ import annotations

from typing import Any

_TYPE = "next_node_idx"


class NextIndexFloor:
    """Rewrites `next_node_idx` answers per follower; `node` is any hashable peer id."""

    def __init__(self) -> None:
        self._floor: dict[Any, int] = {}

    def filter(self, node: Any, message: Any) -> Any:
        """Return `message`, or a copy whose reset `next_node_idx` is capped at the floor."""
        if not isinstance(message, dict) or message.get("type") != _TYPE:
            return message
        if message.get("success"):
            self._floor.pop(node, None)
            return message
        if not message.get("reset"):
            return message
        proposed = message["next_node_idx"]
        floor = self._floor.get(node)
        if floor is not None and proposed > floor:
            return {**message, "next_node_idx": floor}
        self._floor[node] = proposed
        return message
