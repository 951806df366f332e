"""Injection corpus: hostile names and filters are refused before any SQL runs.

Every entry of the corpus (quotes, semicolons, comments, NUL, unicode
look-alikes, bidi and zero-width characters, very long names,
``sqlite_master``, keywords, SQL fragments) is put in every position that
names something — table, column, ``order_by``, operator, filter structure,
aggregate, join, index, conflict target, savepoint — through the model API
(every classmethod, and model definitions) in embedded and daemon mode, and
through raw protocol frames written straight to the daemon's socket. Each
case must fail with ``ValidationError`` (wire code ``validation``); the SQL
the engine ran meanwhile is traced and must hold no statement built from the
request; and ``sqlite_master`` (name and SQL of every row) is unchanged.
Values are the exception: SQL text in a value is data, stored and read back
as it was sent.

Then constraint violations (NOT NULL, UNIQUE, FOREIGN KEY, a STRICT table's
types) raise the same class in both modes, and a failing request never takes
the good requests of its batch down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    BaseModel,
    Column,
    FQDBError,
    IntegrityError,
    ValidationError,
)
from fastquartdb.engine import EngineThread
from fastquartdb.protocol import decode_body, encode_frame
from fastquartdb.server import Daemon
from tests.helpers import daemon_in_process

MODES = ["embedded", "daemon"]

# ---------------------------------------------------------------------------- the corpus

#: Names that must never reach SQL as identifiers. None of them names a real table
#: or column of the models below (keywords included: they are legal identifiers,
#: but no column is called that).
BAD_NAMES: dict[str, str] = {
    "double-quote": 'name"',
    "quoted": '"name"',
    "quote-breakout": 'name" FROM sqlite_master --',
    "single-quote": "name'",
    "single-quote-or": "name' OR '1'='1",
    "backtick": "`name`",
    "brackets": "[name]",
    "or-true": "name OR 1=1",
    "semicolon": "name; DROP TABLE author",
    "semicolon-end": "name;",
    "comment-dash": "name--",
    "comment-dash-space": "name -- x",
    "comment-block": "name/**/",
    "comment-open": "/*name",
    "nul-end": "name\x00",
    "nul-inside": "na\x00me",
    "nul-only": "\x00",
    "fullwidth": "\uff4e\uff41\uff4d\uff45",  # "name" in fullwidth letters
    "cyrillic-a": "n\u0430me",  # Cyrillic small a
    "cyrillic-e": "nam\u0435",  # Cyrillic small ie
    "greek-omicron": "auth\u03bfr",  # Greek small omicron
    "zero-width-joiner": "na\u200dme",
    "zero-width-space": "name\u200b",
    "rtl-override": "\u202ename",
    "combining-accent": "name\u0301",
    "nbsp": "name\u00a0",
    "dotless-i": "\u0131d",  # dotless i: upper() makes it "ID"
    "kelvin-sign": "\u212aey",  # K (Kelvin), lower() is "k"
    "long-65": "n" * 65,
    "long-10k": "n" * 10_000,
    "long-quotes-10k": '"' * 10_000,
    "sqlite_master": "sqlite_master",
    "SQLITE_MASTER": "SQLITE_MASTER",
    "sqlite_schema": "sqlite_schema",
    "sqlite_temp_master": "sqlite_temp_master",
    "sqlite_sequence": "sqlite_sequence",
    "main-qualified": "main.author",
    "temp-qualified": "temp.author",
    "keyword-select": "select",
    "keyword-drop": "DROP",
    "keyword-where": "where",
    "rowid": "rowid",
    "star": "*",
    "paren": "name)",
    "function": "lower(name)",
    "subquery": "(SELECT sql FROM sqlite_master)",
    "empty": "",
    "space": " ",
    "leading-space": " name",
    "newline": "name\n",
    "tab": "\tname",
    "leading-digit": "1name",
    "minus": "-",
    "plus-only": "+",
    "dollar": "$name",
    "at": "@name",
    "colon": ":name",
    "question": "?",
}

#: Entries above that are well-formed identifiers: refused where a name must point at an
#: existing table or column, but fine where a request makes up a new name (an aggregate
#: alias, a new table, column or savepoint), since quoting keeps them names.
IDENTIFIER_LIKE = {"keyword-select", "keyword-drop", "keyword-where", "rowid"}


def hostile(*, new_name: bool) -> dict[str, str]:
    """The corpus for a position; ``new_name``: the position makes up a name."""
    return {k: v for k, v in BAD_NAMES.items() if not (new_name and k in IDENTIFIER_LIKE)}


#: Operators that must be refused (look-alikes that normalise to a real operator are not
#: here: they produce that operator's SQL, which is harmless).
BAD_OPERATORS: dict[str, str] = {
    "or-true": "= 1 OR 1=1 --",
    "semicolon": "=;",
    "drop": "= ?; DROP TABLE author; --",
    "like-quote": "LIKE'",
    "in-subquery": "IN (SELECT name FROM sqlite_master)",
    "double-eq-value": "==1",
    "nul": "=\x00",
    "nul-first": "\x00=",
    "fullwidth-in": "\uff29\uff2e",  # "IN" in fullwidth letters
    "fullwidth-eq": "\uff1d",  # fullwidth equals sign
    "zero-width": "LIKE\u200b",
    "rtl": "<>\u202e",
    "distinct-from": "IS NOT DISTINCT FROM",
    "match": "MATCH",
    "regexp": "REGEXP",
    "not": "NOT",
    "empty": "",
    "space": " ",
    "comment": "--",
    "comment-block": "/**/=",
    "between-or": "BETWEEN 1 AND 2 OR",
    "exists": "EXISTS",
    "concat": "||",
    "and": "AND",
    "escape": "LIKE ESCAPE",
    "quote": "'",
    "double-quote": '"',
    "backtick": "`",
    "long": "=" * 10_000,
}

#: SQL as data: every one must be stored and read back unchanged.
SQL_VALUES: list[Any] = [
    "'; DROP TABLE author; --",
    '" OR 1=1 --',
    "Robert'); DROP TABLE students;--",
    "x\x00y",
    "/* */",
    "`",
    "\u202eevil",
    "\uff4e\uff41\uff4d\uff45",
    "%' OR '1'='1",
    "?",
    ":name",
    "$1",
    "\\",
    "' || (SELECT sql FROM sqlite_master) || '",
    "name\u200d",
    "a" * 10_000,
]
SQL_BYTES = [b"'; DROP TABLE author; --", b"\x00\xff\x00"]

# ---------------------------------------------------------------------------- models


def define_models() -> tuple[type[BaseModel], type[BaseModel]]:
    """Fresh model classes (registered for this test only: conftest restores the registry)."""

    class Author(BaseModel):
        __tablename__ = "author"
        id = Column("INTEGER", primary_key=True)
        name = Column("TEXT", nullable=False, unique=True)
        age = Column("INTEGER")

    class Post(BaseModel):
        __tablename__ = "post"
        id = Column("INTEGER", primary_key=True)
        author_id = Column("INTEGER", references="author.id")
        title = Column("TEXT")
        body = Column("BLOB")

    return Author, Post


def schema(path: str) -> list[tuple[Any, ...]]:
    """Every row of sqlite_master (type, name, table, SQL), read beside the engine."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()


# What the engine runs around a request without building anything from it: the batch's
# transaction, the per-request savepoint, reading the schema, naming the tables.
HOUSEKEEPING = re.compile(
    r"""^\s*(?:
        PRAGMA\s+(?:schema_version|table_x?info|foreign_key_list|index_list|index_x?info)\b
      | BEGIN(?:\s+IMMEDIATE)?\s*$
      | COMMIT\s*$
      | ROLLBACK\s*$
      | (?:SAVEPOINT|RELEASE|ROLLBACK\s+TO)\s+"fqdb_request"\s*$
      | SELECT\s+name(?:,\s*type)?\s+FROM\s+sqlite_master\b  # the live tables and views
    )""",
    re.IGNORECASE | re.VERBOSE,
)


class SqlTrace:
    """The statements the engine's connection runs, from its own thread."""

    def __init__(self, thread: EngineThread) -> None:
        self.thread = thread
        self.statements: list[str] = []

    async def start(self) -> None:
        self.statements.clear()
        await self.thread.call(lambda engine: engine.conn.set_trace_callback(self._add))

    def _add(self, sql: str) -> None:
        self.statements.append(sql)

    async def stop(self) -> None:
        await self.thread.call(lambda engine: engine.conn.set_trace_callback(None))

    def built(self) -> list[str]:
        """Statements other than housekeeping: SQL built from a request."""
        return [sql for sql in self.statements if not HOUSEKEEPING.match(sql)]


@dataclass
class Env:
    """A manager on a fresh file, the models, and (daemon mode) the daemon."""

    mode: str
    path: str
    db: AsyncDatabaseManager
    Author: type[BaseModel]
    Post: type[BaseModel]
    trace: SqlTrace
    daemon: Daemon | None

    async def refused(
        self, label: str, call: Callable[[], Awaitable[Any]], failures: list[str]
    ) -> None:
        """Run ``call``: it must raise ValidationError, run no SQL built from it, change no schema."""
        before = schema(self.path)
        await self.trace.start()
        try:
            outcome = await call()
        except ValidationError:
            outcome = None
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {exc!s:.200}")
            return
        else:
            failures.append(f"{label}: accepted, returned {outcome!r:.200}")
        finally:
            await self.trace.stop()
        if self.trace.built():
            failures.append(f"{label}: SQL ran: {self.trace.built()}")
        if schema(self.path) != before:
            failures.append(f"{label}: sqlite_master changed")

    @property
    def thread(self) -> EngineThread:
        return self.trace.thread


@pytest.fixture(params=MODES)
async def env(request: pytest.FixtureRequest, db_path: str) -> AsyncIterator[Env]:
    AsyncDatabaseManager._models.clear()  # only this module's models; conftest restores
    mode = str(request.param)
    async with contextlib.AsyncExitStack() as stack:
        daemon = None
        if mode == "daemon":
            daemon = await stack.enter_async_context(daemon_in_process(db_path))
        author, post = define_models()
        db = await AsyncDatabaseManager.init_engine(db_path, mode=mode)
        assert db.mode == mode
        await author.insert_many(
            [{"id": 1, "name": "alice", "age": 30}, {"id": 2, "name": "bob", "age": 25}]
        )
        await post.insert({"id": 1, "author_id": 1, "title": "hello", "body": b"x"})
        thread = daemon.thread if daemon else db.transport.worker.thread  # type: ignore[attr-defined]
        yield Env(mode, db_path, db, author, post, SqlTrace(thread), daemon)
        await AsyncDatabaseManager.close()


def check_rows_untouched(rows: list[dict[str, Any]]) -> None:
    assert rows == [
        {"id": 1, "name": "alice", "age": 30},
        {"id": 2, "name": "bob", "age": 25},
    ]


# ---------------------------------------------------------------------------- model API

# position -> call(Author, Post, bad name); every one must be refused for every name.
MODEL_POSITIONS: dict[str, Callable[[Any, Any, str], Awaitable[Any]]] = {
    "fetch columns": lambda A, P, n: A.fetch(columns=[n]),
    "fetch columns str": lambda A, P, n: A.fetch(columns=n),
    "fetch order_by": lambda A, P, n: A.fetch(order_by=[n]),
    "fetch order_by desc": lambda A, P, n: A.fetch(order_by="-" + n),
    "fetch order_by asc": lambda A, P, n: A.fetch(order_by=["+" + n]),
    "fetch filter column": lambda A, P, n: A.fetch(filters={n: 1}),
    "fetch filter OR group": lambda A, P, n: A.fetch(filters=[{"age": 1}, {n: 1}]),
    "fetch join column": lambda A, P, n: P.fetch(join=[A], columns=[f"author.{n}"]),
    "fetch join filter": lambda A, P, n: P.fetch(join=[A], filters={f"author.{n}": 1}),
    "fetch_one filter": lambda A, P, n: A.fetch_one(filters={n: None}),
    "count filter": lambda A, P, n: A.count(filters={n: [(">", 1)]}),
    "exists filter": lambda A, P, n: A.exists(filters={n: 1}),
    "distinct column": lambda A, P, n: A.distinct(n),
    "insert key": lambda A, P, n: A.insert({"name": "carol", n: 1}),
    "insert_many key": lambda A, P, n: A.insert_many([{"name": "carol", n: 1}]),
    "upsert key": lambda A, P, n: A.upsert({"name": "alice", n: 1}, conflict=["name"]),
    "upsert conflict": lambda A, P, n: A.upsert({"name": "alice"}, conflict=[n]),
    "upsert update": lambda A, P, n: A.upsert({"name": "alice"}, conflict="name", update=[n]),
    "upsert_many conflict": lambda A, P, n: A.upsert_many([{"name": "alice"}], conflict=[n]),
    "update key": lambda A, P, n: A.update({n: 1}, filters={"id": 1}),
    "update filter": lambda A, P, n: A.update({"age": 1}, filters={n: 1}),
    "delete filter": lambda A, P, n: A.delete(filters={n: 1}),
    "aggregate column": lambda A, P, n: A.aggregate({"c": ("max", n)}),
    "aggregate alias": lambda A, P, n: A.aggregate({n: ("count", "*")}),
    "aggregate function": lambda A, P, n: A.aggregate({"c": (n, "age")}),
    "aggregate group_by": lambda A, P, n: A.aggregate({"c": ("count", "*")}, group_by=[n]),
    "aggregate having": lambda A, P, n: A.aggregate({"c": ("count", "*")}, having={n: 1}),
    "aggregate order_by": lambda A, P, n: A.aggregate({"c": ("count", "*")}, order_by=[n]),
    "fetch_page order_by": lambda A, P, n: A.fetch_page(order_by=n),
    "fetch_page columns": lambda A, P, n: A.fetch_page(columns=[n]),
    "iterate columns": lambda A, P, n: _drain(A.iterate(columns=[n])),
    "iterate filter": lambda A, P, n: _drain(A.iterate(filters={n: 1})),
}


async def _drain(iterator: Any) -> list[Any]:
    return [row async for row in iterator]


#: Positions where a request makes up a name rather than naming something that exists.
NEW_NAME_POSITIONS = {
    "aggregate alias",
    "ensure_table table",
    "ensure_table column",
    "savepoint",
    "__tablename__",
    "column name",
    # A foreign key may name a table or column that does not exist (yet): SQLite checks
    # that when the key is used, so only the name's form is checked here.
    "references table",
    "references column",
    "ensure_table references",
}


@pytest.mark.parametrize("position", MODEL_POSITIONS)
async def test_model_api_refuses_bad_names(env: Env, position: str) -> None:
    call = MODEL_POSITIONS[position]
    failures: list[str] = []
    corpus = hostile(new_name=position in NEW_NAME_POSITIONS)
    if position == "fetch_page order_by":
        del corpus["empty"]  # fetch_page(order_by="") means its default order, the key
    for label, name in corpus.items():
        await env.refused(
            f"{position} <- {label}",
            lambda name=name: call(env.Author, env.Post, name),  # type: ignore[misc]
            failures,
        )
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


@pytest.mark.parametrize(
    "shape",
    [
        "name = 'x'",
        "name = 'x' OR 1=1",
        42,
        b"name",
        {"name": ("=", "x", "extra")},
        {"name": [("=", "x"), "OR 1=1"]},
        {"name": [("=", "x"), ("OR", "1=1")]},
        {"name": {"=": "x"}},
        {"name": {"$ne": "x"}},
        [{"name": "x"}, "OR 1=1"],
        [{"name": "x"}, None],
        {("name",): "x"},
        {None: "x"},
        {"name": [("IN", "(SELECT sql FROM sqlite_master)")]},
        {"name": [("IN", "('a', 'b')")]},
        {"name": [("BETWEEN", "'a' AND 'z'")]},
        {"name": [("BETWEEN", ["a"])]},
        {"name": [("=", ["a", "b"])]},
        {"name": [("=", {"a": 1})]},
        {"name": [("=", object())]},
        {"name": [("=",)]},
        {"name": [(None, "x")]},
        {"name": [(["="], "x")]},
    ],
    ids=repr,
)
async def test_model_api_refuses_bad_filter_structure(env: Env, shape: Any) -> None:
    failures: list[str] = []
    for label, call in {
        "fetch": lambda: env.Author.fetch(filters=shape),
        "count": lambda: env.Author.count(filters=shape),
        "update": lambda: env.Author.update({"age": 1}, filters=shape),
        "delete": lambda: env.Author.delete(filters=shape),
    }.items():
        await env.refused(label, call, failures)
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


async def test_model_api_refuses_bad_operators(env: Env) -> None:
    failures: list[str] = []
    A = env.Author
    calls: dict[str, Callable[[str], Awaitable[Any]]] = {
        "fetch": lambda op: A.fetch(filters={"name": [(op, "x")]}),
        "fetch shorthand": lambda op: A.fetch(filters={"name": (op, "x")}),
        "count": lambda op: A.count(filters={"age": [(op, 1)]}),
        "update": lambda op: A.update({"age": 1}, filters={"id": [(op, 1)]}),
        "delete": lambda op: A.delete(filters={"id": [(op, 1)]}),
        "having": lambda op: A.aggregate({"c": ("count", "*")}, having={"c": [(op, 1)]}),
    }
    for label, op in BAD_OPERATORS.items():
        for method, call in calls.items():
            await env.refused(
                f"{method} <- {label}",
                lambda call=call, op=op: call(op),  # type: ignore[misc]
                failures,
            )
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


def _model(
    tablename: str | None = None, column: str = "id", **column_options: Any
) -> type[BaseModel]:
    namespace: dict[str, Any] = {
        "id": Column("INTEGER", primary_key=True),
        column: Column("TEXT", **column_options),
    }
    if tablename is not None:
        namespace["__tablename__"] = tablename
    return type("Hostile", (BaseModel,), namespace)


DEFINITIONS: dict[str, Callable[[str], Any]] = {
    "__tablename__": lambda n: _model(tablename=n),
    "column name": lambda n: _model(column=n),
    "references table": lambda n: _model(column="ref", references=f"{n}.id"),
    "references column": lambda n: _model(column="ref", references=f"author.{n}"),
    "check": lambda n: _model(column="c", check=f"c > 0 AND {n} > 0"),
    "on_delete": lambda n: _model(column="ref", references="author.id", on_delete=n),
    "__indexes__": lambda n: type(
        "Hostile", (BaseModel,), {"id": Column("INTEGER", primary_key=True), "__indexes__": [(n,)]}
    ),
    "__unique_together__": lambda n: type(
        "Hostile",
        (BaseModel,),
        {"id": Column("INTEGER", primary_key=True), "__unique_together__": [("id", n)]},
    ),
}


@pytest.mark.parametrize("position", DEFINITIONS)
async def test_model_definitions_refuse_bad_names(env: Env, position: str) -> None:
    """A model naming something hostile fails at class definition: nothing is sent."""
    before = schema(env.path)
    registered = dict(AsyncDatabaseManager._models)
    failures = []
    await env.trace.start()
    try:
        for label, name in hostile(new_name=position in NEW_NAME_POSITIONS).items():
            try:
                model = DEFINITIONS[position](name)
            except ValidationError:
                continue
            failures.append(f"{label}: defined {model!r} ({model.__tablename__})")
    finally:
        await env.trace.stop()
    assert not failures, "\n".join(failures)
    assert env.trace.statements == []
    assert AsyncDatabaseManager._models == registered
    assert schema(env.path) == before


@pytest.mark.parametrize(
    "check",
    [
        "c > 0); DROP TABLE author; --",
        "c > 0; DROP TABLE author",
        "c > (SELECT count(*) FROM author)",
        "c > 0 -- comment",
        "c > 0 /* x */",
        "c IN (SELECT name FROM sqlite_master)",
        "load_extension('x') OR c",
        "c > 0) OR (1",
        "c > \x00",
        "random() > c",
        "c > x'00'",
    ],
)
async def test_check_expressions_refuse_sql(env: Env, check: str) -> None:
    failures: list[str] = []

    async def define() -> Any:
        return _model(column="c", check=check)

    async def raw() -> Any:
        return await env.db.request(
            {
                "op": "ensure_table",
                "table": "hostile",
                "columns": [
                    {"name": "id", "type": "INTEGER", "primary_key": True},
                    {"name": "c", "type": "TEXT", "check": check},
                ],
            }
        )

    await env.refused("model", define, failures)
    await env.refused("ensure_table", raw, failures)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------- raw frames


class RawClient:
    """A bare protocol client on the daemon's socket: frames in, reply maps out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next_id = 1

    @classmethod
    async def open(cls, socket_path: str) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        self = cls(reader, writer)
        hello = await self.call({"op": "hello", "version": 1})
        assert hello["ok"], hello
        return self

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        message = {"id": self.next_id, **message}
        self.next_id += 1
        self.writer.write(encode_frame(message))
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        reply = decode_body(await self.reader.readexactly(length))
        assert reply["id"] == message["id"], reply
        return reply

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _cols(name: str) -> list[dict[str, Any]]:
    return [
        {"name": "id", "type": "INTEGER", "primary_key": True},
        {"name": name, "type": "TEXT"},
    ]


# position -> request with the bad name n in that position.
RAW_POSITIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    "fetch table": lambda n: {"op": "fetch", "table": n},
    "fetch columns": lambda n: {"op": "fetch", "table": "author", "columns": [n]},
    "fetch where column": lambda n: {"op": "fetch", "table": "author", "where": [[[n, "=", 1]]]},
    "fetch order_by": lambda n: {"op": "fetch", "table": "author", "order_by": [n]},
    "fetch order_by desc": lambda n: {"op": "fetch", "table": "author", "order_by": "-" + n},
    "fetch join table": lambda n: {"op": "fetch", "table": "post", "join": [{"table": n}]},
    "fetch join kind": lambda n: {
        "op": "fetch",
        "table": "post",
        "join": [{"table": "author", "kind": n}],
    },
    "fetch qualified column": lambda n: {
        "op": "fetch",
        "table": "post",
        "join": [{"table": "author"}],
        "columns": [f"author.{n}"],
    },
    "count table": lambda n: {"op": "count", "table": n},
    "count where column": lambda n: {
        "op": "count",
        "table": "author",
        "where": [[[n, "IS", None]]],
    },
    "insert table": lambda n: {"op": "insert", "table": n, "values": {"name": "x"}},
    "insert values key": lambda n: {
        "op": "insert",
        "table": "author",
        "values": {"name": "x", n: 1},
    },
    "insert_many table": lambda n: {
        "op": "insert_many",
        "table": n,
        "columns": ["name"],
        "rows": [["x"]],
    },
    "insert_many columns": lambda n: {
        "op": "insert_many",
        "table": "author",
        "columns": ["name", n],
        "rows": [["x", 1]],
    },
    "update table": lambda n: {
        "op": "update",
        "table": n,
        "values": {"age": 1},
        "where": [[["id", "=", 1]]],
    },
    "update values key": lambda n: {
        "op": "update",
        "table": "author",
        "values": {n: 1},
        "where": [[["id", "=", 1]]],
    },
    "update where column": lambda n: {
        "op": "update",
        "table": "author",
        "values": {"age": 1},
        "where": [[[n, "=", 1]]],
    },
    "delete table": lambda n: {"op": "delete", "table": n, "where": [[["id", "=", 1]]]},
    "delete where column": lambda n: {"op": "delete", "table": "author", "where": [[[n, "=", 1]]]},
    "ensure_table table": lambda n: {"op": "ensure_table", "table": n, "columns": _cols("x")},
    "ensure_table column": lambda n: {"op": "ensure_table", "table": "fresh", "columns": _cols(n)},
    "ensure_table type": lambda n: {
        "op": "ensure_table",
        "table": "fresh",
        "columns": [{"name": "id", "type": n}],
    },
    "ensure_table references": lambda n: {
        "op": "ensure_table",
        "table": "fresh",
        "columns": [{"name": "a", "type": "INTEGER", "references": f"author.{n}"}],
    },
    "ensure_table on_delete": lambda n: {
        "op": "ensure_table",
        "table": "fresh",
        "columns": [{"name": "a", "type": "INTEGER", "references": "author.id", "on_delete": n}],
    },
    "ensure_table indexes": lambda n: {
        "op": "ensure_table",
        "table": "fresh",
        "columns": _cols("x"),
        "indexes": [[n]],
    },
    "ensure_table unique": lambda n: {
        "op": "ensure_table",
        "table": "fresh",
        "columns": _cols("x"),
        "unique": [["x", n]],
    },
    "aggregate alias": lambda n: {
        "op": "aggregate",
        "table": "author",
        "aggregates": {n: ["count", "*"]},
    },
    "aggregate column": lambda n: {
        "op": "aggregate",
        "table": "author",
        "aggregates": {"c": ["max", n]},
    },
    "aggregate function": lambda n: {
        "op": "aggregate",
        "table": "author",
        "aggregates": {"c": [n, "age"]},
    },
    "aggregate group_by": lambda n: {
        "op": "aggregate",
        "table": "author",
        "aggregates": {"c": ["count", "*"]},
        "group_by": [n],
    },
    "aggregate having": lambda n: {
        "op": "aggregate",
        "table": "author",
        "aggregates": {"c": ["count", "*"]},
        "having": [[[n, ">", 0]]],
    },
    "upsert conflict": lambda n: {
        "op": "upsert",
        "table": "author",
        "values": {"name": "alice"},
        "conflict": [n],
    },
    "upsert update": lambda n: {
        "op": "upsert",
        "table": "author",
        "values": {"name": "alice", "age": 1},
        "conflict": ["name"],
        "update": [n],
    },
}


async def _raw_refused(
    env: Env,
    client: RawClient,
    label: str,
    message: dict[str, Any],
    failures: list[str],
) -> None:
    async def send() -> Any:
        reply = await client.call(message)
        if reply["ok"]:
            return reply["result"]
        code = reply["error"]["code"]
        if code == "validation":
            raise ValidationError(reply["error"]["message"])
        raise FQDBError(f"code {code!r}: {reply['error']['message']}")

    await env.refused(label, send, failures)


@pytest.fixture
async def raw_env(db_path: str) -> AsyncIterator[tuple[Env, RawClient]]:
    AsyncDatabaseManager._models.clear()
    async with daemon_in_process(db_path) as daemon:
        author, post = define_models()
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await author.insert_many(
            [{"id": 1, "name": "alice", "age": 30}, {"id": 2, "name": "bob", "age": 25}]
        )
        await post.insert({"id": 1, "author_id": 1, "title": "hello", "body": b"x"})
        assert daemon.config.socket is not None
        client = await RawClient.open(daemon.config.socket)
        try:
            yield Env("daemon", db_path, db, author, post, SqlTrace(daemon.thread), daemon), client
        finally:
            await client.close()
            await AsyncDatabaseManager.close()


@pytest.mark.parametrize("position", RAW_POSITIONS)
async def test_raw_frames_refuse_bad_names(raw_env: tuple[Env, RawClient], position: str) -> None:
    env, client = raw_env
    failures: list[str] = []
    for label, name in hostile(new_name=position in NEW_NAME_POSITIONS).items():
        message = RAW_POSITIONS[position](name)
        await _raw_refused(env, client, f"{position} <- {label}", message, failures)
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


async def test_raw_frames_refuse_bad_operators(raw_env: tuple[Env, RawClient]) -> None:
    env, client = raw_env
    failures: list[str] = []
    for label, op in BAD_OPERATORS.items():
        for op_name, message in {
            "fetch": {"op": "fetch", "table": "author", "where": [[["name", op, "x"]]]},
            "count": {"op": "count", "table": "author", "where": [[["age", op, 1]]]},
            "update": {
                "op": "update",
                "table": "author",
                "values": {"age": 1},
                "where": [[["id", op, 1]]],
            },
            "delete": {"op": "delete", "table": "author", "where": [[["id", op, 1]]]},
            "having": {
                "op": "aggregate",
                "table": "author",
                "aggregates": {"c": ["count", "*"]},
                "having": [[["c", op, 1]]],
            },
        }.items():
            await _raw_refused(env, client, f"{op_name} <- {label}", message, failures)
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


async def test_raw_frames_refuse_bad_savepoint_names(raw_env: tuple[Env, RawClient]) -> None:
    env, client = raw_env
    begun = await client.call({"op": "begin", "txn": 99})
    assert begun["ok"], begun
    failures: list[str] = []
    try:
        for label, name in hostile(new_name=True).items():
            for op in ("begin", "commit", "rollback"):
                message = {"op": op, "txn": 99, "savepoint": name}
                await _raw_refused(env, client, f"{op} <- {label}", message, failures)
    finally:
        ended = await client.call({"op": "rollback", "txn": 99})
    assert ended["ok"], ended
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


BAD_WHERE: list[Any] = [
    "1=1",
    "id = 1 OR 1=1",
    5,
    True,
    {"name": "x"},
    [["name", "=", "x"]],
    [[["name", "=", "x", "extra"]]],
    [[["name", "="]]],
    [[["name", "=", "x"], "OR 1=1"]],
    [[{"column": "name", "op": "=", "value": "x"}]],
    [[["name", "IN", "('a', 'b')"]]],
    [[["name", "IN", "(SELECT name FROM sqlite_master)"]]],
    [[["name", "BETWEEN", [1]]]],
    [[["name", "BETWEEN", "1 AND 2"]]],
    [[["name", "=", ["a"]]]],
    [[["name", "=", {"a": 1}]]],
    [[[["name"], "=", 1]]],
    [[["name", ["="], 1]]],
    [[[None, "=", 1]]],
    [[["name", None, 1]]],
    [["OR"]],
    [[["name", "<", None]]],
    [[["name", "LIKE", None]]],
]


@pytest.mark.parametrize("where", BAD_WHERE, ids=repr)
async def test_raw_frames_refuse_bad_filter_structure(
    raw_env: tuple[Env, RawClient], where: Any
) -> None:
    env, client = raw_env
    failures: list[str] = []
    for op_name, message in {
        "fetch": {"op": "fetch", "table": "author", "where": where},
        "count": {"op": "count", "table": "author", "where": where},
        "update": {"op": "update", "table": "author", "values": {"age": 1}, "where": where},
        "delete": {"op": "delete", "table": "author", "where": where},
    }.items():
        await _raw_refused(env, client, op_name, message, failures)
    assert not failures, "\n".join(failures)
    check_rows_untouched(await env.Author.fetch(order_by="id"))


# ---------------------------------------------------------------------------- values are data


async def test_sql_in_values_is_stored_literally(env: Env) -> None:
    """Values are bound parameters: SQL text in them is data, and comes back unchanged."""
    Author, Post = env.Author, env.Post
    before = schema(env.path)
    for i, text in enumerate(SQL_VALUES, start=10):
        await Author.insert({"id": i, "name": text, "age": i})
        assert await Author.fetch(filters={"name": text}) == [{"id": i, "name": text, "age": i}]
        assert await Author.count(filters={"name": [("IN", [text, "nobody"])]}) == 1
        await Author.update({"name": text + "!"}, filters={"id": i})
        assert (await Author.fetch_one(filters={"id": i}))["name"] == text + "!"
        await Author.update({"name": text}, filters={"name": text + "!"})
    for i, blob in enumerate(SQL_BYTES, start=10):
        await Post.insert({"id": i, "author_id": 1, "title": "t", "body": blob})
        assert (await Post.fetch_one(filters={"body": blob}))["id"] == i
    rows = await Author.fetch(filters={"id": [(">=", 10)]}, order_by="id")
    assert [row["name"] for row in rows] == SQL_VALUES
    raw = await env.db.execute("SELECT name FROM author WHERE id >= ? ORDER BY id", [10])
    assert [row[0] for row in raw["rows"]] == SQL_VALUES
    assert schema(env.path) == before
    assert await Author.delete(filters={"id": [(">=", 10)]}) == len(SQL_VALUES)
    check_rows_untouched(await Author.fetch(order_by="id"))


async def test_sql_in_values_is_stored_literally_over_raw_frames(
    raw_env: tuple[Env, RawClient],
) -> None:
    env, client = raw_env
    before = schema(env.path)
    for i, text in enumerate(SQL_VALUES, start=10):
        reply = await client.call(
            {"op": "insert", "table": "author", "values": {"id": i, "name": text}}
        )
        assert reply["ok"], reply
        reply = await client.call(
            {
                "op": "fetch",
                "table": "author",
                "columns": ["id", "name"],
                "where": [[["name", "=", text]]],
            }
        )
        assert reply["result"]["rows"] == [[i, text]], reply
        reply = await client.call(
            {
                "op": "execute",
                "sql": "SELECT name FROM author WHERE name = :v",
                "params": {"v": text},
            }
        )
        assert reply["result"]["rows"] == [[text]], reply
    reply = await client.call(
        {
            "op": "insert_many",
            "table": "author",
            "columns": ["id", "name"],
            "rows": [[100, SQL_VALUES[0]]],
        }
    )
    assert reply["ok"] is False and reply["error"]["code"] == "integrity"  # UNIQUE name: data
    assert schema(env.path) == before


# ---------------------------------------------------------------------------- a bug


async def test_live_column_name_with_a_quote_cannot_break_out(env: Env) -> None:
    column = 'sql" FROM sqlite_master --'
    await env.db.execute(
        'CREATE TABLE odd (id INTEGER PRIMARY KEY, "sql"" FROM sqlite_master --" TEXT)'
    )
    await env.db.execute("INSERT INTO odd VALUES (1, 'mine')")
    before = schema(env.path)
    for request in (
        {"op": "fetch", "table": "odd", "columns": [column]},
        {"op": "fetch", "table": "odd", "columns": ["id"], "order_by": [column]},
        {"op": "fetch", "table": "odd", "where": [[[column, "IS NOT", None]]]},
    ):
        try:
            result = await env.db.request(dict(request))
        except ValidationError:
            continue
        # Either refused, or the column's own value: never another table's rows.
        for row in result["rows"]:
            assert "CREATE TABLE" not in repr(row), result
        assert len(result["rows"]) == 1, result
    assert schema(env.path) == before


# ---------------------------------------------------------------------------- constraints


async def _violations(env: Env) -> dict[str, str]:
    """Each violation's exception class name, and the rows left as they were."""
    Author = env.Author
    db = env.db
    await db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")
    await db.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
        "REFERENCES parent(id) ON DELETE RESTRICT)"
    )
    await db.execute("CREATE TABLE typed (id INTEGER PRIMARY KEY, n INTEGER, t TEXT) STRICT")
    await db.execute("INSERT INTO parent VALUES (1, 'p')")
    await db.execute("INSERT INTO child VALUES (1, 1)")

    class Child(BaseModel):
        __tablename__ = "child"
        id = Column("INTEGER", primary_key=True)
        parent_id = Column("INTEGER", nullable=False)

    class Typed(BaseModel):
        __tablename__ = "typed"
        id = Column("INTEGER", primary_key=True)
        n = Column("INTEGER")
        t = Column("TEXT")

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "not null (model)": lambda: Author.insert({"age": 1}),
        "not null (update)": lambda: Author.update({"name": None}, filters={"id": 1}),
        "not null (raw)": lambda: db.execute("INSERT INTO author (age) VALUES (1)"),
        "unique (model)": lambda: Author.insert({"name": "alice"}),
        "unique (insert_many)": lambda: Author.insert_many([{"name": "zed"}, {"name": "zed"}]),
        "unique (update)": lambda: Author.update({"name": "bob"}, filters={"id": 1}),
        "primary key": lambda: Author.insert({"id": 1, "name": "carol"}),
        "foreign key (model, raw REFERENCES)": lambda: Child.insert({"parent_id": 999}),
        "foreign key (Column references)": lambda: env.Post.insert({"author_id": 999}),
        "foreign key (raw)": lambda: db.execute("INSERT INTO child (parent_id) VALUES (999)"),
        "foreign key (delete parent)": lambda: db.execute("DELETE FROM parent WHERE id = 1"),
        "foreign key (update child)": lambda: Child.update({"parent_id": 5}, filters={"id": 1}),
        "strict type (raw)": lambda: db.execute("INSERT INTO typed (n) VALUES ('abc')"),
        "strict type (raw params)": lambda: db.execute(
            "INSERT INTO typed (t) VALUES (?)", [b"\x00"]
        ),
        "strict type (insert op)": lambda: db.request(
            {"op": "insert", "table": "typed", "values": {"n": "abc"}}
        ),
        "strict type (model)": lambda: Typed.insert({"n": "abc"}),
    }
    seen: dict[str, str] = {}
    for label, call in cases.items():
        try:
            await call()
        except FQDBError as exc:
            seen[label] = type(exc).__name__
        else:
            seen[label] = "accepted"
    check_rows_untouched(await Author.fetch(order_by="id"))
    assert await Child.count() == 1
    assert await Typed.count() == 0
    return seen


async def test_constraint_violations_raise_the_same_class_in_both_modes(db_path: str) -> None:
    seen: dict[str, dict[str, str]] = {}
    for mode in MODES:
        AsyncDatabaseManager._models.clear()
        path = db_path.replace("test.db", f"{mode}.db")
        async with contextlib.AsyncExitStack() as stack:
            daemon = None
            if mode == "daemon":
                daemon = await stack.enter_async_context(daemon_in_process(path))
            author, post = define_models()
            db = await AsyncDatabaseManager.init_engine(path, mode=mode)
            await author.insert_many(
                [{"id": 1, "name": "alice", "age": 30}, {"id": 2, "name": "bob", "age": 25}]
            )
            thread = daemon.thread if daemon else db.transport.worker.thread  # type: ignore[attr-defined]
            env = Env(mode, path, db, author, post, SqlTrace(thread), daemon)
            seen[mode] = await _violations(env)
            await AsyncDatabaseManager.close()
    assert seen["embedded"] == seen["daemon"]
    integrity = {label: name for label, name in seen["daemon"].items() if name != "IntegrityError"}
    # A model may refuse a wrong-typed value itself (ValidationError) before SQLite's STRICT
    # check; everything that reaches SQLite is an IntegrityError.
    assert set(integrity) <= {"strict type (model)", "strict type (insert op)"}, integrity
    assert set(integrity.values()) <= {"ValidationError"}, integrity


# ---------------------------------------------------------------------------- neighbours

BAD_NEIGHBOURS: dict[str, tuple[dict[str, Any], type[FQDBError]]] = {
    "not null": ({"op": "insert", "table": "author", "values": {"age": 1}}, IntegrityError),
    "unique": ({"op": "insert", "table": "author", "values": {"name": "alice"}}, IntegrityError),
    "foreign key": (
        {"op": "insert", "table": "post", "values": {"author_id": 999, "title": "x"}},
        IntegrityError,
    ),
    "strict type": (
        {"op": "execute", "sql": "INSERT INTO typed (n) VALUES ('abc')"},
        IntegrityError,
    ),
    "insert_many half good": (
        {
            "op": "insert_many",
            "table": "author",
            "columns": ["name"],
            "rows": [["fresh-1"], ["fresh-2"], ["alice"]],
        },
        IntegrityError,
    ),
    "unknown column": (
        {"op": "insert", "table": "author", "values": {"name; DROP TABLE author": 1}},
        ValidationError,
    ),
    "raw syntax error": ({"op": "execute", "sql": "INSERT INTO author VALUES ("}, FQDBError),
}


@pytest.mark.parametrize("kind", BAD_NEIGHBOURS)
async def test_a_failing_request_never_sinks_its_batch(env: Env, kind: str) -> None:
    """Sixty good inserts pipelined around one bad request: all sixty commit."""
    await env.db.execute("CREATE TABLE typed (id INTEGER PRIMARY KEY, n INTEGER) STRICT")
    bad, error = BAD_NEIGHBOURS[kind]
    worker = env.daemon.worker if env.daemon is not None else env.db.transport.worker  # type: ignore[attr-defined]
    batch_max = worker.stats.batch_max
    good = [
        {"op": "insert", "table": "author", "values": {"name": f"n{i}", "age": i}}
        for i in range(60)
    ]
    requests = [*good[:30], bad, *good[30:]]
    results = await asyncio.gather(
        *(env.db.request(dict(r)) for r in requests), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], error), results
    assert isinstance(results[30], error)
    assert await env.Author.count(filters={"name": [("LIKE", "n%")]}) == 60
    assert await env.Author.count(filters={"name": [("LIKE", "fresh-%")]}) == 0
    assert (await env.db.execute("SELECT count(*) FROM typed"))["rows"] == [[0]]
    # They really shared a batch with the bad one.
    assert worker.stats.batch_max >= 20, (worker.stats.batch_max, batch_max)
