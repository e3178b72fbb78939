"""The node's data directory: layout and the exclusive lock.

    data_dir/node.lock      flock held for the life of the daemon (a second daemon fails fast)
    data_dir/identity.json  the node id and cluster id this dir belongs to (identity.py)
    data_dir/shards/<dataset id>-<shard>/   one LMDB environment per shard replica; a
                            dataset id is "<name>@<version>" (older datasets: the name)
    data_dir/raft/          pysyncobj journal + full dump (voters only)
    data_dir/metadata.msgpack            standalone metadata (single node without Raft)
"""
from __future__ import annotations

import fcntl
import os
import pathlib
import shutil

from shoal.node.errors import DataDirLockedError


class DataDir:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self._lock_fd: int | None = None

    @property
    def shards(self) -> pathlib.Path:
        return self.root / "shards"

    def shard_path(self, dataset_id: str, index: int) -> pathlib.Path:
        return self.shards / f"{dataset_id}-{index}"

    def lock(self) -> None:
        """Take the exclusive lock, or raise naming the holder's pid."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(exist_ok=True)
        path = self.root / "node.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLockedError(
                f"data dir {self.root} is in use by another shoal node (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # closing releases the flock
            self._lock_fd = None

    def existing_shards(self) -> list[tuple[str, int]]:
        """(dataset id, shard index) of every shard directory on disk."""
        found = []
        for path in self.shards.iterdir() if self.shards.exists() else ():
            dataset, _, index = path.name.rpartition("-")
            if dataset and index.isdigit():
                found.append((dataset, int(index)))
        return sorted(found)

    def remove_shard(self, dataset_id: str, index: int) -> None:
        shutil.rmtree(self.shard_path(dataset_id, index), ignore_errors=True)

    def disk_usage(self) -> tuple[int, int]:
        """(bytes used by this data dir, bytes free on its file system)."""
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return used, shutil.disk_usage(self.root).free


def free_space_text(path: pathlib.Path) -> str:
    """'N bytes free of M on the file system of PATH' (os.statvfs, what an unprivileged
    writer may use); never raises: it goes into an error message being built."""
    try:
        stats = os.statvfs(path)
    except OSError as exc:
        return f"free space on the file system of {path} unknown ({exc.strerror or exc})"
    return (f"{stats.f_bavail * stats.f_frsize} bytes free of {stats.f_blocks * stats.f_frsize} "
            f"on the file system of {path}")
