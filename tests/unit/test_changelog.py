"""The change log on the engine: what the triggers log, what they never log, retention, reads."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine import Engine
from fastquartdb.engine.changelog import PRUNE_CHUNK
from fastquartdb.protocol.errors import (
    ChangesExpiredError,
    FQDBError,
    IntegrityError,
    ValidationError,
)

COLUMNS = [
    {"name": "id", "type": "INTEGER", "primary_key": True},
    {"name": "name", "type": "TEXT", "nullable": False, "unique": True},
    {"name": "data", "type": "BLOB"},
]


def ensure(changes: Any = True, columns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    request = {"op": "ensure_table", "table": "item", "columns": columns or COLUMNS}
    if changes is not None:
        request["changes"] = changes
    return request


def ins(name: str, **values: Any) -> dict[str, Any]:
    return {"op": "insert", "table": "item", "values": {"name": name, **values}}


def ok(outcome: tuple[bool, Any]) -> Any:
    success, value = outcome
    assert success, value
    return value


def failed(outcome: tuple[bool, Any], cls: type[FQDBError]) -> FQDBError:
    success, value = outcome
    assert not success and isinstance(value, cls), value
    return value


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    conn = Engine.connect(str(tmp_path / "log.db"))
    yield Engine(conn)
    conn.close()


@pytest.fixture
def captured(engine: Engine) -> Engine:
    ok(engine.run_batch([ensure({"old": True})])[0])
    return engine


def log(engine: Engine, after: int = 0, **fields: Any) -> list[tuple[Any, ...]]:
    result = ok(engine.run_batch([{"op": "changes", "after": after, **fields}])[0])
    return [
        (
            seq,
            table,
            op,
            json.loads(pk),
            json.loads(row) if row else None,
            json.loads(old) if old else None,
        )
        for seq, table, op, pk, row, old in result["rows"]
    ]


def test_every_kind_of_write_is_logged_once_in_commit_order(captured: Engine) -> None:
    ok(captured.run_batch([ins("a")])[0])
    ok(
        captured.run_batch(
            [{"op": "insert_many", "table": "item", "columns": ["name"], "rows": [["b"], ["c"]]}]
        )[0]
    )
    upsert = {
        "op": "upsert_many",
        "table": "item",
        "columns": ["name", "data"],
        "rows": [["a", b"\x00\xff"], ["d", None]],
        "conflict": "name",
    }
    ok(captured.run_batch([upsert])[0])
    ok(
        captured.run_batch(
            [
                {
                    "op": "update",
                    "table": "item",
                    "values": {"name": "bb"},
                    "where": [[["id", "=", 2]]],
                }
            ]
        )[0]
    )
    ok(captured.run_batch([{"op": "execute", "sql": "DELETE FROM item WHERE name = 'c'"}])[0])
    entries = log(captured)
    assert [e[0] for e in entries] == list(range(1, 8))
    assert [(e[2], e[3]) for e in entries] == [
        ("insert", [1]),
        ("insert", [2]),
        ("insert", [3]),
        ("update", [1]),  # upsert of an existing name
        ("insert", [4]),
        ("update", [2]),
        ("delete", [3]),
    ]
    assert entries[3][4] == {"id": 1, "name": "a", "data": {"$hex": "00FF"}}  # bytes survive
    assert entries[3][5] == {"id": 1, "name": "a", "data": None}  # old values, as asked
    assert entries[6][4] is None and entries[6][5]["name"] == "c"


def test_a_failed_request_and_a_rolled_back_transaction_log_nothing(captured: Engine) -> None:
    many = {
        "op": "insert_many",
        "table": "item",
        "columns": ["name"],
        "rows": [["x"], ["a"], ["a"]],
    }
    outcomes = captured.run_batch([ins("a"), many, ins("b")])
    failed(outcomes[1], IntegrityError)  # its first two rows were inserted, then undone
    ok(captured.run_in_transaction([{"op": "begin", "txn": 1}])[0])
    ok(captured.run_in_transaction([{**ins("never"), "txn": 1}])[0])
    ok(captured.run_in_transaction([{"op": "rollback", "txn": 1}])[0])
    assert [(e[2], e[4]["name"]) for e in log(captured)] == [("insert", "a"), ("insert", "b")]
    assert captured.changes.tip == 2


def test_an_interactive_commit_logs_and_publishes_its_tip(captured: Engine) -> None:
    told: list[int] = []
    captured.changes.listener = told.append
    ok(captured.run_in_transaction([{"op": "begin", "txn": 1}])[0])
    ok(captured.run_in_transaction([{**ins("t1"), "txn": 1}, {**ins("t2"), "txn": 1}])[0])
    ok(captured.run_in_transaction([{"op": "commit", "txn": 1}])[0])
    ok(captured.run_batch([ins("b")])[0])
    ok(captured.run_batch([{"op": "fetch", "table": "item"}])[0])  # no commit: nothing told
    assert told == [2, 3]


def test_raw_sql_may_read_the_log_but_not_write_or_unhook_it(captured: Engine) -> None:
    ok(captured.run_batch([ins("a")])[0])
    rows = ok(
        captured.run_batch([{"op": "execute", "sql": "SELECT count(*) FROM _fqdb_changes"}])[0]
    )
    assert [list(r) for r in rows["rows"]] == [[1]]
    for sql in [
        "INSERT INTO _fqdb_changes (tbl, op, at) VALUES ('item', 'insert', 0)",
        "DELETE FROM _fqdb_changes",
        "UPDATE _fqdb_changes_state SET pruned = 99",
        "DROP TRIGGER _fqdb_changes_item_insert",
        "CREATE TRIGGER _fqdb_changes_item_evil AFTER INSERT ON item BEGIN SELECT 1; END",
    ]:
        error = failed(captured.run_batch([{"op": "execute", "sql": sql}])[0], ValidationError)
        assert "refused" in str(error), sql
    # A trigger of the user's that would forge log entries: SQLite does not check a trigger's
    # body when it is created, so it is refused where it fires, also under a model insert.
    forge = (
        "CREATE TRIGGER forge AFTER INSERT ON item BEGIN "
        "INSERT INTO _fqdb_changes (tbl, op, at) VALUES ('x', 'y', 0); END"
    )
    ok(captured.run_batch([{"op": "execute", "sql": forge}])[0])
    assert "refused" in str(failed(captured.run_batch([ins("b")])[0], ValidationError))
    ok(captured.run_batch([{"op": "execute", "sql": "DROP TRIGGER forge"}])[0])
    # The user may still drop a captured table: its log triggers go with it.
    ok(captured.run_batch([{"op": "execute", "sql": "DROP TABLE item"}])[0])
    names = {r[0] for r in captured.conn.execute("SELECT name FROM sqlite_master")}
    assert not any(n.startswith("_fqdb_changes_item") for n in names)
    assert len(log(captured)) == 1


def test_ensure_table_again_changes_nothing_and_a_new_column_is_logged(captured: Engine) -> None:
    version = captured.conn.execute("PRAGMA schema_version").fetchone()[0]
    ok(captured.run_batch([ensure({"old": True})])[0])
    assert captured.conn.execute("PRAGMA schema_version").fetchone()[0] == version
    wider = [*COLUMNS, {"name": "note", "type": "TEXT"}]
    ok(captured.run_batch([ensure({"old": True}, wider)])[0])
    ok(captured.run_batch([ins("a", note="hi")])[0])
    assert log(captured)[0][4] == {"id": 1, "name": "a", "data": None, "note": "hi"}
    ok(captured.run_batch([ensure(False, wider)])[0])  # capture switched off
    ok(captured.run_batch([ins("b")])[0])
    assert len(log(captured)) == 1


def test_tables_not_captured_pay_nothing(engine: Engine) -> None:
    ok(engine.run_batch([ensure(None)])[0])
    ok(engine.run_batch([ins("a")])[0])
    names = {r[0] for r in engine.conn.execute("SELECT name FROM sqlite_master")}
    assert not any(n.startswith("_fqdb_changes") for n in names)
    result = ok(engine.run_batch([{"op": "changes", "after": 0}])[0])
    assert result["rows"] == [] and result["tip"] == 0


def test_a_table_with_many_columns_and_a_composite_key(engine: Engine) -> None:
    columns = [
        {"name": "a", "type": "INTEGER", "primary_key": True},
        {"name": "b", "type": "TEXT", "primary_key": True},
    ] + [{"name": f"c{i}", "type": "INTEGER"} for i in range(150)]
    request = {"op": "ensure_table", "table": "wide", "columns": columns, "changes": True}
    ok(engine.run_batch([request])[0])
    values = {"a": 1, "b": "k", **{f"c{i}": i for i in range(150)}}
    ok(engine.run_batch([{"op": "insert", "table": "wide", "values": values}])[0])
    ((_, _, op, pk, row, _),) = log(engine)
    assert (op, pk) == ("insert", [1, "k"])
    assert row == values


def test_filters_and_tables_select_changes(captured: Engine) -> None:
    ok(captured.run_batch([ins("a"), ins("b"), ins("c")])[0])
    ok(captured.run_batch([{"op": "execute", "sql": "DELETE FROM item WHERE name = 'b'"}])[0])
    where = [[["name", "=", "b"]], [["name", "=", "c"]]]
    picked = log(captured, tables=["item"], where=where)
    assert [(e[0], e[2]) for e in picked] == [(2, "insert"), (3, "insert"), (4, "delete")]
    assert log(captured, 3, tables=["item"], where=where) == picked[2:]  # OR stays inside seq > ?
    assert log(captured, tables=["other"]) == []
    failed(captured.run_batch([{"op": "changes", "where": where}])[0], ValidationError)
    failed(
        captured.run_batch([{"op": "changes", "tables": ["item"], "where": [[["nope", "=", 1]]]}])[
            0
        ],
        ValidationError,
    )
    for bad in [{"after": -1}, {"after": "soon"}, {"limit": 10**6}, {"tables": "item"}]:
        failed(captured.run_batch([{"op": "changes", **bad}])[0], ValidationError)
    now = ok(captured.run_batch([{"op": "changes", "after": "now"}])[0])
    assert now["rows"] == [] and now["tip"] == 4


def test_retention_prunes_by_size_and_age_and_says_when_a_cursor_expired(captured: Engine) -> None:
    log_ = captured.changes
    ok(captured.run_batch([ins(f"n{i}") for i in range(10)])[0])
    log_.max_rows = 4
    log_._next_prune = 0.0
    ok(captured.run_batch([ins("n10")])[0])  # 11 changes: 7 pruned, in this very batch
    assert [e[0] for e in log(captured, 7)] == [8, 9, 10, 11]
    error = failed(captured.run_batch([{"op": "changes", "after": 6}])[0], ChangesExpiredError)
    assert "resync" in str(error) and "after='now'" in str(error)
    assert [e[0] for e in log(captured, None)] == [8, 9, 10, 11]  # from the oldest retained
    # By age: the writer marks the time of its tip (the first batch here marked seq 10).
    marks = captured.conn.execute("SELECT seq FROM _fqdb_changes_marks").fetchall()
    assert marks == [(10,)]
    log_.max_rows = 10**6
    log_.max_age = 500
    log_._next_prune = 0.0
    ok(captured.run_batch([ins("n11")])[0])
    assert [e[0] for e in log(captured, 7)] == [8, 9, 10, 11, 12]  # mark 10 is recent
    # Everything up to a mark older than max_age goes (never a change younger than that).
    captured.conn.execute(
        "INSERT INTO _fqdb_changes_marks (seq, at) VALUES (9, unixepoch() - 1000)"
    )
    log_._next_prune = 0.0
    ok(captured.run_batch([ins("n12")])[0])
    assert [e[0] for e in log(captured, 9)] == [10, 11, 12, 13]
    assert log_.pruned == 9
    assert PRUNE_CHUNK >= 1000  # one pass is bounded, but not trivially small


def test_the_log_survives_other_connections_and_the_tip_is_in_sqlite_sequence(
    captured: Engine, tmp_path: Path
) -> None:
    ok(captured.run_batch([ins("a")])[0])
    other = sqlite3.connect(str(tmp_path / "log.db"), isolation_level=None)
    try:
        # A write by a program that is not FastQuartDB at all is logged too (the triggers).
        other.execute("INSERT INTO item (name) VALUES ('from-sqlite3')")
        assert other.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = '_fqdb_changes'"
        ).fetchone() == (2,)
    finally:
        other.close()
    assert [e[4]["name"] for e in log(captured)] == ["a", "from-sqlite3"]
    started = time.monotonic()
    ok(captured.run_batch([ins("b")])[0])
    assert captured.changes.tip == 3 and time.monotonic() - started < 5
