"""The compute layer's pure core: expressions, aggregates, query plans and schemas.

- `expressions`  parse_expression: recursive-descent parser (tokens from `tokens`) to the AST of `syntax`
- `columns`      compile_expression: the AST as column functions over a `batch.Batch`; evaluate(): one record
- `vectors`      the operators' column functions: C-level fast paths chosen by the types in a batch
- `operators`    what each operator and function does to values (the reference semantics)
- `aggregates`   count, sum, min, max, mean, count_distinct: mergeable states (`exact`: exact sums)
- `spec`         parse_spec: the query spec dict -> Plan
- `query`        validate_spec, compile_query -> CompiledQuery: partial() per shard, merge() of partials
- `schema`       Schema: typed datasets, documents <-> positional records
- `values`       identity keys, the total order, msgpack-safe ints

Errors: QueryError (bad spec or expression, one line with the column), EvaluationError (a
record does not fit an operator), SchemaError (bad schema), RecordError (a document does not fit
its schema). Nothing here does I/O or imports the node.
"""
from __future__ import annotations

from shoal.node.compute.errors import EvaluationError, QueryError
from shoal.node.compute.query import CompiledQuery, MsgpackDecoder, compile_query, validate_spec
from shoal.node.compute.schema import RecordError, Schema, SchemaError

__all__ = [
    "CompiledQuery", "EvaluationError", "MsgpackDecoder", "QueryError", "RecordError", "Schema", "SchemaError",
    "compile_query", "validate_spec",
]
