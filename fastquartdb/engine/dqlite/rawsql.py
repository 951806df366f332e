"""Raw SQL over dqlite: what the transport needs to know of a statement's text.

The sandbox's rules are not checked here: the transport runs every raw statement
through the engine's own authorizer first (:func:`fastquartdb.engine.sandbox.check_statement`).
This module splits a statement into tokens the way SQLite's tokenizer does (a
quoted name is the same name as a bare one; nothing inside a string or a comment
is mistaken for a keyword), tells how a statement must be sent to dqlite
(:func:`classify`), and turns ``:name`` placeholders into ``?N``, because dqlite
binds parameters by position only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...protocol.errors import ProgrammingError
from ..sandbox import ARGUMENT_PRAGMAS

__all__ = [
    "DML_WORDS",
    "ROW_WORDS",
    "TRANSACTION_WORDS",
    "Statement",
    "Token",
    "classify",
    "first_word",
    "number_named",
    "placeholders",
    "tokenize",
]

TRANSACTION_WORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})
ROW_WORDS = frozenset({"SELECT", "WITH", "PRAGMA", "VALUES", "EXPLAIN"})
DML_WORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})

# One alternative per token kind, in the order SQLite's tokenizer tries them. An
# unterminated quote or comment runs to the end, as in SQLite (which then refuses it).
_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\n\f\r]+)
  | (?P<comment>--[^\n]*|/\*(?:.|\n)*?(?:\*/|\Z))
  | (?P<str>'(?:[^']|'')*(?:'|\Z))
  | (?P<id>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
  | (?P<var>\?[0-9]*|[:@$][A-Za-z0-9_$\u0080-\U0010ffff]+)
  | (?P<num>0[xX][0-9A-Fa-f]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
  | (?P<op>.)
    """,
    re.X | re.S,
)


@dataclass(frozen=True)
class Token:
    """One SQL token: ``kind`` (word, id, str, var, num, op), its text and where it starts."""

    kind: str
    text: str
    start: int

    @property
    def name(self) -> str:
        """A word or a quoted name as SQLite reads it (unquoted, ASCII-lowercased)."""
        text = self.text
        if self.kind in ("id", "str") and len(text) >= 2:
            close = {"[": "]"}.get(text[0], text[0])
            inner = text[1:-1] if text.endswith(close) else text[1:]
            text = inner if close == "]" else inner.replace(close * 2, close)
        return text.translate(_ASCII_LOWER)

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql`` without whitespace and comments."""
    tokens = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            tokens.append(Token(kind, match.group(), match.start()))
    return tokens


def first_word(sql: str) -> str:
    """The statement's first keyword, upper-cased (``""`` if it starts otherwise)."""
    tokens = tokenize(sql)
    return tokens[0].text.upper() if tokens and tokens[0].kind == "word" else ""


@dataclass(frozen=True)
class Statement:
    """How a raw statement must be sent to dqlite.

    ``writes``: it changes rows (``INSERT``/``UPDATE``/``DELETE``/``REPLACE``, also
    after a ``WITH``) or sets something (``PRAGMA x = v``; ``PRAGMA x(v)`` but for the
    pragmas that only read); such a PRAGMA answers no rows and goes out as an EXEC.
    ``returns_rows``: it answers rows (a read, or a write with ``RETURNING``).
    dqlite 1.11 applies a write only through EXEC; a QUERY that writes outside an
    explicit transaction is never replicated and leaves the leader's WAL broken
    (go-dqlite#192). A write that returns rows therefore runs as a QUERY inside
    ``BEGIN IMMEDIATE`` ... ``COMMIT``, whose COMMIT goes through Raft.
    """

    word: str
    writes: bool
    returns_rows: bool


def classify(sql: str) -> Statement:
    """What ``sql`` does, from its tokens (see :class:`Statement`)."""
    tokens = tokenize(sql)
    word = tokens[0].text.upper() if tokens and tokens[0].kind == "word" else ""
    main = word
    depth = 0
    returning = False
    for token in tokens[1:]:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.kind == "word":
            upper = token.text.upper()
            if upper == "RETURNING":
                returning = True
            elif word == "WITH" and main == "WITH" and upper in (DML_WORDS | {"SELECT", "VALUES"}):
                main = upper  # the statement after the common table expressions
    writes = main in DML_WORDS
    returns_rows = returning or (word in ROW_WORDS and main not in DML_WORDS)
    if word == "PRAGMA":
        # "PRAGMA x = v" sets (and answers no rows: as a QUERY dqlite fails it with "not
        # an error" after running it); "PRAGMA x(arg)" reads only for ARGUMENT_PRAGMAS.
        name, setter = _pragma(tokens)
        writes = setter == "=" or (setter == "(" and name not in ARGUMENT_PRAGMAS)
        returns_rows = not writes
    return Statement(word, writes, returns_rows)


def _pragma(tokens: list[Token]) -> tuple[str, str | None]:
    """A PRAGMA's name and the token that gives it a value (``=`` or ``(``), if any."""
    rest = tokens[1:]
    if len(rest) >= 3 and rest[1].text == ".":
        rest = rest[2:]  # schema.name
    if not rest:
        return "", None
    following = rest[1].text if len(rest) > 1 else None
    return rest[0].name, following if following in ("=", "(") else None


def placeholders(sql: str) -> tuple[list[str], bool]:
    """The named placeholders of ``sql`` (``:name``, ``@name``, ``$name``) in order of first
    use, and whether it has positional ones (``?``); quotes and comments are skipped.

    Example::

        >>> placeholders("SELECT :a, ':b' -- :c\\n WHERE x = @a OR y = ?")
        (['a'], True)
    """
    names: list[str] = []
    positional = False
    for token in tokenize(sql):
        if token.kind != "var":
            continue
        if token.text[0] == "?":
            positional = True
        elif token.text[1:] not in names:
            names.append(token.text[1:])
    return names, positional


def number_named(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """``:name`` placeholders to ``?N`` (dqlite binds by position only)."""
    order: list[str] = []
    out: list[str] = []
    last = 0
    for token in tokenize(sql):
        if token.kind != "var" or token.text[0] == "?":
            continue
        name = token.text[1:]
        if name not in params:
            raise ProgrammingError(f"You did not supply a value for binding parameter :{name}.")
        if name not in order:
            order.append(name)
        out.append(sql[last : token.start])
        out.append(f"?{order.index(name) + 1}")
        last = token.start + len(token.text)
    out.append(sql[last:])
    return "".join(out), [params[name] for name in order]
