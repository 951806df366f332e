"""Tables as the engine sees them: identifier checks, the live schema, and additive migration.

Every identifier that reaches SQL passes :func:`check_identifier`, or is a
table name the live schema holds (``fqdb tables`` lists ``"my table"``, made by
another tool, and it must be usable), and is then quoted; nothing a client
sends is spliced into SQL any other way.
``ensure_table`` creates a table or adds the columns and indexes it lacks;
it never drops anything, and a change SQLite cannot make in place (a type
or primary key changed) is a :class:`SchemaError` naming the column.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.errors import IntegrityError, SchemaError, ValidationError, brief
from .sqltypes import SqlType, affinity_of, parse_type
from .steps import Exec, Query, Steps
from .steps import run as run_steps

__all__ = [
    "LIVE_TABLES_SQL",
    "ColumnSpec",
    "TableInfo",
    "check_expression",
    "check_identifier",
    "ensure_table",
    "ensure_table_steps",
    "load_table",
    "parse_column_sets",
    "parse_column_specs",
    "quote",
    "read_table",
    "unique_sets",
    "unknown_table",
]

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_identifier(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, ``_``; at most 64).

    Raises:
        ValidationError: anything else, including names SQLite reserves (``sqlite_*``).
    """
    if not isinstance(name, str) or _IDENT_RE.fullmatch(name) is None:
        shown = (
            repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80]) + "..."
        )
        raise ValidationError(
            f"invalid {what} {shown}: use 1-64 ASCII letters, digits or '_', not starting with a digit"
        )
    lowered = name.lower()
    if lowered.startswith("sqlite_") or lowered.startswith("_fqdb_"):
        prefix = "sqlite_" if lowered.startswith("sqlite_") else "_fqdb_"
        raise ValidationError(
            f"invalid {what} {brief(name)}: names starting with {prefix!r} are reserved"
        )
    return name


#: The user's tables and views, ``(name, type)`` by name (what ``fqdb tables`` lists). A
#: name this returns is safe to use quoted, whatever its characters; with a ``name = ?``
#: condition appended it asks whether one such table or view exists.
LIVE_TABLES_SQL = (
    "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_fqdb\\_%' ESCAPE '\\'"
)


def unknown_table(name: object, live: Iterable[Sequence[Any]]) -> ValidationError:
    """The error for a table ``name`` that does not exist, listing the ``(name, type)``
    rows of :data:`LIVE_TABLES_SQL` (tables, then views)."""
    rows = sorted((str(row[0]), str(row[1])) for row in live)
    tables = ", ".join(n for n, kind in rows if kind == "table") or "none"
    views = ", ".join(n for n, kind in rows if kind == "view")
    listing = f"tables: {tables}" + (f"; views: {views}" if views else "")
    return ValidationError(f"unknown table {brief(name)} ({listing})")


def quote(name: str) -> str:
    """Quote an identifier: checked names never hold a ``"``, but names read from a live
    table (made by another tool) may, so embedded quotes are doubled as SQL requires."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ColumnSpec:
    """One column as a model declares it (the ``columns`` of an ``ensure_table`` request)."""

    name: str
    type: SqlType
    primary_key: bool = False
    nullable: bool = True
    unique: bool = False
    index: bool = False
    default: Any = None
    references: tuple[str, str] | None = None
    on_delete: str | None = None
    check: str | None = None


class TableInfo:
    """The live shape of one table: its columns in order and its primary key."""

    __slots__ = (
        "column_set",
        "columns",
        "declared",
        "defaults",
        "foreign_keys",
        "name",
        "notnull",
        "pk",
        "quoted_columns",
        "rowid_pk",
        "unique_sets",
    )

    def __init__(
        self,
        name: str,
        rows: list[tuple[Any, ...]],
        foreign_keys: list[tuple[str, str, str]] | None = None,
        unique_sets: list[frozenset[str]] | None = None,
    ) -> None:
        self.name = name
        self.columns: tuple[str, ...] = tuple(row[1] for row in rows)
        self.column_set = frozenset(self.columns)
        self.declared: dict[str, str] = {row[1]: row[2] or "" for row in rows}
        #: The columns declared NOT NULL.
        self.notnull = frozenset(row[1] for row in rows if row[3])
        #: Each column's default as SQL text (as the file stores it), or None.
        self.defaults: dict[str, str | None] = {row[1]: row[4] for row in rows}
        pk_rows = sorted((row for row in rows if row[5]), key=lambda row: row[5])
        self.pk: tuple[str, ...] = tuple(row[1] for row in pk_rows)
        # Only a lone column declared exactly INTEGER is an alias of the rowid.
        self.rowid_pk = len(self.pk) == 1 and self.declared[self.pk[0]].upper() == "INTEGER"
        self.quoted_columns = ", ".join(quote(c) for c in self.columns)
        #: (column, referenced table, referenced column) for each single-column foreign key.
        self.foreign_keys = foreign_keys or []
        #: Column sets that are unique: the primary key and every unique index.
        self.unique_sets = unique_sets or []

    def resolve(self, name: object) -> str:
        """The quoted SQL reference for column ``name`` (checked)."""
        return quote(self.check_column(name))

    select_item = resolve

    def check_column(self, name: object) -> str:
        """Return ``name`` if this table has it.

        Raises:
            ValidationError: naming the table and its columns.
        """
        if isinstance(name, str) and name in self.column_set:
            return name
        check_identifier(name, "column name")
        raise ValidationError(
            f"unknown column {brief(name)} in table {brief(self.name)} (columns: {', '.join(self.columns)})"
        )


def load_table(conn: sqlite3.Connection, name: str) -> TableInfo | None:
    """Read a table's shape from the file, or None if there is no such table."""
    return run_steps(conn, read_table(name))


def read_table(name: str) -> Steps[TableInfo | None]:
    """:func:`load_table` as I/O-free statements (see :mod:`.steps`), for any driver:
    the table's shape from its PRAGMAs, or None if there is no such table."""
    rows = yield Query(f"PRAGMA table_info({quote(name)})")
    if not rows:
        return None
    fk_rows = yield Query(f"PRAGMA foreign_key_list({quote(name)})")
    fks = [(row[3], row[2], row[4]) for row in fk_rows if row[4] is not None]
    indexes = []
    for index in (yield Query(f"PRAGMA index_list({quote(name)})")):
        if index[2]:  # unique
            indexes.append((index, (yield Query(f"PRAGMA index_info({quote(index[1])})"))))
    return TableInfo(name, list(rows), fks, unique_sets(rows, indexes))


def unique_sets(
    rows: Sequence[Sequence[Any]],
    indexes: Iterable[tuple[Sequence[Any], Sequence[Sequence[Any]]]],
) -> list[frozenset[str]]:
    """The column sets an ``ON CONFLICT (...)`` can name: the primary key, then every unique
    index that is not partial and covers plain columns only (no expression).

    Args:
        rows: ``PRAGMA table_info`` rows.
        indexes: ``(PRAGMA index_list row, its PRAGMA index_info rows)`` per unique index.
    """
    found: list[frozenset[str]] = []
    pk = frozenset(str(row[1]) for row in rows if row[5])
    if pk:
        found.append(pk)
    for index, columns in indexes:
        names = [c[2] for c in columns]
        if not index[2] or (len(index) > 4 and index[4]) or None in names:
            continue  # not unique, partial, or on an expression
        key = frozenset(str(n) for n in names)
        if key not in found:
            found.append(key)
    return found


def _flag(spec: Mapping[str, Any], key: str, default: bool) -> bool:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(
            f"column field {brief(key)} must be true or false, got {brief(value)}"
        )
    return value


def parse_column_specs(raw: object) -> list[ColumnSpec]:
    """Check the ``columns`` field of an ``ensure_table`` request."""
    if not isinstance(raw, list) or not raw:
        raise ValidationError("ensure_table needs 'columns': a non-empty list of column maps")
    specs: list[ColumnSpec] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise ValidationError(f"each column must be a map, got {brief(item)}")
        name = check_identifier(item.get("name"), "column name")
        if name.lower() in seen:
            raise ValidationError(f"column {brief(name)} is declared twice")
        seen.add(name.lower())
        default = item.get("default")
        if default is not None and not isinstance(default, (bool, int, float, str, bytes)):
            raise ValidationError(
                f"default of column {brief(name)} must be a plain value, got {brief(default)}"
            )
        references = item.get("references")
        if references is not None:
            references = parse_reference(references)
        on_delete = item.get("on_delete")
        if on_delete is not None:
            on_delete = parse_on_delete(on_delete)
        check = item.get("check")
        if check is not None:
            check = check_expression(check, name)
        specs.append(
            ColumnSpec(
                name=name,
                type=parse_type(item.get("type")),
                primary_key=_flag(item, "primary_key", False),
                nullable=_flag(item, "nullable", True),
                unique=_flag(item, "unique", False),
                index=_flag(item, "index", False),
                default=default,
                references=references,
                on_delete=on_delete,
                check=check,
            )
        )
    return specs


_ON_DELETE = {
    "cascade": "CASCADE",
    "set null": "SET NULL",
    "restrict": "RESTRICT",
    "no action": "NO ACTION",
    "set default": "SET DEFAULT",
}


def parse_reference(value: object) -> tuple[str, str]:
    """``"user.id"`` -> ``("user", "id")``, both checked identifiers."""
    if not isinstance(value, str) or value.count(".") != 1:
        raise ValidationError(f"references must look like 'table.column', got {brief(value)}")
    table, column = value.split(".")
    return check_identifier(table, "referenced table"), check_identifier(
        column, "referenced column"
    )


def parse_on_delete(value: object) -> str:
    """The SQL of an ``on_delete`` action: cascade, set null, restrict, no action, set default."""
    action = _ON_DELETE.get(" ".join(value.lower().split())) if isinstance(value, str) else None
    if action is None:
        raise ValidationError(
            f"on_delete must be one of {', '.join(_ON_DELETE)}, got {brief(value)}"
        )
    return action


_CHECK_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      | (?P<string>'(?:[^']|'')*')
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|<>|!=|==|\|\||[=<>+\-*/%(),])
    )""",
    re.VERBOSE | re.ASCII,
)
_CHECK_KEYWORDS = frozenset(
    {"AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "GLOB", "IS", "NULL", "TRUE", "FALSE"}
)
_CHECK_FUNCTIONS = frozenset({"length", "lower", "upper", "abs", "trim", "typeof", "round"})


def check_expression(expr: object, column: str) -> str:
    """Check a ``CHECK`` expression: only ``column``, literals, operators and a few functions.

    Returns the expression with the column quoted, ready for DDL.

    Raises:
        ValidationError: anything else (another column, a subquery, a ``;``...).
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ValidationError(f"check of column {brief(column)} must be an expression string")
    out: list[str] = []
    pos = 0
    depth = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        match = _CHECK_TOKEN.match(expr, pos)
        if match is None:
            raise ValidationError(
                f"check of column {brief(column)}: cannot read {expr[pos : pos + 20]!r}; use the column, "
                "numbers, 'strings', comparison and arithmetic operators, AND/OR/NOT, IN, "
                f"BETWEEN, LIKE, IS NULL and {', '.join(sorted(_CHECK_FUNCTIONS))}()"
            )
        pos = match.end()
        word = match.group("word")
        op = match.group("op")
        if word is not None:
            if word == column:
                out.append(quote(column))
            elif word.upper() in _CHECK_KEYWORDS:
                out.append(word.upper())
            elif word.lower() in _CHECK_FUNCTIONS and expr[pos:].lstrip().startswith("("):
                out.append(word.lower())
            else:
                raise ValidationError(
                    f"check of column {brief(column)} may only use that column; {brief(word)} is not allowed"
                )
        elif op is not None:
            depth += op == "("
            depth -= op == ")"
            if depth < 0:
                raise ValidationError(f"check of column {brief(column)} has unbalanced parentheses")
            out.append(op)
        else:
            out.append(match.group("number") or match.group("string"))
    if depth != 0:
        raise ValidationError(f"check of column {brief(column)} has unbalanced parentheses")
    if quote(column) not in out:
        raise ValidationError(f"check of column {brief(column)} must mention the column")
    checked = " ".join(out)
    # The tokens are safe; let SQLite itself say whether they make an expression.
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute(f"CREATE TABLE probe ({quote(column)} CHECK ({checked}))")
    except sqlite3.Error as exc:
        raise ValidationError(
            f"check of column {brief(column)} is not a valid expression: {exc}"
        ) from None
    finally:
        probe.close()
    return checked


def parse_column_sets(raw: object, what: str, columns: set[str]) -> list[tuple[str, ...]]:
    """Check ``indexes`` / ``unique`` of an ensure_table request: lists of column names."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValidationError(f"'{what}' must be a list of column lists, got {brief(raw)}")
    sets = []
    for item in raw:
        if not isinstance(item, list) or not item:
            raise ValidationError(f"each entry of '{what}' must be a list of column names")
        for name in item:
            if name not in columns:
                check_identifier(name, "column name")
                raise ValidationError(
                    f"'{what}' names {brief(name)}, which is not a column of the model"
                )
        sets.append(tuple(item))
    return sets


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def _column_sql(spec: ColumnSpec, inline_pk: bool) -> str:
    parts = [quote(spec.name), spec.type.declared]
    if inline_pk:
        parts.append("PRIMARY KEY")
    if not spec.nullable:
        parts.append("NOT NULL")
    if spec.unique and not spec.primary_key:
        parts.append("UNIQUE")
    if spec.default is not None:
        parts.append(f"DEFAULT {_literal(spec.default)}")
    if spec.check is not None:
        parts.append(f"CHECK ({spec.check})")
    if spec.references is not None:
        ref_table, ref_column = spec.references
        parts.append(f"REFERENCES {quote(ref_table)} ({quote(ref_column)})")
        if spec.on_delete is not None:
            parts.append(f"ON DELETE {spec.on_delete}")
    return " ".join(parts)


def _kind_of(declared: str) -> str:
    try:
        return parse_type(declared).kind
    except ValidationError:
        return "plain"


def _index_sql(table: str, column: str) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {quote(f'ix_{table}_{column}')} "
        f"ON {quote(table)} ({quote(column)})"
    )


def _create_indexes(
    table: str,
    indexes: list[tuple[str, ...]],
    unique: list[tuple[str, ...]],
) -> Steps[None]:
    for prefix, sets in (("ix", indexes), ("ux", unique)):
        kind = "UNIQUE INDEX" if prefix == "ux" else "INDEX"
        for cols in sets:
            name = quote(f"{prefix}_{table}_{'_'.join(cols)}")
            yield Exec(
                f"CREATE {kind} IF NOT EXISTS {name} ON {quote(table)} "
                f"({', '.join(quote(c) for c in cols)})"
            )


def _add_unique_index(table: str, column: str) -> Steps[None]:
    """The unique index of ``Column(unique=True)``; duplicates already in the file are a SchemaError."""
    try:
        yield Exec(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(f'ux_{table}_{column}')} "
            f"ON {quote(table)} ({quote(column)})"
        )
    except IntegrityError:
        raise SchemaError(
            f"cannot make column {brief(column)} of table {brief(table)} unique: the file already "
            "holds duplicate values in it; remove the duplicates first, or drop unique=True"
        ) from None


def ensure_table(
    conn: sqlite3.Connection,
    table: str,
    specs: list[ColumnSpec],
    indexes: list[tuple[str, ...]] | None = None,
    unique: list[tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """:func:`ensure_table_steps` run on a ``sqlite3`` connection (inside its transaction)."""
    return run_steps(conn, ensure_table_steps(table, specs, indexes, unique))


def ensure_table_steps(
    table: str,
    specs: list[ColumnSpec],
    indexes: list[tuple[str, ...]] | None = None,
    unique: list[tuple[str, ...]] | None = None,
) -> Steps[dict[str, Any]]:
    """Create ``table`` or bring it up to ``specs`` without dropping anything.

    I/O-free (:mod:`.steps`): the same decisions and DDL on a file and on a dqlite
    cluster, inside the caller's transaction. Returns ``{"created": bool, "added": [names]}``.

    Raises:
        SchemaError: a column's type or primary key differs from the live table,
            a new column cannot be added in place (primary key, NOT NULL without
            default), or a column made unique holds duplicates.
    """
    pk_cols = [s.name for s in specs if s.primary_key]
    live = yield from read_table(table)
    if live is None:
        inline = len(pk_cols) == 1
        defs = [_column_sql(s, inline and s.primary_key) for s in specs]
        if len(pk_cols) > 1:
            defs.append(f"PRIMARY KEY ({', '.join(quote(c) for c in pk_cols)})")
        yield Exec(f"CREATE TABLE {quote(table)} ({', '.join(defs)})")
        for spec in specs:
            if spec.index and not spec.primary_key:
                yield Exec(_index_sql(table, spec.name))
        yield from _create_indexes(table, indexes or [], unique or [])
        return {"created": True, "added": [s.name for s in specs]}

    live_lower = {c.lower(): c for c in live.columns}
    added: list[str] = []
    for spec in specs:
        existing = live_lower.get(spec.name.lower())
        if existing is not None:
            declared = live.declared[existing]
            if affinity_of(declared) != spec.type.affinity or _kind_of(declared) != spec.type.kind:
                raise SchemaError(
                    f"column {brief(spec.name)} of table {brief(table)} is {declared or 'untyped'} in the "
                    f"file but {spec.type.declared} in the model: SQLite cannot change a column's "
                    "type in place; migrate it yourself (new column, copy, drop) or keep the old type"
                )
            if (existing in live.pk) != spec.primary_key:
                raise SchemaError(
                    f"primary key of table {brief(table)} is ({', '.join(live.pk) or 'rowid'}) in the file "
                    f"but column {brief(spec.name)} is {'' if spec.primary_key else 'not '}a primary key in "
                    "the model: SQLite cannot change a primary key in place"
                )
            if spec.unique and frozenset([existing]) not in live.unique_sets:
                # Column(unique=True) on a column the file already has: added like a column.
                yield from _add_unique_index(table, spec.name)
        else:
            if spec.primary_key:
                raise SchemaError(
                    f"cannot add primary key column {brief(spec.name)} to existing table {brief(table)}: "
                    "SQLite cannot change a primary key in place"
                )
            if not spec.nullable and spec.default is None:
                raise SchemaError(
                    f"cannot add NOT NULL column {brief(spec.name)} to existing table {brief(table)} without "
                    "a default: give it default=... or make it nullable"
                )
            plain = dataclasses.replace(spec, unique=False, index=False)
            yield Exec(f"ALTER TABLE {quote(table)} ADD COLUMN {_column_sql(plain, False)}")
            if spec.unique:
                yield from _add_unique_index(table, spec.name)
            added.append(spec.name)
        if spec.index and not spec.primary_key:
            yield Exec(_index_sql(table, spec.name))
    yield from _create_indexes(table, indexes or [], unique or [])
    return {"created": False, "added": added}
