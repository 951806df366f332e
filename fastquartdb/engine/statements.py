"""Requests to SQL: filters, ordering and the CRUD statements, all checked first.

Every function takes a request field as it arrived (possibly from the wire,
so of any type) and the live :class:`TableInfo`, checks it, and returns SQL
text with ``?`` placeholders plus the parameters. Values are never spliced
into SQL; identifiers only after :func:`check_column` and quoting.

The wire form of a filter (``where``) is a list of groups ORed together,
each group a list of ``[column, operator, value]`` conditions ANDed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..protocol.errors import ValidationError, brief
from .joins import JoinScope
from .schema import TableInfo, check_identifier, quote

__all__ = [
    "AGGREGATES",
    "OPERATORS",
    "JoinScope",
    "build_aggregate",
    "build_count",
    "build_delete",
    "build_insert",
    "build_insert_many",
    "build_select",
    "build_update",
    "build_upsert",
    "build_upsert_many",
    "check_value",
    "check_values",
    "check_where_size",
    "inserted_key",
    "key_of_row",
    "upserted_key_query",
]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

#: Accepted operator spellings -> the SQL we emit.
OPERATORS: dict[str, str] = {
    "=": "=",
    "==": "=",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "LIKE": "LIKE",
    "NOT LIKE": "NOT LIKE",
    "GLOB": "GLOB",
    "IN": "IN",
    "NOT IN": "NOT IN",
    "BETWEEN": "BETWEEN",
    "IS": "IS",
    "IS NOT": "IS NOT",
}
_OPERATOR_LIST = " ".join(OPERATORS)

#: Most conditions one filter holds, over all its groups. SQLite refuses an expression
#: tree deeper than 1000 (SQLITE_MAX_EXPR_DEPTH) and binds at most 32766 values per
#: statement; the checks below say so before any SQL is built, in every mode.
MAX_CONDITIONS = 1000
MAX_FILTER_VALUES = 30000
#: Terms joined in one flat chain; longer lists are nested as a balanced tree, so that
#: 1000 conditions make a tree about 30 deep instead of 1000 (SQLite's limit).
_CHAIN = 32


def check_value(value: Any, where: str) -> Any:
    """Return ``value`` if SQLite can bind it: None, bool, int (64-bit), float, str, bytes.

    Raises:
        ValidationError: naming ``where`` the value was found.
    """
    if value is None or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, float):
        if value != value:  # SQLite would store NaN as NULL
            raise ValidationError(f"value nan for {where} cannot be stored; use None for no value")
        return value
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return value
        raise ValidationError(f"integer {value} for {where} does not fit SQLite's 64-bit INTEGER")
    raise ValidationError(
        f"value {brief(value)} for {where} has type {type(value).__name__}; "
        "use int, float, str, bytes, bool or None"
    )


def check_values(values: Iterable[Any], where: Callable[[Any], str]) -> None:
    """:func:`check_value` for every one of ``values``, on the hot path of every insert.

    The common types are checked inline; anything else goes to ``check_value``, and
    only if it is refused is ``where(value)`` asked to say where the value was found.
    """
    for value in values:
        kind = type(value)
        if kind is str or value is None or kind is bytes or kind is bool:
            continue
        if (kind is int and _INT_MIN <= value <= _INT_MAX) or (kind is float and value == value):
            continue
        try:
            check_value(value, "a value")  # an int subclass, a big int, NaN, an object...
        except ValidationError:
            check_value(value, where(value))  # refused again, now saying where


def _normalize_operator(op: object) -> str:
    if isinstance(op, str):
        sql = OPERATORS.get(" ".join(op.upper().split()))
        if sql is not None:
            return sql
    raise ValidationError(f"unknown operator {brief(op)} (allowed: {_OPERATOR_LIST})")


class Scope(Protocol):
    """What names in a request can refer to: one table, or a join of several."""

    def resolve(self, name: object) -> str:
        """The quoted SQL for ``name``, or ValidationError."""


def _condition(table: Scope, cond: object, params: list[Any]) -> str:
    if not isinstance(cond, (list, tuple)) or len(cond) != 3:
        raise ValidationError(f"a condition must be [column, operator, value], got {brief(cond)}")
    column = table.resolve(cond[0])
    op = _normalize_operator(cond[1])
    value = cond[2]
    where = f"column {brief(cond[0])} {op}"
    if op in ("IN", "NOT IN"):
        if not isinstance(value, (list, tuple)):
            raise ValidationError(
                f"{op} needs a list of values for column {brief(cond[0])}, got {brief(value)}"
            )
        if not value:
            # Nothing is IN an empty set; everything is NOT IN it (NULLs included).
            return "0" if op == "IN" else "1"
        params.extend(check_value(v, where) for v in value)
        return f"{column} {op} ({', '.join('?' * len(value))})"
    if op == "BETWEEN":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValidationError(
                f"BETWEEN needs [low, high] for column {brief(cond[0])}, got {brief(value)}"
            )
        if value[0] is None or value[1] is None:
            raise ValidationError(
                f"BETWEEN cannot use None as a bound for column {brief(cond[0])}: nothing compares to NULL"
            )
        params.append(check_value(value[0], where))
        params.append(check_value(value[1], where))
        return f"{column} BETWEEN ? AND ?"
    if value is None:
        # '= NULL' is never true in SQL; users writing it mean IS NULL.
        if op in ("=", "IS"):
            return f"{column} IS NULL"
        if op in ("!=", "IS NOT"):
            return f"{column} IS NOT NULL"
        raise ValidationError(f"operator {op} cannot compare column {brief(cond[0])} with None")
    params.append(check_value(value, where))
    return f"{column} {op} ?"


def check_where_size(where: object) -> None:
    """Refuse a filter SQLite could not take: more than :data:`MAX_CONDITIONS` conditions,
    or more than :data:`MAX_FILTER_VALUES` values in them.

    Raises:
        ValidationError: naming the limit and what to do instead.
    """
    if not isinstance(where, list):
        return  # build_where says what is wrong with its shape
    conditions = values = 0
    for group in where:
        if isinstance(group, list):
            conditions += len(group)
            for cond in group:
                if isinstance(cond, (list, tuple)) and len(cond) == 3:
                    value = cond[2]
                    values += len(value) if isinstance(value, (list, tuple)) else 1
    if conditions > MAX_CONDITIONS:
        raise ValidationError(
            f"{conditions} filter conditions in one request: at most {MAX_CONDITIONS} "
            f"(SQLite's expression limit); for many values of one column use "
            f"('in', [...]), or split the request"
        )
    if values > MAX_FILTER_VALUES:
        raise ValidationError(
            f"{values} values in one filter: at most {MAX_FILTER_VALUES} (SQLite binds at "
            f"most 32766 per statement); split the request"
        )


def _join(parts: list[str], op: str) -> str:
    """``parts`` joined by ``op``: a flat chain, or a balanced tree of chains when long."""
    if len(parts) <= _CHAIN:
        return f" {op} ".join(parts)
    middle = len(parts) // 2
    return f"({_join(parts[:middle], op)}) {op} ({_join(parts[middle:], op)})"


def build_where(table: Scope, where: object, params: list[Any], keyword: str = "WHERE") -> str:
    """Return ``" WHERE ..."`` (or ``""`` for no filter), appending parameters to ``params``."""
    if where is None:
        return ""
    if not isinstance(where, list):
        raise ValidationError(f"'where' must be a list of condition groups, got {brief(where)}")
    check_where_size(where)
    groups: list[str] = []
    local: list[Any] = []
    match_all = False
    for group in where:
        if not isinstance(group, list):
            raise ValidationError(
                f"each 'where' group must be a list of conditions, got {brief(group)}"
            )
        if not group:
            # An empty group is true for every row, so the whole OR is: no filter at all
            # (and update/delete then need all_rows, as with no filters).
            match_all = True
            continue
        parts = [_condition(table, cond, local) for cond in group]
        groups.append(parts[0] if len(parts) == 1 else "(" + _join(parts, "AND") + ")")
    if match_all or not groups:
        return ""
    params.extend(local)
    return f" {keyword} " + (groups[0] if len(groups) == 1 else _join(groups, "OR"))


def _columns(table: TableInfo | JoinScope, columns: object) -> str:
    if columns is None:
        return table.quoted_columns
    if not isinstance(columns, list) or not columns:
        raise ValidationError(
            f"'columns' must be a non-empty list of column names, got {brief(columns)}"
        )
    return ", ".join(table.select_item(c) for c in columns)


def _order_by(table: Scope, order_by: object) -> str:
    if order_by is None:
        return ""
    if isinstance(order_by, str):
        order_by = [order_by]
    if not isinstance(order_by, list) or not order_by:
        raise ValidationError(
            f"'order_by' must be a list such as ['-age', 'username'], got {brief(order_by)}"
        )
    parts = []
    for item in order_by:
        if not isinstance(item, str) or not item:
            raise ValidationError(
                f"order_by entries are column names, optionally '-' prefixed; got {brief(item)}"
            )
        desc = item.startswith("-")
        name = item[1:] if item[0] in "+-" else item
        parts.append(table.resolve(name) + (" DESC" if desc else ""))
    return " ORDER BY " + ", ".join(parts)


def _count_arg(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
        raise ValidationError(f"'{name}' must be a non-negative integer, got {brief(value)}")
    return value


def _limit(req: dict[str, Any], params: list[Any]) -> str:
    limit = _count_arg(req.get("limit"), "limit")
    offset = _count_arg(req.get("offset"), "offset")
    if limit is None and offset is None:
        return ""
    params.append(-1 if limit is None else limit)
    if offset is None:
        return " LIMIT ?"
    params.append(offset)
    return " LIMIT ? OFFSET ?"


def build_select(
    table: TableInfo, req: dict[str, Any], lookup: Callable[[object], TableInfo]
) -> tuple[str, list[Any]]:
    """SELECT for a ``fetch`` request (columns, where, order_by, limit, offset, join, distinct)."""
    params: list[Any] = []
    joins = req.get("join")
    scope: TableInfo | JoinScope = table if joins is None else JoinScope(table, joins, lookup)
    distinct = req.get("distinct", False)
    if not isinstance(distinct, bool):
        raise ValidationError(f"'distinct' must be true or false, got {brief(distinct)}")
    source = quote(table.name) if isinstance(scope, TableInfo) else scope.from_sql
    sql = f"SELECT {'DISTINCT ' if distinct else ''}{_columns(scope, req.get('columns'))} FROM {source}"
    sql += build_where(scope, req.get("where"), params)
    sql += _order_by(scope, req.get("order_by"))
    sql += _limit(req, params)
    return sql, params


def build_count(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """SELECT count(*) for a ``count`` request."""
    params: list[Any] = []
    where = build_where(table, req.get("where"), params)
    return f"SELECT count(*) FROM {quote(table.name)}{where}", params


def _values(table: TableInfo, values: object, op: str) -> tuple[list[str], list[Any]]:
    if not isinstance(values, dict):
        raise ValidationError(f"{op} needs 'values': a map of column to value, got {brief(values)}")
    names = [table.check_column(name) for name in values]
    params = [check_value(values[name], f"column {brief(name)}") for name in names]
    return names, params


def build_insert(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """INSERT for an ``insert`` request (one row as a map)."""
    names, params = _values(table, req.get("values"), "insert")
    on_conflict = req.get("on_conflict")
    if on_conflict not in (None, "ignore"):
        raise ValidationError(f"on_conflict must be 'ignore' or absent, got {brief(on_conflict)}")
    verb = "INSERT OR IGNORE" if on_conflict == "ignore" else "INSERT"
    if not names:
        return f"{verb} INTO {quote(table.name)} DEFAULT VALUES", params
    cols = ", ".join(quote(n) for n in names)
    return (
        f"{verb} INTO {quote(table.name)} ({cols}) VALUES ({', '.join('?' * len(names))})",
        params,
    )


def build_insert_many(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[list[Any]]]:
    """One INSERT for many rows: ``columns`` once, ``rows`` as lists in that order."""
    columns, rows = req.get("columns"), req.get("rows")
    if not isinstance(columns, list) or not columns:
        raise ValidationError("insert_many needs 'columns': a non-empty list of column names")
    names = [table.check_column(c) for c in columns]
    if len(set(names)) != len(names):
        raise ValidationError(f"insert_many 'columns' names a column twice: {names}")
    if not isinstance(rows, list):
        raise ValidationError("insert_many needs 'rows': a list of rows, each a list of values")
    width = len(names)
    if not all(type(row) is list and len(row) == width for row in rows):
        index, row = next(
            (i, r) for i, r in enumerate(rows) if type(r) is not list or len(r) != width
        )
        raise ValidationError(
            f"row {index} of insert_many must be a list of {width} values, got {brief(row)}"
        )

    def row_of(value: Any) -> str:
        index = next(i for i, row in enumerate(rows) if any(v is value for v in row))
        return f"row {index} of insert_many"

    check_values(itertools.chain.from_iterable(rows), row_of)
    cols = ", ".join(quote(n) for n in names)
    sql = f"INSERT INTO {quote(table.name)} ({cols}) VALUES ({', '.join('?' * width)})"
    return sql, rows


def _guard_all_rows(req: dict[str, Any], where: str, op: str) -> None:
    all_rows = req.get("all_rows")
    if all_rows is None:
        all_rows = False
    if not isinstance(all_rows, bool):
        raise ValidationError(f"'all_rows' must be true or false, got {brief(all_rows)}")
    if not where and not all_rows:
        raise ValidationError(
            f"{op} without filters would touch every row; pass filters, or all_rows=True to mean it"
        )


def build_update(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """UPDATE for an ``update`` request; refuses to touch every row unless ``all_rows``."""
    names, params = _values(table, req.get("values"), "update")
    if not names:
        raise ValidationError("update needs at least one column to change in 'values'")
    where = build_where(table, req.get("where"), params)
    _guard_all_rows(req, where, "update")
    sets = ", ".join(f"{quote(n)} = ?" for n in names)
    return f"UPDATE {quote(table.name)} SET {sets}{where}", params


def build_delete(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """DELETE for a ``delete`` request; refuses to touch every row unless ``all_rows``."""
    params: list[Any] = []
    where = build_where(table, req.get("where"), params)
    _guard_all_rows(req, where, "delete")
    return f"DELETE FROM {quote(table.name)}{where}", params


def _name_list(value: object, what: str) -> list[Any]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValidationError(
            f"'{what}' must be a non-empty list of column names, got {brief(value)}"
        )
    return value


def _conflict_target(table: TableInfo, conflict: object) -> list[str]:
    names = [table.check_column(c) for c in _name_list(conflict, "conflict")]
    if frozenset(names) not in table.unique_sets:
        known = "; ".join(", ".join(sorted(key)) for key in table.unique_sets) or "none"
        raise ValidationError(
            f"conflict target ({', '.join(names)}) is not the primary key or a unique index of "
            f"table {brief(table.name)} (unique keys: {known}): declare Column(unique=True) on "
            f"it, or __unique_together__ = [{tuple(names)!r}] for several columns"
        )
    return names


def _upsert_tail(table: TableInfo, req: dict[str, Any], names: list[str]) -> str:
    conflict = _conflict_target(table, req.get("conflict"))
    absent = [c for c in conflict if c not in names]
    if absent:
        raise ValidationError(
            f"upsert needs a value for its conflict column(s) {', '.join(absent)}"
        )
    update = req.get("update")
    if update is None:
        targets = [n for n in names if n not in conflict]
    else:
        targets = [table.check_column(c) for c in _name_list(update, "update")]
        missing = [c for c in targets if c not in names]
        if missing:
            raise ValidationError(
                f"upsert 'update' names {', '.join(missing)}, which the row does not give a value"
            )
    target_sql = ", ".join(quote(c) for c in conflict)
    if not targets:
        return f" ON CONFLICT ({target_sql}) DO NOTHING"
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in targets)
    return f" ON CONFLICT ({target_sql}) DO UPDATE SET {sets}"


def build_upsert(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """INSERT ... ON CONFLICT (...) DO UPDATE for an ``upsert`` request (one row)."""
    names, params = _values(table, req.get("values"), "upsert")
    if not names:
        raise ValidationError("upsert needs at least one column value")
    cols = ", ".join(quote(n) for n in names)
    sql = f"INSERT INTO {quote(table.name)} ({cols}) VALUES ({', '.join('?' * len(names))})"
    return sql + _upsert_tail(table, req, names), params


def inserted_key(table: TableInfo, req: dict[str, Any], changed: int, lastrowid: Any) -> Any:
    """What an ``insert`` returns: the new row's key, or None if ``on_conflict="ignore"``
    left the existing row (``changed`` 0). A single-column primary key that is not the
    rowid is the value the request gave; otherwise the rowid SQLite assigned."""
    if changed == 0:
        return None
    if len(table.pk) == 1 and not table.rowid_pk:
        values = req["values"]
        if table.pk[0] in values:
            return values[table.pk[0]]
    return lastrowid


def upserted_key_query(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SELECT of an upserted row's key by its conflict target, run after the upsert:
    the key whether the row was inserted, updated or left alone (SQLite sets no rowid
    when the update branch ran). Its one row gives the key (see :func:`key_of_row`)."""
    conflict = req["conflict"] if isinstance(req["conflict"], list) else [req["conflict"]]
    values = req["values"]
    key = table.pk if table.pk else ("rowid",)
    where = " AND ".join(f"{quote(c)} IS ?" for c in conflict)
    columns = ", ".join(quote(k) if k != "rowid" else "rowid" for k in key)
    return (
        f"SELECT {columns} FROM {quote(table.name)} WHERE {where}",
        [values[c] for c in conflict],
    )


def key_of_row(row: Any) -> Any:
    """An upsert's result from the row :func:`upserted_key_query` found (None: no row)."""
    if row is None:
        return None
    return row[0] if len(row) == 1 else list(row)


def build_upsert_many(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[list[Any]]]:
    """One upsert statement for many rows (``columns`` + ``rows`` as for insert_many)."""
    sql, rows = build_insert_many(table, req)
    return sql + _upsert_tail(table, req, list(req["columns"])), rows


#: Aggregate functions by the names requests use.
AGGREGATES = {
    "count": "count",
    "sum": "sum",
    "avg": "avg",
    "min": "min",
    "max": "max",
    "group_concat": "group_concat",
}


class _AggregateScope:
    """Names in HAVING and ORDER BY: an aggregate's alias, or a column."""

    def __init__(self, inner: TableInfo | JoinScope, aliases: set[str]) -> None:
        self.inner = inner
        self.aliases = aliases

    def resolve(self, name: object) -> str:
        if isinstance(name, str) and name in self.aliases:
            return quote(name)
        return self.inner.resolve(name)


def build_aggregate(
    table: TableInfo, req: dict[str, Any], lookup: Callable[[object], TableInfo]
) -> tuple[str, list[Any]]:
    """SELECT group columns and aggregates for an ``aggregate`` request."""
    joins = req.get("join")
    scope: TableInfo | JoinScope = table if joins is None else JoinScope(table, joins, lookup)
    aggregates = req.get("aggregates")
    if not isinstance(aggregates, dict) or not aggregates:
        raise ValidationError(
            "aggregate needs 'aggregates': a map like {'n': ('count', '*'), 'avg_age': ('avg', 'age')}"
        )
    group_by = [] if req.get("group_by") is None else _name_list(req.get("group_by"), "group_by")
    items = []
    for name in group_by:
        items.append(f"{scope.resolve(name)} AS {quote(str(name))}")
    aliases: set[str] = set()
    for alias, spec in aggregates.items():
        check_identifier(alias, "aggregate name")
        if alias in aliases or alias in group_by:
            raise ValidationError(f"aggregate name {brief(alias)} is used twice")
        aliases.add(alias)
        if not isinstance(spec, (list, tuple)) or len(spec) != 2:
            raise ValidationError(
                f"aggregate {brief(alias)} must be (function, column), got {brief(spec)}"
            )
        func = AGGREGATES.get(spec[0].lower()) if isinstance(spec[0], str) else None
        if func is None:
            raise ValidationError(
                f"unknown aggregate function {brief(spec[0])} for {brief(alias)} "
                f"(allowed: {', '.join(AGGREGATES)})"
            )
        if spec[1] == "*":
            if func != "count":
                raise ValidationError(
                    f"only count takes '*', not {func} (aggregate {brief(alias)})"
                )
            argument = "*"
        else:
            argument = scope.resolve(spec[1])
        items.append(f"{func}({argument}) AS {quote(alias)}")
    source = quote(table.name) if isinstance(scope, TableInfo) else scope.from_sql
    params: list[Any] = []
    sql = f"SELECT {', '.join(items)} FROM {source}"
    sql += build_where(scope, req.get("where"), params)
    if group_by:
        sql += " GROUP BY " + ", ".join(scope.resolve(n) for n in group_by)
    having_scope = _AggregateScope(scope, aliases)
    sql += build_where(having_scope, req.get("having"), params, keyword="HAVING")
    sql += _order_by(having_scope, req.get("order_by"))
    sql += _limit(req, params)
    return sql, params
