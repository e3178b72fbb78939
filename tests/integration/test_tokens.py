"""Issue 19.2: bearer tokens with roles on a real cluster (3 voters + 1 data-only node).

Each role tries each kind of operation; a missing, malformed, unknown or revoked token is
UNAUTHENTICATED, a role without the RPC is PERMISSION_DENIED; replication (peer RPCs with
the node credential, also to and from the data-only node) and map-reduce output keep
working once auth is on; the HTTP port guards /metrics and /api the same way; no secret
reaches a node log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shoal.client import (
    Client, ClientConfig, InvalidArgumentError, ShoalError, UnauthenticatedError,
)
from shoal.client.cli import app
from shoal.client.local import LocalCluster
from test_cluster_replication import FAST, wait_for

ENV = {**FAST, "SHOAL_USER_CODE": "1", "SHOAL_WORKERS": "1"}


def client_with(cluster: LocalCluster, token: str) -> Client:
    return Client(cluster.addresses, timeout_s=8.0, config=ClientConfig(token=token))


def outcome(call: Callable[[], Any]) -> str:
    """"ok", or the name of the ShoalError class the call raised."""
    try:
        call()
    except ShoalError as exc:
        return type(exc).__name__
    return "ok"


def answers_everywhere(cluster: LocalCluster, token: str) -> set[str]:
    """What each node, asked directly (no failover), answers a status read with `token`."""
    answers = set()
    for address in cluster.addresses:
        with Client([address], timeout_s=3.0, config=ClientConfig(token=token)) as client:
            answers.add(outcome(lambda: client.node_status(address)))
    return answers


def http_status(address: str, path: str, token: str = "", method: str = "GET") -> int:
    request = urllib.request.Request(f"http://{address}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:   # nosec B310: a loopback test URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def double(key: str, value: Any) -> list[tuple[str, Any]]:
    return [("total", value["n"])]


def add(key: str, values: list[Any]) -> Any:
    return sum(values)


def test_issue19_roles_tokens_and_revocation(local_cluster: Callable[..., LocalCluster], tmp_path: Path) -> None:
    cluster = local_cluster(4, voters=3, env=ENV)
    with cluster.client() as open_client:
        open_client.create_dataset("events", shards=4, replication=3)
        open_client.put("events", "k0", {"n": 0})
        with pytest.raises(InvalidArgumentError, match="first token must have role admin"):
            open_client.create_token("reader")
        admin = open_client.create_token("admin", "ops")["token"]
    wait_for(lambda: answers_everywhere(cluster, "") == {"UnauthenticatedError"}, cluster,
             "every node refusing calls without a token")
    cluster.token = admin
    with client_with(cluster, admin) as admin_client:
        tokens = {role: admin_client.create_token(role, f"{role} test")["token"]
                  for role in ("reader", "writer", "code")}
        tokens["admin"] = admin
        listed = {t["role"] for t in admin_client.list_tokens()}
        assert listed == {"reader", "writer", "code", "admin"}
        admin_client.create_dataset("totals", shards=1, replication=3)

    def operations(client: Client, role: str) -> dict[str, str]:
        return {
            "get": outcome(lambda: client.get("events", "k0")),
            "put": outcome(lambda: client.put("events", f"by-{role}", {"n": 1})),
            "query": outcome(lambda: client.query("events").agg(n=("count", None)).submit().wait(30)),
            "map_reduce": outcome(lambda: client.map_reduce("events", double, add, output="totals").wait(30)),
            "create_dataset": outcome(lambda: client.create_dataset(f"made-by-{role}", shards=1, replication=1)),
            "create_token": outcome(lambda: client.create_token("reader")),
        }

    ok, denied = "ok", "PermissionDeniedError"
    expected = {
        "reader": {"get": ok, "put": denied, "query": ok, "map_reduce": denied, "create_dataset": denied,
                   "create_token": denied},
        "writer": {"get": ok, "put": ok, "query": ok, "map_reduce": denied, "create_dataset": denied,
                   "create_token": denied},
        "code": {"get": ok, "put": denied, "query": ok, "map_reduce": ok, "create_dataset": denied,
                 "create_token": denied},
        "admin": {"get": ok, "put": ok, "query": ok, "map_reduce": ok, "create_dataset": ok, "create_token": ok},
    }
    for role, token in tokens.items():
        wait_for(lambda: answers_everywhere(cluster, token) == {ok}, cluster,
                 f"the {role} token known on every node")
        with client_with(cluster, token) as client:
            assert operations(client, role) == expected[role], f"role {role}"

    with client_with(cluster, admin) as admin_client:
        # replication through the node credential: every write above reached all three replicas
        assert admin_client.get("events", "by-writer") == {"n": 1}
        assert admin_client.get("totals", "total") is not None
        for bad in ("", "not-a-token", "st_000000000000_" + "A" * 43):
            with client_with(cluster, bad) as client:
                with pytest.raises(UnauthenticatedError):
                    client.get("events", "k0")
        reader_id = tokens["reader"].split("_")[1]
        runner = CliRunner(env={"SHOAL_TOKEN": admin, "SHOAL_TLS_DIR": None})
        cli = ["--cluster", cluster.cluster_address, "token", "revoke"]
        revoked = runner.invoke(app, [*cli, tokens["reader"]])   # the whole token: revoked by its id, never echoed
        assert revoked.exit_code == 0 and revoked.output == f"token {reader_id} revoked\n", revoked.output
        again = runner.invoke(app, [*cli, reader_id])
        assert again.exit_code == 1 and f"no token {reader_id}" in again.output, again.output
        admin_id = admin.split("_")[1]
        with pytest.raises(InvalidArgumentError, match="last admin token"):
            admin_client.revoke_token(admin_id)
    wait_for(lambda: answers_everywhere(cluster, tokens["reader"]) == {"UnauthenticatedError"}, cluster,
             "the revoked token refused on every node")

    http = cluster.nodes[3].http_address   # the data-only node's HTTP port: its token table came by heartbeat
    assert http_status(http, "/metrics") == 401 and http_status(http, "/api/v1/cluster") == 401
    assert http_status(http, "/metrics", tokens["writer"]) == 200
    assert http_status(http, "/metrics", tokens["reader"]) == 401   # revoked above
    assert http_status(http, "/healthz") == 200 and http_status(http, "/") == 200   # probes and the page stay open
    assert http_status(http, "/api/v1/cluster", method="OPTIONS") == 204   # the CORS preflight of a moved page

    token_file = tmp_path / "admin.token"
    token_file.write_text(admin + "\n")
    listed_by_cli = subprocess.run(
        [sys.executable, "-m", "shoal.client.cli", "--cluster", cluster.cluster_address, "token", "ls", "--json"],
        env={**os.environ, "SHOAL_TOKEN_FILE": str(token_file)}, capture_output=True, text=True, timeout=60)
    assert listed_by_cli.returncode == 0, listed_by_cli.stderr
    assert "writer test" in listed_by_cli.stdout and admin not in listed_by_cli.stdout

    cluster.stop()
    logs = "".join(node.log_path.read_text(errors="replace") for node in cluster.nodes)
    for token in tokens.values():
        secret = token.split("_", 2)[2]
        assert secret not in logs
    assert "token" in logs   # the logs do mention tokens (by id): the check above looked at real logs
