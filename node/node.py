"""Node: lifecycle glue only. Wires the components together, owns no logic.

What the node owns (and stops, in reverse order): the wire factory, the peer channels,
the metadata store, the thread pool for blocking LMDB work (and, next, the pool of
worker processes for compute tasks), the shard registry, the controller, the heartbeat,
the gRPC server with its interceptor chain, and the HTTP room. Components get the few
parts they use (Protocols in the consuming modules), never this object, except the
services and the status/HTTP readers, which see it through their Protocols.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import signal
import socket
import time
import uuid

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shoal.client.wire.channels import PortUnavailableError, Wire
from shoal.client.wire.pb import data_pb2, data_pb2_grpc, jobs_pb2, jobs_pb2_grpc, peer_pb2, peer_pb2_grpc
from shoal.client.wire.retry import RetryPolicy
from shoal.client.wire.tls import TlsError, TlsFiles
from shoal.node import auth, interceptors
from shoal.node.changes import ChangeSignal
from shoal.node.encryption import NodeKey
from shoal.node.compute import map_reduce
from shoal.node.compute.pool import WorkerPool
from shoal.node.compute.service import JobService
from shoal.node.compute.tasks import TaskRunner
from shoal.node.config import NodeConfig
from shoal.node.controller import Controller
from shoal.node.datadir import DataDir
from shoal.node.errors import NodeError, StartupError
from shoal.node.heartbeat import Heartbeat
from shoal.node.identity import Identity
from shoal.node.lease import Lease
from shoal.node.metadata import MetadataStore, commands
from shoal.node.replication.context import ReplicationContext
from shoal.node.replication.peers import PeerClients
from shoal.node.scrubber import Scrubber
from shoal.node.server import DataService, PeerService, warn_if_drain_cancelled
from shoal.node.shards import ShardRegistry
from shoal.node.status import cluster_map, node_status
from shoal.node.storage.shard_store import file_limit_message
from shoal.node.streams import StreamGuard

logger = logging.getLogger(__name__)

REGISTER_WARN_EVERY_S = 30.0   # a node waiting to be registered says why this often (a --join target down)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.datadir = DataDir(config.data_dir)
        self.started_at_s = time.monotonic()
        self.ready = False            # registered and serving: gRPC health SERVING (/readyz: and a lease)
        self._ready_at_s = 0.0        # when `ready` was last set (a lease lapse counts from then at the earliest)
        self.http_address = ""        # where others reach the web app (NodeStatus.http_address); "" = HTTP off
        self._changed = asyncio.Event()

    def _make_metadata(self, peers: PeerClients) -> MetadataStore:
        loop = asyncio.get_running_loop()

        def on_change() -> None:   # called from the pysyncobj tick thread
            loop.call_soon_threadsafe(self._metadata_changed)

        if self.config.raft:
            from shoal.node.metadata.raft import RaftMetadata
            return RaftMetadata(self.config, on_change)
        if self.config.join:
            from shoal.node.metadata.remote import RemoteMetadata
            return RemoteMetadata(self.config.join, peers, self.identity, on_change)
        from shoal.node.metadata.local import LocalMetadata
        return LocalMetadata(self.config.data_dir, on_change)

    def _metadata_changed(self) -> None:
        self._changed.set()
        if hasattr(self, "tasks"):   # the store may report a change while the node is still being wired
            self.changes.notify()
            self.tasks.reconcile()

    # ---- what status, metrics and the HTTP room read (their Protocols) ----

    def raft_role(self) -> str:
        return "none" if not self.config.raft else self.metadata.role()

    def controller_id(self) -> str | None:
        if self.config.standalone:
            return self.config.node_id
        # The heartbeat's word only while its lease holds: after a lost quorum the last grant's
        # controller is history, and status must not name it (issue: status during a lost quorum).
        known = self.heartbeat.known_controller if self.lease_valid() else ""
        return self.controller.leader_id() or known or None

    def node_silence(self) -> dict[str, float]:
        return self.controller.silence()

    def lease_valid(self) -> bool:
        return self.context.lease_valid()

    def lease_lapsed_s(self) -> float:
        """Seconds this ready node has gone without a valid lease (0.0 while it holds one or is not ready)."""
        if not self.ready:
            return 0.0
        return self.lease.lapsed_s(self.metadata.version, self._ready_at_s)

    def request_statistics(self) -> interceptors.RequestStatistics:
        return self.interceptors[1].statistics()

    async def disk_usage(self) -> tuple[int, int]:
        return await self.context.run_blocking(self.datadir.disk_usage)

    def load(self) -> tuple[int, int]:
        return self.request_statistics().in_flight, self.tasks.statistics().running

    def scrubbed_at_s(self) -> dict[str, float]:
        return self.scrubber.scrubbed_at_s

    # ---- the dashboard API's cluster-wide readings (node/http/api.py ClusterSource) ----

    def cluster_map(self) -> data_pb2.ClusterMap:
        return cluster_map(self)

    async def own_status(self) -> data_pb2.NodeStatus:
        return await node_status(self)

    async def peer_status(self, address: str, timeout_s: float) -> data_pb2.NodeStatus:
        """GetNodeStatus of the node at `address`; grpc.aio.AioRpcError when it does not answer in time."""
        answer: data_pb2.NodeStatus = await self.peers.data(address).GetNodeStatus(data_pb2.NodeStatusRequest(),
                                                                                   timeout=timeout_s)
        return answer

    # ---- lifecycle ----

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        self.datadir.lock()
        try:
            self.identity = Identity.load(self.config.data_dir, self.config.node_id, self.config.cluster_id)
            await self._serve(stop)
        finally:
            self.datadir.unlock()

    def _wire_components(self) -> None:
        config = self.config
        tls = TlsFiles.from_dir(config.tls_dir, "node") if config.tls_dir else None
        if tls is not None:
            try:
                tls.read()
            except TlsError as exc:
                raise StartupError(str(exc)) from None
        else:
            logger.warning("node %s runs WITHOUT TLS: anyone who reaches %s can read and write its data "
                           "(start with --tls-dir DIR from `shoal certs init DIR`)", config.node_id, config.listen)
        credential = auth.node_credential(config.raft_password) if config.raft_password else ""
        self.wire = Wire(message_bytes_max=config.message_bytes_max, tls=tls, token=credential)
        self.token_check = auth.TokenCheck(lambda: self.metadata.state.get("tokens", {}), credential)
        self.peers = PeerClients(self.wire)
        self.metadata = self._make_metadata(self.peers)
        self.lease = Lease(always_valid=config.standalone)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=config.lmdb_threads,
                                                              thread_name_prefix="lmdb")
        keys = NodeKey.load(config.node_id, config.encryption_key_file)
        self.context = ReplicationContext(config, self.metadata, self.lease, self.peers, self.executor, self.identity,
                                          keys)
        self.registry = ShardRegistry(self.datadir, self.context)
        self.controller = Controller(config, self.context)
        self.heartbeat = Heartbeat(config, self.metadata, self.registry.replicas, self.lease, self.peers,
                                   self.controller, self.identity)
        self.streams = StreamGuard(config.streams_max, config.stream_idle_timeout_s, config.overload_retry_after_s)
        # the whole chain, outermost first (node/interceptors.py); the stream guard is innermost
        self.interceptors = (*interceptors.chain(config.inflight_requests_max, config.overload_retry_after_s),
                             auth.Authentication(self.token_check), self.streams)
        self.changes = ChangeSignal()
        self.pool = WorkerPool(config.workers)
        output = map_reduce.OutputWriter(self.peers, lambda: self.metadata.view, config)
        self.tasks = TaskRunner(config, self.metadata, self.registry, self.pool, self.context, output, keys)
        self.scrubber = Scrubber(self.registry, self.context, self._metadata_changed)

    async def _serve(self, stop: asyncio.Event) -> None:
        config = self.config
        self._wire_components()
        self.registry.open_existing()
        server = self.wire.aio_server(self.interceptors)
        data_pb2_grpc.add_DataServicer_to_server(DataService(self), server)
        peer_service = PeerService(self)
        self.copy_throttle = peer_service.copy_throttle   # /metrics reads the bytes every copy sent
        peer_pb2_grpc.add_PeerServicer_to_server(peer_service, server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobService(self, self.changes), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection([
            data_pb2.DESCRIPTOR.services_by_name["Data"].full_name,
            peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name,
            jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self.wire.add_port(server, config.listen)
        except PortUnavailableError as exc:
            raise StartupError(_bind_failure(str(exc))) from None
        await server.start()
        self.metadata.start()
        logger.info("node %s listening on %s (%s)", config.node_id, config.listen, self._mode())
        http_server = None
        try:
            if config.http_listen:   # StartupError (port taken) unwinds through the finally below
                from shoal.node import http
                http_server = await http.serve(self, self.token_check)
                self.http_address = http_server.advertised(config.address)
            try:   # a StartupError inside the group (e.g. the cluster refused us) is one line, not a group
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._register(health_servicer)),
                             group.create_task(self._reconcile_loop()), group.create_task(self.pool.warm()),
                             group.create_task(self.scrubber.run())]
                    if not config.standalone:
                        tasks.append(group.create_task(self.heartbeat.run()))
                    if config.raft:
                        tasks.append(group.create_task(self.controller.run()))
                    await stop.wait()
                    logger.info("node %s stopping", config.node_id)
                    self.ready = False
                    self.tasks.close()
                    await health_servicer.enter_graceful_shutdown()
                    for task in tasks:
                        task.cancel()
            except BaseExceptionGroup as group:
                startup = [exc for exc in group.exceptions if isinstance(exc, StartupError)]
                if startup:
                    raise startup[0] from None
                raise
        finally:
            if http_server is not None:
                await http_server.stop()   # first, so /readyz stops answering before gRPC does
            await server.stop(grace=2.0)
            self.pool.close()
            self.registry.close()
            self.metadata.stop()
            self.executor.shutdown(wait=True)
            await self.peers.close()
            logger.info("node %s stopped", config.node_id)

    def _mode(self) -> str:
        if self.config.raft:
            return f"metadata voter, raft {self.config.raft}"
        return f"data-only, joining through {self.config.join}" if self.config.join else "standalone"

    def _registered(self) -> bool:
        node = self.metadata.view.node(self.config.node_id)
        # A voter wiped and restarted finds itself registered in the log Raft refilled, but its
        # data dir forgot the cluster id: without it every peer message is refused (_ensure_cluster_id)
        knows_cluster = bool(self.config.join or self.identity.cluster_id)
        return (node is not None and node.address == self.config.address and node.alive
                and self.metadata.is_ready() and knows_cluster)

    async def _register(self, health_servicer: health.aio.HealthServicer) -> None:
        """Learn (or make) the cluster id, register this node in the metadata (retried until
        it sticks), then report SERVING."""
        config = self.config
        command = commands.register_node(config.node_id, config.address, config.zone, config.raft,
                                         request_id=f"register-{config.node_id}-{time.time_ns()}")
        backoff = RetryPolicy.fixed(config.register_retry_s).backoff()
        started_s = warned_s = time.monotonic()
        while not self._registered():   # retried until the cluster accepts us: no deadline at start-up
            problem = ""
            try:
                problem = await self._register_once(command)
            except NodeError as exc:
                if isinstance(exc, StartupError):
                    raise
                problem = str(exc)
                logger.debug("registration pending: %s", exc)
            if time.monotonic() - warned_s >= REGISTER_WARN_EVERY_S:   # said, not only at DEBUG
                warned_s = time.monotonic()
                logger.warning("node %s not registered in the cluster after %.0f s: %s", config.node_id,
                               warned_s - started_s, problem or "the metadata does not list it alive yet")
            await backoff.asleep(float("inf"))
        self._ready_at_s = time.monotonic()
        self.ready = True   # before the await: /readyz and gRPC health never disagree for a loop turn
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        logger.info("node %s ready", config.node_id)

    async def _register_once(self, command: bytes) -> str:
        """One attempt; "" or why a join did not get through (retried)."""
        config = self.config
        if config.join:
            try:
                await self.peers.peer(config.join).Join(peer_pb2.JoinRequest(
                    node_id=config.node_id, address=config.address, zone=config.zone,
                    cluster_id=self.identity.cluster_id), timeout=config.propose_forward_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:   # the cluster said no (e.g. removed): final
                    raise StartupError(f"node {config.node_id} rejected by the cluster: {exc.details()}") from None
                logger.debug("join through %s pending: %s %s", config.join, exc.code().name, exc.details())
                return f"cannot join through {config.join}: {exc.code().name} {exc.details()}"
            return ""
        await self._ensure_cluster_id()
        result = await self.metadata.propose(command, timeout_s=config.propose_forward_timeout_s)
        if not result.get("ok"):
            raise StartupError(f"node {config.node_id} rejected by the cluster: {result.get('message')}")
        warn_if_drain_cancelled(config.node_id, result)
        return ""

    async def _ensure_cluster_id(self) -> None:
        """A voter or standalone node: bootstrap the cluster id (first init wins) and record it.

        A data dir that belongs to another cluster than the metadata's refuses to start.
        """
        theirs = self.metadata.view.cluster_id
        if not theirs:
            proposed = self.identity.cluster_id or uuid.uuid4().hex
            result = await self.metadata.propose(commands.init_cluster(proposed),
                                                 timeout_s=self.config.propose_forward_timeout_s)
            theirs = str(result.get("cluster_id", ""))
        if theirs and not self.identity.adopt(theirs):
            raise StartupError(f"data dir {self.config.data_dir} belongs to cluster {self.identity.cluster_id}, "
                               f"the metadata (Raft log) to cluster {theirs}: refusing to mix two clusters")

    async def _reconcile_loop(self) -> None:
        sync: asyncio.Task[None] | None = None   # incarnation proposals run beside, one round at a time
        try:
            while True:
                try:
                    self.registry.reconcile()
                except NodeError as exc:
                    logger.warning("reconcile failed: %s", exc)
                self.tasks.reconcile()   # also periodically: an attempt whose replica opened late
                if (sync is None or sync.done()) and self.metadata.is_ready() and self.metadata.view.cluster_id:
                    sync = asyncio.get_running_loop().create_task(self._sync_incarnations())
                self._changed.clear()
                try:   # not wait_for: in 3.11 it swallows a cancel that lands as the event fires (the loop then ran forever)
                    async with asyncio.timeout(self.config.heartbeat_interval_s):
                        await self._changed.wait()
                except TimeoutError:
                    pass
        finally:
            if sync is not None:
                sync.cancel()

    async def _sync_incarnations(self) -> None:
        try:
            await self.registry.sync_incarnations()
        except NodeError as exc:
            logger.info("incarnation sync incomplete: %s", exc)


def _bind_failure(message: str) -> str:
    """The real cause of a failed bind: grpc says "address in use" also when it could not get
    a socket because the open-files limit is reached (issue 16), so try to make one."""
    try:
        socket.socket().close()
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return file_limit_message("cannot listen: no file descriptor left for the socket")
    return message
