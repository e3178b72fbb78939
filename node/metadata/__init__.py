"""Cluster metadata: the replicated state machine and the two stores that run it.

- `fsm`       pure state machine (apply(state, command) -> (state, result))
- `commands`  the command messages and result shape
- `raft`      RaftMetadata: the state replicated by pysyncobj (the only pysyncobj import)
- `local`     LocalMetadata: a standalone node's state in one file, no Raft
- `remote`    RemoteMetadata: a data-only node's copy, installed from heartbeat replies
- `view`      MetadataView: the typed, frozen read model every reader uses

All three stores satisfy `MetadataStore`, so the rest of the node (server, controller,
reconcilers) never knows which one it runs on. This module imports neither store, so
importing the package does not import pysyncobj.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shoal.node.metadata.view import MetadataView


@dataclasses.dataclass(frozen=True, slots=True)
class MetadataStatistics:
    role: str                 # "leader" | "follower" | "candidate"
    term: int                 # Raft term (0 for LocalMetadata)
    commit_index: int         # Raft commit index (commands applied, for LocalMetadata)
    last_applied: int         # Raft index last applied to the local state
    log_length: int           # entries in the Raft log since the last dump (0 for LocalMetadata)
    leader: str | None        # Raft address of the known leader, may be stale
    version: int              # the state's version


class MetadataStore(Protocol):
    """What the node needs from its metadata, Raft-backed or local.

    `state` is never mutated in place (copy-on-write), so any thread may read it; treat
    it as read-only. The `on_change` callback a store is built with runs on a store thread
    (Raft tick thread, or a worker thread for LocalMetadata), after each applied command:
    keep it to `loop.call_soon_threadsafe(...)`. Reads of `state` are local and may be stale; `await barrier()`
    first when a read must see every command acknowledged before it.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def propose(self, command: bytes, timeout_s: float) -> dict[str, Any]:
        """Apply `command` through the log; return the state machine's result dict.

        Raises NoControllerError when the command was certainly not applied, and
        UnknownOutcomeError when it may have been (retry with the same bytes).
        """
        ...

    async def barrier(self, timeout_s: float) -> None: ...

    def voters(self) -> tuple[str, ...]:
        """The Raft addresses of the metadata voters as this store knows them (() without Raft)."""
        ...

    async def change_voters(self, remove: str, add: str, timeout_s: float) -> tuple[str, ...]:
        """Replace the voter at Raft address `remove` by `add` (RaftMetadata only; the others
        raise NoControllerError: ask a voter). Idempotent; returns the voters after it."""
        ...

    @property
    def state(self) -> dict[str, Any]:
        """The raw replicated state (fsm.py layout): for snapshots only; read `view` instead."""
        ...

    @property
    def view(self) -> MetadataView:
        """The typed read model of `state`, built once per applied state."""
        ...

    def install_snapshot(self, version: int, snapshot: bytes) -> bool:
        """Adopt a state the controller sent in a heartbeat reply (data-only nodes).

        Stores that run the state machine themselves (Raft voters, standalone) ignore it
        and return False; RemoteMetadata returns True when it adopted the snapshot.
        """
        ...

    @property
    def version(self) -> int: ...

    def is_leader(self) -> bool: ...

    def leader_term(self) -> int | None:
        """The Raft term in which this node leads, or None when it does not lead (now).

        The controller takes control in this term (become_controller) and fences its
        decisions with it. LocalMetadata (always the leader, no Raft) answers 0.
        """
        ...

    def role(self) -> str: ...

    def leader_raft_address(self) -> str | None: ...

    def is_ready(self) -> bool: ...

    def leaderless_s(self) -> float:
        """Seconds since this Raft voter last knew a leader (itself included); 0.0 while it knows
        one, and always for stores without Raft (a data-only node's word is its lease)."""
        ...

    def statistics(self) -> MetadataStatistics: ...
