"""The engine, driven synchronously on a real sqlite3 connection: batches, schema, raw SQL."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine import Engine, translate_sqlite_error
from fastquartdb.engine.schema import parse_column_specs
from fastquartdb.protocol import (
    ALL_OPS,
    READ_OPS,
    SERVER_OPS,
    TRANSACTION_OPS,
    WRITE_OPS,
    decode_body,
    encode_body,
    error_code,
    error_reply,
    ok_reply,
)
from fastquartdb.protocol.errors import (
    DatabaseBusyError,
    DatabaseError,
    FQDBError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    ReadOnlyError,
    SchemaError,
    ValidationError,
)

GOLDEN = Path(__file__).resolve().parents[2] / "protocol" / "golden"

USER_COLUMNS = [
    {"name": "id", "type": "INTEGER", "primary_key": True},
    {"name": "username", "type": "TEXT", "nullable": False, "unique": True},
    {"name": "age", "type": "INTEGER"},
]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "engine.db")


@pytest.fixture
def conn(path: str) -> Iterator[sqlite3.Connection]:
    conn = Engine.connect(path)
    yield conn
    conn.close()


@pytest.fixture
def engine(conn: sqlite3.Connection) -> Engine:
    return Engine(conn)


@pytest.fixture
def users(engine: Engine) -> Engine:
    """An engine whose file has the user table (created in one committed batch)."""
    ((ok, _),) = engine.run_batch(
        [{"op": "ensure_table", "table": "user", "columns": USER_COLUMNS}]
    )
    assert ok
    return engine


@pytest.fixture
def other(path: str) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the same file: what another process would see."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    yield conn
    conn.close()


def insert(name: str, age: int | None = None) -> dict[str, Any]:
    return {"op": "insert", "table": "user", "values": {"username": name, "age": age}}


def usernames(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT username FROM user ORDER BY id")]


def ok(outcome: tuple[bool, Any]) -> Any:
    success, value = outcome
    assert success, value
    return value


def failed(outcome: tuple[bool, Any], cls: type[FQDBError]) -> FQDBError:
    success, value = outcome
    assert not success, value
    assert type(value) is cls, repr(value)
    return value


# ------------------------------------------------------------------ connect


def test_connect_configures_the_connection(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.isolation_level is None
    assert not conn.in_transaction


def test_connect_options(tmp_path: Path) -> None:
    conn = Engine.connect(str(tmp_path / "n.db"), synchronous="normal", busy_timeout=0.25)
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250
    finally:
        conn.close()
    with pytest.raises(ValidationError, match="synchronous"):
        Engine.connect(str(tmp_path / "x.db"), synchronous="sometimes")


# ------------------------------------------------------------------ group commit


def test_a_failing_request_does_not_sink_its_batch(
    users: Engine, other: sqlite3.Connection
) -> None:
    ok(users.run_batch([insert("alice")])[0])
    outcomes = users.run_batch([insert("bob"), insert("alice"), insert("carol")])
    assert ok(outcomes[0]) == 2
    error = failed(outcomes[1], IntegrityError)
    assert "UNIQUE constraint failed: user.username" in str(error)
    assert ok(outcomes[2]) == 3  # the failed insert left no trace, not even a rowid
    assert usernames(other) == ["alice", "bob", "carol"]
    assert not users.in_transaction


def test_batch_outcomes_are_in_request_order(users: Engine) -> None:
    outcomes = users.run_batch(
        [
            insert("a", 1),
            {"op": "count", "table": "user"},
            insert("b", 2),
            {"op": "count", "table": "user"},
            {"op": "fetch", "table": "user", "columns": ["username"], "order_by": ["-age"]},
        ]
    )
    assert [ok(o) for o in outcomes] == [
        1,
        1,
        2,
        2,
        {"columns": ["username"], "rows": [("b",), ("a",)]},
    ]


def test_a_failing_insert_many_is_undone_whole_and_neighbours_commit(
    users: Engine, other: sqlite3.Connection
) -> None:
    bad = {
        "op": "insert_many",
        "table": "user",
        "columns": ["username"],
        "rows": [["x"], ["y"], ["x"]],  # the third row violates UNIQUE
    }
    good = {"op": "insert_many", "table": "user", "columns": ["username"], "rows": [["z"]]}
    outcomes = users.run_batch([insert("before"), bad, good, insert("after")])
    assert ok(outcomes[0]) == 1
    failed(outcomes[1], IntegrityError)
    assert ok(outcomes[2]) == 1
    ok(outcomes[3])
    assert usernames(other) == ["before", "z", "after"]


def test_validation_errors_in_a_batch_touch_nothing(
    users: Engine, other: sqlite3.Connection
) -> None:
    outcomes = users.run_batch(
        [
            insert("a"),
            {"op": "insert", "table": "user", "values": {"agee": 1}},
            {"op": "update", "table": "user", "values": {"age": 1}},
            {"op": "delete", "table": "nope", "where": [[["id", "=", 1]]]},
            {"op": "frobnicate"},
            insert("b"),
        ]
    )
    ok(outcomes[0])
    for outcome in outcomes[1:5]:
        failed(outcome, ValidationError)
    ok(outcomes[5])
    assert usernames(other) == ["a", "b"]


def test_commits_are_visible_to_other_connections_when_run_batch_returns(
    users: Engine, other: sqlite3.Connection
) -> None:
    for i in range(3):
        ok(users.run_batch([insert(f"u{i}")])[0])
        assert len(usernames(other)) == i + 1
        assert not users.in_transaction


def test_read_only_batches_need_no_transaction(
    users: Engine, conn: sqlite3.Connection, other: sqlite3.Connection
) -> None:
    ok(users.run_batch([insert("alice", 30)])[0])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    # Another connection holds the write lock: reads must still run at once.
    other.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("PRAGMA busy_timeout = 50")
        outcomes = users.run_batch(
            [
                {"op": "fetch", "table": "user", "columns": ["username"]},
                {"op": "count", "table": "user"},
                {"op": "ping"},
            ]
        )
        assert [ok(o) for o in outcomes] == [
            {"columns": ["username"], "rows": [("alice",)]},
            1,
            "pong",
        ]
        assert not any(s.upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT")) for s in statements)
        # A batch that may write does need the write lock, and says so.
        statements.clear()
        outcomes = users.run_batch([{"op": "count", "table": "user"}, insert("bob")])
        assert all(type(o[1]) is DatabaseBusyError for o in outcomes)
        assert any(s.startswith("BEGIN IMMEDIATE") for s in statements)
    finally:
        other.execute("ROLLBACK")
        conn.set_trace_callback(None)
    assert not users.in_transaction


def test_write_batches_are_one_immediate_transaction(
    users: Engine, conn: sqlite3.Connection
) -> None:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        users.run_batch([insert("a"), insert("b"), {"op": "count", "table": "user"}])
    finally:
        conn.set_trace_callback(None)
    control = [
        s for s in statements if s.split()[0] in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT")
    ]
    assert control == ["BEGIN IMMEDIATE", "COMMIT"]
    assert statements[-1] == "COMMIT"
    first_insert = next(i for i, s in enumerate(statements) if s.startswith("INSERT"))
    assert statements.index("BEGIN IMMEDIATE") < first_insert


def test_empty_batch(engine: Engine) -> None:
    assert engine.run_batch([]) == []


# ------------------------------------------------------------------ ops


def test_unknown_op_lists_the_ops(engine: Engine) -> None:
    (outcome,) = engine.run_batch([{"op": "frobnicate"}])
    error = failed(outcome, ValidationError)
    assert "unknown op 'frobnicate'" in str(error)
    assert "insert_many" in str(error)
    failed(engine.run_batch([{"op": None}])[0], ValidationError)
    failed(engine.run_batch([{}])[0], ValidationError)


def _supported(engine: Engine) -> set[str]:
    supported = set()
    for op in sorted(READ_OPS | WRITE_OPS | TRANSACTION_OPS):
        try:
            engine.execute({"op": op})
        except ValidationError as exc:
            if "unknown op" in str(exc):
                continue
        except FQDBError:
            pass
        supported.add(op)
        if engine.in_transaction:
            engine.conn.execute("ROLLBACK")
    return supported


def test_golden_hello_lists_exactly_the_supported_ops(engine: Engine) -> None:
    hello = json.loads((GOLDEN / "hello_reply.json").read_text())
    assert hello["result"]["ops"] == sorted(_supported(engine) | SERVER_OPS)


def test_every_advertised_op_is_implemented(engine: Engine) -> None:
    assert sorted(_supported(engine) | SERVER_OPS) == sorted(ALL_OPS)


def test_describe_runs_on_a_local_reader(users: Engine, path: str) -> None:
    """describe is a read (PROTOCOL.md 7.18): a read-only reader runs it, and sees a column
    another connection just added."""
    reader = Engine(Engine.connect(path, read_only=True), read_only=True)
    try:
        success, described = reader.run_read({"op": "describe", "table": "user"})
        assert success and [c["name"] for c in described["columns"]] == ["id", "username", "age"]
        assert reader.run_read({"op": "describe"}) == (True, [{"name": "user", "type": "table"}])
        ok(users.run_batch([execute("ALTER TABLE user ADD COLUMN email TEXT")])[0])
        success, described = reader.run_read({"op": "describe", "table": "user"}, check_schema=True)
        assert success and described["columns"][-1]["name"] == "email"
    finally:
        reader.conn.close()


def test_unknown_table_lists_the_tables(users: Engine) -> None:
    (outcome,) = users.run_batch([{"op": "fetch", "table": "usr"}])
    assert str(failed(outcome, ValidationError)) == "unknown table 'usr' (tables: user)"
    (outcome,) = users.run_batch([{"op": "fetch", "table": "sqlite_master"}])
    assert "reserved" in str(failed(outcome, ValidationError))
    (outcome,) = users.run_batch([{"op": "fetch", "table": 'user"; DROP TABLE user; --'}])
    failed(outcome, ValidationError)
    assert users.run_batch([{"op": "count", "table": "user"}]) == [(True, 0)]


def test_insert_returns_the_primary_key(engine: Engine) -> None:
    tables = {
        "rowid_pk": [{"name": "id", "type": "INTEGER", "primary_key": True}],
        "text_pk": [
            {"name": "code", "type": "TEXT", "primary_key": True},
            {"name": "n", "type": "INTEGER"},
        ],
        "no_pk": [{"name": "n", "type": "INTEGER"}],
    }
    for name, columns in tables.items():
        ok(engine.run_batch([{"op": "ensure_table", "table": name, "columns": columns}])[0])
    outcomes = engine.run_batch(
        [
            {"op": "insert", "table": "rowid_pk", "values": {}},
            {"op": "insert", "table": "rowid_pk", "values": {"id": 41}},
            {"op": "insert", "table": "text_pk", "values": {"code": "x9", "n": 1}},
            {"op": "insert", "table": "no_pk", "values": {"n": 5}},
            {"op": "insert", "table": "no_pk", "values": {"n": 6}},
        ]
    )
    assert [ok(o) for o in outcomes] == [1, 41, "x9", 1, 2]


def test_crud_round_trip(users: Engine) -> None:
    outcomes = users.run_batch(
        [
            {
                "op": "insert_many",
                "table": "user",
                "columns": ["username", "age"],
                "rows": [["a", 10], ["b", 20], ["c", None]],
            },
            {"op": "update", "table": "user", "values": {"age": 11}, "where": [[["age", "<", 15]]]},
            {"op": "delete", "table": "user", "where": [[["age", "=", None]]]},
            {"op": "update", "table": "user", "values": {"age": 0}, "all_rows": True},
            {"op": "count", "table": "user", "where": [[["age", "=", 0]]]},
            {"op": "delete", "table": "user", "all_rows": True},
            {"op": "count", "table": "user"},
        ]
    )
    assert [ok(o) for o in outcomes] == [3, 1, 1, 2, 2, 2, 0]


def test_values_round_trip_with_their_types(engine: Engine) -> None:
    columns = [
        {"name": "i", "type": "INTEGER"},
        {"name": "r", "type": "REAL"},
        {"name": "t", "type": "TEXT"},
        {"name": "b", "type": "BLOB"},
    ]
    row = {"i": -(2**63), "r": 0.1, "t": "naïve ☃", "b": b"\x00\xff"}
    outcomes = engine.run_batch(
        [
            {"op": "ensure_table", "table": "v", "columns": columns},
            {"op": "insert", "table": "v", "values": row},
            {"op": "fetch", "table": "v"},
        ]
    )
    result = ok(outcomes[2])
    assert result["columns"] == ["i", "r", "t", "b"]
    assert list(result["rows"][0]) == list(row.values())
    assert [type(v) for v in result["rows"][0]] == [int, float, str, bytes]


# ------------------------------------------------------------------ ensure_table


def test_ensure_table_creates_then_is_idempotent(engine: Engine, other: sqlite3.Connection) -> None:
    request = {
        "op": "ensure_table",
        "table": "user",
        "columns": [*USER_COLUMNS, {"name": "email", "type": "varchar(80)", "index": True}],
    }
    assert ok(engine.run_batch([request])[0]) == {
        "created": True,
        "added": ["id", "username", "age", "email"],
    }
    assert ok(engine.run_batch([request])[0]) == {"created": False, "added": []}
    info = other.execute('PRAGMA table_info("user")').fetchall()
    assert [(r[1], r[2], r[3], r[5]) for r in info] == [
        ("id", "INTEGER", 0, 1),
        ("username", "TEXT", 1, 0),
        ("age", "INTEGER", 0, 0),
        ("email", "VARCHAR(80)", 0, 0),
    ]
    indexes = {r[1] for r in other.execute('PRAGMA index_list("user")')}
    assert "ix_user_email" in indexes


def test_ensure_table_adds_columns_and_keeps_rows(users: Engine, other: sqlite3.Connection) -> None:
    ok(users.run_batch([insert("alice", 30)])[0])
    request = {
        "op": "ensure_table",
        "table": "user",
        "columns": [
            *USER_COLUMNS,
            {"name": "email", "type": "TEXT", "unique": True},
            {"name": "active", "type": "BOOLEAN", "nullable": False, "default": True},
            {"name": "score", "type": "REAL", "index": True, "default": 1.5},
        ],
    }
    assert ok(users.run_batch([request])[0]) == {
        "created": False,
        "added": ["email", "active", "score"],
    }
    assert other.execute("SELECT username, age, email, active, score FROM user").fetchall() == [
        ("alice", 30, None, 1, 1.5)
    ]
    indexes = {r[1]: r[2] for r in other.execute('PRAGMA index_list("user")')}
    assert indexes["ux_user_email"] == 1
    assert indexes["ix_user_score"] == 0
    # The new columns are usable at once, in the same batch and the next.
    outcomes = users.run_batch(
        [
            {"op": "insert", "table": "user", "values": {"username": "b", "email": "b@x"}},
            {"op": "insert", "table": "user", "values": {"username": "c", "email": "b@x"}},
        ]
    )
    ok(outcomes[0])
    failed(outcomes[1], IntegrityError)


def test_ensure_table_never_drops(users: Engine, other: sqlite3.Connection) -> None:
    ok(users.run_batch([insert("alice", 30)])[0])
    fewer = {"op": "ensure_table", "table": "user", "columns": USER_COLUMNS[:2]}
    assert ok(users.run_batch([fewer])[0]) == {"created": False, "added": []}
    assert other.execute("SELECT age FROM user").fetchall() == [(30,)]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"name": "age", "type": "TEXT"}, "column 'age' of table 'user' is INTEGER in the file"),
        ({"name": "age", "type": "BOOLEAN"}, "cannot change a column's type"),
        ({"name": "age", "type": "INTEGER", "primary_key": True}, "primary key"),
        ({"name": "id", "type": "INTEGER"}, "primary key of table 'user' is \\(id\\)"),
        ({"name": "code", "type": "TEXT", "primary_key": True}, "cannot add primary key"),
        ({"name": "must", "type": "TEXT", "nullable": False}, "NOT NULL column 'must'"),
    ],
)
def test_ensure_table_schema_errors(
    users: Engine, other: sqlite3.Connection, column: dict[str, Any], message: str
) -> None:
    columns = [c for c in USER_COLUMNS if c["name"] != column["name"]]
    if column["name"] == "id":
        columns = USER_COLUMNS[1:]
    request = {"op": "ensure_table", "table": "user", "columns": [*columns, column]}
    before = other.execute("SELECT sql FROM sqlite_master").fetchall()
    outcomes = users.run_batch([insert("x"), request, insert("y")])
    ok(outcomes[0])
    error = failed(outcomes[1], SchemaError)
    assert re.search(message, str(error)), str(error)
    ok(outcomes[2])
    assert other.execute("SELECT sql FROM sqlite_master").fetchall() == before


def test_ensure_table_same_affinity_other_spelling_is_fine(users: Engine) -> None:
    columns = [dict(c) for c in USER_COLUMNS]
    columns[1]["type"] = "VARCHAR(200)"
    columns[2]["type"] = "BIGINT"
    request = {"op": "ensure_table", "table": "user", "columns": columns}
    assert ok(users.run_batch([request])[0]) == {"created": False, "added": []}


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        (["id"], "must be a map"),
        ([{"name": "a b", "type": "TEXT"}], "invalid column name"),
        ([{"name": "a", "type": "STRNG"}], "unknown column type"),
        ([{"name": "a", "type": "TEXT"}, {"name": "A", "type": "TEXT"}], "declared twice"),
        ([{"name": "a", "type": "TEXT", "unique": "yes"}], "'unique' must be true or false"),
        ([{"name": "a", "type": "TEXT", "default": [1]}], "plain value"),
    ],
)
def test_ensure_table_validation(engine: Engine, columns: Any, message: str) -> None:
    (outcome,) = engine.run_batch([{"op": "ensure_table", "table": "t", "columns": columns}])
    assert message in str(failed(outcome, ValidationError))


def test_ensure_table_null_flags_mean_absent() -> None:
    (spec,) = parse_column_specs(
        [{"name": "a", "type": "TEXT", "primary_key": None, "nullable": None, "unique": None}]
    )
    assert (spec.primary_key, spec.nullable, spec.unique) == (False, True, False)


def test_ensure_table_sees_changes_made_by_others(users: Engine, other: sqlite3.Connection) -> None:
    other.execute("ALTER TABLE user ADD COLUMN nick TEXT")
    other.execute("CREATE TABLE extra (x INTEGER)")
    outcomes = users.run_batch(
        [
            {"op": "insert", "table": "user", "values": {"username": "a", "nick": "n"}},
            {"op": "insert", "table": "extra", "values": {"x": 1}},
        ]
    )
    assert [ok(o) for o in outcomes] == [1, 1]


# ------------------------------------------------------------------ raw SQL


def execute(sql: str, params: Any = None) -> dict[str, Any]:
    request: dict[str, Any] = {"op": "execute", "sql": sql}
    if params is not None:
        request["params"] = params
    return request


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA journal_mode=DELETE",
        "PRAGMA journal_mode = delete",
        "pragma main.journal_mode=MEMORY",
        "PRAGMA synchronous=OFF",
        "PRAGMA synchronous = 0",
        "PRAGMA foreign_keys=OFF",
        "PRAGMA locking_mode=EXCLUSIVE",
        "PRAGMA writable_schema=ON",
        "PRAGMA query_only=1",
        "PRAGMA busy_timeout=0",
        "PRAGMA wal_autocheckpoint=0",
        "PRAGMA journal_size_limit=0",
        "PRAGMA wal_checkpoint",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "ATTACH DATABASE ':memory:' AS other",
        "ATTACH ':memory:' AS x",
        "DETACH DATABASE main",
        "BEGIN",
        "BEGIN EXCLUSIVE",
        "BEGIN DEFERRED TRANSACTION",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT sp",
        "RELEASE sp",
        "ROLLBACK TO sp",
        "SELECT load_extension('x')",
    ],
)
def test_raw_sql_refusals(engine: Engine, conn: sqlite3.Connection, sql: str) -> None:
    (outcome,) = engine.run_batch([execute(sql)])
    assert str(failed(outcome, ValidationError)).startswith("refused: ")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA database_list").fetchall() == [(0, "main", engine_path(conn))]
    assert not engine.in_transaction


def engine_path(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


def test_a_refused_statement_does_not_sink_its_batch(
    users: Engine, other: sqlite3.Connection
) -> None:
    outcomes = users.run_batch([insert("a"), execute("PRAGMA synchronous=OFF"), insert("b")])
    ok(outcomes[0])
    failed(outcomes[1], ValidationError)
    ok(outcomes[2])
    assert usernames(other) == ["a", "b"]


@pytest.mark.parametrize("sql", ["COMMIT", "ROLLBACK", "BEGIN IMMEDIATE"])
def test_raw_transaction_control_is_refused_even_after_the_engine_used_it(
    users: Engine, other: sqlite3.Connection, sql: str
) -> None:
    # Warm the statement cache the way normal traffic does.
    ok(users.run_batch([insert("warm")])[0])
    users.run_in_transaction([{"op": "begin", "txn": 1}])
    users.run_in_transaction([{"op": "rollback", "txn": 1}])
    outcomes = users.run_batch([insert("a"), execute(sql), insert("b")])
    assert ok(outcomes[0]) == 2
    failed(outcomes[1], ValidationError)
    ok(outcomes[2])
    assert usernames(other) == ["warm", "a", "b"]


def test_raw_sql_allowed(users: Engine, other: sqlite3.Connection) -> None:
    outcomes = users.run_batch(
        [
            execute("INSERT INTO user (username, age) VALUES (?, ?)", ["alice", 30]),
            execute(
                "INSERT INTO user (username, age) VALUES (:name, :age)",
                {"name": "bob", "age": 17},
            ),
            execute("UPDATE user SET age = age + 1"),
            execute("SELECT username, age FROM user WHERE age > ? ORDER BY age", [0]),
            execute("PRAGMA journal_mode"),
            execute("PRAGMA table_info(user)"),
            execute("CREATE TABLE IF NOT EXISTS note (body TEXT)"),
            execute("WITH t(x) AS (SELECT 1) SELECT x FROM t"),
        ]
    )
    results = [ok(o) for o in outcomes]
    assert results[0]["rowcount"] == 1
    assert results[0]["lastrowid"] == 1
    assert results[0]["columns"] == [] and results[0]["rows"] == []
    assert results[1]["lastrowid"] == 2
    assert results[2]["rowcount"] == 2
    assert results[3]["columns"] == ["username", "age"]
    assert [tuple(r) for r in results[3]["rows"]] == [("bob", 18), ("alice", 31)]
    assert results[3]["rowcount"] == -1
    assert results[4]["rows"] == [("wal",)]
    assert len(results[5]["rows"]) == 3
    assert other.execute("SELECT count(*) FROM note").fetchone() == (0,)


@pytest.mark.parametrize(
    ("request_", "cls", "message"),
    [
        ({"op": "execute"}, ValidationError, "execute needs 'sql'"),
        (execute("   "), ValidationError, "execute needs 'sql'"),
        ({"op": "execute", "sql": 5}, ValidationError, "execute needs 'sql'"),
        (execute("SELECT ?", "x"), ValidationError, "'params' must be a list"),
        (execute("SELECT ?", [[1]]), ValidationError, "has type list"),
        (execute("SELECT ?", [2**63]), ValidationError, "does not fit"),
        (execute("SELECT 1; SELECT 2"), ProgrammingError, "one statement"),
        (execute("SELEC 1"), ProgrammingError, "syntax error"),
        (execute("SELECT * FROM nope"), ProgrammingError, "no such table"),
        (execute("SELECT ?", [1, 2]), ProgrammingError, "bindings"),
        (execute("INSERT INTO user (username) VALUES (NULL)"), IntegrityError, "NOT NULL"),
    ],
)
def test_raw_sql_errors(
    users: Engine, request_: dict[str, Any], cls: type[FQDBError], message: str
) -> None:
    (outcome,) = users.run_batch([request_])
    assert message in str(failed(outcome, cls))


# ------------------------------------------------------------------ read-only and transactions


def test_read_only_engine(path: str) -> None:
    setup = Engine(Engine.connect(path))
    ok(setup.run_batch([{"op": "ensure_table", "table": "user", "columns": USER_COLUMNS}])[0])
    setup.conn.close()
    conn = Engine.connect(path, read_only=True)
    try:
        engine = Engine(conn, read_only=True)
        assert engine.run_batch([{"op": "count", "table": "user"}]) == [(True, 0)]
        for request in [insert("a"), execute("SELECT 1"), {"op": "delete", "table": "user"}]:
            (outcome,) = engine.run_batch([request])
            failed(outcome, ReadOnlyError)
    finally:
        conn.close()


def test_interactive_transaction_with_savepoints(users: Engine, other: sqlite3.Connection) -> None:
    run = users.run_in_transaction
    assert run([{"op": "begin", "txn": 1}]) == [(True, None)]
    assert users.in_transaction
    assert run([insert("kept")]) == [(True, 1)]
    assert run([{"op": "begin", "txn": 1, "savepoint": "sp1"}, insert("undone")])[0] == (
        True,
        None,
    )
    assert run([{"op": "rollback", "txn": 1, "savepoint": "sp1"}]) == [(True, None)]
    assert run([{"op": "begin", "txn": 1, "savepoint": "sp2"}, insert("released")])[1][0]
    assert run([{"op": "commit", "txn": 1, "savepoint": "sp2"}]) == [(True, None)]
    # A failing request inside the transaction leaves the transaction open.
    failed(run([insert("kept")])[0], IntegrityError)
    assert users.in_transaction
    assert usernames(other) == []  # nothing visible before COMMIT
    assert run([{"op": "commit", "txn": 1}]) == [(True, None)]
    assert not users.in_transaction
    assert usernames(other) == ["kept", "released"]


def test_interactive_rollback(users: Engine, other: sqlite3.Connection) -> None:
    run = users.run_in_transaction
    run([{"op": "begin", "txn": 1}, insert("gone")])
    assert run([{"op": "rollback", "txn": 1}]) == [(True, None)]
    assert usernames(other) == []
    # Rolling back when nothing is open is harmless.
    assert run([{"op": "rollback", "txn": 1}]) == [(True, None)]


@pytest.mark.parametrize("name", ['sp"; COMMIT; --', "1sp", "sqlite_sp", ""])
def test_savepoint_names_are_checked(users: Engine, name: str) -> None:
    run = users.run_in_transaction
    run([{"op": "begin", "txn": 1}])
    try:
        failed(run([{"op": "begin", "txn": 1, "savepoint": name}])[0], ValidationError)
    finally:
        run([{"op": "rollback", "txn": 1}])


@pytest.mark.parametrize("op", ["commit", "rollback"])
def test_transaction_ops_without_txn_are_refused_in_a_batch(
    users: Engine, other: sqlite3.Connection, op: str
) -> None:
    outcomes = users.run_batch([insert("a"), {"op": op}, insert("b")])
    assert ok(outcomes[0]) == 1
    failed(outcomes[1], ValidationError)
    ok(outcomes[2])
    assert usernames(other) == ["a", "b"]


def test_shutdown_rolls_back_and_checkpoints(users: Engine, path: str) -> None:
    ok(users.run_batch([insert("committed")])[0])
    users.run_in_transaction([{"op": "begin", "txn": 1}, insert("open")])
    users.shutdown()
    assert not users.in_transaction
    check = sqlite3.connect(path)
    try:
        assert usernames(check) == ["committed"]
    finally:
        check.close()
    assert Path(path + "-wal").stat().st_size == 0


# ------------------------------------------------------------------ sqlite errors


def _coded(cls: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    """A sqlite3 exception as SQLite raises it: with its result code."""
    exc = cls(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (_coded(sqlite3.IntegrityError, "UNIQUE constraint failed: t.x", 2067), IntegrityError),
        (_coded(sqlite3.OperationalError, "database is locked", 5), DatabaseBusyError),
        (_coded(sqlite3.OperationalError, "database table is locked", 262), DatabaseBusyError),
        (
            _coded(sqlite3.OperationalError, "attempt to write a readonly database", 8),
            ReadOnlyError,
        ),
        (_coded(sqlite3.OperationalError, "no such table: x", 1), ProgrammingError),
        (_coded(sqlite3.OperationalError, "table t already exists", 1), ProgrammingError),
        (_coded(sqlite3.OperationalError, "disk I/O error", 10), OperationalError),
        (_coded(sqlite3.OperationalError, "database or disk is full", 13), OperationalError),
        (_coded(sqlite3.OperationalError, "unable to open database file", 14), OperationalError),
        (_coded(sqlite3.OperationalError, "interrupted", 9), OperationalError),
        # The message never decides: a world condition whose text looks like a statement error.
        (_coded(sqlite3.OperationalError, "no such table (disk I/O error)", 266), OperationalError),
        (_coded(sqlite3.DataError, "string or blob too big", 18), ValidationError),
        (_coded(sqlite3.DatabaseError, "file is not a database", 26), DatabaseError),
        # Without a code (sqlite3's own checks) the sqlite3 class decides.
        (sqlite3.ProgrammingError("Incorrect number of bindings"), ProgrammingError),
        (sqlite3.InterfaceError("bad parameter"), ProgrammingError),
        (sqlite3.OperationalError("something"), OperationalError),
        (sqlite3.Error("whatever"), DatabaseError),
    ],
)
def test_translate_sqlite_error(exc: sqlite3.Error, cls: type[FQDBError]) -> None:
    translated = translate_sqlite_error(exc)
    assert type(translated) is cls
    assert str(exc) in str(translated)


# ------------------------------------------------------------------ the golden session


def _golden(name: str) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"$bytes"}:
                return bytes.fromhex(value["$bytes"])
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    message = convert(json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8")))
    assert isinstance(message, dict)
    return message


def test_golden_session_replays_on_the_engine(engine: Engine) -> None:
    """The golden requests, run in order on a fresh file, give exactly the golden replies."""

    def reply(request: dict[str, Any], outcome: tuple[bool, Any]) -> dict[str, Any]:
        success, value = outcome
        if success:
            built = ok_reply(request.get("id"), value)
        else:
            built = error_reply(request.get("id"), error_code(value), str(value))
        return decode_body(encode_body(built))  # as the wire carries it

    def check(name: str, in_transaction: bool = False) -> None:
        request = _golden(f"{name}_request")
        run = engine.run_in_transaction if in_transaction else engine.run_batch
        (outcome,) = run([request])
        got, expected = reply(request, outcome), _golden(f"{name}_reply")
        if name == "error_unknown_op":
            # The message lists the ops, which grow; the code and the start are the contract.
            head = "unknown op 'frobnicate' (ops: "
            assert got["error"]["message"].startswith(head)
            assert expected["error"]["message"].startswith(head)
            got["error"]["message"] = expected["error"]["message"]
        assert got == expected, name

    for name in [
        "ping",
        "ensure_table",
        "insert",
        "insert_many",
        "fetch",
        "count",
        "update",
        "delete",
        "execute",
        "upsert",
        "upsert_many",
        "aggregate",
    ]:
        check(name)
    check("begin", True)
    check("txn_insert", True)
    check("begin_savepoint", True)
    ok(engine.run_in_transaction([insert("gina")])[0])
    check("rollback_savepoint", True)
    ok(engine.run_in_transaction([{"op": "begin", "txn": 1, "savepoint": "sp2"}])[0])
    check("commit_savepoint", True)
    check("commit", True)
    ok(engine.run_in_transaction([{"op": "begin", "txn": 2}])[0])
    check("rollback", True)
    for name in [
        "unknown_field",
        "error_validation",
        "error_integrity",
        "error_unknown_op",
        "error_all_rows",
    ]:
        check(name)
    assert usernames(engine.conn) == ["alice", "carol", "dave", "frank", "erin"]
    # Change feeds (PROTOCOL.md 7.16): a captured table, two changes, the log read back;
    # then pruned past the cursor, the read fails with changes_expired.
    check("ensure_table_changes")
    ok(engine.run_batch([{"op": "insert", "table": "note", "values": {"body": "hi"}}])[0])
    ok(engine.run_batch([{"op": "execute", "sql": "UPDATE note SET body = 'hello'"}])[0])
    check("changes")
    engine.changes.max_rows = 1
    engine.changes._next_prune = 0.0
    ok(engine.run_batch([{"op": "insert", "table": "note", "values": {"body": "x"}}])[0])
    check("error_changes_expired")
    # What the engine knows of a table (PROTOCOL.md 7.18).
    check("describe")
