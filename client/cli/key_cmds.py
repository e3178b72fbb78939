"""`shoal key init FILE`: make the cluster's encryption key file (encryption at rest, issue 19.4).

The file (client/wire/keyfile.py) holds 64 hex characters, mode 0600, and is never
overwritten. Start every node with `--encryption-key-file FILE` (or SHOAL_ENCRYPTION_KEY_FILE,
or `encryption_key_file` in the config file); datasets made with `shoal dataset create NAME
--encrypt` are then sealed with it. Keep a copy: data sealed with a lost key is lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoal.client.cli._common import command_errors, fail
from shoal.client.wire.keyfile import KeyFileError, key_id, read_key_file, write_key_file

key_app = typer.Typer(help="Make and inspect the key file of encrypted datasets.", no_args_is_help=True)
FileArg = Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False)]


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")


@key_app.command("init")
@command_errors
def init_command(path: FileArg) -> None:
    """Write a new random 256-bit key to FILE (mode 0600; an existing FILE is refused)."""
    try:
        identity = write_key_file(path)
    except KeyFileError as exc:
        fail(str(exc))
    typer.echo(f"wrote {path} (key id {identity}); start every node with --encryption-key-file {path} "
               "and keep a copy: values sealed with a lost key cannot be read")


@key_app.command("id")
@command_errors
def id_command(path: FileArg) -> None:
    """Print the id of the key in FILE (what `shoal dataset ls` shows for datasets sealed with it)."""
    try:
        typer.echo(key_id(read_key_file(path)))
    except KeyFileError as exc:
        fail(str(exc))
