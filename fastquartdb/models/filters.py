"""Filters as users write them, turned into the protocol's ``where`` form.

Accepted forms::

    {"age": [(">", 20), ("<", 40)]}        conditions on one column, ANDed
    {"age": 30, "name": None}              shorthand: = 30 and IS NULL
    {"age": (">", 20)}                     one condition without the list
    [{"age": 30}, {"name": "bob"}]         a list of such maps: ORed groups

Columns are checked against the model and operators against the whitelist
here, before any request is built; the engine checks both again against the
live table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..engine import OPERATORS
from ..engine.statements import check_where_size
from ..protocol.errors import ValidationError, brief

if TYPE_CHECKING:
    from .columns import Column

__all__ = ["normalize_filters"]

_LIST_OPS = frozenset({"IN", "NOT IN"})
# Values the shorthand ``{"id": 5}`` compares with "=" as they are (see _group's last branch).
_PLAIN_VALUES = frozenset({int, str, float, bytes, bool})


def _operator(op: Any, column: str) -> str:
    if isinstance(op, str):
        normalized = " ".join(op.upper().split())
        sql = OPERATORS.get(normalized)
        if sql is not None:
            return sql
    raise ValidationError(
        f"unknown operator {brief(op)} for column {brief(column)} (allowed: {' '.join(OPERATORS)})"
    )


def _is_condition(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)


def _convert(column: Column, op: str, value: Any) -> Any:
    if op in _LIST_OPS:
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise ValidationError(
                f"{op} needs a list of values for column {brief(column.name)}, got {brief(value)}"
            )
        return [column.to_db(v) for v in value]
    if op == "BETWEEN":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValidationError(
                f"BETWEEN needs (low, high) for column {brief(column.name)}, got {brief(value)}"
            )
        return [column.to_db(value[0]), column.to_db(value[1])]
    return column.to_db(value)


def _group(
    columns: Mapping[str, Column], table: str, filters: Mapping[Any, Any]
) -> list[list[Any]]:
    group: list[list[Any]] = []
    for name in filters:  # every column first, then values: an unknown name is the clearer error
        if not isinstance(name, str) or name not in columns:
            raise ValidationError(
                f"unknown column {brief(name)} in table {brief(table)} (columns: {', '.join(columns)})"
            )
    for name, spec in filters.items():
        column = columns.get(name) if isinstance(name, str) else None
        if column is None:
            raise ValidationError(
                f"unknown column {brief(name)} in table {brief(table)} (columns: {', '.join(columns)})"
            )
        if spec is None:
            group.append([name, "IS", None])
        elif _is_condition(spec):
            op = _operator(spec[0], name)
            group.append([name, op, _convert(column, op, spec[1])])
        elif isinstance(spec, list) and spec and all(_is_condition(c) for c in spec):
            for op_raw, value in spec:
                op = _operator(op_raw, name)
                group.append([name, op, _convert(column, op, value)])
        elif isinstance(spec, (list, tuple, set, dict)):
            raise ValidationError(
                f"filter for column {brief(name)} must be a value, None, or a list of "
                f"(operator, value) pairs such as [('>', 20)]; got {brief(spec)}"
            )
        else:
            group.append([name, "=", column.to_db(spec)])
    return group


def normalize_filters(
    columns: Mapping[str, Column], table: str, filters: Any
) -> list[list[list[Any]]] | None:
    """Check ``filters`` against the model's columns and return the wire ``where`` (or None).

    Raises:
        ValidationError: an unknown column or operator, or a malformed filter.
    """
    if filters is None:
        return None
    if type(filters) is dict and len(filters) == 1:
        # The commonest filter by far, {"id": 5} (every point read): the same result as
        # _group's, without its general loops. One condition is always within the limits.
        ((name, spec),) = filters.items()
        column = columns.get(name) if type(name) is str else None
        if column is not None and type(spec) in _PLAIN_VALUES:
            return [[[name, "=", column.to_db(spec)]]]
    if isinstance(filters, Mapping):
        group = _group(columns, table, filters)
        check_where_size([group])  # before anything is sent: the same limit in every mode
        return [group] if group else None
    if isinstance(filters, (list, tuple)):
        groups = []
        for item in filters:
            if not isinstance(item, Mapping):
                raise ValidationError(
                    f"a list of filters must hold maps (ORed groups), got {brief(item)}"
                )
            group = _group(columns, table, item)
            if not group:
                return None  # an empty group matches every row
            groups.append(group)
        check_where_size(groups)
        return groups or None
    raise ValidationError(
        f"filters must be a map like {{'age': [('>', 20)]}} or a list of such maps, got {brief(filters)}"
    )
