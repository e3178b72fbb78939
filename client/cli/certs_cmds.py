"""`shoal certs init DIR --host H ...` and `shoal certs issue DIR node|client --host H ...`.

The files (client/certs.py makes them, client/wire/tls.py reads them) enable mutual TLS:
start every node with `--tls-dir DIR` and run clients with `--tls-dir DIR` (or
SHOAL_TLS_DIR); the nodes' HTTP ports then serve HTTPS with node.pem. Copy ca.key
nowhere: only `shoal certs` needs it. A --host may be a wildcard DNS name
(`*.shoal-voter.default.svc.cluster.local` covers the pods of a headless Service).
A DIR that cannot be made or written is one line naming the path; an identity other than
node or client, and a --host that is not a DNS name or IP address, are usage errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoal.client.certs import IDENTITIES, CertsError, check_host, init, issue
from shoal.client.cli._common import command_errors, fail


def _check_hosts(values: list[str] | None) -> list[str] | None:
    """--host values: DNS names (a first label may be *) or IP addresses (client/certs.py check_host)."""
    for host in values or []:
        problem = check_host(host)
        if problem is not None:
            raise typer.BadParameter(problem)
    return values


certs_app = typer.Typer(help="Make the TLS files of a cluster (a CA, node and client certificates).",
                        no_args_is_help=True)
HostsOpt = Annotated[list[str] | None, typer.Option(
    "--host", metavar="NAME|IP", callback=_check_hosts,
    help="A name or address nodes are reached by (repeat; localhost and 127.0.0.1 are always in).")]


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")


def _check_identity(value: str) -> str:
    if value not in IDENTITIES:
        raise typer.BadParameter(f"must be one of {', '.join(IDENTITIES)}, got {value!r}")
    return value


@certs_app.command("init")
@command_errors
def init_command(directory: Annotated[Path, typer.Argument(metavar="DIR", file_okay=False)],
                 hosts: HostsOpt = None) -> None:
    """Create DIR with a new cluster CA and a node and a client certificate (keys mode 0600)."""
    try:
        written = init(directory, hosts or [])
    except CertsError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {exc.filename or directory}: {exc.strerror or exc}")
    typer.echo("\n".join(f"wrote {path}" for path in written))


@certs_app.command("issue")
@command_errors
def issue_command(directory: Annotated[Path, typer.Argument(metavar="DIR", file_okay=False)],
                  identity: Annotated[str, typer.Argument(metavar="node|client", callback=_check_identity)],
                  hosts: HostsOpt = None) -> None:
    """Renew a certificate with DIR's CA; running nodes pick up a new node certificate at once."""
    try:
        written = issue(directory, identity, hosts or [])
    except CertsError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {exc.filename or directory}: {exc.strerror or exc}")
    typer.echo("\n".join(f"wrote {path}" for path in written))
