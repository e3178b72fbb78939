"""Imported only as the forkserver's preload (pool.py): the forkserver exits once the node is gone."""
from __future__ import annotations

from shoal.node.compute.orphans import watch_parent

watch_parent()
