"""Raw SQL over dqlite: the checks the engine's authorizer makes, done on the text.

dqlite offers no authorizer hook, so the ``execute`` op's guards (no transaction
control, no ATTACH, no managed PRAGMA, no load_extension, one statement per
call) look at the statement text, outside quotes and comments. ``:name``
placeholders become ``?N``, because dqlite binds parameters by position only.
"""

from __future__ import annotations

import re
from typing import Any

from ...protocol.errors import ProgrammingError, ValidationError

__all__ = [
    "DML_WORDS",
    "ROW_WORDS",
    "TRANSACTION_WORDS",
    "check_raw_sql",
    "first_word",
    "number_named",
    "placeholders",
]

_GUARDED_PRAGMAS = frozenset(
    {
        "journal_mode",
        "synchronous",
        "wal_autocheckpoint",
        "wal_checkpoint",
        "locking_mode",
        "writable_schema",
        "foreign_keys",
        "query_only",
        "busy_timeout",
        "journal_size_limit",
    }
)
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
    match = _WORD.match(sql, _skip_leading(sql))
    return match.group(0).upper() if match else ""


def check_raw_sql(sql: str) -> None:
    """What the engine's authorizer refuses, checked on the text (dqlite has no authorizer hook)."""
    word = first_word(sql)
    if word in TRANSACTION_WORDS:
        raise ValidationError(
            "refused: transaction control is not allowed in raw SQL: use db.transaction()"
        )
    if word in ("ATTACH", "DETACH"):
        raise ValidationError(
            "refused: ATTACH/DETACH is not allowed: FastQuartDB serves one database"
        )
    lowered = sql.lower()
    if "load_extension" in lowered:
        raise ValidationError("refused: load_extension is not allowed")
    if word == "PRAGMA":
        match = re.match(r"\s*pragma\s+(?:\w+\s*\.\s*)?(\w+)\s*(.?)", lowered[_skip_leading(sql) :])
        if (
            match
            and match.group(1) in _GUARDED_PRAGMAS
            and (match.group(2) in ("=", "(") or match.group(1) == "wal_checkpoint")
        ):
            raise ValidationError(
                f"refused: PRAGMA {match.group(1)} is managed by FastQuartDB and cannot be changed"
            )
    if _has_second_statement(sql):
        raise ValidationError("raw SQL takes one statement per call")


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


def placeholders(sql: str) -> tuple[list[str], bool]:
    """The named placeholders of ``sql`` (``:name``, ``@name``, ``$name``) in order of first
    use, and whether it has positional ones (``?``); quotes and comments are skipped.

    Example::

        >>> placeholders("SELECT :a, ':b' -- :c\\n WHERE x = @a OR y = ?")
        (['a'], True)
    """
    names: list[str] = []
    positional = False
    for begin, end in _scan(sql):
        for match in _NAMED.finditer(sql, begin, end):
            if match.group(1) not in names:
                names.append(match.group(1))
        positional = positional or "?" in sql[begin:end]
    return names, positional


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


def _has_second_statement(sql: str) -> bool:
    """Is there anything but whitespace and comments after the first ``;`` outside quotes?"""
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            j = sql.find(close, i + 1)
            while j != -1 and close != "]" and j + 1 < n and sql[j + 1] == close:
                j = sql.find(close, j + 2)
            if j == -1:
                return False
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j == -1 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j == -1 else j + 2
        elif ch == ";":
            rest = sql[i + 1 :]
            return bool(rest[_skip_leading(rest) :].strip(" ;\t\n"))
        else:
            i += 1
    return False
