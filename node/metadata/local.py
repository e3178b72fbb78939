"""LocalMetadata: a standalone node's metadata, without Raft, persisted in one file.

Same API as RaftMetadata (the MetadataStore protocol), so the rest of the node does not
care whether it runs alone. Commands go through the same pure `fsm.apply`; after every
command that changed the state (including the request table, so that a retried request
still gets its first answer after a restart) the whole state is written to
`data_dir/metadata.msgpack`: write a temporary file, fsync it, rename it over the old
one, fsync the directory. The state is small (nodes, shard maps, recent request ids), so
rewriting it whole is simpler than a log and cheap at metadata rates.

The write runs in a worker thread (`asyncio.to_thread`) so a slow disk does not stall the
event loop; a lock keeps apply + persist + publish atomic and in order. If writing or
renaming the file fails the in-memory state is not advanced and the command was certainly
not applied: the caller gets StorageFullError (STORAGE_FULL, naming the file and, when the
disk is full, its free bytes), logged at ERROR once per distinct failure, not per retry.
Only a failed directory fsync after the rename is an UnknownOutcomeError (retry with the
same request id, as with Raft).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from shoal.node.datadir import free_space_text
from shoal.node.errors import NoControllerError, NodeError, StorageFullError, UnknownOutcomeError
from shoal.node.metadata import MetadataStatistics, fsm
from shoal.node.metadata.view import MetadataView, ViewCache

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.msgpack"
_STATE_KEYS = frozenset(fsm.initial_state())
# Keys every persisted state has had; keys added since (cluster_id, controller) take their
# initial value when an older file lacks them.
_FIRST_STATE_KEYS = frozenset({"version", "nodes", "datasets", "jobs", "tokens", "requests"})


class LocalMetadata:
    """A single node's metadata store. See MetadataStore for the API contract."""

    def __init__(self, data_dir: pathlib.Path | str, on_change: Callable[[], None] | None = None) -> None:
        self._data_dir = pathlib.Path(data_dir)
        self._path = self._data_dir / METADATA_FILE
        self._on_change = on_change
        self._state: dict[str, Any] = fsm.initial_state()
        self._views = ViewCache()
        self._applied_count = 0
        self._lock = threading.Lock()
        self._started = False
        self._failure_logged: tuple[Any, int | None] | None = None   # (file, errno) of the last write failure logged

    def start(self) -> None:
        """Load the persisted state, if any. Raises NodeError if the file is unreadable."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if self._path.exists():
            self._state = _load(self._path)
        self._started = True
        logger.info("local metadata started from %s (version %d)", self._path, self._state["version"])

    def stop(self) -> None:
        self._started = False

    async def propose(self, command: bytes, timeout_s: float) -> dict[str, Any]:
        """Apply and persist `command`; the result dict of the state machine."""
        if not self._started:
            raise NoControllerError("local metadata is not running")
        try:
            async with asyncio.timeout(timeout_s):   # not wait_for: 3.11's can drop a cancel (node/changes.py)
                return await asyncio.to_thread(self._apply, command)
        except TimeoutError:
            raise UnknownOutcomeError(f"metadata write not confirmed within {timeout_s} s; "
                                      "it may still apply (retry with the same request id)") from None

    def voters(self) -> tuple[str, ...]:
        return ()

    async def change_voters(self, remove: str, add: str, timeout_s: float) -> tuple[str, ...]:
        raise NoControllerError("a standalone node has no Raft group")

    async def barrier(self, timeout_s: float) -> None:
        """Nothing to wait for: every proposal is applied before propose() returns."""
        if not self._started:
            raise NoControllerError("local metadata is not running")

    def _apply(self, command: bytes) -> dict[str, Any]:
        with self._lock:
            before = self._state
            new_state, result = fsm.apply(before, command)
            self._applied_count += 1
            try:
                if new_state is not before:
                    self._persist(new_state)   # publishes new_state once the rename is done
            finally:
                if self._state is not before:
                    self._notify()
        return result

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            logger.exception("metadata on_change callback failed")

    def _persist(self, state: dict[str, Any]) -> None:
        tmp = self._path.with_name(METADATA_FILE + ".tmp")
        data = msgpack.packb(state, use_bin_type=True)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:   # the old file stands: certainly not applied, so no unknown outcome
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)   # a partial copy only takes space from the retry
            raise self._not_written(exc, tmp) from None
        self._state = state   # the new file is in place: a restart would load it
        self._failure_logged = None
        try:
            _fsync_dir(self._data_dir)
        except OSError as exc:
            raise UnknownOutcomeError(f"cannot fsync {self._data_dir}: {exc.strerror or exc}") from None

    def _not_written(self, exc: OSError, tmp: pathlib.Path) -> StorageFullError:
        """STORAGE_FULL naming the file and, for a full disk, its file system's free bytes; logged
        at ERROR once per distinct failure (file and errno) until a write succeeds again."""
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason += f"; {free_space_text(self._data_dir)}"
        message = (f"cannot write metadata file {exc.filename or tmp}: {reason}; the command was not applied "
                   "(free space there, then retry)")
        if self._failure_logged != (exc.filename, exc.errno):
            self._failure_logged = (exc.filename, exc.errno)
            logger.error("%s", message)
        return StorageFullError(message)

    # ---- reads ----

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    @property
    def view(self) -> MetadataView:
        return self._views.get(self._state)

    def install_snapshot(self, version: int, snapshot: bytes) -> bool:
        return False   # this store runs the state machine itself

    @property
    def version(self) -> int:
        version: int = self._state["version"]
        return version

    def is_leader(self) -> bool:
        return True

    def leader_term(self) -> int | None:
        return 0   # no Raft, no rival: always the leader, in term 0

    def role(self) -> str:
        return "leader"

    def leader_raft_address(self) -> str | None:
        return None

    def leaderless_s(self) -> float:
        return 0.0   # no Raft here

    def is_ready(self) -> bool:
        return self._started

    def statistics(self) -> MetadataStatistics:
        return MetadataStatistics(role="leader", term=0, commit_index=self._applied_count,
                                  last_applied=self._applied_count, log_length=0, leader=None,
                                  version=self.version)


def _load(path: pathlib.Path) -> dict[str, Any]:
    try:
        state = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)
    except OSError as exc:
        raise NodeError(f"cannot read metadata file {path}: {exc.strerror or exc}") from None
    except Exception as exc:
        raise NodeError(f"metadata file {path} is corrupt: {exc}") from None
    if not isinstance(state, dict) or not _FIRST_STATE_KEYS <= set(state) <= _STATE_KEYS:
        raise NodeError(f"metadata file {path} does not hold a metadata state")
    return {**fsm.initial_state(), **state}


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
