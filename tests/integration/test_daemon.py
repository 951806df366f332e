"""fqdb-server as a real subprocess with real client processes and real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastquartdb import AsyncDatabaseManager, IntegrityError, TransactionTimeoutError
from fastquartdb.protocol import default_socket_path
from tests.helpers import DaemonProcess, daemon_in_process, integrity, table_keys
from tests.integration.load_client import Event


@pytest.fixture
def daemon(db_path: str):
    proc = DaemonProcess(db_path).start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


def _stats(socket_path: str, db: str) -> dict:
    async def ask() -> dict:
        from fastquartdb.client.connection import SocketTransport

        transport = await SocketTransport.connect(socket_path, db)
        try:
            return await transport.request({"op": "stats"})
        finally:
            await transport.close()

    return asyncio.run(ask())


def test_four_processes_sixteen_tasks(daemon: DaemonProcess, db_path: str, clients) -> None:
    procs = [
        clients("insert", db_path, "--tasks", "16", "--rows", "40", "--prefix", f"w{i}")
        for i in range(4)
    ]
    reports = [p.report() for p in procs]
    stats = _stats(daemon.socket, db_path)
    assert all(r["failures"] == {} for r in reports), reports
    assert all(r["modes"] == ["daemon"] for r in reports)
    keys = table_keys(db_path)
    assert len(keys) == 4 * 16 * 40 == len(set(keys))
    assert stats["errors"] == 0
    assert stats["batch_max"] > 1, stats
    assert stats["batch_mean"] > 1.0, stats
    assert daemon.stop() == 0
    assert integrity(db_path) == "ok"


def test_mixed_daemon_and_embedded_filelock(daemon: DaemonProcess, db_path: str, clients) -> None:
    procs = [
        clients("insert", db_path, "--tasks", "8", "--rows", "40", "--prefix", "d1"),
        clients("insert", db_path, "--tasks", "8", "--rows", "40", "--prefix", "d2"),
        clients(
            "insert",
            db_path,
            "--mode",
            "embedded",
            "--filelock",
            "--tasks",
            "8",
            "--rows",
            "40",
            "--prefix",
            "e1",
        ),
    ]
    reports = [p.report() for p in procs]
    assert [r["modes"] for r in reports] == [["daemon"], ["daemon"], ["embedded"]]
    assert all(r["failures"] == {} for r in reports), reports
    assert daemon.stop() == 0
    keys = table_keys(db_path)
    assert len(keys) == 3 * 8 * 40 == len(set(keys))
    assert integrity(db_path) == "ok"


def test_sigterm_with_requests_in_flight(daemon: DaemonProcess, db_path: str, clients) -> None:
    procs = [
        clients(
            "insert",
            db_path,
            "--tasks",
            "16",
            "--rows",
            "100000",
            "--seconds",
            "20",
            "--prefix",
            f"t{i}",
            "--stop-on-error",
        )
        for i in range(2)
    ]
    _wait_for_clients(daemon, db_path, 2)
    _wait_for_rows(db_path, 500)
    assert daemon.stop() == 0
    reports = [p.report() for p in procs]
    acked = [k for r in reports for k in r["acked"]]
    keys = set(table_keys(db_path))
    assert acked and set(acked) <= keys
    # The rest failed cleanly: the connection was lost, or the daemon said it was stopping.
    for report in reports:
        assert set(report["failures"]) <= {
            "ConnectionLostError",
            "DaemonUnavailableError",
            "OperationalError",
        }
        assert sum(report["failures"].values()) >= 1
    assert not os.path.exists(daemon.socket)
    assert integrity(db_path) == "ok"


def _count_rows(db: str) -> int:
    import sqlite3

    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute("SELECT count(*) FROM event").fetchone()[0])


def _wait_for_clients(daemon: DaemonProcess, db: str, count: int, timeout: float = 30.0) -> None:
    # Each client counts itself once it has said hello; the probe adds one.
    deadline = time.monotonic() + timeout
    while _stats(daemon.socket, db)["clients"] < count + 1:
        assert time.monotonic() < deadline, f"fewer than {count} clients connected"
        time.sleep(0.05)


def _wait_for_rows(db: str, count: int, timeout: float = 30.0) -> None:
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                if conn.execute("SELECT count(*) FROM event").fetchone()[0] >= count:
                    return
        except sqlite3.OperationalError:
            pass  # table not created yet
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} rows after {timeout} s")


def test_second_daemon_is_refused(daemon: DaemonProcess, db_path: str) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "fastquartdb.server", db_path],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "already serves this database" in second.stderr
    assert f"pid {daemon.pid}" in second.stderr
    # The first one is unharmed.
    assert _stats(daemon.socket, db_path)["pid"] == daemon.pid


def test_stale_socket_is_replaced(db_path: str) -> None:
    first = DaemonProcess(db_path).start()
    first.kill()
    assert stat.S_ISSOCK(os.lstat(first.socket).st_mode)
    second = DaemonProcess(db_path).start()
    try:
        assert _stats(second.socket, db_path)["pid"] == second.pid
    finally:
        assert second.stop() == 0


def test_socket_is_0600_whatever_the_umask(db_path: str) -> None:
    old = os.umask(0)
    try:
        proc = DaemonProcess(db_path).start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(proc.socket).st_mode) == 0o600
    finally:
        assert proc.stop() == 0


def test_long_database_path_uses_the_fallback_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)  # fqdb-server creates the file, never its directory
    db = str(deep / "app.db")
    expected = default_socket_path(db)
    assert not expected.startswith(str(deep))
    proc = DaemonProcess(db).start()
    try:
        assert proc.socket == expected

        async def use() -> int:
            await AsyncDatabaseManager.init_engine(db, mode="daemon")
            await Event.insert({"key": "long", "worker": "x"})
            count = await Event.count()
            await AsyncDatabaseManager.close()
            return count

        assert asyncio.run(use()) == 1
    finally:
        assert proc.stop() == 0
    assert not os.path.exists(expected)


async def test_one_failing_request_does_not_sink_its_batch(db_path: str) -> None:
    async with daemon_in_process(db_path) as daemon:
        await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Event.insert({"key": "dup", "worker": "x"})
        keys = [f"k{i}" for i in range(60)]
        keys[30] = "dup"
        results = await asyncio.gather(
            *(Event.insert({"key": k, "worker": "x"}) for k in keys), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], IntegrityError)
        assert await Event.count() == 60  # "dup" once + 59 new
        assert daemon.worker.stats.batch_max >= 30, "the inserts should share batches"
        await AsyncDatabaseManager.close()


async def test_transaction_deadline_rolls_back(db_path: str) -> None:
    async with daemon_in_process(db_path, transaction_timeout=0.5):
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Event.count()
        with pytest.raises(TransactionTimeoutError):
            async with db.transaction():
                await Event.insert({"key": "slow", "worker": "x"})
                await asyncio.sleep(1.0)
                await Event.insert({"key": "slow2", "worker": "x"})
        # Others were not blocked for good, and nothing of the transaction remains.
        await Event.insert({"key": "after", "worker": "y"})
        assert [r["key"] for r in await Event.fetch()] == ["after"]
        await AsyncDatabaseManager.close()


async def test_idle_transaction_rolls_back(db_path: str) -> None:
    async with daemon_in_process(db_path, transaction_timeout=60, transaction_idle_timeout=0.3):
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        await Event.count()
        async with db.transaction():
            await Event.insert({"key": "busy", "worker": "x"})
            for _ in range(4):  # active: each call within the idle timeout
                await asyncio.sleep(0.1)
                await Event.count()
        with pytest.raises(TransactionTimeoutError, match="idle"):
            async with db.transaction():
                await Event.insert({"key": "idle", "worker": "x"})
                await asyncio.sleep(0.8)
                await Event.count()
        assert [r["key"] for r in await Event.fetch()] == ["busy"]
        await AsyncDatabaseManager.close()


def test_client_killed_in_transaction_is_rolled_back(
    daemon: DaemonProcess, db_path: str, clients
) -> None:
    holder = clients("hold", db_path, "--prefix", "h")
    assert holder.proc.stdout is not None
    assert holder.proc.stdout.readline().strip() == "in-transaction"
    assert _stats(daemon.socket, db_path)["holder"] is True
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    killed = time.monotonic()
    while _stats(daemon.socket, db_path)["holder"]:
        assert time.monotonic() - killed < 1.0, "the daemon kept the dead client's transaction"
        time.sleep(0.01)
    rolled_back = time.monotonic() - killed
    started = time.monotonic()
    writer = clients("insert", db_path, "--tasks", "1", "--rows", "1", "--prefix", "after")
    report = writer.report(timeout=30)
    assert report["failures"] == {}
    assert time.monotonic() - started < 5.0  # includes the client's interpreter start-up
    assert table_keys(db_path) == ["after-0-0"]
    assert _stats(daemon.socket, db_path)["holder"] is False
    print(
        f"RELIABILITY F4: killed holder's transaction rolled back {rolled_back * 1000:.0f} ms after the kill"
    )


def test_python_dash_m_and_console_script_agree() -> None:
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "fqdb-server"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "--transaction-timeout" in out.stdout
    probe = socket.socket(socket.AF_UNIX)
    probe.close()


async def test_a_transaction_is_never_held_behind_its_process_parked_reads(db_path: str) -> None:
    """Large-reply requests are bounded per connection; those of other tasks parked behind
    this process's own transaction must not hold up the transaction's next request (before:
    it waited behind them until the idle timeout rolled the transaction back)."""
    async with daemon_in_process(db_path, max_unsent=65536, transaction_idle_timeout=3.0):
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon", readers=0)
        await Event.insert({"key": "big", "worker": "x" * 100_000})
        await Event.fetch()  # a reply larger than --max-unsent: one large reply at a time now
        go = asyncio.Event()

        async def other() -> int:  # started outside the transaction: not part of it
            await go.wait()
            return await Event.count()

        others = [asyncio.ensure_future(other()) for _ in range(6)]
        began = time.monotonic()
        async with db.transaction():
            await Event.insert({"key": "in-txn", "worker": "a"})
            go.set()
            await asyncio.sleep(0.1)  # their counts reach the daemon, parked behind us
            await Event.insert({"key": "in-txn-2", "worker": "a"})
        held = time.monotonic() - began
        assert held < 2.0, f"the transaction waited {held:.1f} s behind parked reads"
        assert await asyncio.gather(*others) == [3] * 6
        await AsyncDatabaseManager.close()
