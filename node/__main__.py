"""`shoal node start` and `python -m shoal.node`: flags -> NodeConfig -> Node.run()."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from shoal.node.config import NodeConfig, load_config


class _JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "level": record.levelname, "node": self.node_id,
                           "logger": record.name, "msg": record.getMessage()})


def setup_logging(config: NodeConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(_JsonFormatter(config.node_id))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {config.node_id} %(name)s: %(message)s"))
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)


def run(flags: dict[str, Any], config_file: str | None = None) -> int:
    """Start a node and block until SIGTERM/SIGINT. Raises NodeError for config/start problems."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")   # never GRPC_ENABLE_FORK_SUPPORT (notes §0.11)
    config = load_config(flags, config_file)
    setup_logging(config)
    from shoal.node.node import Node

    asyncio.run(Node(config).run())
    return 0


if __name__ == "__main__":
    sys.stderr.write("use: shoal node start --id ID --data-dir DIR --listen HOST:PORT (python -m shoal.client.cli)\n")
    sys.exit(2)
