"""PutCombiner: concurrent puts to one shard share a call; outcomes reach every caller."""
from __future__ import annotations

import threading

import pytest

from shoal.client._combiner import BATCH_RECORDS_MAX, PendingPut, PutCombiner
from shoal.client._errors import TooLargeError, UnknownOutcomeError


def _pending(i: int) -> PendingPut:
    return PendingPut(f"k{i}", f"k{i}".encode(), b"\x01")


def test_combiner_batches_puts_that_arrive_while_a_call_is_in_flight() -> None:
    """While the sender's first call is blocked, 50 other puts queue and go out together."""
    calls: list[int] = []
    release = threading.Event()

    def send_batch(dataset: str, shard: int, batch: list[PendingPut]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            assert release.wait(10)

    combiner = PutCombiner(send_batch, lambda dataset, pending: None)
    first = threading.Thread(target=combiner.put, args=("ds", 0, _pending(0)))
    first.start()
    others = [threading.Thread(target=combiner.put, args=("ds", 0, _pending(i))) for i in range(1, 51)]
    for thread in others:
        thread.start()
    while len(combiner._queued.get(("ds", 0), [])) < 50:   # all queued behind the blocked call
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert calls == [1, 50]


def test_combiner_gives_every_caller_the_batch_outcome() -> None:
    """An unknown outcome of a batch reaches each of its callers; a later lone put still works."""
    outcomes = iter([UnknownOutcomeError("timed out"), None])

    def send_batch(dataset: str, shard: int, batch: list[PendingPut]) -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    combiner = PutCombiner(send_batch, lambda dataset, pending: None)
    with pytest.raises(UnknownOutcomeError):
        combiner.put("ds", 1, _pending(1))
    combiner.put("ds", 1, _pending(2))


def test_combiner_resends_a_rejected_batch_one_put_at_a_time() -> None:
    """A batch rejected for one bad record is split: only that record's caller sees the error."""
    from shoal.client._combiner import _take

    batch = [_pending(i) for i in range(3)]
    sent_alone: list[str] = []

    def send_one(dataset: str, pending: PendingPut) -> None:
        sent_alone.append(str(pending.key))
        if pending.key == "k1":
            raise TooLargeError("value too large", key="k1")

    combiner = PutCombiner(lambda d, s, b: (_ for _ in ()).throw(TooLargeError("batch rejected")), send_one)
    combiner._send(("ds", 0), batch)
    assert sent_alone == ["k0", "k1", "k2"]
    assert batch[0].done.result() is None and batch[2].done.result() is None
    with pytest.raises(TooLargeError, match="value too large"):
        batch[1].done.result()
    many = [_pending(i) for i in range(BATCH_RECORDS_MAX + 5)]
    head, rest = _take(many)
    assert len(head) == BATCH_RECORDS_MAX and len(rest) == 5
