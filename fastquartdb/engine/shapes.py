"""Read shapes: what makes two fetches share their SQL text, so it is built once.

The engine keeps ``shape -> SELECT`` per connection (cleared with its schema
cache); a fetch of a known shape skips the checks and the string building of
:func:`~.statements.build_select` and only collects (and checks) its values.
At the rates of point reads (tens of thousands per second per process) that
building was a third of a read's cost.
"""

from __future__ import annotations

from typing import Any

__all__ = ["select_shape", "shape_params"]

_SCALAR_TYPES = frozenset({int, str, float, bytes, bool})
_INT_BOUND = 2**63


def select_shape(req: dict[str, Any]) -> tuple[Any, ...] | None:
    """What decides a fetch's SQL text but not its parameters, or None (not cached).

    Two fetches of one shape differ only in their values: the same table, columns,
    order, distinct, limit/offset presence, and conditions naming the same columns
    with the same operators and the same number of values (None is its own kind:
    it makes ``IS NULL``). Joins and anything unusual take the full build every time.
    """
    get = req.get  # read at tens of thousands of requests a second: one lookup of .get
    if get("join") is not None:
        return None
    columns, order, where = get("columns"), get("order_by"), get("where")
    if columns is not None:
        if type(columns) is not list:
            return None
        columns = tuple(columns)
    if order is not None:
        if type(order) is not list:
            return None
        order = tuple(order)
    shape: list[Any] = []
    if where is not None:
        if type(where) is not list:
            return None
        for group in where:
            if type(group) is not list or not group:
                return None
            for cond in group:
                if type(cond) is not list or len(cond) != 3:
                    return None
                value = cond[2]
                kind = type(value)
                if kind in _SCALAR_TYPES:
                    shape.append((cond[0], cond[1], 0))
                elif value is None:
                    shape.append((cond[0], cond[1], None))
                elif kind is list:
                    shape.append((cond[0], cond[1], len(value)))
                else:
                    return None
            shape.append(None)  # end of an OR group
    key = (
        get("table"),
        columns,
        order,
        get("distinct"),
        tuple(shape),
        get("limit") is None,
        get("offset") is None,
    )
    try:
        hash(key)
    except TypeError:  # an unhashable name: the full build says what is wrong
        return None
    return key


def shape_params(req: dict[str, Any]) -> list[Any] | None:
    """The parameters of a fetch whose shape is cached, or None when a value needs the
    full build (which checks it and says what is wrong)."""
    params: list[Any] = []
    where = req.get("where")
    if where is not None:
        for group in where:
            for cond in group:
                value = cond[2]
                if type(value) is list:
                    for item in value:
                        if type(item) not in _SCALAR_TYPES:
                            return None
                        params.append(item)
                elif value is not None:
                    params.append(value)
    limit, offset = req.get("limit"), req.get("offset")
    if limit is not None or offset is not None:
        params.append(-1 if limit is None else limit)
        if offset is not None:
            params.append(offset)
        for count in (limit, offset):
            if count is not None and (type(count) is not int or not 0 <= count < _INT_BOUND):
                return None
    for value in params:
        kind = type(value)
        if (kind is int and not -_INT_BOUND <= value < _INT_BOUND) or (
            kind is float and value != value
        ):
            return None
    return params
