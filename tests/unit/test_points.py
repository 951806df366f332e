"""Point reads' short path (engine/points.py): the outcome of run_read, for every request.

``run_point`` skips the generic steps once a shape is known; each case here runs
the same request through ``run_read`` (the full path) and compares outcomes,
the first time (the shape is learnt) and again (the short path runs).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine import Engine, ReaderPool
from fastquartdb.protocol.errors import FQDBError

COLUMNS = [
    {"name": "id", "type": "INTEGER", "primary_key": True},
    {"name": "name", "type": "TEXT"},
]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Engine]:
    conn = Engine.connect(str(tmp_path / "points.db"))
    engine = Engine(conn)
    rows = [[i, f"n{i}"] for i in range(1, 11)]
    for ok, value in engine.run_batch(
        [
            {"op": "ensure_table", "table": "t", "columns": COLUMNS},
            {"op": "insert_many", "table": "t", "columns": ["id", "name"], "rows": rows},
        ]
    ):
        assert ok, value
    yield engine
    conn.close()


@pytest.fixture
def reader(writer: Engine, tmp_path: Path) -> Iterator[Engine]:
    pool = ReaderPool.open(str(tmp_path / "points.db"), threads=1)
    yield pool.inline
    pool.close()


def outcome(result: tuple[bool, Any]) -> Any:
    ok, value = result
    if ok:
        return ("ok", value["columns"], [tuple(row) for row in value["rows"]])
    assert isinstance(value, FQDBError), value
    return (type(value).__name__, str(value))


def point(**change: Any) -> dict[str, Any]:
    return {"op": "fetch", "table": "t", "where": [[["id", "=", 3]]], **change}


CASES = [
    point(),
    point(limit=1),
    point(limit=0),
    point(columns=["name"]),
    point(columns=["name", "id"], limit=5),
    point(where=[[["id", "=", 99]]]),
    point(where=[[["id", "==", "3"]]]),
    point(offset=1),  # a key the short path does not honour: the full path, always
    point(distinct=True),
    point(timeout=1.0),
    point(columns=["nope"]),
    point(limit=-1),
    point(limit="1"),
    point(where=[[["id", "=", 2**63]]]),  # out of SQLite's range: the full path's error
    point(where=[[["id", "=", -(2**63) - 1]]]),
]


def learn(reader: Engine, req: dict[str, Any]) -> None:
    """Have ``reader`` learn the shape of ``req`` from a valid request of that shape."""
    valid = point(**{k: v for k, v in req.items() if k in ("columns", "offset")})
    if "limit" in req:
        valid["limit"] = 1
    if valid.get("columns") == ["nope"]:
        del valid["columns"]
    reader.run_point(valid)


@pytest.mark.parametrize("req", CASES, ids=[str(sorted(c.items())) for c in CASES])
def test_the_short_path_gives_the_full_paths_outcome(reader: Engine, req: dict[str, Any]) -> None:
    assert reader.is_point_read(req, load=True)
    expected = outcome(reader.run_read(dict(req)))
    reader.run_point(point())  # the shape without the case's unusual keys: known
    assert outcome(reader.run_point(dict(req))) == expected  # learns the shape, if valid
    learn(reader, req)
    assert outcome(reader.run_point(dict(req))) == expected  # by the short path if known


def test_a_known_shape_takes_the_short_path(reader: Engine) -> None:
    reader.run_point(point())
    assert "t" in reader._point_sql
    reader.run_point(point(columns=["name"], limit=1))
    assert ("t", ("name",), True) in reader._point_sql
    sql = reader._point_sql["t"][0]
    reader.run_point(point(offset=1))
    reader.run_point(point(distinct=True))
    assert len(reader._point_sql) == 2  # shapes with keys the short path ignores are not learnt
    assert reader._point_sql["t"][0] == sql


def test_another_process_s_schema_change_is_seen(writer: Engine, reader: Engine) -> None:
    assert outcome(reader.run_point(point()))[1] == ["id", "name"]
    writer.conn.execute('ALTER TABLE "t" ADD COLUMN "age" INTEGER')
    writer.conn.execute('UPDATE "t" SET "age" = 30 WHERE "id" = 3')
    # Within the schema check interval the cached shape may still answer; asked to check
    # (what the reader pool does after this process's writer ran DDL), it sees the column.
    assert outcome(reader.run_point(point(), check_schema=True)) == (
        "ok",
        ["id", "name", "age"],
        [(3, "n3", 30)],
    )


def test_a_dropped_table_fails_as_on_the_full_path(writer: Engine, reader: Engine) -> None:
    reader.run_point(point())
    writer.conn.execute('DROP TABLE "t"')
    got = outcome(reader.run_point(point()))
    assert got[0] != "ok" and "t" in got[1]
    assert got == outcome(reader.run_read(point()))


def test_a_long_string_key_is_no_point_read(reader: Engine) -> None:
    # Not inline: a reader thread runs it, after the wire's size check every other read has.
    assert reader.is_point_read(point(where=[[["id", "=", "x" * 1024]]]), load=True)
    assert not reader.is_point_read(point(where=[[["id", "=", "x" * 1025]]]), load=True)


def test_rows_are_read_afresh_every_time(writer: Engine, reader: Engine) -> None:
    assert outcome(reader.run_point(point()))[2] == [(3, "n3")]
    assert outcome(reader.run_point(point()))[2] == [(3, "n3")]
    writer.conn.execute("UPDATE t SET name = 'changed' WHERE id = 3")
    assert outcome(reader.run_point(point()))[2] == [(3, "changed")]
    assert isinstance(reader.conn, sqlite3.Connection)


def test_a_table_made_again_with_another_key_is_read_by_its_new_key(
    writer: Engine, reader: Engine, tmp_path: Path
) -> None:
    """The review's case: routing looked at the cached schema (``id`` the key), the read then
    learnt ``WHERE "id" = ?``; a read by the new key must not reuse it (it gave another row)."""
    by_id = point()
    assert outcome(reader.run_point(dict(by_id)))[2] == [(3, "n3")]
    other = sqlite3.connect(str(tmp_path / "points.db"), isolation_level=None)
    other.executescript(
        "DROP TABLE t; CREATE TABLE t (id INTEGER, name TEXT PRIMARY KEY); "
        "INSERT INTO t VALUES (3, 'n3'), (4, '3');"
    )
    other.close()
    # Routed on the stale shape (what ReadRouter does within the schema check interval).
    assert outcome(reader.run_point(dict(by_id), check_schema=True))[2] == [(3, "n3")]
    by_name = point(where=[[["name", "=", "3"]]])
    assert reader.is_point_read(by_name)
    expected = outcome(reader.run_read(dict(by_name)))
    assert expected[2] == [(4, "3")]
    assert outcome(reader.run_point(dict(by_name))) == expected
    assert outcome(reader.run_point(dict(by_name))) == expected


@pytest.mark.parametrize("bad", [[["id"]], [{"a": 1}]])
def test_an_unhashable_column_name_fails_as_on_the_full_path(reader: Engine, bad: Any) -> None:
    req = point(columns=bad)
    assert reader.is_point_read(req, load=True)
    expected = outcome(reader.run_read(dict(req)))
    assert expected[0] == "ValidationError"
    assert outcome(reader.run_point(dict(req))) == expected


def test_each_result_has_its_own_column_list(reader: Engine) -> None:
    first = reader.run_point(point())[1]
    second = reader.run_point(point())[1]  # by the short path
    second["columns"].append("extra")
    assert reader.run_point(point())[1]["columns"] == ["id", "name"]
    assert first["columns"] == ["id", "name"]
