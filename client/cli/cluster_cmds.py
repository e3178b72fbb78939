"""`shoal up` and `shoal down`: a local cluster of real node processes (shoal.client.local).

`up` starts N nodes under one data dir, waits until they are ready, prints the addresses
and the SHOAL_CLUSTER line, then either returns (--detach) or shows a status line every
~2 s until Ctrl-C (or SIGTERM/SIGHUP) and stops every node. `down` stops the nodes
recorded in DATA_DIR/cluster.json. Every error is one line on stderr and exit code 1, and
`up` never leaves a node running when it fails: LocalCluster.start stops what it started.

Why --port and --nodes default to None rather than 7400 and 3: on an existing data dir
the recorded layout wins, and only a value the user actually typed can contradict it.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from shoal.client.cli._common import fail, seconds_range
from shoal.client.local import ClusterRunningError, LocalCluster, LocalClusterError, read_record
from shoal.client.wire.keyfile import KeyFileError, key_id, read_key_file

DEFAULT_DATA_DIR = Path("shoal-data")
DEFAULT_BASE_PORT = 7400
STATUS_INTERVAL_S = 2.0
WAIT_S_MAX = 86_400.0            # up's wait until ready, down's wait before SIGKILL: at most a day
NO_TLS_WARNING = ("WARNING: this local cluster runs WITHOUT TLS{auth}: anyone who can "
                  "reach {addresses} can {what}. Fine for a first try on one machine; "
                  "keep it on loopback, or start a new one with --tls --auth.")


def register(app: typer.Typer) -> None:
    """Add `up` and `down` to the shoal app."""
    app.command("up")(up)
    app.command("down")(down)


def up(
    nodes: Annotated[int | None, typer.Option(
        "--nodes", min=1, max=64, help="Number of nodes (default 3; an existing data dir keeps its count).")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where node data, logs and cluster.json live.")]
    = DEFAULT_DATA_DIR,
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65_000, help="gRPC port of n1; node i uses PORT+i-1 and Raft PORT+100+i-1 "
        f"(default {DEFAULT_BASE_PORT}; an existing data dir keeps its ports).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Return once ready and leave the nodes running.")]
    = False,
    timeout_s: Annotated[float, typer.Option("--timeout", callback=seconds_range(0.1, WAIT_S_MAX),
                                             help="Seconds to wait until the cluster is ready.")] = 60.0,
    user_code: Annotated[bool, typer.Option("--user-code", help="Let map_reduce jobs run your cloudpickled Python "
                                            "functions (off by default; only on a trusted network).")] = False,
    tls: Annotated[bool, typer.Option("--tls", help="Mutual TLS between every node and client: a CA and "
                                      "certificates are made in DATA_DIR/tls (a new cluster only).")] = False,
    auth: Annotated[bool, typer.Option("--auth", help="Bearer tokens: every call needs one; the first admin token "
                                       "is written to DATA_DIR/admin.token (a new cluster only).")] = False,
    encryption_key_file: Annotated[Path | None, typer.Option(
        "--encryption-key-file", metavar="FILE", dir_okay=False,
        help="Every node gets this key for encrypted datasets (dataset create --encrypt); made if missing.")] = None,
) -> None:
    """Start a local cluster of real node processes and wait until it is ready.

    On a data dir whose cluster is partly running, `--detach` starts the nodes that are down.
    """
    try:
        fresh = read_record(data_dir.resolve()) is None
        base_port = port if port is not None or not fresh else DEFAULT_BASE_PORT
        cluster = LocalCluster(data_dir, nodes=nodes, base_port=base_port, detach=detach,
                               env={"SHOAL_USER_CODE": "1"} if user_code else None, tls=tls and fresh,
                               auth=auth and fresh,
                               encryption_key_file=encryption_key_file)
        for wanted, has, what in ((tls, bool(cluster.tls_dir), "TLS"), (auth, bool(cluster.token), "authentication")):
            if wanted and not fresh and not has:   # silently starting it without them was worse
                option = "--tls" if what == "TLS" else "--auth"
                fail(f"the cluster in {cluster.data_dir} was made without {what}, and {option} only applies to "
                     "a new cluster: use another --data-dir (or drop the option)")
        key = key_id(read_key_file(encryption_key_file)) if encryption_key_file is not None else ""
        running = [f"{node_id} (pid {cluster.pid(node_id)})" for node_id in cluster.running()]
        if len(running) == len(cluster.nodes) or (running and not detach):
            raise ClusterRunningError(f"the cluster in {cluster.data_dir} is already running ({', '.join(running)}); "
                                      f"stop it first (shoal down --data-dir {data_dir}), or start the nodes that "
                                      "are down with shoal up --detach")
        if running:
            started = cluster.start_missing(timeout_s)   # some nodes died: bring them back
            typer.echo(f"started {', '.join(started)}; the others were running")
            _print_ready(cluster)
            return
    except (LocalClusterError, OSError, KeyFileError) as exc:
        _fail(exc)
    if cluster.tls_dir:
        typer.echo(f"mutual TLS: certificates in {cluster.tls_dir} (clients: --tls-dir {cluster.tls_dir})")
    else:
        authenticated = auth or cluster.admin_token_file is not None
        typer.secho(NO_TLS_WARNING.format(
            addresses=", ".join(cluster.addresses), auth="" if authenticated else " and without authentication",
            what="read its traffic" if authenticated else "read and change its data"), fg="red", bold=True, err=True)
    if encryption_key_file is not None:
        typer.echo(f"encryption at rest: key {key} from {encryption_key_file} (shoal dataset create NAME --encrypt)")
    typer.echo(f"starting {len(cluster.nodes)} nodes in {cluster.data_dir} ...")
    try:
        cluster.start(timeout_s)
    except KeyboardInterrupt:
        typer.echo("interrupted; every node was stopped", err=True)
        raise typer.Exit(130) from None
    except (LocalClusterError, OSError) as exc:
        _fail(exc, hint=f" (node logs: {cluster.data_dir}/n*/node.log)")
    _print_ready(cluster)
    if detach:
        typer.echo(f"running in the background; stop it with: shoal down --data-dir {data_dir}")
        return
    _run_foreground(cluster)


def down(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The data dir given to shoal up.")]
    = DEFAULT_DATA_DIR,
    timeout_s: Annotated[float, typer.Option("--timeout", callback=seconds_range(0.0, WAIT_S_MAX),
                                             help="Seconds to wait after SIGTERM before SIGKILL.")] = 15.0,
) -> None:
    """Stop the local cluster recorded in DATA_DIR/cluster.json."""
    try:
        cluster = LocalCluster.open(data_dir, detach=True)
        exits = cluster.stop(timeout_s)
    except (LocalClusterError, OSError) as exc:
        _fail(exc)
    if not exits:
        typer.echo(f"no node of {cluster.data_dir} was running")
    for node_exit in exits:
        how = " with SIGKILL (it ignored SIGTERM)" if node_exit.forced else ""
        typer.echo(f"stopped {node_exit.id} (pid {node_exit.pid}){how}")


def _print_ready(cluster: LocalCluster) -> None:
    typer.secho(f"shoal cluster ready: {len(cluster.nodes)} nodes, data in {cluster.data_dir}", fg="green")
    for node in cluster.nodes:
        raft = f"raft {node.raft_address}" if node.voter else "data-only"
        typer.echo(f"  {node.id}  {node.address}  {raft}  http {node.http_address}  pid {cluster.pid(node.id)}  "
                   f"log {node.log_path}")
    typer.echo(f"export SHOAL_CLUSTER={cluster.cluster_address}")
    if cluster.nodes and cluster.nodes[0].http_address:
        trust = f"; its certificate is signed by {cluster.tls_dir}/ca.pem" if cluster.tls_dir else ""
        typer.echo(f"dashboard: {cluster.http_scheme}://{cluster.nodes[0].http_address}/ "
                   f"(any node's HTTP port serves it{trust})")
    if cluster.tls_dir:
        typer.echo(f"export SHOAL_TLS_DIR={cluster.tls_dir}")
    if cluster.admin_token_file is not None:
        typer.echo(f"export SHOAL_TOKEN_FILE={cluster.admin_token_file}   # the admin token; every call needs a token")


def _run_foreground(cluster: LocalCluster) -> None:
    """Print a status line every ~2 s until Ctrl-C, SIGTERM or SIGHUP, then stop every node."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    typer.echo("press Ctrl-C to stop the cluster")
    try:
        while True:
            typer.echo(status_line(cluster))
            time.sleep(STATUS_INTERVAL_S)   # display cadence, not a wait for a state
    except KeyboardInterrupt:
        typer.echo("stopping ...")
    finally:
        exits = cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    forced = [node_exit.id for node_exit in exits if node_exit.forced]
    typer.echo(f"stopped {len(exits)} nodes" + (f" ({', '.join(forced)} needed SIGKILL)" if forced else ""))


def status_line(cluster: LocalCluster) -> str:
    """One line: nodes alive, controller, datasets, under-replicated shards, local processes down."""
    stamp = time.strftime("%H:%M:%S")
    down_ids = [node.id for node in cluster.nodes if not cluster.is_running(node.id)]
    down_text = f"  exited: {', '.join(down_ids)}" if down_ids else ""
    try:
        cluster_map = cluster.cluster_map()
    except LocalClusterError:
        return f"{stamp}  no node answers{down_text}"
    alive = sum(1 for info in cluster_map.nodes if info.state == "alive")
    under_replicated = cluster_map.under_replicated   # the node's count, as `shoal status` shows it
    return (f"{stamp}  nodes alive {alive}/{len(cluster_map.nodes)}  controller {cluster_map.controller or '-'}"
            f"  datasets {len(cluster_map.datasets)}  under-replicated {under_replicated}{down_text}")


def _fail(exc: BaseException, hint: str = "") -> NoReturn:
    if isinstance(exc, OSError) and exc.filename:   # the data dir or a file in it: no node log to read
        fail(f"cannot use {exc.filename}: {exc.strerror or exc}")
    message = exc.summary if isinstance(exc, LocalClusterError) else str(exc)
    fail(message + hint)
