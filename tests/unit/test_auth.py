"""Issue 19.2 units: the role table, the token check and the token commands of the state machine."""
from __future__ import annotations

from typing import Any

import pytest

from shoal.client.wire.bearer import TOKEN_PATTERN, digest, new_token
from shoal.client.wire.pb import data_pb2, jobs_pb2, peer_pb2
from shoal.node import errors
from shoal.node.auth import (
    METHOD_ROLES, NODE_ROLE, OPEN, Authentication, TokenCheck, allows, node_credential, required_role,
)
from shoal.node.metadata import commands, fsm


class FakeContext:
    """Only what Authentication.check reads of a grpc.aio.ServicerContext: the metadata."""

    def __init__(self, token: str | None) -> None:
        self._metadata = () if token is None else (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_every_rpc_of_every_service_has_a_role() -> None:
    """A new RPC must be given a role on purpose (unlisted ones are node-only)."""
    methods = {f"/{service.full_name}/{method.name}"
               for module in (data_pb2, jobs_pb2, peer_pb2)
               for service in module.DESCRIPTOR.services_by_name.values()
               for method in service.methods}
    assert methods == set(METHOD_ROLES)
    assert all(role == NODE_ROLE for method, role in METHOD_ROLES.items() if "/shoal.v1.Peer/" in method)


def test_required_role_of_a_map_reduce_is_code_and_health_is_open() -> None:
    assert required_role("/shoal.v1.Jobs/SubmitJob", jobs_pb2.SubmitJobRequest(kind="query")) == "reader"
    assert required_role("/shoal.v1.Jobs/SubmitJob", jobs_pb2.SubmitJobRequest(kind="map_reduce")) == "code"
    assert required_role("/grpc.health.v1.Health/Check") == OPEN
    assert required_role("/shoal.v1.Data/MadeUp") == NODE_ROLE


@pytest.mark.parametrize(("role", "may"), [
    ("reader", {"reader"}), ("writer", {"reader", "writer"}), ("code", {"reader", "code"}),
    ("admin", {"reader", "writer", "code", "admin"}), ("node", {"reader", "writer", "code", "admin", "node"}),
    ("", set()), ("root", set()),
])
def test_role_implications(role: str, may: set[str]) -> None:
    assert {needed for needed in ("reader", "writer", "code", "admin", "node") if allows(role, needed)} == may


def test_token_format_and_digest() -> None:
    token_id, secret, text = new_token()
    match = TOKEN_PATTERN.fullmatch(text)
    assert match is not None and match.groups() == (token_id, secret)
    assert len(digest(secret)) == 64 and digest(secret) != digest(secret + "x")
    assert new_token()[2] != text


def checker(table: dict[str, Any], credential: str = "") -> Authentication:
    return Authentication(TokenCheck(lambda: table, credential))


def test_check_refuses_and_admits() -> None:
    token_id, secret, text = new_token()
    table = {token_id: {"digest": digest(secret), "role": "writer", "name": "", "created_at_s": 0.0}}
    put, create = "/shoal.v1.Data/Put", "/shoal.v1.Data/CreateDataset"
    auth = checker(table, node_credential("password1"))
    auth.check(put, None, FakeContext(text))
    with pytest.raises(errors.PermissionDeniedError, match="CreateDataset needs role admin; the token has role writer"):
        auth.check(create, None, FakeContext(text))
    for bad, why in ((None, "requires a token"), ("junk", "malformed"),
                     (f"st_{token_id}_{'A' * 43}", f"unknown or revoked token {token_id}"),
                     (f"st_{'0' * 12}_{secret}", "unknown or revoked token")):
        with pytest.raises(errors.UnauthenticatedError, match=why) as refused:
            auth.check(put, None, FakeContext(bad))
        assert secret not in str(refused.value)
    # the nodes: their credential may call anything; another cluster's (or a guess) may not
    auth.check("/shoal.v1.Peer/Replicate", None, FakeContext(node_credential("password1")))
    auth.check(create, None, FakeContext(node_credential("password1")))
    with pytest.raises(errors.UnauthenticatedError, match="wrong node credential"):
        auth.check(put, None, FakeContext(node_credential("password2")))
    with pytest.raises(errors.PermissionDeniedError):
        auth.check("/shoal.v1.Peer/Replicate", None, FakeContext(text))
    with pytest.raises(errors.UnauthenticatedError, match="is for nodes"):
        auth.check("/shoal.v1.Peer/Replicate", None, FakeContext(None))


def test_without_tokens_the_cluster_is_open() -> None:
    auth = checker({})
    auth.check("/shoal.v1.Data/CreateDataset", None, FakeContext(None))
    auth.check("/shoal.v1.Peer/Replicate", None, FakeContext(None))
    auth.check("/grpc.health.v1.Health/Check", None, FakeContext(None))


def apply(state: dict[str, Any], command: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    return fsm.apply(state, command)


def test_token_commands_keep_an_admin() -> None:
    state = fsm.initial_state()
    a, b, c = (f"{i:012x}" for i in (1, 2, 3))
    state, result = apply(state, commands.put_token(a, "1" * 64, "writer", "", 1.0))
    assert not result["ok"] and "first token must have role admin" in result["message"]
    state, result = apply(state, commands.put_token(a, "1" * 64, "admin", "ops", 1.0))
    assert result["ok"] and state["tokens"][a]["role"] == "admin" and "1" * 64 == state["tokens"][a]["digest"]
    again, result = apply(state, commands.put_token(a, "1" * 64, "admin", "ops", 1.0))   # a retried create
    assert result["ok"] and again["tokens"] == state["tokens"]
    state, result = apply(state, commands.put_token(a, "2" * 64, "admin", "", 1.0))
    assert not result["ok"] and "taken" in result["message"]
    state, result = apply(state, commands.put_token(b, "2" * 64, "root", "", 1.0))
    assert not result["ok"] and "unknown role" in result["message"]
    state, result = apply(state, commands.put_token(b, "X" * 64, "reader", "", 1.0))
    assert not result["ok"]
    state, result = apply(state, commands.revoke_token(a))
    assert not result["ok"] and "last admin token" in result["message"]
    state, _ = apply(state, commands.put_token(b, "2" * 64, "reader", "", 2.0))
    state, _ = apply(state, commands.put_token(c, "3" * 64, "admin", "", 3.0))
    state, result = apply(state, commands.revoke_token(a))
    assert result == {"ok": True, "revoked": True} and set(state["tokens"]) == {b, c}
    state, result = apply(state, commands.revoke_token(a))
    assert result == {"ok": True, "revoked": False}
