"""The raw-SQL sandbox: what a statement sent with ``execute`` may do on a shared connection.

The daemon's one connection serves every client, so a raw statement must not
change anything that outlives it or reaches another client. The rules, enforced
by a sqlite3 *authorizer* (SQLite asks it about every table, column, function
and PRAGMA while it compiles a statement, so no spelling of the SQL text can
get around it):

* **PRAGMAs**: only those in :data:`READ_PRAGMAS` (read-only queries, no value
  given), :data:`ARGUMENT_PRAGMAS` (read-only, take a table or index name) and
  :data:`WRITE_PRAGMAS` (``user_version``: application data in the file header;
  ``optimize``: SQLite's own maintenance). Everything that changes connection
  state (``foreign_keys``, ``ignore_check_constraints``, ``case_sensitive_like``,
  ``hard_heap_limit``, ...) or the file (``journal_mode``, ``schema_version``,
  ``writable_schema``, ``max_page_count``, ...) is refused.
* **Functions**: only those in :data:`FUNCTIONS` (SQLite's core, date, math,
  JSON, aggregate, window, FTS and R*Tree functions). ``fts3_tokenizer`` (it
  takes a raw C pointer: a crash or an address leak), ``load_extension``,
  ``fts5`` (hands out a C API pointer), ``sqlite_log`` and the R*Tree debugging
  functions are not in it. This rule holds for *every* statement on the
  connection, not only raw ones, so a trigger, view or default that calls a
  refused function cannot run it later through the engine's own statements.
* **No TEMP objects**: ``CREATE TEMP TABLE/VIEW/TRIGGER/INDEX`` and anything
  created or written in the ``temp`` schema are refused, so nothing can shadow a
  table of ``main`` for the other clients (a TEMP ``item`` table, or a TEMP
  trigger that silently drops their inserts).
* **No ATTACH/DETACH** (which also refuses ``VACUUM`` and ``VACUUM INTO``: they
  attach a database), **no transaction control** (``BEGIN``, ``COMMIT``,
  ``SAVEPOINT`` ...: the engine owns the transaction of the batch).
* **Virtual tables** only of the modules in :data:`MODULES`; their shadow tables
  (``<table>_data``, ``<table>_segdir``, ...) may not be written, dropped or
  altered directly, only through the virtual table. ``sqlite_dbpage`` (raw page
  access) is refused.
* **SQLite's defensive mode** (``SQLITE_DBCONFIG_DEFENSIVE``) is switched on where
  Python exposes it (``Connection.setconfig``, Python 3.12+). On 3.10 and 3.11
  there is no public API for it, and reaching into the sqlite3 object with
  ctypes would depend on CPython's private struct layout (a wrong guess is a
  crash), so we do not: the rules above already refuse each thing defensive mode
  disables (``writable_schema``, ``journal_mode=OFF``, ``schema_version=N``,
  writes to ``sqlite_dbpage`` and direct writes to shadow tables).

Nothing a raw statement may do changes the connection's state, so nothing has
to be restored after it: every way of changing that state is refused.

Use::

    sandbox = Sandbox(conn)           # installs the authorizer (and defensive mode)
    with sandbox.raw():               # the rules apply to statements compiled in here
        rows = conn.execute(sql, params).fetchall()

and :func:`check_statement` applies the same rules to a statement that will run
elsewhere (a dqlite cluster), by compiling it on a private in-memory copy of
the schema without running it.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from ..protocol.errors import ValidationError, brief
from .statements import check_value

__all__ = [
    "ARGUMENT_PRAGMAS",
    "FUNCTIONS",
    "MODULES",
    "READ_PRAGMAS",
    "WRITE_PRAGMAS",
    "Sandbox",
    "check_statement",
    "enable_defensive",
    "raw_request",
]

#: PRAGMAs raw SQL may query (never set): ``PRAGMA name`` with no value.
READ_PRAGMAS = frozenset(
    {
        "application_id",
        "auto_vacuum",
        "automatic_index",
        "busy_timeout",
        "cache_size",
        "cache_spill",
        "case_sensitive_like",
        "cell_size_check",
        "checkpoint_fullfsync",
        "collation_list",
        "compile_options",
        "data_version",
        "database_list",
        "defer_foreign_keys",
        "encoding",
        "foreign_keys",
        "freelist_count",
        "fullfsync",
        "function_list",
        "ignore_check_constraints",
        "journal_mode",
        "journal_size_limit",
        "legacy_alter_table",
        "locking_mode",
        "max_page_count",
        "mmap_size",
        "module_list",
        "page_count",
        "page_size",
        "pragma_list",
        "query_only",
        "read_uncommitted",
        "recursive_triggers",
        "reverse_unordered_selects",
        "schema_version",
        "secure_delete",
        "soft_heap_limit",
        "hard_heap_limit",
        "synchronous",
        "temp_store",
        "threads",
        "trusted_schema",
        "user_version",
        "wal_autocheckpoint",
    }
)
#: Read-only PRAGMAs that take a table or index name (or a row limit) as their argument.
ARGUMENT_PRAGMAS = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)
#: PRAGMAs raw SQL may also set: application data in the file header, and SQLite's
#: own statistics upkeep. Neither changes how the connection behaves for others.
WRITE_PRAGMAS = frozenset({"user_version", "optimize"})

# SQLite's built-in functions (and the names newer versions add), by family.
_FUNCTION_NAMES = """
    abs changes char coalesce concat concat_ws format glob hex ifnull iif if instr
    last_insert_rowid length like likelihood likely lower ltrim max min nullif octet_length
    printf quote random randomblob replace round rtrim sign soundex sqlite_compileoption_get
    sqlite_compileoption_used sqlite_offset sqlite_source_id sqlite_version substr substring
    total_changes trim typeof unhex unicode unistr unistr_quote unlikely upper zeroblob
    date time datetime julianday unixepoch strftime timediff current_date current_time
    current_timestamp
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log
    log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc
    avg count group_concat string_agg sum total median percentile percentile_cont
    percentile_disc
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
    nth_value
    json json_array json_array_length json_error_position json_extract json_group_array
    json_group_object json_insert json_object json_patch json_pretty json_quote json_remove
    json_replace json_set json_type json_valid jsonb jsonb_array jsonb_extract
    jsonb_group_array jsonb_group_object jsonb_insert jsonb_object jsonb_patch jsonb_remove
    jsonb_replace jsonb_set -> ->>
    match bm25 highlight snippet offsets matchinfo optimize fts5_source_id rtreecheck
"""
#: SQL functions raw SQL may call.
FUNCTIONS = frozenset(_FUNCTION_NAMES.split())
#: Virtual-table modules raw SQL may create tables of.
MODULES = frozenset({"fts3", "fts4", "fts5", "fts5vocab", "rtree", "rtree_i32", "geopoly"})
# Suffixes of the shadow tables the modules above keep their data in.
_SHADOW_SUFFIXES = frozenset(
    {"data", "idx", "content", "docsize", "config", "segments", "segdir", "stat"}
    | {"node", "parent", "rowid"}  # R*Tree
)
_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
_DDL = frozenset(
    {
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_DROP_VTABLE,
        sqlite3.SQLITE_ALTER_TABLE,
    }
)
_TEMP_CREATE = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)
_VTABLE_SQL = re.compile(r"^\s*create\s+virtual\s+table", re.I)


def _internal(table: str | None, inner: str | None) -> bool:
    """A write or DDL on one of FastQuartDB's own tables (``_fqdb_*``) that is not made by
    one of FastQuartDB's own triggers (also named ``_fqdb_*``)."""
    return (
        table is not None
        and table.lower().startswith("_fqdb_")
        and not (inner is not None and inner.lower().startswith("_fqdb_"))
    )


def _internal_why(table: str) -> str:
    return (
        f"table {table!r} holds FastQuartDB's own records (request keys, change log) and may "
        "only be read from raw SQL: no writes, indexes or triggers on it"
    )


def enable_defensive(conn: sqlite3.Connection) -> bool:
    """Switch on ``SQLITE_DBCONFIG_DEFENSIVE`` where Python offers it; True if it did.

    Python 3.12+ has ``Connection.setconfig``; on older versions the
    authorizer's rules stand in for it (see the module docstring).
    """
    setconfig = getattr(conn, "setconfig", None)
    option = getattr(sqlite3, "SQLITE_DBCONFIG_DEFENSIVE", None)
    if setconfig is None or option is None:
        return False
    setconfig(option, True)
    return True


class Sandbox:
    """The authorizer of one connection, and the switch that arms it for raw SQL.

    Not thread-safe: use it on the connection's thread. The function rule always
    applies; every other rule only to statements compiled inside :meth:`raw`.
    """

    def __init__(self, conn: sqlite3.Connection, *, defensive: bool = True) -> None:
        self.conn = conn
        #: Whether SQLite's defensive mode is on (Python 3.12+).
        self.defensive = enable_defensive(conn) if defensive else False
        self._armed = False
        #: Why the authorizer refused the last statement, until :meth:`refusal` tells it
        #: (None: nothing refused). Read it to skip that call on the hot path.
        self.denied: str | None = None
        # Virtual tables (lower-case) of the schema as of the last raw statement, and the
        # ones the current statement already went through (its module may then write
        # their shadow tables: SQLite compiles those writes as statements of their own).
        self._vtables: frozenset[str] = frozenset()
        self._vtables_version = -1
        self._touched: set[str] = set()
        # Tables the current statement drops (their change-log triggers go with them).
        self._dropping: set[str] = set()
        conn.set_authorizer(self._authorize)

    @contextlib.contextmanager
    def raw(self) -> Iterator[None]:
        """Apply the rules to the statements compiled in this block.

        Raises:
            ValidationError: ``refused: <why>`` when a rule refused the statement
                (other sqlite3 errors propagate unchanged).
        """
        self._load_vtables()
        self.denied = None
        self._touched.clear()
        self._dropping.clear()
        self._armed = True
        # SQLite asks the authorizer only when it compiles a statement, and a statement
        # with this very text (the engine's own "COMMIT") may sit compiled in sqlite3's
        # cache: setting the authorizer again expires every cached statement, so this
        # one is compiled, and checked, for certain.
        self.conn.set_authorizer(self._authorize)
        try:
            yield
        except sqlite3.DatabaseError:
            if self.denied is not None:
                raise ValidationError(f"refused: {self.denied}") from None
            raise
        finally:
            self._armed = False
            self.denied = None  # told above, or nothing was refused

    def refusal(self) -> ValidationError | None:
        """Why the authorizer refused the last statement outside :meth:`raw`, once (else None).

        The function rule also refuses the engine's own statements when they would fire
        a trigger or read a view that calls a refused function.
        """
        why, self.denied = self.denied, None
        return None if why is None else ValidationError(f"refused: {why}")

    def _load_vtables(self) -> None:
        version = self.conn.execute("PRAGMA schema_version").fetchone()[0]
        if version == self._vtables_version:
            return
        rows = self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"
        ).fetchall()
        self._vtables = frozenset(str(n).lower() for n, sql in rows if _VTABLE_SQL.match(sql))
        self._vtables_version = version

    def _deny(self, why: str) -> int:
        self.denied = why
        return sqlite3.SQLITE_DENY

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None
    ) -> int:
        if action == sqlite3.SQLITE_FUNCTION:
            # Always, not only for raw SQL: see the class docstring.
            if arg2 is not None and arg2.lower() not in FUNCTIONS:
                return self._deny(
                    f"function {arg2}() is not allowed (see the raw-SQL rules in the README)"
                )
            return sqlite3.SQLITE_OK
        if not self._armed:
            if inner is not None and action in _WRITES and _internal(arg1, inner):
                # A trigger made by raw SQL, fired by the engine's own statement, may not
                # touch FastQuartDB's records either.
                return self._deny(_internal_why(arg1 or ""))
            return sqlite3.SQLITE_OK  # the engine's own statements, built from checked parts
        return self._raw_rule(action, arg1, arg2, db, inner)

    def _raw_rule(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None
    ) -> int:
        if action == sqlite3.SQLITE_PRAGMA:
            return self._pragma(arg1 or "", arg2)
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return self._deny(
                "ATTACH/DETACH (and VACUUM, which attaches) is not allowed: FastQuartDB serves "
                "one database file; use `fqdb vacuum` for VACUUM"
            )
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return self._deny("transaction control is not allowed in raw SQL: use db.transaction()")
        if action in _TEMP_CREATE or (db == "temp" and (action in _DDL or action in _WRITES)):
            return self._deny(
                "TEMP tables, views, triggers and indexes are not allowed: the connection is "
                "shared, and a TEMP object would hide a table of the database from others; "
                "create a normal table (and drop it) instead"
            )
        if action == sqlite3.SQLITE_CREATE_VTABLE:
            module = (arg2 or "").lower()
            if module not in MODULES:
                return self._deny(
                    f"virtual tables of module {arg2!r} are not allowed "
                    f"(allowed: {', '.join(sorted(MODULES))})"
                )
            self._touched.add((arg1 or "").lower())
            return sqlite3.SQLITE_OK
        table = (arg1 or "").lower()
        if action == sqlite3.SQLITE_DROP_TABLE:
            self._dropping.add(table)
        elif (
            action == sqlite3.SQLITE_DROP_TRIGGER
            and (arg2 or "").lower() in self._dropping
            and table.startswith(f"_fqdb_changes_{(arg2 or '').lower()}_")
        ):
            return sqlite3.SQLITE_OK  # a captured table dropped takes its log triggers along
        if action in _DDL and (arg2 or "").lower().startswith("_fqdb_"):
            return self._deny(_internal_why(arg2 or ""))  # an index or trigger on our tables
        if action in _WRITES or action in _DDL:
            if _internal(table, inner):
                return self._deny(_internal_why(table))
            return self._table_rule(table, inner)
        if action == sqlite3.SQLITE_READ and table == "sqlite_dbpage":
            return self._deny("sqlite_dbpage (raw page access) is not allowed")
        return sqlite3.SQLITE_OK

    def _table_rule(self, table: str, inner: str | None) -> int:
        if table == "sqlite_dbpage":
            return self._deny("sqlite_dbpage (raw page access) is not allowed")
        if table in self._vtables:
            self._touched.add(table)
            return sqlite3.SQLITE_OK
        owner, sep, suffix = table.rpartition("_")
        if sep and suffix in _SHADOW_SUFFIXES and owner in self._vtables:
            # A write the virtual table's module makes for a statement on that table is
            # compiled on its own (inner is None then); anything else is a direct write.
            if owner in self._touched and inner is None:
                return sqlite3.SQLITE_OK
            return self._deny(
                f"table {table!r} holds the data of virtual table {owner!r} and may only be "
                "changed through it"
            )
        return sqlite3.SQLITE_OK

    def _pragma(self, name: str, value: str | None) -> int:
        lowered = name.lower()
        if lowered in WRITE_PRAGMAS:
            return sqlite3.SQLITE_OK
        if lowered in ARGUMENT_PRAGMAS or (lowered in READ_PRAGMAS and value is None):
            return sqlite3.SQLITE_OK
        if lowered in READ_PRAGMAS:
            return self._deny(
                f"PRAGMA {name} is managed by FastQuartDB and cannot be changed from raw SQL: "
                f"the connection is shared by every client (reading it is allowed: PRAGMA {lowered})"
            )
        return self._deny(
            f"PRAGMA {name} is not allowed in raw SQL: the connection is shared "
            "(see the raw-SQL rules in the README)"
        )


def raw_request(req: dict[str, Any]) -> tuple[str, list[Any] | dict[str, Any]]:
    """An ``execute`` request's ``sql`` and ``params`` (a list for ``?``, a map for
    ``:name``), each parameter checked by :func:`~.statements.check_value`.

    Raises:
        ValidationError: no SQL text, a parameter SQLite cannot bind, or ``params``
            neither a list nor a map.
    """
    sql = req.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise ValidationError("execute needs 'sql': one SQL statement as a string")
    params = req.get("params")
    if params is None:
        return sql, []
    if isinstance(params, list):
        return sql, [check_value(v, "a parameter") for v in params]
    if isinstance(params, dict):
        return sql, {str(k): check_value(v, f"parameter {brief(k)}") for k, v in params.items()}
    raise ValidationError("'params' must be a list (for ?) or a map (for :name)")


def check_statement(
    sql: str, schema: Iterable[str] = (), params: list[Any] | dict[str, Any] | None = None
) -> None:
    """Apply the sandbox's rules to ``sql`` without running it.

    ``sql`` is compiled (``EXPLAIN``: prepared, never executed) on a private
    in-memory database holding ``schema``, the ``sql`` column of the target's
    ``sqlite_master``, under the same authorizer the engine uses (``params`` are
    bound as the real statement's would be). For a
    statement that runs where no authorizer can be installed (a dqlite cluster).

    Raises:
        ValidationError: a rule refused the statement, or it is not one statement.
        sqlite3.Error: it does not compile against ``schema`` (syntax, no such table).
    """
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for ddl in schema:
            # Shadow tables come back with their virtual table; internal tables
            # (sqlite_sequence, sqlite_stat1) cannot be created by name.
            with contextlib.suppress(sqlite3.Error):
                conn.execute(ddl)
        sandbox = Sandbox(conn, defensive=False)
        with sandbox.raw():
            _explain(conn, sql, params or [])
    finally:
        conn.close()


_EXPLAINED = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*explain\b", re.I | re.S)


def _explain(conn: sqlite3.Connection, sql: str, params: list[Any] | dict[str, Any]) -> Any:
    # EXPLAIN compiles a statement (every authorizer question is asked) and runs nothing.
    # A statement that is an EXPLAIN already runs nothing either.
    text = sql if _EXPLAINED.match(sql) else "EXPLAIN " + sql
    try:
        return conn.execute(text, params).fetchall()
    except sqlite3.ProgrammingError as exc:
        if "one statement" in str(exc):
            raise ValidationError("raw SQL takes one statement per call") from None
        raise
