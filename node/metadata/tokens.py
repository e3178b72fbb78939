"""Token commands of the metadata state machine (issue 19, node/auth.py). Pure.

State: tokens {token_id: {"digest": SHA-256 of the secret (hex), "role", "name",
"created_at_s"}}. The secret itself is never in a command, the log or a snapshot.

Two rules keep operators from locking themselves out of a cluster whose RPCs need a token
as soon as one exists: the first token must have role admin, and the last admin token
cannot be revoked (create another admin token first).
"""
from __future__ import annotations

import re
from typing import Any

from shoal.node.metadata.commands import INVALID_ARGUMENT, error, ok

State = dict[str, Any]
Result = dict[str, Any]
Changes = dict[str, Any] | None

ROLES = ("reader", "writer", "code", "admin")   # node/auth.py says what each may call
TOKENS_MAX = 1_000                              # a table, not a user database
NAME_CHARS_MAX = 128
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _put_token(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    token_id, digest, role = cmd["token_id"], cmd["digest"], cmd["role"]
    if not _TOKEN_ID.fullmatch(token_id) or not _DIGEST.fullmatch(digest):
        return None, error(INVALID_ARGUMENT, "a token id is 12 hex digits and its digest 64")
    if role not in ROLES:
        return None, error(INVALID_ARGUMENT, f"unknown role {role[:40]!r}: expected one of {', '.join(ROLES)}")
    if len(cmd["name"]) > NAME_CHARS_MAX:
        return None, error(INVALID_ARGUMENT, f"token name of {len(cmd['name'])} characters exceeds {NAME_CHARS_MAX}")
    table = state.get("tokens", {})
    existing = table.get(token_id)
    if existing is not None:
        if existing["digest"] == digest and existing["role"] == role:
            return None, ok(token_id=token_id)   # a retried create
        return None, error(INVALID_ARGUMENT, f"token id {token_id} is taken")
    if not table and role != "admin":
        return None, error(INVALID_ARGUMENT, "the first token must have role admin: once a token exists every "
                                             "call needs one, and only admin may create more")
    if len(table) >= TOKENS_MAX:
        return None, error(INVALID_ARGUMENT, f"the cluster holds {len(table)} tokens, the most it keeps "
                                             f"(revoke unused ones)")
    entry = {"digest": digest, "role": role, "name": cmd["name"], "created_at_s": cmd["at_s"]}
    return {"tokens": {**table, token_id: entry}}, ok(token_id=token_id)


def _revoke_token(state: State, cmd: dict[str, Any]) -> tuple[Changes, Result]:
    table = state.get("tokens", {})
    token_id = cmd["token_id"]
    if token_id not in table:
        return None, ok(revoked=False)
    admins = [tid for tid, entry in table.items() if entry["role"] == "admin"]
    if admins == [token_id]:
        return None, error(INVALID_ARGUMENT, f"{token_id} is the last admin token: create another admin token "
                                             f"before revoking it")
    return {"tokens": {tid: entry for tid, entry in table.items() if tid != token_id}}, ok(revoked=True)


HANDLERS = {"put_token": _put_token, "revoke_token": _revoke_token}
