"""``--where`` text to the protocol's condition form, with the model filters' operator set.

Grammar (keywords and operators case-insensitive)::

    condition := column op value
               | column [NOT] IN ( [value {, value}] )
               | column BETWEEN value AND value
               | column IS [NOT] NULL
    op        := = == != <> < <= > >= LIKE NOT LIKE GLOB IS IS NOT
    value     := integer | float | 'text' | "text" | NULL | TRUE | FALSE   (quotes doubled inside)

A column is a plain identifier; it is checked against the live table by the
engine. ``TRUE``/``FALSE`` are booleans, for BOOLEAN columns (the command
checks the column's type: see ``commands._conditions``). Anything else (a ``;``, a parenthesis where an operator belongs, a
bare word where a value belongs, trailing text) is a :class:`WhereSyntaxError`
naming the position, so nothing but a column, a whitelisted operator and
bound values ever leaves this module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..engine import OPERATORS

__all__ = ["WhereSyntaxError", "parse_param", "parse_where"]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![A-Za-z0-9_])
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<symbol><=|>=|<>|!=|==|=|<|>|\(|\)|,)
    """,
    re.VERBOSE,
)

# Operators spelled with words; the symbol ones come straight from OPERATORS.
_WORD_OPERATORS = sorted(
    (tuple(name.split()) for name in OPERATORS if name[0].isalpha()), key=len, reverse=True
)
_NULL_OPERATORS = frozenset({"=", "!=", "IS", "IS NOT"})
_BOOLEANS = {"TRUE": True, "FALSE": False}


class WhereSyntaxError(ValueError):
    """A ``--where`` (or ``-p``) text that is not a condition this CLI accepts."""


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, word, symbol; "bad": text holds why it is not a token
    text: str
    pos: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            # Reported only when the parser gets here, so that an earlier mistake is named first.
            if text[pos] in "'\"":
                message = f"unterminated quoted string at position {pos + 1}"
            else:
                message = f"unexpected {text[pos]!r} at position {pos + 1}"
            tokens.append(_Token("bad", message, pos))
            break
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _literal(token: _Token) -> Any:
    """The Python value of a value token, or None if the token is not a value."""
    if token.kind == "number":
        if re.fullmatch(r"[-+]?\d+", token.text):
            value = int(token.text)
            if not _INT_MIN <= value <= _INT_MAX:
                raise WhereSyntaxError(
                    f"integer {token.text} at position {token.pos + 1} does not fit SQLite's "
                    "64-bit INTEGER; quote it to compare as text"
                )
            return value
        return float(token.text)
    if token.kind == "string":
        quote = token.text[0]
        return token.text[1:-1].replace(quote * 2, quote)
    raise AssertionError(token)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> _Token | None:
        token = self.tokens[self.index] if self.index < len(self.tokens) else None
        if token is not None and token.kind == "bad":
            raise WhereSyntaxError(token.text)
        return token

    def take(self) -> _Token | None:
        token = self.peek()
        if token is not None:
            self.index += 1
        return token

    def describe(self, token: _Token | None) -> str:
        if token is None:
            return "end of text"
        return f"{token.text!r} at position {token.pos + 1}"

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == word:
            self.index += 1
            return True
        return False

    def expect_symbol(self, symbol: str, after: str) -> None:
        token = self.take()
        if token is None or token.kind != "symbol" or token.text != symbol:
            raise WhereSyntaxError(f"expected {symbol!r} {after}, got {self.describe(token)}")

    def column(self) -> str:
        token = self.take()
        if token is None or token.kind != "word":
            raise WhereSyntaxError(
                f"expected a column name first, got {self.describe(token)}; "
                'write conditions as: column operator value, e.g. "age > 20"'
            )
        return token.text

    def operator(self) -> str:
        token = self.peek()
        if token is not None and token.kind == "symbol" and token.text in OPERATORS:
            self.index += 1
            return OPERATORS[token.text]
        for words in _WORD_OPERATORS:
            found = self.tokens[self.index : self.index + len(words)]
            if len(found) == len(words) and all(
                t.kind == "word" and t.text.upper() == w for t, w in zip(found, words)
            ):
                self.index += len(words)
                return OPERATORS[" ".join(words)]
        raise WhereSyntaxError(
            f"expected an operator after the column, got {self.describe(token)} "
            f"(operators: {' '.join(OPERATORS)})"
        )

    def value(self, after: str) -> Any:
        token = self.take()
        if token is not None and token.kind in ("number", "string"):
            return _literal(token)
        if token is not None and token.kind == "word":
            word = token.text.upper()
            if word == "NULL":
                return None
            if word in _BOOLEANS:
                return _BOOLEANS[word]
        hint = ""
        if token is not None and token.kind == "word":
            hint = f"; to compare with the text {token.text}, quote it: '{token.text}'"
        raise WhereSyntaxError(
            f"expected a value (a number, a 'quoted string', NULL, true or false) {after}, "
            f"got {self.describe(token)}{hint}"
        )

    def condition(self) -> list[Any]:
        column = self.column()
        op = self.operator()
        value: Any
        if op in ("IN", "NOT IN"):
            self.expect_symbol("(", f"after {op}")
            values: list[Any] = []
            token = self.peek()
            if token is not None and token.kind == "symbol" and token.text == ")":
                self.index += 1
            else:
                while True:
                    values.append(self.value(f"in the {op} list"))
                    token = self.take()
                    if token is not None and token.kind == "symbol" and token.text == ")":
                        break
                    if token is None or token.kind != "symbol" or token.text != ",":
                        raise WhereSyntaxError(
                            f"expected ',' or ')' in the {op} list, got {self.describe(token)}"
                        )
            value = values
        elif op == "BETWEEN":
            low = self.value("after BETWEEN")
            if not self.keyword("AND"):
                raise WhereSyntaxError(
                    f"expected AND in BETWEEN low AND high, got {self.describe(self.peek())}"
                )
            value = [low, self.value("after BETWEEN ... AND")]
        else:
            value = self.value(f"after {op}")
            if value is None and op not in _NULL_OPERATORS:
                raise WhereSyntaxError(
                    f"{op} NULL is never true; use IS NULL or IS NOT NULL to test for NULL"
                )
        token = self.peek()
        if token is not None:
            raise WhereSyntaxError(
                f"unexpected {self.describe(token)} after the condition; give one condition per "
                "--where (several --where options are ANDed)"
            )
        return [column, op, value]


def parse_where(text: str) -> list[Any]:
    """Parse one ``--where`` text into ``[column, operator, value]``.

    Example::

        >>> parse_where("age BETWEEN 18 AND 65")
        ['age', 'BETWEEN', [18, 65]]

    Raises:
        WhereSyntaxError: the text is not one condition of the grammar above.
    """
    return _Parser(text).condition()


_PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_param(item: str) -> tuple[str, Any]:
    """A ``-p`` item: ``NAME=VALUE`` binds the text VALUE exactly as typed; ``NAME:=VALUE``
    binds a JSON value: a number, ``true``/``false``, ``null`` or a ``"string"``.

    A leading ``:``, ``@`` or ``$`` on NAME is dropped (``-p :min=5`` is ``-p min=5``).

    Example::

        >>> parse_param("z=007"), parse_param("z:=7"), parse_param("z:=null")
        (('z', '007'), ('z', 7), ('z', None))

    Raises:
        WhereSyntaxError: not ``NAME=VALUE`` / ``NAME:=VALUE``, or not a JSON scalar after ``:=``.
    """
    name, sep, value = item.partition("=")
    typed = name.endswith(":")
    if typed:
        name = name[:-1]
    name = name.strip().lstrip(":@$")
    if not sep or _PARAM_NAME_RE.fullmatch(name) is None:
        raise WhereSyntaxError(
            "expected NAME=TEXT or NAME:=NUMBER for a :NAME placeholder, e.g. -p name=alice "
            "or -p min:=18"
        )
    if not typed:
        return name, value
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = ...
    if parsed is ... or isinstance(parsed, (list, dict)) or parsed != parsed:
        raise WhereSyntaxError(
            f'after {name}:= comes a JSON value: a number, true, false, null or a "string" '
            f"(got {value!r}); for text write {name}={value}"
        )
    if (
        isinstance(parsed, int)
        and not isinstance(parsed, bool)
        and not _INT_MIN <= parsed <= _INT_MAX
    ):
        raise WhereSyntaxError(f"integer {value} does not fit SQLite's 64-bit INTEGER")
    return name, parsed
