"""Port helpers for local clusters: is a port free, find a free port block, format addresses.

A local cluster uses a block layout (node i: gRPC base+i, Raft base+100+i, HTTP base+200+i), so a free
*base* is wanted, not N unrelated ephemeral ports. Bases are drawn below the kernel's
ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`): a port picked from that range
and released can be taken by any outgoing connection before the node binds it, while a
port below it is only taken by another listener.

The free check binds with SO_REUSEADDR, as gRPC and pysyncobj do, so a port held only by
TIME_WAIT sockets of a cluster that just stopped counts as free (the node can bind it),
while a port with a live listener does not. An address that does not exist in this
network namespace (a netns host seen from outside) cannot be checked and counts as free.
"""
from __future__ import annotations

import errno
import logging
import os
import pathlib
import random
import socket
from collections.abc import Iterable, Sequence

logger = logging.getLogger(__name__)

RAFT_PORT_OFFSET = 100          # node i: gRPC base+i, Raft base+RAFT_PORT_OFFSET+i ...
HTTP_PORT_OFFSET = 200          # ... and HTTP (dashboard, /metrics) base+HTTP_PORT_OFFSET+i
BASE_PORT_LOW = 20_000          # search window for a free base when the kernel range is unknown
BASE_PORT_ATTEMPTS_MAX = 200
# "LOW-HIGH": the ports local clusters of this process (and its children) may use. Two test
# processes that start clusters at once (pytest-xdist workers) each get their own range,
# since a free check and the node's bind a second later are not atomic.
PORT_RANGE_ENV = "SHOAL_LOCAL_PORT_RANGE"


def format_address(host: str, port: int) -> str:
    """host:port, with IPv6 literals bracketed as gRPC expects."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def port_free(host: str, port: int) -> bool:
    """True if a listener could bind host:port right now (see the module docstring)."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bare, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return True
            return False
    return True


def block_ports(base_port: int, count: int) -> list[int]:
    """Every port a block of `count` nodes uses: gRPC ports, then Raft ports, then HTTP ports."""
    grpc_ports = [base_port + i for i in range(count)]
    return grpc_ports + [port + offset for offset in (RAFT_PORT_OFFSET, HTTP_PORT_OFFSET) for port in grpc_ports]


def first_port_in_use(pairs: Iterable[tuple[str, int]]) -> tuple[str, int] | None:
    """The first (host, port) that has a listener, or None if all are free."""
    for host, port in pairs:
        if not port_free(host, port):
            return host, port
    return None


def free_base_port(hosts: Sequence[str], count: int, *, rng: random.Random | None = None) -> int:
    """A base port such that the whole block for `count` nodes is free on the given hosts.

    hosts[i] is node i's host (one entry is reused for every node).
    """
    assert count >= 1 and hosts
    chooser = rng or random.Random()
    low, high = _search_window(count)
    for _ in range(BASE_PORT_ATTEMPTS_MAX):
        base_port = chooser.randrange(low, high)
        pairs = [(hosts[i % len(hosts)], port) for i in range(count)
                 for port in (base_port + i, base_port + RAFT_PORT_OFFSET + i, base_port + HTTP_PORT_OFFSET + i)]
        if all(port_free(host, port) for host, port in pairs):
            return base_port
    raise OSError(errno.EADDRINUSE, f"no free block of {count} port triples found in {low}..{high}")


def _search_window(count: int) -> tuple[int, int]:
    """[low, high) for base ports: SHOAL_LOCAL_PORT_RANGE ("LOW-HIGH") when set, else below the
    ephemeral range, leaving room for the block."""
    given = os.environ.get(PORT_RANGE_ENV, "")
    if given:
        try:
            low, high = parse_port_range(given)
        except ValueError as exc:   # OSError: what `shoal up` and LocalCluster report as one line
            raise OSError(errno.EINVAL, str(exc)) from None
        if high - low <= HTTP_PORT_OFFSET + count:
            raise OSError(errno.EINVAL, f"{PORT_RANGE_ENV}={given} is too small for a block of {count} nodes "
                                        f"(ports up to base + {HTTP_PORT_OFFSET + count})")
        return low, high - HTTP_PORT_OFFSET - count
    return default_window(count)


def parse_port_range(text: str) -> tuple[int, int]:
    """"LOW-HIGH" -> (LOW, HIGH); ValueError naming the text when it is not two ports, LOW < HIGH."""
    low_text, sep, high_text = text.partition("-")
    if not sep or not low_text.strip().isdigit() or not high_text.strip().isdigit():
        raise ValueError(f"{PORT_RANGE_ENV} must be LOW-HIGH (two port numbers), got {text!r}")
    low, high = int(low_text), int(high_text)
    if not 1_024 <= low < high <= 65_535:
        raise ValueError(f"{PORT_RANGE_ENV} must satisfy 1024 <= LOW < HIGH <= 65535, got {text!r}")
    return low, high


def default_window(count: int) -> tuple[int, int]:
    """[low, high) for base ports below the kernel's ephemeral range (see the module docstring)."""
    ephemeral_low = 32_768
    try:
        text = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        ephemeral_low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    high = ephemeral_low - HTTP_PORT_OFFSET - count
    low = max(1_024, min(BASE_PORT_LOW, high - 1_000))
    if high - low < 1_000:   # a tiny or odd ephemeral range: search above it instead
        return 40_000, 60_000 - HTTP_PORT_OFFSET - count
    return low, high
