"""RaftMetadata: the metadata state machine replicated by pysyncobj. The ONLY pysyncobj import.

Shape: a plain `SyncObj` plus one `SyncObjConsumer` (`_ReplicatedState`) whose only
snapshotted attribute is `state`, replaced wholesale by the one replicated method
`_apply(command: bytes)`, which calls the pure `fsm.apply`. A consumer rather than a
SyncObj subclass because SyncObj starts its tick thread inside `__init__`: a subclass
could only create `state` after that thread may already be replaying the journal.
The consumer records its non-replicated attributes (the callback) before its own
`__init__` ends, so they are never pickled into dumps (notes/dependencies.md 1.2).

Rules from notes/dependencies.md section 0 this module follows:
- journalFile AND fullDumpFile (item 2); a password always (item 7; the port unpickles);
- `_apply` never raises (item 1): fsm.apply is total, and a last guard catches anyway;
  callbacks we hand to pysyncobj never raise either (they run inside its apply loop);
- every proposal has a deadline, and a timeout, LEADER_CHANGED or UNKNOWN_OUTCOME is
  an unknown outcome, never a failure (item 5): commands carry request ids;
- leaderFallbackTimeout comes from config (about 2 s, not 30 s: item 6).
- dynamicMembershipChange is on (notes 1.7): `change_voters` replaces a dead voter, one
  single-server change at a time, removal first (etcd's order for a dead member: adding
  first would need 3 of 4 with one of them dead).

Choices beyond the brief, and why:
- `bindAddress` = the configured Raft address: pysyncobj binds 0.0.0.0 otherwise, which
  exposes a port that unpickles input on every interface.
- The transport caps a diverged follower's next index (`catch_up.py`): without it a deposed
  leader with an uncommitted suffix never catches up once the log moved on by more than
  one AppendEntries batch (a pysyncobj 0.3.17 bug).
- The journal is durable (`_DurableJournal`, issue 19.3): pysyncobj writes it through mmap
  and never syncs, and stores the term and vote without fsync, so a power loss of a
  majority could lose acknowledged metadata or let a voter vote twice in a term. Entries
  are synced before any message leaves that acknowledges them (a follower's ack, a vote) and
  before the commit index moves (so a leader's own copy counts only once synced: its
  AppendEntries leave before its sync, Raft's parallel leader write, one fsync fewer per
  commit); term and vote with fsync + rename.
- The transport relabels the chunks of a large entry (`transmission.py`): pysyncobj marks
  one 'finish' too early whenever the pickled entry outgrows its command (binary task
  results), and a follower that failed to unpickle it kept re-fetching its log.
- The port is probed before pysyncobj starts, so a taken port fails at once with the OS
  error and the address, instead of after pysyncobj's silent retries.
- `start()` must run on a thread that lives as long as the node (the main thread):
  pysyncobj's tick thread exits when the thread that created the SyncObj exits.
"""
from __future__ import annotations

import asyncio
import gzip
import logging
import os
import pathlib
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, SyncObjException, replicated
from pysyncobj import journal as pysyncobj_journal
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj import syncobj as pysyncobj_syncobj
from pysyncobj.transport import TCPTransport

from shoal.node.config import NodeConfig, parse_host_port
from shoal.node.errors import ConfigError, NoControllerError, UnknownOutcomeError
from shoal.node.metadata import MetadataStatistics, commands, fsm
from shoal.node.metadata.catch_up import NextIndexFloor
from shoal.node.metadata.transmission import ChunkLabels
from shoal.node.metadata.view import MetadataView, ViewCache

logger = logging.getLogger(__name__)

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
_REASONS = {value: name for name, value in vars(FAIL_REASON).items() if name.isupper()}
# Certainly not applied: the caller may retry (same request id or not).
_NOT_APPLIED = frozenset({FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED,
                          FAIL_REASON.NOT_LEADER, FAIL_REASON.REQUEST_DENIED})
_STOPPED = -1                       # our own reason: the store stopped while waiting
_BIND_RETRIES = 3                   # then startup fails (0 would retry forever)
_BIND_RETRY_S = 0.5
_MEMBERSHIP_RETRY_S = 0.2           # between membership attempts the leader refused (one change at a time)


class _CatchUpTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with the leader-side fixes of `catch_up.py` and `transmission.py`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._next_index_floor = NextIndexFloor()
        self._chunk_labels = ChunkLabels(self._pickled_entry_length)
        super().__init__(*args, **kwargs)

    def _pickled_entry_length(self, index: int) -> int | None:
        """The length of log entry `index` as pysyncobj pickles it to send it in chunks."""
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
        if journal is None or len(journal) == 0 or not journal[0][1] <= index <= journal[-1][1]:
            return None
        return len(pysyncobj_pickle.dumps(journal[index - journal[0][1]]))

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 (pysyncobj's name)
        super()._onMessageReceived(node, self._next_index_floor.filter(node, message))

    def send(self, node: Any, message: Any) -> bool:
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
        if isinstance(journal, _DurableJournal) and _leader_append(message):
            journal.sync_dump()
        elif isinstance(journal, _DurableJournal):
            journal.sync()   # nothing else leaves (an ack, a vote) before what it reflects is on disk
        return bool(super().send(node, self._chunk_labels.relabel(node, message)))


def _leader_append(message: Any) -> bool:
    """AppendEntries leave a leader before its own copy is synced: the leader writes its log in
    parallel with replicating it (Raft paper 10.2.1). It syncs at the end of the same tick
    (`RaftMetadata._on_tick`, after the sends, before it polls for the acks), while the
    followers sync theirs; an entry commits only once the leader's journal synced it too
    (`_DurableJournal.setRaftCommitIndex` syncs before the commit index moves, hence before
    anything is applied or acknowledged), and the followers' acks, which count toward the
    quorum, are synced before they leave. One fsync fewer in series on each commit's path."""
    return isinstance(message, dict) and message.get("type") == "append_entries"


class _DurableMetaStorer(pysyncobj_journal.MetaStorer):  # type: ignore[misc]
    """Term and vote: tmp file, fsync, rename, directory fsync (pysyncobj only flushes Python's buffer)."""

    def storeMeta(self, meta: Any) -> None:  # noqa: N802 (pysyncobj's name)
        path = pathlib.Path(self.getPath())
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(pysyncobj_journal.dumps(meta))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)


class _DurableJournal(pysyncobj_journal.FileJournal):  # type: ignore[misc]
    """pysyncobj's FileJournal, synced before anything that counts on it (module docstring).

    `sync()` msyncs and fsyncs the journal when it changed since the last sync, and fsyncs the
    dump file (written by log compaction, which then cuts the journal) when it changed."""

    def __init__(self, journal_file: str) -> None:
        super().__init__(journal_file)
        self._FileJournal__metaStorer = _DurableMetaStorer(journal_file + ".meta")
        self._dirty = False
        self._dump = pathlib.Path(journal_file).with_name("dump")
        self._dump_seen = _file_version(self._dump)
        self.syncs = 0                 # journal syncs done (tests)

    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        super().clear()
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802,N803 (pysyncobj's names)
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802,N803
        self.sync()   # a lone voter commits (and acknowledges) without sending anything
        super().setRaftCommitIndex(raftCommitIndex)

    def sync_dump(self) -> None:
        """Sync the dump when it changed (a compaction wrote it; the journal is cut after it)."""
        dump = _file_version(self._dump)
        if dump != self._dump_seen and dump is not None:
            with open(self._dump, "rb") as fh:
                os.fsync(fh.fileno())
            _fsync_dir(self._dump.parent)
            self._dump_seen = dump

    def sync(self) -> None:
        """Sync the dump when it changed, then the journal when it changed."""
        self.sync_dump()
        if self._dirty:
            resizable = self._FileJournal__journalFile
            resizable.flush()                                   # msync: the mapped pages
            os.fsync(resizable._ResizableFile__f.fileno())      # and the size after a resize
            self._dirty = False
            self.syncs += 1


def _file_version(path: pathlib.Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# pysyncobj builds its journal with this module-level factory (syncobj.py); every SyncObj of
# this process gets the durable one. RaftMetadata always names a journal file.
pysyncobj_syncobj.createJournal = lambda journal_file=None: (
    pysyncobj_journal.MemoryJournal() if journal_file is None else _DurableJournal(journal_file))


class _ReplicatedState(SyncObjConsumer):  # type: ignore[misc]
    """Holds `state`; everything else is created before SyncObjConsumer.__init__ records it."""

    def __init__(self, on_applied: Callable[[dict[str, Any]], None]) -> None:
        self._on_applied = on_applied          # not replicated: exists before super().__init__()
        super().__init__()
        self.state: dict[str, Any] = fsm.initial_state()   # the one replicated attribute

    @replicated  # type: ignore[untyped-decorator]
    def _apply(self, command: bytes) -> dict[str, Any]:
        try:
            self.state, result = fsm.apply(self.state, command)
        except Exception as exc:  # fsm.apply is total; raising here would wedge the log forever
            logger.critical("metadata state machine raised on a command (bug): %r", exc)
            result = commands.error(commands.INVALID_ARGUMENT, f"internal error: {exc!r}")
        self._on_applied(self.state)
        return result


class RaftMetadata:
    """A metadata voter. See MetadataStore (node/metadata/__init__.py) for the API contract."""

    def __init__(self, config: NodeConfig, on_change: Callable[[], None], *,
                 log_compaction_min_entries: int | None = None, log_compaction_min_time_s: float | None = None) -> None:
        if not config.raft:
            raise ConfigError("RaftMetadata needs a Raft address (--raft HOST:PORT)")
        if not config.raft_password:
            raise ConfigError("RaftMetadata needs a Raft password: the Raft port unpickles what it receives")
        check_raft_files(config.data_dir / "raft")   # before any port is bound: one line, nothing to undo
        self._config = config
        self._on_change = on_change
        # keyword overrides are for tests; the config holds the tunables
        self._compaction_min_entries = log_compaction_min_entries or config.raft_log_compaction_min_entries
        self._compaction_min_time_s = log_compaction_min_time_s or config.raft_log_compaction_min_time_s
        self._consumer = _ReplicatedState(self._on_applied)
        self._views = ViewCache()
        self._notified_state = self._consumer.state
        self._syncobj: SyncObj | None = None
        self._role = "follower"
        self._led_term: int | None = None    # the term the tick thread last saw this node lead in
        self._leader_seen_s = time.monotonic()   # when the tick thread last saw a leader (leaderless_s)
        self._pending: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[tuple[Any, int]]]] = set()
        self._pending_lock = threading.Lock()

    # ---- lifecycle ----

    def start(self) -> None:
        """Bind the Raft port and start the tick thread; raise ConfigError if the port is taken.

        Call it on the main thread: pysyncobj's tick thread exits with the thread that started it.
        Journal replay runs on the tick thread and calls on_change, possibly before this returns.
        """
        assert self._syncobj is None, "RaftMetadata already started"
        raft_dir = self._config.data_dir / "raft"
        raft_dir.mkdir(parents=True, exist_ok=True)
        _probe_bind(self._config.raft)
        self._consumer = _ReplicatedState(self._on_applied)   # fresh: the journal replays into it
        self._leader_seen_s = time.monotonic()
        self._notified_state = self._consumer.state
        syncobj = SyncObj(self._config.raft, list(self._config.raft_peers),
                          conf=self._syncobj_conf(raft_dir), consumers=[self._consumer],
                          transportClass=_CatchUpTransport)
        try:
            syncobj.waitBinded()
        except SyncObjException:
            _destroy_unbound(syncobj)
            raise ConfigError(f"cannot bind the Raft port {self._config.raft} "
                              f"after {_BIND_RETRIES} attempts (another process on it?)") from None
        syncobj.addOnTickCallback(self._on_tick)
        self._syncobj = syncobj
        logger.info("raft metadata started on %s (peers %s, dir %s)", self._config.raft,
                    ", ".join(self._config.raft_peers) or "none", raft_dir)

    def _syncobj_conf(self, raft_dir: pathlib.Path) -> SyncObjConf:
        return SyncObjConf(
            journalFile=str(raft_dir / "journal"), fullDumpFile=str(raft_dir / "dump"),  # both, always
            password=self._config.raft_password,
            dynamicMembershipChange=True,       # change_voters; every voter must have it on (notes 1.7)
            appendEntriesUseBatch=False,        # a commit in ~1 ms instead of one heartbeat period
            commandsWaitLeader=False,           # no leader: fail fast (MISSING_LEADER), callers retry
            commandsQueueSize=self._config.raft_commands_queue_max,
            leaderFallbackTimeout=self._config.leader_fallback_timeout_s,
            connectionRetryTime=self._config.raft_connection_retry_s,
            logCompactionSplit=True, useFork=False,
            logCompactionMinEntries=self._compaction_min_entries,
            logCompactionMinTime=self._compaction_min_time_s,
            bindAddress=self._config.raft, maxBindRetries=_BIND_RETRIES, bindRetryTime=_BIND_RETRY_S,
            onStateChanged=self._on_state_changed,
        )

    def stop(self) -> None:
        """Stop the tick thread and close the port and journal; waits for it. Idempotent."""
        syncobj, self._syncobj = self._syncobj, None
        if syncobj is None:
            return
        syncobj.removeOnTickCallback(self._on_tick)
        syncobj.destroy_synchronous()
        self._role = "follower"
        with self._pending_lock:
            pending, self._pending = self._pending, set()
        for loop, future in pending:
            _settle_threadsafe(loop, future, (None, _STOPPED))
        logger.info("raft metadata stopped on %s", self._config.raft)

    # ---- proposals ----

    async def propose(self, command: bytes, timeout_s: float) -> dict[str, Any]:
        """Append `command` to the log and return the state machine's result once applied here."""
        try:
            commands.decode_command(command)
        except ValueError as exc:   # keep garbage out of the log
            return commands.error(commands.INVALID_ARGUMENT, f"malformed command: {exc}")
        consumer, syncobj = self._consumer, self._syncobj
        if syncobj is None:
            raise NoControllerError("raft metadata is not running on this node")
        try:
            result, reason = await self._call(lambda on_done: consumer._apply(command, callback=on_done), timeout_s)
        except TimeoutError:
            raise UnknownOutcomeError(f"metadata proposal not confirmed within {timeout_s} s; "
                                      "it may still apply (retry with the same request id)") from None
        return _result_or_raise(result, reason)

    async def barrier(self, timeout_s: float) -> None:
        """A no-op through the log: afterwards `state` reflects every command committed before it."""
        await self.propose(commands.noop(), timeout_s)

    # ---- membership ----

    def voters(self) -> tuple[str, ...]:
        """The Raft addresses of the voters as this node's log has them (itself included), sorted."""
        syncobj = self._syncobj
        if syncobj is None:
            return ()
        return tuple(sorted({str(syncobj.selfNode.id), *(str(node.id) for node in syncobj.otherNodes)}))

    async def change_voters(self, remove: str, add: str, timeout_s: float) -> tuple[str, ...]:
        """Take the voter at Raft address `remove` out of the group, then let `add` in; return the voters.

        Each step is one pysyncobj membership entry, committed by the current voters before the
        next starts; a step already done (a retry) is skipped, so the call is idempotent. Start
        the new voter after this returns (or before: it cannot vote until it is added).
        Raises NoControllerError when a step could not be committed before the deadline.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for action, address in (("rem", remove), ("add", add)):
            while (address in self.voters()) != (action == "add"):
                if self._syncobj is None:
                    raise NoControllerError("raft metadata is not running on this node")
                reason = await self._membership_step(action, address, max(0.1, deadline - loop.time()))
                if reason == FAIL_REASON.SUCCESS or (address in self.voters()) == (action == "add"):
                    break
                if loop.time() >= deadline:
                    name = _REASONS.get(reason, "STOPPED" if reason == _STOPPED else str(reason))
                    raise NoControllerError(f"raft membership change ({'remove' if action == 'rem' else 'add'} "
                                            f"voter {address}) not committed within {timeout_s} s: {name}")
                await asyncio.sleep(_MEMBERSHIP_RETRY_S)   # REQUEST_DENIED: the previous change is not applied yet
            logger.info("raft voter %s %s; voters now %s", address, "removed" if action == "rem" else "added",
                        ", ".join(self.voters()))
        return self.voters()

    async def _membership_step(self, action: str, address: str, timeout_s: float) -> int:
        syncobj = self._syncobj
        assert syncobj is not None
        change = syncobj.addNodeToCluster if action == "add" else syncobj.removeNodeFromCluster
        try:
            _, reason = await self._call(lambda on_done: change(address, callback=on_done), timeout_s)
        except TimeoutError:
            reason = FAIL_REASON.MISSING_LEADER   # unknown: the caller re-reads the membership
        return int(reason)

    async def _call(self, start: Callable[[Callable[[Any, int], None]], None], timeout_s: float) -> tuple[Any, int]:
        """Start a pysyncobj call with a callback and await (result, reason); TimeoutError past
        timeout_s. Pending calls are settled with _STOPPED when the store stops."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def on_done(result: Any, reason: int) -> None:   # pysyncobj's tick thread
            _settle_threadsafe(loop, future, (result, reason))

        entry = (loop, future)
        with self._pending_lock:
            self._pending.add(entry)
        try:
            start(on_done)
            async with asyncio.timeout(timeout_s):   # not wait_for: 3.11's drops a cancel that lands as it settles
                return await future
        finally:
            with self._pending_lock:
                self._pending.discard(entry)

    # ---- reads (any thread) ----

    @property
    def state(self) -> dict[str, Any]:
        return self._consumer.state

    @property
    def view(self) -> MetadataView:
        return self._views.get(self._consumer.state)

    def install_snapshot(self, version: int, snapshot: bytes) -> bool:
        return False   # this store runs the state machine itself

    @property
    def version(self) -> int:
        version: int = self._consumer.state["version"]
        return version

    def is_leader(self) -> bool:
        syncobj = self._syncobj
        return syncobj is not None and bool(syncobj._isLeader())

    def leader_term(self) -> int | None:
        """The term this node leads in, or None. Two reads from other threads are not enough:
        pysyncobj sets a higher term one step before it steps down, so a deposed leader could
        be seen leading in the new term and take control of it (seen under load: no
        controller for the rest of that term). So the term must also be the one the tick
        thread itself saw this node lead in (`_on_tick`, between messages), and still be live."""
        syncobj = self._syncobj
        if syncobj is None:
            return None
        term: int = syncobj.raftCurrentTerm
        if not syncobj._isLeader() or syncobj.raftCurrentTerm != term or self._led_term != term:
            return None
        return term

    def role(self) -> str:
        return self._role if self._syncobj is not None else "follower"

    def leader_raft_address(self) -> str | None:
        syncobj = self._syncobj
        leader = syncobj._getLeader() if syncobj is not None else None
        return str(leader.id) if leader is not None else None

    def leaderless_s(self) -> float:
        return 0.0 if self._syncobj is None else max(0.0, time.monotonic() - self._leader_seen_s)

    def is_ready(self) -> bool:
        syncobj = self._syncobj
        return syncobj is not None and bool(syncobj.isReady())

    def statistics(self) -> MetadataStatistics:
        syncobj = self._syncobj
        if syncobj is None:
            return MetadataStatistics("follower", 0, 0, 0, 0, None, self.version)
        return MetadataStatistics(role=self.role(), term=syncobj.raftCurrentTerm,
                                  commit_index=syncobj.raftCommitIndex, last_applied=syncobj.raftLastApplied,
                                  log_length=syncobj._getRaftLogSize(), leader=self.leader_raft_address(),
                                  version=self.version)

    # ---- callbacks from the tick thread: cheap, and they never raise ----

    def _on_applied(self, state: dict[str, Any]) -> None:
        self._notified_state = state
        self._notify()

    def _on_tick(self) -> None:
        syncobj = self._syncobj
        if syncobj is not None:    # on the tick thread: role and term cannot change between these reads
            self._led_term = syncobj.raftCurrentTerm if syncobj._isLeader() else None
            if syncobj._getLeader() is not None:   # a cut-off leader steps down (and forgets) after the fallback
                self._leader_seen_s = time.monotonic()
            journal = getattr(syncobj, "_SyncObj__raftLog", None)
            if isinstance(journal, _DurableJournal):
                journal.sync()   # a leader's new entries, after its AppendEntries left and before it waits for acks
        # A dump loaded at start or streamed from the leader replaces `state` without _apply.
        if self._consumer.state is not self._notified_state:
            self._notified_state = self._consumer.state
            self._notify()

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:
            logger.exception("metadata on_change callback failed")

    def _on_state_changed(self, old: int, new: int) -> None:
        self._role = _ROLES.get(new, "follower")
        syncobj = self._syncobj
        term = syncobj.raftCurrentTerm if syncobj is not None else -1
        # Elections without a winner repeat every ~1 s during a partition: only leadership is INFO.
        level = logging.INFO if "leader" in (self._role, _ROLES.get(old)) else logging.DEBUG
        logger.log(level, "raft role of %s changed from %s to %s (term %d)", self._config.raft,
                   _ROLES.get(old, old), self._role, term)


def _settle_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[tuple[Any, int]],
                       outcome: tuple[Any, int]) -> None:
    """Resolve `future` on its loop from any thread; never raises (it runs inside pysyncobj)."""
    def settle() -> None:
        if not future.done():
            future.set_result(outcome)
    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:   # the loop is closed: nobody waits any more
        pass


def _result_or_raise(result: Any, reason: int) -> dict[str, Any]:
    if reason == FAIL_REASON.SUCCESS and isinstance(result, dict):
        return result
    name = _REASONS.get(reason, "STOPPED" if reason == _STOPPED else str(reason))
    if reason in _NOT_APPLIED:
        raise NoControllerError(f"metadata proposal not applied: {name} (no reachable Raft leader)")
    raise UnknownOutcomeError(f"metadata proposal outcome unknown: {name} (retry with the same request id)")


def _probe_bind(address: str) -> None:
    """Fail fast, with the OS's reason and the address, if the Raft port cannot be bound."""
    host, port = parse_host_port(address, "raft")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = sorted(infos, key=lambda info: info[0] != socket.AF_INET)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as pysyncobj does
            probe.bind(sockaddr)
    except OSError as exc:
        raise ConfigError(f"cannot bind the Raft port {address}: {exc.strerror or exc} "
                          "(another daemon on it, or not an address of this host?)") from None


def _destroy_unbound(syncobj: SyncObj) -> None:
    """Release the journal of a SyncObj that never bound (its tick thread may have exited)."""
    if syncobj.tick_thread_alive():
        syncobj.destroy_synchronous()
    else:
        syncobj._doDestroy()


def check_raft_files(raft_dir: pathlib.Path) -> None:
    """Refuse to start on a damaged journal or dump, with one line naming the file.

    pysyncobj reads both without checks (a zero-byte journal ends in a long traceback and a
    crash). Why not treat a damaged journal as missing and refill from the leader: a voter
    that forgets entries it acknowledged can let a minority decide (Raft safety needs what
    it voted on); the operator decides, knowing whether the other voters hold a quorum.
    """
    journal, dump = raft_dir / "journal", raft_dir / "dump"
    problem = _journal_problem(journal) if journal.exists() else None
    if problem is None and dump.exists():
        problem = _dump_problem(dump)
    if problem is not None:
        raise ConfigError(f"{problem}: restore it, or move {raft_dir} aside to rebuild this voter from the "
                          "others (only while the other voters hold a quorum)")


def _journal_problem(path: pathlib.Path) -> str | None:
    """The journal's framing, as pysyncobj.journal.FileJournal writes it, or what is wrong with it."""
    data = path.read_bytes()
    header = pysyncobj_journal.FIRST_RECORD_OFFSET
    if len(data) < header:
        return f"raft journal {path} is damaged ({len(data)} bytes, shorter than its {header}-byte header)"
    if not data.startswith(pysyncobj_journal.APP_NAME):
        return f"raft journal {path} is damaged (not a pysyncobj journal)"
    offset_at = pysyncobj_journal.LAST_RECORD_OFFSET_OFFSET
    end = struct.unpack("<I", data[offset_at:offset_at + 4])[0]
    if not header <= end <= len(data):
        return f"raft journal {path} is damaged (its records end at {end}, the file has {len(data)} bytes)"
    position = header
    while position < end:
        size = struct.unpack("<I", data[position:position + 4])[0] if position + 4 <= end else -1
        trailer = position + 4 + size
        if size < 16 or trailer + 4 > end or data[trailer:trailer + 4] != data[position:position + 4]:
            return f"raft journal {path} is damaged (a broken record at byte {position})"
        position = trailer + 4
    return None


def _dump_problem(path: pathlib.Path) -> str | None:
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return f"raft dump {path} is damaged ({exc})"
    return None
