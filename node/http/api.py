"""/api/v1/...: the dashboard's JSON, which scripts may read too. Read-only, GET only.

    /api/v1/cluster    the `shoal status --json` dict (client/wire/status.py), each degraded
                       shard with "under_replicated_for_s", plus "served_by" {id, address,
                       http_address}, "time_s" (unix),
                       "redundancy" (views.redundancy) and "under_replicated_counted_from_s"
    /api/v1/shards     {"datasets": views.datasets(...)}: shard maps with each holder's report
    /api/v1/repairs    views.repairs(...): degraded shards, copies under way, redundancy
    /api/v1/jobs       {"jobs": views.jobs(view)}: newest first
    /api/v1/chaos                      {"root": str, "reports": [{name, modified_at_s, has_timeline, ...summary}]}
    /api/v1/chaos/{name}/report.json   that report as written (404 if none)
    /api/v1/chaos/{name}/timeline.png  its picture (404 if none)

Any node answers for the whole cluster, from the same two sources as `shoal status`: its
own copy of the cluster map (a voter's Raft state, a data-only node's copy from the
controller) and every node's NodeStatus, asked over gRPC in parallel with PEER_TIMEOUT_S
each. The controller's answer carries its view of who is silent. A node that does not
answer is listed as unreachable, never an error of the request. One such fan-out serves
every request for SNAPSHOT_MAX_AGE_S, and concurrent requests share one fan-out, so ten
open pages cost about what one does.

CORS: every /api response allows any origin, because the page switches to another node's
API when the node that served it is lost (the data is read-only; when token auth comes it
will check a header a page must set, which CORS does not let other sites do unasked).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import grpc
from aiohttp import web

from shoal.client.wire.pb import data_pb2
from shoal.client.wire.status import assemble
from shoal.node.http import chaos_reports, views
from shoal.node.http.under_replication import OBSERVE_PERIOD_S, UnderReplicationClock

if TYPE_CHECKING:
    import pathlib

    from shoal.node.config import NodeConfig
    from shoal.node.metadata.view import MetadataView

logger = logging.getLogger(__name__)
T = TypeVar("T")

PEER_TIMEOUT_S: Final = 1.0        # a node slower than this to answer its status is shown unreachable
SNAPSHOT_MAX_AGE_S: Final = 1.0    # one fan-out serves every request this long (the page polls every ~1.5 s)
CORS_HEADERS: Final = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}


class ApiMetadata(Protocol):
    @property
    def view(self) -> MetadataView: ...


class BlockingReads(Protocol):
    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the node's bounded blocking executor (here: reading report files)."""
        ...


class ClusterSource(Protocol):
    """What the API reads of the node (node.Node satisfies it)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> ApiMetadata: ...

    @property
    def context(self) -> BlockingReads: ...

    def cluster_map(self) -> data_pb2.ClusterMap: ...

    async def own_status(self) -> data_pb2.NodeStatus: ...

    async def peer_status(self, address: str, timeout_s: float) -> data_pb2.NodeStatus: ...


class NodeUnreachableError(Exception):
    """A node did not answer its status (the entry's "error" says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    cluster_map: data_pb2.ClusterMap
    statuses: dict[str, data_pb2.NodeStatus | BaseException]   # by gRPC address
    status: dict[str, Any]                                     # assemble(cluster_map, statuses)
    taken_s: float                                             # monotonic


class Api:
    """The /api/v1 handlers and the fan-out they share."""

    def __init__(self, node: ClusterSource) -> None:
        self.node = node
        self.clock = UnderReplicationClock()
        self.reports_root: pathlib.Path = chaos_reports.reports_root(node.config)
        self._snapshot: Snapshot | None = None
        self._pending: asyncio.Task[Snapshot] | None = None

    def register(self, app: web.Application) -> None:
        for path, handler in (("/api/v1/cluster", self.cluster), ("/api/v1/shards", self.shards),
                              ("/api/v1/repairs", self.repairs), ("/api/v1/jobs", self.jobs),
                              ("/api/v1/chaos", self.chaos),
                              ("/api/v1/chaos/{name}/report.json", self.chaos_report),
                              ("/api/v1/chaos/{name}/timeline.png", self.chaos_timeline)):
            app.router.add_get(path, handler)
        app.cleanup_ctx.append(self._watch_view)

    async def _watch_view(self, app: web.Application) -> AsyncIterator[None]:
        """While the app runs: observe the view every OBSERVE_PERIOD_S (the under-replication clock).
        A plain task, not the node's TaskGroup: it lives and dies with the web app, and only reads."""
        async def observe() -> None:
            while True:
                self.clock.observe(self.node.metadata.view, time.monotonic())
                await asyncio.sleep(OBSERVE_PERIOD_S)   # periodic, not a wait for a state
        task = asyncio.get_running_loop().create_task(observe())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task   # re-raises anything but the cancel: a broken observer is not hidden

    # ---- the fan-out ----

    async def snapshot(self) -> Snapshot:
        """The cluster as of at most SNAPSHOT_MAX_AGE_S ago; concurrent callers share one fan-out."""
        current = self._snapshot
        if current is not None and time.monotonic() - current.taken_s < SNAPSHOT_MAX_AGE_S:
            return current
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._take())
        # shield: one caller that goes away (a closed tab) must not cancel the others' fan-out
        snapshot = await asyncio.shield(self._pending)
        self._snapshot = snapshot
        return snapshot

    async def _take(self) -> Snapshot:
        cluster_map = self.node.cluster_map()
        addresses = list(dict.fromkeys(node.address for node in cluster_map.nodes if node.address))
        answers = await asyncio.gather(*(self._ask(address) for address in addresses))
        statuses = dict(zip(addresses, answers))
        now_s = time.monotonic()
        self.clock.observe(self.node.metadata.view, now_s)
        return Snapshot(cluster_map, statuses, assemble(cluster_map, statuses), now_s)

    async def _ask(self, address: str) -> data_pb2.NodeStatus | BaseException:
        try:
            if address == self.node.config.address:   # this node: no RPC to itself
                async with asyncio.timeout(PEER_TIMEOUT_S):
                    return await self.node.own_status()
            return await self.node.peer_status(address, PEER_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return NodeUnreachableError(f"{exc.code().name}: {exc.details() or 'no answer'}")
        except TimeoutError:
            return NodeUnreachableError(f"no answer within {PEER_TIMEOUT_S} s")
        except OSError as exc:
            return NodeUnreachableError(f"status unreadable: {exc}")

    # ---- routes ----

    async def cluster(self, request: web.Request) -> web.Response:
        snapshot = await self.snapshot()
        config = self.node.config
        me: dict[str, Any] = next((entry for entry in snapshot.status["nodes"] if entry["id"] == config.node_id), {})
        repairs = views.repairs(snapshot.status, self.clock, time.monotonic())
        body = {**snapshot.status, "degraded_shards": repairs["degraded_shards"], "time_s": time.time(),
                "redundancy": repairs["redundancy"],
                "served_by": {"id": config.node_id, "address": config.address,
                              "http_address": me.get("http_address") or ""},
                "under_replicated_counted_from_s": self.clock.counted_from_s(time.monotonic())}
        return _json(body)

    async def shards(self, request: web.Request) -> web.Response:
        snapshot = await self.snapshot()
        return _json({"datasets": views.datasets(snapshot.cluster_map, snapshot.statuses, self.clock,
                                                 time.monotonic())})

    async def repairs(self, request: web.Request) -> web.Response:
        snapshot = await self.snapshot()
        return _json(views.repairs(snapshot.status, self.clock, time.monotonic()))

    async def jobs(self, request: web.Request) -> web.Response:
        return _json({"jobs": views.jobs(self.node.metadata.view)})

    async def chaos(self, request: web.Request) -> web.Response:
        found = await self._read(chaos_reports.list_reports, self.reports_root)
        return _json({"root": str(self.reports_root),
                      "reports": [{"name": report.name, "modified_at_s": report.modified_at_s,
                                   "has_timeline": report.has_timeline, **report.report} for report in found]})

    async def chaos_report(self, request: web.Request) -> web.Response:
        report = await self._read(chaos_reports.read_report, self.reports_root, request.match_info["name"])
        if report is None:
            raise web.HTTPNotFound(text="no such chaos report\n", headers=CORS_HEADERS)
        return _json(report)

    async def chaos_timeline(self, request: web.Request) -> web.Response:
        picture = await self._read(chaos_reports.read_timeline, self.reports_root, request.match_info["name"])
        if picture is None:
            raise web.HTTPNotFound(text="no timeline picture for this report\n", headers=CORS_HEADERS)
        return web.Response(body=picture, content_type="image/png", headers=CORS_HEADERS)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.node.context.run_blocking(fn, *args)


def _json(body: Any) -> web.Response:
    return web.json_response(body, headers=CORS_HEADERS)
