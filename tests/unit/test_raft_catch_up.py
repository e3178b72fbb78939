"""NextIndexFloor: the leader-side rule that lets a diverged follower's log search go down."""
from __future__ import annotations

from typing import Any

from shoal.node.metadata.catch_up import NextIndexFloor


def answer(next_index: int, *, reset: bool = True, success: bool = False) -> dict[str, Any]:
    return {"type": "next_node_idx", "next_node_idx": next_index, "reset": reset, "success": success}


def test_walk_back_is_not_undone_by_later_i_lack_it_answers() -> None:
    """One round: 'walk back to 8', then 'I lack it, send from 9' twice: the leader keeps 8."""
    floor = NextIndexFloor()
    assert floor.filter("f", answer(9))["next_node_idx"] == 9
    assert floor.filter("f", answer(8))["next_node_idx"] == 8
    assert [floor.filter("f", answer(9))["next_node_idx"] for _ in range(2)] == [8, 8]
    assert floor.filter("f", answer(7))["next_node_idx"] == 7


def test_success_clears_the_floor_and_followers_are_independent() -> None:
    floor = NextIndexFloor()
    floor.filter("f", answer(5))
    floor.filter("g", answer(3))
    assert floor.filter("f", answer(20, reset=False, success=True))["next_node_idx"] == 20
    assert floor.filter("f", answer(30))["next_node_idx"] == 30        # a new search starts fresh
    assert floor.filter("g", answer(9))["next_node_idx"] == 3


def test_other_messages_pass_unchanged() -> None:
    """Transmission acks (no reset, no success), other types and non-dicts are not touched."""
    floor = NextIndexFloor()
    floor.filter("f", answer(4))
    ack = answer(50, reset=False)
    assert floor.filter("f", ack) is ack
    other = {"type": "append_entries", "term": 3}
    assert floor.filter("f", other) is other
    assert floor.filter("f", "utility") == "utility"
    assert floor.filter("f", answer(9))["next_node_idx"] == 4
