"""Requests to SQL: filters, ordering and the CRUD statements, all checked first.

Every function takes a request field as it arrived (possibly from the wire,
so of any type) and the live :class:`TableInfo`, checks it, and returns SQL
text with ``?`` placeholders plus the parameters. Values are never spliced
into SQL; identifiers only after :func:`check_column` and quoting.

The wire form of a filter (``where``) is a list of groups ORed together,
each group a list of ``[column, operator, value]`` conditions ANDed.
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import ValidationError
from .schema import TableInfo, quote

__all__ = [
    "OPERATORS",
    "build_count",
    "build_delete",
    "build_insert",
    "build_insert_many",
    "build_select",
    "build_update",
    "check_value",
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


def check_value(value: Any, where: str) -> Any:
    """Return ``value`` if SQLite can bind it: None, bool, int (64-bit), float, str, bytes.

    Raises:
        ValidationError: naming ``where`` the value was found.
    """
    if value is None or isinstance(value, (str, float, bytes)):
        return value
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return value
        raise ValidationError(f"integer {value} for {where} does not fit SQLite's 64-bit INTEGER")
    raise ValidationError(
        f"value {value!r} for {where} has type {type(value).__name__}; "
        "use int, float, str, bytes, bool or None"
    )


def _normalize_operator(op: object) -> str:
    if isinstance(op, str):
        sql = OPERATORS.get(" ".join(op.upper().split()))
        if sql is not None:
            return sql
    raise ValidationError(f"unknown operator {op!r} (allowed: {_OPERATOR_LIST})")


def _condition(table: TableInfo, cond: object, params: list[Any]) -> str:
    if not isinstance(cond, (list, tuple)) or len(cond) != 3:
        raise ValidationError(f"a condition must be [column, operator, value], got {cond!r}")
    column = quote(table.check_column(cond[0]))
    op = _normalize_operator(cond[1])
    value = cond[2]
    where = f"column {cond[0]!r} {op}"
    if op in ("IN", "NOT IN"):
        if not isinstance(value, (list, tuple)):
            raise ValidationError(
                f"{op} needs a list of values for column {cond[0]!r}, got {value!r}"
            )
        if not value:
            # Nothing is IN an empty set; everything is NOT IN it (NULLs included).
            return "0" if op == "IN" else "1"
        params.extend(check_value(v, where) for v in value)
        return f"{column} {op} ({', '.join('?' * len(value))})"
    if op == "BETWEEN":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValidationError(
                f"BETWEEN needs [low, high] for column {cond[0]!r}, got {value!r}"
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
        raise ValidationError(f"operator {op} cannot compare column {cond[0]!r} with None")
    params.append(check_value(value, where))
    return f"{column} {op} ?"


def build_where(table: TableInfo, where: object, params: list[Any]) -> str:
    """Return ``" WHERE ..."`` (or ``""`` for no filter), appending parameters to ``params``."""
    if where is None:
        return ""
    if not isinstance(where, list):
        raise ValidationError(f"'where' must be a list of condition groups, got {where!r}")
    groups: list[str] = []
    local: list[Any] = []
    match_all = False
    for group in where:
        if not isinstance(group, list):
            raise ValidationError(f"each 'where' group must be a list of conditions, got {group!r}")
        if not group:
            # An empty group is true for every row, so the whole OR is: no filter at all
            # (and update/delete then need all_rows, as with no filters).
            match_all = True
            continue
        parts = [_condition(table, cond, local) for cond in group]
        groups.append(parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")")
    if match_all or not groups:
        return ""
    params.extend(local)
    return " WHERE " + (groups[0] if len(groups) == 1 else " OR ".join(groups))


def _columns(table: TableInfo, columns: object) -> str:
    if columns is None:
        return table.quoted_columns
    if not isinstance(columns, list) or not columns:
        raise ValidationError(
            f"'columns' must be a non-empty list of column names, got {columns!r}"
        )
    return ", ".join(quote(table.check_column(c)) for c in columns)


def _order_by(table: TableInfo, order_by: object) -> str:
    if order_by is None:
        return ""
    if isinstance(order_by, str):
        order_by = [order_by]
    if not isinstance(order_by, list) or not order_by:
        raise ValidationError(
            f"'order_by' must be a list such as ['-age', 'username'], got {order_by!r}"
        )
    parts = []
    for item in order_by:
        if not isinstance(item, str) or not item:
            raise ValidationError(
                f"order_by entries are column names, optionally '-' prefixed; got {item!r}"
            )
        desc = item.startswith("-")
        name = item[1:] if item[0] in "+-" else item
        parts.append(quote(table.check_column(name)) + (" DESC" if desc else ""))
    return " ORDER BY " + ", ".join(parts)


def _count_arg(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
        raise ValidationError(f"'{name}' must be a non-negative integer, got {value!r}")
    return value


def build_select(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """SELECT for a ``fetch`` request (columns, where, order_by, limit, offset)."""
    params: list[Any] = []
    sql = f"SELECT {_columns(table, req.get('columns'))} FROM {quote(table.name)}"
    sql += build_where(table, req.get("where"), params)
    sql += _order_by(table, req.get("order_by"))
    limit = _count_arg(req.get("limit"), "limit")
    offset = _count_arg(req.get("offset"), "offset")
    if limit is not None or offset is not None:
        sql += " LIMIT ?"
        params.append(-1 if limit is None else limit)
        if offset is not None:
            sql += " OFFSET ?"
            params.append(offset)
    return sql, params


def build_count(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """SELECT count(*) for a ``count`` request."""
    params: list[Any] = []
    where = build_where(table, req.get("where"), params)
    return f"SELECT count(*) FROM {quote(table.name)}{where}", params


def _values(table: TableInfo, values: object, op: str) -> tuple[list[str], list[Any]]:
    if not isinstance(values, dict):
        raise ValidationError(f"{op} needs 'values': a map of column to value, got {values!r}")
    names = [table.check_column(name) for name in values]
    params = [check_value(values[name], f"column {name!r}") for name in names]
    return names, params


def build_insert(table: TableInfo, req: dict[str, Any]) -> tuple[str, list[Any]]:
    """INSERT for an ``insert`` request (one row as a map)."""
    names, params = _values(table, req.get("values"), "insert")
    if not names:
        return f"INSERT INTO {quote(table.name)} DEFAULT VALUES", params
    cols = ", ".join(quote(n) for n in names)
    return (
        f"INSERT INTO {quote(table.name)} ({cols}) VALUES ({', '.join('?' * len(names))})",
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
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise ValidationError(
                f"row {index} of insert_many must be a list of {width} values, got {row!r}"
            )
        for value in row:
            check_value(value, f"row {index} of insert_many")
    cols = ", ".join(quote(n) for n in names)
    sql = f"INSERT INTO {quote(table.name)} ({cols}) VALUES ({', '.join('?' * width)})"
    return sql, rows


def _guard_all_rows(req: dict[str, Any], where: str, op: str) -> None:
    all_rows = req.get("all_rows", False)
    if not isinstance(all_rows, bool):
        raise ValidationError(f"'all_rows' must be true or false, got {all_rows!r}")
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
