"""A result over the daemon's ``--max-reply`` fails alone, also inside a write batch.

A ``... RETURNING`` whose rows are too large has made its changes before they are read:
left half-read, the statement kept the batch's COMMIT from running ("SQL statements in
progress": every request of the batch failed as busy, the first test failed so before the
fix), and its changes must not commit while the request reports a failure (a retry would
write twice). A read too large among writes fails alone too.
"""

from __future__ import annotations

import asyncio

import pytest

from fastquartdb import AsyncDatabaseManager
from fastquartdb.protocol.errors import ResultTooLargeError
from tests.helpers import daemon_and_client

LIMIT = 64 * 1024


async def _fill(db: AsyncDatabaseManager) -> None:
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad TEXT)")
    await db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
        "INSERT INTO t (v, pad) SELECT 0, printf('%.1000c', 'x') FROM n"
    )


async def returning_too_large_leaves_nothing(db: AsyncDatabaseManager) -> None:
    """An ``UPDATE ... RETURNING`` over the limit among 20 inserts: it fails with
    ResultTooLargeError and is undone; the inserts commit. (Also run on a cluster's daemon.)"""
    await _fill(db)
    big = asyncio.ensure_future(db.execute("UPDATE t SET v = v + 1 RETURNING *"))
    others = [db.execute("INSERT INTO t (v, pad) VALUES (0, 'y')") for _ in range(20)]
    results = await asyncio.gather(big, *others, return_exceptions=True)
    assert isinstance(results[0], ResultTooLargeError), results[0]
    assert not [r for r in results[1:] if isinstance(r, BaseException)], results[1:4]
    row = await db.fetch_one("SELECT sum(v) AS s, count(*) AS n FROM t")
    assert row == {"s": 0, "n": 320}  # the UPDATE undone, the 20 inserts kept


async def test_a_returning_too_large_leaves_nothing_and_sinks_nobody(db_path: str) -> None:
    async with daemon_and_client(db_path, max_reply=LIMIT) as (_, db):
        await returning_too_large_leaves_nothing(db)


async def test_a_read_too_large_in_a_write_batch_fails_alone(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FQDB_READERS", "0")  # the reads go to the daemon, into its batches
    async with daemon_and_client(db_path, max_reply=LIMIT) as (_, db):
        await _fill(db)
        for _ in range(5):
            reads = [db.fetch_all("SELECT * FROM t") for _ in range(3)]
            writes = [db.execute("INSERT INTO t (v, pad) VALUES (1, 'y')") for _ in range(30)]
            results = await asyncio.gather(*reads, *writes, return_exceptions=True)
            assert all(isinstance(r, ResultTooLargeError) for r in results[:3]), results[:3]
            failed = [r for r in results[3:] if isinstance(r, BaseException)]
            assert not failed, failed[:3]
        assert (await db.fetch_one("SELECT sum(v) AS s FROM t"))["s"] == 150
