"""ChunkLabels: gives the chunks of a large Raft entry the labels pysyncobj should have given.

The pysyncobj 0.3.17 bug it works around (`tests/integration/test_raft_metadata.py` shows it
on a real Raft group): a leader sends an entry whose command is `appendEntriesBatchSizeBytes`
or more as chunks of the pickled entry, labelled 'start', 'process' and 'finish'. It labels
a chunk 'finish' once the chunk's end passes the *command's* length, not the pickled entry's.
Pickle protocol 2 (pysyncobj's) writes bytes as latin-1 text in UTF-8, so each byte >= 0x80
takes two, and `@replicated` pickles the command once more inside the entry: a packed task
result (msgpack, about half its bytes >= 0x80) pickles to about twice its length. The
follower then gets 'finish' several chunks early, fails to unpickle (a tick error in its
log), and, after a partition, kept truncating and re-fetching its log instead of catching up
(seen as chaos job scenarios whose healed node stayed behind on metadata and lost its leases).

The fix, applied to the messages the leader sends: at 'start' it looks up the entry's pickled
length; each chunk after that is 'finish' exactly when it is the last one, else 'process'.
The data and the order are pysyncobj's own; only the labels change.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

_TYPE = "append_entries"


class ChunkLabels:
    """Relabels chunked AppendEntries per follower; `node` is any hashable peer id.

    `pickled_length(index)` returns the length in bytes of the leader's log entry `index` as
    pysyncobj pickles it for the chunks (None if the leader no longer holds it).
    """

    def __init__(self, pickled_length: Callable[[int], int | None]) -> None:
        self._pickled_length = pickled_length
        self._remaining: dict[Any, int] = {}   # node -> bytes of the entry not yet sent

    def relabel(self, node: Any, message: Any) -> Any:
        """Return `message`, or a copy with the label its position in the entry calls for."""
        if not isinstance(message, dict) or message.get("type") != _TYPE:
            return message
        label = message.get("transmission")
        if label is None:
            return message
        if label == "start":
            total = self._pickled_length(message["prevLogIdx"] + 1)
            if total is None:          # cannot happen while the leader sends it; leave pysyncobj's labels
                self._remaining.pop(node, None)
                return message
            self._remaining[node] = total
        remaining = self._remaining.get(node)
        if remaining is None:          # a chunk without its start: nothing to correct against
            return message
        remaining -= len(message["data"])
        self._remaining[node] = remaining
        if label == "start":
            return message
        if remaining <= 0:
            del self._remaining[node]
            return message if label == "finish" else {**message, "transmission": "finish"}
        return message if label == "process" else {**message, "transmission": "process"}
