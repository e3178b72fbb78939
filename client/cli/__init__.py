"""The `shoal` command (entry point `shoal = shoal.client.cli:main`; also `python -m shoal.client.cli`).

`app` is the typer application; command modules add themselves through a
`register(app)` function, so a new command group is one module plus one line here:

    data_cmds     dataset create|ls|drop, put, get, delete, load, status
    backup_cmds   dataset export|import  (on data_cmds.dataset_app)
    certs_cmds    certs init|issue      (TLS files)
    key_cmds      key init|id           (the key file of encrypted datasets)
    token_cmds    token create|ls|revoke (bearer tokens and roles)
    node_cmds     node start            (node_app: more `shoal node ...` commands)
    cluster_cmds  up, down              (a local cluster of real processes)
    chaos_cmds    chaos run|ls
    query_cmds    query, job ls|watch|cancel
    demo_cmds     demo                  (the README's first command)

Global options (--cluster / SHOAL_CLUSTER, --timeout / SHOAL_TIMEOUT, --tls-dir, --token /
SHOAL_TOKEN, --token-file / SHOAL_TOKEN_FILE) live in
cli/_common.py and reach every command through the typer context; _group.ShoalGroup
accepts them after the subcommand too and prints usage errors as one line.
"""
from __future__ import annotations

import typer

from shoal.client.cli import (
    _common, backup_cmds, certs_cmds, chaos_cmds, cluster_cmds, data_cmds, demo_cmds, node_cmds, query_cmds,
    key_cmds, token_cmds,
)
from shoal.client.cli._group import ShoalGroup
from shoal.client.cli.data_cmds import dataset_app
from shoal.client.cli.node_cmds import node_app

app = typer.Typer(name="shoal", cls=ShoalGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
app.callback()(_common.main_options)

for _module in (data_cmds, backup_cmds, certs_cmds, key_cmds, token_cmds, query_cmds, node_cmds, cluster_cmds, chaos_cmds,
                demo_cmds):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="shoal")


__all__ = ["app", "dataset_app", "main", "node_app"]
