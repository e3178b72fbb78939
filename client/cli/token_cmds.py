"""`shoal token create|ls|revoke`: bearer tokens with a role (node/auth.py says what each may call).

Creating the first token turns auth on for the whole cluster: from then on every command
needs `--token`, SHOAL_TOKEN or `--token-file` (SHOAL_TOKEN_FILE). That first token must
have role admin. The token text is printed once and kept nowhere: the cluster stores its
SHA-256 only.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shoal.client._admin import ROLES
from shoal.client.cli import _common
from shoal.client.cli._common import command_errors, connect, fail
from shoal.client.wire.bearer import TOKEN_PATTERN

token_app = typer.Typer(help="Bearer tokens: create, list, revoke (role admin).", no_args_is_help=True)


def _check_role(value: str) -> str:
    if value not in ROLES:
        raise typer.BadParameter(f"unknown role {value!r}: expected one of {', '.join(ROLES)}")
    return value


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


@token_app.command("create")
@command_errors
def create(ctx: typer.Context,
           role: Annotated[str, typer.Option("--role", metavar="|".join(ROLES), callback=_check_role,
                                             help="What the token may do.")] = "reader",
           name: Annotated[str, typer.Option("--name", help="What the token is for (shown by `token ls`).")] = "",
           out: Annotated[Path | None, typer.Option(
               "--out", metavar="FILE", dir_okay=False,
               help="Write the token to FILE (mode 0600) instead of printing it.")] = None) -> None:
    """Create a token and print it once (only its SHA-256 is kept). The cluster's first token
    must be an admin's: from then on every call needs a token."""
    if out is None:
        with connect(ctx) as client:
            created = client.create_token(role, name)
        typer.echo(created["token"])
        typer.echo(f"token {created['token_id']} (role {created['role']}): shown once, keep it secret", err=True)
        return
    try:   # the file first: a token made and then not saved would exist with nobody holding it
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"cannot write token file {out}: {exc.strerror}" + (" (not overwriting)" if out.exists() else ""))
    try:
        with connect(ctx) as client:
            created = client.create_token(role, name)
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "w") as handle:
        handle.write(created["token"] + "\n")
    typer.echo(f"token {created['token_id']} (role {created['role']}) written to {out}")


@token_app.command("ls")
@command_errors
def ls(ctx: typer.Context,
       as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the cluster's tokens: id, role, name, creation time (never the secrets)."""
    with connect(ctx) as client:
        tokens = client.list_tokens()
    if as_json:
        typer.echo(json.dumps(tokens))
        return
    table = Table("id", "role", "name", "created")
    for token in tokens:
        created = datetime.datetime.fromtimestamp(token["created_at_s"]).isoformat(" ", "seconds")
        table.add_row(token["token_id"], token["role"], token["name"], created)
    _common.console().print(table if tokens else "no tokens: the cluster needs none (anyone may call it)")


@token_app.command("revoke")
@command_errors
def revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID")]) -> None:
    """Revoke a token at once; calls carrying it get UNAUTHENTICATED. The last admin token stays.

    TOKEN_ID is the id `token ls` shows; a whole token (st_<id>_<secret>) is taken for its id,
    and the secret is never echoed. An id that names no token is an error (exit 1).
    """
    whole = TOKEN_PATTERN.fullmatch(token_id.strip())
    token_id = whole.group(1) if whole else token_id
    with connect(ctx) as client:
        revoked = client.revoke_token(token_id)
    if not revoked:
        fail(f"no token {token_id} (already revoked, or never made: shoal token ls lists them)")
    typer.echo(f"token {token_id} revoked")
