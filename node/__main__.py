"""`shoal node start` and `python -m shoal.node`: flags -> NodeConfig -> Node.run().

Before the node starts, `check_open_files_limit` refuses, in one line, an open-files limit
that cannot hold the shards on disk plus the room a create keeps: past it gRPC does not
fail, it aborts the process (SIGSEGV, SIGABRT) while making its server (issue 16.1).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
from typing import Any

from shoal.node.config import NodeConfig, load_config
from shoal.node.datadir import DataDir
from shoal.node.errors import StartupError
from shoal.node.log_labels import LabelFilter, labels_of


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (unix s), level, node, logger, msg, the labels of the task
    that logged it (node/log_labels.py: dataset, shard, job, task, attempt) and exc (a traceback)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": record.created, "level": record.levelname, "node": self.node_id, "logger": record.name,
                "msg": record.getMessage(), **labels_of(record)}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _TextFormatter(logging.Formatter):
    """`TIME LEVEL NODE LOGGER [shard=events/3 job=...]: message`."""

    def format(self, record: logging.LogRecord) -> str:
        labels = labels_of(record)
        record.labels = " [" + " ".join(f"{k}={v}" for k, v in labels.items()) + "]" if labels else ""
        return super().format(record)


def setup_logging(config: NodeConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(LabelFilter())
    if config.log_format == "json":
        handler.setFormatter(_JsonFormatter(config.node_id))
    else:
        handler.setFormatter(_TextFormatter(
            f"%(asctime)s %(levelname)s {config.node_id} %(name)s%(labels)s: %(message)s"))
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)


_SCRATCH_BYTES_MAX = 70   # + "/pymp-XXXXXXXX/listener-XXXXXXXX" (32 bytes) stays under AF_UNIX's 107


def run(flags: dict[str, Any], config_file: str | None = None) -> int:
    """Start a node and block until SIGTERM/SIGINT. Raises NodeError for config/start problems."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")   # never GRPC_ENABLE_FORK_SUPPORT (notes §0.11)
    config = load_config(flags, config_file)
    setup_logging(config)
    check_open_files_limit(config)
    from shoal.node.node import Node

    # The process's temporary files (its worker pool's forkserver socket, in a pymp-* folder) go
    # in a folder of its own, removed below: os._exit skips multiprocessing's own clean-up.
    # (Not when TMPDIR is so long that the socket path would pass AF_UNIX's 107 bytes.)
    # A start that fails returns here: put TMPDIR back, or the caller's process (`shoal node start`
    # run in-process, tests) would keep pointing its temporary files at the removed folder.
    scratch = tempfile.mkdtemp(prefix="shoal-node-")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    if len(scratch.encode()) <= _SCRATCH_BYTES_MAX:
        os.environ["TMPDIR"] = tempfile.tempdir = scratch
    try:
        asyncio.run(Node(config).run())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
    # Stopped in order (LMDB closed, Raft stopped, logs written). Exit now: the interpreter's exit
    # joins the worker pool's manager thread, which can hang after its workers died of the same
    # SIGTERM (the process group's); a node must always stop when asked.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def check_open_files_limit(config: NodeConfig) -> None:
    """Raise StartupError naming RLIMIT_NOFILE unless the soft limit holds the file descriptors in
    use, every shard on disk (FDS_PER_SHARD each) and FILE_SPARE_FDS for connections and the Raft
    journal: the rule a create follows (ShardRegistry.check_file_room), so what was created restarts."""
    from shoal.node.shards import FILE_SPARE_FDS
    from shoal.node.storage.shard_store import FDS_PER_SHARD, file_limit_message

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    shards = len(DataDir(config.data_dir).existing_shards())
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    needed = in_use + shards * FDS_PER_SHARD + FILE_SPARE_FDS
    if needed > soft:
        raise StartupError(file_limit_message(
            f"cannot start node {config.node_id}: it needs {needed} file descriptors ({shards} shards on disk, "
            f"{FILE_SPARE_FDS} kept for connections and the Raft journal, {in_use} in use)"))


if __name__ == "__main__":
    sys.stderr.write("use: shoal node start --id ID --data-dir DIR --listen HOST:PORT (python -m shoal.client.cli)\n")
    sys.exit(2)
