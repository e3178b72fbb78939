"""Operator membership commands in the state machine: drain refusals, a removal that would lose
a shard's only copy, a restart of a draining node; and the CLI's side of them (no node needed)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from typer.testing import CliRunner

from shoal.client._errors import InvalidArgumentError
from shoal.client.cli import app, node_cmds
from shoal.node.metadata import commands, fsm
from test_fsm import cluster, run


def with_dataset(nodes: int, replication: int, shards: int = 2, name: str = "ev") -> dict[str, Any]:
    state, [created] = run(cluster(nodes), commands.create_dataset(name, shards, replication))
    assert created["ok"], created
    return state


def node_state(state: dict[str, Any], node_id: str) -> str:
    return str(state["nodes"][node_id]["state"])


def test_drain_is_refused_when_the_others_cannot_hold_the_replication() -> None:
    """3 nodes, R=3: the drain could never end, so it is refused naming the dataset and both numbers
    (NOT_ENOUGH_NODES), and the node stays alive."""
    state = with_dataset(3, 3)
    after, [refused] = run(state, commands.drain_node("n1"))
    assert refused == {"ok": False, "error": "NOT_ENOUGH_NODES",
                       "message": "cannot drain n1: dataset ev has replication 3 and only 2 other alive nodes"}
    assert node_state(after, "n1") == "alive" and after["version"] == state["version"]


def test_drain_names_the_highest_replication_and_counts_only_alive_others() -> None:
    """4 nodes with R=3: accepted; then a second drain leaves 2 alive others (a draining or dead node
    does not count) and is refused; a dataset of lower replication is not the one named."""
    state, [low] = run(with_dataset(4, 3), commands.create_dataset("aa", 4, 2))
    assert low["ok"]
    state, [first] = run(state, commands.drain_node("n1"))
    assert first["ok"] and node_state(state, "n1") == "draining"
    _, [second] = run(state, commands.drain_node("n2"))
    assert second["message"] == "cannot drain n2: dataset ev has replication 3 and only 2 other alive nodes"
    state, [again] = run(state, commands.drain_node("n1"))     # repeated while draining: idempotent, no check
    assert again == {"ok": True, "node_id": "n1", "state": "draining"}


def test_drain_of_the_last_alive_node_is_refused() -> None:
    """A 1-node cluster (even with no dataset): draining it would leave no alive node."""
    state, [refused] = run(cluster(1), commands.drain_node("n0"))
    assert refused["error"] == "NOT_ENOUGH_NODES"
    assert refused["message"] == "cannot drain n0: it is the last alive node: 0 other alive nodes"
    _, [refused] = run(with_dataset(1, 1), commands.drain_node("n0"))
    assert refused["message"] == "cannot drain n0: dataset ev has replication 1 and only 0 other alive nodes"


def test_drain_of_a_dead_node_is_refused_and_it_can_still_be_replaced() -> None:
    """A dead node stays dead (not "draining", which would block its removal forever): the error
    points to remove/replace, and the removal goes through (its shards have other copies)."""
    state, _ = run(with_dataset(4, 3), commands.set_node_state("n3", "dead"))
    state, [refused] = run(state, commands.drain_node("n3"))
    assert refused["error"] == "INVALID_ARGUMENT"
    assert refused["message"].startswith("cannot drain n3: n3 is dead: use shoal node remove/replace")
    assert node_state(state, "n3") == "dead"
    state, [removed] = run(state, commands.remove_node("n3"))
    assert removed == {"ok": True, "node_id": "n3", "state": "removed", "lost": []}


def test_drain_commands_logged_before_the_checks_replay_unchecked() -> None:
    """A drain_node in an older journal has no `checked`: it replays as it applied then."""
    old = msgpack.packb({"v": 1, "op": "drain_node", "request_id": "old-drain", "node_id": "n1"})
    state, [result] = run(with_dataset(3, 3), old)
    assert result["ok"] and node_state(state, "n1") == "draining"


def only_copy_dead() -> dict[str, Any]:
    """3 nodes; dataset r1 (R=1, 3 shards): the dead node n2 holds the only copy of some."""
    state, _ = run(with_dataset(3, 1, shards=3, name="r1"), commands.set_node_state("n2", "dead"))
    return state


def test_removing_a_dead_node_with_a_shard_s_only_copy_needs_force() -> None:
    """Refused without force (one error naming the shards and --force; nothing changes); with
    force it is removed and the lost shards are named, as before."""
    state = only_copy_dead()
    lost = [f"r1/{i}" for i, entry in enumerate(state["datasets"]["r1"]["shard_map"]) if entry["replicas"] == ["n2"]]
    assert lost
    after, [refused] = run(state, commands.remove_node("n2"))
    assert refused["error"] == "INVALID_ARGUMENT" and after["version"] == state["version"]
    assert refused["message"].startswith(f"node n2 holds the only copy of {len(lost)} shards ({', '.join(lost)}): ")
    assert "--force to accept the loss" in refused["message"] and node_state(after, "n2") == "dead"
    after, [removed] = run(state, commands.remove_node("n2", force=True))
    assert removed == {"ok": True, "node_id": "n2", "state": "removed", "lost": lost}
    _, [again] = run(after, commands.remove_node("n2"))       # already removed: idempotent without force
    assert again["ok"] and again["lost"] == []


def test_remove_commands_logged_before_force_replay_forced() -> None:
    """A remove_node in an older journal has no `force`: it removes (and loses) as it did then."""
    old = msgpack.packb({"v": 1, "op": "remove_node", "request_id": "old-remove", "node_id": "n2"})
    state, [result] = run(only_copy_dead(), old)
    assert result["ok"] and result["lost"] and node_state(state, "n2") == "removed"


def test_a_draining_node_that_registers_again_is_alive_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A restart cancels a drain (the node serves only once registered alive): the result says so
    (the state machine stays pure, so a log replay says nothing) and the proposer warns. An
    ordinary re-registration says nothing."""
    from shoal.node.server import warn_if_drain_cancelled
    state, _ = run(with_dataset(4, 3), commands.drain_node("n1"))
    with caplog.at_level(logging.WARNING, logger="shoal.node.server"):
        state, [registered] = run(state, commands.register_node("n1", "10.0.0.1:7400", "", "10.0.0.1:7500"))
        assert registered["ok"] and registered["drain_cancelled"] and node_state(state, "n1") == "alive"
        warn_if_drain_cancelled("n1", registered)
        assert [r.getMessage() for r in caplog.records] == [
            "node n1 registered again while draining: its drain is cancelled (copies already made elsewhere "
            "stay); drain it again with shoal node drain n1"]
        state, [again] = run(state, commands.register_node("n1", "10.0.0.9:7400", "", "10.0.0.1:7500"))
        warn_if_drain_cancelled("n1", again)
        assert "drain_cancelled" not in again and len(caplog.records) == 1


# ---- the CLI (a fake client: no node needed) ----

class FakeClient:
    def __init__(self, held: int = 3, refuse: str = "") -> None:
        self.held, self.refuse = held, refuse
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def drain_node(self, node_id: str) -> int:
        self.calls.append(("drain", {"node_id": node_id}))
        return self.held

    def remove_node(self, node_id: str, **kwargs: Any) -> dict[str, list[str]]:
        self.calls.append(("remove", {"node_id": node_id, **kwargs}))
        if self.refuse and not kwargs.get("force"):
            raise InvalidArgumentError(self.refuse)
        return {"voters": ["127.0.0.1:1", "127.0.0.1:9"], "lost_shards": ["r1/1"] if kwargs.get("force") else []}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()

    @contextlib.contextmanager
    def connect(ctx: object) -> Iterator[FakeClient]:
        yield client
    monkeypatch.setattr(node_cmds, "connect", connect)
    return client


def invoke(*argv: str) -> Any:
    return CliRunner(env={"SHOAL_CLUSTER": None, "COLUMNS": "120"}).invoke(app, ["node", *argv])


def test_cli_drain_no_wait_exits_0_once_the_drain_started(fake: FakeClient) -> None:
    result = invoke("drain", "n1", "--no-wait")
    assert result.exit_code == 0, result.output
    assert "node n1 draining: 3 replicas to move" in result.stdout and "drain started" in result.stdout
    assert fake.calls == [("drain", {"node_id": "n1"})]


def test_cli_remove_and_replace_pass_force_and_report_the_loss(fake: FakeClient) -> None:
    fake.refuse = "node n2 holds the only copy of 1 shards (r1/1): ... pass --force to accept the loss"
    refused = invoke("remove", "n2")
    assert refused.exit_code == 1 and "--force to accept the loss" in refused.stderr
    forced = invoke("remove", "n2", "--force")
    assert forced.exit_code == 0 and "lost with it (their only copy): r1/1" in forced.stderr
    replaced = invoke("replace", "n2", "--raft", "127.0.0.1:9", "--force")
    assert replaced.exit_code == 0, replaced.output
    assert [kwargs.get("force") for _, kwargs in fake.calls] == [False, True, True]
    assert fake.calls[-1][1]["replacement_raft"] == "127.0.0.1:9"
