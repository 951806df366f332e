"""The fetch cache (engine/shapes.py): a shape built once gives the same rows and errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine import Engine
from fastquartdb.engine.shapes import select_shape, shape_params

COLUMNS = [
    {"name": "id", "type": "INTEGER", "primary_key": True},
    {"name": "name", "type": "TEXT"},
]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    conn = Engine.connect(str(tmp_path / "shapes.db"))
    engine = Engine(conn)
    rows = [[i, None if i % 5 == 0 else f"n{i}"] for i in range(1, 21)]
    for ok, value in engine.run_batch(
        [
            {"op": "ensure_table", "table": "t", "columns": COLUMNS},
            {"op": "insert_many", "table": "t", "columns": ["id", "name"], "rows": rows},
        ]
    ):
        assert ok, value
    yield engine
    conn.close()


def fetch(engine: Engine, **req: Any) -> Any:
    ((ok, value),) = engine.run_batch([{"op": "fetch", "table": "t", **req}])
    return value if ok else (type(value), str(value))


def uncached(engine: Engine, **req: Any) -> Any:
    engine._select_sql.clear()
    return fetch(engine, **req)


CASES: list[dict[str, Any]] = [
    {"where": [[["id", "=", 3]]]},
    {"where": [[["id", "BETWEEN", [2, 6]]]], "order_by": ["-id"], "limit": 3},
    {"where": [[["name", "=", None]]]},
    {"where": [[["id", "IN", [1, 2, 3]]], [["id", ">", 18]]], "columns": ["name"]},
    {"where": [[["id", "IN", []]]]},
    {"where": [[["id", "<", 4]]], "offset": 1},
]


@pytest.mark.parametrize("req", CASES)
def test_a_cached_shape_gives_the_rows_of_a_fresh_build(
    engine: Engine, req: dict[str, Any]
) -> None:
    first = uncached(engine, **req)
    assert select_shape({"op": "fetch", "table": "t", **req}) in engine._select_sql
    assert fetch(engine, **req) == first


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ({"where": [[["id", "=", 3]]]}, {"where": [[["id", "=", 2**70]]]}),
        ({"where": [[["id", "=", 3]]]}, {"where": [[["id", "=", float("nan")]]]}),
        ({"where": [[["id", "BETWEEN", [1, 2]]]]}, {"where": [[["id", "BETWEEN", [None, 2]]]]}),
        ({"where": [[["id", "IN", [1, 2]]]]}, {"where": [[["id", "IN", [1, {"x": 1}]]]]}),
        ({"where": [[["id", ">", 1]]], "limit": 2}, {"where": [[["id", ">", 1]]], "limit": -2}),
        ({"where": [[["id", ">", 1]]], "limit": 2}, {"where": [[["id", ">", 1]]], "limit": True}),
    ],
)
def test_a_bad_value_in_a_cached_shape_fails_as_without_the_cache(
    engine: Engine, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    expected = uncached(engine, **bad)
    assert isinstance(expected, tuple), "the bad request must fail"
    fetch(engine, **good)  # now the shape is cached
    assert fetch(engine, **bad) == expected


def test_a_schema_change_drops_the_cached_shapes(engine: Engine) -> None:
    assert fetch(engine, where=[[["id", "=", 1]]])["columns"] == ["id", "name"]
    engine.conn.execute('ALTER TABLE "t" ADD COLUMN "extra" TEXT')
    engine._refresh_schema(force=True)
    assert engine._select_sql == {}
    assert fetch(engine, where=[[["id", "=", 1]]])["columns"] == ["id", "name", "extra"]


def test_unusual_requests_are_not_cached() -> None:
    assert select_shape({"op": "fetch", "table": "t", "join": [{"table": "u"}]}) is None
    assert select_shape({"op": "fetch", "table": "t", "where": [[("id", "=", 1)]]}) is None
    assert select_shape({"op": "fetch", "table": ["t"], "where": None}) is None
    assert shape_params({"where": [[["id", "IN", [None]]]]}) is None


def test_point_reads_read_no_stale_rows(engine: Engine) -> None:
    assert fetch(engine, where=[[["id", "=", 2]]])["rows"] == [(2, "n2")]
    engine.conn.execute("UPDATE t SET name = 'changed' WHERE id = 2")
    assert fetch(engine, where=[[["id", "=", 2]]])["rows"] == [(2, "changed")]
    assert isinstance(engine.conn, sqlite3.Connection)


POINT = {"op": "fetch", "table": "t", "where": [[["id", "=", 3]]], "limit": 1}


@pytest.mark.parametrize(
    ("change", "point"),
    [
        ({}, True),
        ({"where": [[["id", "==", "3"]]]}, True),
        ({"columns": ["name"]}, True),
        ({"columns": ["id", "name", "id"]}, False),  # longer than the table
        ({"columns": "name"}, False),
        ({"where": [[["name", "=", "n3"]]]}, False),  # not the primary key
        ({"where": [[["id", ">", 3]]]}, False),
        ({"where": [[["id", "=", 3.0]]]}, False),
        ({"where": [[["id", "=", None]]]}, False),
        ({"where": [[["id", "=", 3], ["name", "=", "n3"]]]}, False),
        ({"where": [[["id", "=", 3]], [["id", "=", 4]]]}, False),
        ({"where": None}, False),
        ({"order_by": ["name"]}, False),
        ({"join": [{"table": "t", "kind": "inner"}]}, False),
        ({"op": "count"}, False),
        ({"table": "missing"}, False),
        ({"table": 7}, False),
    ],
)
def test_is_point_read(engine: Engine, change: dict[str, Any], point: bool) -> None:
    assert engine.is_point_read({**POINT, **change}, load=True) is point
