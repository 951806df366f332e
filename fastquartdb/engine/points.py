"""Point reads: a fetch of at most one row by its table's primary key, the commonest read.

A web app's ``GET /users/<id>`` is one B-tree lookup, a few microseconds of SQLite;
at tens of thousands a second per process what costs is the Python around it. So
a point read of a shape seen before takes a short path on the engine::

    is_point_read(req)   one condition, pk = int|short str, no join/order   (routing: inline)
    run_point(req)       table (or table, columns, limit given) -> (SELECT text, names)
                         known: execute + fetchall, nothing else
                         not known, or anything unusual: run_read's full path, which
                         checks and says what is wrong, then remembers the shape

The short path gives the same result as the full one (the same SELECT text, built by
:func:`~.statements.build_select` the first time), and leaves out only what cannot
matter to a primary-key lookup of a known table: the deadline (one B-tree lookup) and
the size limit of a result (readers have none). Any error, an integer out of SQLite's
range, a key the short path does not know (``offset``, ``distinct``, ``timeout``) and
every first read of a shape take the full path. Shapes are forgotten with the
schema cache, so a table another process changed is read afresh.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ..protocol.errors import FQDBError
from .resultcodes import translate_sqlite_error
from .statements import build_select

if TYPE_CHECKING:
    from .schema import TableInfo

__all__ = ["PointReads"]

_INT_BOUND = 2**63
#: The longest string key of a point read: a longer one is a read for a reader thread, measured
#: against the wire's frame limit as every other read is.
_MAX_KEY = 1024
#: The table (all columns, no limit), or (table, columns or None, whether a limit is given)
#: -> (SELECT text, result column names, the column of its condition).
_Plan = tuple[str, list[str], str]


class PointReads:
    """The point-read methods of an engine (its base class); state is the engine's."""

    conn: sqlite3.Connection
    _tables: dict[str, TableInfo]
    _point_sql: dict[Any, _Plan]
    _point_cursor: sqlite3.Cursor

    if TYPE_CHECKING:

        def table(self, name: object) -> TableInfo: ...

        def _refresh_schema(self, force: bool = False) -> bool: ...

        def _execute_safely(self, req: dict[str, Any]) -> tuple[bool, Any]: ...

    def is_point_read(self, req: dict[str, Any], *, load: bool = False) -> bool:
        """Whether ``req`` is a fetch of at most one row by its table's primary key.

        Such a read is one B-tree lookup, cheaper than a thread hop. Looks only at
        the cached schema (no SQL), so it may be asked from another thread while
        this engine is idle; ``load=True`` (on the engine's own thread only) reads
        the shape of a table not cached yet.
        """
        # The condition first: it rules out most other reads at the least cost.
        if req.get("op") != "fetch":
            return False
        where = req.get("where")
        if type(where) is not list or len(where) != 1:
            return False
        group = where[0]
        if type(group) is not list or len(group) != 1:
            return False
        cond = group[0]
        if (
            type(cond) is not list
            or len(cond) != 3
            or cond[1] not in ("=", "==")
            or not (type(cond[2]) is int or (type(cond[2]) is str and len(cond[2]) <= _MAX_KEY))
            or req.get("join") is not None
            # Also bounded in what it builds and sends back: no sorting, no long column list.
            or req.get("order_by") is not None
        ):
            return False
        table = req.get("table")
        info = self._tables.get(table) if type(table) is str else None
        if info is None and load and type(table) is str:
            try:
                info = self.table(table)
            except (FQDBError, sqlite3.Error):
                return False  # the read itself will say what is wrong
        if info is None or len(info.pk) != 1 or cond[0] != info.pk[0]:
            return False
        columns = req.get("columns")
        return columns is None or (type(columns) is list and len(columns) <= len(info.columns))

    def run_point(self, req: dict[str, Any], *, check_schema: bool = False) -> tuple[bool, Any]:
        """Run a read :meth:`is_point_read` accepted, outside any transaction, as
        ``run_read`` would (the same outcome), by the short path when its shape is known."""
        try:
            self._refresh_schema(force=check_schema)
        except sqlite3.Error as exc:
            return False, translate_sqlite_error(exc)
        value = req["where"][0][0][2]
        columns = req.get("columns")
        limit = req.get("limit")
        if columns is None and limit is None:
            key: Any = req["table"]  # the commonest shape: all columns, no limit
            params: tuple[Any, ...] = (value,)
            plain = len(req) == 3  # nothing the short path would not honour: op, table, where
        else:
            key = (req["table"], None if columns is None else tuple(columns), limit is not None)
            params = (value,) if limit is None else (value, limit)
            plain = len(req) == 3 + (columns is not None) + (limit is not None) and (
                limit is None or (type(limit) is int and 0 <= limit < _INT_BOUND)
            )
        try:
            plan = self._point_sql.get(key)
        except TypeError:  # a column "name" that is a list: the full path says what is wrong
            return self._execute_safely(req)
        name = req["where"][0][0][0]
        if plan is not None and plan[2] != name:
            # Learnt when another column was the key (the table was made again since): the
            # routing looked at a cached schema, so this request may not even be by the key.
            plan = None
        if (
            plan is None
            or not plain
            or (type(value) is int and not -_INT_BOUND <= value < _INT_BOUND)
        ):
            outcome = self._execute_safely(req)
            if outcome[0] and plain and plan is None:
                self._remember(key, req, outcome[1]["columns"])
            return outcome
        try:
            # One cursor for every short-path read: each is read to its end before the next.
            rows = self._point_cursor.execute(plan[0], params).fetchall()
        except sqlite3.Error:
            # The full path says what is wrong (and looks at the schema again if that may help).
            return self._execute_safely(req)
        # A list of its own: what a caller does with one result's columns is not the next's.
        return True, {"columns": plan[1][:], "rows": rows}

    def _remember(self, key: Any, req: dict[str, Any], names: list[str]) -> None:
        try:
            sql, _ = build_select(self.table(req["table"]), req, self.table)
        except (FQDBError, sqlite3.Error):
            return
        if len(self._point_sql) > 1024:
            self._point_sql.clear()
        self._point_sql[key] = (sql, names[:], req["where"][0][0][0])
