"""The sandbox and the batch's failure paths, driven synchronously on a real sqlite3 connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine import Engine
from fastquartdb.engine.sandbox import FUNCTIONS, Sandbox, check_statement
from fastquartdb.protocol.errors import (
    IntegrityError,
    StatementTimeoutError,
    ValidationError,
)

ENDLESS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    conn = Engine.connect(str(tmp_path / "e.db"))
    engine = Engine(conn, statement_timeout=2.0)
    yield engine
    conn.close()


def raw(sql: str, params: list[Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"op": "execute", "sql": sql, "params": params or [], **fields}


def run(engine: Engine, *requests: dict[str, Any]) -> list[tuple[bool, Any]]:
    return engine.run_batch(list(requests))


def test_engine_statements_keep_working_under_the_sandbox(engine: Engine) -> None:
    # The engine's own PRAGMAs (schema_version, table_info, foreign_key_list) and savepoints.
    ensure = {
        "op": "ensure_table",
        "table": "t",
        "columns": [
            {"name": "id", "type": "INTEGER", "primary_key": True},
            {"name": "v", "type": "INTEGER"},
        ],
    }
    insert_many = {"op": "insert_many", "table": "t", "columns": ["v"], "rows": [[1], [2]]}
    assert [ok for ok, _ in run(engine, ensure, insert_many)] == [True, True]
    assert run(engine, {"op": "count", "table": "t"}) == [(True, 2)]


def test_a_function_in_a_trigger_is_refused_when_the_engine_fires_it(engine: Engine) -> None:
    """The function rule holds for every statement, so schema cannot smuggle a call in."""
    setup = [
        raw("CREATE TABLE t (id INTEGER PRIMARY KEY, v)"),
        raw("CREATE TABLE log (x)"),
        # rtreedepth() parses a raw blob (a debugging function); SQLite lets a trigger call it.
        raw("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log SELECT rtreedepth(X'0000'); END"),
    ]  # fmt: skip
    assert [ok for ok, _ in run(engine, *setup)] == [True, True, True]
    ((ok, error),) = run(engine, {"op": "insert", "table": "t", "values": {"v": 1}})
    assert isinstance(error, ValidationError) and not ok
    assert "function rtreedepth() is not allowed" in str(error)
    assert run(engine, raw("SELECT count(*) FROM log"))[0][1]["rows"] == [(0,)]


def test_check_statement_uses_the_same_rules_on_a_copy_of_the_schema() -> None:
    schema = [
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE VIRTUAL TABLE f USING fts5(x)",
    ]
    check_statement("SELECT * FROM item WHERE id = ?", schema, [1])
    check_statement("INSERT INTO f (x) VALUES ('a')", schema)
    check_statement("EXPLAIN QUERY PLAN SELECT * FROM item", schema)
    for sql, why in [
        ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys"),
        ('PRAGMA "foreign_keys" = OFF', "PRAGMA foreign_keys"),
        ("CREATE TEMP TABLE item (a)", "TEMP"),
        ("SELECT load_extension('x')", "load_extension"),
        ("INSERT INTO f_data VALUES (1, X'00')", "virtual table 'f'"),
        ("ATTACH 'x.db' AS x", "ATTACH"),
        ("SAVEPOINT s", "transaction control"),
        ("SELECT 1; SELECT 2", "one statement"),
    ]:
        with pytest.raises(ValidationError, match=why):
            check_statement(sql, schema)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        check_statement("SELECT * FROM missing", schema)


def test_check_statement_never_runs_the_statement(tmp_path: Path) -> None:
    check_statement(ENDLESS)  # compiled only: returns at once
    check_statement("CREATE TABLE x (a)")  # and creates nothing anywhere


def test_the_whitelists_leave_out_what_must_never_run() -> None:
    for name in ("fts3_tokenizer", "load_extension", "fts5", "sqlite_log", "rtreenode", "readfile"):
        assert name not in FUNCTIONS
    conn = sqlite3.connect(":memory:")
    sandbox = Sandbox(conn)
    with pytest.raises(ValidationError, match="PRAGMA writable_schema"), sandbox.raw():
        conn.execute("PRAGMA writable_schema = ON")
    conn.close()


def test_a_deferred_violation_at_commit_fails_alone(engine: Engine) -> None:
    run(
        engine,
        raw("CREATE TABLE p (id INTEGER PRIMARY KEY)"),
        raw("CREATE TABLE c (id INTEGER PRIMARY KEY, p REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)"),
        raw("INSERT INTO p VALUES (1)"),
    )  # fmt: skip
    batch = [raw("INSERT INTO c (p) VALUES (?)", [1 if n not in (3, 6) else 7]) for n in range(8)]
    outcomes = run(engine, *batch)
    assert [ok for ok, _ in outcomes] == [n not in (3, 6) for n in range(8)]
    assert all(isinstance(outcomes[n][1], IntegrityError) for n in (3, 6))
    assert run(engine, raw("SELECT count(*) FROM c"))[0][1]["rows"] == [(6,)]


def test_a_write_stopped_by_its_deadline_fails_alone(engine: Engine) -> None:
    """SQLite rolls back the whole transaction of an interrupted write: the others run again."""
    run(engine, raw("CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT)"))
    outcomes = run(
        engine,
        raw("INSERT INTO w (v) VALUES ('before')"),
        raw(f"INSERT INTO w (v) SELECT 'x' FROM ({ENDLESS})", timeout=0.2),
        raw("INSERT INTO w (v) VALUES ('after')"),
    )
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], StatementTimeoutError)
    rows = run(engine, raw("SELECT v FROM w ORDER BY id"))[0][1]["rows"]
    assert rows == [("before",), ("after",)]


def test_a_cancelled_request_is_stopped(engine: Engine) -> None:
    request = raw(ENDLESS, timeout=30)
    engine.deadlines.cancel(request)  # as if its client had gone away
    ((ok, error),) = run(engine, request)
    engine.deadlines.forget()
    assert not ok and "disconnected" in str(error)
    assert run(engine, raw("SELECT 1"))[0][0]  # the next request runs as usual


def test_a_refusal_is_told_once_and_never_to_the_next_request(engine: Engine) -> None:
    run(engine, raw("CREATE TABLE r (id INTEGER PRIMARY KEY, n INTEGER CHECK (n >= 0))"))
    ((ok, error),) = run(engine, raw("PRAGMA ignore_check_constraints = 1"))
    assert not ok and "refused" in str(error)
    ((ok, error),) = run(engine, {"op": "insert", "table": "r", "values": {"n": -1}})
    assert isinstance(error, IntegrityError), error  # its own error, not the refusal


def test_migrations_get_the_longest_bound(tmp_path: Path) -> None:
    from fastquartdb.engine.deadline import Deadlines

    conn = sqlite3.connect(":memory:")
    deadlines = Deadlines(conn, 5.0, 60.0)
    assert deadlines.timeout_for({"op": "ensure_table"}) == 60.0
    assert deadlines.timeout_for({"op": "insert", "timeout": 1}) == 5.0  # only raw SQL asks
    assert deadlines.timeout_for({"op": "execute", "timeout": 1}) == 1.0
    with pytest.raises(ValidationError, match="max-statement-timeout"):
        deadlines.timeout_for({"op": "execute", "timeout": 61})
    conn.close()
