"""The typed read model of the replicated metadata: frozen views, one answer per question.

Every module that reads the metadata reads it through a `MetadataView` (the stores
expose `.view`, built once per applied state and cached), never by indexing the state
dict. Each question a reader asks has exactly one definition here:

- `MetadataView.under_replicated()`: shards with fewer in-sync replicas on *alive*
  nodes than the dataset's replication factor (the metric, `shoal status` and the
  controller all use this one rule; a suspect, dead, draining or removed node's copy
  does not count toward safety). Learners do not count either: they hold no acknowledged
  write until they join the in-sync set.
- `default_replication(alive)`: replication 0 means min(3, alive nodes), at least 1.
- `MetadataView.shard(dataset, index)`, `ShardView.in_sync(node)`, `is_learner(node)`,
  `holds(node)` (in sync or learning), `MetadataView.node_by_raft_address(address)`.

The state dict layout is documented in fsm.py; views are built from it and never
written back (commands change the state, views only read it).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Final

REPLICATION_DEFAULT_MAX: Final = 3


def default_replication(alive_nodes: int) -> int:
    """The replication factor a dataset created with replication 0 gets."""
    return max(1, min(REPLICATION_DEFAULT_MAX, alive_nodes))


@dataclasses.dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    address: str           # gRPC host:port
    zone: str
    state: str             # alive | suspect | dead | draining | removed
    raft_address: str      # "" for a data-only node

    @property
    def alive(self) -> bool:
        return self.state == "alive"

    @property
    def voter(self) -> bool:
        return bool(self.raft_address)


@dataclasses.dataclass(frozen=True, slots=True)
class ShardView:
    dataset: str
    index: int
    epoch: int
    primary: str                   # node id
    replicas: tuple[str, ...]      # the in-sync set, primary first
    learners: tuple[str, ...]      # being filled, not yet in sync
    dataset_id: str = ""           # the dataset incarnation ("<name>@<version>")
    incarnations: Mapping[str, str] = dataclasses.field(default_factory=dict)   # node -> recorded replica

    def recorded_incarnation(self, node_id: str) -> str | None:
        """The incarnation of the node's in-sync replica as recorded; None before it was recorded."""
        return self.incarnations.get(node_id)

    def is_recorded(self, node_id: str, incarnation: str) -> bool:
        """False when the metadata recorded another incarnation for this node: its replica is new."""
        recorded = self.incarnations.get(node_id)
        return recorded is None or recorded == incarnation

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.index}"

    def in_sync(self, node_id: str) -> bool:
        return node_id in self.replicas

    def is_learner(self, node_id: str) -> bool:
        """The node is being filled with a copy (issue 18); not in the in-sync set, so no write waits for it."""
        return node_id in self.learners

    def holds(self, node_id: str) -> bool:
        """The node keeps a copy of this shard (in sync or learning)."""
        return node_id in self.replicas or node_id in self.learners

    def backups(self) -> list[str]:
        return [r for r in self.replicas if r != self.primary]


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetView:
    name: str
    shards: int
    replication: int
    shard_map: tuple[ShardView, ...]
    id: str = ""              # "<name>@<version it was created at>"; the name for older datasets
    schema: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # Schema.to_json(); {} = schema-less
    encryption_key_id: str = ""   # id of the key its values are sealed with (node/encryption.py); "" = plain

    def shard(self, index: int) -> ShardView | None:
        return self.shard_map[index] if 0 <= index < len(self.shard_map) else None


@dataclasses.dataclass(frozen=True, slots=True)
class TaskView:
    index: int                             # the shard index; a map-reduce job's last task is its reduce
    attempts: tuple[tuple[int, str], ...]  # (attempt number, node id), in assignment order
    done: int                              # the winning attempt, 0 while none committed
    node: str                              # the winning attempt's node
    records: int                           # records the winning attempt scanned
    result: bytes                          # its packed partial result

    def attempt_nodes(self) -> list[str]:
        return [node for _, node in self.attempts]


@dataclasses.dataclass(frozen=True, slots=True)
class JobView:
    id: str
    dataset: str
    dataset_id: str
    kind: str                  # query | map_reduce
    spec: bytes                # msgpack of the job spec the node checked at submit
    state: str                 # running | done | failed | cancelled
    error_code: str
    error: str
    submitted_at_s: float      # wall clock of the submitting node
    finished_at_s: float       # 0.0 while running
    tasks: tuple[TaskView, ...]

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def tasks_done(self) -> int:
        return sum(1 for t in self.tasks if t.done)

    @property
    def records_scanned(self) -> int:
        return sum(t.records for t in self.tasks)


@dataclasses.dataclass(frozen=True, slots=True)
class MetadataView:
    version: int
    nodes: Mapping[str, NodeView]          # by node id, sorted
    datasets: Mapping[str, DatasetView]    # by name, sorted
    cluster_id: str = ""                   # "" until bootstrap (init_cluster) committed
    jobs: Mapping[str, JobView] = dataclasses.field(default_factory=dict)   # by id, in submission order
    jobs_version: int = 0

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MetadataView:
        nodes = {node_id: NodeView(node_id, n["address"], n["zone"], n["state"], n["raft_address"])
                 for node_id, n in sorted(state["nodes"].items())}
        datasets = {name: _dataset(name, d) for name, d in sorted(state["datasets"].items())}
        jobs = {job_id: _job(j) for job_id, j in state.get("jobs", {}).items()}
        return cls(int(state["version"]), nodes, datasets, str(state.get("cluster_id", "")), jobs,
                   int(state.get("jobs_version", 0)))

    def job(self, job_id: str) -> JobView | None:
        return self.jobs.get(job_id)

    # ---- nodes ----

    def node(self, node_id: str) -> NodeView | None:
        return self.nodes.get(node_id)

    def alive_nodes(self) -> list[NodeView]:
        return [n for n in self.nodes.values() if n.alive]

    def is_alive(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.alive

    def node_by_raft_address(self, raft_address: str) -> NodeView | None:
        if not raft_address:
            return None
        return next((n for n in self.nodes.values() if n.raft_address == raft_address), None)

    def default_replication(self) -> int:
        return default_replication(len(self.alive_nodes()))

    # ---- datasets and shards ----

    def dataset(self, name: str) -> DatasetView | None:
        return self.datasets.get(name)

    def dataset_by_id(self, dataset_id: str) -> DatasetView | None:
        found = self.datasets.get(dataset_name(dataset_id))
        return found if found is not None and found.id == dataset_id else None

    def dataset_ids(self) -> set[str]:
        return {d.id for d in self.datasets.values()}

    def shard(self, dataset: str, index: int) -> ShardView | None:
        found = self.datasets.get(dataset)
        return None if found is None else found.shard(index)

    def shards(self) -> Iterator[ShardView]:
        for dataset in self.datasets.values():
            yield from dataset.shard_map

    def shards_held_by(self, node_id: str) -> Iterator[ShardView]:
        return (s for s in self.shards() if s.holds(node_id))

    def in_sync_alive(self, shard: ShardView) -> int:
        return sum(1 for r in shard.replicas if self.is_alive(r))

    def is_under_replicated(self, shard: ShardView) -> bool:
        return self.in_sync_alive(shard) < self.datasets[shard.dataset].replication

    def under_replicated(self, dataset: str | None = None) -> int:
        """Shards (of one dataset, or all) with fewer in-sync replicas on alive nodes than wanted."""
        shards = self.shards() if dataset is None else iter(self.datasets[dataset].shard_map)
        return sum(1 for s in shards if self.is_under_replicated(s))


def dataset_name(dataset_id: str) -> str:
    """The name part of a dataset id ("events@12" -> "events"; an old id is the name)."""
    return dataset_id.partition("@")[0]


def created_at_version(dataset_id: str) -> int | None:
    """The metadata version a dataset id was created at; None for ids from before ids had one."""
    version = dataset_id.partition("@")[2]
    return int(version) if version.isdigit() else None


def _dataset(name: str, d: Mapping[str, Any]) -> DatasetView:
    dataset_id = str(d.get("id", name))
    shard_map = tuple(ShardView(name, i, s["epoch"], s["primary"], tuple(s["replicas"]), tuple(s.get("learners", ())),
                                dataset_id, dict(s.get("incarnations", {})))
                      for i, s in enumerate(d["shard_map"]))
    return DatasetView(name, d["shards"], d["replication"], shard_map, dataset_id, dict(d.get("schema") or {}),
                       str(d.get("encryption_key_id", "")))


_JOB_VIEWS: dict[int, tuple[Mapping[str, Any], JobView]] = {}   # id(job dict) -> (that dict, its view)
_JOB_VIEWS_MAX = 256    # cleared when full: it holds old job dicts (and their results) alive


def _job(j: Mapping[str, Any]) -> JobView:
    """The view of one job, reused while the state keeps the same job dict: the state machine
    replaces only the dict of a job that changed (copy-on-write), and rebuilding every retained
    job's view on every metadata change was the largest cost of a small job (bench/RESULTS.md)."""
    cached = _JOB_VIEWS.get(id(j))
    if cached is not None and cached[0] is j:
        return cached[1]
    if len(_JOB_VIEWS) >= _JOB_VIEWS_MAX:
        _JOB_VIEWS.clear()
    view = _build_job(j)
    _JOB_VIEWS[id(j)] = (j, view)
    return view


def _build_job(j: Mapping[str, Any]) -> JobView:
    tasks = tuple(TaskView(i, tuple((int(a), str(n)) for a, n in t["attempts"]), t["done"], t["node"], t["records"],
                           t.get("result", b""))
                  for i, t in enumerate(j["tasks"]))
    return JobView(j["id"], j["dataset"], j["dataset_id"], j["kind"], j["spec"], j["state"], j["error_code"],
                   j["error"], j["submitted_at_s"], j["finished_at_s"], tasks)


class ViewCache:
    """Builds the view of a state once; stores call `get(state)` from any thread.

    The (state, view) pair is one attribute, read without a lock on the hot path (every
    request); two threads that miss at once both build a view, and either may stay.
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached: tuple[Mapping[str, Any], MetadataView] | None = None

    def get(self, state: Mapping[str, Any]) -> MetadataView:
        cached = self._cached
        if cached is not None and cached[0] is state:
            return cached[1]
        view = MetadataView.from_state(state)
        self._cached = (state, view)
        return view
