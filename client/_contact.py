"""First contact: a client that has never heard from any node waits at most ~1 s for one.

Until some address has answered, a wrong address, a host that drops packets, a process
that accepts TCP and never speaks HTTP/2 (a hung or SIGSTOPped node: the kernel still
accepts) and a dead cluster all look the same, and the normal retries would spend the
whole call's deadline (ClientConfig.timeout_s, 10 s) on each. So the first call of a
client connects to every seed at once and waits until:

- one seed's channel is READY (its gRPC core completed the HTTP/2 handshake; that does
  not depend on how busy the node's Python side is, so a loaded node still counts):
  the call goes on with the normal retries, asking the seeds in their order as before
  (a silent one costs one map try, at most half the time left, then is asked last);
- every seed failed to connect (refused, unknown host): nothing to wait for;
- ClientConfig.connect_timeout_s (1 s, or less when the call's deadline is nearer) passed.

In the last two cases the call raises SeedsUnreachableError, which the client does not
retry, naming each seed and what happened to it: gRPC's reason for a failed connection
("Connection refused"), or "no answer within 1.0 s". Once any address has answered
(Transport._answered), a client never waits like this again: a node that goes silent
later is an unresponsive node (_channel.py) and calls retry until their deadline.
A process's channels to one address share a connection (gRPC's subchannel pool), so a
connection another client of the same process opened counts as an answer.

When the reason looks like one side speaking TLS and the other not (`tls_hint`: a
plaintext client's connection closed or reset by the node, a TLS client's handshake
failing), the error says so: a node started with --tls-dir refuses plaintext, and the
other way round.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import grpc

from shoal.client._errors import SeedsUnreachableError, error_from_rpc
from shoal.client.wire.pb import data_pb2 as pb
from shoal.client.wire.pb import data_pb2_grpc as pb_grpc

REASON_PROBE_TIMEOUT_S: Final = 0.2   # one call to a seed whose connection failed, to learn why

# gRPC's words for a plaintext client refused by a TLS node, and for a TLS client facing a plaintext node
_PLAINTEXT_REFUSED: Final = ("socket closed", "connection reset", "ssl", "handshake")
_TLS_REFUSED: Final = ("wrong_version_number", "handshake failed")
_CERTIFICATE_REFUSED: Final = ("certificate", "signature", "unknown_ca")   # a handshake failed over trust

_CONNECTED: Final = "connected"
_FAILED: Final = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Contact:
    """The outcome of a first contact: a seed that answered, or what happened to each seed."""

    answered: str | None            # the first seed that answered; None: none did
    problems: Mapping[str, str]     # when none did: seed -> "Connection refused", "no answer within 1.0 s"

    def error(self, seeds: Sequence[str], *, tls: bool = False) -> SeedsUnreachableError:
        """The error of a contact nobody answered; the message names every seed. tls: the client uses TLS."""
        assert self.answered is None
        if len(seeds) == 1:
            detail = self.problems[seeds[0]]
        else:
            detail = "; ".join(f"{seed}: {self.problems[seed]}" for seed in seeds)
        return SeedsUnreachableError(f"cannot reach the cluster at {','.join(seeds)} ({detail}){tls_hint(detail, tls)}",
                                     sent=False)


def tls_hint(detail: str, tls: bool) -> str:
    """" (the node may ...)" when gRPC's `detail` of a failed connection looks like a TLS/plaintext
    mismatch, for a client that uses TLS (`tls`) or not; else ""."""
    text = detail.lower()
    if not tls and any(word in text for word in _PLAINTEXT_REFUSED):
        return " (the node may require TLS: --tls-dir DIR)"
    if tls and any(word in text for word in _TLS_REFUSED):
        if "wrong_version_number" not in text and any(word in text for word in _CERTIFICATE_REFUSED):
            return " (the node's certificate may not be signed by the client's ca.pem: another cluster's CA?)"
        return " (the node may not use TLS: try without --tls-dir)"
    return ""


def first_contact(channels: Mapping[str, grpc.Channel], window_s: float) -> Contact:
    """Connect every channel at once; see the module docstring for when it returns."""
    assert channels and window_s >= 0
    states = _watch(channels, window_s)
    for address, state in states.items():
        if state == _CONNECTED:
            return Contact(address, {})
    problems: dict[str, str] = {}
    for address, state in states.items():
        if state is None:
            problems[address] = f"no answer within {round(window_s, 2)} s"
            continue
        reason = _failure_reason(channels[address])
        if reason is None:      # it answered after all (the node came up meanwhile)
            return Contact(address, {})
        problems[address] = reason
    return Contact(None, problems)


def _watch(channels: Mapping[str, grpc.Channel], window_s: float) -> dict[str, str | None]:
    """address -> _CONNECTED, _FAILED (a connection attempt failed) or None (still trying).

    Returns when one channel is READY, every channel failed, or window_s passed. A failed
    channel keeps reconnecting meanwhile (gRPC's backoff), so it may still turn READY.
    """
    done = threading.Condition()
    states: dict[str, str | None] = dict.fromkeys(channels)

    def watcher(address: str) -> Callable[[grpc.ChannelConnectivity], None]:
        def on_change(connectivity: grpc.ChannelConnectivity) -> None:
            with done:
                if connectivity is grpc.ChannelConnectivity.READY:
                    states[address] = _CONNECTED
                elif connectivity in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                    states[address] = states[address] or _FAILED
                done.notify_all()
        return on_change

    callbacks = {address: watcher(address) for address in channels}
    try:
        for address, channel in channels.items():
            channel.subscribe(callbacks[address], try_to_connect=True)
        with done:
            done.wait_for(lambda: _CONNECTED in states.values() or None not in states.values(), timeout=window_s)
            return dict(states)
    finally:
        for address, channel in channels.items():
            channel.unsubscribe(callbacks[address])


def _failure_reason(channel: grpc.Channel) -> str | None:
    """Why a channel's connection failed, from one quick call; None if the call was answered."""
    started_s = time.monotonic()
    try:
        pb_grpc.DataStub(channel).GetClusterMap(pb.ClusterMapRequest(), timeout=REASON_PROBE_TIMEOUT_S)
    except grpc.RpcError as exc:
        error = error_from_rpc(exc, "connect")
        if error.status == grpc.StatusCode.DEADLINE_EXCEEDED.name:
            return f"connection failed, then no answer within {round(time.monotonic() - started_s, 2)} s"
        return error.message.split(": ", 1)[-1]
    return None
