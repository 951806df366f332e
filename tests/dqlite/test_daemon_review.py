"""A review's findings on the daemon's writer on a dqlite cluster, each a test that failed.

Every test runs a daemon in this process (``daemon_and_client``) on the shared
cluster, or on a cluster of its own where it kills nodes, and asserts what the
daemon on a file does in the same case.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.engine.requestkeys import RequestKeys
from fastquartdb.protocol.errors import (
    ConnectionLostError,
    IntegrityError,
    OperationalError,
    ResultTooLargeError,
    ValidationError,
)
from tests.helpers import daemon_and_client

from .cluster import Cluster


async def test_a_failure_that_rolls_back_the_batch_fails_alone_and_at_once(
    dqlite_cluster: Cluster,
) -> None:
    # ON CONFLICT ROLLBACK ends the whole transaction inside insert_many's savepoint: its
    # ROLLBACK TO then fails and closes the leader connection. That is no lost leader:
    # the request fails alone (IntegrityError, as on a file), the others commit, now.
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (_, db):
        await db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE ON CONFLICT ROLLBACK)"
        )
        await db.request({"op": "insert", "table": "t", "values": {"v": "a"}})
        started = time.monotonic()
        bad = {"op": "insert_many", "table": "t", "columns": ["v"], "rows": [["b"], ["a"]]}
        good = [{"op": "insert", "table": "t", "values": {"v": f"g{i}"}} for i in range(4)]
        outcomes = await asyncio.gather(
            *(db.request(r) for r in [good[0], bad, *good[1:]]), return_exceptions=True
        )
        assert time.monotonic() - started < 5
        assert isinstance(outcomes[1], IntegrityError), outcomes
        assert all(isinstance(o, int) for i, o in enumerate(outcomes) if i != 1), outcomes
        rows = await db.fetch_all("SELECT v FROM t ORDER BY v")
        assert [r["v"] for r in rows] == ["a", "g0", "g1", "g2", "g3"]
        assert (await db.stats())["daemon"]["dqlite"]["failovers"] == 0


async def test_such_a_failure_in_a_transaction_is_its_own_error_not_a_lost_leader(
    dqlite_cluster: Cluster,
) -> None:
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (_, db):
        await db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE ON CONFLICT ROLLBACK)"
        )
        await db.request({"op": "insert", "table": "t", "values": {"v": "a"}})
        bad = {"op": "insert_many", "table": "t", "columns": ["v"], "rows": [["b"], ["a"]]}
        with pytest.raises(OperationalError, match="rolled back by an error"):
            async with db.transaction():
                await db.request({"op": "insert", "table": "t", "values": {"v": "c"}})
                with pytest.raises(IntegrityError):
                    await db.request(bad)
        rows = await db.fetch_all("SELECT v FROM t ORDER BY v")
        assert [r["v"] for r in rows] == ["a"]
        assert (await db.stats())["daemon"]["dqlite"]["failovers"] == 0


async def test_a_connection_lost_answer_of_the_daemon_is_not_a_lost_daemon(
    dqlite_cluster: Cluster,
) -> None:
    # The writer answers ConnectionLostError for its own connection (to the leader: lost
    # inside a transaction, none within failover_timeout) or for a key resolved as never
    # committed. The daemon connection is fine: the client must not take the answer for
    # its loss, reconnect (leaving the old connection open) and resend, again and again.
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (daemon, db):
        await db.execute("CREATE TABLE t (v)")
        assert await db.request({"op": "resolve", "key": ["gone", 1]}) == {"committed": False}
        before = daemon.stats()["clients_total"]
        resent = {"op": "insert", "table": "t", "values": {"v": 1}, "key": ["gone", 1]}
        resent["resent"] = True
        with pytest.raises(ConnectionLostError) as caught:
            await db.request(resent)
        assert str(caught.value).startswith("this request was resolved as never committed")
        await asyncio.sleep(0.2)
        stats = daemon.stats()
        assert (stats["clients"], stats["clients_total"]) == (1, before)
        assert await db.fetch_all("SELECT v FROM t") == []


async def test_the_records_of_batches_do_not_pile_up(dqlite_cluster: Cluster) -> None:
    # Each batch records itself (to resolve a COMMIT lost with the leader); nothing ever
    # asks about a batch that committed, yet only age pruned them, at most 2000 per 10 s:
    # past 200 batches a second the table grew without bound.
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (_, db):
        await db.execute("CREATE TABLE t (v)")
        for i in range(300):
            await db.request({"op": "insert", "table": "t", "values": {"v": i}})
        rows = await db.fetch_all(
            "SELECT count(*) AS n FROM _fqdb_requests WHERE client LIKE 'fqdb-writer-%'"
        )
        assert rows[0]["n"] <= 100, rows


@pytest.mark.parametrize("where", ["file", "cluster"])
async def test_what_follows_an_error_that_ended_a_transaction_does_not_run_alone(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Requests of a transaction that reach the writer together run one after the other;
    # when one ends the transaction (ON CONFLICT ROLLBACK), the next ones must fail as
    # the worker fails those that come later: on a file they committed on their own
    # (a write of a rolled-back transaction kept), on a cluster they said the leader was lost.
    if where == "cluster":
        url = request.getfixturevalue("dqlite_cluster").url()
    else:
        url = str(tmp_path / "t.db")
    async with daemon_and_client(url) as (_, db):
        await db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE ON CONFLICT ROLLBACK)"
        )
        await db.request({"op": "insert", "table": "t", "values": {"v": "a"}})
        with pytest.raises(OperationalError, match="rolled back by an error"):
            async with db.transaction():
                first, later = await asyncio.gather(
                    db.request({"op": "insert", "table": "t", "values": {"v": "a"}}),
                    db.request({"op": "insert", "table": "t", "values": {"v": "later"}}),
                    return_exceptions=True,
                )
                assert isinstance(first, IntegrityError), first
                assert isinstance(later, OperationalError), later
                assert str(later) == "transaction was rolled back by an error"
        assert await db.fetch_all("SELECT v FROM t") == [{"v": "a"}]


async def test_a_bug_in_a_batch_never_leaves_its_transaction_open(
    dqlite_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine on a file rolls back when something unforeseen escapes a batch; here the
    # transaction stayed open on the leader: every later batch failed to BEGIN, and the
    # cluster's write lock was held for everyone until the daemon stopped.
    url = dqlite_cluster.url()
    stage = RequestKeys.stage

    def broken(self: RequestKeys, req: dict[str, Any], result: Any) -> None:
        if req.get("idempotency_key") == "bug":
            raise RuntimeError("a bug")
        stage(self, req, result)

    monkeypatch.setattr(RequestKeys, "stage", broken)
    async with daemon_and_client(url) as (_, db):
        await db.execute("CREATE TABLE t (v)")
        bug = {"op": "insert", "table": "t", "values": {"v": 0}, "idempotency_key": "bug"}
        with pytest.raises(OperationalError, match="internal error"):
            await db.request(bug)
        assert await db.request({"op": "insert", "table": "t", "values": {"v": 1}}) == 1
        assert await db.fetch_all("SELECT v FROM t") == [{"v": 1}]


@pytest.mark.slow
async def test_a_batch_whose_commit_is_lost_with_the_leader_runs_once(
    own_cluster: Cluster,
) -> None:
    # Unkeyed writes (nothing but the batch's own record can tell whether they committed)
    # and keyed ones, in flight at COMMIT when the leader dies: each is answered, without
    # an error, and stored once.
    url = own_cluster.url()
    async with daemon_and_client(url) as (daemon, db):
        await db.execute("CREATE TABLE t (v)")
        at_commit = own_cluster.kill_leader_at_commit()
        at_commit.pause()
        writes = [
            asyncio.ensure_future(
                db.request({"op": "insert", "table": "t", "values": {"v": i}})
                if i % 2
                else db.execute("INSERT INTO t (v) VALUES (?)", [i])
            )
            for i in range(8)
        ]
        await asyncio.sleep(0.3)
        await asyncio.get_running_loop().run_in_executor(None, at_commit.kill)
        await asyncio.gather(*writes)
        rows = await db.fetch_all("SELECT v FROM t ORDER BY v")
        assert [r["v"] for r in rows] == list(range(8))
        assert daemon.stats()["dqlite"]["batches_lost"] >= 1


@pytest.mark.slow
async def test_a_leader_lost_inside_a_transaction_through_the_daemon(
    own_cluster: Cluster,
) -> None:
    url = own_cluster.url()
    async with daemon_and_client(url) as (daemon, db):
        await db.execute("CREATE TABLE t (v)")
        before = daemon.stats()["clients_total"]
        with pytest.raises(ConnectionLostError, match="lost inside this transaction"):
            async with db.transaction():
                await db.request({"op": "insert", "table": "t", "values": {"v": 1}})
                own_cluster.leader().kill()
                await db.request({"op": "insert", "table": "t", "values": {"v": 2}})
        assert await db.request({"op": "insert", "table": "t", "values": {"v": 3}}) == 1
        assert await db.fetch_all("SELECT v FROM t") == [{"v": 3}]
        stats = daemon.stats()
        assert (stats["clients"], stats["clients_total"]) == (1, before)


@pytest.mark.slow
async def test_a_transaction_whose_commit_is_lost_with_the_leader_is_resolved(
    own_cluster: Cluster,
) -> None:
    url = own_cluster.url()
    async with daemon_and_client(url) as (_, db):
        await db.execute("CREATE TABLE t (v)")
        at_commit = own_cluster.kill_leader_at_commit()
        loop = asyncio.get_running_loop()
        outcome = "committed"
        try:
            async with db.transaction():
                await db.request({"op": "insert", "table": "t", "values": {"v": 1}})
                at_commit.pause()
                loop.call_later(0.3, at_commit.kill)
        except ConnectionLostError as exc:
            assert "rolled back" in str(exc) and "unknown" not in str(exc), exc
            outcome = "rolled back"
        rows = await db.fetch_all("SELECT v FROM t")
        assert rows == ([{"v": 1}] if outcome == "committed" else []), outcome


@pytest.mark.parametrize("field", ["key", "idempotency_key"])
async def test_a_key_dqlite_cannot_store_fails_alone(dqlite_cluster: Cluster, field: str) -> None:
    # A NUL in a key's text: dqlite refuses to store it, and the records of a batch go in
    # one statement, so every neighbour of that request failed with it.
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (_, db):
        await db.execute("CREATE TABLE t (v)")
        bad: dict[str, Any] = {"op": "insert", "table": "t", "values": {"v": 0}}
        bad[field] = ["nul\x00client", 1] if field == "key" else "nul\x00key"
        good = [{"op": "insert", "table": "t", "values": {"v": i}} for i in range(1, 5)]
        outcomes = await asyncio.gather(
            *(db.request(r) for r in [good[0], bad, *good[1:]]), return_exceptions=True
        )
        assert isinstance(outcomes[1], ValidationError), outcomes
        assert "NUL" in str(outcomes[1])
        assert all(isinstance(o, int) for i, o in enumerate(outcomes) if i != 1), outcomes
        rows = await db.fetch_all("SELECT v FROM t ORDER BY v")
        assert [r["v"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.slow
async def test_a_frozen_node_first_in_the_url_does_not_stop_the_daemon(
    own_cluster: Cluster,
) -> None:
    # A SIGSTOPped node accepts connections (the kernel does) but never answers who leads:
    # asking it timed out with a bare TimeoutError that escaped the leader search, so the
    # daemon did not start (and a running one failed its batches as an internal error).
    leader = own_cluster.leader()
    frozen = next(node for node in own_cluster.nodes if node is not leader)
    others = [node.address for node in own_cluster.nodes if node is not frozen]
    url = "dqlite://" + ",".join([frozen.address, *others]) + "/frozen"
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        async with daemon_and_client(url) as (_, db):
            await db.execute("CREATE TABLE t (v)")
            assert await db.request({"op": "insert", "table": "t", "values": {"v": 1}}) == 1
    finally:
        os.kill(frozen.pid, signal.SIGCONT)


async def test_a_result_over_max_reply_fails_before_it_is_in_memory(
    dqlite_cluster: Cluster,
) -> None:
    # On a file the engine measures rows while it reads them (engine/results.py); on a
    # cluster the daemon read every row from the leader first, and only the reply's
    # encoding found it too large: one big query could take the daemon's memory.
    url = dqlite_cluster.url()
    big = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300) "
        "SELECT x, randomblob(100000) AS b FROM n"
    )
    async with daemon_and_client(url, max_reply=1_000_000) as (_, db):
        await db.fetch_all("SELECT 1 AS one")
        tracemalloc.start()
        try:
            with pytest.raises(ResultTooLargeError, match="--max-reply"):
                await db.fetch_all(big)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 10_000_000, f"{peak / 1e6:.0f} MB held for a 30 MB result"
        assert await db.fetch_all("SELECT 2 AS two") == [{"two": 2}]


async def test_a_select_ending_in_a_comment_or_semicolon_reads_typed_columns(
    dqlite_cluster: Cluster,
) -> None:
    # Columns declared DATETIME or BOOLEAN come typed from dqlite, so the rows are asked
    # again through "SELECT +c AS c FROM (<the statement>)": a trailing "-- comment" or
    # ";" then ended that subquery (ProgrammingError); on a file both simply run.
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (_, db):
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATETIME, ok BOOLEAN)")
        await db.execute("INSERT INTO t (d, ok) VALUES (NULL, NULL)")
        for sql in ("SELECT d, ok FROM t -- the note", "SELECT d, ok FROM t;"):
            assert await db.fetch_all(sql) == [{"d": None, "ok": None}], sql
