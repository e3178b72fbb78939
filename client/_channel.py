"""Where requests go: one long-lived gRPC channel per node, and the cached shard map.

- Channels come from the wire room's factory (`shoal.client.wire.channels.Wire`), with
  the message limit of ClientConfig; its docstring has the options and why.
- Backoff between retries: ClientConfig.retry (20 ms, doubling, capped at 500 ms); one
  attempt may take a quarter of the call's deadline (ClientConfig.attempt_timeout_s), so
  a paused node is retried around.
- `rpc_errors` is the one place where a grpc.RpcError becomes a ShoalError.
- The shard map is an immutable ClusterView swapped as a whole; refreshes are serialized
  (a caller waits for the lock only until its deadline) and skipped when another thread
  already loaded a newer map. A refresh asks every candidate until one has a newer map.
- Unresponsive nodes (issue 15.3): a node that did not answer an attempt (deadline,
  unreachable) is recorded for ClientConfig.unresponsive_hold_s. Meanwhile it is asked
  last for maps (a paused controller must not eat a refresh's time), and no call sends it
  a request before a map reload that began after its silence: the controller may have
  replaced it, and the new map would name the successor. The record is shared by every
  call of the client (unary calls, scans, put_many streams).
- First contact (issue 16.5): until some address has answered, the first map load and
  the first call to a seed wait at most ClientConfig.connect_timeout_s for any seed,
  then raise SeedsUnreachableError, which is not retried (_contact.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from shoal.client._contact import first_contact, tls_hint
from shoal.client._errors import (
    ClusterUnreachableError, DatasetNotFoundError, DeadlineExceededError, NotPrimaryError, SeedsUnreachableError,
    ShoalError, UnavailableError, error_from_rpc, may_have_applied,
)
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc
from shoal.client.wire.pb import jobs_pb2_grpc
from shoal.client.wire.routing import shard_for_key

if TYPE_CHECKING:
    from shoal.client._config import ClientConfig

logger = logging.getLogger(__name__)



@contextlib.contextmanager
def rpc_errors(what: str, *, node: str, dataset: str | None = None, key: str | bytes | None = None,
               shard: int | None = None) -> Iterator[None]:
    """Turn a grpc.RpcError raised in the block into the matching ShoalError."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, what, node=node, dataset=dataset, key=key, shard=shard) from exc


@dataclasses.dataclass(frozen=True, slots=True)
class ShardRoute:
    shard: int
    epoch: int
    primary: str        # node id; "" while the shard has no primary
    address: str        # the primary's gRPC address; "" when unknown


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetRoute:
    name: str
    shards: int
    replication: int
    routes: tuple[ShardRoute, ...]
    id: str = ""      # the dataset incarnation; a node refuses requests naming an older one

    def target(self, shard: int) -> pb.RecordTarget:
        """What a record request names: dataset (and its id), shard and the epoch of our map."""
        return pb.RecordTarget(dataset=self.name, shard=shard, epoch=self.routes[shard].epoch, dataset_id=self.id)


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterView:
    """One ClusterMap, indexed for routing."""

    version: int
    message: pb.ClusterMap
    datasets: Mapping[str, DatasetRoute]
    addresses: Mapping[str, str]       # node id -> gRPC address

    @classmethod
    def from_message(cls, message: pb.ClusterMap) -> ClusterView:
        addresses = {node.id: node.address for node in message.nodes}
        datasets = {info.name: dataset_route(info, addresses) for info in message.datasets}
        return cls(message.version, message, datasets, addresses)

    def with_dataset(self, info: pb.DatasetInfo | None, name: str) -> ClusterView:
        """This view with one dataset replaced (info) or removed (None)."""
        datasets = dict(self.datasets)
        datasets.pop(name, None)
        if info is not None:
            datasets[name] = dataset_route(info, self.addresses)
        return dataclasses.replace(self, datasets=datasets)


def dataset_route(info: pb.DatasetInfo, addresses: Mapping[str, str]) -> DatasetRoute:
    by_index = {shard.index: shard for shard in info.shard_map}
    routes = []
    for index in range(info.shards):
        shard = by_index.get(index)
        if shard is None:
            routes.append(ShardRoute(index, 0, "", ""))
        else:
            routes.append(ShardRoute(index, shard.epoch, shard.primary, addresses.get(shard.primary, "")))
    return DatasetRoute(info.name, info.shards, info.replication, tuple(routes), info.id)


class UnresponsiveNodes:
    """Addresses that recently did not answer within an attempt; thread-safe.

    An entry lasts `hold_s` after the node's latest silence, or until it answers. While it
    lasts the node is `recent` (asked last for maps); it is also `held` (not to be sent a
    request) until a map reload that began after the silence has been answered.
    """

    def __init__(self, hold_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        assert hold_s > 0
        self._hold_s = hold_s
        self._clock = clock
        self._lock = threading.Lock()
        self._silent_s: dict[str, float] = {}    # address -> when it last failed to answer
        self._map_checked_s = float("-inf")      # start of the latest answered map reload

    def mark(self, address: str) -> None:
        now = self._clock()
        with self._lock:
            self._silent_s = {a: t for a, t in self._silent_s.items() if now - t < self._hold_s}
            self._silent_s[address] = now

    def clear(self, address: str) -> None:
        with self._lock:
            self._silent_s.pop(address, None)

    def map_checked(self, started_s: float) -> None:
        """A map reload that began at `started_s` was answered (newer map or not)."""
        with self._lock:
            self._map_checked_s = max(self._map_checked_s, started_s)

    def recent(self) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            return frozenset(a for a, t in self._silent_s.items() if now - t < self._hold_s)

    def held(self, address: str) -> bool:
        if address not in self._silent_s:   # the hot path (every request): no lock, no clock
            return False
        now = self._clock()
        with self._lock:
            silent_s = self._silent_s.get(address)
            return silent_s is not None and now - silent_s < self._hold_s and silent_s >= self._map_checked_s


class Transport:
    """Channels per address plus the cached cluster view; thread-safe."""

    def __init__(self, config: ClientConfig) -> None:
        assert config.addresses
        self.config = config
        self.seeds = config.addresses
        self.wire = config.wire()
        self.unresponsive = UnresponsiveNodes(config.unresponsive_hold_s)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._contact_lock = threading.Lock()
        self._stubs: dict[str, tuple[grpc.Channel, pb_grpc.DataStub]] = {}
        self._jobs_stubs: dict[str, jobs_pb2_grpc.JobsStub] = {}
        self._view: ClusterView | None = None
        self._answered = False      # some node has answered this client (first contact is over)
        self._closed = False

    # ---- channels ----

    def stub(self, address: str) -> pb_grpc.DataStub:
        return self._entry(address)[1]

    def jobs_stub(self, address: str) -> jobs_pb2_grpc.JobsStub:
        """The Jobs service on the same channel as the Data service."""
        channel = self._entry(address)[0]
        with self._lock:
            stub = self._jobs_stubs.get(address)
            if stub is None:
                stub = self._jobs_stubs[address] = jobs_pb2_grpc.JobsStub(channel)
            return stub

    def _entry(self, address: str) -> tuple[grpc.Channel, pb_grpc.DataStub]:
        with self._lock:
            if self._closed:
                raise ShoalError("the client is closed", node=address)
            entry = self._stubs.get(address)
            if entry is None:
                channel = self.wire.channel(address)
                entry = self._stubs[address] = (channel, pb_grpc.DataStub(channel))
            return entry

    def call(self, address: str, method: str, request: Any, deadline_s: float, *, what: str,
             dataset: str | None = None, key: str | bytes | None = None, shard: int | None = None,
             service: str = "data") -> Any:
        """One unary call with the time left until `deadline_s` (time.monotonic).

        The first call to a seed of a client nothing has answered yet makes first contact.
        """
        if not self._answered and address in self.seeds:
            self.contact(deadline_s)
        rpc = getattr(self.stub(address) if service == "data" else self.jobs_stub(address), method)
        try:
            with rpc_errors(what, node=address, dataset=dataset, key=key, shard=shard):
                response = rpc(request, timeout=_timeout_s(deadline_s))
        except ShoalError as exc:
            self.note_failure(address, exc)
            raise
        self._answered = True
        self.unresponsive.clear(address)
        return response

    def note_failure(self, address: str, exc: ShoalError) -> None:
        """Record whether `address` answered (with an error) or stayed silent."""
        if unreachable(exc):
            self.unresponsive.mark(address)
        else:
            self._answered = True
            self.unresponsive.clear(address)

    def contact(self, deadline_s: float) -> None:
        """Until some node has answered: wait for a seed, at most connect_timeout_s (_contact.py).

        Raises SeedsUnreachableError when none answered.
        """
        if self._answered:
            return
        if not self._contact_lock.acquire(timeout=_timeout_s(deadline_s)):
            raise UnavailableError("first contact: another call's did not finish before the deadline", sent=False)
        try:
            if self._answered:     # another thread made contact meanwhile
                return
            window_s = max(0.0, min(self.config.connect_timeout_s, deadline_s - time.monotonic()))
            contact = first_contact({seed: self._entry(seed)[0] for seed in self.seeds}, window_s)
            if contact.answered is None:
                raise contact.error(self.seeds, tls=self.wire.tls is not None)
            self._answered = True
        finally:
            self._contact_lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries, self._stubs = list(self._stubs.values()), {}
        for channel, _ in entries:
            channel.close()

    # ---- the cluster view ----

    @property
    def version(self) -> int:
        view = self._view
        return -1 if view is None else view.version

    def view(self, deadline_s: float) -> ClusterView:
        view = self._view
        return view if view is not None else self.refresh(deadline_s, seen_version=-1)

    def explained(self, exc: ShoalError, what: str, dataset: str, *, key: str | bytes | None = None,
                  key_bytes: bytes = b"", shard: int | None = None) -> ShoalError:
        """`exc` (a node did not answer, or none is primary) as UnavailableError naming the shard and
        its replicas' states when our map says none of them is on an alive node; else `exc` itself."""
        down = self.shard_down(dataset, key_bytes, shard) if unreachable(exc) or isinstance(exc, NotPrimaryError) else ""
        if not down:
            return exc
        return UnavailableError(f"{what} failed: {down}", dataset=dataset, key=key, shard=shard)

    def shard_down(self, dataset: str, key_bytes: bytes = b"", index: int | None = None) -> str:
        """Why the shard (`index`, or the one holding key_bytes) cannot answer, as our map says: ""
        unless none of its in-sync replicas is on a node the map calls alive (then which, and their states)."""
        view = self._view
        info = next((d for d in view.message.datasets if d.name == dataset), None) if view is not None else None
        if info is None or info.shards == 0:
            return ""
        index = shard_for_key(key_bytes, info.shards) if index is None else index
        shard = next((s for s in info.shard_map if s.index == index), None)
        states = {node.id: node.state for node in view.message.nodes} if view is not None else {}
        if shard is None or any(states.get(node_id) in _SERVING for node_id in shard.replicas):
            return ""
        replicas = ", ".join(f"{node_id} {states.get(node_id) or 'unknown'}" for node_id in shard.replicas)
        return f"shard {dataset}/{index} has no in-sync replica on an alive node (replicas: {replicas or 'none'})"

    def dataset(self, name: str, deadline_s: float) -> DatasetRoute:
        """The route of a dataset; reloads the map once before calling it unknown."""
        view = self.view(deadline_s)
        route = view.datasets.get(name)
        if route is None:
            view = self.refresh(deadline_s, seen_version=view.version)
            route = view.datasets.get(name)
        if route is None:
            raise DatasetNotFoundError(f"dataset {name} does not exist", dataset=name)
        return route

    def primary(self, name: str, deadline_s: float,
                shard_of: Callable[[DatasetRoute], int]) -> tuple[DatasetRoute, ShardRoute]:
        """A dataset's route and the route of its shard `shard_of(route)`, to send a request to.

        When that shard's primary went silent since the last answered map reload, the map
        is reloaded first (asking the silent node last): its successor may be named there.
        If the reload answers without a newer map, the same primary is returned: it may
        only have been slow. A reload nobody answers raises (retriable, never sent).
        """
        route = self.dataset(name, deadline_s)
        shard = route.routes[shard_of(route)]
        if shard.address and self.unresponsive.held(shard.address):
            with self._reloading(deadline_s):
                if self.unresponsive.held(shard.address):    # nobody reloaded meanwhile
                    self._reload(deadline_s)
            route = self.dataset(name, deadline_s)
            shard = route.routes[shard_of(route)]
        return route, shard

    def update_dataset(self, name: str, info: pb.DatasetInfo | None) -> None:
        """Record a create (info) or drop (None) this client just made."""
        with self._refresh_lock:
            if self._view is not None:
                self._view = self._view.with_dataset(info, name)

    def candidates(self) -> list[str]:
        """Addresses to ask for metadata: the controller, the other nodes, then the seeds;
        nodes that recently did not answer come last, in the same order."""
        view = self._view
        ordered: list[str] = []
        if view is not None:
            controller = view.addresses.get(view.message.controller, "")
            alive = [node.address for node in view.message.nodes if node.state == "alive"]
            others = [node.address for node in view.message.nodes if node.state != "alive"]
            ordered = [controller, *alive, *self.seeds, *others]
        else:
            ordered = list(self.seeds)
        unique = list(dict.fromkeys(address for address in ordered if address))
        silent = self.unresponsive.recent()
        return [a for a in unique if a not in silent] + [a for a in unique if a in silent]

    def refresh(self, deadline_s: float, *, seen_version: int) -> ClusterView:
        """Reload the map unless a newer one than `seen_version` is already cached."""
        with self._reloading(deadline_s):
            view = self._view
            if view is not None and view.version > seen_version:
                return view
            return self._reload(deadline_s)

    @contextlib.contextmanager
    def _reloading(self, deadline_s: float) -> Iterator[None]:
        """Hold the refresh lock; waiting for another thread's reload ends at `deadline_s`."""
        if not self._refresh_lock.acquire(timeout=_timeout_s(deadline_s)):
            raise UnavailableError("cluster map: another reload did not finish before the deadline", sent=False)
        try:
            yield
        finally:
            self._refresh_lock.release()

    def _reload(self, deadline_s: float) -> ClusterView:
        """Fetch a newer map into the cache (under the refresh lock); the cached one if none is newer."""
        view = self._view
        started_s = time.monotonic()
        fetched = self._fetch(deadline_s, newer_than=-1 if view is None else view.version)
        self.unresponsive.map_checked(started_s)
        if fetched is not None:
            self._view = view = fetched
            logger.debug("cluster map version %d loaded", fetched.version)
        assert view is not None
        return view

    def _fetch(self, deadline_s: float, *, newer_than: int) -> ClusterView | None:
        """The first map newer than the cached one; None when the nodes that answered have nothing newer.

        Every candidate is asked until one is newer: a node cut off from the Raft majority
        (often the old controller, asked first) keeps answering with the map it has. One
        try gets at most map_timeout_s, and at most half the time left while other
        candidates remain, so one paused node cannot eat the whole reload. Nodes that
        recently did not answer are asked last, and only when no other node answered.
        """
        self.contact(deadline_s)
        tried: list[str] = []
        last: ShoalError | None = None
        answered = False
        candidates, silent = self.candidates(), self.unresponsive.recent()
        for position, address in enumerate(candidates):
            now = time.monotonic()
            if now >= deadline_s or (answered and address in silent):
                break       # the silent nodes come last: not worth the wait once a node answered
            tried.append(address)
            share_s = deadline_s - now if position == len(candidates) - 1 else (deadline_s - now) / 2
            try:
                message = self.call(address, "GetClusterMap", pb.ClusterMapRequest(),
                                    now + min(share_s, self.config.map_timeout_s), what="cluster map")
            except ShoalError as exc:
                last = exc
                continue
            answered = True
            if message.version > newer_than:
                return ClusterView.from_message(message)
        if answered:
            return None
        if last is not None and not unreachable(last):
            raise last      # a node answered, with an error that is not about reaching it
        # A map request applies nothing: whatever the caller sends next was not sent yet.
        raise self.unreachable_error(tried, last, sent=False) from last

    def unreachable_error(self, tried: Sequence[str], last: ShoalError | None, *,
                          sent: bool | None = None) -> ClusterUnreachableError:
        """`sent`: whether the caller's request may have left; default: whether `last` may have applied it."""
        detail = "no time left" if last is None else last.message.split(": ", 1)[-1]
        if sent is None:
            sent = last is not None and may_have_applied(last)
        hint = tls_hint(detail, self.wire.tls is not None)
        return ClusterUnreachableError(f"cannot reach the cluster at {','.join(tried or self.seeds)} ({detail}){hint}",
                                       sent=sent)


_SERVING = ("alive", "draining")   # node states whose replicas serve (a draining node serves until moved)


def unreachable(exc: ShoalError) -> bool:
    """The node did not answer at all (as opposed to answering with an error).

    Not a failed first contact: that is about every seed, and final for the call.
    """
    if isinstance(exc, SeedsUnreachableError):
        return False
    return type(exc) is UnavailableError or isinstance(exc, (DeadlineExceededError, ClusterUnreachableError))


def needs_refresh(exc: ShoalError) -> bool:
    """Reload the map before retrying: the error says so, or the node is gone (maybe replaced)."""
    return exc.refresh_routing or unreachable(exc)


def _timeout_s(deadline_s: float) -> float:
    return max(0.001, deadline_s - time.monotonic())
