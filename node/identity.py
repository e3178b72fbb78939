"""Which node and which cluster a data dir belongs to: `data_dir/identity.json`.

Written when the node first starts on the dir (node id) and when it first learns its
cluster id (at bootstrap for a voter, from the first metadata for a data-only node);
checked at every start after that. A node never adopts another cluster's metadata, never
obeys another cluster's messages, and so never deletes data because a foreign cluster
said so (DESIGN.md section 4, "Identities").
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import threading

from shoal.node.errors import StartupError

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"


class Identity:
    """The node id (fixed) and cluster id ("" until learnt, then fixed) of one data dir."""

    def __init__(self, path: pathlib.Path, node_id: str, cluster_id: str) -> None:
        self._path = path
        self.node_id = node_id
        self._cluster_id = cluster_id
        self._lock = threading.Lock()
        self._refused: set[str] = set()   # foreign cluster ids already logged

    @classmethod
    def load(cls, data_dir: pathlib.Path, node_id: str, expected_cluster_id: str = "") -> Identity:
        """Read (or create) the identity; StartupError when the dir belongs to another node or cluster."""
        path = data_dir / IDENTITY_FILE
        recorded = _read(path)
        if recorded is not None and recorded.get("node_id") != node_id:
            raise StartupError(f"data dir {data_dir} belongs to node {recorded.get('node_id')!r} "
                               f"of cluster {recorded.get('cluster_id') or '(not joined yet)'}, not {node_id!r}: "
                               "start that node on it, or give this node its own --data-dir")
        cluster_id = str(recorded.get("cluster_id", "")) if recorded else ""
        if expected_cluster_id and cluster_id and cluster_id != expected_cluster_id:
            raise StartupError(f"data dir {data_dir} belongs to cluster {cluster_id}, not {expected_cluster_id} "
                               "(--cluster-id): refusing to mix the data of two clusters")
        identity = cls(path, node_id, cluster_id or expected_cluster_id)
        if recorded is None or (identity.cluster_id and not cluster_id):
            identity._write()
        return identity

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def adopt(self, cluster_id: str) -> bool:
        """Take `cluster_id` as ours if we have none yet; True when it is (now) ours."""
        with self._lock:
            if not self._cluster_id and cluster_id:
                self._cluster_id = cluster_id
                self._write()
                logger.info("node %s belongs to cluster %s", self.node_id, cluster_id)
            return bool(cluster_id) and cluster_id == self._cluster_id

    def accepts(self, cluster_id: str, *, allow_unnamed: bool = False) -> bool:
        """Whether a message naming `cluster_id` may be obeyed (logs each foreign id once)."""
        mine = self._cluster_id
        if not mine or cluster_id == mine or (allow_unnamed and not cluster_id):
            return True
        if cluster_id not in self._refused:
            self._refused.add(cluster_id)
            logger.warning("refusing a message of cluster %s: this node belongs to cluster %s",
                           cluster_id or "(none)", mine)
        return False

    def _write(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"node_id": self.node_id, "cluster_id": self._cluster_id}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _read(path: pathlib.Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot read {path} ({exc}): it says which node and cluster this data dir "
                           "belongs to; restore it or move the data dir away") from None
    if not isinstance(data, dict):
        raise StartupError(f"{path} is not an identity record; restore it or move the data dir away")
    return {str(k): str(v) for k, v in data.items()}
