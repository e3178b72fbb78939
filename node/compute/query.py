"""compile_query(spec, fields) -> CompiledQuery: partial() on each shard, merge() of the partials.

Evaluation order: where -> with_columns -> (group_by + aggs | aggs only -> one row | select |
whole documents) -> distinct -> order_by -> limit. partial() reads (key, raw value) pairs in
batches of BATCH_RECORDS, decodes them, filters with `where` (each top-level `and` term is a
successive filter, so later terms only see rows that passed), computes with_columns as
columns, then either aggregates (aggregates.py) or collects rows.

Partials (msgpack-safe: dict/list/str/bytes/int/float/bool/None):
- aggregated: {"groups": [[group key values, [aggregate wire per agg]], ...]}; without
  group_by there is always exactly one group, with key [].
- rows: {"rows": [[record key bytes, [order_by values], row], ...]}; row is a list of select
  values, or the document (a dict; a non-dict document v becomes {"_value": v}; with a schema,
  the positional record as a dict of stored values, so timestamps stay int epoch ms).

Results carry ints within 64 bits (-2^63..2^64-1, what msgpack packs): an int past that in a
partial (a computed column) or a merged sum is an EvaluationError naming its column, never a
result that cannot be sent; sums are exact in between (Python ints, past-64-bit wires as bytes).

Determinism whatever the order of partials: group keys and distinct rows are identified by
values.identity_key (1, 1.0 and True differ); group rows sort by their keys (nulls last)
unless order_by says otherwise, with the keys breaking ties; record rows sort by order_by
then record key (with distinct: the smallest key among the duplicates), and without order_by
by record key. So `limit` without order_by keeps the rows of the smallest keys. A shard
keeps only its top `limit` rows (order_by) or stops reading after `limit` rows (no order_by;
this assumes pairs come in key order, as from an LMDB cursor).
"""
from __future__ import annotations

import operator
from collections import Counter, _count_elements   # type: ignore[attr-defined]  # Counter.update's C core
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice, repeat
from typing import Any

import msgpack

from shoal.client.wire.ints import WIRE_INT_MAX, WIRE_INT_MIN, WIRE_INT_RANGE, int_past_64_bits, shown_int
from shoal.node.compute.aggregates import Accumulator, finish, make_accumulator
from shoal.node.compute.columns import Batch, CompiledExpression, compile_expression
from shoal.node.compute.errors import EvaluationError, QueryError
from shoal.node.compute.spec import Plan, parse_spec
from shoal.node.compute.syntax import Logical, Node, uses_record_key
from shoal.node.compute.typecheck import check_types
from shoal.node.compute.values import identity_key, identity_keys, null_last_key, plain_value

BATCH_RECORDS = 256        # records per batch: larger batches fall out of the CPU cache (measured)
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_NO_TYPES: frozenset[type] = frozenset()
_RAW_SAFE = frozenset({str, bytes, type(None)})
_BOOLS = frozenset({bool})


class MsgpackDecoder:
    """The `decode` to pass to partial(): msgpack.unpackb(raw, raw=False, strict_map_key=False).

    Why a class: partial() calls `decode_batch` when the decoder has one. A functools.partial
    with keyword arguments builds a kwargs dict on every call, which costs about a third of a
    small record's decoding; decode_batch maps the keyword-free msgpack.unpackb in C instead
    (its only stricter default, strict_map_key, raises ValueError, and then the batch is decoded
    again record by record with the permissive call, which also re-raises a real decoding error).
    """

    def __call__(self, raw: bytes) -> object:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)

    def decode_batch(self, raws: list[bytes]) -> list[object]:
        """Decoded values of `raws`, in order."""
        try:
            return list(map(msgpack.unpackb, raws))
        except ValueError:      # a map with non-string keys (or a corrupt value: raised again below)
            return list(map(self, raws))


class JoinedArrayDecoder(MsgpackDecoder):
    """A MsgpackDecoder for stored values: a batch is decoded by one unpackb of the values joined
    under an array header, a third less decoding time than one call per value on positional
    arrays and a tenth less on maps (bench/RESULTS.md, profiles): no call and argument parsing per value.

    Only for values known to be one complete msgpack object each: joined, a truncated value
    would borrow its neighbour's bytes. Stored values are: a typed dataset's arrays are encoded
    by the node (node/records.py), and every value a client writes is checked to be exactly one
    msgpack object before it is stored (node/validation.py). Any error (a map with non-string
    keys, which the joined call's strict_map_key refuses, or a corrupt value) falls back to
    per-value decoding, which decodes the former and names the latter.
    """

    def decode_batch(self, raws: list[bytes]) -> list[object]:
        try:
            decoded: list[object] = msgpack.unpackb(b"\xdd" + len(raws).to_bytes(4, "big") + b"".join(raws))
            return decoded
        except Exception:   # msgpack raises several types; per value, the real error is raised again
            return super().decode_batch(raws)


def validate_spec(spec: object, fields: list[str] | None = None,
                  field_types: Mapping[str, frozenset[type]] | None = None) -> None:
    """Raise QueryError (one line, naming the entry) unless `spec` is a valid query spec.

    Checks everything compile_query does: shapes, names, expressions, constant parts (`'a' > 1`)
    and, when the schema's `fields` are given, that every field read exists; with `field_types`
    (typecheck.FIELD_TYPES of each schema field), that no expression fails on every record.
    """
    plan = parse_spec(spec)
    CompiledQuery(plan, None if fields is None else list(fields))
    if field_types is not None:
        check_types(plan, field_types)


def compile_query(spec: dict[str, Any], fields: list[str] | None = None) -> CompiledQuery:
    """Validate `spec` (QueryError) and compile it for records that are msgpack documents
    (fields None) or positional lists in the order of the schema's field names `fields`."""
    return CompiledQuery(parse_spec(spec), None if fields is None else list(fields))


class CompiledQuery:
    """A query ready to run: partial() per shard (or key range), merge() once."""

    def __init__(self, plan: Plan, fields: list[str] | None) -> None:
        self.plan = plan
        self.fields = fields
        computed: dict[str, int] = {}

        def compiled(node: Node, context: str) -> CompiledExpression:
            try:
                return compile_expression(node, fields=fields, computed=computed)
            except QueryError as exc:        # an unknown schema field, or a constant that cannot evaluate
                raise exc.within(context) from None
        self._where = [compiled(term, "where") for term in _conjuncts(plan.where)]
        self._with_columns: list[CompiledExpression] = []
        for index, (name, node) in enumerate(plan.with_columns):
            self._with_columns.append(compiled(node, f"with_columns[{index}] ({name})"))
            computed[name] = len(computed)
        self.computed_names = list(computed)
        self._group_by = [compiled(node, f"group_by[{index}]") for index, (_, node) in enumerate(plan.group_by)]
        self._aggs = [(function, None if node is None else compiled(node, f"aggs[{index}] ({name})"))
                      for index, (name, function, node) in enumerate(plan.aggs)]
        self._select = None if plan.select is None else [
            compiled(node, f"select[{index}]") for index, (_, node) in enumerate(plan.select)]
        self._order = [None if item.node is None else compiled(item.node, f"order_by[{index}]")
                       for index, item in enumerate(plan.order_by)]
        self._needs_keys = not plan.aggregated or any(uses_record_key(node) for node in plan.expressions())

    @property
    def columns(self) -> list[str]:
        """Output column names in order ([] for whole documents: their fields vary)."""
        return list(self.plan.columns)

    @property
    def referenced_fields(self) -> frozenset[str]:
        """Top-level record fields any expression reads (not computed columns, not _key)."""
        parts = self._where + self._with_columns + self._group_by + list(self._select or ())
        parts += [expression for _, expression in self._aggs if expression is not None]
        parts += [expression for expression in self._order if expression is not None]
        return frozenset().union(*(part.referenced_fields() for part in parts))

    @property
    def reads_keys(self) -> bool:
        """Whether partial() needs record keys; if not, partial_of_values() does the same work
        on values alone (an LMDB cursor reads values without keys ~0.05 us/record faster)."""
        return self._needs_keys

    def partial(self, pairs: Iterable[tuple[bytes, bytes]], decode: Callable[[bytes], object]) -> tuple[object, int]:
        """Run over (key, raw msgpack value) pairs; returns (msgpack-safe partial, records read).

        `decode` turns a raw value into a record; if it has a `decode_batch(list of raw) -> list`
        method (MsgpackDecoder does), that is called once per batch instead. Raises
        EvaluationError for a record whose values do not fit an operator; whatever `decode`
        raises passes through.
        """
        if self._needs_keys:
            return self._partial(self._batches(pairs, decode))
        return self._partial(self._value_batches(map(_second, pairs), decode))

    def partial_of_values(self, raws: Iterable[bytes], decode: Callable[[bytes], object]) -> tuple[object, int]:
        """partial() over raw values alone; only when not `reads_keys` (AssertionError otherwise)."""
        assert not self._needs_keys, "this query reads record keys: use partial()"
        return self._partial(self._value_batches(raws, decode))

    def _partial(self, batches: Iterator[Batch]) -> tuple[object, int]:
        collector: _Groups | _Rows = _Groups(self) if self.plan.aggregated else _Rows(self)
        scanned = 0
        if self.plan.limit == 0:
            return collector.partial(), scanned
        for batch in batches:
            scanned += batch.size
            prepared = self._prepare(batch)
            if prepared is not None and collector.add(prepared):
                break
        return collector.partial(), scanned

    def out_of_range_error(self, partial: object) -> EvaluationError:
        """Why msgpack could not pack this query's `partial`: the first int outside the range results
        carry (a computed column, a group key or min/max of one), named by the output column it is in."""
        plan = self.plan
        places: list[tuple[str, object]] = []
        if plan.aggregated:
            for keys, wires in _part(partial, "groups"):
                places += [(f"group key {name}", value) for (name, _), value in zip(plan.group_by, keys)]
                places += [(f"aggregate {name}", wire) for (name, _, _), wire in zip(plan.aggs, wires)]
        else:
            for _, order, row in _part(partial, "rows"):
                places += [(f"order_by {item.text}", value) for item, value in zip(plan.order_by, order)]
                places += list(zip(plan.columns, row) if isinstance(row, list) else row.items())
        for place, value in places:
            found = int_past_64_bits(value)
            if found is not None:
                return EvaluationError(f"{place}: {shown_int(found[1])} is an integer outside {WIRE_INT_RANGE}, the "
                                       "range a result can carry (multiply by 1.0 to compute it as a float)")
        return EvaluationError(f"a result value is an integer outside {WIRE_INT_RANGE}, the range a result can carry")

    def merge(self, partials: list[object]) -> list[dict[str, object]]:
        """Final rows from the partials of every shard, the same whatever their order; [] is fine."""
        if self.plan.aggregated:
            return _merge_groups(self, partials)
        return _merge_rows(self, partials)

    def _batches(self, pairs: Iterable[tuple[bytes, bytes]], decode: Callable[[bytes], object]) -> Iterator[Batch]:
        decode_batch: Callable[[list[bytes]], list[object]] | None = getattr(decode, "decode_batch", None)
        chunks = iter(pairs)
        while chunk := list(islice(chunks, BATCH_RECORDS)):
            raws = list(map(_second, chunk))
            records = decode_batch(raws) if decode_batch is not None else list(map(decode, raws))
            yield Batch(records, list(map(_first, chunk)))

    @staticmethod
    def _value_batches(raws: Iterable[bytes], decode: Callable[[bytes], object]) -> Iterator[Batch]:
        decode_batch: Callable[[list[bytes]], list[object]] | None = getattr(decode, "decode_batch", None)
        values = iter(raws)
        while chunk := list(islice(values, BATCH_RECORDS)):
            yield Batch(decode_batch(chunk) if decode_batch is not None else list(map(decode, chunk)), None)

    def _prepare(self, batch: Batch) -> Batch | None:
        """where, then with_columns; None when no record is left."""
        for term in self._where:
            values = term(batch)
            keep = values if batch.types_of(values) <= _BOOLS else list(map(operator.is_, values, repeat(True)))
            if not all(keep):
                if not any(keep):
                    return None
                batch = batch.subset(keep)
        for expression in self._with_columns:
            batch.computed.append(expression(batch))
        return batch


def _conjuncts(node: Node | None) -> list[Node]:
    if node is None:
        return []
    if isinstance(node, Logical) and node.operator == "and":
        return list(node.operands)
    return [node]


class _GroupIndex(dict[Any, int]):
    """group key -> group id; a new key gets the next id from C-level lookups via __missing__.

    Raw mode: while every key is str, bytes or null (none of which equals a number or a bool),
    raw values are identity keys already, and a value of any other type cannot find an existing
    group, so it reaches __missing__, which sets `unsafe`. The caller then rolls the batch's new
    groups back and switches to identity keys for good.
    """

    def __init__(self) -> None:
        super().__init__()
        self.order: list[Any] = []
        self.raw = True
        self.unsafe = False

    def __missing__(self, key: Any) -> int:
        if self.raw and not (key.__class__ in _RAW_SAFE or (
                key.__class__ is tuple and all(part.__class__ in _RAW_SAFE for part in key))):
            self.unsafe = True
        group = self[key] = len(self.order)
        self.order.append(key)
        return group

    def rollback(self, mark: int) -> None:
        """Forget the groups created after the first `mark` ones."""
        for key in self.order[mark:]:
            del self[key]
        del self.order[mark:]
        self.unsafe = False


class _Groups:
    def __init__(self, query: CompiledQuery) -> None:
        self.keys = query._group_by
        self.arguments = [expression for _, expression in query._aggs]
        self.rows: Counter[int] = Counter()      # rows per group id, shared by the accumulators
        self.accumulators: list[Accumulator] = [
            make_accumulator(function, None if expression is None else expression.text, self.rows)
            for function, expression in query._aggs]
        self.index = _GroupIndex()

    def add(self, batch: Batch) -> bool:
        groups: list[int] | None = None
        if self.keys:
            groups = self._group_ids(batch, [key(batch) for key in self.keys])
            _count_elements(self.rows, groups)
        else:
            self.rows[0] += batch.size
        for accumulator, argument in zip(self.accumulators, self.arguments):
            if argument is None:
                accumulator.add(groups, None, _NO_TYPES)
            else:
                values = argument(batch)
                accumulator.add(groups, values, batch.types_of(values))
        return False

    def _group_ids(self, batch: Batch, columns: list[list[Any]]) -> list[int]:
        index = self.index
        if index.raw:
            mark = len(index.order)
            try:
                groups = list(map(index.__getitem__, columns[0] if len(columns) == 1 else zip(*columns)))
                if not index.unsafe:
                    return groups
            except TypeError:       # an unhashable list or dict value
                pass
            index.rollback(mark)
            index.raw = False
        identities = [identity_keys(column, batch.types_of(column)) for column in columns]
        return list(map(index.__getitem__, identities[0] if len(identities) == 1 else zip(*identities)))

    def partial(self) -> dict[str, Any]:
        if not self.keys:
            return {"groups": [[[], [accumulator.wire(0) for accumulator in self.accumulators]]]}
        single = len(self.keys) == 1
        return {"groups": [
            [[plain_value(key)] if single else list(map(plain_value, key)),
             [accumulator.wire(group) for accumulator in self.accumulators]]
            for group, key in enumerate(self.index.order)]}

class _Rows:
    def __init__(self, query: CompiledQuery) -> None:
        plan = query.plan
        self.query = query
        self.limit = plan.limit
        self.ordered = bool(plan.order_by)
        self.descending = [item.descending for item in plan.order_by]
        self.order_sources = list(zip((item.column for item in plan.order_by), query._order))
        self.entries: list[list[Any]] = []
        self.seen: dict[Any, list[Any]] | None = {} if plan.distinct else None

    def add(self, batch: Batch) -> bool:
        """Collect the batch's rows; True when no later record can change the result."""
        selected = None if self.query._select is None else [expression(batch) for expression in self.query._select]
        order_columns = [selected[column] if selected is not None and column is not None else _call(expression, batch)
                         for column, expression in self.order_sources]
        rows = _documents(self.query, batch) if selected is None else list(map(list, zip(*selected)))
        orders = list(map(list, zip(*order_columns))) if order_columns else [[]] * batch.size
        assert batch.keys is not None
        new = list(map(list, zip(batch.keys, orders, rows)))
        if self.seen is None:
            self.entries.extend(new)
            count = len(self.entries)
        else:
            for entry in new:
                identity = _row_identity(entry[2])
                known = self.seen.get(identity)
                if known is None or entry[0] < known[0]:
                    self.seen[identity] = entry
            count = len(self.seen)
        if self.limit is None:
            return False
        if not self.ordered:              # the first `limit` rows in key order are the answer
            if count < self.limit:
                return False
            self._keep(self.limit)
            return True
        if count > 2 * self.limit + BATCH_RECORDS:    # amortised: sort once per ~limit new rows
            self._keep(self.limit)
        return False

    def _keep(self, count: int) -> None:
        entries = self.entries if self.seen is None else list(self.seen.values())
        entries = sort_entries(entries, self.descending)[:count]
        if self.seen is None:
            self.entries = entries
        else:
            self.seen = {_row_identity(entry[2]): entry for entry in entries}

    def partial(self) -> dict[str, Any]:
        if self.limit is not None:
            self._keep(self.limit)
        return {"rows": self.entries if self.seen is None else list(self.seen.values())}


def _call(expression: CompiledExpression | None, batch: Batch) -> list[Any]:
    assert expression is not None, "an order_by entry is either an output column or an expression"
    return expression(batch)


def _documents(query: CompiledQuery, batch: Batch) -> list[Any]:
    """Whole-document rows: dicts (decoded fresh, so updated in place) plus computed columns."""
    if query.fields is not None:
        rows = list(map(dict, map(zip, repeat(query.fields), batch.records)))
    elif batch.types_of(batch.records) <= {dict}:
        rows = batch.records
    else:
        rows = [record if record.__class__ is dict else {"_value": record} for record in batch.records]
    for name, column in zip(query.computed_names, batch.computed):
        for row, value in zip(rows, column):
            row[name] = value
    return rows


def _row_identity(row: Any) -> Any:
    if row.__class__ is list:
        return tuple(map(identity_key, row))
    return identity_key(row)


def sort_entries(entries: list[list[Any]], descending: list[bool]) -> list[list[Any]]:
    """Row entries [key, order values, row] sorted by order values (nulls last), then key."""
    entries = sorted(entries, key=_first)
    for index in reversed(range(len(descending))):
        flag = descending[index]
        entries.sort(key=lambda entry: null_last_key(entry[1][index], flag), reverse=flag)
    return entries


def _merge_rows(query: CompiledQuery, partials: list[object]) -> list[dict[str, object]]:
    plan = query.plan
    entries = [entry for partial in partials for entry in _part(partial, "rows")]
    if plan.distinct:
        first: dict[Any, list[Any]] = {}
        for entry in entries:
            identity = _row_identity(entry[2])
            known = first.get(identity)
            if known is None or entry[0] < known[0]:
                first[identity] = entry
        entries = list(first.values())
    entries = sort_entries(entries, [item.descending for item in plan.order_by])
    if plan.limit is not None:
        entries = entries[:plan.limit]
    if plan.select is None:
        return [entry[2] for entry in entries]
    columns = list(plan.columns)
    return [dict(zip(columns, entry[2])) for entry in entries]


def _merge_groups(query: CompiledQuery, partials: list[object]) -> list[dict[str, object]]:
    plan = query.plan
    table: dict[tuple[Any, ...], list[list[Any]]] = {}
    for partial in partials:
        for key_values, wires in _part(partial, "groups"):
            table.setdefault(tuple(map(identity_key, key_values)), []).append(wires)
    if not plan.group_by and not table:
        table[()] = []
    names = [name for name, _ in plan.group_by]
    rows: list[dict[str, object]] = []
    for identity, wire_lists in table.items():
        row: dict[str, object] = dict(zip(names, map(plain_value, identity)))
        for index, (name, function, node) in enumerate(plan.aggs):
            value = row[name] = finish(function, [wires[index] for wires in wire_lists])
            if value.__class__ is int and not WIRE_INT_MIN <= value <= WIRE_INT_MAX:
                raise EvaluationError(f"aggregate {name} = {function}({node.text if node else ''}): the result "
                                      f"{shown_int(value)} is outside {WIRE_INT_RANGE}, the range of a 64-bit integer a "
                                      "result can carry (multiply the field by 1.0 to sum it as a float)")
        rows.append(row)
    for name in reversed(names):
        rows.sort(key=lambda row: null_last_key(row[name], False))
    for item in reversed(plan.order_by):
        rows.sort(key=lambda row: null_last_key(row[item.text], item.descending), reverse=item.descending)
    return rows if plan.limit is None else rows[:plan.limit]


def _part(partial: object, kind: str) -> list[Any]:
    assert isinstance(partial, dict) and kind in partial, f"not a partial of this query: {type(partial).__name__}"
    part = partial[kind]
    assert isinstance(part, list)
    return part
