"""``BaseModel``: a plain class per table, CRUD as classmethods, rows as dicts.

Defining a subclass registers it; its table is created by ``init_engine`` or,
for a model defined later, on its first use (once). The classmethods check
everything against the model, build protocol requests and hand them to the
manager's transport; they never build SQL themselves.

This module owns the class, its registration and the public classmethods; the
work behind them lives beside it: request building in ``requests.py``, bulk
writes in ``bulk.py``, paging in ``paging.py``, instances and JSON in
``instances.py``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from ..client import AsyncDatabaseManager, Change
from ..engine import check_identifier
from ..engine.schema import check_expression
from ..protocol.errors import ValidationError, brief
from . import bulk, paging
from .columns import Column
from .filters import normalize_filters
from .instances import ModelInstance
from .requests import Row, keyed
from .rows import RowT, check_row_type

if TYPE_CHECKING:
    import pydantic

__all__ = ["BaseModel"]

M = TypeVar("M", bound="BaseModel")


class BaseModel(ModelInstance, Generic[RowT]):
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
    #: Whether a column of this model turns values read back into Python types (bool, date, json).
    __from_db__: ClassVar[bool] = False
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
        cls.__from_db__ = any(c.from_db is not None for c in columns.values())
        check_row_type(cls, BaseModel)
        AsyncDatabaseManager.register(cls)

    @classmethod
    def schema(cls, kind: str = "read") -> type[pydantic.BaseModel]:
        """A pydantic v2 model of ``kind`` ("create", "update", "read"); see ``schemas.py``."""
        from .schemas import model_schema

        return model_schema(cls, kind)

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
        return await cls._request(keyed(request, idempotency_key))

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
        return await cls._request(keyed(request, idempotency_key))

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
        return await bulk.run_many(cls, rows, chunk_size, base, idempotency_key)

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
        return await bulk.run_many(cls, rows, chunk_size, {"op": "insert_many"}, idempotency_key)

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
        return int(await cls._request(keyed(request, idempotency_key)))

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
        return int(await cls._request(keyed(request, idempotency_key)))

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
        rows = paging.iterate_rows(cls, filters, batch_size, columns)
        try:
            async for row in rows:
                yield cast("RowT", row)
        finally:
            await rows.aclose()

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
        return await paging.fetch_page(cls, after, order_by, size, filters, columns)

    # ------------------------------------------------------------ instances

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
