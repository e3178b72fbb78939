"""Bearer tokens and roles: what each RPC needs, and the one interceptor that checks it.

A token is `st_<id>_<secret>` (format and `digest` in client/wire/bearer.py: the client makes
tokens and sends only their id and digest). The Raft state keeps, per id, the
name, the role and the SHA-256 of the secret, never the secret: a fast hash is enough for
256 random bits (there is nothing to guess a dictionary from), which is why GitHub and
Vault store their tokens that way rather than behind bcrypt. The digest is compared with
`hmac.compare_digest` (constant time), and the id lookup reveals only whether an id
exists, which `token ls` shows anyway.

Auth is on as soon as the cluster holds one token (etcd's "auth enable" once a root user
exists): before that, a cluster is open, as it was before tokens. The first token must be
an admin's and the last admin token cannot be revoked, so a cluster never locks its
operators out (node/metadata/tokens.py).

Roles (DESIGN.md section 7), each with the RPCs it may call:
  reader   reads: Get, Scan, ListDatasets, GetClusterMap, GetNodeStatus, query jobs and
           job status/results
  writer   reader + Put, Delete, CompareAndSet, PutStream, PutRecords, CancelJob
  code     reader + map-reduce jobs with user code (the nodes write their output)
  admin    everything a client can call: datasets, nodes (drain, remove), tokens
  node     the nodes themselves: the Peer service, and client calls one node makes on
           another (map-reduce output). Its credential is derived from the cluster's Raft
           password (`node_credential`), which every node of an authenticated cluster needs
           (data-only nodes too), so no token has to be distributed to nodes.

Health checks and reflection stay open: kubelet and load-balancer probes carry no token.
The secret never reaches a log: errors name the token id only.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import grpc

from shoal.client.wire.bearer import AUTH_METADATA_KEY, TOKEN_PATTERN, digest
from shoal.node import errors
from shoal.node.interceptors import ChainLink
from shoal.node.metadata.tokens import ROLES

BEARER: Final = "Bearer "
NODE_ROLE: Final = "node"
_NODE_CREDENTIAL_PREFIX: Final = "node_"

# What each role may do beyond its own name (admin and node may do everything).
_IMPLIES: Final[dict[str, frozenset[str]]] = {
    "reader": frozenset({"reader"}),
    "writer": frozenset({"reader", "writer"}),
    "code": frozenset({"reader", "code"}),
    "admin": frozenset({"reader", "writer", "code", "admin"}),
    NODE_ROLE: frozenset({"reader", "writer", "code", "admin", NODE_ROLE}),
}
OPEN: Final = ""   # needs no token

_DATA = "/shoal.v1.Data/"
_JOBS = "/shoal.v1.Jobs/"
_PEER = "/shoal.v1.Peer/"
# Full method name -> the role it needs. An RPC missing here is refused to everyone but the
# nodes (a new RPC is closed until someone decides who may call it); a unit test checks that
# every RPC of the .proto files is listed.
METHOD_ROLES: Final[dict[str, str]] = {
    **{_DATA + name: "reader" for name in ("ListDatasets", "GetClusterMap", "Get", "Scan", "GetNodeStatus")},
    **{_DATA + name: "writer" for name in ("Put", "Delete", "CompareAndSet", "PutStream", "PutRecords")},
    **{_DATA + name: "admin" for name in ("CreateDataset", "DropDataset", "DrainNode", "RemoveNode",
                                          "CreateToken", "ListTokens", "RevokeToken")},
    **{_JOBS + name: "reader" for name in ("SubmitJob", "GetJob", "GetJobResult", "ListJobs")},
    _JOBS + "CancelJob": "writer",
    **{_PEER + name: NODE_ROLE for name in ("Replicate", "BeginEpoch", "FetchEntries", "Heartbeat", "Join",
                                            "Propose", "CopyShard", "JoinShard")},
}
_OPEN_PREFIXES: Final = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def required_role(method: str, request: Any = None) -> str:
    """The role `method` needs for `request` (OPEN: none). SubmitJob of a map-reduce job needs
    `code`: its mapper and reducer run on the nodes."""
    if method.startswith(_OPEN_PREFIXES):
        return OPEN
    role = METHOD_ROLES.get(method, NODE_ROLE)
    if method == _JOBS + "SubmitJob" and getattr(request, "kind", "") == "map_reduce":
        return "code"
    return role


def allows(role: str, needed: str) -> bool:
    return needed == OPEN or needed in _IMPLIES.get(role, frozenset())



def node_credential(raft_password: str) -> str:
    """The credential every node of a cluster presents to the others: an HMAC-SHA256 of a fixed
    label under the Raft password, so it needs no distribution and says nothing of the password."""
    mac = hmac.new(raft_password.encode(), b"shoal node credential v1", hashlib.sha256).digest()
    return _NODE_CREDENTIAL_PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")


class TokenCheck:
    """The decision, for gRPC (`Authentication`) and HTTP (node/http/auth.py) alike.

    `tokens()` returns the Raft state's token table ({id: {"name", "role", "digest", ...}});
    `own_credential` is this node's `node_credential` ("" without a Raft password, then no
    caller is a node).
    """

    def __init__(self, tokens: Callable[[], Mapping[str, Mapping[str, Any]]], own_credential: str) -> None:
        self._tokens = tokens
        self._node = own_credential

    def enforced(self) -> bool:
        """Auth is on: the cluster holds at least one token."""
        return bool(self._tokens())

    def authorize(self, what: str, presented: str, needed: str) -> None:
        """Admit a caller presenting `presented` ("" = nothing) to `what`, which needs role `needed`.

        Raises UnauthenticatedError (no, malformed, unknown or revoked token, a wrong node
        credential) or PermissionDeniedError (a role without `needed`), naming the token id,
        never its secret.
        """
        if needed == OPEN:
            return
        tokens = self._tokens()
        if not tokens:   # no token yet: the cluster is open, as before tokens (mTLS may still guard it); a
            return       # node of another cluster is refused by the cluster id every peer message carries
        if presented.startswith(_NODE_CREDENTIAL_PREFIX):
            if self._node and hmac.compare_digest(presented.encode(), self._node.encode()):
                return
            raise errors.UnauthenticatedError(f"{what}: wrong node credential (every node of a cluster "
                                              f"with tokens needs the cluster's Raft password)")
        if needed == NODE_ROLE and not presented:
            raise errors.UnauthenticatedError(f"{what} is for nodes: start every node of a cluster with "
                                              f"tokens, data-only ones too, with the cluster's Raft password")
        role = _role_of(presented, tokens, what)
        if not allows(role, needed):
            raise errors.PermissionDeniedError(f"{what} needs role {needed}; the token has role {role}")


class Authentication(ChainLink):
    """The gRPC link: checks the bearer token of every RPC (TokenCheck) before its handler runs."""

    def __init__(self, check: TokenCheck) -> None:
        super().__init__()
        self._check = check

    def _around_call(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if required_role(method) == OPEN:   # decided once per method (the wrapped handler is cached)
            return super()._around_call(method, behavior)

        def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.check(method, request, context)
            return behavior(request, context)
        return super()._around_call(method, checked)

    def _around_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if not _is_async_generator(behavior) or required_role(method) == OPEN:
            return super()._around_stream(method, behavior)

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self.check(method, request, context)
            async for response in behavior(request, context):
                yield response
        return super()._around_stream(method, checked)

    async def unary(self, method: str, context: grpc.aio.ServicerContext,
                    call: Callable[[], Awaitable[Any]]) -> Any:
        return await call()

    def stream(self, method: str, context: grpc.aio.ServicerContext,
               responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return responses

    def check(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        if not self._check.enforced():   # no token yet: the metadata is not even read
            return
        needed = required_role(method, None if _is_request_stream(request) else request)
        self._check.authorize(method.rsplit("/", 1)[-1], bearer(context.invocation_metadata() or ()), needed)


def _role_of(presented: str, tokens: Mapping[str, Mapping[str, Any]], what: str) -> str:
    if not presented:
        raise errors.UnauthenticatedError(f"{what}: this cluster requires a token "
                                          f"(--token, SHOAL_TOKEN or ClientConfig(token=...); shoal token create)")
    match = TOKEN_PATTERN.fullmatch(presented)
    if match is None:
        raise errors.UnauthenticatedError(f"{what}: malformed token (expected st_<id>_<secret>)")
    token_id, secret = match.groups()
    entry = tokens.get(token_id)
    if entry is None or not hmac.compare_digest(digest(secret).encode(), str(entry.get("digest", "")).encode()):
        raise errors.UnauthenticatedError(f"{what}: unknown or revoked token {token_id}")
    return str(entry.get("role", ""))


def bearer(metadata: Any) -> str:
    """The token of `authorization: Bearer <token>` in gRPC metadata or HTTP headers' items ("" = none)."""
    for key, value in metadata:
        if key.lower() == AUTH_METADATA_KEY:
            text = value if isinstance(value, str) else value.decode(errors="replace")
            return text[len(BEARER):].strip() if text.startswith(BEARER) else text.strip()
    return ""


def _is_request_stream(request: Any) -> bool:
    return hasattr(request, "__aiter__")


def _is_async_generator(behavior: Callable[..., Any]) -> bool:
    return inspect.isasyncgenfunction(behavior)


__all__ = ["ROLES", "Authentication", "TokenCheck", "allows", "bearer", "node_credential", "required_role"]
