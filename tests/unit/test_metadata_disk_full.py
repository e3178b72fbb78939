"""Acceptance fault 8: with a full disk, a metadata write fails plainly.

A standalone node's metadata file that cannot be written (ENOSPC) was an UNKNOWN_OUTCOME the
client retried until its deadline, and nothing was logged. Now: STORAGE_FULL naming the file
and its file system's free bytes (the command was certainly not applied: the old file
stands), logged at ERROR once per distinct failure, not per retry; a shard's disk-full
error names the file system's free bytes, not the irrelevant map_size_bytes.

Method: LocalMetadata on tmp_path with the module's `open` replaced by one that raises
ENOSPC (a real full file system needs root and a mount); a ShardStore whose environment's
`begin` raises an lmdb error carrying ENOSPC, as LMDB reports a failed page write.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import pathlib
from typing import Any

import lmdb
import pytest

from shoal.node.errors import StorageFullError
from shoal.node.metadata import commands
from shoal.node.metadata import local as local_module
from shoal.node.metadata.local import METADATA_FILE, LocalMetadata
from shoal.node.storage.entry import Put
from shoal.node.storage.shard_store import ShardStore


def _full_disk_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    if "w" in mode:
        raise OSError(errno.ENOSPC, "No space left on device")
    return open(path, mode, *args, **kwargs)


def test_full_disk_metadata_write_is_storage_full_logged_once(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Three retries of one command on a full disk: each raises StorageFullError naming the file and
    the free bytes, the state stays as it was, one ERROR line; once the disk has room the same
    command applies, and a later failure is logged again."""
    store = LocalMetadata(tmp_path)
    store.start()
    command = commands.register_node("s", "127.0.0.1:1", "", "", request_id="r1")
    version = store.version
    monkeypatch.setattr(local_module, "open", _full_disk_open, raising=False)
    with caplog.at_level(logging.ERROR, logger=local_module.__name__):
        for _ in range(3):
            with pytest.raises(StorageFullError) as full:
                asyncio.run(store.propose(command, timeout_s=5.0))
            message = str(full.value)
            assert f"cannot write metadata file {tmp_path / (METADATA_FILE + '.tmp')}: No space left on device" in message
            assert "bytes free of" in message and f"on the file system of {tmp_path}" in message
            assert "the command was not applied" in message and "map_size_bytes" not in message
            assert store.version == version and store.view.node("s") is None
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert [text.split("; ")[0] for text in errors] == [message.split("; ")[0]]
    monkeypatch.undo()
    assert asyncio.run(store.propose(command, timeout_s=5.0))["ok"]
    assert store.view.node("s") is not None and not (tmp_path / (METADATA_FILE + ".tmp")).exists()
    monkeypatch.setattr(local_module, "open", _full_disk_open, raising=False)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=local_module.__name__), pytest.raises(StorageFullError):
        asyncio.run(store.propose(commands.register_node("t", "127.0.0.1:2", "", "", request_id="r2"), 5.0))
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 1


class _FullDiskEnv:
    """An LMDB environment whose write transactions fail as LMDB reports a failed page write."""

    def __init__(self, env: Any, code: int) -> None:
        self._env, self._code = env, code

    def begin(self, write: bool = False, **kwargs: Any) -> Any:
        if write:
            error = lmdb.DiskError("mdb_txn_commit: No space left on device")
            error.code = self._code   # type: ignore[attr-defined]
            raise error
        return self._env.begin(write=write, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


@pytest.mark.parametrize(("code", "expected", "absent"), [
    (errno.ENOSPC, "the disk is full", "map_size_bytes"),
    (errno.EIO, "disk failing", "map_size_bytes")])
def test_shard_disk_full_names_the_file_system_not_the_map(tmp_path: pathlib.Path, code: int, expected: str,
                                                           absent: str) -> None:
    """ENOSPC: the message names the file system's free bytes; EIO: a failing disk; neither names
    map_size_bytes (only a full map does, tests/unit/test_shard_store.py)."""
    with ShardStore(tmp_path / "s", map_size_bytes=1 << 20, sync=False) as store:
        real = store._env
        store._env = _FullDiskEnv(real, code)   # type: ignore[assignment]
        try:
            with pytest.raises(StorageFullError) as full:
                store.execute([Put(b"k", b"\xa1v")], 1)
        finally:
            store._env = real
        message = str(full.value)
        assert expected in message and absent not in message and "the write was not applied" in message
        if code == errno.ENOSPC:
            assert "bytes free of" in message and f"on the file system of {tmp_path / 's'}" in message
