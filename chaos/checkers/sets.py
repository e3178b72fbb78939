"""Checkers for the set workload (unique adds, one final read) and replica convergence.

Set workload (Jepsen's `set`): clients add unique elements, and after the final
heal one read returns what the store holds. Per element, judged from every add of
it (a client may retry an add under the same idempotency key):
- lost: some add was acknowledged ("ok") but the element is absent;
- failed_but_present: every add of it was reported as definitely failed, yet it
  is present. "failed" promises the write did not happen (timeouts must be
  "unknown"), so this is a bug too: a retry or a replica applied it anyway;
- unexpected: present but never attempted (garbage or another run's data);
- duplicated: the final read holds it more than once (pass a mapping of counts or
  a list to detect this; a set cannot show duplicates);
- unknown adds may be present or absent: counted, never a failure.

Convergence: after the final heal, every in-sync replica of a shard must report
the same checksum. A shard whose replicas differ is listed with each replica's
(applied sequence, checksum): equal sequences with different checksums is real
divergence, different sequences may be a replica that is still catching up, so
callers poll until their deadline before calling it a failure.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping

from shoal.chaos.history import Operation

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetResult:
    """Outcome of `check_set`; element lists are sorted."""

    ok: bool
    attempted: int                        # distinct elements with at least one add
    acknowledged: int                     # distinct elements with an ok add
    present: int                          # distinct elements in the final read
    lost: tuple[str, ...]
    failed_but_present: tuple[str, ...]
    unexpected: tuple[str, ...]
    duplicated: tuple[str, ...]
    unknown_present: int                  # only unknown adds, and present
    unknown_absent: int                   # only unknown adds, and absent

    def summary(self) -> str:
        """One human paragraph; lists at most 10 elements per problem."""
        lines = [f"set: {'ok' if self.ok else 'FAILED'}: {self.attempted} attempted, "
                 f"{self.acknowledged} acknowledged, {self.present} present, unknown adds "
                 f"{self.unknown_present} present / {self.unknown_absent} absent"]
        for name in ("lost", "failed_but_present", "unexpected", "duplicated"):
            elements: tuple[str, ...] = getattr(self, name)
            if elements:
                more = f" (+{len(elements) - 10} more)" if len(elements) > 10 else ""
                lines.append(f"  {name}: {len(elements)}: {', '.join(elements[:10])}{more}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ShardDivergence:
    """A shard whose in-sync replicas disagree: node -> (applied sequence, checksum)."""

    shard: Hashable
    replicas: Mapping[Hashable, tuple[int, Any]] = field(hash=False)
    same_sequence: bool                   # True: diverged at the same point, not lagging


@dataclass(frozen=True, slots=True)
class ConvergenceResult:
    """Outcome of `check_convergence`."""

    ok: bool
    shards_checked: int
    differing: tuple[ShardDivergence, ...]

    def summary(self) -> str:
        lines = [f"convergence: {'ok' if self.ok else 'FAILED'}: {self.shards_checked} shards, "
                 f"{len(self.differing)} differ"]
        for divergence in self.differing:
            kind = "diverged" if divergence.same_sequence else "differ (sequences differ)"
            replicas = ", ".join(f"{node}: seq {seq} sum {checksum}"
                                 for node, (seq, checksum) in divergence.replicas.items())
            lines.append(f"  shard {divergence.shard}: {kind}: {replicas}")
        return "\n".join(lines)


def check_set(adds: Iterable[Operation],
              final_read: Iterable[str] | Mapping[str, int]) -> SetResult:
    """Judge the final read of a set against every add (`kind == "add"`, element in
    `input`). `final_read` is a set/list of elements or a mapping element -> count."""
    outcomes: dict[str, set[str]] = {}
    for operation in adds:
        if operation.kind != "add":
            raise ValueError(f"not an add: {operation.describe()}")
        outcomes.setdefault(str(operation.input), set()).add(operation.outcome)
    counts = _counts(final_read)
    lost = sorted(e for e, o in outcomes.items() if "ok" in o and e not in counts)
    failed_present = sorted(e for e, o in outcomes.items() if o == {"failed"} and e in counts)
    unexpected = sorted(e for e in counts if e not in outcomes)
    duplicated = sorted(e for e, count in counts.items() if count > 1)
    only_unknown = [e for e, o in outcomes.items() if "ok" not in o and "unknown" in o]
    unknown_present = sum(1 for e in only_unknown if e in counts)
    result = SetResult(
        ok=not (lost or failed_present or unexpected or duplicated),
        attempted=len(outcomes), acknowledged=sum(1 for o in outcomes.values() if "ok" in o),
        present=len(counts), lost=tuple(lost), failed_but_present=tuple(failed_present),
        unexpected=tuple(unexpected), duplicated=tuple(duplicated),
        unknown_present=unknown_present, unknown_absent=len(only_unknown) - unknown_present)
    if not result.ok:
        logger.info("set check failed: %d lost, %d failed but present, %d unexpected, "
                    "%d duplicated", len(lost), len(failed_present), len(unexpected),
                    len(duplicated))
    return result


def check_convergence(
        replica_checksums: Mapping[Hashable, Mapping[Hashable, tuple[int, Any]]],
) -> ConvergenceResult:
    """Every shard's in-sync replicas (node -> (applied sequence, checksum)) must report
    equal checksums. Shards with fewer than two replicas are trivially converged."""
    differing: list[ShardDivergence] = []
    for shard, replicas in replica_checksums.items():
        if len({checksum for _, checksum in replicas.values()}) > 1:
            sequences = {sequence for sequence, _ in replicas.values()}
            differing.append(ShardDivergence(shard, dict(replicas), len(sequences) == 1))
    differing.sort(key=lambda divergence: str(divergence.shard))
    if differing:
        logger.info("%d of %d shards have differing replicas", len(differing),
                    len(replica_checksums))
    return ConvergenceResult(not differing, len(replica_checksums), tuple(differing))


def _counts(final_read: Iterable[str] | Mapping[str, int]) -> dict[str, int]:
    if isinstance(final_read, Mapping):
        return {str(element): int(count) for element, count in final_read.items()
                if int(count) > 0}
    return dict(Counter(str(element) for element in final_read))
