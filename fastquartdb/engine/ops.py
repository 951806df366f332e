"""What each request op does on the connection: CRUD, aggregates, ``ensure_table``,
``describe``, raw ``execute`` and the transaction ops (``begin``/``commit``/``rollback``, savepoints).

:class:`RequestOps` is the base of :class:`~fastquartdb.engine.executor.Engine`,
which owns the connection, the schema cache and the running of batches; each
method here runs one checked request and returns its result. SQL comes from
:mod:`.statements`; repeated shapes reuse the SQL built the first time.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ..protocol.errors import FQDBError, ProgrammingError, brief
from .changelog import ChangeLog, capture_mode
from .describe import describe
from .requestkeys import RequestKeys
from .resultcodes import translate_sqlite_error
from .results import fetch_rows
from .sandbox import Sandbox, raw_request
from .schema import (
    TableInfo,
    check_identifier,
    ensure_table,
    load_table,
    parse_column_sets,
    parse_column_specs,
    quote,
)
from .shapes import select_shape, shape_params
from .statements import (
    build_aggregate,
    build_count,
    build_delete,
    build_insert,
    build_insert_many,
    build_select,
    build_update,
    build_upsert,
    build_upsert_many,
    check_values,
    inserted_key,
    key_of_row,
    upserted_key_query,
)
from .steps import run as run_steps

__all__ = ["RequestOps"]


class RequestOps:
    """The ops of one engine; the state they use is the engine's (set in its ``__init__``)."""

    conn: sqlite3.Connection
    raw_sql: bool
    result_limit: int | None
    sandbox: Sandbox
    keys: RequestKeys
    changes: ChangeLog
    _begin_sql: str
    _insert_sql: dict[tuple[Any, ...], str]
    _select_sql: dict[tuple[Any, ...], str]

    if TYPE_CHECKING:

        def table(self, name: object) -> TableInfo: ...

        def _forget_schema(self) -> None: ...

        def _rolled_back(self) -> None: ...

    def _query(self, sql: str, params: list[Any]) -> dict[str, Any]:
        cursor = self.conn.execute(sql, params)
        rows = fetch_rows(cursor, self.result_limit, "this query")
        return {"columns": [d[0] for d in cursor.description], "rows": rows}

    def _executemany(self, sql: str, rows: list[list[Any]]) -> int:
        if rows:
            self.conn.executemany(sql, rows)
        return len(rows)

    def _fetch(self, req: dict[str, Any]) -> dict[str, Any]:
        table = self.table(req.get("table"))
        key = select_shape(req)
        sql = self._select_sql.get(key) if key is not None else None
        if sql is not None:
            params = shape_params(req)
            if params is not None:
                # A shape built and checked before: only the values are new, checked here.
                return self._query(sql, params)
        sql, params = build_select(table, req, self.table)
        if key is not None:
            if len(self._select_sql) > 1024:
                self._select_sql.clear()
            self._select_sql[key] = sql
        return self._query(sql, params)

    def _count(self, req: dict[str, Any]) -> int:
        sql, params = build_count(self.table(req.get("table")), req)
        return int(self.conn.execute(sql, params).fetchone()[0])

    def _insert(self, req: dict[str, Any]) -> Any:
        table = self.table(req.get("table"))
        values = req.get("values")
        on_conflict = req.get("on_conflict")
        key = (
            (table.name, tuple(values), on_conflict)
            if type(values) is dict and (on_conflict is None or type(on_conflict) is str)
            else None
        )
        sql = self._insert_sql.get(key) if key is not None else None
        if sql is not None:
            # Same table, columns and conflict mode as a request already checked and
            # built: only the values are new, and they are checked here.
            assert isinstance(values, dict)
            named: dict[str, Any] = values
            params = list(named.values())

            def column_of(value: Any) -> str:
                return f"column {brief(next(n for n, v in named.items() if v is value))}"

            check_values(params, column_of)
        else:
            sql, params = build_insert(table, req)
            if key is not None:
                if len(self._insert_sql) > 1024:
                    self._insert_sql.clear()
                self._insert_sql[key] = sql
        cursor = self.conn.execute(sql, params)
        return inserted_key(table, req, cursor.rowcount, cursor.lastrowid)

    def _upsert(self, req: dict[str, Any]) -> Any:
        table = self.table(req.get("table"))
        sql, params = build_upsert(table, req)
        self.conn.execute(sql, params)
        return key_of_row(self.conn.execute(*upserted_key_query(table, req)).fetchone())

    def _upsert_many(self, req: dict[str, Any]) -> int:
        return self._executemany(*build_upsert_many(self.table(req.get("table")), req))

    def _aggregate(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._query(*build_aggregate(self.table(req.get("table")), req, self.table))

    def _insert_many(self, req: dict[str, Any]) -> int:
        return self._executemany(*build_insert_many(self.table(req.get("table")), req))

    def _update(self, req: dict[str, Any]) -> int:
        sql, params = build_update(self.table(req.get("table")), req)
        return self.conn.execute(sql, params).rowcount

    def _delete(self, req: dict[str, Any]) -> int:
        sql, params = build_delete(self.table(req.get("table")), req)
        return self.conn.execute(sql, params).rowcount

    def _ensure_table(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_identifier(req.get("table"), "table name")
        specs = parse_column_specs(req.get("columns"))
        names = {spec.name for spec in specs}
        capture = capture_mode(req.get("changes"))
        result = ensure_table(
            self.conn,
            name,
            specs,
            parse_column_sets(req.get("indexes"), "indexes", names),
            parse_column_sets(req.get("unique"), "unique", names),
        )
        self._forget_schema()
        if capture is not None:
            info = load_table(self.conn, name)
            assert info is not None  # just created or checked
            result["changes"] = self.changes.capture(info, capture)
        return result

    def _describe(self, req: dict[str, Any]) -> Any:
        name = req.get("table")
        return run_steps(self.conn, describe(None if name is None else self.table(name)))

    def _execute(self, req: dict[str, Any]) -> dict[str, Any]:
        if not self.raw_sql:
            raise ProgrammingError(
                "raw SQL is disabled on this server (fqdb-server --no-raw-sql); use the model API"
            )
        sql, params = raw_request(req)
        try:
            with self.sandbox.raw():
                cursor = self.conn.execute(sql, params)
                rows = fetch_rows(cursor, self.result_limit, "execute")
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc) from None
        finally:
            self._forget_schema()  # raw SQL may have changed any table
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return {
            "columns": columns,
            "rows": rows,
            "rowcount": cursor.rowcount,
            "lastrowid": cursor.lastrowid,
        }

    @staticmethod
    def _savepoint_name(req: dict[str, Any]) -> str | None:
        name = req.get("savepoint")
        return None if name is None else check_identifier(name, "savepoint name")

    def _begin(self, req: dict[str, Any]) -> None:
        name = self._savepoint_name(req)
        self.conn.execute(f"SAVEPOINT {quote(name)}" if name else self._begin_sql)

    def _commit(self, req: dict[str, Any]) -> None:
        name = self._savepoint_name(req)
        if name:
            self.conn.execute(f"RELEASE {quote(name)}")
            return
        if "key" in req and self.conn.in_transaction:
            try:
                run_steps(self.conn, self.keys.record_commit(req))  # see requestkeys.py
            except FQDBError:
                self.conn.execute("ROLLBACK")
                self._rolled_back()
                raise
        if self.conn.in_transaction:
            self.changes.flush()
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            self.keys.forget_schema()  # the record tables may have been made by this one
            self.changes.forget_schema()
            raise
        self.changes.committed()

    def _rollback(self, req: dict[str, Any]) -> None:
        name = self._savepoint_name(req)
        if name:
            self.conn.execute(f"ROLLBACK TO {quote(name)}")
            self.conn.execute(f"RELEASE {quote(name)}")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
            self.keys.forget_schema()
