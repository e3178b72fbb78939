"""Query: an immutable builder of a pushed-down query (DESIGN.md section 5).

The client only builds the spec (a plain dict) and sends it; the node parses and checks
the expressions (shoal.node.compute) before any task runs, and answers a bad one with
QueryError naming the clause, the column and the problem.

    rows = (client.query("flights").where("dep_delay > 60").group_by("carrier")
            .agg(n=("count", None), delay=("mean", "arr_delay")).collect())

Evaluation order: where -> with_column -> group_by + agg (or agg alone: one row; or
select; or whole documents) -> distinct -> order_by -> limit.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from shoal.client._arguments import LIMIT_MAX, check_int
from shoal.client._errors import QueryError
from shoal.client._jobs import check_timeout

if TYPE_CHECKING:
    from shoal.client._client import Client
    from shoal.client._jobs import Job

AGGREGATES = ("count", "sum", "min", "max", "mean", "count_distinct")


class Query:
    def __init__(self, client: Client, dataset: str, spec: dict[str, Any] | None = None) -> None:
        self._client = client
        self.dataset = dataset
        self.spec: dict[str, Any] = spec or {"where": None, "with_columns": [], "group_by": [], "aggs": [],
                                             "select": None, "distinct": False, "order_by": [], "limit": None}

    def _with(self, **changes: Any) -> Query:
        spec = copy.deepcopy(self.spec)
        spec.update(changes)
        return Query(self._client, self.dataset, spec)

    def where(self, expression: str) -> Query:
        """Keep records for which `expression` is true (null counts as false); where() twice = and."""
        _text(expression, "where")
        current = self.spec["where"]
        return self._with(where=f"({current}) and ({expression})" if current else expression)

    def with_column(self, name: str, expression: str) -> Query:
        """Add a computed column `name` (later expressions may use it)."""
        _text(name, "with_column name")
        _text(expression, "with_column")
        return self._with(with_columns=[*self.spec["with_columns"], [name, expression]])

    def select(self, *expressions: str) -> Query:
        for expression in expressions:
            _text(expression, "select")
        return self._with(select=list(expressions))

    def group_by(self, *expressions: str) -> Query:
        for expression in expressions:
            _text(expression, "group_by")
        return self._with(group_by=[*self.spec["group_by"], *expressions])

    def agg(self, **aggregates: tuple[str, str | None]) -> Query:
        """name=(function, field or expression or None); function in AGGREGATES."""
        aggs = list(self.spec["aggs"])
        for name, value in aggregates.items():
            if not (isinstance(value, tuple) and len(value) == 2 and value[0] in AGGREGATES
                    and (value[1] is None or isinstance(value[1], str))):
                raise QueryError(f"agg {name}: expected (function, field or None) with function in "
                                 f"{', '.join(AGGREGATES)}, got {value!r:.80}", dataset=self.dataset)
            aggs.append([name, value[0], value[1]])
        return self._with(aggs=aggs)

    def count(self) -> int:
        """The number of records that pass where(), computed on the nodes."""
        rows = self._with(aggs=[["count", "count", None]], group_by=[], select=None).collect()
        return int(rows[0]["count"]) if rows else 0

    def distinct(self) -> Query:
        return self._with(distinct=True)

    def order_by(self, expression: str, *, descending: bool = False) -> Query:
        _text(expression, "order_by")
        return self._with(order_by=[*self.spec["order_by"], [expression, bool(descending)]])

    def limit(self, count: int) -> Query:
        """At most `count` rows (0..2**63 - 1, the node's range)."""
        check_int(count, "limit", minimum=0, maximum=LIMIT_MAX, dataset=self.dataset)
        return self._with(limit=count)

    def submit(self) -> Job:
        """Start the job on the cluster and return at once (Job.wait / result / progress)."""
        return self._client._submit_job(self.dataset, "query", self.spec)

    def collect(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Submit, wait (at most `timeout` seconds, None = no limit) and return the rows.

        A bad timeout is refused before anything is submitted; JobTimeoutError past it."""
        timeout = check_timeout(timeout)   # before the submit, not after it
        return self.submit().result(timeout)

    def __repr__(self) -> str:
        return f"Query({self.dataset!r}, {self.spec!r})"


def _text(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"{what}: expected a non-empty expression string, got {value!r:.80}")
