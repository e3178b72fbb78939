"""Issue 14.6: the node's HTTP room (/metrics, /healthz, /readyz) on config.http_listen.

Real node processes are started with `shoal node start --http-listen 127.0.0.1:0`; the
port the kernel picked is read from the node's "http on http://HOST:PORT" log line, so no
test races another process for its HTTP port. The one test that calls the node's gRPC
API gives it a free port picked just before (the node does not log the port it bound).
The readiness reasons are driven in-process through the app with a fake node (the
HttpSource protocol), since a real node is ready too soon to observe them.
Issue 19.5: the metrics a real node exports after serving a few client RPCs.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05
HTTP_LINE = re.compile(r"http on http://(\S+?):(\d+) ")


class _Daemon:
    """One `shoal node start` process; its stderr is collected by a thread as it comes."""

    def __init__(self, node_id: str, data_dir: Path, http_listen: str, listen: str = "127.0.0.1:0") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.node_id = node_id
        self.listen = listen
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.client.cli", "node", "start", "--id", node_id, "--data-dir", str(data_dir),
             "--listen", listen, "--http-listen", http_listen],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self._reader = threading.Thread(target=self._read, name=f"stderr-{node_id}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()   # EOF: the process exited

    def log(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_line(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """The first stderr line matching `pattern`; fails if the node exits or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if found := pattern.search(line):
                        return found
                seen = len(self.lines)
                left_s = deadline - time.monotonic()
                if left_s <= 0 or not self._reader.is_alive():
                    pytest.fail(f"node {self.node_id}: no line matching {pattern.pattern!r}:\n{''.join(self.lines)}")
                self._changed.wait(left_s)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code of the first signal that worked."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -signal.SIGKILL
        self._reader.join(timeout=STOP_TIMEOUT_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


@pytest.fixture
def start_daemon(tmp_path: Path, dump_logs_on_failure: Callable[[str, Callable[[], str]], None]
                 ) -> Iterator[Callable[..., _Daemon]]:
    """Factory: start_daemon(node_id, http_listen, listen="127.0.0.1:0"); every daemon is stopped at teardown."""
    daemons: list[_Daemon] = []

    def start(node_id: str, http_listen: str, listen: str = "127.0.0.1:0") -> _Daemon:
        daemon = _Daemon(node_id, tmp_path / node_id, http_listen, listen)
        daemons.append(daemon)
        dump_logs_on_failure(node_id, daemon.log)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()
    assert all(daemon.proc.poll() is not None for daemon in daemons)


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _wait_ready(base: str, timeout_s: float) -> dict[str, Any]:
    """Poll /readyz until 200; every answer before that must be a 503 saying why not."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = _get(f"{base}/readyz")
        answer: dict[str, Any] = json.loads(body)
        if status == 200:
            return answer
        assert status == 503 and answer["ready"] is False and answer["reason"], (status, body)
        if time.monotonic() > deadline:
            pytest.fail(f"{base}/readyz not ready after {timeout_s} s: {body}")
        time.sleep(POLL_INTERVAL_S)   # poll interval, not a wait for a state


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A /metrics text parsed (prometheus_client's parser: the exposition must be valid): (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def _metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"node": "h1", **labels}.items())))
    assert key in samples, f"{key} not scraped; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def test_http_serves_metrics_health_and_readiness(start_daemon: Callable[..., _Daemon]) -> None:
    """A real node serves /healthz, /readyz (200 once registered) and /metrics, and frees its port on SIGTERM;
    after client RPCs its metrics count and time them, and show its shard, Raft, task and disk state.

    Method: start a standalone node on HTTP port 0, read the bound port from its log, poll
    /readyz to 200 within a deadline, fetch the other routes; create a one-shard dataset,
    put and get through the client and scrape again; then SIGTERM and bind the port
    ourselves to prove it was released.
    """
    daemon = start_daemon("h1", "127.0.0.1:0", f"127.0.0.1:{_free_port()}")
    host, port = daemon.wait_line(HTTP_LINE, STARTUP_TIMEOUT_S).groups()
    base = f"http://{host}:{port}"

    assert _get(f"{base}/healthz")[::2] == (200, "ok\n")
    assert _wait_ready(base, STARTUP_TIMEOUT_S) == {"ready": True, "reason": "ready"}
    status, content_type, body = _get(f"{base}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain"), content_type
    assert re.search(r"^shoal_metadata_version \d+\.0$", body, re.MULTILINE), body
    assert 'shoal_shard_replicas{node="h1",role="primary"} 0.0' in body
    assert "shoal_under_replicated_shards 0.0" in body
    assert _get(f"{base}/nope")[0] == 404

    from shoal.client import Client

    with Client(daemon.listen, timeout_s=30) as client:
        client.create_dataset("metered", shards=1, replication=1)
        client.put("metered", "k", {"v": 1})
        assert client.get("metered", "k") == {"v": 1}
    samples = _samples(_get(f"{base}/metrics")[2])
    put = {"method": "/shoal.v1.Data/Put", "outcome": "OK"}
    assert _metric(samples, "shoal_request_duration_seconds_count", **put) >= 1   # a put retried after
    assert _metric(samples, "shoal_request_duration_seconds_count", **put) == \
        _metric(samples, "shoal_requests_total", **put)                           # NOT_PRIMARY counts there
    assert _metric(samples, "shoal_request_duration_seconds_bucket", le="+Inf", **put) == \
        _metric(samples, "shoal_request_duration_seconds_count", **put)
    assert _metric(samples, "shoal_request_duration_seconds_sum", **put) > 0
    get = {"method": "/shoal.v1.Data/Get", "outcome": "OK"}
    assert _metric(samples, "shoal_request_duration_seconds_count", **get) >= 1
    assert _metric(samples, "shoal_shard_replicas", role="primary") == 1
    assert _metric(samples, "shoal_shard_replicas", role="learner") == 0
    assert _metric(samples, "shoal_shard_records", shard="metered/0") == 1
    assert _metric(samples, "shoal_shard_lmdb_bytes", shard="metered/0") > 0
    assert _metric(samples, "shoal_raft_role", role="none") == 1   # standalone: no Raft, as shoal status says
    assert _metric(samples, "shoal_raft_commit_index") >= 3         # init cluster, register, create dataset...
    assert _metric(samples, "shoal_raft_last_applied") == _metric(samples, "shoal_raft_commit_index")
    assert _metric(samples, "shoal_task_attempts_running") == 0
    assert _metric(samples, "shoal_task_attempts_total", outcome="completed") == 0
    assert _metric(samples, "shoal_copy_sent_bytes_total") == 0
    assert _metric(samples, "shoal_copy_pacing_share") == 1
    assert 0 < _metric(samples, "shoal_disk_free_bytes") <= _metric(samples, "shoal_disk_total_bytes")

    assert daemon.stop() == 0
    with socket.socket() as probe:   # as a restarted node binds: TIME_WAIT is fine, a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, int(port)))
        probe.listen()


def test_http_port_in_use_is_one_line_startup_error(start_daemon: Callable[..., _Daemon]) -> None:
    """A node whose HTTP port is taken exits non-zero with one line naming the address, no traceback.

    Method: hold a listening socket on a loopback port, start a node with --http-listen on
    it, wait for the exit, and read its stderr.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        daemon = start_daemon("h2", address)
        code = daemon.proc.wait(timeout=STARTUP_TIMEOUT_S)
        daemon.stop()
    log = daemon.log()
    assert code != 0, log
    message = f"cannot serve HTTP on {address}: address in use"
    assert [line for line in log.splitlines() if message in line] == [f"error: {message}"], log
    assert "Traceback" not in log


class _FakeMetadata:
    def __init__(self) -> None:
        from shoal.node.metadata.view import MetadataView

        self.ready = False
        self.leaderless = 0.0   # leaderless_s()
        self.view = MetadataView.from_state({"version": 7, "nodes": {}, "datasets": {}})

    def is_ready(self) -> bool:
        return self.ready

    def leaderless_s(self) -> float:
        return self.leaderless

    def is_leader(self) -> bool:
        return False

    def statistics(self) -> Any:
        from shoal.node.metadata import MetadataStatistics

        return MetadataStatistics("leader", 0, 5, 5, 0, None, self.view.version)

    def set_node(self, address: str, state: str) -> None:
        from shoal.node.metadata.view import MetadataView

        node = {"address": address, "zone": "", "state": state, "raft_address": ""}
        self.view = MetadataView.from_state({"version": 8, "nodes": {"f1": node}, "datasets": {}})


class _FakeContext:
    """The replication context's pacing readers (the real ones) and its blocking executor."""

    def __init__(self) -> None:
        from shoal.node.replication.pacing import CopyPacing, WriteLatency

        self.write_latency = WriteLatency()
        self.copy_pacing = CopyPacing(self.write_latency, 2.0)

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


class _FakeNode:
    """The HttpSource protocol and nothing else: what build_app may read."""

    def __init__(self, tmp_path: Path) -> None:
        from shoal.node.config import NodeConfig

        self.config = NodeConfig(node_id="f1", data_dir=tmp_path, listen="127.0.0.1:7999", http_listen="127.0.0.1:0")
        from shoal.node.replication.copy_source import Throttle

        self.metadata = _FakeMetadata()
        self.registry = self
        self.ready = False
        self.lapsed_s = 0.0   # lease_lapsed_s()
        self.tasks = self   # TaskRunner.statistics()
        self.copy_throttle = Throttle(0)
        self.context = _FakeContext()

    def statistics(self) -> Any:
        from shoal.node.compute.tasks import TaskStatistics

        return TaskStatistics(running=0, completed=0, discarded=0, failed=0)

    def raft_role(self) -> str:
        return "none"

    def replicas(self) -> list[Any]:
        return []

    def lease_valid(self) -> bool:
        return False

    def lease_lapsed_s(self) -> float:
        return self.lapsed_s


    def request_statistics(self) -> Any:
        from shoal.node.interceptors import RequestStatistics

        from shoal.node.interceptors import LatencyHistogram

        histogram = LatencyHistogram()
        histogram.observe(0.003)
        histogram.observe(0.004)
        return RequestStatistics(in_flight=0, in_flight_max=1, refused=0, by_method={"/shoal.v1.Data/Get": {"OK": 2}},
                                 latency_by_method={"/shoal.v1.Data/Get": {"OK": histogram.snapshot()}})


def test_readyz_names_the_unmet_condition(tmp_path: Path) -> None:
    """/readyz is 503 with a one-line reason for each unmet condition, 200 once all hold.

    Method: serve build_app on a fake node in-process (loopback port 0), step its metadata
    through not ready, unregistered, wrong address, dead and alive, then set its ready flag;
    then a lapsed lease and a lost Raft leader (fault 9: a lost quorum) make it 503 again.
    """
    from shoal.node import http

    node = _FakeNode(tmp_path)

    async def readyz(server: http.HttpServer) -> tuple[int, dict[str, Any]]:
        status, _, body = await asyncio.to_thread(_get, f"http://{server.address}/readyz")
        return status, json.loads(body)

    async def scenario() -> None:
        server = await http.serve(node)
        try:
            assert await readyz(server) == (503, {"ready": False, "reason": "metadata store not ready"})
            node.metadata.ready = True
            assert await readyz(server) == (503, {"ready": False, "reason": "node f1 not registered in the metadata yet"})
            node.metadata.set_node("127.0.0.1:1", "alive")
            assert await readyz(server) == (
                503, {"ready": False, "reason": "node f1 registered at 127.0.0.1:1, not 127.0.0.1:7999"})
            node.metadata.set_node("127.0.0.1:7999", "dead")
            assert await readyz(server) == (503, {"ready": False, "reason": "node f1 is dead in the metadata"})
            node.metadata.set_node("127.0.0.1:7999", "alive")
            assert await readyz(server) == (503, {"ready": False, "reason": "node f1 not serving (starting or stopping)"})
            node.ready = True
            assert await readyz(server) == (200, {"ready": True, "reason": "ready"})
            node.lapsed_s = 0.9   # within two heartbeat intervals: an ordinary controller failover
            assert await readyz(server) == (200, {"ready": True, "reason": "ready"})
            node.lapsed_s = 4.0   # the metadata quorum lost (issue: /readyz ready without a quorum)
            status, answer = await readyz(server)
            assert status == 503 and answer["reason"].startswith("no lease for 4.0 s: no metadata controller with a "
                                                                 "quorum"), answer
            node.lapsed_s = 0.0
            node.metadata.leaderless = 2.5   # a voter without a Raft leader past leader_fallback_timeout_s (2 s)
            status, answer = await readyz(server)
            assert status == 503 and answer["reason"].startswith("no Raft leader for 2.5 s: the metadata has no "
                                                                 "quorum"), answer
            node.metadata.leaderless = 0.0
            _, _, body = await asyncio.to_thread(_get, f"http://{server.address}/metrics")
            assert "shoal_metadata_version 8.0" in body
            assert 'shoal_requests_total{method="/shoal.v1.Data/Get",node="f1",outcome="OK"} 2.0' in body
            assert ('shoal_request_duration_seconds_bucket{le="0.005",method="/shoal.v1.Data/Get",node="f1",'
                    'outcome="OK"} 2.0') in body
        finally:
            await server.stop()
            await server.stop()   # a second stop is a no-op (the node's finally may run after a failed start)

    asyncio.run(scenario())
