"""``BaseModel``: a plain class per table, CRUD as classmethods, rows as dicts.

Defining a subclass registers it; its table is created by ``init_engine`` or,
for a model defined later, on its first use (once). The classmethods check
everything against the model, build protocol requests and hand them to the
manager's transport; they never build SQL themselves.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import decimal
import functools
import itertools
import json
import operator
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from ..client import AsyncDatabaseManager, Change
from ..client.rows import dict_rows
from ..engine import check_identifier
from ..engine.schema import check_expression
from ..protocol.errors import ValidationError, brief
from ..protocol.messages import check_idempotency_key
from .columns import Column
from .filters import normalize_filters
from .rows import RowT, check_row_type

if TYPE_CHECKING:
    import pydantic

__all__ = ["BaseModel"]

Row = dict[str, Any]
_INT_MAX = 2**63 - 1
T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")


class _instance_or_class(Generic[T]):
    """A method bound to the instance when called on one, to the class otherwise."""

    def __init__(self, func: Callable[..., T]) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, instance: object, owner: type) -> Callable[..., T]:
        return functools.partial(self.func, owner if instance is None else instance)


class BaseModel(Generic[RowT]):
    """Base class of every model; ``BaseModel[UserRow]`` types its rows (see ``rows.py``).

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
    #: Composite indexes: ``[("last_name", "first_name"), ...]``.
    __indexes__: ClassVar[list[tuple[str, ...]]] = []
    #: Composite unique constraints: ``[("team", "number"), ...]``.
    __unique_together__: ClassVar[list[tuple[str, ...]]] = []
    #: Names of the primary-key columns.
    __pk__: ClassVar[tuple[str, ...]] = ()
    #: (name, column) of the columns whose default is called per insert.
    __callable_defaults__: ClassVar[list[tuple[str, Column]]] = []
    #: Log every committed change of this table for change feeds (:meth:`changes`):
    #: True, or ``{"old": True}`` to log old values of updates and deletes too; False
    #: stops logging (removes the triggers); None (the default) leaves the file as it is.
    __changes__: ClassVar[bool | dict[str, bool] | None] = None

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
            if column.check is not None:
                check_expression(column.check, name)
            if column.default is not None and not callable(column.default):
                column.to_db(column.default)  # a default the column cannot hold fails now
        for attr in ("__indexes__", "__unique_together__"):
            for group in getattr(cls, attr):
                if not isinstance(group, (tuple, list)) or not group:
                    raise ValidationError(
                        f"{cls.__name__}.{attr} entries are tuples of column names"
                    )
                for name in group:
                    cls._column(name)
        pk = [name for name, column in columns.items() if column.primary_key]
        cls.__pk__ = tuple(pk)
        cls.__callable_defaults__ = [(n, c) for n, c in columns.items() if callable(c.default)]
        check_row_type(cls, BaseModel)
        AsyncDatabaseManager._models[table] = cls

    @classmethod
    def schema(cls, kind: str = "read") -> type[pydantic.BaseModel]:
        """A pydantic v2 model of ``kind`` ("create", "update", "read"); see ``schemas.py``."""
        from .schemas import model_schema

        return model_schema(cls, kind)

    # ------------------------------------------------------------ helpers

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
    async def changes(
        cls, after: int | str | None = None, filters: Any = None
    ) -> AsyncGenerator[Change, None]:
        """Follow this table's committed changes: the backlog after ``after``, then live ones.

        Needs ``__changes__ = True`` on the model (or the table in ``init_engine(changes=)``).
        ``after`` is a ``Change.seq`` to resume after, ``"now"`` or None (everything the
        log retains); ``filters`` are :meth:`fetch`'s, applied to the changed row (to the
        old values of a delete, which only match when the model logs them).

        Example::

            async for change in User.changes(after="now", filters={"age": [(">", 20)]}):
                print(change.op, change.pk, change.row)

        Raises:
            ChangesExpiredError: the cursor fell off the retained log (resync, then "now").
        """
        db = await cls._db()
        feed = db.changes(
            [cls.__tablename__], after, where=cls._where(filters), convert=cls._change
        )
        try:
            async for change in feed:
                yield change
        finally:
            await feed.aclose()

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
        db = AsyncDatabaseManager._instance
        if db is None or cls not in db._ready:
            return cls._request_first(request)
        return db.request(request)

    @classmethod
    async def _request_first(cls, request: dict[str, Any]) -> Any:
        db = await cls._db()
        return await db.request(request)

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
        rows = result["rows"]
        columns = cls.__columns__ if scope is None else scope
        converters = []
        for name in names:
            column = columns.get(name)
            if column is not None and column.from_db is not None:
                converters.append((name, column.from_db))
        out = dict_rows(names, rows)
        for name, convert in converters:
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
            if not (isinstance(model, type) and issubclass(model, BaseModel) and model.__columns__):
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
        scope, joins = cls._scope(join)
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
        for key, value in (("limit", limit), ("offset", offset)):
            if value is not None:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not 0 <= value <= _INT_MAX
                ):
                    raise ValidationError(
                        f"{key} must be a non-negative integer, got {brief(value)}"
                    )
                request[key] = value
        return request, scope

    @classmethod
    def _guard(cls, where: Any, all_rows: bool, op: str) -> None:
        if not isinstance(all_rows, bool):
            raise ValidationError(f"all_rows must be True or False, got {brief(all_rows)}")
        if where is None and not all_rows:
            raise ValidationError(
                f"{op} without filters would touch every row; pass filters, or all_rows=True to mean it"
            )

    # ------------------------------------------------------------ CRUD

    @classmethod
    async def insert(
        cls,
        data: Mapping[str, Any],
        on_conflict: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """Insert one row and return its primary key (the rowid for an INTEGER key).

        Args:
            data: column -> value.
            on_conflict: ``"ignore"`` skips a row that violates a unique constraint
                (``INSERT OR IGNORE``) and returns None for it.
            idempotency_key: a key of the caller's (an HTTP ``Idempotency-Key``): a
                second call with the same key and data returns the first call's result
                and writes nothing (see README, "Exactly-once writes"). Every write
                method takes it.

        Raises:
            ValidationError: unknown column or a value the column cannot hold.
            IntegrityError: a constraint refused the row.
        """
        values = cls._values(data, insert=True)
        request: dict[str, Any] = {"op": "insert", "table": cls.__tablename__, "values": values}
        if on_conflict is not None:
            if on_conflict != "ignore":
                raise ValidationError(
                    f"on_conflict must be 'ignore' or None, got {brief(on_conflict)}"
                )
            request["on_conflict"] = on_conflict
        return await cls._request(_keyed(request, idempotency_key))

    @classmethod
    async def upsert(
        cls,
        data: Mapping[str, Any],
        conflict: Iterable[str] | str,
        update: Iterable[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """Insert a row, or update the row it collides with; return that row's primary key.

        Uses SQLite's ``INSERT ... ON CONFLICT (conflict) DO UPDATE``: one statement,
        never delete-and-insert.

        Args:
            data: column -> value; must include the ``conflict`` columns.
            conflict: the columns of the primary key or of a unique index.
            update: the columns to change on conflict (default: all given but ``conflict``).

        Raises:
            ValidationError: ``conflict`` is not the primary key or a unique index.

        Example::

            await User.upsert({"username": "alice", "age": 31}, conflict=["username"])
        """
        values = cls._values(data, insert=True)
        request = cls._upsert_request("upsert", conflict, update)
        request["values"] = values
        return await cls._request(_keyed(request, idempotency_key))

    @classmethod
    async def upsert_many(
        cls,
        rows: Iterable[Mapping[str, Any]],
        conflict: Iterable[str] | str,
        update: Iterable[str] | None = None,
        chunk_size: int = 1000,
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """:meth:`upsert` for many rows, ``chunk_size`` per statement; returns rows processed."""
        base = cls._upsert_request("upsert_many", conflict, update)
        return await cls._run_many(rows, chunk_size, base, idempotency_key)

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
    async def insert_many(
        cls,
        rows: Iterable[Mapping[str, Any]],
        chunk_size: int = 1000,
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Insert many rows, ``chunk_size`` per request (one prepared statement each).

        All-or-nothing: when the rows take more than one request they run in
        one transaction. Returns the number of rows inserted. With
        ``idempotency_key`` the rows must fit one request (``chunk_size``).
        """
        return await cls._run_many(rows, chunk_size, {"op": "insert_many"}, idempotency_key)

    @classmethod
    async def _run_many(
        cls,
        rows: Iterable[Mapping[str, Any]],
        chunk_size: int,
        base: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> int:
        """``rows`` as requests of ``chunk_size`` rows; several run in one transaction.

        Through a daemon (or a cluster) each request is sent as soon as its rows
        are converted, so the database works on the first while the rest are still
        being prepared.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValidationError(f"chunk_size must be a positive integer, got {brief(chunk_size)}")
        rows = rows if isinstance(rows, list) else list(rows)
        ready: list[dict[str, Any]] | None = None
        if len(rows) <= chunk_size:
            ready = cls._chunked(rows, chunk_size, base)
            if not ready:
                return 0
            if len(ready) == 1:
                return int(await cls._request(_keyed(ready[0], idempotency_key)))
        if idempotency_key is not None:
            raise ValidationError(
                f"idempotency_key needs the rows in one request: {len(rows)} rows are more "
                f"than chunk_size={chunk_size}; pass a larger chunk_size (or split the rows "
                "into calls with a key each)"
            )
        db = await cls._db()
        if ready is None and db.mode == "embedded":
            # Embedded, the engine's thread would only compete with the conversion for
            # the GIL: convert everything first. Otherwise another process works meanwhile.
            ready = cls._chunked(rows, chunk_size, base)

        def batches() -> Iterator[list[dict[str, Any]]]:
            if ready is not None:
                yield ready
                return
            for start in range(0, len(rows), chunk_size):
                yield cls._chunked(rows[start : start + chunk_size], chunk_size, base)

        pending: list[asyncio.Future[Any]] = []
        async with db.transaction():
            try:
                for batch in batches():
                    for request in batch:
                        pending.append(asyncio.ensure_future(db.request(request)))
                    await asyncio.sleep(0)  # let it go out now
            except BaseException:
                # A later chunk is invalid (or we are cancelled): the transaction rolls
                # back; what was sent is dropped, not left unawaited.
                for future in pending:
                    future.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise
            # Pipelined, in order, one transaction: no round trip per chunk.
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            total = 0
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                total += int(outcome)
        return total

    @classmethod
    def _chunked(
        cls, rows: list[Mapping[str, Any]], chunk_size: int, base: dict[str, Any]
    ) -> list[dict[str, Any]]:
        requests: list[dict[str, Any]] = []
        for names, group_rows in cls._row_groups(rows):
            for start in range(0, len(group_rows), chunk_size):
                request = dict(base)
                request["table"] = cls.__tablename__
                request["columns"] = list(names)
                request["rows"] = group_rows[start : start + chunk_size]
                requests.append(request)
        return requests

    @classmethod
    def _row_groups(
        cls, rows: Iterable[Mapping[str, Any]]
    ) -> list[tuple[tuple[str, ...], list[list[Any]]]]:
        """Rows as value lists, grouped by the columns they name (one statement per group)."""
        rows = rows if isinstance(rows, list) else list(rows)
        columns = cls.__columns__
        if rows and type(rows[0]) is dict:
            names = tuple(rows[0])
            defaults = [d for d in cls.__callable_defaults__ if d[0] not in names]
            if names and not defaults and all(n in columns for n in names):
                # Hot path (bulk inserts): every row a dict naming the same columns (in
                # any order). One converter per column, no per-row key work.
                width = len(names)
                if all(type(row) is dict and len(row) == width for row in rows):
                    pick = operator.itemgetter(*names)
                    try:
                        if width == 1:
                            out = [[value] for value in map(pick, rows)]
                        else:
                            out = list(map(list, map(pick, rows)))
                    except KeyError:
                        pass  # a row names another column: the general path says which
                    else:
                        for index, name in enumerate(names):
                            columns[name].convert_rows(out, index)
                        return [(names, out)]
        order = list(columns)
        groups: list[tuple[tuple[str, ...], list[list[Any]]]] = []
        converted = [cls._values(row, insert=True) for row in rows]
        for key, group in itertools.groupby(
            converted, key=lambda v: tuple(sorted(v, key=order.index))
        ):
            group_rows = [[values[n] for n in key] for values in group]
            if not key:
                key = (order[0],)
                group_rows = [[None] for _ in group_rows]
            groups.append((key, group_rows))
        return groups

    @classmethod
    async def fetch(
        cls,
        filters: Any = None,
        columns: Iterable[str] | None = None,
        order_by: Iterable[str] | str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        join: Iterable[Any] | None = None,
    ) -> list[RowT]:
        """Return matching rows as plain dicts (JSON-ready apart from bytes/dates).

        Args:
            filters: ``{"age": [(">", 20), ("<", 40)]}``, shorthand ``{"age": 30}``,
                ``{"name": None}`` for IS NULL, or a list of such maps (OR).
            columns: names to return (default: all, in table order).
            order_by: names, ``"-age"`` for descending.
            limit, offset: paging.
            join: models to join along declared foreign keys: ``[User]`` (inner) or
                ``[(User, "left")]``. Their columns are named ``"user.username"`` in
                ``columns``, ``filters``, ``order_by`` and in the result.

        Example::

            await Post.fetch(join=[User], columns=["post.title", "user.username"],
                             filters={"user.age": [(">", 20)]})
        """
        request, scope = cls._select(filters, columns, order_by, limit, offset, join)
        return cast("list[RowT]", cls._rows(await cls._request(request), scope))

    @classmethod
    async def fetch_one(
        cls,
        filters: Any = None,
        columns: Iterable[str] | None = None,
        order_by: Iterable[str] | str | None = None,
        offset: int | None = None,
        join: Iterable[Any] | None = None,
    ) -> RowT | None:
        """The first matching row, or None."""
        # fetch's two lines, not a call of it: one coroutine less per point read.
        request, scope = cls._select(filters, columns, order_by, 1, offset, join)
        rows = cls._rows(await cls._request(request), scope)
        return cast("RowT", rows[0]) if rows else None

    @classmethod
    async def count(cls, filters: Any = None) -> int:
        """Number of matching rows."""
        request: dict[str, Any] = {"op": "count", "table": cls.__tablename__}
        where = cls._where(filters)
        if where is not None:
            request["where"] = where
        return int(await cls._request(request))

    @classmethod
    async def update(
        cls,
        data: Mapping[str, Any],
        filters: Any = None,
        *,
        all_rows: bool = False,
        idempotency_key: str | None = None,
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
        return int(await cls._request(_keyed(request, idempotency_key)))

    @classmethod
    async def delete(
        cls,
        filters: Any = None,
        *,
        all_rows: bool = False,
        idempotency_key: str | None = None,
    ) -> int:
        """Delete matching rows; returns how many. Refuses to run without filters unless ``all_rows=True``."""
        where = cls._where(filters)
        cls._guard(where, all_rows, "delete")
        request: dict[str, Any] = {"op": "delete", "table": cls.__tablename__, "where": where}
        if all_rows:
            request["all_rows"] = True
        return int(await cls._request(_keyed(request, idempotency_key)))

    # ------------------------------------------------------------ beyond CRUD

    @classmethod
    async def exists(cls, filters: Any = None) -> bool:
        """Whether any row matches."""
        first = next(iter(cls.__columns__))
        return await cls.fetch_one(filters, columns=[first]) is not None

    @classmethod
    async def distinct(cls, column: str, filters: Any = None) -> list[Any]:
        """The distinct values of ``column`` among matching rows, in ascending order."""
        request, scope = cls._select(filters, [column], [column], None, None)
        request["distinct"] = True
        return [row[column] for row in cls._rows(await cls._request(request), scope)]

    @classmethod
    async def aggregate(
        cls,
        aggregates: Mapping[str, tuple[str, str]],
        filters: Any = None,
        group_by: Iterable[str] | str | None = None,
        having: Any = None,
        order_by: Iterable[str] | str | None = None,
        limit: int | None = None,
        join: Iterable[Any] | None = None,
    ) -> list[Row]:
        """Aggregate matching rows, optionally per group.

        Args:
            aggregates: result name -> (function, column): count, sum, avg, min, max,
                group_concat; ``("count", "*")`` counts rows.
            group_by: columns to group by (they come first in each result row).
            having: filters on result names, in the ``filters`` form.
            order_by: result names or columns, ``"-n"`` for descending.

        Example::

            await User.aggregate({"n": ("count", "*"), "avg_age": ("avg", "age")},
                                 group_by=["team"], having={"n": [(">", 1)]}, order_by=["-n"])
        """
        scope, joins = cls._scope(join)
        if not isinstance(aggregates, Mapping) or not aggregates:
            raise ValidationError("aggregate needs a map like {'n': ('count', '*')}")
        request: dict[str, Any] = {"op": "aggregate", "table": cls.__tablename__}
        specs: dict[str, list[Any]] = {}
        for alias, spec in aggregates.items():
            if not isinstance(spec, (tuple, list)) or len(spec) != 2:
                raise ValidationError(
                    f"aggregate {brief(alias)} must be (function, column), got {brief(spec)}"
                )
            if spec[1] != "*":
                cls._names(scope, [spec[1]])
            specs[alias] = [spec[0], spec[1]]
        request["aggregates"] = specs
        if joins:
            request["join"] = joins
        where = normalize_filters(scope, cls.__tablename__, filters)
        if where is not None:
            request["where"] = where
        groups = [] if group_by is None else cls._names(scope, group_by)
        if groups:
            request["group_by"] = groups
        if having is not None:
            result_columns = {name: scope[name] for name in groups}
            result_columns.update({alias: Column("NUMERIC") for alias in specs})
            request["having"] = normalize_filters(result_columns, cls.__tablename__, having)
        if order_by is not None:
            request["order_by"] = cls._order(scope, order_by, extra=specs)
        if limit is not None:
            request["limit"] = limit
        return cls._rows(await cls._request(request), scope)

    @classmethod
    def _key(cls) -> str:
        if len(cls.__pk__) != 1:
            raise ValidationError(
                f"{cls.__name__} needs a single-column primary key for this "
                f"(it has {', '.join(cls.__pk__) or 'none'})"
            )
        return cls.__pk__[0]

    @classmethod
    async def iterate(
        cls, filters: Any = None, batch_size: int = 500, columns: Iterable[str] | None = None
    ) -> AsyncIterator[RowT]:
        """Yield matching rows in primary-key order, ``batch_size`` at a time.

        Each batch is its own short read (keyset pagination on the primary key),
        so a large table streams without being held in memory, and in daemon
        mode no transaction or writer is held between batches.

        Example::

            async for user in User.iterate(filters={"age": [(">", 20)]}, batch_size=500):
                ...
        """
        key = cls._key()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size must be a positive integer, got {brief(batch_size)}")
        wanted = None if columns is None else cls._names(cls.__columns__, columns)
        fetched = None if wanted is None else ([*wanted, key] if key not in wanted else wanted)
        base = cls._where(filters) or [[]]
        last: Any = None
        while True:
            request, scope = cls._select(None, fetched, [key], batch_size, None)
            if last is not None:
                request["where"] = [[*group, [key, ">", last]] for group in base]
            elif base != [[]]:
                request["where"] = base
            rows = cls._rows(await cls._request(request), scope)
            if not rows:
                return
            last = cls.__columns__[key].to_db(rows[-1][key])
            for row in rows:
                if wanted is not None and key not in wanted:
                    del row[key]
                yield cast("RowT", row)
            if len(rows) < batch_size:
                return

    @classmethod
    async def fetch_page(
        cls,
        after: str | None = None,
        order_by: str | None = None,
        size: int = 50,
        filters: Any = None,
        columns: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Keyset pagination: ``{"rows": [...], "next": cursor or None}``.

        Pass the ``next`` of one page as ``after`` to get the following page.
        Unlike ``offset``, a page never skips or repeats rows when rows are
        inserted before it, and its cost does not grow with the page number.

        Args:
            after: the cursor from the previous page (None for the first page).
            order_by: one column, ``"-created"`` for descending (default: the primary key);
                ties are broken by the primary key.
            size: rows per page.
        """
        key = cls._key()
        order = order_by or key
        desc = order.startswith("-")
        column = order.lstrip("+-")
        cls._column(column)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValidationError(f"size must be a positive integer, got {brief(size)}")
        sort = [order] if column == key else [order, ("-" if desc else "") + key]
        wanted = None if columns is None else cls._names(cls.__columns__, columns)
        fetched = None if wanted is None else list(dict.fromkeys([*wanted, column, key]))
        request, scope = cls._select(filters, fetched, sort, size + 1, None)
        if after is not None:
            value, last_key = _decode_cursor(after)
            cmp = "<" if desc else ">"
            if column == key:
                keyset = [[[key, cmp, last_key]]]
            else:
                keyset = [[[column, cmp, value]], [[column, "=", value], [key, cmp, last_key]]]
            base = request.get("where") or [[]]
            request["where"] = [[*group, *extra] for group in base for extra in keyset]
        rows = cls._rows(await cls._request(request), scope)
        more = len(rows) > size
        rows = rows[:size]
        cursor = None
        if more and rows:
            last = rows[-1]
            cursor = _encode_cursor(
                cls.__columns__[column].to_db(last[column]), cls.__columns__[key].to_db(last[key])
            )
        if wanted is not None:
            for row in rows:
                for extra_name in (column, key):
                    if extra_name not in wanted:
                        row.pop(extra_name, None)
        return {"rows": rows, "next": cursor}

    # ------------------------------------------------------------ instances

    def __init__(self, **values: Any) -> None:
        """A row as an object: ``User(username="alice", age=30)``; unknown names are an error."""
        for name, value in values.items():
            self._column(name)
            setattr(self, name, value)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__columns__)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_row(cls: type[M], row: Mapping[str, Any]) -> M:
        """A model instance from a row dict (as ``fetch`` returns); unknown keys are an error."""
        return cls(**row)

    @classmethod
    async def get(cls: type[M], pk: Any) -> M | None:
        """The row with primary key ``pk`` as an instance, or None."""
        if len(cls.__pk__) > 1:
            if not isinstance(pk, (tuple, list)) or len(pk) != len(cls.__pk__):
                raise ValidationError(
                    f"{cls.__name__}.get takes a tuple of {', '.join(cls.__pk__)}"
                )
            filters = dict(zip(cls.__pk__, pk))
        else:
            filters = {cls._key(): pk}
        row = await cls.fetch_one(filters)
        return None if row is None else cls.from_row(row)

    def to_dict(self) -> Row:
        """The instance's column values (Python types: dates stay dates)."""
        return {name: getattr(self, name) for name in self.__columns__}

    @_instance_or_class
    def json(target: Any, rows: Iterable[Any] | None = None, **kwargs: Any) -> str:
        """JSON text: ``user.json()`` for one instance, ``User.json(rows)`` for rows or instances.

        Dates and datetimes become ISO 8601 strings, bytes base64, JSON columns stay structured.
        """
        if isinstance(target, type):
            if rows is None:
                raise ValidationError(f"{target.__name__}.json(rows) needs the rows to serialize")
            data: Any = [r.to_dict() if isinstance(r, BaseModel) else dict(r) for r in rows]
        else:
            data = target.to_dict()
        return json.dumps(data, default=_json_default, **kwargs)

    def _pk_filters(self) -> dict[str, Any]:
        if not self.__pk__:
            raise ValidationError(f"{type(self).__name__} has no primary key to find this row by")
        values = {name: getattr(self, name) for name in self.__pk__}
        if any(v is None for v in values.values()):
            raise ValidationError(f"this {type(self).__name__} has no primary key value yet")
        return values

    async def save(self, *, idempotency_key: str | None = None) -> Any:
        """Insert the instance, or update its row if its primary key is set; returns the key."""
        values = {n: getattr(self, n) for n in self.__columns__ if n in self.__dict__}
        pk = self.__pk__
        if not pk or any(values.get(name) is None for name in pk):
            for name in pk:
                values.pop(name, None)
            key = await type(self).insert(values, idempotency_key=idempotency_key)
            if len(pk) == 1:
                setattr(self, pk[0], key)
            return key
        if set(values) == set(pk):
            return pk[0] if len(pk) == 1 else [values[n] for n in pk]
        return await type(self).upsert(values, conflict=list(pk), idempotency_key=idempotency_key)

    async def delete_instance(self, *, idempotency_key: str | None = None) -> int:
        """Delete this instance's row (by primary key); returns rows deleted (0 or 1)."""
        return await type(self).delete(self._pk_filters(), idempotency_key=idempotency_key)


def _keyed(request: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """``request`` with the caller's idempotency key, if one was given (checked here)."""
    if idempotency_key is not None:
        request["idempotency_key"] = check_idempotency_key(idempotency_key)
    return request


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode_cursor(value: Any, key: Any) -> str:
    if isinstance(value, bytes):
        value = {"$b": base64.b64encode(value).decode("ascii")}
    raw = json.dumps([value, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(cursor: Any) -> tuple[Any, Any]:
    try:
        value, key = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, AttributeError, UnicodeError):
        raise ValidationError(
            f"invalid page cursor {brief(cursor)}: pass the 'next' of a page"
        ) from None
    if isinstance(value, dict) and "$b" in value:
        value = base64.b64decode(value["$b"])
    return value, key
