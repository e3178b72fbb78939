"""Operator calls of the Client (role admin): moving nodes out, and bearer tokens.

A mixin of `Client` (client/_client.py), which supplies `_admin_call`: the call goes to the
controller first, then the next node, retried until the client's deadline; every call
here is idempotent, so a retry after an unknown outcome is safe.

Tokens (node/auth.py): `create_token` makes the token here, in the client, and sends the
node only its id and the SHA-256 of its secret, so the secret never crosses the network
and a retried create records the same token once. The returned text is the only copy.
"""
from __future__ import annotations

from typing import Any

from shoal.client._arguments import check_name
from shoal.client._errors import InvalidArgumentError
from shoal.client.wire.bearer import digest, new_token
from shoal.client.wire.pb import data_pb2 as pb

ROLES = ("reader", "writer", "code", "admin")


class AdminCalls:
    """drain_node, remove_node, create_token, list_tokens, revoke_token."""

    def _admin_call(self, what: str, method: str, request: Any) -> Any:
        raise NotImplementedError   # Client implements it

    def drain_node(self, node_id: str) -> int:
        """Move every replica off `node_id` (it becomes "draining"; the controller re-replicates
        its shards elsewhere, then drops its copies). Returns the replicas it still holds: call
        again (idempotent) until 0, then the node is safe to remove. Refused: a node not alive
        (InvalidArgumentError: remove or replace it), too few other alive nodes for the replication
        of a dataset it holds (NotEnoughNodesError). There is no undrain; a restart of the node
        cancels its drain."""
        check_name(node_id, "node_id")
        response = self._admin_call("drain node", "DrainNode", pb.DrainNodeRequest(node_id=node_id))
        return int(response.replicas)

    def remove_node(self, node_id: str, *, replacement_raft: str = "", force: bool = False) -> dict[str, list[str]]:
        """Take a dead or drained node out for good (it may never register again). A metadata voter
        needs `replacement_raft`, the Raft HOST:PORT of the voter taking its place. Idempotent.
        A node holding the only copy of some shards is refused (InvalidArgumentError naming them)
        unless `force`, which accepts losing them. Returns {"voters": Raft addresses after it,
        "lost_shards": shards whose only copy it held (only when forced)}."""
        check_name(node_id, "node_id")
        if replacement_raft:
            check_name(replacement_raft, "replacement_raft")
        if not isinstance(force, bool):
            raise InvalidArgumentError(f"force must be a bool, not {type(force).__name__}")
        request = pb.RemoveNodeRequest(node_id=node_id, new_raft_address=replacement_raft, force=force)
        response = self._admin_call("remove node", "RemoveNode", request)
        return {"voters": list(response.voters), "lost_shards": list(response.lost_shards)}

    def create_token(self, role: str, name: str = "") -> dict[str, Any]:
        """A new bearer token with `role` (reader | writer | code | admin). Returns {"token": the
        text to give its holder (shown once, kept nowhere), "token_id", "role", "name"}.

        The first token of a cluster must be an admin's: from then on every call needs one.
        Errors: InvalidArgumentError (a role or name the cluster refuses), PermissionDeniedError
        (this client's token is not an admin's)."""
        check_name(role, "role")
        if role not in ROLES:
            raise InvalidArgumentError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(name, str):
            raise InvalidArgumentError(f"name must be a str, not {type(name).__name__}")
        token_id, secret, text = new_token()
        request = pb.CreateTokenRequest(token_id=token_id, digest=digest(secret), role=role, name=name)
        info = self._admin_call("create token", "CreateToken", request)
        return {"token": text, "token_id": info.token_id, "role": info.role, "name": info.name}

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token of the cluster: [{"token_id", "role", "name", "created_at_s"}] (no secrets)."""
        response = self._admin_call("list tokens", "ListTokens", pb.ListTokensRequest())
        return [{"token_id": t.token_id, "role": t.role, "name": t.name, "created_at_s": t.created_at_s}
                for t in response.tokens]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token at once on every node; False when there was no such token. The last admin
        token cannot be revoked (InvalidArgumentError): create another one first."""
        check_name(token_id, "token_id")
        response = self._admin_call("revoke token", "RevokeToken", pb.RevokeTokenRequest(token_id=token_id))
        return bool(response.revoked)
