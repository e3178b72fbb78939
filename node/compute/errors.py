"""The two errors of the compute layer (re-exported by shoal.node.compute).

ValueError
├── QueryError        bad spec or expression: found before any record is read
└── EvaluationError   a record's values do not fit an operator, found while evaluating
"""
from __future__ import annotations


class QueryError(ValueError):
    """A bad query spec or expression. str() is one line: "where: column 11: expected ...".

    `context` names the spec entry ("where", "aggs[1] (delay)"), `position` is the 1-based
    column in `expression`, `problem` the bare message.
    """

    def __init__(self, problem: str, *, position: int | None = None, expression: str | None = None,
                 context: str | None = None) -> None:
        self.problem = problem
        self.position = position
        self.expression = expression
        self.context = context
        prefix = f"{context}: " if context else ""
        where = f"column {position}: " if position is not None else ""
        super().__init__(f"{prefix}{where}{problem}")

    def within(self, context: str) -> QueryError:
        """The same error, located in spec entry `context` (if it had none yet)."""
        if self.context is not None:
            return self
        return QueryError(self.problem, position=self.position, expression=self.expression, context=context)


class EvaluationError(ValueError):
    """A record's values do not fit an operator, e.g. "cannot compare str with int in `origin > 1`"."""
