"""Request building for models: every check a model makes before the engine sees a request.

Owns the ``ModelRequests`` mixin of ``BaseModel``: the model's table request, names
and values checked against its columns (``_column``, ``_values``, ``_names``,
``_order``), filters, joins and ``fetch`` requests (``_select``), the all-rows guard,
upsert requests, rows turned back into Python types, and sending a request through
the manager (creating the table on first use). Also :func:`keyed`, which adds a
caller's idempotency key. It builds protocol requests, never SQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, ClassVar

from ..client import AsyncDatabaseManager, Change
from ..client.rows import dict_rows
from ..protocol.errors import ValidationError, brief
from ..protocol.messages import check_idempotency_key
from .columns import Column
from .filters import normalize_filters

__all__ = ["ModelRequests", "Row", "keyed"]

Row = dict[str, Any]
_INT_MAX = 2**63 - 1


def _count(value: Any, what: str) -> int:
    """``value`` if it is a ``limit`` or ``offset`` SQLite can take, else ValidationError."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValidationError(f"{what} must be a non-negative integer, got {brief(value)}")
    if not 0 <= value <= _INT_MAX:
        raise ValidationError(f"{what} must be a non-negative integer, got {brief(value)}")
    return value


class ModelRequests:
    """Request-building classmethods of ``BaseModel`` (its class attributes are declared there)."""

    __tablename__: ClassVar[str]
    __columns__: ClassVar[dict[str, Column]]
    __indexes__: ClassVar[list[tuple[str, ...]]]
    __unique_together__: ClassVar[list[tuple[str, ...]]]
    __pk__: ClassVar[tuple[str, ...]]
    __callable_defaults__: ClassVar[list[tuple[str, Column]]]
    __from_db__: ClassVar[bool]
    __changes__: ClassVar[bool | dict[str, bool] | None]

    @classmethod
    def _table_request(cls) -> dict[str, Any]:
        if not cls.__columns__:
            raise ValidationError(f"model {cls.__name__} has no columns")
        request: dict[str, Any] = {
            "op": "ensure_table",
            "table": cls.__tablename__,
            "columns": [column.spec() for column in cls.__columns__.values()],
            "indexes": [list(group) for group in cls.__indexes__],
            "unique": [list(group) for group in cls.__unique_together__],
        }
        if cls.__changes__ is not None:
            request["changes"] = cls.__changes__
        return request

    @classmethod
    def _change(cls, change: Change) -> Change:
        """``change`` with its values turned into this model's Python types."""
        columns = cls.__columns__

        def typed(values: dict[str, Any] | None) -> dict[str, Any] | None:
            if values is None:
                return None
            out = dict(values)
            for name, value in values.items():
                column = columns.get(name)
                if column is not None and column.from_db is not None and value is not None:
                    out[name] = column.from_db(value)
            return out

        return dataclasses.replace(change, row=typed(change.row), old=typed(change.old))

    @classmethod
    def _request(cls, request: dict[str, Any]) -> Awaitable[Any]:
        """Send ``request`` through the manager, creating this model's table on first use.

        Not a coroutine itself: once the table is ready it hands back the manager's
        own, one frame less for every read and write.
        """
        db = AsyncDatabaseManager.ready_for(cls)
        if db is None:
            return cls._request_first(request)
        return db.request(request)

    @classmethod
    async def _request_first(cls, request: dict[str, Any]) -> Any:
        db = await cls._db()
        return await db.request(request)

    @classmethod
    async def _db(cls) -> AsyncDatabaseManager:
        db = AsyncDatabaseManager.get()
        await db.ensure_table(cls)  # returns at once once the table is ready
        return db

    @classmethod
    def _column(cls, name: Any) -> Column:
        column = cls.__columns__.get(name) if isinstance(name, str) else None
        if column is None:
            raise ValidationError(
                f"unknown column {brief(name)} in table {brief(cls.__tablename__)} "
                f"(columns: {', '.join(cls.__columns__)})"
            )
        return column

    @classmethod
    def _values(cls, data: Any, *, insert: bool) -> dict[str, Any]:
        columns_by_name = cls.__columns__
        if type(data) is dict:
            # Hot path (every insert and update): plain dict, known names.
            try:
                values = {name: columns_by_name[name].to_db(v) for name, v in data.items()}
            except (KeyError, TypeError, ValidationError):
                pass  # the slow path reports it: unknown names first, then values
            else:
                if insert and cls.__callable_defaults__:
                    for name, column in cls.__callable_defaults__:
                        if name not in values:
                            values[name] = column.to_db(column.default())
                return values
        if not isinstance(data, Mapping):
            raise ValidationError(
                f"{cls.__name__} data must be a dict of column to value, got {type(data).__name__}"
            )
        columns = [cls._column(name) for name in data]  # every name first, then values
        values = {c.name: c.to_db(value) for c, value in zip(columns, data.values())}
        if insert:
            for name, column in cls.__columns__.items():
                if name not in values and callable(column.default):
                    values[name] = column.to_db(column.default())
        return values

    @classmethod
    def _where(cls, filters: Any) -> list[list[list[Any]]] | None:
        return normalize_filters(cls.__columns__, cls.__tablename__, filters)

    @classmethod
    def _rows(
        cls, result: Mapping[str, Any], scope: Mapping[str, Column] | None = None
    ) -> list[Row]:
        names: list[str] = result["columns"]
        out = dict_rows(names, result["rows"])
        columns: Mapping[str, Column]
        if scope is None or scope is cls.__columns__:
            if not cls.__from_db__:
                return out  # no column of this model needs converting (the usual read)
            columns = cls.__columns__
        else:
            columns = scope
        for name in names:
            column = columns.get(name)
            if column is not None and column.from_db is not None:
                convert = column.from_db
                for item in out:
                    item[name] = convert(item[name])
        return out

    @classmethod
    def _scope(cls, join: Iterable[Any] | None) -> tuple[dict[str, Column], list[dict[str, Any]]]:
        """Names a query may use: this model's columns, and ``table.column`` of joined models."""
        if not join:
            return cls.__columns__, []
        scope = dict(cls.__columns__)
        scope.update({f"{cls.__tablename__}.{n}": c for n, c in cls.__columns__.items()})
        specs = []
        for entry in join:
            model, kind = entry if isinstance(entry, tuple) else (entry, "inner")
            if not (
                isinstance(model, type) and issubclass(model, ModelRequests) and model.__columns__
            ):
                raise ValidationError(
                    f"join takes model classes, or (Model, 'left') pairs; got {brief(entry)}"
                )
            if kind not in ("inner", "left"):
                raise ValidationError(f"join kind must be 'inner' or 'left', got {brief(kind)}")
            scope.update({f"{model.__tablename__}.{n}": c for n, c in model.__columns__.items()})
            specs.append({"table": model.__tablename__, "kind": kind})
        return scope, specs

    @classmethod
    def _names(cls, scope: Mapping[str, Column], names: Any) -> list[str]:
        if isinstance(names, str):
            names = [names]
        out = []
        for name in names:
            if not isinstance(name, str) or name not in scope:
                raise ValidationError(
                    f"unknown column {brief(name)} in table {brief(cls.__tablename__)} "
                    f"(columns: {', '.join(scope)})"
                )
            out.append(name)
        return out

    @classmethod
    def _order(
        cls, scope: Mapping[str, Column], order_by: Any, extra: Iterable[str] = ()
    ) -> list[str]:
        if isinstance(order_by, str):
            order_by = [order_by]
        if not isinstance(order_by, (list, tuple)):
            raise ValidationError(
                f"order_by takes a column name or a list like ['-age', 'username'], got {brief(order_by)}"
            )
        order = list(order_by)
        for item in order:
            if not isinstance(item, str) or not item:
                raise ValidationError(f"order_by takes column names like '-age', got {brief(item)}")
            name = item[1:] if item[0] in "+-" else item
            if name not in scope and name not in extra:
                cls._names(scope, [name])
        return order

    @classmethod
    def _select(
        cls,
        filters: Any,
        columns: Iterable[str] | None,
        order_by: Iterable[str] | str | None,
        limit: int | None,
        offset: int | None,
        join: Iterable[Any] | None = None,
    ) -> tuple[dict[str, Any], Mapping[str, Column]]:
        if join:
            scope, joins = cls._scope(join)
        else:
            scope, joins = cls.__columns__, None
        request: dict[str, Any] = {"op": "fetch", "table": cls.__tablename__}
        if joins:
            request["join"] = joins
        where = normalize_filters(scope, cls.__tablename__, filters)
        if where is not None:
            request["where"] = where
        if columns is not None:
            request["columns"] = cls._names(scope, columns)
        if order_by is not None:
            request["order_by"] = cls._order(scope, order_by)
        if limit is not None:
            request["limit"] = _count(limit, "limit")
        if offset is not None:
            request["offset"] = _count(offset, "offset")
        return request, scope

    @classmethod
    def _guard(cls, where: Any, all_rows: bool, op: str) -> None:
        if not isinstance(all_rows, bool):
            raise ValidationError(f"all_rows must be True or False, got {brief(all_rows)}")
        if where is None and not all_rows:
            raise ValidationError(
                f"{op} without filters would touch every row; pass filters, or all_rows=True to mean it"
            )

    @classmethod
    def _upsert_request(
        cls, op: str, conflict: Iterable[str] | str, update: Iterable[str] | None
    ) -> dict[str, Any]:
        conflict_cols = [conflict] if isinstance(conflict, str) else list(conflict)
        for name in conflict_cols:
            cls._column(name)
        request: dict[str, Any] = {"op": op, "table": cls.__tablename__, "conflict": conflict_cols}
        if update is not None:
            update_cols = [update] if isinstance(update, str) else list(update)
            for name in update_cols:
                cls._column(name)
            request["update"] = update_cols
        return request

    @classmethod
    def _key(cls) -> str:
        if len(cls.__pk__) != 1:
            raise ValidationError(
                f"{cls.__name__} needs a single-column primary key for this "
                f"(it has {', '.join(cls.__pk__) or 'none'})"
            )
        return cls.__pk__[0]


def keyed(request: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """``request`` with the caller's idempotency key, if one was given (checked here)."""
    if idempotency_key is not None:
        request["idempotency_key"] = check_idempotency_key(idempotency_key)
    return request
