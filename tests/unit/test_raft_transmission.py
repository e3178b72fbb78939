"""ChunkLabels (node/metadata/transmission.py): the labels of pysyncobj's chunked AppendEntries.

`pysyncobj_chunks` restates pysyncobj 0.3.17's `__sendAppendEntries` chunk loop, label rule
included, so the tests feed the relabeller exactly what the leader emits.
"""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj import pickle as pysyncobj_pickle

from shoal.node.metadata.transmission import ChunkLabels

BATCH = 2 ** 16   # pysyncobj's default appendEntriesBatchSizeBytes


def pysyncobj_chunks(entry: tuple[bytes, int, int], batch: int = BATCH) -> list[dict[str, object]]:
    pickled = pysyncobj_pickle.dumps(entry)
    messages = []
    for pos in range(0, len(pickled), batch):
        if pos == 0:
            label = "start"
        elif pos + batch >= len(entry[0]):      # pysyncobj's rule: the command's length
            label = "finish"
        else:
            label = "process"
        messages.append({"type": "append_entries", "transmission": label, "data": pickled[pos:pos + batch],
                         "term": 1, "commit_index": 0, "prevLogIdx": entry[1] - 1, "prevLogTerm": 1})
    return messages


def follower_receives(messages: list[dict[str, object]]) -> list[object]:
    """What a pysyncobj follower reassembles: one entry per 'finish', or the error it hits."""
    received: list[object] = []
    buffer = b""
    for message in messages:
        label, data = message["transmission"], message["data"]
        assert isinstance(data, bytes)
        buffer = data if label == "start" else buffer + data
        if label == "finish":
            try:
                received.append(pysyncobj_pickle.loads(buffer))
            except Exception as exc:   # noqa: BLE001 - the symptom under test
                received.append(exc)
            buffer = b""
    return received


def relabelled(entry: tuple[bytes, int, int], node: str = "n2") -> list[dict[str, object]]:
    labels = ChunkLabels(lambda index: len(pysyncobj_pickle.dumps(entry)) if index == entry[1] else None)
    return [labels.relabel(node, message) for message in pysyncobj_chunks(entry)]


def binary_entry(size: int, index: int = 7) -> tuple[bytes, int, int]:
    return (random.Random(size).randbytes(size), index, 1)


def test_pysyncobj_labels_a_binary_entry_finished_too_early() -> None:
    """The bug itself: half the bytes >= 0x80 make the pickle ~1.5x the command."""
    entry = binary_entry(150_000)
    labels = [m["transmission"] for m in pysyncobj_chunks(entry)]
    assert labels.count("finish") > 1
    assert not all(r == entry for r in follower_receives(pysyncobj_chunks(entry)))


def test_relabelled_chunks_deliver_the_entry_once() -> None:
    for size in (BATCH, 100_000, 150_000, 1_000_000):
        entry = binary_entry(size)
        messages = relabelled(entry)
        labels = [m["transmission"] for m in messages]
        assert labels[0] == "start" and labels[-1] == "finish" and labels.count("finish") == 1, size
        assert follower_receives(messages) == [entry], size


def test_only_labels_change() -> None:
    entry = binary_entry(300_000)
    before, after = pysyncobj_chunks(entry), relabelled(entry)
    assert [{**m, "transmission": None} for m in before] == [{**m, "transmission": None} for m in after]


@settings(max_examples=40, deadline=None)   # each example pickles up to 256 KiB
@given(size=st.integers(min_value=BATCH, max_value=4 * BATCH), high_share=st.floats(0.0, 1.0),
       seed=st.integers(0, 2 ** 16))
def test_any_mix_of_bytes_arrives_whole(size: int, high_share: float, seed: int) -> None:
    rng = random.Random(seed)
    command = bytes(rng.randrange(0x80, 0x100) if rng.random() < high_share else rng.randrange(0x80)
                    for _ in range(size))
    entry = (command, 3, 2)
    assert follower_receives(relabelled(entry)) == [entry]


def test_followers_are_tracked_apart_and_other_messages_pass_untouched() -> None:
    one, two = binary_entry(150_000, index=4), binary_entry(200_000, index=5)
    lengths = {4: len(pysyncobj_pickle.dumps(one)), 5: len(pysyncobj_pickle.dumps(two))}
    labels = ChunkLabels(lengths.get)
    heartbeat = {"type": "append_entries", "term": 1, "commit_index": 0, "entries": []}
    answer = {"type": "next_node_idx", "next_node_idx": 3, "reset": False, "success": True}
    out: dict[str, list[dict[str, object]]] = {"a": [], "b": []}
    for m1, m2 in zip(pysyncobj_chunks(one), pysyncobj_chunks(two)):   # interleaved per follower
        out["a"].append(labels.relabel("a", m1))
        out["b"].append(labels.relabel("b", m2))
        assert labels.relabel("a", heartbeat) is heartbeat and labels.relabel("b", answer) is answer
    out["b"] += [labels.relabel("b", m) for m in pysyncobj_chunks(two)[len(out["b"]):]]
    assert follower_receives(out["a"]) == [one] and follower_receives(out["b"]) == [two]


def test_a_restarted_transmission_starts_over() -> None:
    """A connection lost mid-entry: pysyncobj sends it again from 'start'."""
    entry = binary_entry(200_000)
    labels = ChunkLabels(lambda index: len(pysyncobj_pickle.dumps(entry)))
    chunks = pysyncobj_chunks(entry)
    partial = [labels.relabel("n2", m) for m in chunks[:2]]
    again = [labels.relabel("n2", m) for m in chunks]
    assert "finish" not in [m["transmission"] for m in partial]
    assert follower_receives(again) == [entry]
