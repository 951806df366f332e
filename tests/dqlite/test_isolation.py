"""Issue 13 on a real dqlite cluster: RETURNING, the PRAGMA guard, a frozen leader, quorum loss.

The raw-SQL cases share the session's cluster (a new database each); the
freeze and the quorum loss stop nodes, so they run on a cluster of their own,
one for both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from fastquartdb import AsyncDatabaseManager
from fastquartdb.client.dqlite import DqliteTransport
from fastquartdb.engine.dqlite.connection import NodeConnection
from fastquartdb.protocol.errors import (
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    FQDBError,
    ValidationError,
)

from .cluster import Cluster


async def _leader_named_by(address: str) -> str | None:
    try:
        conn = await NodeConnection.connect(address, 0.5)
    except ConnectionError:
        return None
    try:
        return (await asyncio.wait_for(conn.leader(), 0.5)).address
    except (ConnectionError, asyncio.TimeoutError):
        return None
    finally:
        await conn.close()


async def test_returning_is_applied_and_replicated(
    ddb: AsyncDatabaseManager, dqlite_cluster: Cluster
) -> None:
    await ddb.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, v INTEGER)")
    await ddb.execute("INSERT INTO item (v) VALUES (1), (2)")
    # A column dqlite types by its declaration: the write still runs exactly once.
    await ddb.execute("CREATE TABLE flag (id INTEGER PRIMARY KEY, on_ BOOLEAN)")
    flagged = await ddb.execute("INSERT INTO flag (on_) VALUES (1) RETURNING id, on_")
    assert flagged["rows"] == [[1, 1]]
    assert await ddb.fetch_all("SELECT id FROM flag") == [{"id": 1}]
    result = await ddb.execute("UPDATE item SET v = v + 10 RETURNING id, v")
    assert sorted(result["rows"]) == [[1, 11], [2, 12]]
    inserted = await ddb.execute("INSERT INTO item (v) VALUES (?) RETURNING id", [7])
    assert inserted["rows"] == [[3]]
    deleted = await ddb.execute("DELETE FROM item WHERE v = 7 RETURNING v")
    assert deleted["rows"] == [[7]]
    cte = await ddb.execute(
        "WITH n(x) AS (VALUES (100)) INSERT INTO item (v) SELECT x FROM n RETURNING v"
    )
    assert cte["rows"] == [[100]]
    async with ddb.transaction():  # inside a transaction: applied at its COMMIT
        assert (await ddb.execute("UPDATE item SET v = 0 WHERE id = 1 RETURNING v"))["rows"] == [
            [0]
        ]
    # A PRAGMA that sets something is a write as well (it used to go out as a bare QUERY).
    await ddb.execute("PRAGMA user_version = 7")
    assert await ddb.fetch_one("PRAGMA user_version") == {"user_version": 7}
    assert len(await ddb.fetch_all("PRAGMA table_info(item)")) == 2
    # The leader is alive and takes the next write (it used to die on this one).
    await ddb.execute("INSERT INTO item (v) VALUES (5)")
    assert all(node.running for node in dqlite_cluster.nodes)
    rows = await ddb.fetch_all("SELECT id, v FROM item ORDER BY id")
    assert rows == [
        {"id": 1, "v": 0},
        {"id": 2, "v": 12},
        {"id": 3, "v": 100},  # the deleted row's rowid is free again
        {"id": 4, "v": 5},
    ]
    # Committed, not only answered: a connection of its own sees the same rows.
    database = ddb.transport.database  # type: ignore[attr-defined]
    other = await DqliteTransport.open(dqlite_cluster.url(database))
    try:
        fresh = await other.request({"op": "execute", "sql": "SELECT id, v FROM item ORDER BY id"})
        assert fresh["rows"] == [[r["id"], r["v"]] for r in rows]
    finally:
        await other.close()


@pytest.mark.parametrize(
    "sql",
    [
        'PRAGMA "foreign_keys" = OFF',
        "PRAGMA [foreign_keys] = OFF",
        "PRAGMA `foreign_keys` = 0",
        "PRAGMA 'foreign_keys' = 0",
        'PRAGMA main."foreign_keys" = OFF',
        "PRAGMA/**/foreign_keys(0)",
        "SELECT \"load_extension\"('x')",
    ],
)
async def test_quoted_pragma_is_refused(ddb: AsyncDatabaseManager, sql: str) -> None:
    with pytest.raises(ValidationError, match="refused"):
        await ddb.execute(sql)
    assert (await ddb.fetch_one("PRAGMA foreign_keys")) == {"foreign_keys": 1}


def test_raw_sql_is_read_as_sqlite_tokenizes_it() -> None:
    from fastquartdb.engine.dqlite.rawsql import Statement, classify, number_named
    from fastquartdb.engine.sandbox import check_statement

    def check_raw_sql(sql: str) -> None:  # what the dqlite transport checks, on a schema copy
        check_statement(sql, ["CREATE TABLE item (v)"])

    trigger = (
        "CREATE TRIGGER t AFTER INSERT ON item BEGIN "
        "UPDATE item SET v = CASE WHEN 1 THEN 2 END; DELETE FROM item WHERE 0; END;"
    )
    for fine in (trigger, "SELECT 'PRAGMA foreign_keys = 0; x' AS t -- ; BEGIN", "SELECT 1;"):
        check_raw_sql(fine)
    # "SELECT 1;;" as sqlite3 itself reads it (daemon and embedded): a second, empty statement.
    for refused in (
        "SELECT 1; SELECT 2",
        "SELECT 1;;",
        "/* x */ ROLLBACK",
        "pragma MAIN.Foreign_Keys=0",
    ):
        with pytest.raises(ValidationError):
            check_raw_sql(refused)
    assert classify("WITH a AS (SELECT 1) DELETE FROM item RETURNING v").writes
    assert classify("WITH a AS (SELECT 1) DELETE FROM item RETURNING v").returns_rows
    assert not classify("WITH a AS (SELECT 1) SELECT replace(x, 'a', 'b') FROM a").writes
    assert not classify("INSERT INTO item (v) VALUES ('returning')").returns_rows
    assert classify("PRAGMA user_version = 1") == Statement("PRAGMA", True, False)
    assert classify("PRAGMA user_version(1)") == Statement("PRAGMA", True, False)
    assert classify("PRAGMA table_info(item)") == Statement("PRAGMA", False, True)
    assert classify("PRAGMA user_version") == Statement("PRAGMA", False, True)
    assert number_named("SELECT :a, ':b', @c, :a", {"a": 1, "c": 2}) == (
        "SELECT ?1, ':b', ?2, ?1",
        [1, 2],
    )


async def test_busy_from_another_client_still_says_so(dqlite_cluster: Cluster) -> None:
    """With a healthy cluster, busy means another client's transaction, and says that."""
    url = dqlite_cluster.url()
    holder = await DqliteTransport.open(url)
    waiter = await DqliteTransport.open(url, busy_timeout=0.3)
    try:
        await holder.request({"op": "execute", "sql": "CREATE TABLE b (x)"})
        await holder.request({"op": "begin", "txn": 1})
        await holder.request({"op": "execute", "sql": "INSERT INTO b VALUES (1)", "txn": 1})
        with pytest.raises(DatabaseBusyError, match="another client held the write lock"):
            await waiter.request({"op": "execute", "sql": "INSERT INTO b VALUES (2)"})
        await holder.request({"op": "rollback", "txn": 1})
    finally:
        await holder.close()
        await waiter.close()


@pytest.mark.slow
async def test_frozen_leader_is_abandoned_and_quorum_loss_is_named(own_cluster: Cluster) -> None:
    db = await AsyncDatabaseManager.init_engine(own_cluster.url("freeze"))
    acked: list[int] = []
    try:
        await db.execute("CREATE TABLE w (n INTEGER PRIMARY KEY)")
        for n in range(5):
            await db.execute("INSERT INTO w (n) VALUES (?)", [n])
            acked.append(n)
        leader = own_cluster.leader()
        others = [node for node in own_cluster.nodes if node is not leader]
        os.kill(leader.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        elected_at: float | None = None
        resumed_at: float | None = None
        errors: list[str] = []
        try:
            n = 5
            while resumed_at is None and time.monotonic() - frozen_at < 30:
                attempt = asyncio.ensure_future(db.execute("INSERT INTO w (n) VALUES (?)", [n]))
                while not attempt.done() and time.monotonic() - frozen_at < 30:
                    await asyncio.wait([attempt], timeout=0.2)
                    if elected_at is None:
                        named = {await _leader_named_by(o.address) for o in others}
                        if named & {o.address for o in others}:
                            elected_at = time.monotonic()
                if not attempt.done():
                    attempt.cancel()
                    break
                try:
                    attempt.result()
                    acked.append(n)
                    resumed_at = time.monotonic()
                except (ConnectionLostError, DaemonUnavailableError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                n += 1
            # Written while the old leader is still frozen: it was abandoned, not waited for.
            assert resumed_at is not None, f"writes did not resume in 30 s: {errors}"
            assert leader.running and db.transport.leader != leader.address  # type: ignore[attr-defined]
        finally:
            os.kill(leader.pid, signal.SIGCONT)
        assert elected_at is not None
        print(
            f"\nRELIABILITY dqlite SIGSTOP leader: new leader named after "
            f"{elected_at - frozen_at:.1f} s, writes resumed after {resumed_at - frozen_at:.1f} s "
            f"({resumed_at - elected_at:.1f} s after the election); errors meanwhile: {errors}"
        )
        rows = await db.fetch_all("SELECT n FROM w ORDER BY n")
        stored = [r["n"] for r in rows]
        assert set(acked) <= set(stored) and len(stored) == len(set(stored))

        # Quorum loss: two of three nodes gone. The error names it and what to do. A write
        # lost at its COMMIT is resent for failover_timeout (20 s) before it gives up: a
        # shorter window here keeps the test short, the message is the same.
        db.transport.failover_timeout = 5.0  # type: ignore[attr-defined]
        current = own_cluster.leader()
        for node in own_cluster.nodes:
            if node is not current:
                node.kill()
        lost_at = time.monotonic()
        with pytest.raises(FQDBError) as info:
            for n in range(1000, 1100):
                await db.execute("INSERT INTO w (n) VALUES (?)", [n])
        message = str(info.value)
        print(
            f"RELIABILITY dqlite quorum loss: {type(info.value).__name__} after "
            f"{time.monotonic() - lost_at:.1f} s: {message}"
        )
        assert "held the write lock" not in message
        assert "quorum" in message and "start" in message
    finally:
        await AsyncDatabaseManager.close()
