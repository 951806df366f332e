"""The sqlite3 driver of I/O-free engine logic (``engine/steps.py``): its contract."""

from __future__ import annotations

import sqlite3

import pytest

from fastquartdb.engine.steps import Exec, ExecMany, Query, Steps, run
from fastquartdb.protocol.errors import IntegrityError


def _logic() -> Steps[tuple[int, list[tuple[int, str]], str]]:
    yield Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    yield ExecMany("INSERT INTO t (id, v) VALUES (?, ?)", [(1, "a"), (2, "b")])
    changed = yield Exec("UPDATE t SET v = upper(v) WHERE id >= ?", [1])
    rows = yield Query("SELECT id, v FROM t ORDER BY id")
    try:
        yield Exec("INSERT INTO t (id, v) VALUES (1, 'again')")
    except IntegrityError as exc:  # the driver's contract: a constraint as our class
        return changed, rows, str(exc)
    raise AssertionError("the duplicate key was not refused")


def test_run_feeds_each_statement_its_result_and_constraints_as_integrity_error() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    changed, rows, error = run(conn, _logic())
    assert changed == 2
    assert rows == [(1, "A"), (2, "B")]
    assert "UNIQUE constraint failed" in error


def test_other_sqlite_errors_pass_through_unchanged() -> None:
    def logic() -> Steps[None]:
        yield Query("SELECT * FROM missing")

    conn = sqlite3.connect(":memory:", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        run(conn, logic())
