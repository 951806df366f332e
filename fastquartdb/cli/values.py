"""Input values to column values: what ``fqdb insert`` stores, checked as the models check it.

Each column of the live table gets the models' own :class:`~fastquartdb.models.Column`
for its declared type, and every value goes through that column's ``to_db``:
the one check that also refuses ``User.insert({"age": "old"})``. So an INTEGER
column takes integers, a BOOLEAN column true/false, a DATE column ISO dates,
and the message is the models' (``column 'age' of table 'customer' is INTEGER
and takes an integer, got str 'old'``).

Before the check, input is read the way a user of each format means it:

* **CSV** fields are text: one that spells a number becomes that number in
  an INTEGER, REAL or NUMERIC column (``"42"`` is 42, ``"notanumber"`` is
  refused), ``true``/``false``/``1``/``0`` (any case) become booleans in a
  BOOLEAN column.
* A **JSON column** takes JSON text (what ``fqdb rows`` prints for it), which
  must parse; a JSON number or boolean is stored as JSON too.
* In a column of **BLOB affinity** (declared BLOB, or with no type: the affinity
  the engine's ``describe`` gives) text written
  as SQLite's literal ``X'00ff'`` is those bytes, so ``fqdb rows --nl`` output
  loads back unchanged.
* A column with **no declared type**, or one the models do not know (another
  tool's ``STRING``, ``UNSIGNED BIG INT``), takes any value and SQLite's
  affinity stores it, as SQLite would: there is no model type to check against
  (and checking by affinity would refuse text in ``STRING``, whose affinity is
  INTEGER).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..engine import parse_type
from ..models import Column
from ..protocol.errors import ValidationError, brief

__all__ = ["ColumnValues"]

_BLOB_LITERAL = re.compile(r"[xX]'((?:[0-9a-fA-F]{2})*)'")
_INTEGER = re.compile(r"\s*[-+]?\d+\s*")
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _csv_number(text: str, integer_only: bool) -> Any:
    if _INTEGER.fullmatch(text):
        return int(text)
    if not integer_only and _NUMBER.fullmatch(text):
        return float(text)
    return text  # left as text: the column's check refuses it (or NUMERIC keeps it)


class _Converter:
    """How one column reads an input value (CSV text or a JSON value) before its check."""

    def __init__(self, table: str, name: str, declared: str, affinity: str) -> None:
        self.name = name
        self.blob = affinity == "BLOB"
        self.column: Column | None = None
        try:
            parse_type(declared)
        except ValidationError:
            pass  # no type, or one only another tool declares: SQLite's affinity decides
        else:
            self.column = Column(declared)
            self.column.name, self.column.table = name, table
        kind = self.column.kind if self.column is not None else "plain"
        self.kind = kind
        self.affinity = affinity

    def _from_text(self, text: str) -> Any:
        """A CSV field as what it spells in this column."""
        if self.kind == "bool":
            return _BOOLEANS.get(text.strip().lower(), text)
        if self.kind == "plain" and self.affinity in ("INTEGER", "REAL", "NUMERIC"):
            return _csv_number(text, integer_only=self.affinity == "INTEGER")
        return text

    def __call__(self, value: Any, text: bool) -> Any:
        if value is None:
            return None
        if self.blob and isinstance(value, str) and (match := _BLOB_LITERAL.fullmatch(value)):
            value = bytes.fromhex(match.group(1))
        column = self.column
        if column is None:
            return value
        if self.kind == "json" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValidationError(
                    f"column {brief(self.name)} of table {brief(column.table)} is JSON and "
                    f"takes JSON text, got str {brief(value)}"
                ) from None
        elif text and isinstance(value, str):
            value = self._from_text(value)
        try:
            return column.to_db(value)
        except ValidationError as exc:
            if self.blob and isinstance(value, str):  # say how bytes are written
                raise ValidationError(f"{exc}; write bytes as X'00ff'") from None
            raise


class ColumnValues:
    """The value checks of one table's columns, from its live schema.

    Args:
        table: the table's name (for messages).
        columns: ``(name, declared type, affinity)`` of each column, as the engine's
            ``describe`` gives them (see :meth:`described`).
    """

    def __init__(self, table: str, columns: Sequence[tuple[str, str, str]]) -> None:
        self._converters: dict[str, Callable[[Any, bool], Any]] = {
            name: _Converter(table, name, declared or "", affinity)
            for name, declared, affinity in columns
        }

    @classmethod
    def described(cls, table: str, description: Mapping[str, Any]) -> ColumnValues:
        """The checks of the table the engine's ``describe`` result ``description`` is of."""
        return cls(table, [(c["name"], c["type"], c["affinity"]) for c in description["columns"]])

    def check(self, column: str, value: Any) -> Any:
        """``value`` (not text) as column ``column`` stores it; a column it does not have
        is left to the engine to name.

        Raises:
            ValidationError: the column does not take the value.
        """
        converter = self._converters.get(column)
        return value if converter is None else converter(value, False)

    def convert(self, values: dict[str, Any], *, text: bool) -> None:
        """Convert and check ``values`` in place; ``text``: they are CSV fields.

        A column the table does not have is left alone (the engine names it).

        Raises:
            ValidationError: a value the column does not take, naming the column and table.
        """
        converters = self._converters
        for name, value in values.items():
            converter = converters.get(name)
            if converter is not None:
                values[name] = converter(value, text)
