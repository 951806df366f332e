"""Raw SQL errors: a wrong statement is a ``ProgrammingError``, a condition of the world an
``OperationalError`` — on every transport, classified by SQLite's result code.

The integrations answer ``ProgrammingError`` with HTTP 400 (do not retry) and
``OperationalError`` with 503 (try again later), so the class is a promise.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    DatabaseBusyError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from fastquartdb.integrations import http_status_for

from .conftest import serving

#: Statements that are wrong in themselves (SQLITE_ERROR and friends), and a piece of the
#: message SQLite gives for each, so the test proves it ran the case it names.
WRONG_STATEMENTS = [
    ("SELECT (SELECT 1, 2)", "sub-select returns 2 columns"),
    ("CREATE TABLE t (x INTEGER)", "table t already exists"),
    ("CREATE VIEW v AS SELECT 2", "view v already exists"),
    ("INSERT INTO v VALUES (1)", "cannot modify v because it is a view"),
    ("SELECT count(1, 2)", "wrong number of arguments to function count()"),
    ("REINDEX nosuchindex", "unable to identify the object to be reindexed"),
    ("ALTER TABLE t ADD COLUMN x INTEGER", "duplicate column name"),
    ("SELECT nosuchfunction(1)", "no such function"),
    ("SELECT * FROM nosuchtable", "no such table"),
    ("SELECT nosuchcolumn FROM t", "no such column"),
    ("SELEC 1", "syntax error"),
    ("SELECT 1 +", "incomplete input"),
    ("DROP TABLE nosuchtable", "no such table"),
    ("CREATE INDEX t_x ON t (nosuchcolumn)", "no such column"),
    ("SELECT x FROM t ORDER BY 5", "ORDER BY term out of range"),
]


async def _setup(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE TABLE t (x INTEGER)")
    await db.execute("CREATE VIEW v AS SELECT 1 AS one")


@pytest.mark.parametrize(("sql", "message"), WRONG_STATEMENTS, ids=[s for s, _ in WRONG_STATEMENTS])
async def test_wrong_statement_is_programming_error(
    db: AsyncDatabaseManager, sql: str, message: str
) -> None:
    await _setup(db)
    with pytest.raises(ProgrammingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await db.execute(sql)
    with pytest.raises(ProgrammingError) as failure:
        await db.execute(sql)
    assert not isinstance(failure.value, OperationalError)
    assert http_status_for(failure.value) == 400
    # The connection is still usable: the error was the statement's, not the world's.
    assert (await db.execute("SELECT count(*) AS n FROM t"))["rows"] == [[0]]


async def test_constraint_stays_integrity_error(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE TABLE u (x INTEGER UNIQUE NOT NULL)")
    await db.execute("INSERT INTO u VALUES (1)")
    for sql in ("INSERT INTO u VALUES (1)", "INSERT INTO u VALUES (NULL)"):
        with pytest.raises(IntegrityError) as failure:
            await db.execute(sql)
        assert http_status_for(failure.value) == 409


@pytest.mark.parametrize("transport", ["embedded", "daemon"])
async def test_busy_stays_operational_error(transport: str, db_path: str) -> None:
    """Another process holding the write lock is the world's doing: 503, retry later."""
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    setup = sqlite3.connect(db_path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE t (x INTEGER)")
    options = {"busy_timeout": 0.1} if transport == "daemon" else {}
    async with serving(transport, db_path, **options):
        db = await AsyncDatabaseManager.init_engine(db_path, mode=transport, busy_timeout=0.1)
        setup.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(DatabaseBusyError) as failure:
                await db.execute("INSERT INTO t VALUES (1)")
            assert isinstance(failure.value, OperationalError)
            assert http_status_for(failure.value) == 503
        finally:
            setup.execute("ROLLBACK")
            setup.close()
        await db.execute("INSERT INTO t VALUES (1)")
        await AsyncDatabaseManager.close()
