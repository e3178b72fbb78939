"""Set checker (lost, unexpected, failed-but-present, duplicated adds) and replica
convergence checker."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from shoal.chaos.checkers import check_convergence, check_set
from shoal.chaos.history import Operation


def add(element: str, outcome: str = "ok", process: int = 1) -> Operation:
    return Operation(process, "add", "set", element, None, outcome, 0.0, 1.0)


def test_check_set_accepts_every_acknowledged_add_present() -> None:
    """Goal: the happy path is ok. Method: three ok adds, all read back."""
    result = check_set([add("a"), add("b"), add("c")], {"a", "b", "c"})
    assert result.ok
    assert (result.attempted, result.acknowledged, result.present) == (3, 3, 3)
    assert result.summary().startswith("set: ok")


def test_check_set_reports_lost_acknowledged_add() -> None:
    """Goal: R1, no acknowledged write lost. Method: ok add of b missing from the read."""
    result = check_set([add("a"), add("b")], {"a"})
    assert not result.ok
    assert result.lost == ("b",)
    assert "lost: 1: b" in result.summary()


def test_check_set_reports_element_never_attempted() -> None:
    """Goal: garbage is caught. Method: the read holds z, which no client added."""
    result = check_set([add("a")], ["a", "z"])
    assert not result.ok
    assert result.unexpected == ("z",)


def test_check_set_reports_failed_add_that_is_present() -> None:
    """Goal: "failed" promises the add did not happen. Method: a failed add read back."""
    result = check_set([add("a"), add("b", "failed")], {"a", "b"})
    assert not result.ok
    assert result.failed_but_present == ("b",)


def test_check_set_allows_unknown_adds_present_or_absent() -> None:
    """Goal: unknown adds may or may not have happened. Method: two unknown adds, one read
    back; ok, and both counted."""
    result = check_set([add("a"), add("u1", "unknown"), add("u2", "unknown")], {"a", "u1"})
    assert result.ok
    assert (result.unknown_present, result.unknown_absent) == (1, 1)


def test_check_set_judges_retries_by_their_best_outcome() -> None:
    """Goal: retries of one element combine. Method: failed then ok must be present; failed
    then unknown may be present; failed then failed must be absent."""
    adds = [add("x", "failed"), add("x", "ok", 2), add("y", "failed"), add("y", "unknown", 2),
            add("z", "failed"), add("z", "failed", 2)]
    assert check_set(adds, {"x", "y"}).ok
    assert check_set(adds, {"y"}).lost == ("x",)
    assert check_set(adds, {"x", "z"}).failed_but_present == ("z",)


def test_check_set_reports_duplicates() -> None:
    """Goal: R3, zero duplicates with unique ids. Method: a count mapping and a list that
    hold b twice; a zero count means absent."""
    adds = [add("a"), add("b")]
    assert check_set(adds, {"a": 1, "b": 2}).duplicated == ("b",)
    assert check_set(adds, ["a", "b", "b"]).duplicated == ("b",)
    assert check_set(adds, {"a": 1, "b": 0}).lost == ("b",)


def test_check_set_rejects_other_kinds() -> None:
    """Goal: feeding register ops by mistake is loud. Method: a write op."""
    with pytest.raises(ValueError, match="not an add"):
        check_set([Operation(1, "write", "k", 1, None, "ok", 0.0, 1.0)], set())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "failed", "unknown"]), st.booleans()),
                max_size=40), st.data())
def test_check_set_property_honest_store_passes_and_loss_is_caught(
        adds: list[tuple[str, bool]], data: st.DataObject) -> None:
    """Goal: no false alarms, no missed loss. Method: an honest store keeps ok adds, drops
    failed ones and keeps unknown ones at random: ok. Removing one acknowledged element
    from the read must report exactly it as lost."""
    operations = [add(f"e{i}", outcome) for i, (outcome, _) in enumerate(adds)]
    stored = {f"e{i}" for i, (outcome, kept) in enumerate(adds)
              if outcome == "ok" or (outcome == "unknown" and kept)}
    assert check_set(operations, stored).ok
    acknowledged = sorted(f"e{i}" for i, (outcome, _) in enumerate(adds) if outcome == "ok")
    if acknowledged:
        victim = data.draw(st.sampled_from(acknowledged))
        assert check_set(operations, stored - {victim}).lost == (victim,)


def test_check_convergence_accepts_equal_checksums() -> None:
    """Goal: converged replicas pass. Method: two shards, equal (seq, checksum) per shard;
    a single-replica shard is trivially converged."""
    result = check_convergence({0: {"n1": (5, "aa"), "n2": (5, "aa"), "n3": (5, "aa")},
                                1: {"n2": (9, "bb"), "n3": (9, "bb")}, 2: {"n1": (1, "cc")}})
    assert result.ok
    assert result.shards_checked == 3
    assert result.differing == ()


def test_check_convergence_reports_diverged_and_lagging_shards() -> None:
    """Goal: R4, list each shard whose replicas differ, telling divergence at the same
    sequence from a lagging replica. Method: shard 1 differs at seq 5, shard 2 lags."""
    result = check_convergence({0: {"n1": (5, "aa"), "n2": (5, "aa")},
                                1: {"n1": (5, "aa"), "n2": (5, "ab")},
                                2: {"n1": (7, "aa"), "n3": (6, "ff")}})
    assert not result.ok
    assert [(d.shard, d.same_sequence) for d in result.differing] == [(1, True), (2, False)]
    assert result.differing[0].replicas == {"n1": (5, "aa"), "n2": (5, "ab")}
    summary = result.summary()
    assert "shard 1: diverged" in summary and "shard 2: differ (sequences differ)" in summary
