"""`shoal node start`: run a node daemon in the foreground; `shoal node drain`: empty a node.

The flags become a dict keyed by NodeConfig field names (None = not given, so the config
file and SHOAL_* environment variables can supply it) for shoal.node.__main__.run, which
merges file < environment < flags, validates, and runs until SIGTERM/SIGINT.

shoal.node is imported inside the command: the client and every other command must
work where only the client is installed, without LMDB or pysyncobj (DESIGN.md 1).
Other node commands (`shoal node drain|remove|replace`) register on `node_app`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.client.cli._common import command_errors, connect, fail, seconds_range
from shoal.client.wire.tls import TlsError

logger = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")     # node/config.py NodeConfig.validate
WORKERS_MAX = 1024                 # worker processes per node: more is a typo, not a machine
DRAIN_POLL_S = 1.0
DRAIN_WAIT_S_MAX = 30 * 86_400.0   # a month: draining a big node onto slow disks takes long, not forever

_FORCE_HELP = ("Remove it even though it holds the only copy of some shards: their data is lost "
               "(without it, such a removal is refused and names them).")

node_app = typer.Typer(help="Run and manage node daemons.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")


def _check_log_level(value: str | None) -> str | None:
    if value is not None and value.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value


def _check_log_format(value: str | None) -> str | None:
    if value is not None and value not in LOG_FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


@node_app.command("start")
def start(
    node_id: Annotated[str | None, typer.Option("--id", help="Unique, stable node id (e.g. n1).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where shards and Raft state live.",
                                                  file_okay=False)] = None,
    listen: Annotated[str | None, typer.Option("--listen", metavar="HOST:PORT",
                                               help="gRPC address to bind (client and peer API).")] = None,
    advertise: Annotated[str | None, typer.Option("--advertise", metavar="HOST:PORT",
                                                  help="Address others dial (default: --listen).")] = None,
    raft: Annotated[str | None, typer.Option("--raft", metavar="HOST:PORT",
                                             help="This metadata voter's Raft address.")] = None,
    raft_peers: Annotated[str | None, typer.Option("--raft-peers", metavar="A,B",
                                                   help="The other voters' Raft addresses.")] = None,
    join: Annotated[str | None, typer.Option("--join", metavar="HOST:PORT",
                                             help="Data-only node: any member's gRPC address.")] = None,
    zone: Annotated[str | None, typer.Option("--zone", help="Failure zone; replicas spread across zones.")]
    = None,
    cluster_id: Annotated[str | None, typer.Option("--cluster-id", metavar="ID",
                                                   help="Refuse to start unless the data dir belongs to this "
                                                        "cluster (default: whichever it joined first).")] = None,
    http_listen: Annotated[str | None, typer.Option("--http-listen", metavar="HOST:PORT",
                                                    help="HTTP address for /metrics, /healthz, /readyz (default: off).")] = None,
    tls_dir: Annotated[str | None, typer.Option("--tls-dir", metavar="DIR",
                                                help="Mutual TLS with DIR/ca.pem, node.pem, node.key "
                                                     "(shoal certs init DIR); default: plaintext, with a warning.")] = None,
    encryption_key_file: Annotated[str | None, typer.Option(
        "--encryption-key-file", metavar="FILE",
        help="The cluster's key for encrypted datasets (shoal key init FILE); the same file on every node.")] = None,
    config: Annotated[Path | None, typer.Option("--config", metavar="FILE", dir_okay=False,
                                                help="TOML config file (flags and SHOAL_* env override it).")]
    = None,
    log_level: Annotated[str | None, typer.Option("--log-level", metavar="LEVEL", callback=_check_log_level,
                                                  help="DEBUG, INFO, WARNING or ERROR (default: INFO).")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", metavar="text|json", callback=_check_log_format,
                                                   help="text lines, or one JSON object per line with node, "
                                                        "shard, job, task and attempt ids (default: text).")] = None,
    user_code: Annotated[bool | None, typer.Option("--user-code/--no-user-code",
                                                   help="Accept map_reduce jobs that run cloudpickled Python "
                                                        "functions (default: refused).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, max=WORKERS_MAX,
                                                help="Worker processes for compute tasks (default 0 = one per "
                                                     "core).")] = None,
) -> None:
    """Run a node daemon in the foreground until SIGTERM or Ctrl-C."""
    flags: dict[str, Any] = {
        "node_id": node_id,
        "data_dir": None if data_dir is None else str(data_dir),
        "listen": listen,
        "advertise": advertise,
        "raft": raft,
        "raft_peers": raft_peers,
        "join": join,
        "zone": zone,
        "cluster_id": cluster_id,
        "http_listen": http_listen,
        "tls_dir": tls_dir,
        "encryption_key_file": encryption_key_file,
        "log_level": None if log_level is None else log_level.upper(),
        "log_format": log_format,
        "user_code": user_code,
        "workers": workers,
    }
    try:
        from shoal.node.__main__ import run
        from shoal.node.errors import NodeError
    except ImportError as exc:
        fail(f"cannot start a node here: {exc} (the daemon needs lmdb and pysyncobj)")
    try:
        code = run(flags, None if config is None else str(config))
    except (NodeError, TlsError) as exc:   # TlsError: a --tls-dir file missing, garbled or not a pair
        fail(str(exc))
    except OSError as exc:
        fail(f"node {node_id or ''} failed to start: {exc}")
    except ValueError as exc:
        if not str(exc).startswith("Unknown level"):   # logging's refusal of SHOAL_LOG_LEVEL / log_level
            raise
        fail(f"log level: {exc}; use one of {', '.join(LOG_LEVELS)}")
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@node_app.command("drain")
@command_errors
def drain(
    ctx: typer.Context,
    node_id: Annotated[str, typer.Argument(help="The node to empty (its id, as `shoal status` shows it).")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until it holds no replica.")] = True,
    timeout: Annotated[float, typer.Option("--wait-timeout", callback=seconds_range(0.0, DRAIN_WAIT_S_MAX),
                                           help="Seconds to wait at most.")] = 3600.0,
) -> None:
    """Move every replica off a node before removing it: it becomes "draining", its shards
    are re-replicated on the other nodes, then its copies are dropped. Safe to repeat.
    Refused for a node that is not alive, or when the other alive nodes are fewer than a
    dataset's replication. There is no undrain: restarting the node cancels its drain."""
    with connect(ctx) as client:
        held = client.drain_node(node_id)
        typer.echo(f"node {node_id} draining: {held} replicas to move")
        if held and not wait:
            typer.echo(f"drain started; run `shoal node drain {node_id}` again to follow it")
            return
        deadline_s = time.monotonic() + timeout
        while wait and held and time.monotonic() < deadline_s:
            time.sleep(DRAIN_POLL_S)   # the interval of a deadline loop over the cluster's own progress
            left = client.drain_node(node_id)
            if left != held:
                typer.echo(f"node {node_id}: {left} replicas left")
            held = left
    if held:
        fail(f"node {node_id} still holds {held} replicas after {timeout:.0f} s", code=1)
    typer.echo(f"node {node_id} holds no replicas: safe to remove")


@node_app.command("remove")
@command_errors
def remove(
    ctx: typer.Context,
    node_id: Annotated[str, typer.Argument(help="The dead or drained data-only node to forget.")],
    force: Annotated[bool, typer.Option("--force", help=_FORCE_HELP)] = False,
) -> None:
    """Forget a dead or drained data-only node for good (a voter needs `shoal node replace`)."""
    with connect(ctx) as client:
        _report_removal(node_id, client.remove_node(node_id, force=force))


@node_app.command("replace")
@command_errors
def replace(
    ctx: typer.Context,
    node_id: Annotated[str, typer.Argument(help="The dead (or drained) metadata voter to replace.")],
    raft: Annotated[str, typer.Option("--raft", metavar="HOST:PORT",
                                      help="The Raft address of the new voter that takes its place.")],
    force: Annotated[bool, typer.Option("--force", help=_FORCE_HELP)] = False,
) -> None:
    """Replace a metadata voter that died for good: it leaves the cluster and the Raft group,
    the new address joins the group (one change at a time, removal first, so the quorum holds
    throughout). Then start the new voter with --raft HOST:PORT and --raft-peers the other voters."""
    with connect(ctx) as client:
        result = client.remove_node(node_id, replacement_raft=raft, force=force)
        _report_removal(node_id, result)
        peers = ",".join(v for v in result["voters"] if v != raft)
        typer.echo(f"raft voters: {', '.join(result['voters'])}")
        typer.echo(f"now start the new voter: shoal node start --id NEW_ID --raft {raft} --raft-peers {peers} "
                   "--listen HOST:PORT --data-dir EMPTY_DIR")


def _report_removal(node_id: str, result: dict[str, list[str]]) -> None:
    typer.echo(f"node {node_id} removed from the cluster")
    if result["lost_shards"]:
        typer.echo(f"lost with it (their only copy): {', '.join(result['lost_shards'])}", err=True)
