"""Controller fencing through real pysyncobj (issue 15): a deposed controller's forwarded decisions are refused.

The mechanism the issue describes, made deterministic: pysyncobj followers forward
proposals to the current leader, so a decision a deposed controller proposes (after
waking from a pause, through whichever voter) is committed by the new leader unless the
state machine refuses it. A SIGSTOP race cannot be forced from a test (pysyncobj's tick
thread and the node's event loop race after SIGCONT), so here the deposed controller's
decisions are proposed explicitly, after a newer leader took control. Three RaftMetadata
voters run inside this process on loopback ports; waits poll against a deadline.
"""
from __future__ import annotations

import asyncio
import pathlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shoal.node.config import NodeConfig
from shoal.node.errors import NoControllerError, UnknownOutcomeError
from shoal.node.metadata import commands, fsm
from shoal.node.metadata.raft import RaftMetadata

PASSWORD = "integration-test-password"
POLL_S = 0.02
TIMEOUT_S = 15.0


def _free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def _wait(condition: Callable[[], Any], what: str, describe: Callable[[], str]) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {TIMEOUT_S} s waiting for {what}; {describe()}")
        time.sleep(POLL_S)
    return value


class Voters:
    """Three RaftMetadata voters n0..n2 under `root`; member i has node id f"n{i}"."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.addresses = [_free_address() for _ in range(3)]
        self.members: list[RaftMetadata | None] = [None] * 3

    def start(self, index: int) -> RaftMetadata:
        address = self.addresses[index]
        config = NodeConfig(node_id=f"n{index}", data_dir=self.root / f"n{index}", raft=address,
                            raft_peers=tuple(a for a in self.addresses if a != address),
                            raft_password=PASSWORD).validate()
        member = RaftMetadata(config, lambda: None)
        member.start()
        self.members[index] = member
        return member

    def stop(self, index: int) -> None:
        member, self.members[index] = self.members[index], None
        if member is not None:
            member.stop()

    def leader(self) -> int | None:
        leaders = [i for i, m in enumerate(self.members) if m is not None and m.leader_term() is not None]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self) -> int:
        deadline = time.monotonic() + TIMEOUT_S
        while (index := self.leader()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {TIMEOUT_S} s waiting for one leader; {self.describe()}")
            time.sleep(POLL_S)
        return index

    def propose(self, index: int, command: bytes) -> dict[str, Any]:
        """Propose the same bytes through member `index` until it answers (the callers' contract)."""
        member = self.members[index]
        assert member is not None
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                return asyncio.run(member.propose(command, 2.0))
            except (NoControllerError, UnknownOutcomeError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(POLL_S)

    def describe(self) -> str:
        return "; ".join(f"n{i}: {m.statistics() if m else 'stopped'}" for i, m in enumerate(self.members))


@pytest.fixture
def voters(tmp_path: pathlib.Path) -> Iterator[Voters]:
    group = Voters(tmp_path)
    yield group
    for index in range(3):
        group.stop(index)


def test_raft_deposed_controller_decisions_forwarded_to_the_new_leader_are_refused(voters: Voters) -> None:
    """A controller of term T1 is deposed; its decisions, proposed through a follower, are refused
    (STALE_CONTROLLER) by the leader of a later term, and so is its attempt to take control again.

    Method: 3 voters, nodes n0..n2 registered, dataset ds (2 shards, R=3). The leader takes
    control in its term (leader_term()). It is stopped; a new leader is elected and takes
    control. The old controller's round (declare the others dead, promote itself, fence the
    others out), all with controller_term T1, is proposed through the remaining follower;
    then the old leader restarts from its journal and proposes become_controller(T1). Every
    voter must end with the same state: all nodes alive, shard maps untouched.
    """
    for index in range(3):
        voters.start(index)
    first = voters.wait_leader()
    for index in range(3):
        assert voters.propose(first, commands.register_node(
            f"n{index}", f"127.0.0.1:{7400 + index}", "", voters.addresses[index]))["ok"]
    assert voters.propose(first, commands.create_dataset("ds", 2, 3))["ok"]
    leader = voters.members[first]
    assert leader is not None
    first_term = leader.leader_term()
    assert first_term is not None and first_term == leader.statistics().term
    assert all(m.leader_term() is None for i, m in enumerate(voters.members) if m is not None and i != first)
    assert voters.propose(first, commands.become_controller(f"n{first}", first_term))["ok"]

    state = leader.state
    stale = [commands.set_node_state(f"n{i}", "dead", controller_term=first_term) for i in range(3) if i != first]
    for index, entry in enumerate(state["datasets"]["ds"]["shard_map"]):
        if entry["primary"] != f"n{first}":
            stale.append(commands.promote("ds", index, f"n{first}", entry["epoch"], controller_term=first_term))
        stale += [commands.remove_replica("ds", index, r, entry["epoch"], controller_term=first_term)
                  for r in entry["replicas"] if r not in (entry["primary"], f"n{first}")]

    voters.stop(first)
    second = voters.wait_leader()
    new_leader = voters.members[second]
    assert new_leader is not None
    second_term = new_leader.leader_term()
    assert second_term is not None and second_term > first_term
    assert voters.propose(second, commands.become_controller(f"n{second}", second_term))["ok"]

    follower = next(i for i in range(3) if i not in (first, second))
    results = [voters.propose(follower, command) for command in stale]
    assert [r.get("error") for r in results] == [commands.STALE_CONTROLLER] * len(stale), results

    voters.start(first)
    retake = voters.propose(first, commands.become_controller(f"n{first}", first_term))
    assert retake["error"] == commands.STALE_CONTROLLER and retake["controller"] == f"n{second}"

    def same_everywhere() -> bool:
        states = [m.state for m in voters.members if m is not None]
        return len(states) == 3 and all(s == states[0] for s in states)
    _wait(same_everywhere, "every voter at one state", voters.describe)
    final = new_leader.state
    assert all(node["state"] == "alive" for node in final["nodes"].values())
    assert final["datasets"] == state["datasets"]
    assert fsm.controller_of(final) == {"node_id": f"n{second}", "term": second_term}
