"""RemoteMetadata: the metadata of a data-only node (no Raft port).

Its copy of the state arrives in heartbeat replies from the controller; proposals go
to a voter over the Peer API (any voter forwards to the Raft leader). Same API as the
other MetadataStores, so the rest of the node does not care.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import grpc
import msgpack

from shoal.client.wire.codes import ERROR_METADATA_KEY, metadata_value
from shoal.client.wire.pb import peer_pb2
from shoal.node.errors import NoControllerError, UnknownOutcomeError
from shoal.node.metadata import MetadataStatistics, fsm
from shoal.node.metadata.view import MetadataView, ViewCache
from shoal.node.replication.peers import PeerClients

if TYPE_CHECKING:
    from shoal.node.identity import Identity

logger = logging.getLogger(__name__)


class RemoteMetadata:
    def __init__(self, join_address: str, peers: PeerClients, identity: Identity,
                 on_change: Callable[[], None] | None = None) -> None:
        self._join = join_address
        self._peers = peers
        self._identity = identity
        self._on_change = on_change
        self._state: dict[str, Any] = fsm.initial_state()
        self._views = ViewCache()
        self._ready = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def install_snapshot(self, version: int, snapshot: bytes) -> bool:
        """Adopt a newer snapshot from the controller (older ones and other clusters' are ignored).

        The first snapshot names the cluster a new node joins; after that, a snapshot of any
        other cluster (a new cluster started on the same addresses) is refused whatever its
        version, so this node never drops shards because a foreign cluster does not list them.
        """
        state = msgpack.unpackb(snapshot, raw=False, strict_map_key=False)
        cluster_id = str(state.get("cluster_id", ""))
        if not cluster_id or not self._identity.accepts(cluster_id) or not self._identity.adopt(cluster_id):
            return False
        if self._ready and ((state["version"], state.get("jobs_version", 0))
                            < (self._state["version"], self._state.get("jobs_version", 0))):
            return False
        self._state = state
        self._ready = True
        if self._on_change is not None:
            self._on_change()
        return True

    def _voters(self) -> list[str]:
        voters = [n.address for n in self.view.alive_nodes() if n.voter]
        return voters or [self._join]

    async def propose(self, command: bytes, timeout_s: float) -> dict[str, Any]:
        for address in self._voters():
            try:
                request = peer_pb2.ProposeRequest(command=command, cluster_id=self._identity.cluster_id)
                response = await self._peers.peer(address).Propose(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise UnknownOutcomeError(f"proposal through {address} timed out") from exc
                if exc.code() == grpc.StatusCode.UNAVAILABLE and metadata_value(
                        exc.trailing_metadata(), ERROR_METADATA_KEY) == "UNKNOWN_OUTCOME":
                    raise UnknownOutcomeError(f"proposal through {address}: {exc.details()}") from exc
                continue
            return msgpack.unpackb(response.result, raw=False, strict_map_key=False)  # type: ignore[no-any-return]
        raise NoControllerError("no metadata voter reachable to take the proposal")

    def voters(self) -> tuple[str, ...]:
        return ()

    async def change_voters(self, remove: str, add: str, timeout_s: float) -> tuple[str, ...]:
        raise NoControllerError("a data-only node is not a Raft voter: ask a voter")

    async def barrier(self, timeout_s: float) -> None:
        """Not linearizable on a data-only node: its state is as fresh as the last heartbeat."""

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    @property
    def view(self) -> MetadataView:
        return self._views.get(self._state)

    @property
    def version(self) -> int:
        return int(self._state["version"])

    def is_leader(self) -> bool:
        return False

    def leader_term(self) -> int | None:
        return None   # a data-only node never leads

    def role(self) -> str:
        return "none"

    def leader_raft_address(self) -> str | None:
        return None

    def leaderless_s(self) -> float:
        return 0.0   # no Raft here

    def is_ready(self) -> bool:
        return self._ready

    def statistics(self) -> MetadataStatistics:
        return MetadataStatistics(role="none", term=0, commit_index=0, last_applied=0, log_length=0,
                                  leader=None, version=self.version)
