"""Issue 16 point 5: an address where nothing has ever answered fails in about a second.

Method: real sockets on 127.0.0.1 stand in for the bad peers: a listener that accepts TCP and
never writes (a hung process), one whose accept queue is full (the kernel drops the SYNs, as
a firewall that blackholes packets does), and a closed port (refused). A real single node
(the local_cluster fixture) is the live seed, and a SIGSTOPped node is the real hung peer.
Each first call (client API and the `shoal` command in a subprocess) must fail within an
upper bound generous for a busy 2-core machine, naming every seed and what happened to it;
once a node has answered, a silent node is waited for as before.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.client import Client, ClientConfig, SeedsUnreachableError, UnavailableError
from shoal.client.local import LocalCluster

ClusterFactory = Callable[..., LocalCluster]
FAIL_WITHIN_S = 5.0     # connect_timeout_s is 1.0; the rest is slack for a loaded machine
SILENT = "no answer within 1.0 s"


@contextlib.contextmanager
def hung_listener() -> Iterator[str]:
    """A TCP listener that accepts every connection and never reads or writes on it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept_forever, name="hung-listener", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for sock in [server, *accepted]:
            sock.close()


@contextlib.contextmanager
def full_backlog_listener() -> Iterator[str]:
    """A listener that never calls accept, its queue filled first: new SYNs are dropped (no reply)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
        fillers.append(filler)
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        for sock in [server, *fillers]:
            sock.close()


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def timed_failure(call: Callable[[], Any]) -> tuple[SeedsUnreachableError, float]:
    started_s = time.monotonic()
    with pytest.raises(SeedsUnreachableError) as info:
        call()
    return info.value, time.monotonic() - started_s


def shoal_cli(cwd: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the real `shoal` command (a fresh interpreter, as an operator would). The seconds
    returned are beyond what `shoal --help` took just before: the interpreter's own start-up
    on a busy machine is not the client's waiting (seen: 5-7 s under four parallel clusters)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SHOAL_CLUSTER", "SHOAL_TIMEOUT")}
    command = [sys.executable, "-m", "shoal.client.cli"]
    started_s = time.monotonic()
    subprocess.run([*command, "--help"], cwd=cwd, env=env, capture_output=True, timeout=60, check=True)
    startup_s = time.monotonic() - started_s
    started_s = time.monotonic()
    result = subprocess.run([*command, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return result, max(0.0, time.monotonic() - started_s - startup_s)


@pytest.mark.parametrize("first_call", [
    lambda c: c.status(), lambda c: c.get("ds", "k"), lambda c: c.put("ds", "k", 1),
    lambda c: c.create_dataset("ds", shards=1), lambda c: c.list_datasets(),
], ids=["status", "get", "put", "create_dataset", "list_datasets"])
def test_issue16_first_contact_with_a_hung_peer_fails_within_a_second(first_call: Callable[[Client], Any]) -> None:
    """A peer that accepts TCP and never speaks HTTP/2: any first call fails in about
    connect_timeout_s (not the 10 s call budget) with one UnavailableError naming the address."""
    with hung_listener() as address, Client(address) as client:
        error, elapsed_s = timed_failure(lambda: first_call(client))
    assert elapsed_s < FAIL_WITHIN_S, elapsed_s
    assert isinstance(error, UnavailableError) and not error.retriable and not error.sent
    assert str(error) == f"cannot reach the cluster at {address} ({SILENT})"


def test_issue16_shoal_status_with_a_hung_peer_fails_within_a_second(tmp_path: Path) -> None:
    """`shoal status --cluster ADDR` against a hung peer: exit 1, one error line naming ADDR."""
    with hung_listener() as address:
        result, elapsed_s = shoal_cli(tmp_path, "status", "--cluster", address)
    assert elapsed_s < FAIL_WITHIN_S, (elapsed_s, result.stderr)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: cannot reach the cluster at {address} ({SILENT})\n"


def test_issue16_first_contact_with_a_full_backlog_fails_within_a_second(tmp_path: Path) -> None:
    """Variant: a listener whose accept queue is full drops the SYN (like a blackholed host);
    the client and `shoal status` fail the same way."""
    with full_backlog_listener() as address:
        with Client(address) as client:
            error, elapsed_s = timed_failure(client.status)
        assert elapsed_s < FAIL_WITHIN_S, elapsed_s
        assert str(error) == f"cannot reach the cluster at {address} ({SILENT})"
        result, elapsed_s = shoal_cli(tmp_path, "--cluster", address, "dataset", "ls")
    assert elapsed_s < FAIL_WITHIN_S, (elapsed_s, result.stderr)
    assert result.returncode == 1 and result.stderr.startswith(f"error: cannot reach the cluster at {address} (")


def test_issue16_first_contact_names_every_dead_seed_and_its_fate(tmp_path: Path) -> None:
    """Variant: two dead seeds, one refused and one hung: one error, within the bound, naming
    both with what happened to each; refused alone fails at once (nothing to wait for)."""
    refused = closed_address()
    with hung_listener() as hung:
        seeds = f"{refused},{hung}"
        expected = f"cannot reach the cluster at {seeds} ({refused}: Connection refused; {hung}: {SILENT})"
        with Client(seeds) as client:
            error, elapsed_s = timed_failure(lambda: client.put("ds", "k", 1))
        assert elapsed_s < FAIL_WITHIN_S and str(error) == expected
        result, elapsed_s = shoal_cli(tmp_path, "status", "--cluster", seeds)
        assert elapsed_s < FAIL_WITHIN_S and result.returncode == 1
        assert result.stderr == f"error: {expected}\n"
    with Client(refused) as client:
        error, elapsed_s = timed_failure(client.status)
    assert elapsed_s < 0.9 and str(error) == f"cannot reach the cluster at {refused} (Connection refused)"


def test_issue16_hung_first_seed_then_a_live_node_works(local_cluster: ClusterFactory, tmp_path: Path) -> None:
    """A seed list whose first address is hung and second a live node: first contact succeeds (the
    live one answered), so calls work; the hung seed costs one map try, then is asked last."""
    live = local_cluster(1).addresses[0]
    with hung_listener() as hung:
        started_s = time.monotonic()
        with Client(f"{hung},{live}") as client:
            report = client.status()
            client.create_dataset("events", shards=2, replication=1)
            client.put("events", "k", {"v": 1})
            assert client.get("events", "k") == {"v": 1}
        assert time.monotonic() - started_s < FAIL_WITHIN_S
        assert [node["address"] for node in report["nodes"]] == [live]
        result, elapsed_s = shoal_cli(tmp_path, "--cluster", f"{hung},{live}", "get", "events", "k")
    assert result.returncode == 0 and result.stdout == '{"v": 1}\n', result.stderr
    assert elapsed_s < FAIL_WITHIN_S * 2, elapsed_s


def test_issue16_after_first_contact_a_silent_node_is_waited_for(local_cluster: ClusterFactory,
                                                                  tmp_path: Path) -> None:
    """The real hung peer is a SIGSTOPped node. `shoal status` (a new process, which never heard
    from it) fails fast; a client that did hear from it keeps the normal retries: its get waits
    past connect_timeout_s for the node, resumed after 2 s, and succeeds.

    (A second Client in this process would not do for the first half: gRPC shares one
    connection per address between a process's channels, and that one did answer.)
    """
    cluster = local_cluster(1)
    address = cluster.addresses[0]
    with cluster.client(config=ClientConfig(timeout_s=15.0)) as client:
        client.create_dataset("events", shards=1, replication=1)
        client.put("events", "k", 7)
        cluster.pause("n1")
        resumer = threading.Timer(2.0, cluster.resume, ("n1",))
        try:
            result, elapsed_s = shoal_cli(tmp_path, "status", "--cluster", address)
            assert elapsed_s < FAIL_WITHIN_S, (elapsed_s, result.stderr)
            assert result.stderr == f"error: cannot reach the cluster at {address} ({SILENT})\n"
            resumer.start()
            started_s = time.monotonic()
            assert client.get("events", "k") == 7
            assert time.monotonic() - started_s > 1.0
        finally:
            resumer.cancel()
            if resumer.ident is not None:
                resumer.join()
            if cluster.is_paused("n1"):
                cluster.resume("n1")
