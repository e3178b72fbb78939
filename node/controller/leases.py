"""Heartbeats in, leases out: the controller's soft view of who is alive.

A node's heartbeat renews its primary lease (granted in the reply, counted by the node
from when it *sent* the heartbeat) and reports its shard sequence numbers, which
promotion uses to pick the most complete backup, and the replicas it holds on disk, which
repair uses to prefer, as a learner, a node that may catch up by replay (repair.py). Data-only nodes get the metadata
snapshot in the reply when theirs is older.

The table is soft state: a new leader starts it empty and counts every node as heard at
the moment it took over (`start_leading`), so a node is never declared dead before a
lease granted by the previous leader has expired.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgpack

from shoal.client.wire.pb import peer_pb2
from shoal.node.metadata import jobs

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.metadata import MetadataStore
    from shoal.node.metadata.view import ShardView


class LeaseTable:
    def __init__(self, config: NodeConfig, metadata: MetadataStore) -> None:
        self.config = config
        self.metadata = metadata
        self._leading_since_s: float | None = None
        self._last_seen_s: dict[str, float] = {}
        self._states: dict[str, str] = {}           # node -> its metadata state when last noted
        self._alive_since_s: dict[str, float] = {}   # node -> when it was noted becoming alive (registered)
        # node -> (dataset id, shard) -> (seq, incarnation) from its last heartbeat: what it holds
        self._reported: dict[str, dict[tuple[str, int], tuple[int, str]]] = {}

    def start_leading(self, now_s: float) -> None:
        """A fresh view: on taking control, and again after a stall (see controller/__init__.py)."""
        self._leading_since_s = now_s
        self._last_seen_s.clear()
        self._reported.clear()
        self._states.clear()
        self._alive_since_s.clear()

    def note_states(self, states: Mapping[str, str], now_s: float) -> None:
        """Record every node's metadata state (node id -> state); after the first round, one that
        became alive (it registered, new or after being dead) counts as heard then. Without it a
        node registered after this controller took control looked silent since then and was
        declared dead before its first heartbeat came (seen on every join)."""
        first_round = not self._states
        for node_id, state in states.items():
            if not first_round and state == "alive" and self._states.get(node_id) != "alive":
                self._alive_since_s[node_id] = now_s
            self._states[node_id] = state

    def heartbeat(self, request: peer_pb2.HeartbeatRequest, *, leader_address: str | None) -> peer_pb2.HeartbeatResponse:
        if not self.metadata.is_leader():
            return peer_pb2.HeartbeatResponse(lease_granted=False, controller_address=leader_address or "")
        self._last_seen_s[request.node_id] = time.monotonic()
        self._reported[request.node_id] = {(s.dataset_id or s.dataset, s.shard): (s.seq, s.incarnation)
                                           for s in request.shards}
        view = self.metadata.view
        response = peer_pb2.HeartbeatResponse(
            lease_granted=view.node(request.node_id) is not None, lease_s=self.config.lease_s,
            metadata_version=view.version, controller=self.config.node_id,
            controller_address=self.config.address)
        if request.metadata_version < view.version or request.jobs_version < view.jobs_version:
            response.metadata = msgpack.packb(jobs.without_results(dict(self.metadata.state)), use_bin_type=True)
        return response

    def silent_s(self, node_id: str, now_s: float) -> float:
        """Seconds since the node was last heard, as far as this controller knows; a node not
        heard since this controller took control counts as heard then (never longer silent), and
        one noted becoming alive counts as heard at that moment (note_states)."""
        since = self._last_seen_s.get(node_id, self._leading_since_s or now_s)
        since = max(since, self._alive_since_s.get(node_id, since))
        return max(0.0, now_s - since)

    def heard_within(self, node_id: str, now_s: float, window_s: float) -> bool:
        """The node's heartbeat reached this controller, since it took control, within window_s."""
        seen_s = self._last_seen_s.get(node_id)
        return seen_s is not None and now_s - seen_s < window_s

    def reported(self, node_id: str, shard: ShardView) -> tuple[int, str] | None:
        """(seq, incarnation) of the node's replica of this shard (this dataset id) in its last
        heartbeat; None if never reported."""
        return self._reported.get(node_id, {}).get((shard.dataset_id, shard.index))

    def reported_seq(self, node_id: str, shard: ShardView) -> int:
        """The replica's sequence number in the node's last heartbeat; -1 if never reported."""
        held = self.reported(node_id, shard)
        return -1 if held is None else held[0]
