"""The raw-SQL sandbox and statement deadlines hold on every transport (issue 13, rows 1-5).

The same rules everywhere: the engine's authorizer (embedded, daemon) and, on
dqlite, the same authorizer run over a local copy of the cluster's schema.
"""

from __future__ import annotations

import asyncio

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    IntegrityError,
    StatementTimeoutError,
    ValidationError,
)
from tests.integration.test_isolation import ENDLESS, ROW3_PRAGMAS


async def test_raw_sql_pragmas_outside_the_whitelist_are_refused(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE TABLE sb (id INTEGER PRIMARY KEY, n INTEGER CHECK (n >= 0))")
    for sql in ROW3_PRAGMAS:
        with pytest.raises(ValidationError, match="refused: PRAGMA"):
            await db.execute(sql)
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO sb (n) VALUES (-1)")  # CHECKs still hold
    # The read-only ones are allowed.
    assert (await db.execute("PRAGMA foreign_keys"))["rows"] == [[1]]
    assert [row[1] for row in (await db.execute("PRAGMA table_info(sb)"))["rows"]] == ["id", "n"]


async def test_raw_sql_functions_outside_the_whitelist_are_refused(
    db: AsyncDatabaseManager,
) -> None:
    for sql in (
        "SELECT fts3_tokenizer('simple')",
        "SELECT fts3_tokenizer('evil', X'4141414141414141')",
        "SELECT load_extension('x')",
        "SELECT upper(load_extension('x'))",
    ):
        with pytest.raises(ValidationError, match=r"refused: function \w+\(\) is not allowed"):
            await db.execute(sql)
    row = await db.fetch_one(
        "SELECT abs(-2) AS a, json_extract('{\"k\": 5}', '$.k') AS j, upper('x') AS u"
    )
    assert row == {"a": 2, "j": 5, "u": "X"}


async def test_raw_sql_temp_objects_are_refused(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE TABLE sbt (id INTEGER PRIMARY KEY, v TEXT)")
    for sql in (
        "CREATE TEMP TABLE sbt (id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TEMPORARY TABLE x (a)",
        "CREATE TABLE temp.sbt (a)",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER swallow BEFORE INSERT ON main.sbt BEGIN SELECT RAISE(IGNORE); END",
    ):
        with pytest.raises(ValidationError, match="refused: TEMP"):
            await db.execute(sql)
    await db.execute("INSERT INTO sbt (v) VALUES ('kept')")
    assert await db.fetch_all("SELECT v FROM main.sbt") == [{"v": "kept"}]


async def test_fts5_works_and_its_shadow_tables_are_protected(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE VIRTUAL TABLE sbdoc USING fts5(body)")
    await db.execute("INSERT INTO sbdoc (body) VALUES ('hello sandbox')")
    assert await db.fetch_all("SELECT body FROM sbdoc WHERE sbdoc MATCH 'hello'") == [
        {"body": "hello sandbox"}
    ]
    for sql in (
        "INSERT INTO sbdoc_data VALUES (99, X'00')",
        "DELETE FROM sbdoc_content",
        "DROP TABLE sbdoc_idx",
    ):
        with pytest.raises(ValidationError, match="may only be changed through it"):
            await db.execute(sql)
    await db.execute("DELETE FROM sbdoc")
    assert await db.fetch_all("SELECT body FROM sbdoc") == []


async def test_raw_statement_deadline_per_call(db: AsyncDatabaseManager) -> None:
    with pytest.raises(StatementTimeoutError) as caught:
        await db.execute(ENDLESS, timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert "timeout=" in str(caught.value)
    with pytest.raises(ValidationError, match="positive number"):
        await db.execute("SELECT 1", timeout=-1)
    assert (await db.execute("SELECT 1 AS one", timeout=5))["rows"] == [[1]]


async def test_a_deferred_constraint_fails_alone_in_its_batch(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE TABLE dp (id INTEGER PRIMARY KEY)")
    await db.execute(
        "CREATE TABLE dc (id INTEGER PRIMARY KEY, p INTEGER REFERENCES dp(id) "
        "DEFERRABLE INITIALLY DEFERRED)"
    )
    await db.execute("INSERT INTO dp (id) VALUES (1)")
    # Sent together, so the daemon and embedded mode group-commit them in one batch.
    calls = [db.execute("INSERT INTO dc (p) VALUES (?)", [1 if n % 5 else 99]) for n in range(20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [0, 5, 10, 15], results
    assert all(isinstance(results[n], IntegrityError) for n in failed)
    assert (await db.execute("SELECT count(*) FROM dc"))["rows"] == [[16]]
