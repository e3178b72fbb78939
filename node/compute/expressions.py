r"""Filter and computed-column expressions: tokenizer and recursive-descent parser to a whitelisted AST.

Nothing is eval'ed: `parse_expression` tokenizes (tokens.py) and builds the AST of syntax.py,
which columns.py compiles to Python closures. Grammar, loosest binding first (keywords are case-insensitive)::

    expression := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("==" | "=" | "!=" | "<" | "<=" | ">" | ">=") sum
                       | "is" ["not"] "null" | ["not"] "in" "(" literal ("," literal)* [","] ")"]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := ("-" | "+") unary | primary
    primary    := number | string | "true" | "false" | "null" | "(" expression ")"
                | function "(" [expression ("," expression)*] ")" | path
    path       := name ("." name)*        name := identifier | `back quoted` (`` for a `)

Numbers: 12, 1.5, 2e-3 (no leading dot). Strings take 'single' or "double" quotes and the
escapes \\ \' \" \n \r \t \0 \uXXXX. `_key` (not back-quoted) is the record key;
`` `_key` `` is a field named _key. Comparisons do not chain (`a < b < c` is an error). An
`in` list holds literals (not null: use `is null`). Functions: FUNCTION_ARITY.

Errors are QueryError with the 1-based column of the offending token (the end of the text
counts as one column past it). Limits: EXPRESSION_CHARS_MAX characters; NESTING_DEPTH_MAX
levels of parentheses, calls, `not` and unary minus (the parser recurses once per level, about
eight frames each: 50 levels stay far from Python's recursion limit); TREE_DEPTH_MAX levels of
operators (a chain `a + b + c` nests without recursion; `and`/`or` chains stay flat).
"""
from __future__ import annotations

from collections.abc import Callable

from shoal.node.compute.errors import QueryError
from shoal.node.compute.syntax import (
    Arithmetic, Call, Comparison, Field, InList, IsNull, Literal, Logical, Negate, Node, Not, RecordKey,
    children,
)
from shoal.node.compute.tokens import Token, error, show, tokenize

EXPRESSION_CHARS_MAX = 10_000
NESTING_DEPTH_MAX = 50       # parentheses, calls, not and unary minus inside each other
TREE_DEPTH_MAX = 200         # operators inside each other, chains included

FUNCTION_ARITY: dict[str, tuple[int, int | None]] = {   # name -> (fewest, most; None = any)
    "startswith": (2, 2), "endswith": (2, 2), "contains": (2, 2), "lower": (1, 1),
    "upper": (1, 1), "len": (1, 1), "abs": (1, 1), "round": (1, 2), "coalesce": (1, None),
}
_COMPARISONS = {"==": "==", "=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_SUM_OPERATORS = frozenset({"+", "-"})
_PRODUCT_OPERATORS = frozenset({"*", "/", "%"})


def parse_expression(text: object) -> Node:
    """Parse one expression string to its AST.

    Raises QueryError (problem, 1-based `position`, `expression`) for a non-string, an empty or
    too long text, or anything outside the grammar of the module docstring.
    """
    if not isinstance(text, str):
        raise QueryError(f"expected an expression string, got {type(text).__name__}")
    if len(text) > EXPRESSION_CHARS_MAX:
        raise QueryError(f"expression is {len(text)} characters long, at most {EXPRESSION_CHARS_MAX}")
    root = _Parser(text).parse()
    _check_tree_depth(root, text)
    return root


class _Parser:
    """Recursive descent over the token list; `_depth` bounds the recursion (NESTING_DEPTH_MAX)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    def parse(self) -> Node:
        if self.tokens[0].kind == "end":
            raise error("empty expression", self.text, 1)
        node = self._or()
        token = self._peek()
        if token.kind != "end":
            if token.text == ")":
                raise self._fail("unmatched ')'", token)
            raise self._fail(f"expected an operator or the end of the expression, found {show(token.text)}", token)
        return node

    # --- helpers ---
    def _peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def _next(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def _fail(self, problem: str, token: Token) -> QueryError:
        return error(problem, self.text, token.position)

    def _span(self, start: Token) -> tuple[str, int]:
        """Source text from `start` to the last consumed token, and start's column."""
        end = self.tokens[self.index - 1].end
        return self.text[start.start:end], start.position

    def _enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > NESTING_DEPTH_MAX:
            raise self._fail(f"expression nested more than {NESTING_DEPTH_MAX} levels deep", token)

    def _operand_expected(self, after: Token | None) -> QueryError:
        token = self._peek()
        found = "the end of the expression" if token.kind == "end" else show(token.text)
        if after is None:
            return self._fail(f"expected an operand, found {found}", token)
        if token.kind == "end":
            return self._fail(f"expected an operand after {show(after.text)}", token)
        return self._fail(f"expected an operand after {show(after.text)}, found {found}", token)

    # --- grammar: `after` is the token before the operand being parsed (for error messages) ---
    def _or(self, after: Token | None = None) -> Node:
        return self._logical("or", self._and, after)

    def _and(self, after: Token | None = None) -> Node:
        return self._logical("and", self._not, after)

    def _logical(self, keyword: str, operand: Callable[[Token | None], Node], after: Token | None) -> Node:
        first = self._peek()
        operands = [operand(after)]
        while self._peek().kind == "keyword" and self._peek().text == keyword:
            operands.append(operand(self._next()))
        if len(operands) == 1:
            return operands[0]
        text, position = self._span(first)
        return Logical(keyword, tuple(operands), text, position)

    def _not(self, after: Token | None) -> Node:
        token = self._peek()
        if token.kind == "keyword" and token.text == "not":
            self._next()
            self._enter(token)
            operand = self._not(token)
            self.depth -= 1
            text, position = self._span(token)
            return Not(operand, text, position)
        return self._comparison(after)

    def _comparison(self, after: Token | None) -> Node:
        first = self._peek()
        left = self._arithmetic(after, 1)
        token = self._peek()
        if token.kind == "op" and token.text in _COMPARISONS:
            self._next()
            right = self._arithmetic(token, 1)
            text, position = self._span(first)
            node: Node = Comparison(_COMPARISONS[token.text], left, right, text, position)
        elif token.kind == "keyword" and token.text == "is":
            node = self._is_null(first, left)
        elif token.kind == "keyword" and (token.text == "in" or (
                token.text == "not" and self._peek(1).kind == "keyword" and self._peek(1).text == "in")):
            node = self._in_list(first, left)
        else:
            return left
        following = self._peek()
        if (following.kind == "op" and following.text in _COMPARISONS) or (
                following.kind == "keyword" and following.text in ("is", "in")):
            raise self._fail("comparisons cannot be chained; combine them with 'and'", following)
        return node

    def _is_null(self, first: Token, left: Node) -> Node:
        self._next()
        negated = self._peek().kind == "keyword" and self._peek().text == "not"
        if negated:
            self._next()
        token = self._peek()
        if token.kind != "keyword" or token.text != "null":
            raise self._fail(f"expected 'null' after {'is not' if negated else 'is'!r}", token)
        self._next()
        text, position = self._span(first)
        return IsNull(left, negated, text, position)

    def _in_list(self, first: Token, left: Node) -> Node:
        negated = self._next().text == "not"
        if negated:
            self._next()
        opening = self._peek()
        if opening.text != "(" or opening.kind != "op":
            raise self._fail(f"expected '(' after {'not in' if negated else 'in'!r}", opening)
        self._next()
        values: list[bool | int | float | str] = []
        while True:
            values.append(self._in_literal())
            token = self._peek()
            if token.text not in (",", ")") or token.kind != "op":
                found = "the end of the expression" if token.kind == "end" else show(token.text)
                raise self._fail(f"expected ',' or ')' in the 'in' list, found {found}", token)
            self._next()
            if token.text == ")":
                break
            if self._peek().text == ")" and self._peek().kind == "op":   # a trailing comma
                self._next()
                break
        text, position = self._span(first)
        return InList(left, tuple(values), negated, text, position)

    def _in_literal(self) -> bool | int | float | str:
        token = self._peek()
        negative = token.kind == "op" and token.text == "-" and self._peek(1).kind == "number"
        if negative:
            self._next()
            token = self._peek()
        if token.kind in ("number", "string"):
            self._next()
            value = token.value
            if isinstance(value, str):
                return value
            assert isinstance(value, (int, float))
            return -value if negative else value
        if token.kind == "keyword" and token.text in ("true", "false"):
            self._next()
            return token.text == "true"
        if token.kind == "keyword" and token.text == "null":
            raise self._fail("null in an 'in' list never matches; use 'is null'", token)
        found = "the end of the expression" if token.kind == "end" else show(token.text)
        raise self._fail(f"expected a literal in the 'in' list, found {found}", token)

    def _arithmetic(self, after: Token | None, level: int) -> Node:
        """Left-associative + - (level 1) and * / % (level 2) by precedence climbing."""
        first = self._peek()
        node = self._arithmetic(after, 2) if level == 1 else self._unary(after)
        operators = _SUM_OPERATORS if level == 1 else _PRODUCT_OPERATORS
        while self._peek().kind == "op" and self._peek().text in operators:
            token = self._next()
            right = self._arithmetic(token, 2) if level == 1 else self._unary(token)
            text, position = self._span(first)
            node = Arithmetic(token.text, node, right, text, position)
        return node

    def _unary(self, after: Token | None) -> Node:
        token = self._peek()
        if token.kind == "op" and token.text in ("-", "+"):
            self._next()
            self._enter(token)
            operand = self._unary(token)
            self.depth -= 1
            if token.text == "+":
                return operand
            text, position = self._span(token)
            if isinstance(operand, Literal) and type(operand.value) in (int, float):
                assert isinstance(operand.value, (int, float))
                return Literal(-operand.value, text, position)
            return Negate(operand, text, position)
        return self._primary(after)

    def _primary(self, after: Token | None) -> Node:
        token = self._peek()
        if token.kind in ("number", "string"):
            self._next()
            value = token.value
            assert isinstance(value, (int, float, str))
            return Literal(value, token.text, token.position)
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            self._next()
            constant = {"true": True, "false": False, "null": None}[token.text]
            return Literal(constant, self.text[token.start:token.end], token.position)
        if token.kind == "op" and token.text == "(":
            return self._parenthesised()
        if token.kind == "name" and self._peek(1).kind == "op" and self._peek(1).text == "(":
            return self._call()
        if token.kind in ("name", "quoted"):
            return self._path()
        raise self._operand_expected(after)

    def _parenthesised(self) -> Node:
        opening = self._next()
        self._enter(opening)
        if self._peek().text == ")" and self._peek().kind == "op":
            raise self._fail("empty parentheses", self._peek())
        node = self._or(opening)
        self.depth -= 1
        closing = self._peek()
        if closing.text != ")" or closing.kind != "op":
            found = "the end of the expression" if closing.kind == "end" else show(closing.text)
            raise self._fail(f"expected ')' to close '(' at column {opening.position}, found {found}", closing)
        self._next()
        return node

    def _call(self) -> Node:
        name_token = self._next()
        name = name_token.text.lower()
        if name not in FUNCTION_ARITY:
            known = ", ".join(sorted(FUNCTION_ARITY))
            raise self._fail(f"unknown function {show(name_token.text)} (known: {known})", name_token)
        opening = self._next()
        self._enter(opening)
        arguments: list[Node] = []
        if self._peek().text == ")" and self._peek().kind == "op":
            self._next()
        else:
            separator = opening
            while True:
                arguments.append(self._or(separator))
                separator = self._peek()
                if separator.kind == "op" and separator.text == ")":
                    self._next()
                    break
                if separator.kind != "op" or separator.text != ",":
                    found = "the end of the expression" if separator.kind == "end" else show(separator.text)
                    raise self._fail(f"expected ',' or ')' in the arguments of {name}(), found {found}", separator)
                self._next()
        self.depth -= 1
        fewest, most = FUNCTION_ARITY[name]
        if len(arguments) < fewest or (most is not None and len(arguments) > most):
            wanted = str(fewest) if fewest == most else (f"{fewest} or {most}" if most else f"at least {fewest}")
            plural = "" if wanted == "1" else "s"
            raise self._fail(f"{name}() takes {wanted} argument{plural}, got {len(arguments)}", name_token)
        text, position = self._span(name_token)
        return Call(name, tuple(arguments), text, position)

    def _path(self) -> Node:
        first = self._next()
        if first.kind == "name" and first.text == "_key":
            if self._peek().kind == "op" and self._peek().text == ".":
                raise self._fail("_key is a string and has no fields", self._peek())
            return RecordKey(first.text, first.position)
        names = [str(first.value)]
        while self._peek().kind == "op" and self._peek().text == ".":
            self._next()
            token = self._peek()
            if token.kind not in ("name", "quoted", "keyword"):
                raise self._fail("expected a field name after '.'", token)
            self._next()
            names.append(self.text[token.start:token.end] if token.kind == "keyword" else str(token.value))
        text, position = self._span(first)
        return Field(tuple(names), text, position)


def _check_tree_depth(root: Node, text: str) -> None:
    """Long operator chains nest the tree without recursion in the parser: bound them too."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > TREE_DEPTH_MAX:
            raise error(f"expression is more than {TREE_DEPTH_MAX} operators deep; "
                         "split it with with_columns", text, node.position)
        stack.extend((child, depth + 1) for child in children(node))
