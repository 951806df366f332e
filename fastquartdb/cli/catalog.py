"""What the database holds: tables, columns, unique keys, the schema's SQL.

Every answer is the engine's ``describe`` op (PROTOCOL.md §7.18) on the open
database — its daemon, the engine on a read-only connection, embedded mode or
a dqlite cluster — so the CLI has no schema SQL and no schema rules of its own
(which column sets are unique keys, a column's affinity): the engine's are the
ones every other op checks against. ``describe`` is a model op, not raw SQL,
so a daemon started with ``--no-raw-sql`` answers it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from .output import ResultSet

__all__ = ["Catalog", "Database"]

#: ``fqdb schema`` columns: one row per column of a table.
_COLUMNS = ["table", "column", "type", "notnull", "default", "pk", "unique"]
# ``fqdb schema --sql``: tables, then views, indexes and triggers, each by table and name.
_KIND_ORDER = {"table": 0, "view": 1, "index": 2}


class Database(Protocol):
    """What a command needs of an open database (the manager, or a :class:`ReadOnlyFile`)."""

    path: str

    @property
    def mode(self) -> str:
        """``"daemon"``, ``"embedded"`` or ``"dqlite"``."""

    def info(self) -> dict[str, Any]:
        """What the database runs on (see ``AsyncDatabaseManager.info``)."""

    def request(self, request: dict[str, Any]) -> Awaitable[Any]:
        """Run one protocol request (await the result)."""

    async def execute(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one raw SQL statement."""


class Catalog:
    """Schema questions on one open database, answered by its engine's ``describe``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def describe(self, table: str) -> dict[str, Any]:
        """The engine's description of table or view ``table`` (PROTOCOL.md §7.18).

        Raises:
            ValidationError: no such table, naming the tables and views there are.
        """
        described: dict[str, Any] = await self.db.request({"op": "describe", "table": table})
        return described

    async def _described(self, table: str | None) -> list[dict[str, Any]]:
        """``table`` described, or every table and view (by name) if it is None."""
        if table is not None:
            return [await self.describe(table)]
        listing = await self.db.request({"op": "describe"})
        return [await self.describe(entry["name"]) for entry in listing]

    async def tables(self) -> ResultSet:
        """``name``, ``type`` (table or view) of every user table and view, by name."""
        listing = await self.db.request({"op": "describe"})
        return ResultSet(["name", "type"], [[t["name"], t["type"]] for t in listing])

    async def columns(self, table: str | None = None) -> ResultSet:
        """One row per column: table, column, type, notnull, default, pk, unique."""
        rows = [
            [
                described["name"],
                column["name"],
                column["type"],
                int(column["notnull"]),
                column["default"],
                column["pk"],
                int(column["unique"]),
            ]
            for described in await self._described(table)
            for column in described["columns"]
        ]
        return ResultSet(list(_COLUMNS), rows)

    async def schema_sql(self, table: str | None = None) -> list[str]:
        """The CREATE statements of the schema (of ``table`` and its indexes and triggers)."""
        objects = sorted(
            (_KIND_ORDER.get(item["type"], 3), described["name"], item["name"], item["sql"])
            for described in await self._described(table)
            for item in described["sql"]
        )
        return [sql for *_, sql in objects]
