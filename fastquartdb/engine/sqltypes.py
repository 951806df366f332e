"""Column types: which declared types we accept and how their values are stored.

A declared type keeps the user's spelling in the table (``VARCHAR(80)``,
``JSON``) so other tools see it. Each maps to one of SQLite's five affinities
and to a *kind* that tells the models layer how to convert values:
``bool`` (stored 0/1), ``date`` / ``datetime`` (ISO 8601 text, timezone kept)
and ``json`` (JSON text); everything else is stored as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol.errors import ValidationError, brief

__all__ = ["KINDS", "SqlType", "affinity_of", "parse_type"]

KINDS = ("plain", "bool", "date", "datetime", "json")

# base name -> kind; the affinity follows from the name by SQLite's own rules
_BASES: dict[str, str] = {
    "INTEGER": "plain",
    "INT": "plain",
    "BIGINT": "plain",
    "SMALLINT": "plain",
    "TINYINT": "plain",
    "MEDIUMINT": "plain",
    "TEXT": "plain",
    "VARCHAR": "plain",
    "CHAR": "plain",
    "NCHAR": "plain",
    "NVARCHAR": "plain",
    "CHARACTER": "plain",
    "CLOB": "plain",
    "REAL": "plain",
    "FLOAT": "plain",
    "DOUBLE": "plain",
    "DOUBLE PRECISION": "plain",
    "BLOB": "plain",
    "NUMERIC": "plain",
    "DECIMAL": "plain",
    "BOOLEAN": "bool",
    "BOOL": "bool",
    "DATE": "date",
    "DATETIME": "datetime",
    "TIMESTAMP": "datetime",
    "JSON": "json",
    "JSON TEXT": "json",
}

_TYPE_RE = re.compile(
    r"^\s*([A-Za-z]+(?:\s+[A-Za-z]+)?)\s*(?:\(\s*([0-9]+)\s*(?:,\s*([0-9]+)\s*)?\))?\s*$",
    re.ASCII,
)


@dataclass(frozen=True)
class SqlType:
    """A checked column type.

    Attributes:
        declared: the type as written into ``CREATE TABLE`` (normalised spelling).
        affinity: SQLite's storage affinity (INTEGER, TEXT, REAL, BLOB, NUMERIC).
        kind: how values convert: plain, bool, date, datetime or json.
    """

    declared: str
    affinity: str
    kind: str


def parse_type(text: object) -> SqlType:
    """Check a declared column type and return what it means.

    Raises:
        ValidationError: the type is not one we know, e.g. ``"STRNG"``.

    Example::

        >>> parse_type("varchar(80)")
        SqlType(declared='VARCHAR(80)', affinity='TEXT', kind='plain')
    """
    if not isinstance(text, str):
        raise ValidationError(f"column type must be a string such as 'INTEGER', got {brief(text)}")
    match = _TYPE_RE.match(text)
    base = " ".join(match.group(1).upper().split()) if match else ""
    if not match or base not in _BASES:
        known = ", ".join(sorted(_BASES))
        raise ValidationError(
            f"unknown column type {brief(text)} (known: {known}; sizes like VARCHAR(80))"
        )
    kind = _BASES[base]
    if kind == "json":
        # Declared "JSON TEXT", not "JSON": a bare JSON type has NUMERIC affinity, which
        # would turn the text 1.0 into the integer 1 and round integers beyond 64 bits.
        base = "JSON TEXT"
    size, scale = match.group(2), match.group(3)
    declared = base
    if size is not None:
        declared += f"({size},{scale})" if scale is not None else f"({size})"
    return SqlType(declared, affinity_of(declared), kind)


def affinity_of(declared: str) -> str:
    """SQLite's own affinity rules (section 3.1 of the datatype page) for any declared type."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"
