"""netlab against real network namespaces (root only): connectivity, partitions, loss, cleanup.

Cleanup is verified as in notes/fault-injection.md 3.14: after down() (or the cleanup of a
dead run) none of our namespaces exist and the root namespace's links and nft ruleset are
exactly what they were before.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from shoal.chaos import netlab

AVAILABLE, REASON = netlab.availability()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not AVAILABLE, reason=f"netns unavailable: {REASON}")]

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("ok")
except OSError as exc:
    print(type(exc).__name__)
"""
LISTEN = """
import socket, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1]))); server.listen(64)
while True:
    server.accept()[0].close()
"""
UDP_COUNT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sock.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
sock.settimeout(float(sys.argv[2])); count = 0
try:
    while True:
        sock.recv(100); count += 1
except socket.timeout:
    print(count)
"""
UDP_SEND = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    try: sock.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    except OSError: pass
    time.sleep(0.001)
"""
PORT = 7999


def system_state() -> tuple[str, str]:
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    links = "\n".join(sorted(line.split()[0] for line in links.splitlines()))
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return links, ruleset


def ours(prefix: str) -> list[str]:
    return [name for name in netlab.list_namespaces() if name.startswith(prefix + "-")]


@pytest.fixture
def lab() -> Iterator[netlab.NetLab]:
    before = system_state()
    lab = netlab.NetLab(3, clients=1).up()
    try:
        yield lab
    finally:
        lab.down()
    assert ours(lab.prefix) == []
    assert system_state() == before


def connect(lab: netlab.NetLab, namespace: str, address: str, timeout_s: float = 0.5) -> str:
    result = subprocess.run([*lab.exec_prefix(namespace), sys.executable, "-c", CONNECT, address, str(PORT),
                             str(timeout_s)], capture_output=True, text=True, timeout=30)
    return result.stdout.strip() or result.stderr.strip()


def listen(lab: netlab.NetLab, node: int) -> subprocess.Popen[bytes]:
    """A TCP listener in a node namespace, polled until the client namespace reaches it."""
    process = subprocess.Popen([*lab.exec_prefix(lab.node_namespace(node)), sys.executable, "-c", LISTEN,
                                str(PORT)])
    deadline = time.monotonic() + 20
    while connect(lab, lab.client_namespace(), lab.node_address(node)) != "ok":
        assert process.poll() is None and time.monotonic() < deadline, "listener never reachable"
    return process


def udp_delivered(lab: netlab.NetLab, src: int, dst: int, count: int) -> int:
    receiver = subprocess.Popen([*lab.exec_prefix(lab.node_namespace(dst)), sys.executable, "-c", UDP_COUNT,
                                 str(PORT), "1.0"], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    subprocess.run([*lab.exec_prefix(lab.node_namespace(src)), sys.executable, "-c", UDP_SEND,
                    lab.node_address(dst), str(PORT), str(count)], check=True, timeout=60)
    out, _ = receiver.communicate(timeout=60)
    return int(out.strip())


def test_netlab_hosts_reach_each_other_not_outside(lab: netlab.NetLab) -> None:
    """Nodes and the client reach each other on 198.18.0.0/24; nothing outside is routable."""
    listeners = [listen(lab, 2)]
    try:
        assert connect(lab, lab.node_namespace(1), lab.node_address(2)) == "ok"
        assert connect(lab, lab.node_namespace(1), "192.0.2.1") == "OSError"   # ENETUNREACH, locally
    finally:
        lab.down()
        for process in listeners:
            process.wait(10)


def test_netlab_isolate_and_heal(lab: netlab.NetLab) -> None:
    """Isolating n1 cuts it from n2 and n3 but not from the client; heal restores it."""
    listeners = [listen(lab, 1), listen(lab, 2)]
    try:
        lab.partition("iso", [1])
        assert connect(lab, lab.node_namespace(1), lab.node_address(2)) == "TimeoutError"
        assert connect(lab, lab.node_namespace(3), lab.node_address(2)) == "ok"
        assert connect(lab, lab.client_namespace(), lab.node_address(1)) == "ok"
        assert "f_iso" in lab.rules()
        lab.heal("iso")
        assert "f_iso" not in lab.rules()
        assert connect(lab, lab.node_namespace(1), lab.node_address(2)) == "ok"
    finally:
        lab.down()
        for process in listeners:
            process.wait(10)


def test_netlab_partition_can_cut_clients(lab: netlab.NetLab) -> None:
    """include_clients also drops the client's traffic to the cut-off group; overlapping faults heal apart."""
    listeners = [listen(lab, 1), listen(lab, 3)]
    try:
        lab.partition("cut", [1], include_clients=True)
        lab.partition("other", [3])
        assert connect(lab, lab.client_namespace(), lab.node_address(1)) == "TimeoutError"
        lab.heal("cut")
        assert connect(lab, lab.client_namespace(), lab.node_address(1)) == "ok"
        assert connect(lab, lab.node_namespace(2), lab.node_address(3)) == "TimeoutError"
        lab.heal()
        assert connect(lab, lab.node_namespace(2), lab.node_address(3)) == "ok"
    finally:
        lab.down()
        for process in listeners:
            process.wait(10)


def test_netlab_oneway_partition(lab: netlab.NetLab) -> None:
    """direction=inbound drops frames to n1 only: n1 -> n2 datagrams arrive, n2 -> n1 do not."""
    lab.partition("in", [1], direction="inbound")
    assert udp_delivered(lab, 1, 2, 50) == 50
    assert udp_delivered(lab, 2, 1, 50) == 0


def test_netlab_packet_loss(lab: netlab.NetLab) -> None:
    """loss 50 % on n2 drops about half of the datagrams sent to it (bounds are 8 sigma wide)."""
    lab.loss("drop", 2, 50)
    delivered = udp_delivered(lab, 1, 2, 400)
    assert 120 <= delivered <= 280
    lab.heal("drop")
    assert udp_delivered(lab, 1, 2, 100) == 100


def owner_process() -> subprocess.Popen[str]:
    """A separate harness process that builds a lab and waits for its stdin to close."""
    code = ("import sys\nfrom shoal.chaos import netlab\nlab = netlab.NetLab(2).up()\n"
            "print(lab.prefix, flush=True)\nsys.stdin.read()\nlab.down()\n")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_netlab_cleanup_stale_after_sigkill() -> None:
    """A harness killed with SIGKILL leaves namespaces; the next run's cleanup_stale removes them."""
    before = system_state()
    owner = owner_process()
    assert owner.stdout is not None
    prefix = owner.stdout.readline().strip()
    assert len(ours(prefix)) == 4                     # switch, n1, n2, c1
    assert prefix not in "".join(netlab.cleanup_stale())   # a live owner's lab is left alone
    owner.kill()
    owner.wait(10)
    owner.stdin.close()  # type: ignore[union-attr]
    owner.stdout.close()
    removed = netlab.cleanup_stale()
    assert sorted(removed) == sorted(f"{prefix}-{suffix}" for suffix in ("sw", "n1", "n2", "c1"))
    assert ours(prefix) == [] and system_state() == before


def test_netlab_cleanup_on_sigterm() -> None:
    """SIGTERM to the harness tears its lab down before it exits."""
    before = system_state()
    owner = owner_process()
    assert owner.stdout is not None
    prefix = owner.stdout.readline().strip()
    assert ours(prefix)
    os.kill(owner.pid, signal.SIGTERM)
    assert owner.wait(30) == 128 + signal.SIGTERM
    owner.stdin.close()  # type: ignore[union-attr]
    owner.stdout.close()
    assert ours(prefix) == [] and system_state() == before
