"""Issue 16 point 2: every stream and reply stays within the gRPC message limit.

Records are at most value_bytes_max + key_bytes_max, but a shard holds any number of
them: a Scan chunk or a FetchEntries reply must be bounded by bytes as well as by
count, or reading or replicating a dataset of valid records fails with "Sent message
larger than max".
"""
from __future__ import annotations

import asyncio
import pathlib
import types
from typing import Any

import grpc
import msgpack

from shoal.client.local import LocalCluster
from shoal.client.wire.channels import Wire
from shoal.client.wire.pb import peer_pb2_grpc
from shoal.node.config import NodeConfig
from shoal.node.replication import outbound
from shoal.node.replication.peers import PeerClients
from shoal.node.replication.replica import Replica
from shoal.node.replication.ring import EntryRing
from shoal.node.server import PeerService
from shoal.node.storage import Put, ShardStore

MiB = 1 << 20


def test_scan_of_values_beyond_the_message_limit_issue_16(tmp_path: pathlib.Path) -> None:
    """Issue 16: put_many of 17 values of 1,000,000 bytes into a 1-shard dataset, then scan returns all 17.

    Method: a real node; together the values exceed the 16 MiB message limit, which
    one unbounded chunk used to break. A variant scans with a prefix and a start over
    the large values, mixed with small ones, and checks each record intact.
    """
    big = {f"big-{n:02d}": bytes([n]) * 1_000_000 for n in range(17)}
    small = {f"small-{n}": {"n": n} for n in range(3)}
    with LocalCluster(tmp_path / "cluster", nodes=1) as cluster, cluster.client() as client:
        client.create_dataset("blobs", shards=1, replication=1)
        assert client.put_many("blobs", big.items()) == 17
        assert client.put_many("blobs", small.items()) == 3
        assert dict(client.scan("blobs")) == {**big, **small}
        assert dict(client.scan("blobs", prefix="big-", start="big-03")) == {
            key: value for key, value in big.items() if key >= "big-03"}
        assert [key for key, _ in client.scan("blobs", start="big-15", limit=3)] == ["big-15", "big-16", "small-0"]


class _Node:
    """What PeerService uses of a node: its config, identity and the one replica it serves."""

    def __init__(self, config: NodeConfig, replica: Replica) -> None:
        self.config = config
        self.identity = types.SimpleNamespace(accepts=lambda cluster_id, allow_unnamed=False: True)
        self.registry = types.SimpleNamespace(replica_for_peer=lambda dataset, index, dataset_id="": replica)


class _CountingPeers(PeerClients):
    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self.fetches = 0

    def peer(self, address: str) -> Any:
        stub = super().peer(address)
        peers = self

        class Counting:
            async def FetchEntries(self, request: Any, timeout: float) -> Any:
                peers.fetches += 1
                return await stub.FetchEntries(request, timeout=timeout)
        return Counting()


def test_catch_up_fetches_entries_beyond_the_message_limit_issue_16(tmp_path: pathlib.Path) -> None:
    """Issue 16 variant: a new primary catches up on 20 MB of entries a backup holds, through real gRPC.

    Method: a backup's store and ring hold 20 entries of one 1,000,000-byte value each
    (more than the 16 MiB limit together); a new primary with none of them runs
    catch_up_from_backups against the backup's PeerService over a channel with the
    node's message limit. It needs several FetchEntries replies (each a prefix within
    fetch_entries_bytes_max) and ends with the same seq, records and checksum.
    """
    config = NodeConfig(node_id="n1", data_dir=tmp_path).validate()

    def replica(name: str) -> Replica:
        store = ShardStore(tmp_path / name, map_size_bytes=256 * MiB, sync=False)
        return Replica("blobs@1", 0, store, EntryRing(config.entry_ring_entries_max, config.entry_ring_bytes_max))

    source, primary = replica("backup"), replica("primary")
    for n in range(20):
        entry, _ = source.store.execute([Put(b"k%02d" % n, msgpack.packb(bytes([n]) * 1_000_000))], epoch=1)
        source.ring.append(entry.seq, entry.epoch, entry.encode())

    async def run() -> tuple[int, int]:
        wire = Wire(message_bytes_max=config.message_bytes_max)
        server = wire.aio_server()
        peer_pb2_grpc.add_PeerServicer_to_server(PeerService(_Node(config, source)), server)  # type: ignore[arg-type]
        port = wire.add_port(server, "127.0.0.1:0")
        await server.start()
        peers = _CountingPeers(wire)
        ctx = types.SimpleNamespace(config=config, cluster_id="", peers=peers,
                                    address_of=lambda node_id: f"127.0.0.1:{port}",
                                    run_blocking=lambda fn, *args: asyncio.to_thread(fn, *args))
        try:
            seq = await outbound.catch_up_from_backups(ctx, primary, 2, ["b1"], {"b1": 20})  # type: ignore[arg-type]
        finally:
            await peers.close()
            await server.stop(grace=None)
        return seq, peers.fetches

    try:
        seq, fetches = asyncio.run(run())
        assert seq == 20 and primary.store.state == source.store.state
        assert fetches >= 20_000_000 // config.fetch_entries_bytes_max
        assert [e.seq for e in primary.ring.after(0, 20) or []] == list(range(1, 21))
    finally:
        source.store.close()
        primary.store.close()


def test_write_groups_are_bounded_by_bytes_issue_16(tmp_path: pathlib.Path) -> None:
    """Issue 16 variant: a group-commit entry (one Replicate message) stays within group_bytes_max.

    Method: queue ops of 5, 5, 1 and 12 MiB on a primary (8 MiB bound) and take groups:
    an op that would push a group past the bound opens the next one, and an op larger
    than the bound goes alone; stop() fails the op held for the next group too.
    """
    from shoal.node.errors import NotPrimaryError
    from shoal.node.replication.primary import ShardPrimary

    config = NodeConfig(node_id="n1", data_dir=tmp_path).validate()

    async def run() -> list[list[int]]:
        replica = types.SimpleNamespace(dataset="blobs", index=0)
        primary = ShardPrimary(replica, types.SimpleNamespace(config=config), epoch=1, backups=[])  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]
        for size, future in zip((5 * MiB, 5 * MiB, 1 * MiB, 12 * MiB, 1), futures):
            primary._queue.put_nowait((Put(b"k", b"\xc0"), size, future))
        groups = [[size // MiB for _, size, _ in await primary._take_group()] for _ in range(3)]
        primary.stop("test")
        assert isinstance(futures[4].exception(), NotPrimaryError)
        return groups

    assert asyncio.run(run()) == [[5], [5, 1], [12]]
