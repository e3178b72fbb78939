"""Issue 19.6, "the overload test": limits and overload on a real node (LocalCluster, real LMDB and gRPC).

- A stuck client (a scan it never reads, a PutStream it never closes) pins neither LMDB pages
  nor the node: the stuck scan holds no read transaction while it waits, the node closes
  both streams after stream_idle_timeout_s, a third stream past streams_max is OVERLOADED.
- 10x the sustainable write rate on loopback: refused with OVERLOADED and a retry hint,
  never a crash; every acknowledged write reads back; the node's peak RSS stays bounded.

Run: `.venv/bin/python -m pytest -q tests/integration/test_overload.py` (CI, about 25 s);
add `--run-slow` for the 20 s drive (test_issue19_overload_at_10x_long).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import math
import multiprocessing
import pathlib
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import lmdb
import msgpack
import pytest

from shoal.client import OverloadedError
from shoal.client._errors import error_from_rpc
from shoal.client.local import LocalCluster
from shoal.client.wire.channels import Wire
from shoal.client.wire.codes import ERROR_METADATA_KEY, RETRY_AFTER_METADATA_KEY, metadata_value
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc

MiB = 1 << 20
RSS_PEAK_BYTES_MAX = 400 * MiB   # the node's VmHWM over a whole test; measured 100-200 MiB
IDLE_S = 5.0                     # stream_idle_timeout_s of the stuck-client node
RECORDS = 5_000                  # 1,000-byte values: about 5 MiB of live data, 6.6 MiB of LMDB pages
VALUE_CHARS = 1_000
WAIT_S = 30.0
GENERATORS = 3                   # load generator processes of the 10x drive
# BDP probing off keeps this client's receive window at 64 KiB, so a scan it does not read stalls
# after about 100 KiB (with the default window gRPC buffers several MiB first, on both sides).
STUCK_CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 65_536)]


def _peak_rss_bytes(pid: int) -> int:
    """VmHWM (the peak resident set since the process started) of `pid`, in bytes."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def _target(cluster: LocalCluster, dataset: str) -> pb.RecordTarget:
    info = next(d for d in cluster.cluster_map().datasets if d.name == dataset)
    return pb.RecordTarget(dataset=dataset, shard=0, epoch=info.shard_map[0].epoch, dataset_id=info.id)


def _wait_log(cluster: LocalCluster, text: str, deadline_s: float) -> None:
    while text not in cluster.log_tail("n1", 400):
        assert time.monotonic() < deadline_s, f"no {text!r} in the node log:\n{cluster.dump_logs(80)}"
        time.sleep(0.05)   # polling the log for a key line, bounded by the deadline


def _overwrite(stub: pb_grpc.DataStub, target: pb.RecordTarget, round_: int) -> int:
    """Overwrite every record with PutRecords (unary: no stream slot), 500 at a time; bytes written."""
    value = msgpack.packb("v" * VALUE_CHARS + str(round_))
    for start in range(0, RECORDS, 500):
        keys = [b"k%05d" % i for i in range(start, start + 500)]
        ack = stub.PutRecords(pb.PutBatch(target=target, keys=keys, values=[value] * len(keys)), timeout=WAIT_S)
        assert ack.count == len(keys)
    return RECORDS * len(value)


def _one_batch_then_silence(target: pb.RecordTarget, release: threading.Event) -> Iterator[pb.PutBatch]:
    """A PutStream's requests: one batch, then nothing (the stream stays open) until `release`."""
    yield pb.PutBatch(target=target, keys=[b"idle-0"], values=[msgpack.packb(0)])
    release.wait(WAIT_S)


def test_issue19_stuck_clients_pin_no_pages_and_are_closed(local_cluster: Callable[..., LocalCluster]) -> None:
    """Issue 19.6: a client reads one chunk of a scan and stops; another sends one PutStream batch and
    stays silent. While both hang, a third stream is OVERLOADED (streams_max 2), and 4 overwrites of
    all 5 MiB of records leave the LMDB file as it was (a stuck scan holds no read transaction);
    after stream_idle_timeout_s the node closes both streams with RESOURCE_EXHAUSTED naming the
    setting, keeps serving, and its peak RSS stays under RSS_PEAK_BYTES_MAX. Control: a real
    read transaction held open (here, from the test process) makes the same overwrites grow the file.

    Method: one node with SHOAL_STREAM_IDLE_TIMEOUT_S=5 and SHOAL_STREAMS_MAX=2; raw gRPC calls
    (no client retries) for the stuck streams; file size of the shard's data.mdb; the node's log."""
    cluster = local_cluster(1, env={"SHOAL_STREAM_IDLE_TIMEOUT_S": str(IDLE_S), "SHOAL_STREAMS_MAX": "2"})
    with cluster.client() as client:
        client.create_dataset("d", shards=1, replication=1)
        client.put_many("d", ((f"k{i:05d}", "v" * VALUE_CHARS) for i in range(RECORDS)))
        target = _target(cluster, "d")
        data_file = cluster.node("n1").data_dir / "shards" / f"{target.dataset_id}-0" / "data.mdb"
        wire = Wire()
        with wire.channel(cluster.addresses[0]) as channel, \
                grpc.insecure_channel(cluster.addresses[0], options=STUCK_CHANNEL_OPTIONS) as stuck_channel:
            stub = pb_grpc.DataStub(channel)
            _overwrite(stub, target, 0)    # steady state: LMDB keeps the previous snapshot's pages too
            steady_bytes = data_file.stat().st_size
            opened_s = time.monotonic()
            scan = pb_grpc.DataStub(stuck_channel).Scan(pb.ScanRequest(target=target, chunk_records=10))
            assert len(next(scan).keys) == 10            # one chunk read; never again until the end
            release = threading.Event()
            acks = stub.PutStream(_one_batch_then_silence(target, release))
            try:
                assert next(acks).count == 1
                with pytest.raises(grpc.RpcError) as third:
                    next(stub.Scan(pb.ScanRequest(target=target), timeout=WAIT_S))
                refused = error_from_rpc(third.value, "scan")
                assert isinstance(refused, OverloadedError) and "streams_max" in refused.message, refused

                written = sum(_overwrite(stub, target, n) for n in range(1, 5))
                grown_bytes = data_file.stat().st_size - steady_bytes
                assert "idle, closed" not in cluster.log_tail("n1", 400), \
                    f"the streams were closed before the overwrites ended ({time.monotonic() - opened_s:.1f} s)"
                assert grown_bytes < written // 4, (steady_bytes, grown_bytes, written)

                _wait_log(cluster, "stream /shoal.v1.Data/PutStream idle, closed", opened_s + IDLE_S + WAIT_S)
                _wait_log(cluster, "stream /shoal.v1.Data/Scan idle, closed", opened_s + IDLE_S + WAIT_S)
                with pytest.raises(grpc.RpcError) as put_closed:
                    next(acks)
                assert put_closed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "stream_idle_timeout_s" in (put_closed.value.details() or "")
            finally:
                release.set()
            chunks = 1
            with pytest.raises(grpc.RpcError) as scan_closed:
                for _ in scan:
                    chunks += 1
            assert scan_closed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "stream_idle_timeout_s" in (scan_closed.value.details() or "") and chunks < RECORDS // 10

            client.put("d", "after", 1)
            assert client.get("d", "after") == 1 and len(list(client.scan("d"))) == RECORDS + 2
            env = lmdb.open(str(data_file.parent), readonly=True, max_dbs=4, lib_version=0, create=False)
            try:
                before_bytes = data_file.stat().st_size
                with env.begin():     # the control: a read transaction that stays open
                    written = sum(_overwrite(stub, target, n) for n in range(5, 7))
                    assert data_file.stat().st_size - before_bytes > written // 2
            finally:
                env.close()
    pid = cluster.pid("n1")
    assert pid is not None and _peak_rss_bytes(pid) < RSS_PEAK_BYTES_MAX


@dataclasses.dataclass
class Drive:
    """What one overload run saw: rates in requests/s, outcomes by gRPC status (+ shoal code)."""

    sustainable_per_s: float = 0.0
    offered_per_s: float = 0.0
    achieved_per_s: float = 0.0
    requests: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    acked: list[bytes] = dataclasses.field(default_factory=list)
    retry_hints_ms: set[str] = dataclasses.field(default_factory=set)   # shoal-retry-after-ms of OVERLOADED answers


async def _put(stub: pb_grpc.DataStub, target: pb.RecordTarget, key: bytes, value: bytes, drive: Drive) -> None:
    try:
        await stub.Put(pb.PutRequest(target=target, key=key, value=value), timeout=WAIT_S)
    except grpc.aio.AioRpcError as exc:   # not a grpc.Call: the trailers are read here, as error_from_rpc does
        code = metadata_value(exc.trailing_metadata(), ERROR_METADATA_KEY)
        drive.outcomes[f"{exc.code().name}/{code or '-'}"] += 1
        if code == "OVERLOADED":
            drive.retry_hints_ms.add(metadata_value(exc.trailing_metadata(), RETRY_AFTER_METADATA_KEY) or "")
        return
    drive.outcomes["OK"] += 1
    drive.acked.append(key)


async def _sustainable_per_s(address: str, target: pb.RecordTarget) -> float:
    """Puts acknowledged in 1 s by 8 closed-loop callers (a floor of 20/s: never offer nothing)."""
    drive = Drive()
    value = msgpack.packb("x" * VALUE_CHARS)
    async with Wire().aio_channel(address) as channel:
        stub = pb_grpc.DataStub(channel)
        end_s = time.monotonic() + 1.0

        async def caller(n: int) -> None:
            i = 0
            while time.monotonic() < end_s:
                await _put(stub, target, b"m%d-%d" % (n, i), value, drive)
                i += 1
        await asyncio.gather(*(caller(n) for n in range(8)))
    return max(float(drive.outcomes["OK"]), 20.0)


async def _offer(address: str, target: pb.RecordTarget, offered_per_s: float, requests: int, first: int,
                 step: int) -> Drive:
    """Open loop: request i (first, first + step, ...) leaves at i / offered_per_s, whatever the answers."""
    drive = Drive()
    value = msgpack.packb("x" * VALUE_CHARS)
    async with Wire().aio_channel(address) as channel:
        stub = pb_grpc.DataStub(channel)
        started_s = time.monotonic()
        tasks = []
        for i in range(first, requests, step):
            ahead_s = started_s + i / offered_per_s - time.monotonic()
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)    # the schedule, not the answers, sets the pace
            tasks.append(asyncio.ensure_future(_put(stub, target, b"o%d" % i, value, drive)))
        drive.achieved_per_s = len(tasks) / max(time.monotonic() - started_s, 1e-3)
        async with asyncio.timeout(4 * WAIT_S):   # the time cap; each call also has its own deadline
            await asyncio.gather(*tasks)
    return drive


def _offer_share(address: str, target: bytes, offered_per_s: float, requests: int, first: int, step: int) -> Drive:
    """One generator process's share of the drive (a process: one event loop tops out near 5,000 calls/s)."""
    return asyncio.run(_offer(address, pb.RecordTarget.FromString(target), offered_per_s, requests, first, step))


def _run(address: str, target: pb.RecordTarget, drive_s: float, count_max: int) -> Drive:
    """Measure the sustainable rate, then offer 10x it, open loop, from GENERATORS processes."""
    drive = Drive(sustainable_per_s=asyncio.run(_sustainable_per_s(address, target)))
    drive.offered_per_s = 10 * drive.sustainable_per_s
    drive.requests = min(math.ceil(drive.offered_per_s * drive_s), count_max)
    context = multiprocessing.get_context("spawn")   # no fork: grpc's threads (notes/dependencies.md 0.11)
    with concurrent.futures.ProcessPoolExecutor(GENERATORS, mp_context=context) as pool:
        shares = [pool.submit(_offer_share, address, target.SerializeToString(), drive.offered_per_s,
                              drive.requests, n, GENERATORS) for n in range(GENERATORS)]
        for share in shares:
            part = share.result(timeout=8 * WAIT_S)
            drive.outcomes.update(part.outcomes)
            drive.acked.extend(part.acked)
            drive.retry_hints_ms |= part.retry_hints_ms
            drive.achieved_per_s += part.achieved_per_s
    return drive


def _client_writer(cluster: LocalCluster, name: str, count: int, done: list[str], failures: list[BaseException]) -> None:
    """The Python client's puts during the overload: it retries OVERLOADED after the hint, so all succeed."""
    try:
        with cluster.client(timeout_s=WAIT_S) as client:
            for i in range(count):
                client.put("load", f"{name}-{i}", i)
                done.append(f"{name}-{i}")
    except BaseException as exc:   # reported by the test, not lost in the thread
        failures.append(exc)


def _overload(local_cluster: Callable[..., LocalCluster], drive_s: float, count_max: int) -> Drive:
    cluster = local_cluster(1, env={"SHOAL_INFLIGHT_REQUESTS_MAX": "8", "SHOAL_OVERLOAD_RETRY_AFTER_S": "0.02"})
    pid = cluster.pid("n1")
    with cluster.client() as client:
        client.create_dataset("load", shards=1, replication=1)
        client.put("load", "warm", 0)    # the shard serves (lease, primary) before the raw calls
        target = _target(cluster, "load")
        done: list[str] = []
        failures: list[BaseException] = []
        writers = [threading.Thread(target=_client_writer, args=(cluster, f"c{n}", 25, done, failures))
                   for n in range(4)]
        for writer in writers:
            writer.start()
        drive = _run(cluster.addresses[0], target, drive_s, count_max)
        for writer in writers:
            writer.join(4 * WAIT_S)
        report = (f"sustainable {drive.sustainable_per_s:.0f}/s, offered {drive.offered_per_s:.0f}/s, "
                  f"achieved {drive.achieved_per_s:.0f}/s, {drive.requests} requests: {dict(drive.outcomes)}")
        assert cluster.is_running("n1") and cluster.pid("n1") == pid, f"node died: {report}\n{cluster.dump_logs()}"
        assert not failures and len(done) == 100, (failures, report)
        assert drive.outcomes["RESOURCE_EXHAUSTED/OVERLOADED"] > 0, f"no OVERLOADED answer: {report}"
        assert drive.retry_hints_ms == {"20"}, (drive.retry_hints_ms, report)
        assert not any(k.startswith(("INTERNAL", "UNKNOWN")) for k in drive.outcomes), report
        stored = {key.encode() if isinstance(key, str) else key for key, _ in client.scan("load")}
        lost = [key for key in drive.acked if key not in stored] + [k for k in done if k.encode() not in stored]
        assert not lost, f"{len(lost)} acknowledged writes missing, e.g. {lost[:5]}: {report}"
    peak = _peak_rss_bytes(pid) if pid is not None else 0
    assert peak < RSS_PEAK_BYTES_MAX, f"peak RSS {peak / MiB:.0f} MiB: {report}"
    print(f"overload: {report}; node peak RSS {peak / MiB:.0f} MiB")
    return drive


def test_issue19_overload_at_10x_is_refused_not_fatal(local_cluster: Callable[..., LocalCluster]) -> None:
    """Issue 19.6: at 10x the node's measured sustainable Put rate (open loop, 1.5 s, at most 6,000
    requests) the node stays up, answers the excess with RESOURCE_EXHAUSTED / OVERLOADED carrying
    the retry hint (a retriable OverloadedError in the client), loses no acknowledged write, and
    its peak RSS stays under RSS_PEAK_BYTES_MAX; 4 threads of the Python client meanwhile see all
    their 100 puts succeed (the client retries OVERLOADED).

    Method: one node with SHOAL_INFLIGHT_REQUESTS_MAX=8 (so the limit acts however fast the machine
    is) and a 20 ms hint; raw grpc.aio Puts from GENERATORS processes; then a scan of every key.
    The verdict does not depend on spare CPU: a slower machine offers less, and is refused the same."""
    _overload(local_cluster, drive_s=1.5, count_max=6_000)


@pytest.mark.slow
def test_issue19_overload_at_10x_long(local_cluster: Callable[..., LocalCluster]) -> None:
    """The same overload held 20 s (at most 100,000 requests): RSS must not creep up with time."""
    _overload(local_cluster, drive_s=20.0, count_max=100_000)
