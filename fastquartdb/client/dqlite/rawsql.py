"""Raw SQL over dqlite: what the transport needs to know of a statement's text.

The sandbox's rules are not checked here: the transport runs every raw statement
through the engine's own authorizer first (:func:`fastquartdb.engine.sandbox.check_statement`).
This module only tells a statement's kind by its first word (outside comments),
and turns ``:name`` placeholders into ``?N``, because dqlite binds by position only.
"""

from __future__ import annotations

import re
from typing import Any

from ...protocol.errors import ProgrammingError

__all__ = [
    "DML_WORDS",
    "ROW_WORDS",
    "TRANSACTION_WORDS",
    "first_word",
    "number_named",
]

TRANSACTION_WORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})
ROW_WORDS = frozenset({"SELECT", "WITH", "PRAGMA", "VALUES", "EXPLAIN"})
DML_WORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")


def _skip_leading(sql: str) -> int:
    """Where the first token starts, after whitespace and comments."""
    match = _LEADING.match(sql)
    return match.end() if match else 0


def first_word(sql: str) -> str:
    """The statement's first keyword, upper-case ("" if none)."""
    match = _WORD.match(sql, _skip_leading(sql))
    return match.group(0).upper() if match else ""


def _scan(sql: str) -> list[tuple[int, int]]:
    """Spans of ``sql`` outside quotes and comments."""
    spans: list[tuple[int, int]] = []
    i = start = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[" or sql.startswith("--", i) or sql.startswith("/*", i):
            spans.append((start, i))
            if ch in "'\"`[":
                close = "]" if ch == "[" else ch
                j = sql.find(close, i + 1)
                while j != -1 and close != "]" and j + 1 < n and sql[j + 1] == close:
                    j = sql.find(close, j + 2)
                i = n if j == -1 else j + 1
            elif ch == "-":
                j = sql.find("\n", i)
                i = n if j == -1 else j + 1
            else:
                j = sql.find("*/", i + 2)
                i = n if j == -1 else j + 2
            start = i
        else:
            i += 1
    spans.append((start, n))
    return spans


_NAMED = re.compile(r"[:@$]([A-Za-z_][A-Za-z0-9_]*)")


def number_named(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """``:name`` placeholders to ``?N`` (dqlite binds by position only)."""
    order: list[str] = []
    out: list[str] = []
    last = 0
    for begin, end in _scan(sql):
        for match in _NAMED.finditer(sql, begin, end):
            name = match.group(1)
            if name not in params:
                raise ProgrammingError(f"You did not supply a value for binding parameter :{name}.")
            if name not in order:
                order.append(name)
            out.append(sql[last : match.start()])
            out.append(f"?{order.index(name) + 1}")
            last = match.end()
    out.append(sql[last:])
    return "".join(out), [params[name] for name in order]
