r"""Tokens of the expression language (the parser is expressions.py).

Kinds: number (12, 1.5, 2e-3; no leading dot), string ('single' or "double" quoted, escapes
\\ \' \" \n \r \t \0 \uXXXX), name (identifier), quoted (`back quoted` name, `` for a `),
keyword (and or not in is null true false, any case; text lower-cased), op, and a final end.
Every token has its 1-based column; errors are QueryError with that column.
"""
from __future__ import annotations

import dataclasses

from shoal.node.compute.errors import QueryError

KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})
_NUMBER_CHARS_MAX = 400      # keeps int() far from Python's 4,300-digit conversion limit
_TOKEN_SHOWN_CHARS_MAX = 24
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "0": "\0"}
_TWO_CHAR = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_ONE_CHAR = frozenset("+-*/%()<>=,.")
_HINTS = {"&&": "use 'and'", "||": "use 'or'", "!": "use 'not' or '!='"}
_DIGITS = frozenset("0123456789")   # ASCII only: str.isdigit() is also true for '²', which int() refuses


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    kind: str          # number, string, name (identifier), quoted (back-quoted name), keyword, op, end
    text: str          # source text (keywords in lower case)
    value: object      # number value, string contents, or name
    position: int      # 1-based column
    start: int         # 0-based offsets into the expression
    end: int


def show(text: str) -> str:
    """A token as messages quote it: 'x', shortened when long."""
    if len(text) > _TOKEN_SHOWN_CHARS_MAX:
        text = text[:_TOKEN_SHOWN_CHARS_MAX] + "..."
    return repr(text)


def error(problem: str, text: str, position: int) -> QueryError:
    """A QueryError at a 1-based column of `text`."""
    return QueryError(problem, position=position, expression=text)


def tokenize(text: str) -> list[Token]:
    """The tokens of an expression, ending with an `end` token. Raises QueryError."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
            continue
        if char in _DIGITS:
            token = _number(text, index)
        elif char in "'\"":
            token = _string(text, index)
        elif char == "`":
            token = _quoted_name(text, index)
        elif char.isalpha() or char == "_":
            end = index + 1
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            word = text[index:end]
            kind = "keyword" if word.lower() in KEYWORDS else "name"
            token = Token(kind, word.lower() if kind == "keyword" else word, word, index + 1, index, end)
        elif text[index:index + 2] in _TWO_CHAR:
            token = Token("op", text[index:index + 2], None, index + 1, index, index + 2)
        elif char in _ONE_CHAR:
            token = Token("op", char, None, index + 1, index, index + 1)
        else:
            hint = _HINTS.get(char, "")
            raise error(f"unexpected character {show(char)}" + (f"; {hint}" if hint else ""), text, index + 1)
        if token.text in _HINTS:
            raise error(f"{show(token.text)} is not an operator; {_HINTS[token.text]}", text, token.position)
        tokens.append(token)
        index = token.end
    tokens.append(Token("end", "", None, len(text) + 1, len(text), len(text)))
    return tokens


def _number(text: str, start: int) -> Token:
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    is_float = False
    if end < len(text) and text[end] == "." and end + 1 < len(text) and text[end + 1] in _DIGITS:
        is_float = True
        end += 1
        while end < len(text) and text[end] in _DIGITS:
            end += 1
    if end < len(text) and text[end] in "eE":
        exponent = end + 1
        if exponent < len(text) and text[exponent] in "+-":
            exponent += 1
        if exponent < len(text) and text[exponent] in _DIGITS:
            is_float = True
            end = exponent
            while end < len(text) and text[end] in _DIGITS:
                end += 1
    if end < len(text) and (text[end].isalnum() or text[end] in "_."):
        raise error(f"malformed number {show(text[start:end + 1])}", text, start + 1)
    literal = text[start:end]
    if len(literal) > _NUMBER_CHARS_MAX:
        raise error(f"number is {len(literal)} characters long, at most {_NUMBER_CHARS_MAX}", text, start + 1)
    value: int | float = float(literal) if is_float else int(literal)
    if is_float and value in (float("inf"), float("-inf")):
        raise error(f"number {show(literal)} is too large for a float", text, start + 1)
    return Token("number", literal, value, start + 1, start, end)


def _string(text: str, start: int) -> Token:
    quote = text[start]
    parts: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == quote:
            return Token("string", text[start:index + 1], "".join(parts), start + 1, start, index + 1)
        if char == "\\":
            escape = text[index + 1:index + 2]
            if escape == "u":
                digits = text[index + 2:index + 6]
                if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise error("\\u needs 4 hex digits", text, index + 1)
                parts.append(chr(int(digits, 16)))
                index += 6
                continue
            if escape not in _ESCAPES:
                raise error(f"unknown escape '\\{escape}' in a string", text, index + 1)
            parts.append(_ESCAPES[escape])
            index += 2
            continue
        parts.append(char)
        index += 1
    raise error(f"unterminated string (missing closing {quote})", text, start + 1)


def _quoted_name(text: str, start: int) -> Token:
    parts: list[str] = []
    index = start + 1
    while index < len(text):
        if text[index] == "`":
            if text[index + 1:index + 2] == "`":      # `` stands for one back quote
                parts.append("`")
                index += 2
                continue
            name = "".join(parts)
            if not name:
                raise error("empty back-quoted name", text, start + 1)
            return Token("quoted", text[start:index + 1], name, start + 1, start, index + 1)
        parts.append(text[index])
        index += 1
    raise error("unterminated back-quoted name (missing closing `)", text, start + 1)
