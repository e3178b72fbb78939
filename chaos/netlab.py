"""Network namespaces for chaos runs: N node hosts and client hosts on a private bridge.

Recipe: notes/fault-injection.md 3.2-3.4 (tested there). Each host is a namespace with
one veth `eth0` at 198.18.0.N (nodes N = 1.., clients 100 + k); the other veth end `pN` /
`cK` is a port of bridge `br0` in a namespace of its own (`-sw`). So nothing is added to
the root namespace, hosts have no default route (any address outside 198.18.0.0/24 is
ENETUNREACH, rejected locally), and faults are nftables rules on the bridge: one place,
no state inside node namespaces, healed by deleting rules.

Every fault gets its own base chain in table `bridge chaos`, so overlapping faults heal
independently (a frame is dropped if any chain drops it).

Cleanup, since a harness that dies must not leave namespaces or processes behind:
- names carry a per-run prefix `shc<pid>x<start>` (owner pid and its start time in clock
  ticks, so a reused pid is not mistaken for the owner);
- `cleanup_stale()` removes the namespaces of owners that are gone (killing the
  processes inside: only our own processes ever run there) - the runner calls it first;
- `down()` runs from atexit, and SIGTERM/SIGHUP/SIGINT handlers (installed while a lab
  is up, from the main thread, restored after) tear every lab down and then exit.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

SUBNET = "198.18.0"               # RFC 2544 benchmarking range; only inside our namespaces
CLIENT_HOST_BASE = 100            # client k (1-based) is 198.18.0.(100 + k)
PREFIX_ROOT = "shc"
_NAME_PATTERN = re.compile(rf"^{PREFIX_ROOT}(\d+)x([0-9a-z]+)-")
_COMMAND_TIMEOUT_S = 30.0
# ARP passes every rule: a one-way partition that dropped ARP replies would cut both ways
# (the sender could not resolve the receiver), and ARP carries no data either way.
_NOT_ARP = "ether type != arp"


class NetLabError(RuntimeError):
    """An ip/nft command failed; the message has the command and its stderr."""


def availability() -> tuple[bool, str]:
    """(True, "") when namespaces can be built here, else (False, why not)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "network namespaces and nftables need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return False, f"`{tool}` not found (apt-get install -y {package})"
    return True, ""


def run_prefix(pid: int | None = None) -> str:
    """The namespace prefix of the run owned by `pid` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX_ROOT}{pid}x{_base36(_start_ticks(pid))}"


def cleanup_stale() -> list[str]:
    """Delete namespaces of runs whose owner process is gone; returns their names."""
    if availability()[0] is False:
        return []
    removed = []
    for name in list_namespaces():
        match = _NAME_PATTERN.match(name)
        if match is None:
            continue
        pid, start = int(match.group(1)), match.group(2)
        if _owner_alive(pid, start):
            continue
        _delete_namespace(name)
        removed.append(name)
    if removed:
        logger.warning("removed %d namespaces left by dead chaos runs: %s", len(removed), ", ".join(removed))
    return removed


def list_namespaces() -> list[str]:
    output = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


class NetLab:
    """N node hosts + client hosts on one bridge; `up()`, faults, `down()`."""

    def __init__(self, nodes: int, clients: int = 1, *, prefix: str | None = None) -> None:
        assert 1 <= nodes < CLIENT_HOST_BASE and 1 <= clients <= 50
        self.nodes = nodes
        self.clients = clients
        self.prefix = prefix or run_prefix()
        self.switch = f"{self.prefix}-sw"
        self._chains: set[str] = set()
        self._up = False
        self._attached = False

    @classmethod
    def attach(cls, prefix: str, nodes: int, clients: int = 1) -> NetLab:
        """A lab another process built and will tear down (the run inside the client
        namespace): faults work, `down()` is left to the owner."""
        lab = cls(nodes, clients, prefix=prefix)
        lab._attached = True
        return lab

    # ---- names ----
    def node_namespace(self, node: int) -> str:
        return f"{self.prefix}-n{node}"

    def client_namespace(self, client: int = 1) -> str:
        return f"{self.prefix}-c{client}"

    def node_address(self, node: int) -> str:
        return f"{SUBNET}.{node}"

    def client_address(self, client: int = 1) -> str:
        return f"{SUBNET}.{CLIENT_HOST_BASE + client}"

    @staticmethod
    def exec_prefix(namespace: str) -> list[str]:
        """Prepend to a command to run it in `namespace` (`ip netns exec` execs: same pid)."""
        return ["ip", "netns", "exec", namespace]

    def namespaces(self) -> list[str]:
        return ([self.switch] + [self.node_namespace(i) for i in range(1, self.nodes + 1)]
                + [self.client_namespace(k) for k in range(1, self.clients + 1)])

    # ---- lifecycle ----
    def up(self) -> NetLab:
        available, reason = availability()
        if not available:
            raise NetLabError(f"network namespaces unavailable: {reason}")
        _register(self)
        self._up = True
        try:
            _run(["ip", "netns", "add", self.switch])
            _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
            _nft(self.switch, "add table bridge chaos")
            hosts = [(self.node_namespace(i), f"p{i}", self.node_address(i)) for i in range(1, self.nodes + 1)]
            hosts += [(self.client_namespace(k), f"c{k}", self.client_address(k))
                      for k in range(1, self.clients + 1)]
            for namespace, port, address in hosts:
                self._add_host(namespace, port, address)
        except BaseException:
            self.down()
            raise
        logger.info("netlab %s up: %d nodes, %d clients", self.prefix, self.nodes, self.clients)
        return self

    def _add_host(self, namespace: str, port: str, address: str) -> None:
        _run(["ip", "netns", "add", namespace])
        _run(["ip", "link", "add", "eth0", "netns", namespace, "type", "veth",
              "peer", "name", port, "netns", self.switch])
        _run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        _run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
        _run(["ip", "-n", namespace, "link", "set", "lo", "up"])

    def down(self) -> None:
        """Kill every process in our namespaces and delete them; idempotent."""
        existing = set(list_namespaces()) if availability()[0] else set()
        for namespace in self.namespaces():
            if namespace in existing:
                _delete_namespace(namespace)
        self._chains.clear()
        if self._up:
            logger.info("netlab %s down", self.prefix)
        self._up = False
        _unregister(self)

    def __enter__(self) -> NetLab:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    # ---- faults: each `fault_id` is one nft base chain, removed by heal(fault_id) ----
    def partition(self, fault_id: str, group: Sequence[int], *, direction: str = "both",
                  include_clients: bool = False) -> None:
        """Cut nodes `group` off from the other nodes (and the clients if asked).

        direction: both; inbound (frames *to* the group are dropped); outbound (from it).
        """
        assert direction in ("both", "inbound", "outbound") and group
        inside = [f"p{i}" for i in group]
        outside = [f"p{i}" for i in range(1, self.nodes + 1) if i not in group]
        if include_clients:
            outside += [f"c{k}" for k in range(1, self.clients + 1)]
        rules = []
        if direction in ("both", "outbound"):
            rules.append(f"iifname {_set(inside)} oifname {_set(outside)} {_NOT_ARP} drop")
        if direction in ("both", "inbound"):
            rules.append(f"iifname {_set(outside)} oifname {_set(inside)} {_NOT_ARP} drop")
        self._add_chain(fault_id, rules if outside else [])

    def loss(self, fault_id: str, node: int, percent: int, *, include_clients: bool = False) -> None:
        """Drop `percent` % of the frames from and to `node` (nft numgen, netem is missing)."""
        assert 1 <= percent <= 100
        me = f"p{node}"
        others = [f"p{i}" for i in range(1, self.nodes + 1) if i != node]
        if include_clients:
            others += [f"c{k}" for k in range(1, self.clients + 1)]
        coin = f"{_NOT_ARP} numgen random mod 100 < {percent} drop"
        rules = [f"iifname {_set([me])} oifname {_set(others)} {coin}",
                 f"iifname {_set(others)} oifname {_set([me])} {coin}"] if others else []
        self._add_chain(fault_id, rules)

    def heal(self, fault_id: str | None = None) -> None:
        """Remove one fault's rules, or all of them."""
        chains = sorted(self._chains) if fault_id is None else [_chain(fault_id)]
        for chain in chains:
            if chain in self._chains:
                _nft(self.switch, f"delete chain bridge chaos {chain}")
                self._chains.discard(chain)

    def rules(self) -> str:
        return _run(["ip", "netns", "exec", self.switch, "nft", "-a", "list", "table", "bridge", "chaos"]).stdout

    def _add_chain(self, fault_id: str, rules: list[str]) -> None:
        chain = _chain(fault_id)
        assert chain not in self._chains, f"fault {fault_id} is already injected"
        script = [f"add chain bridge chaos {chain} {{ type filter hook forward priority 0; policy accept; }}"]
        script += [f"add rule bridge chaos {chain} {rule}" for rule in rules]
        _nft(self.switch, "\n".join(script))
        self._chains.add(chain)


def _chain(fault_id: str) -> str:
    """nft identifiers: letters, digits, _ ; prefixed so no keyword (`fwd`!) collides."""
    return "f_" + re.sub(r"[^A-Za-z0-9_]", "_", fault_id)


def _set(ports: Iterable[str]) -> str:
    return "{ " + ", ".join(f'"{p}"' for p in ports) + " }"


def _nft(namespace: str, script: str) -> None:
    _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], stdin=script + "\n")


def _delete_namespace(namespace: str) -> None:
    """SIGKILL what runs inside (only our processes do), then delete the namespace."""
    pids = _run(["ip", "netns", "pids", namespace], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _run(["ip", "netns", "del", namespace], check=False)


def _run(args: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().replace("\n", " | ")
        raise NetLabError(f"`{' '.join(args)}` failed (exit {result.returncode}): {detail}")
    return result


def _start_ticks(pid: int) -> int:
    """Process start time in clock ticks since boot (/proc/PID/stat field 22), 0 if gone."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_alive(pid: int, start: str) -> bool:
    ticks = _start_ticks(pid)
    return ticks != 0 and _base36(ticks) == start


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, remainder = divmod(number, 36)
        text = digits[remainder] + text
        if number == 0:
            return text


# ---- every lab of this process is torn down at exit and on SIGTERM/SIGHUP/SIGINT ----
_ACTIVE: list[NetLab] = []
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_LOCK = threading.RLock()
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def down_all() -> None:
    with _LOCK:
        labs = list(_ACTIVE)
    for lab in labs:
        try:
            lab.down()
        except Exception:   # noqa: BLE001 - cleanup goes on with the other labs
            logger.exception("netlab %s: cleanup failed", lab.prefix)


def _register(lab: NetLab) -> None:
    with _LOCK:
        if lab in _ACTIVE:
            return
        if not _ACTIVE and threading.current_thread() is threading.main_thread():
            for signum in _CLEANUP_SIGNALS:
                _PREVIOUS_HANDLERS[signum] = signal.signal(signum, _on_signal)
        _ACTIVE.append(lab)


def _unregister(lab: NetLab) -> None:
    with _LOCK:
        if lab in _ACTIVE:
            _ACTIVE.remove(lab)
        if not _ACTIVE and _PREVIOUS_HANDLERS and threading.current_thread() is threading.main_thread():
            for signum, handler in _PREVIOUS_HANDLERS.items():
                signal.signal(signum, handler)
            _PREVIOUS_HANDLERS.clear()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Tear down, then behave as the signal would have: KeyboardInterrupt or exit."""
    logger.warning("signal %s: tearing down network namespaces", signal.Signals(signum).name)
    previous = _PREVIOUS_HANDLERS.get(signum)
    down_all()
    if callable(previous):
        previous(signum, frame)
    if previous == signal.SIG_IGN:
        return
    raise SystemExit(128 + signum)


atexit.register(down_all)
