"""A batch of records being evaluated together, with its per-batch caches."""
from __future__ import annotations

from itertools import compress
from typing import Any


class Batch:
    """Records being evaluated together, with per-batch caches.

    records: decoded documents, or positional lists; keys: their record keys (bytes) when a
    step needs them, else None; computed: the with_columns values computed so far, by index.
    """

    __slots__ = ("records", "keys", "computed", "size", "fields", "_types")

    def __init__(self, records: list[Any], keys: list[bytes] | None, computed: list[list[Any]] | None = None):
        self.records = records
        self.keys = keys
        self.computed = computed if computed is not None else []
        self.size = len(records)
        self.fields: dict[object, list[Any]] = {}       # field path -> column (None: _key)
        self._types: dict[int, tuple[list[Any], set[type] | frozenset[type]]] = {}

    def types_of(self, column: list[Any]) -> set[type] | frozenset[type]:
        """The set of types in a column of this batch (cached by column identity)."""
        entry = self._types.get(id(column))
        if entry is not None and entry[0] is column:
            return entry[1]
        types = set(map(type, column))
        self._types[id(column)] = (column, types)
        return types

    def known(self, column: list[Any], types: frozenset[type]) -> list[Any]:
        """Record that `column` holds only (a subset of) `types`; returns the column."""
        self._types[id(column)] = (column, types)
        return column

    def subset(self, selectors: list[bool]) -> Batch:
        """The records whose selector is true (computed columns follow, caches start empty)."""
        keys = None if self.keys is None else list(compress(self.keys, selectors))
        computed = [list(compress(column, selectors)) for column in self.computed]
        return Batch(list(compress(self.records, selectors)), keys, computed)
