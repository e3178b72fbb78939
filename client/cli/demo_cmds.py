"""`shoal demo`: a short tour against a running cluster (the README's first command).

Loads generated sales events with put_many, reads one back, computes revenue per
country over a full scan and checks it against the exact answer known from the
generator, then shows where the replicas live. The aggregation runs in the client
for now; pushed-down queries on the nodes come with the compute jobs (DESIGN.md 5).
"""
from __future__ import annotations

import collections
import time
from typing import Annotated, Any, Iterator

import typer

from shoal.client.cli import _common

COUNTRIES = ["DE", "FR", "US", "JP", "BR", "IN", "NG", "SE"]


def _events(count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(count):
        yield f"event:{i:09d}", {"id": i, "country": COUNTRIES[(i * 7) % len(COUNTRIES)],
                                 "amount": (i * 7919) % 1000, "user": f"u{i % 5000}"}


def _expected(count: int) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for _, event in _events(count):
        totals[event["country"]][0] += 1
        totals[event["country"]][1] += event["amount"]
    return {country: (n, total) for country, (n, total) in totals.items()}


def register(app: typer.Typer) -> None:
    @app.command()
    @_common.command_errors
    def demo(
        ctx: typer.Context,
        records: Annotated[int, typer.Option(min=1, help="How many events to load.")] = 100_000,
        dataset: Annotated[str, typer.Option(help="Dataset to (re)create for the demo.")] = "demo-events",
    ) -> None:
        """Load sample events into the cluster, read them back and check an aggregate."""
        with _common.connect(ctx) as client:
            nodes = client.cluster_map().nodes
            alive = [n for n in nodes if n.state == "alive"]
            typer.echo(f"cluster: {len(alive)} of {len(nodes)} nodes alive")
            if dataset in {d.name for d in client.list_datasets()}:
                client.drop_dataset(dataset)
            info = client.create_dataset(dataset, shards=6, replication=min(3, len(alive)))
            typer.echo(f"created dataset {info.name}: {info.shards} shards, replication {info.replication}")
            start = time.perf_counter()
            loaded = client.put_many(dataset, _events(records))
            seconds = time.perf_counter() - start
            typer.echo(f"loaded {loaded:,} events in {seconds:.2f} s ({loaded / seconds:,.0f} records/s)")
            typer.echo(f"get event:000000042 -> {client.get(dataset, 'event:000000042')}")
            start = time.perf_counter()
            totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
            for _, event in client.scan(dataset):
                totals[event["country"]][0] += 1
                totals[event["country"]][1] += event["amount"]
            seconds = time.perf_counter() - start
            got = {country: (n, total) for country, (n, total) in totals.items()}
            typer.echo(f"revenue per country over a full scan ({seconds:.2f} s):")
            for country, (n, total) in sorted(got.items(), key=lambda item: -item[1][1]):
                typer.echo(f"  {country}  {n:>8,} events  {total:>12,}")
            exact = got == _expected(records)
            typer.echo("answer is exact: " + ("yes" if exact else "NO, it differs from the generator's"))
            status = client.status()
            typer.echo(f"under-replicated shards: {status['under_replicated']}")
            for node in status["nodes"]:
                typer.echo(f"  {node['id']} {node['address']} {node['state']} raft={node['raft_role']} "
                           f"shards={node.get('shards', '?')} primaries={node.get('primaries', '?')}")
            typer.echo("next: shoal status | shoal chaos run kill-primary | shoal down")
            if not exact:
                raise typer.Exit(1)
