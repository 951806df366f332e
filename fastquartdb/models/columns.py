"""``Column``: a declared column, its checks, and the conversion of its values.

Conversion lives here, per column, rather than in process-global sqlite3
adapters: BOOLEAN columns store 0/1 and return bool, DATE/DATETIME store ISO
8601 text (timezone kept) and return ``date``/``datetime``, JSON stores JSON
text and returns dicts and lists.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from ..engine import check_value, parse_type
from ..engine.schema import parse_on_delete, parse_reference
from ..protocol.errors import ValidationError, brief

__all__ = ["Column"]


class Column:
    """A column of a :class:`BaseModel`.

    Args:
        type: the declared type: INTEGER, TEXT, REAL, BLOB, NUMERIC, or an
            alias such as VARCHAR(80), BOOLEAN, DATE, DATETIME, JSON.
        primary_key: part of the primary key (a lone ``INTEGER`` primary key
            is the rowid and is assigned automatically on insert).
        nullable: False adds ``NOT NULL``.
        default: a plain value (written into the table's DDL) or a callable
            (called for each insert that leaves the column out).
        unique: adds a UNIQUE constraint.
        index: creates an index on the column.
        references: ``"table.column"``: a foreign key (enforced); ``fetch(join=...)``
            joins along it.
        on_delete: what deleting the referenced row does: ``"cascade"``, ``"set null"``,
            ``"restrict"``, ``"no action"`` or ``"set default"``.
        check: a CHECK expression on this column only, e.g. ``"age >= 0"``.

    Raises:
        ValidationError: an unknown type, or a default the type cannot hold,
            at class definition.

    Example::

        class User(BaseModel):
            id = Column("INTEGER", primary_key=True)
            email = Column("VARCHAR(200)", nullable=False, unique=True)
            created = Column("DATETIME", default=lambda: datetime.now(timezone.utc))
    """

    __slots__ = (
        "check",
        "default",
        "from_db",
        "index",
        "kind",
        "name",
        "nullable",
        "on_delete",
        "primary_key",
        "references",
        "sql_type",
        "table",
        "to_db",
        "unique",
    )

    def __init__(
        self,
        type: str,
        primary_key: bool = False,
        nullable: bool = True,
        default: Any = None,
        unique: bool = False,
        index: bool = False,
        references: str | None = None,
        on_delete: str | None = None,
        check: str | None = None,
    ) -> None:
        self.sql_type = parse_type(type)
        self.references = references
        if references is not None:
            parse_reference(references)
        self.on_delete = on_delete
        if on_delete is not None:
            if references is None:
                raise ValidationError("on_delete needs references='table.column'")
            parse_on_delete(on_delete)
        self.check = check
        self.kind = self.sql_type.kind
        self.primary_key = bool(primary_key)
        self.nullable = bool(nullable)
        self.unique = bool(unique)
        self.index = bool(index)
        self.default = default
        self.name = ""
        self.table = ""
        to_db = _PLAIN_TO_DB[self.sql_type.affinity] if self.kind == "plain" else _TO_DB[self.kind]
        self.to_db: Callable[[Any], Any] = to_db.__get__(self)
        self.from_db: Callable[[Any], Any] | None = _FROM_DB[self.kind]

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # A data descriptor: on the class it is the Column, on an instance the value.
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return instance.__dict__.get(self.name)

    def __set__(self, instance: object, value: Any) -> None:
        instance.__dict__[self.name] = value

    def __repr__(self) -> str:
        flags = [f for f in ("primary_key", "unique", "index") if getattr(self, f)]
        if not self.nullable:
            flags.append("not null")
        extra = f" {' '.join(flags)}" if flags else ""
        return f"<Column {self.name or '?'} {self.sql_type.declared}{extra}>"

    @property
    def static_default(self) -> Any:
        """The default as stored in the DDL (None for no default or a callable one)."""
        if self.default is None or callable(self.default):
            return None
        return self.to_db(self.default)

    def spec(self) -> dict[str, Any]:
        """This column as an ``ensure_table`` column map."""
        return {
            "name": self.name,
            "type": self.sql_type.declared,
            "primary_key": self.primary_key,
            "nullable": self.nullable,
            "unique": self.unique,
            "index": self.index,
            "default": self.static_default,
            "references": self.references,
            "on_delete": self.on_delete,
            "check": self.check,
        }

    def _where(self) -> str:
        return f"column {brief(self.name)} of table {brief(self.table)}"

    def _bad(self, value: Any, wanted: str) -> ValidationError:
        return ValidationError(
            f"{self._where()} is {self.sql_type.declared} and takes {wanted}, "
            f"got {type(value).__name__} {brief(value)}"
        )

    # to_db per kind: the value as stored; None stays None.

    # Fast paths for the usual value of each affinity; anything else takes _plain_to_db.

    def _integer_to_db(self, value: Any) -> Any:
        if (type(value) is int and _INT_MIN <= value <= _INT_MAX) or value is None:
            return value
        return self._plain_to_db(value)

    def _real_to_db(self, value: Any) -> Any:
        kind = type(value)
        if (kind is float and value == value) or value is None:
            return value
        return self._plain_to_db(value)

    def _text_to_db(self, value: Any) -> Any:
        if type(value) is str or value is None:
            return value
        return self._plain_to_db(value)

    def convert_rows(self, rows: list[list[Any]], index: int) -> None:
        """``to_db`` on ``row[index]`` of every row, in place (bulk inserts: one tight loop)."""
        convert = self.to_db
        fast = _FAST_TYPE.get(self.sql_type.affinity) if self.kind == "plain" else None
        if fast is None:
            for row in rows:
                row[index] = convert(row[index])
            return
        if fast is int:
            low, high = _INT_MIN, _INT_MAX
            for row in rows:
                value = row[index]
                # An int in SQLite's range (and None) is stored as is; the rest goes
                # through to_db, which converts it or says what is wrong.
                if (type(value) is not int or not low <= value <= high) and value is not None:
                    row[index] = convert(value)
            return
        for row in rows:
            value = row[index]
            if type(value) is not fast and value is not None:
                row[index] = convert(value)

    def _plain_to_db(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        value = check_value(value, self._where())  # no SQL value at all: "has type ..."
        accepted, wanted = _ACCEPTED[self.sql_type.affinity]
        # bool is an int to Python, but true in a number column is a caller's mistake.
        if not isinstance(value, accepted) or (isinstance(value, bool) and accepted is not _BLOBS):
            raise self._bad(value, wanted)
        return value

    def _bool_to_db(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int) and value in (0, 1):
            return value
        raise self._bad(value, "True/False")

    def _date_to_db(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise self._bad(value, "a datetime.date or an ISO date string")

    def _datetime_to_db(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise self._bad(value, "a datetime.datetime or an ISO datetime string")

    def _json_to_db(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"{self._where()} is JSON and cannot store {brief(value)}: {exc}"
            ) from None
        except RecursionError:
            text = None
        if text is None or _json_depth(value, text) > MAX_JSON_DEPTH:
            raise ValidationError(
                f"{self._where()} is JSON nested more than {MAX_JSON_DEPTH} levels deep; "
                f"store it flatter (or as TEXT): deeper JSON cannot be read back reliably"
            )
        return text


def _bool_from_db(value: Any) -> Any:
    return None if value is None else bool(value)


def _date_from_db(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _datetime_from_db(value: Any) -> Any:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


#: Deepest nesting of lists and maps a JSON column takes. Python's json module recurses
#: once per level (deep text raises RecursionError) and SQLite's JSON functions stop at
#: 1000 levels; 100 is far beyond real data and safe for both, whatever the call stack.
MAX_JSON_DEPTH = 100


def _json_depth(value: Any, text: str) -> int:
    """How deeply ``value`` (whose JSON is ``text``) nests lists and maps."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than its number of brackets: the usual, cheap case
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: a deep value must not hit the recursion limit here either
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, (list, tuple)):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


def _json_from_db(value: Any) -> Any:
    # A JSON number is stored as a number (the JSON type has NUMERIC affinity): it already is the value.
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        # Not JSON this column could have written (another tool, raw SQL, nested past
        # MAX_JSON_DEPTH): hand the text back as it is, so one bad row never makes the
        # table unreadable.
        return value


# What a plain column takes, by affinity: SQLite would store anything anywhere, but a
# string in an INTEGER column is a bug in the caller, and the error should say so.
_BLOBS = (bytes,)
_ACCEPTED: dict[str, tuple[tuple[type, ...], str]] = {
    "INTEGER": ((int,), "an integer"),
    "REAL": ((int, float), "a number"),
    "TEXT": ((str,), "a string"),
    "BLOB": (_BLOBS, "bytes"),
    "NUMERIC": ((int, float, str), "a number (or a numeric string)"),
}

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

_FAST_TYPE: dict[str, type] = {"TEXT": str, "REAL": float, "BLOB": bytes, "INTEGER": int}

_PLAIN_TO_DB: dict[str, Any] = {
    "INTEGER": Column._integer_to_db,
    "REAL": Column._real_to_db,
    "TEXT": Column._text_to_db,
    "BLOB": Column._plain_to_db,
    "NUMERIC": Column._plain_to_db,
}

_TO_DB: dict[str, Any] = {
    "plain": Column._plain_to_db,
    "bool": Column._bool_to_db,
    "date": Column._date_to_db,
    "datetime": Column._datetime_to_db,
    "json": Column._json_to_db,
}
_FROM_DB: dict[str, Callable[[Any], Any] | None] = {
    "plain": None,
    "bool": _bool_from_db,
    "date": _date_from_db,
    "datetime": _datetime_from_db,
    "json": _json_from_db,
}
