"""`shoal dataset export NAME FILE` and `shoal dataset import FILE`: a dataset to one file and back.

The file is a msgpack stream (values keep their exact types, bytes included, which JSON
cannot): first a header map {"format": "shoal-export/1", "dataset", "shards",
"replication", "schema" (the dataset's schema JSON or {}), "exported_at", "encrypted" (whether
its values are sealed at rest; the file itself is plaintext)}, then one
[key, value] array per record, then a trailer map {"records": count}. A file without its
trailer (an export cut short) is refused at import.

Export is a scan: consistent within each shard's chunk, not a point-in-time snapshot of the
whole dataset (writes made during the export may or may not be in it). It writes FILE.tmp
and renames it when complete. Import creates the dataset with the header's shards,
replication and schema (or `--name` another), then stores the records with put_many;
puts are idempotent, so an import cut short is finished by running it again with
`--into-existing`.

A file that cannot be written or read is one line naming it ("cannot write FILE: No such
file or directory"), and an export that fails leaves no FILE.tmp behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgpack
import typer

from shoal.client import Client
from shoal.client.cli._common import check_dataset_name, command_errors, connect, fail
from shoal.client.cli.data_cmds import DatasetArg, dataset_app

FORMAT = "shoal-export/1"
HEADER_FIELDS = {"dataset": str, "shards": int, "replication": int, "schema": dict}   # what import reads
IMPORT_BATCH_RECORDS = 10_000    # records kept in memory between two put_many calls


def register(app: typer.Typer) -> None:
    """The commands live on `shoal dataset` (data_cmds.dataset_app); nothing to add at the top."""


@dataset_app.command("export")
@command_errors
def export(
    ctx: typer.Context,
    name: DatasetArg,
    path: Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False, help="The file to write.")],
) -> None:
    """Write every record of a dataset, with its shards, replication and schema, to FILE."""
    with connect(ctx) as client:
        info = next((d for d in client.cluster_map().datasets if d.name == name), None)
        if info is None:
            fail(f"unknown dataset {name!r}")
        header = {"format": FORMAT, "dataset": name, "shards": info.shards, "replication": info.replication,
                  "schema": json.loads(info.schema_json) if info.schema_json else {}, "exported_at": time.time(),
                  "encrypted": bool(info.encryption_key_id)}
        tmp = path.with_name(path.name + ".tmp")
        try:
            count = _write(client, name, header, tmp)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                fail(f"cannot write {path}: {exc.strerror or exc}")
            raise
    typer.echo(f"exported {count} records of dataset {name} to {path}")


def _write(client: Client, name: str, header: dict[str, Any], tmp: Path) -> int:
    """Header, records and trailer to `tmp`, synced; the record count."""
    count = 0
    with open(tmp, "wb") as fh:
        packer = msgpack.Packer(use_bin_type=True)
        fh.write(packer.pack(header))
        for key, value in client.scan(name):
            fh.write(packer.pack([key, value]))
            count += 1
        fh.write(packer.pack({"records": count}))
        fh.flush()
        os.fsync(fh.fileno())
    return count


@dataset_app.command("import")
@command_errors
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False,
                                         help="A file written by `shoal dataset export`.")],
    name: Annotated[str | None, typer.Option("--name", callback=check_dataset_name,
                                             help="Import under this name (default: the exported one).")] = None,
    into_existing: Annotated[bool, typer.Option("--into-existing",
                                                help="Store into a dataset that exists already (e.g. to finish "
                                                     "an import cut short).")] = False,
) -> None:
    """Create the dataset FILE describes and store its records (idempotent puts)."""
    try:
        header, count = _read(path)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    target = name or header["dataset"]
    with connect(ctx) as client:
        exists = any(d.name == target for d in client.list_datasets())
        if exists and not into_existing:
            fail(f"dataset {target} exists: import under --name NEW, or add --into-existing to store into it")
        if not exists:
            client.create_dataset(target, shards=header["shards"], replication=header["replication"],
                                  schema=header["schema"] or None, encrypted=bool(header.get("encrypted")))
        stored = 0
        try:
            for batch in _batches(path):
                stored += client.put_many(target, batch)
        except OSError as exc:
            fail(f"cannot read {path} (after {stored} records were imported): {exc.strerror or exc}")
    typer.echo(f"imported {stored} of {count} records into dataset {target}")


def _read(path: Path) -> tuple[dict[str, Any], int]:
    """The header and the record count of an export file, read through once (constant memory);
    fail() naming what is wrong (not an export, a damaged record, no trailer: cut short)."""
    count, trailer = 0, None
    with open(path, "rb") as fh:
        unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False)
        try:
            header = next(unpacker)
        except (StopIteration, ValueError, msgpack.UnpackException):
            fail(f"{path}: empty or not a shoal export file")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            fail(f"{path}: not a {FORMAT} file")
        for field, kind in HEADER_FIELDS.items():
            value = header.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                fail(f"{path}: damaged header: {field!r} must be {kind.__name__}, got {type(value).__name__}")
        try:
            for item in unpacker:
                if isinstance(item, dict):
                    trailer = item
                    break
                if not isinstance(item, list) or len(item) != 2:
                    fail(f"{path}: record {count + 1} is not a [key, value] pair")
                count += 1
        except (ValueError, msgpack.UnpackException) as exc:
            fail(f"{path}: damaged after record {count} ({exc})")
    if trailer is None or trailer.get("records") != count:
        fail(f"{path}: incomplete ({count} records and no trailer with their count): export again")
    return header, count


def _batches(path: Path) -> Iterator[list[tuple[Any, Any]]]:
    """The records of a checked export file, IMPORT_BATCH_RECORDS at a time."""
    batch: list[tuple[Any, Any]] = []
    with open(path, "rb") as fh:
        unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False)
        next(unpacker)   # the header
        for item in unpacker:
            if isinstance(item, dict):   # the trailer
                break
            batch.append((item[0], item[1]))
            if len(batch) >= IMPORT_BATCH_RECORDS:
                yield batch
                batch = []
    if batch:
        yield batch
