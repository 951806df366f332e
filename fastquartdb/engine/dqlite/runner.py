"""``OpRunner``: the protocol's ops on one dqlite session, with its cache of table shapes.

The SQL is the engine's (:mod:`fastquartdb.engine.statements` and
:func:`fastquartdb.engine.schema.ensure_table`); table shapes come from the same
PRAGMAs the engine reads, fetched over dqlite. A request of several statements
(:data:`~fastquartdb.protocol.messages.MULTI_STATEMENT_OPS`) runs all-or-nothing;
one that fails on validation with a table cache is tried once more with fresh
shapes (:data:`~fastquartdb.protocol.messages.SCHEMA_RETRY_OPS`). Which leader the
session talks to, failover and resends are :mod:`.transport`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from ...protocol.errors import FQDBError, ValidationError, brief
from ...protocol.messages import MULTI_STATEMENT_OPS, SCHEMA_RETRY_OPS
from ..describe import describe
from ..resultcodes import translate_sqlite_error
from ..sandbox import check_statement, raw_request
from ..schema import (
    LIVE_TABLES_SQL,
    TableInfo,
    check_identifier,
    ensure_table_steps,
    parse_column_sets,
    parse_column_specs,
    read_table,
    unknown_table,
)
from ..statements import (
    build_aggregate,
    build_count,
    build_delete,
    build_insert,
    build_insert_many,
    build_select,
    build_update,
    build_upsert,
    build_upsert_many,
    inserted_key,
    key_of_row,
    upserted_key_query,
)
from .rawsql import classify, number_named
from .session import Lost, Session, all_or_nothing, drive

__all__ = ["OpRunner"]


class OpRunner:
    """Runs one request on a :class:`~.session.Session` (see :meth:`run`).

    ``tables`` caches the shapes read so far; whoever runs raw SQL or DDL outside
    :meth:`run` (a transaction's end) clears it.
    """

    def __init__(self) -> None:
        self.tables: dict[str, TableInfo] = {}
        # The schema's DDL as of the last raw statement checked (see _check_raw).
        self.raw_schema: list[str] | None = None

    async def run(self, session: Session, req: dict[str, Any]) -> Any:
        op = req.get("op")
        if op == "_savepoint":
            return await req["run"](session)
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ValidationError(
                f"unknown op {brief(op)} (ops: {', '.join(sorted([*self._handlers, 'begin', 'commit', 'rollback']))})"
            )
        try:
            try:
                return await self._atomic(session, handler, req)
            except ValidationError:
                if op in SCHEMA_RETRY_OPS and self.tables:
                    # Perhaps another client changed the schema since we cached it: look again.
                    self.tables.clear()
                    return await self._atomic(session, handler, req)
                raise
        except (FQDBError, Lost):
            raise
        except Exception as exc:
            # Input no check foresaw (a list where a name goes...): this request fails, as
            # in the engine, and the connection goes on.
            raise ValidationError(f"malformed {op}: {type(exc).__name__}: {brief(exc)}") from None

    async def _atomic(
        self,
        session: Session,
        handler: Callable[[OpRunner, Session, dict[str, Any]], Awaitable[Any]],
        req: dict[str, Any],
    ) -> Any:
        if req.get("op") not in MULTI_STATEMENT_OPS:
            return await handler(self, session, req)
        return await all_or_nothing(session, lambda inner: handler(self, inner, req))

    async def _table(self, session: Session, name: object) -> TableInfo:
        """The live shape of table ``name``: the engine's :func:`read_table`, driven here."""
        info = self.tables.get(name) if isinstance(name, str) else None
        if info is not None:
            return info
        try:
            checked = check_identifier(name, "table name")
        except ValidationError:
            # A name the live schema holds is usable whatever its characters (as in the engine).
            if not isinstance(name, str):
                raise
            _, live = await session.read(LIVE_TABLES_SQL + " AND name = ?", [name])
            if not live:
                raise
            checked = name
        info = await drive(session, read_table(checked))
        if info is None:
            _, names = await session.read(LIVE_TABLES_SQL)
            raise unknown_table(checked, names)
        self.tables[checked] = info
        return info

    async def _scope(
        self, session: Session, req: dict[str, Any]
    ) -> tuple[TableInfo, Callable[[object], TableInfo]]:
        """The request's table and a lookup for its joins (loaded first: builders are sync)."""
        table = await self._table(session, req.get("table"))
        joins = req.get("join")
        if isinstance(joins, list):
            for spec in joins:
                if isinstance(spec, dict) and isinstance(spec.get("table"), str):
                    await self._table(session, spec["table"])

        def lookup(name: object) -> TableInfo:
            info = self.tables.get(name) if isinstance(name, str) else None
            if info is None:
                check_identifier(name, "table name")
                raise ValidationError(f"unknown table {brief(name)}")
            return info

        return table, lookup

    # ------------------------------------------------------------ ops

    async def _fetch(self, s: Session, req: dict[str, Any]) -> dict[str, Any]:
        table, lookup = await self._scope(s, req)
        sql, params = build_select(table, req, lookup)
        columns, rows = await s.read(sql, params)
        return {"columns": list(columns), "rows": [list(r) for r in rows]}

    async def _count(self, s: Session, req: dict[str, Any]) -> int:
        sql, params = build_count(await self._table(s, req.get("table")), req)
        _, rows = await s.read(sql, params)
        return int(rows[0][0])

    async def _aggregate(self, s: Session, req: dict[str, Any]) -> dict[str, Any]:
        table, lookup = await self._scope(s, req)
        sql, params = build_aggregate(table, req, lookup)
        columns, rows = await s.read(sql, params)
        return {"columns": list(columns), "rows": [list(r) for r in rows]}

    async def _insert(self, s: Session, req: dict[str, Any]) -> Any:
        table = await self._table(s, req.get("table"))
        sql, params = build_insert(table, req)
        result = await s.write(sql, params)
        return inserted_key(table, req, result.rows_affected, result.last_insert_id)

    async def _upsert(self, s: Session, req: dict[str, Any]) -> Any:
        table = await self._table(s, req.get("table"))
        sql, params = build_upsert(table, req)
        await s.write(sql, params)
        _, rows = await s.read(*upserted_key_query(table, req))
        return key_of_row(rows[0] if rows else None)

    async def _insert_many(self, s: Session, req: dict[str, Any]) -> int:
        sql, rows = build_insert_many(await self._table(s, req.get("table")), req)
        for row in rows:
            await s.write(sql, row)
        return len(rows)

    async def _upsert_many(self, s: Session, req: dict[str, Any]) -> int:
        sql, rows = build_upsert_many(await self._table(s, req.get("table")), req)
        for row in rows:
            await s.write(sql, row)
        return len(rows)

    async def _update(self, s: Session, req: dict[str, Any]) -> int:
        sql, params = build_update(await self._table(s, req.get("table")), req)
        return (await s.write(sql, params)).rows_affected

    async def _delete(self, s: Session, req: dict[str, Any]) -> int:
        sql, params = build_delete(await self._table(s, req.get("table")), req)
        return (await s.write(sql, params)).rows_affected

    async def _ensure_table(self, s: Session, req: dict[str, Any]) -> dict[str, Any]:
        name = check_identifier(req.get("table"), "table name")
        specs = parse_column_specs(req.get("columns"))
        names = {spec.name for spec in specs}
        indexes = parse_column_sets(req.get("indexes"), "indexes", names)
        unique = parse_column_sets(req.get("unique"), "unique", names)
        # The engine's own migration logic, its statements run here (one engine).
        result = await drive(s, ensure_table_steps(name, specs, indexes, unique))
        self.tables.clear()
        return result

    async def _execute(self, s: Session, req: dict[str, Any]) -> dict[str, Any]:
        sql, params = raw_request(req)
        sql, values = number_named(sql, params) if isinstance(params, dict) else (sql, params)
        await self._check_raw(s, sql, values)
        self.tables.clear()  # raw SQL may change any table
        kind = classify(sql)
        if kind.returns_rows:
            if kind.writes and not s.in_transaction:
                # A QUERY that writes is applied by dqlite 1.11 only inside an explicit
                # transaction, whose COMMIT (an EXEC) goes through Raft: see Statement.
                columns, rows = await all_or_nothing(
                    s, lambda inner: inner.read(sql, values, again=False)
                )
            else:
                columns, rows = await s.read(sql, values, again=not kind.writes)
            return {
                "columns": list(columns),
                "rows": [list(r) for r in rows],
                "rowcount": -1,
                "lastrowid": None,
            }
        result = await s.write(sql, values)
        dml = kind.writes and kind.word != "PRAGMA"
        return {
            "columns": [],
            "rows": [],
            "rowcount": result.rows_affected if dml else -1,
            "lastrowid": result.last_insert_id if dml else None,
        }

    async def _check_raw(self, s: Session, sql: str, values: list[Any]) -> None:
        """The engine's sandbox rules for raw SQL, on a local copy of the cluster's schema.

        dqlite has no authorizer hook, so the statement is compiled (never run) by
        :func:`fastquartdb.engine.sandbox.check_statement` against the schema read
        from the leader; the copy is read again when the statement does not compile
        against it (a table another client created), and cached otherwise.
        """
        for attempt in (0, 1):
            if self.raw_schema is None or attempt:
                _, rows = await s.read(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
                )
                self.raw_schema = [row[0] for row in rows]
            try:
                check_statement(sql, self.raw_schema, values)
                return
            except sqlite3.Error as exc:
                if attempt:
                    raise translate_sqlite_error(exc) from None

    async def _describe(self, s: Session, req: dict[str, Any]) -> Any:
        # The engine's describe steps, on the table the engine's read_table gives.
        name = req.get("table")
        return await drive(s, describe(None if name is None else await self._table(s, name)))

    async def _ping(self, s: Session, req: dict[str, Any]) -> str:
        await s.read("SELECT 1")
        return "pong"

    _handlers: dict[str, Callable[[OpRunner, Session, dict[str, Any]], Awaitable[Any]]] = {
        "fetch": _fetch,
        "count": _count,
        "aggregate": _aggregate,
        "insert": _insert,
        "insert_many": _insert_many,
        "upsert": _upsert,
        "upsert_many": _upsert_many,
        "update": _update,
        "delete": _delete,
        "ensure_table": _ensure_table,
        "execute": _execute,
        "ping": _ping,
        "describe": _describe,
    }
