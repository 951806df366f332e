"""Local reads (issue 18): every process reads the file on its own read-only connections.

Real daemon processes and real client processes where the guarantee crosses
processes: read-your-writes under load, no checkpoint by a reader even as the
last connection, schema changes seen without restart, the fallback to the
writer, the per-client counts in the daemon's stats.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, ProgrammingError, ValidationError
from fastquartdb.engine.readers import open_reader
from fastquartdb.protocol.errors import OperationalError
from tests.helpers import ROOT, DaemonProcess, daemon_in_process

pytestmark = pytest.mark.slow


class Note(BaseModel):
    # Its own table name: models register by table, and other suites use "note" too.
    __tablename__ = "lr_note"
    id = Column("INTEGER", primary_key=True)
    body = Column("TEXT")


def _client(
    action: str, db: str, out: Path, *args: str, stdin: Any = None
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.integration.reads_client", action, "--db", db]
    return subprocess.Popen(
        [*cmd, "--out", str(out), *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("mode", ["daemon", "embedded"])
def test_read_your_writes_across_processes_under_load(
    mode: str, db_path: str, tmp_path: Path, clients: Any
) -> None:
    daemon = DaemonProcess(db_path).start() if mode == "daemon" else None
    try:
        # Writers competing for the file meanwhile, so acknowledgements come out of busy batches.
        load = [
            clients(
                "insert",
                db_path,
                "--mode",
                mode,
                "--tasks",
                "8",
                "--seconds",
                "3",
                "--prefix",
                f"load{i}",
            )
            for i in range(2)
        ]
        chaser = _client("chase", db_path, tmp_path / "chase.json", "--mode", mode, "--rows", "150")
        follower = _client(
            "follow", db_path, tmp_path / "follow.json", "--mode", mode, stdin=chaser.stdout
        )
        assert chaser.stdout is not None
        chaser.stdout.close()  # the follower holds it now
        _, chase_err = chaser.communicate(timeout=90)
        _, follow_err = follower.communicate(timeout=90)
        assert chaser.returncode == 0, chase_err
        assert follower.returncode == 0, follow_err
        for client in load:
            client.report()
    finally:
        if daemon is not None:
            assert daemon.stop() == 0
    chased = json.loads((tmp_path / "chase.json").read_text())
    followed = json.loads((tmp_path / "follow.json").read_text())
    assert chased["mode"] == followed["mode"] == mode
    # The chaser reads its own write right after the ack; the follower reads after the chaser
    # printed the value, i.e. after the ack: neither may ever see an older value.
    assert chased["stale"] == [] and chased["checked"] == 150
    assert followed["stale"] == [] and followed["checked"] == 150
    # And those reads ran locally, both kinds: none went to the writer.
    assert followed["reads"]["local"] == 300 and followed["reads"]["writer"] == 0
    assert followed["reads"]["local_inline"] == 150
    assert chased["reads"]["local"] == 150


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def test_a_reader_never_checkpoints_even_as_the_last_connection(db_path: str) -> None:
    daemon = DaemonProcess(db_path).start()
    try:
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        for i in range(50):
            await Note.insert({"body": f"n{i}"})
        assert await Note.count() == 50
        assert len(await Note.fetch(filters={"id": [(">", 10)]})) == 40
        assert db.router.reads_local == 2
    finally:
        daemon.kill()  # no final checkpoint by the daemon: the WAL holds every row
    wal = db_path + "-wal"
    before = (_digest(db_path), os.path.getsize(wal))
    assert before[1] > 0
    # Reads go on without the daemon (the file is right here), and the readers are now
    # the last connections: closing them must leave the file and the WAL as they are.
    assert await Note.count() == 50
    await AsyncDatabaseManager.close()
    assert os.path.exists(wal), "the last local reader deleted the WAL (a checkpoint)"
    assert (_digest(db_path), os.path.getsize(wal)) == before


async def test_no_snapshot_is_held_between_reads(db_path: str) -> None:
    async with daemon_in_process(db_path):
        await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Note.insert_many([{"body": f"n{i}"} for i in range(300)])
        for _ in range(5):
            assert await Note.count() == 300
            assert len(await Note.fetch(filters={"id": [("BETWEEN", (1, 100))]})) == 100
            assert await Note.get(7) is not None
            # Between two awaits of this task nothing may pin the WAL: a full checkpoint
            # that waits for every reader succeeds at once.
            with sqlite3.connect(db_path, timeout=0) as other:
                busy, _log, _done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
            await Note.update({"body": "x"}, {"id": 1})


async def test_schema_changes_by_the_writer_are_seen_at_once(db_path: str) -> None:
    async with daemon_in_process(db_path):
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Note.insert({"body": "a"})
        assert await Note.fetch() == [{"id": 1, "body": "a"}]  # the readers cached the shape
        for step in range(3):
            # The writer changes the schema (raw SQL runs there); the very next local read,
            # with no pause, shows the new column and the new table.
            await db.execute(f"ALTER TABLE lr_note ADD COLUMN extra{step} TEXT")
            await db.execute(f"CREATE TABLE side{step} (v INTEGER)")
            await db.execute(f"INSERT INTO side{step} VALUES (?)", [step])
            rows = await db.fetch_all("SELECT * FROM lr_note")
            assert f"extra{step}" in rows[0]
            count = await db.router.request({"op": "count", "table": "lr_note"})
            assert count == 1
            fetched = await db.router.request({"op": "fetch", "table": "lr_note"})
            assert fetched["columns"][-1] == f"extra{step}"
            assert await db.fetch_all(f"SELECT v FROM side{step}") == [{"v": step}]
        assert db.router.reads_writer == 0 and db.router.reads_local >= 9


async def test_schema_changes_by_another_client_are_seen_without_restart(db_path: str) -> None:
    from fastquartdb.client.connection import SocketTransport

    async with daemon_in_process(db_path) as daemon:
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Note.insert({"body": "a"})
        assert (await db.router.request({"op": "fetch", "table": "lr_note"}))["columns"] == [
            "id",
            "body",
        ]
        # Another client (another process, as far as this one knows) changes the schema.
        other = await SocketTransport.connect(daemon.config.socket or "", db_path)
        try:
            await other.request(
                {"op": "execute", "sql": "ALTER TABLE lr_note ADD COLUMN extra TEXT"}
            )
            await other.request({"op": "execute", "sql": "UPDATE lr_note SET extra = 'x'"})
        finally:
            await other.close()
        # A read naming the new column works at once (the engine looks again and retries) ...
        named = {"op": "fetch", "table": "lr_note", "columns": ["extra"]}
        assert [list(r) for r in (await db.router.request(named))["rows"]] == [["x"]]
        # ... and every reader's column list follows within the check interval, no restart.
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        while True:
            for _ in range(4):  # reach the inline engine and both reader threads
                result = await db.router.request({"op": "fetch", "table": "lr_note"})
                point = await db.router.request(
                    {"op": "fetch", "table": "lr_note", "where": [[["id", "=", 1]]]}
                )
            if result["columns"] == point["columns"] == ["id", "body", "extra"]:
                break
            assert loop.time() < end, (result, point)
            await asyncio.sleep(0.02)
        assert db.router.reads_writer == 0


async def test_raw_reads_keep_the_refusals_and_writes_go_to_the_writer(db_path: str) -> None:
    async with daemon_in_process(db_path):
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Note.insert({"body": "a"})
        with pytest.raises(ValidationError, match="refused: PRAGMA journal_mode"):
            await db.fetch_all("PRAGMA journal_mode = DELETE")
        with pytest.raises(ValidationError, match="refused: ATTACH"):
            await db.fetch_all("ATTACH DATABASE ':memory:' AS other")
        assert db.router.reads_writer == 0  # refused where they ran: locally
        # A raw statement that writes is refused by the read-only connection and runs on the
        # writer instead, with its rows.
        rows = await db.fetch_all("INSERT INTO lr_note (body) VALUES ('b') RETURNING id")
        assert rows == [{"id": 2}]
        assert db.router.reads_writer == 1
        assert await db.fetch_one("SELECT body FROM lr_note WHERE id = 2") == {"body": "b"}


async def test_raw_sql_off_on_the_daemon_is_off_for_local_readers(db_path: str) -> None:
    async with daemon_in_process(db_path, raw_sql=False):
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        with pytest.raises(ProgrammingError, match="raw SQL is disabled"):
            await db.fetch_all("SELECT 1")
        assert db.router.reads_local == 1


async def test_no_local_reads_flag_sends_reads_to_the_daemon_with_one_log_line(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastquartdb.client")
    async with daemon_in_process(db_path, local_reads=False) as daemon:
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Note.insert({"body": "a"})
        assert await Note.get(1) is not None
        assert await Note.count() == 1
        stats = await db.stats()
        assert stats["reads"]["local_reads"] is False
        assert stats["reads"]["writer"] == 2 and stats["reads"]["local"] == 0
        assert daemon.hello()["local_reads"] is False
    lines = [r.getMessage() for r in caplog.records if "local reads off" in r.getMessage()]
    assert len(lines) == 1 and "--no-local-reads" in lines[0]


async def test_readers_zero_and_memory_databases_read_on_the_writer(db_path: str) -> None:
    db = await AsyncDatabaseManager.init_engine(db_path, mode="embedded", readers=0)
    await Note.insert({"body": "a"})
    assert await Note.count() == 1
    assert db.router.stats()["why_not"] == "readers=0" and db.router.reads_writer == 1
    await AsyncDatabaseManager.close()
    db = await AsyncDatabaseManager.init_engine(":memory:")
    await Note.insert({"body": "a"})
    assert await Note.count() == 1
    assert "in-memory" in (db.router.why_not or "")
    await AsyncDatabaseManager.close()
    with pytest.raises(ValidationError, match="readers"):
        await AsyncDatabaseManager.init_engine(db_path, readers=-1)


def test_a_file_that_cannot_be_read_here_is_refused_with_the_reason(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    with pytest.raises(OperationalError, match=r"missing\.db"):
        open_reader(missing)
    rollback = str(tmp_path / "rollback.db")
    with sqlite3.connect(rollback) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(OperationalError, match="not WAL"):
        open_reader(rollback)


async def test_daemon_stats_show_each_clients_local_and_writer_reads(db_path: str) -> None:
    async with daemon_in_process(db_path) as daemon:
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Note.insert({"body": "a"})
        for _ in range(5):
            await Note.get(1)
        async with db.transaction():
            await Note.count()  # inside a transaction: the writer's

        def reported() -> bool:
            mine = [c for c in daemon.stats()["per_client"] if c["pid"] == os.getpid()]
            return bool(mine) and mine[0]["reads_local"] == 5 and mine[0]["reads_writer"] == 1

        # The client reports its counts about once a second; the daemon lists them.
        loop = asyncio.get_running_loop()
        end = loop.time() + 10.0
        while not reported():
            assert loop.time() < end, daemon.stats()["per_client"]
            await asyncio.sleep(0.05)
        # fqdb stats shows the same (it does not list itself).
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "fqdb"), "stats", db_path, "--json",
            "--interval", "0.1", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
        listed = json.loads(out)["per_client"]
        assert [(c["pid"], c["reads_local"], c["reads_writer"]) for c in listed] == [
            (os.getpid(), 5, 1)
        ]


def test_reader_threads_never_keep_the_process_alive(db_path: str, tmp_path: Path) -> None:
    daemon = DaemonProcess(db_path).start()
    try:
        script = textwrap.dedent(
            f"""
            import asyncio
            from fastquartdb import AsyncDatabaseManager, BaseModel, Column

            class Note(BaseModel):
                id = Column("INTEGER", primary_key=True)
                body = Column("TEXT")

            async def main():
                db = await AsyncDatabaseManager.init_engine({db_path!r}, mode="daemon")
                await Note.insert({{"body": "a"}})
                await Note.fetch(filters={{"id": [(">", 0)]}})
                assert db.router.reads_local == 1
                # no close(): the process must still end on its own

            asyncio.run(main())
            print("done")
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "done"
    finally:
        assert daemon.stop() == 0


async def test_inline_point_reads_let_other_tasks_run(db_path: str) -> None:
    db = await AsyncDatabaseManager.init_engine(db_path, mode="embedded")
    await Note.insert({"body": "a"})
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = turns
    for _ in range(160):
        assert await Note.get(1) is not None  # inline: no await of its own
    during = turns - before
    done = True
    await task
    assert db.router.reads_inline >= 160
    # The reading task yielded to the loop every 16 inline reads.
    assert during >= 160 // 16 - 1, during
