"""The ``describe`` op: what the engine knows of a table, or which tables there are.

``{"op": "describe", "table": T}`` answers with the :class:`~.schema.TableInfo` every
other op checks against — columns with their declared type, affinity, NOT NULL,
default and primary-key position, the primary key, the unique keys an ``ON CONFLICT``
may name (the conflict targets of ``upsert``), single-column foreign keys — plus the
stored SQL of the table's schema objects (the table or view, its indexes and
triggers). Without ``table`` it lists the user's tables and views (never ``sqlite_*``
or FastQuartDB's own ``_fqdb_*``), by name. It is a read.

The reply is built by I/O-free steps (see :mod:`.steps`) from a ``TableInfo`` the
caller looked up its own way (the engine's cached ``table()``, the dqlite runner's),
so every driver answers alike. ``fqdb tables``, ``fqdb schema`` and ``fqdb insert``
read the schema through it instead of with SQL of their own.
"""

from __future__ import annotations

from typing import Any

from .schema import LIVE_TABLES_SQL, TableInfo
from .sqltypes import affinity_of
from .steps import Query, Steps

__all__ = ["describe"]

# The row of the table or view itself: its name as stored and its type. SQLite matches
# identifiers without regard to ASCII case, as NOCASE does.
_OBJECT_SQL = (
    "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
    "AND name = ? COLLATE NOCASE"
)
# The stored SQL of the table's objects: the table or view, then its indexes and triggers.
_SQL_SQL = (
    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? COLLATE NOCASE "
    "AND sql IS NOT NULL ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'view' THEN 1 "
    "WHEN 'index' THEN 2 ELSE 3 END, name"
)


def describe(info: TableInfo | None) -> Steps[Any]:
    """The result of ``describe``: of the table ``info`` describes, or (``None``) the
    list of tables, ``[{"name", "type"}, ...]`` by name (see PROTOCOL.md §7.18)."""
    if info is None:
        rows = yield Query(LIVE_TABLES_SQL + " ORDER BY name")
        return [{"name": str(name), "type": str(kind)} for name, kind in rows]
    found = yield Query(_OBJECT_SQL, [info.name])
    name, kind = (str(found[0][0]), str(found[0][1])) if found else (info.name, "table")
    objects = yield Query(_SQL_SQL, [name])
    single = {next(iter(key)) for key in info.unique_sets if len(key) == 1}
    order = {column: i for i, column in enumerate(info.columns)}
    return {
        "name": name,
        "type": kind,
        "columns": [
            {
                "name": column,
                "type": info.declared[column],
                "affinity": affinity_of(info.declared[column]),
                "notnull": column in info.notnull,
                "default": info.defaults[column],
                "pk": info.pk.index(column) + 1 if column in info.pk else 0,
                "unique": column in single,
            }
            for column in info.columns
        ],
        "primary_key": list(info.pk),
        "rowid_pk": info.rowid_pk,
        "unique": [sorted(key, key=order.__getitem__) for key in info.unique_sets],
        "foreign_keys": [
            {"column": column, "table": table, "to": to} for column, table, to in info.foreign_keys
        ],
        "sql": [{"type": str(t), "name": str(n), "sql": str(sql)} for t, n, sql in objects],
    }
