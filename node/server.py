"""grpc.aio servicers for the Data (client) and Peer (node) APIs.

Handlers raise domain errors (node/errors.py); the interceptor chain
(node/interceptors.py) turns them into gRPC statuses, for unary and streaming RPCs
alike. The services see the node through `ServedNode`, the few parts they use.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Protocol

import msgpack

from shoal.client.wire.pb import data_pb2, data_pb2_grpc, peer_pb2, peer_pb2_grpc
from shoal.node import errors, put_stream, validation
from shoal.node.compute.schema import Schema, SchemaError
from shoal.node.metadata import commands
from shoal.node.encryption import SealedCodec
from shoal.node.records import RecordCodec, codec_for
from shoal.node.shards import replicas_per_node
from shoal.node.replication import backup, copy_source
from shoal.node.status import ReplicaSource, StatusSource, cluster_map, dataset_info, node_status
from shoal.node.storage.entry import CompareAndSet, Delete, Put, PutBatch, write_id_of

if TYPE_CHECKING:
    from shoal.node.config import NodeConfig
    from shoal.node.identity import Identity
    from shoal.node.metadata import MetadataStore
    from shoal.node.replication.context import ReplicationContext
    from shoal.node.replication.primary import ShardPrimary
    from shoal.node.replication.replica import Replica

logger = logging.getLogger(__name__)


class ShardLookup(ReplicaSource, Protocol):
    def primary(self, dataset: str, index: int) -> ShardPrimary | None: ...

    def replica_for_peer(self, dataset: str, index: int, dataset_id: str = "") -> Replica: ...

    def check_file_room(self, shards: int) -> None: ...

    def open_error(self, dataset_id: str, index: int) -> str: ...


class HeartbeatSink(Protocol):
    def heartbeat(self, request: peer_pb2.HeartbeatRequest) -> peer_pb2.HeartbeatResponse: ...


class ServedNode(StatusSource, Protocol):
    """What the services use of the node (node.Node satisfies it)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def metadata(self) -> MetadataStore: ...

    @property
    def registry(self) -> ShardLookup: ...

    @property
    def context(self) -> ReplicationContext: ...

    @property
    def controller(self) -> HeartbeatSink: ...

    @property
    def identity(self) -> Identity: ...


def _token_info(token_id: str, entry: dict[str, Any]) -> data_pb2.TokenInfo:
    return data_pb2.TokenInfo(token_id=token_id, role=entry.get("role", ""), name=entry.get("name", ""),
                              created_at_s=entry.get("created_at_s", 0.0))


def result_error(result: dict[str, Any]) -> errors.NodeError:
    """The NodeError for a failed metadata command result."""
    kinds = {"UNKNOWN_DATASET": errors.UnknownDatasetError, "DATASET_EXISTS": errors.DatasetExistsError,
             "NOT_ENOUGH_NODES": errors.NotEnoughNodesError, "STALE_EPOCH": errors.StaleEpochError,
             "INVALID_ARGUMENT": errors.InvalidRequestError, "UNKNOWN_JOB": errors.UnknownJobError,
             "LIMIT_EXCEEDED": errors.LimitExceededError, "JOB_FAILED": errors.JobFailedError}
    return kinds.get(result.get("error", ""), errors.InvalidRequestError)(result.get("message", "rejected"))


async def propose_or_raise(context: ReplicationContext, command: bytes, deadline_s: float) -> dict[str, Any]:
    """Propose through the log; a rejected command raises its NodeError."""
    result = await context.propose(command, deadline_s=deadline_s)
    if not result.get("ok"):
        raise result_error(result)
    return result


def command_for(build: Callable[..., bytes], *args: Any, **kwargs: Any) -> bytes:
    """build(*args, **kwargs): a metadata command made of request values, or InvalidRequestError when
    they cannot make one (a name or id too long for the log's limits): ValueError is a bug elsewhere."""
    try:
        return build(*args, **kwargs)
    except ValueError as exc:
        raise errors.InvalidRequestError(f"the request cannot be recorded: {exc}") from None


def write_id(message: data_pb2.WriteId) -> bytes:
    if not message.client_id:
        return b""
    if len(message.client_id) != 16:
        raise errors.InvalidRequestError("write_id.client_id must be 16 bytes")
    return write_id_of(message.client_id, message.request_seq)


def check_replay(fits: bool, message: data_pb2.WriteId) -> None:
    """InvalidRequestError unless a write's result `fits` its kind of op: a write id the client used
    before for another kind of write (a Put, then a PutBatch) answers that write's recorded result."""
    if not fits:
        raise errors.InvalidRequestError(f"write id (client {message.client_id.hex()}, request_seq "
                                         f"{message.request_seq}) was used for another kind of write")


def _schema_of(request: data_pb2.CreateDatasetRequest) -> dict[str, Any] | None:
    """The schema of a create request (checked by the state machine); InvalidRequestError if not JSON."""
    if not request.schema_json:
        return None
    try:
        schema = json.loads(request.schema_json)
        names = Schema.from_json(schema).names
    except (ValueError, SchemaError) as exc:
        raise errors.InvalidRequestError(f"dataset {request.name}: bad schema: {exc}") from None
    if "_key" in names:   # checked here, not in the state machine: a replayed log must apply as it did
        raise errors.InvalidRequestError(f"dataset {request.name}: bad schema: field '_key': the name is reserved "
                                         "for the record key in queries")
    return schema if isinstance(schema, dict) else None


def warn_if_drain_cancelled(node_id: str, result: dict[str, Any]) -> None:
    """A register_node result: say when it ended the node's drain (a restart does)."""
    if result.get("drain_cancelled"):
        logger.warning("node %s registered again while draining: its drain is cancelled (copies already made "
                       "elsewhere stay); drain it again with shoal node drain %s", node_id, node_id)



class DataService(data_pb2_grpc.DataServicer):
    def __init__(self, node: ServedNode) -> None:
        self.node = node
        self.config = node.config

    def _primary(self, target: data_pb2.RecordTarget, key: bytes | None) -> ShardPrimary:
        """The active primary for the target, checked against ONE metadata view."""
        view = self.node.metadata.view
        shard = validation.shard_of(view, target.dataset, target.shard, target.epoch, target.dataset_id)
        if key is not None:
            shards = view.datasets[target.dataset].shards
            validation.check_key(self.config, target.dataset, key, shards, target.shard)
        primary = self.node.registry.primary(shard.dataset_id, target.shard)
        me = self.config.node_id
        if shard.primary != me:
            raise errors.NotPrimaryError(f"shard {shard.name}: primary is {shard.primary}, not {me}")
        if primary is None:
            cause = self.node.registry.open_error(shard.dataset_id, target.shard)
            raise errors.NotPrimaryError(f"shard {shard.name}: {me} is its primary but has not opened its replica "
                                         f"{f'({cause})' if cause else 'yet'}")
        primary.check_serving(view.version)
        return primary

    async def _stable_primary(self, target: data_pb2.RecordTarget, key: bytes | None) -> ShardPrimary:
        """Like _primary, once no write group is in flight; read before the next await."""
        while True:
            primary = self._primary(target, key)
            if primary.stable:
                return primary
            await primary.wait_stable()

    async def _propose(self, command: bytes) -> dict[str, Any]:
        return await propose_or_raise(self.node.context, command, self.config.propose_timeout_s)

    def _codec(self, target: data_pb2.RecordTarget) -> RecordCodec | SealedCodec | None:
        """Typed encoding and/or sealing (EncryptionKeyError when the dataset is encrypted with a key this node lacks)."""
        dataset = self.node.metadata.view.dataset(target.dataset)
        return None if dataset is None else self.node.context.keys.codec(
            dataset, codec_for(dataset.name, dataset.id, dataset.schema))

    async def DrainNode(self, request: data_pb2.DrainNodeRequest, context: Any) -> data_pb2.DrainNodeResponse:
        await self._propose(command_for(commands.drain_node, request.node_id))
        await self.node.metadata.barrier(timeout_s=self.config.barrier_timeout_s)
        view = self.node.metadata.view
        node = view.node(request.node_id)
        held = sum(1 for shard in view.shards() if shard.holds(request.node_id))
        return data_pb2.DrainNodeResponse(state=node.state if node else "", replicas=held)

    async def RemoveNode(self, request: data_pb2.RemoveNodeRequest, context: Any) -> data_pb2.RemoveNodeResponse:
        """The node leaves the metadata first (nobody routes to it, it can never register again),
        then, for a voter, the Raft group swaps its address for the new one."""
        metadata, view = self.node.metadata, self.node.metadata.view
        node = validation.node_of(view, request.node_id)
        new_raft = request.new_raft_address
        if not metadata.voters():
            raise errors.NoControllerError(f"node {self.config.node_id} is not a metadata voter: ask a voter")
        if node.voter and not new_raft:
            raise errors.InvalidRequestError(f"node {node.id} is a metadata voter: name its replacement "
                                             "(shoal node replace ID --raft HOST:PORT)")
        if new_raft and not node.voter:
            raise errors.InvalidRequestError(f"node {node.id} is not a metadata voter: nothing to replace")
        if new_raft:
            validation.check_raft_address(new_raft)
            owner = view.node_by_raft_address(new_raft)
            if owner is not None and owner.id != node.id and owner.state != "removed":
                raise errors.InvalidRequestError(f"raft address {new_raft} belongs to node {owner.id}")
            serving = next((other for other in view.nodes.values()   # a port taken: no voter could bind it
                            if other.address == new_raft and other.state != "removed"), None)
            if serving is not None:
                raise errors.InvalidRequestError(f"{new_raft} is node {serving.id}'s gRPC address: a new voter "
                                                 "needs a Raft port of its own")
        # refused (nothing changes, the voters neither) when it holds a shard's only copy, unless forced
        result = await self._propose(commands.remove_node(node.id, force=request.force))
        voters = metadata.voters()
        if new_raft:
            voters = await metadata.change_voters(node.raft_address, new_raft, self.config.propose_timeout_s)
        lost = result.get("lost", [])
        logger.warning("node %s removed from the cluster%s%s", node.id,
                       f"; raft voters now {', '.join(voters)}" if new_raft else "",
                       f"; lost with it (forced; their only copy): {', '.join(lost)}" if lost else "")
        return data_pb2.RemoveNodeResponse(voters=voters, lost_shards=result.get("lost", []))

    async def CreateToken(self, request: data_pb2.CreateTokenRequest, context: Any) -> data_pb2.TokenInfo:
        """Records the token (its id and digest: the secret stays with the client); request id from the
        token id, so a retried create is answered, not applied twice."""
        await self._propose(command_for(commands.put_token, request.token_id, request.digest, request.role,
                                        request.name, time.time(), request_id=f"token-{request.token_id}"))
        await self.node.metadata.barrier(timeout_s=self.config.barrier_timeout_s)
        entry = self.node.metadata.state.get("tokens", {}).get(request.token_id, {})
        logger.warning("token %s created with role %s", request.token_id, request.role)
        return _token_info(request.token_id, entry)

    async def ListTokens(self, request: Any, context: Any) -> data_pb2.ListTokensResponse:
        table = self.node.metadata.state.get("tokens", {})
        return data_pb2.ListTokensResponse(tokens=[_token_info(tid, entry) for tid, entry in sorted(table.items())])

    async def RevokeToken(self, request: data_pb2.RevokeTokenRequest, context: Any) -> data_pb2.RevokeTokenResponse:
        result = await self._propose(command_for(commands.revoke_token, request.token_id))
        await self.node.metadata.barrier(timeout_s=self.config.barrier_timeout_s)
        if result.get("revoked"):
            logger.warning("token %s revoked", request.token_id)
        return data_pb2.RevokeTokenResponse(revoked=bool(result.get("revoked")))

    async def CreateDataset(self, request: data_pb2.CreateDatasetRequest, context: Any) -> data_pb2.DatasetInfo:
        alive = len(self.node.metadata.view.alive_nodes())
        self.node.registry.check_file_room(replicas_per_node(request.shards, request.replication, alive))
        key_id = self.node.context.keys.require(request.name) if request.encrypted else ""
        command = command_for(commands.create_dataset, request.name, request.shards, request.replication,
                              schema=_schema_of(request), encryption_key_id=key_id,
                              request_id=request.request_id or uuid.uuid4().hex)
        await self._propose(command)
        view = self.node.metadata.view
        dataset = view.dataset(request.name)
        if dataset is None:   # applied on the leader, not yet here: wait for our copy to catch up
            await self.node.metadata.barrier(timeout_s=self.config.barrier_timeout_s)
            view = self.node.metadata.view
            dataset = validation.dataset_of(view, request.name)
        return dataset_info(dataset, view)

    async def DropDataset(self, request: data_pb2.DropDatasetRequest, context: Any) -> data_pb2.DropDatasetResponse:
        await self._propose(command_for(commands.drop_dataset, request.name,
                                        request_id=request.request_id or uuid.uuid4().hex))
        return data_pb2.DropDatasetResponse()

    async def ListDatasets(self, request: Any, context: Any) -> data_pb2.ListDatasetsResponse:
        view = self.node.metadata.view
        return data_pb2.ListDatasetsResponse(datasets=[dataset_info(d, view) for d in view.datasets.values()])

    async def GetClusterMap(self, request: Any, context: Any) -> data_pb2.ClusterMap:
        return cluster_map(self.node)

    async def Put(self, request: data_pb2.PutRequest, context: Any) -> data_pb2.PutResponse:
        primary = self._primary(request.target, request.key)
        validation.check_value(self.config, request.target.dataset, request.key, request.value)
        codec = self._codec(request.target)
        value = request.value if codec is None else codec.stored(request.key, request.value)
        op = Put(request.key, value, write_id(request.write_id))
        await primary.submit(op, len(request.key) + len(request.value))
        return data_pb2.PutResponse()

    async def Get(self, request: data_pb2.GetRequest, context: Any) -> data_pb2.GetResponse:
        primary = await self._stable_primary(request.target, request.key)
        value = primary.replica.store.get(request.key)   # no await between the check and the read
        codec = self._codec(request.target)
        if codec is not None and value is not None:
            value = codec.document(value, request.key)
        return data_pb2.GetResponse(found=value is not None, value=value or b"")

    async def Delete(self, request: data_pb2.DeleteRequest, context: Any) -> data_pb2.DeleteResponse:
        primary = self._primary(request.target, request.key)
        self._codec(request.target)   # an encrypted dataset: EncryptionKeyError unless this node has its key
        existed = await primary.submit(Delete(request.key, write_id(request.write_id)), len(request.key))
        check_replay(type(existed) is bool, request.write_id)
        return data_pb2.DeleteResponse(existed=bool(existed))

    async def CompareAndSet(self, request: data_pb2.CompareAndSetRequest,
                            context: Any) -> data_pb2.CompareAndSetResponse:
        target = request.target
        primary = self._primary(target, request.key)
        if not request.expect_absent:
            validation.check_value(self.config, target.dataset, request.key, request.expected)
        if not request.delete:
            validation.check_value(self.config, target.dataset, request.key, request.value)
        codec = self._codec(target)
        expected, value = request.expected, request.value
        if codec is not None:
            expected = expected if request.expect_absent else codec.comparable(request.key, expected)
            value = value if request.delete else codec.stored(request.key, value)
        op = CompareAndSet(request.key, request.expect_absent, expected, request.delete,
                           value, write_id(request.write_id), codec.open_current if codec else None)
        outcome = await primary.submit(op, len(request.key) + len(value))
        check_replay(isinstance(outcome, (list, tuple)) and len(outcome) == 3, request.write_id)
        swapped, found, current = outcome
        if codec is not None and current:
            current = codec.document(current, request.key)
        return data_pb2.CompareAndSetResponse(swapped=swapped, current_found=found, current=current or b"")

    async def PutStream(self, request_iterator: AsyncIterator[data_pb2.PutBatch],
                        context: Any) -> AsyncIterator[data_pb2.PutBatchAck]:
        """Bounded per stream by a window of batches and bytes, and closed when idle (put_stream.py)."""
        config = self.config
        async for ack in put_stream.acks(request_iterator, self._put_batch, batches_max=config.put_stream_window_batches,
                                         bytes_max=config.put_stream_window_bytes_max,
                                         idle_timeout_s=config.stream_idle_timeout_s):
            yield ack

    async def _put_batch(self, batch: data_pb2.PutBatch) -> data_pb2.PutBatchAck:
        seq = batch.write_id.request_seq
        try:
            return data_pb2.PutBatchAck(request_seq=seq, count=await self._store_batch(batch))
        except errors.NodeError as exc:
            return data_pb2.PutBatchAck(request_seq=seq, error=exc.code, error_message=str(exc),
                                        retriable=exc.retriable)

    async def _store_batch(self, batch: data_pb2.PutBatch) -> int:
        primary = self._primary(batch.target, None)
        shards = self.node.metadata.view.datasets[batch.target.dataset].shards
        keys, values = list(batch.keys), list(batch.values)
        size = validation.check_batch(self.config, batch.target.dataset, keys, values, shards, batch.target.shard)
        codec = self._codec(batch.target)
        if codec is not None:
            values = [codec.stored(key, value) for key, value in zip(keys, values)]
        count = await primary.submit(PutBatch(keys, values, write_id(batch.write_id)), size)
        check_replay(type(count) is int, batch.write_id)
        return int(count)

    async def PutRecords(self, request: data_pb2.PutBatch, context: Any) -> data_pb2.PutBatchAck:
        count = await self._store_batch(request)
        return data_pb2.PutBatchAck(request_seq=request.write_id.request_seq, count=count)

    async def Scan(self, request: data_pb2.ScanRequest, context: Any) -> AsyncIterator[data_pb2.ScanChunk]:
        primary = self._primary(request.target, None)
        chunk_records = min(request.chunk_records or self.config.scan_chunk_records, self.config.scan_chunk_records_max)
        chunks = primary.replica.store.scan(request.start_key, request.end_key, request.prefix,
                                            request.limit, chunk_records, self.config.scan_chunk_bytes_max)
        while True:
            await self._stable_primary(request.target, None)
            chunk = next(chunks, None)   # one short read txn, no await inside
            if chunk is None:
                return
            codec = self._codec(request.target)
            values = [v for _, v in chunk] if codec is None else [codec.document(v, k) for k, v in chunk]
            yield data_pb2.ScanChunk(keys=[k for k, _ in chunk], values=values)

    async def GetNodeStatus(self, request: Any, context: Any) -> data_pb2.NodeStatus:
        return await node_status(self.node)


class PeerService(peer_pb2_grpc.PeerServicer):
    """Node-to-node calls. Each names its cluster; a message of another cluster is refused
    (WRONG_CLUSTER) before it is looked at, so a node never obeys a foreign cluster."""

    def __init__(self, node: ServedNode) -> None:
        self.node = node
        self.config = node.config
        self.copy_throttle = copy_source.Throttle(node.config.repair_bytes_per_s)   # every copy this node sends
        self.copy_snapshots = copy_source.Snapshots(node.config.data_dir / "snapshots",   # kept across restarts
                                                    copy_source.snapshots_max(node.config))

    def _check_cluster(self, cluster_id: str, *, allow_unnamed: bool = False) -> None:
        if not self.node.identity.accepts(cluster_id, allow_unnamed=allow_unnamed):
            raise errors.WrongClusterError(f"message of cluster {cluster_id or '(unnamed)'}; node "
                                           f"{self.config.node_id} belongs to cluster {self.node.identity.cluster_id}")

    async def Replicate(self, request: peer_pb2.ReplicateRequest, context: Any) -> peer_pb2.ReplicateResponse:
        self._check_cluster(request.cluster_id)
        replica = self.node.registry.replica_for_peer(request.dataset, request.shard, request.dataset_id)
        applied = await backup.apply_replicated(self.node.context, replica, request.epoch, request.seq,
                                                request.payload, request.primary)
        return peer_pb2.ReplicateResponse(applied_seq=applied)

    async def BeginEpoch(self, request: peer_pb2.BeginEpochRequest, context: Any) -> peer_pb2.BeginEpochResponse:
        self._check_cluster(request.cluster_id)
        replica = self.node.registry.replica_for_peer(request.dataset, request.shard, request.dataset_id)
        seq, epoch = await backup.begin_epoch(self.node.context, replica, request.epoch, request.primary)
        return peer_pb2.BeginEpochResponse(seq=seq, epoch=epoch, incarnation=replica.store.incarnation)

    async def FetchEntries(self, request: peer_pb2.FetchEntriesRequest,
                           context: Any) -> peer_pb2.FetchEntriesResponse:
        self._check_cluster(request.cluster_id)
        replica = self.node.registry.replica_for_peer(request.dataset, request.shard, request.dataset_id)
        entries = backup.recent_entries(replica, request.after_seq)
        if entries is None:
            return peer_pb2.FetchEntriesResponse(complete=False)
        entries = backup.entries_within(entries, self.config.fetch_entries_bytes_max)   # the caller asks again
        return peer_pb2.FetchEntriesResponse(complete=True, entries=[
            peer_pb2.ReplicateRequest(dataset=request.dataset, shard=request.shard, epoch=e.epoch, seq=e.seq,
                                      payload=e.payload, dataset_id=replica.dataset_id) for e in entries])

    async def CopyShard(self, request: peer_pb2.CopyShardRequest, context: Any
                        ) -> AsyncIterator[peer_pb2.CopyShardChunk]:
        self._check_cluster(request.cluster_id)
        replica = self.node.registry.replica_for_peer(request.dataset, request.shard, request.dataset_id)
        async for chunk in copy_source.chunks(self.node.context, replica, request, self.copy_throttle,
                                              self.copy_snapshots):
            yield chunk

    async def JoinShard(self, request: peer_pb2.JoinShardRequest, context: Any) -> peer_pb2.JoinShardResponse:
        self._check_cluster(request.cluster_id)
        replica = self.node.registry.replica_for_peer(request.dataset, request.shard, request.dataset_id)
        primary = replica.primary
        if primary is None:
            raise errors.NotPrimaryError(f"shard {replica.name}: node {self.config.node_id} is not its primary")
        shard = self.node.metadata.view.shard(replica.dataset, replica.index)
        if shard is None or request.learner not in shard.learners:
            return peer_pb2.JoinShardResponse(joined=False, reason=f"{request.learner[:40]} is not a learner of "
                                                                   f"shard {replica.name}")
        joined, reason = await primary.join_learner(request.learner, request.seq, request.incarnation)
        return peer_pb2.JoinShardResponse(joined=joined, reason=reason, epoch=primary.epoch)

    async def Heartbeat(self, request: peer_pb2.HeartbeatRequest, context: Any) -> peer_pb2.HeartbeatResponse:
        if not self.node.identity.accepts(request.cluster_id, allow_unnamed=True):   # no lease, no metadata
            return peer_pb2.HeartbeatResponse(lease_granted=False, cluster_id=self.node.identity.cluster_id)
        response = self.node.controller.heartbeat(request)
        response.cluster_id = self.node.identity.cluster_id
        return response

    async def Join(self, request: peer_pb2.JoinRequest, context: Any) -> peer_pb2.JoinResponse:
        self._check_cluster(request.cluster_id, allow_unnamed=True)   # a new node has none yet
        command = command_for(commands.register_node, request.node_id, request.address, request.zone, "",
                              request_id=f"join-{request.node_id[:80]}-{uuid.uuid4().hex}")
        warn_if_drain_cancelled(request.node_id, await propose_or_raise(self.node.context, command,
                                                                        self.config.propose_timeout_s))
        return peer_pb2.JoinResponse(metadata_version=self.node.metadata.version,
                                     cluster_id=self.node.identity.cluster_id)

    async def Propose(self, request: peer_pb2.ProposeRequest, context: Any) -> peer_pb2.ProposeResponse:
        self._check_cluster(request.cluster_id)
        result = await self.node.metadata.propose(request.command, timeout_s=self.config.propose_forward_timeout_s)
        return peer_pb2.ProposeResponse(result=msgpack.packb(result, use_bin_type=True))
