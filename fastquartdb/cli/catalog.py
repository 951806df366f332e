"""What the database holds: tables, columns, unique keys, the schema's SQL.

Read with raw SQL through the open manager (the daemon when one serves the
file, else embedded). Table names are always bound parameters of SQLite's
table-valued pragma functions (``pragma_table_info(?)``), never spliced. A
daemon started with ``--no-raw-sql`` refuses raw SQL; the catalog then reads
the schema from a read-only connection to the file, which is safe beside the
daemon (WAL readers see a consistent snapshot and never block its writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from ..engine.schema import LIVE_TABLES_SQL, unique_sets, unknown_table
from .errors import CommandError
from .maintenance import open_read_only
from .output import ResultSet

__all__ = ["Catalog", "Database"]

_USER_OBJECTS = "name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"

_TABLES_SQL = LIVE_TABLES_SQL + " ORDER BY name"

_COLUMNS_SQL = (
    'SELECT m.name AS "table", p.name AS "column", p.type AS "type", p."notnull" AS "notnull", '
    'p.dflt_value AS "default", p.pk AS "pk" '
    "FROM sqlite_master AS m, pragma_table_info(m.name) AS p "
    "WHERE m.type IN ('table', 'view') AND m.{filter} ORDER BY m.name, p.cid"
)

# The PRAGMA index_list and index_info rows the engine's unique_sets() reads, per table.
_UNIQUE_SQL = (
    'SELECT m.name, il.seq, il.name, il."unique", il.origin, il.partial, ii.seqno, ii.cid, '
    "ii.name FROM sqlite_master AS m, pragma_index_list(m.name) AS il, "
    "pragma_index_info(il.name) AS ii "
    "WHERE m.type = 'table' AND m.{filter} AND il.\"unique\" = 1 "
    "ORDER BY m.name, il.seq, ii.seqno"
)

_SQL_SQL = (
    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND {filter} "
    "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'view' THEN 1 WHEN 'index' THEN 2 ELSE 3 END, "
    "tbl_name, name"
)


class Database(Protocol):
    """What a command needs of an open database (the manager, or a :class:`ReadOnlyFile`)."""

    path: str

    @property
    def mode(self) -> str:
        """``"daemon"``, ``"embedded"`` or ``"dqlite"``."""

    def info(self) -> dict[str, Any]:
        """What the database runs on (see ``AsyncDatabaseManager.info``)."""

    async def request(self, request: dict[str, Any]) -> Any:
        """Run one protocol request."""

    async def execute(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one raw SQL statement."""


class Catalog:
    """Schema queries on one open database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._direct: sqlite3.Connection | None = None
        self.raw_sql = bool(db.info().get("raw_sql", True))

    def close(self) -> None:
        """Close the read-only fallback connection, if one was opened."""
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    async def query(self, sql: str, params: Sequence[Any] = ()) -> ResultSet:
        """Run one read-only catalog query."""
        if self.raw_sql:
            result = await self.db.execute(sql, list(params))
            return ResultSet(result["columns"], result["rows"])
        if self._direct is None:
            self._direct = open_read_only(self.db.path)
        cursor = self._direct.execute(sql, list(params))
        rows = cursor.fetchall()
        return ResultSet([d[0] for d in cursor.description or ()], rows)

    async def tables(self) -> ResultSet:
        """``name``, ``type`` (table or view) of every user table and view, by name."""
        return await self.query(_TABLES_SQL)

    async def require_table(self, name: str) -> None:
        """Raise :class:`CommandError` unless table or view ``name`` exists."""
        live = (await self.tables()).rows
        if name not in [row[0] for row in live]:
            raise CommandError(str(unknown_table(name, live))) from None

    async def columns(self, table: str | None = None) -> ResultSet:
        """One row per column: table, column, type, notnull, default, pk, unique."""
        where, params = _filter("name", table)
        result = await self.query(_COLUMNS_SQL.format(filter=where), params)
        unique = await self._unique_keys(table, result.rows)
        single = {
            (t, next(iter(key))) for t, keys in unique.items() for key in keys if len(key) == 1
        }
        rows = [[*row, int((row[0], row[1]) in single)] for row in result.rows]
        return ResultSet([*result.columns, "unique"], rows)

    async def _unique_keys(
        self, table: str | None, column_rows: Sequence[Sequence[Any]]
    ) -> dict[str, list[frozenset[str]]]:
        """Per table, the column sets the engine counts as unique keys (its ``unique_sets``)."""
        where, params = _filter("name", table)
        table_rows: dict[str, list[Sequence[Any]]] = {}
        for row in column_rows:  # (table, column, type, notnull, default, pk): as table_info
            table_rows.setdefault(row[0], []).append(row)
        indexes: dict[str, dict[str, tuple[Sequence[Any], list[Sequence[Any]]]]] = {}
        for row in (await self.query(_UNIQUE_SQL.format(filter=where), params)).rows:
            per_table = indexes.setdefault(row[0], {})
            per_table.setdefault(row[2], (row[1:6], []))[1].append(row[6:9])
        return {
            name: unique_sets(rows, indexes.get(name, {}).values())
            for name, rows in table_rows.items()
        }

    async def schema_sql(self, table: str | None = None) -> list[str]:
        """The CREATE statements of the schema (of ``table`` and its indexes and triggers)."""
        where, params = _filter("tbl_name", table)
        rows = (await self.query(_SQL_SQL.format(filter=where), params)).rows
        return [row[0] for row in rows]


def _filter(column: str, table: str | None) -> tuple[str, list[Any]]:
    if table is None:
        return _USER_OBJECTS.replace("name", column, 1), []
    return f"{column} = ?", [table]
