"""``BaseModel``: a plain class per table, CRUD as classmethods, rows as dicts.

Defining a subclass registers it; its table is created by ``init_engine`` or,
for a model defined later, on its first use (once). The classmethods check
everything against the model, build protocol requests and hand them to the
manager's transport; they never build SQL themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..client import AsyncDatabaseManager
from ..engine import check_identifier
from ..protocol.errors import ValidationError
from .columns import Column
from .filters import normalize_filters

__all__ = ["BaseModel"]

Row = dict[str, Any]


class BaseModel:
    """Base class of every model.

    Example::

        class User(BaseModel):                      # table "user"
            id = Column("INTEGER", primary_key=True)
            username = Column("TEXT", nullable=False)
            age = Column("INTEGER")

        user_id = await User.insert({"username": "Alice", "age": 30})
        adults = await User.fetch(filters={"age": [(">=", 18)]}, order_by=["-age"])
    """

    #: Table name; defaults to the class name in lower case.
    __tablename__: ClassVar[str]
    #: The model's columns by name, in definition order.
    __columns__: ClassVar[dict[str, Column]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        columns: dict[str, Column] = {}
        for base in reversed(cls.__mro__[1:]):
            columns.update(getattr(base, "__columns__", {}))
        columns.update({k: v for k, v in cls.__dict__.items() if isinstance(v, Column)})
        cls.__columns__ = columns
        if "__tablename__" not in cls.__dict__:
            cls.__tablename__ = cls.__name__.lower()
        if not columns:
            return  # an abstract base holding shared behaviour, not a table
        table = check_identifier(cls.__tablename__, "table name")
        for name, column in columns.items():
            check_identifier(name, f"column name in model {cls.__name__}")
            column.table = table
        AsyncDatabaseManager._models[table] = cls

    # ------------------------------------------------------------ helpers

    @classmethod
    def _table_request(cls) -> dict[str, Any]:
        if not cls.__columns__:
            raise ValidationError(f"model {cls.__name__} has no columns")
        return {
            "op": "ensure_table",
            "table": cls.__tablename__,
            "columns": [column.spec() for column in cls.__columns__.values()],
        }

    @classmethod
    async def _db(cls) -> AsyncDatabaseManager:
        db = AsyncDatabaseManager.get()
        if cls not in db._ready:
            await db.ensure_table(cls)
        return db

    @classmethod
    def _column(cls, name: Any) -> Column:
        column = cls.__columns__.get(name) if isinstance(name, str) else None
        if column is None:
            raise ValidationError(
                f"unknown column {name!r} in table {cls.__tablename__!r} "
                f"(columns: {', '.join(cls.__columns__)})"
            )
        return column

    @classmethod
    def _values(cls, data: Any, *, insert: bool) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise ValidationError(
                f"{cls.__name__} data must be a dict of column to value, got {type(data).__name__}"
            )
        values = {name: cls._column(name).to_db(value) for name, value in data.items()}
        if insert:
            for name, column in cls.__columns__.items():
                if name not in values and callable(column.default):
                    values[name] = column.to_db(column.default())
        return values

    @classmethod
    def _where(cls, filters: Any) -> list[list[list[Any]]] | None:
        return normalize_filters(cls.__columns__, cls.__tablename__, filters)

    @classmethod
    def _rows(cls, result: Mapping[str, Any]) -> list[Row]:
        names: list[str] = result["columns"]
        rows = result["rows"]
        converters = []
        for name in names:
            column = cls.__columns__.get(name)
            if column is not None and column.from_db is not None:
                converters.append((name, column.from_db))
        if not converters:
            return [dict(zip(names, row)) for row in rows]
        out = []
        for row in rows:
            item = dict(zip(names, row))
            for name, convert in converters:
                item[name] = convert(item[name])
            out.append(item)
        return out

    @classmethod
    def _select(
        cls,
        filters: Any,
        columns: Iterable[str] | None,
        order_by: Iterable[str] | str | None,
        limit: int | None,
        offset: int | None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"op": "fetch", "table": cls.__tablename__}
        where = cls._where(filters)
        if where is not None:
            request["where"] = where
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            request["columns"] = [cls._column(c).name for c in columns]
        if order_by is not None:
            if isinstance(order_by, str):
                order_by = [order_by]
            order = list(order_by)
            for item in order:
                if not isinstance(item, str) or not item:
                    raise ValidationError(f"order_by takes column names like '-age', got {item!r}")
                cls._column(item[1:] if item[0] in "+-" else item)
            request["order_by"] = order
        for key, value in (("limit", limit), ("offset", offset)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValidationError(f"{key} must be a non-negative integer, got {value!r}")
                request[key] = value
        return request

    @classmethod
    def _guard(cls, where: Any, all_rows: bool, op: str) -> None:
        if where is None and not all_rows:
            raise ValidationError(
                f"{op} without filters would touch every row; pass filters, or all_rows=True to mean it"
            )

    # ------------------------------------------------------------ CRUD

    @classmethod
    async def insert(cls, data: Mapping[str, Any]) -> Any:
        """Insert one row and return its primary key (the rowid for an INTEGER key).

        Raises:
            ValidationError: unknown column or a value the column cannot hold.
            IntegrityError: a constraint refused the row.
        """
        values = cls._values(data, insert=True)
        db = await cls._db()
        return await db.request({"op": "insert", "table": cls.__tablename__, "values": values})

    @classmethod
    async def insert_many(cls, rows: Iterable[Mapping[str, Any]], chunk_size: int = 1000) -> int:
        """Insert many rows, ``chunk_size`` per request (one prepared statement each).

        All-or-nothing: when the rows take more than one request they run in
        one transaction. Returns the number of rows inserted.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValidationError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        order = list(cls.__columns__)
        requests: list[dict[str, Any]] = []
        # Rows that name the same columns share a statement; others get their own.
        converted = [cls._values(row, insert=True) for row in rows]
        for names, group in itertools.groupby(
            converted, key=lambda v: tuple(sorted(v, key=order.index))
        ):
            group_rows = [[values[n] for n in names] for values in group]
            if not names:
                names = (order[0],)
                group_rows = [[None] for _ in group_rows]
            for start in range(0, len(group_rows), chunk_size):
                requests.append(
                    {
                        "op": "insert_many",
                        "table": cls.__tablename__,
                        "columns": list(names),
                        "rows": group_rows[start : start + chunk_size],
                    }
                )
        if not requests:
            return 0
        db = await cls._db()
        if len(requests) == 1:
            return int(await db.request(requests[0]))
        total = 0
        async with db.transaction():
            for request in requests:
                total += int(await db.request(request))
        return total

    @classmethod
    async def fetch(
        cls,
        filters: Any = None,
        columns: Iterable[str] | None = None,
        order_by: Iterable[str] | str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Row]:
        """Return matching rows as plain dicts (JSON-ready apart from bytes/dates).

        Args:
            filters: ``{"age": [(">", 20), ("<", 40)]}``, shorthand ``{"age": 30}``,
                ``{"name": None}`` for IS NULL, or a list of such maps (OR).
            columns: names to return (default: all, in table order).
            order_by: names, ``"-age"`` for descending.
            limit, offset: paging.
        """
        request = cls._select(filters, columns, order_by, limit, offset)
        db = await cls._db()
        return cls._rows(await db.request(request))

    @classmethod
    async def fetch_one(
        cls,
        filters: Any = None,
        columns: Iterable[str] | None = None,
        order_by: Iterable[str] | str | None = None,
        offset: int | None = None,
    ) -> Row | None:
        """The first matching row, or None."""
        rows = await cls.fetch(filters, columns, order_by, 1, offset)
        return rows[0] if rows else None

    @classmethod
    async def count(cls, filters: Any = None) -> int:
        """Number of matching rows."""
        request: dict[str, Any] = {"op": "count", "table": cls.__tablename__}
        where = cls._where(filters)
        if where is not None:
            request["where"] = where
        db = await cls._db()
        return int(await db.request(request))

    @classmethod
    async def update(
        cls, data: Mapping[str, Any], filters: Any = None, *, all_rows: bool = False
    ) -> int:
        """Set ``data`` on matching rows; returns how many changed.

        Refuses to run without filters unless ``all_rows=True``.
        """
        values = cls._values(data, insert=False)
        if not values:
            raise ValidationError("update needs at least one column to change")
        where = cls._where(filters)
        cls._guard(where, all_rows, "update")
        request: dict[str, Any] = {
            "op": "update",
            "table": cls.__tablename__,
            "values": values,
            "where": where,
        }
        if all_rows:
            request["all_rows"] = True
        db = await cls._db()
        return int(await db.request(request))

    @classmethod
    async def delete(cls, filters: Any = None, *, all_rows: bool = False) -> int:
        """Delete matching rows; returns how many. Refuses to run without filters unless ``all_rows=True``."""
        where = cls._where(filters)
        cls._guard(where, all_rows, "delete")
        request: dict[str, Any] = {"op": "delete", "table": cls.__tablename__, "where": where}
        if all_rows:
            request["all_rows"] = True
        db = await cls._db()
        return int(await db.request(request))
