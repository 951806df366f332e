"""Faults with real processes and real signals: nothing acknowledged is lost.

Every write carries a unique key and each client reports which writes were
acknowledged. After each run: every acknowledged key is present exactly
once, no key is present twice, and ``PRAGMA integrity_check`` is ok.
(F1 and F2, kill -9 and SIGSTOP under a 4-process load, are in
``test_exactly_once.py``; F4, a client killed inside a transaction, is
``tests/integration/test_daemon.py::test_client_killed_in_transaction_is_rolled_back``.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from fastquartdb import AsyncDatabaseManager, OperationalError
from fastquartdb.client.connection import SocketTransport
from tests.helpers import DaemonProcess, event_rows, integrity, table_keys, wait_until
from tests.integration.load_client import Event


def _check_exactly_once(db: str, reports: list[dict]) -> list[str]:
    keys = table_keys(db)
    assert len(keys) == len(set(keys)), "a key is present twice"
    acked = [k for r in reports for k in r["acked"]]
    assert len(acked) == len(set(acked))
    missing = set(acked) - set(keys)
    assert not missing, f"{len(missing)} acknowledged writes lost"
    assert integrity(db) == "ok"
    return acked


@pytest.fixture
def daemon(db_path: str):
    proc = DaemonProcess(db_path).start()
    yield proc
    proc.kill()


def test_daemon_gone_fallback_embedded_and_back(db_path: str, clients) -> None:
    """F3: daemon stopped -> clients run embedded -> daemon back -> clients return to it."""
    first = DaemonProcess(db_path).start()
    procs = [
        clients(
            "insert",
            db_path,
            "--mode",
            "auto",
            "--tasks",
            "4",
            "--rows",
            "100000",
            "--seconds",
            "9",
            "--prefix",
            f"f{i}",
        )
        for i in range(2)
    ]
    try:
        wait_until(lambda: first.stats()["clients"] >= 3, what="clients")
        wait_until(lambda: event_rows(db_path) >= 200, what="rows on the daemon")
        assert first.stop() == 0
        stopped_at = event_rows(db_path)
        # The clients keep writing, embedded, while no daemon runs.
        wait_until(
            lambda: event_rows(db_path) >= stopped_at + 200, timeout=20, what="embedded writes"
        )
        second = DaemonProcess(db_path).start()
        try:
            wait_until(lambda: second.stats()["clients"] >= 3, timeout=20, what="clients to return")
            served = second.stats()["requests"]
            wait_until(
                lambda: second.stats()["requests"] > served + 100, what="writes via the daemon"
            )
            reports = [p.report() for p in procs]
            assert second.stop() == 0
        finally:
            second.kill()
    finally:
        first.kill()
    for report in reports:
        assert report["transitions"] == ["daemon", "embedded", "daemon"], report["transitions"]
        assert set(report["failures"]) <= {"ConnectionLostError"}, report["failures"]
    acked = _check_exactly_once(db_path, reports)
    print(
        f"RELIABILITY F3: acknowledged {len(acked)} across daemon -> embedded -> daemon, "
        "lost 0, duplicated 0"
    )


def test_many_connections_bounded_memory(daemon: DaemonProcess, db_path: str) -> None:
    """F7: 500 connections, 10,000 requests in flight: all answered, memory bounded."""

    async def load() -> list[object]:
        await AsyncDatabaseManager.init_engine(db_path, mode="daemon", socket=daemon.socket)
        await Event.count()  # creates the table
        await AsyncDatabaseManager.close()
        transports = await asyncio.gather(
            *(SocketTransport.connect(daemon.socket, db_path) for _ in range(500))
        )
        try:
            return await asyncio.gather(
                *(
                    t.request(
                        {
                            "op": "insert",
                            "table": "event",
                            "values": {"key": f"c{c}-{n}", "worker": "m"},
                        }
                    )
                    for c, t in enumerate(transports)
                    for n in range(20)
                ),
                return_exceptions=True,
            )
        finally:
            await asyncio.gather(*(t.close() for t in transports))

    results = asyncio.run(load())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert len(results) == 10_000
    assert event_rows(db_path) == 10_000
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    stats = daemon.stats()
    assert stats["errors"] == 0 and stats["clients"] == 1
    assert peak_kb < 64 * 1024, f"daemon peak RSS {peak_kb} kB (bound: 64 MB)"
    print(
        f"RELIABILITY F7: 500 connections, 10,000 requests in flight, all answered; "
        f"daemon peak RSS {peak_kb / 1024:.1f} MB (bound asserted: 64 MB)"
    )
    assert daemon.stop() == 0


def test_sigterm_with_a_full_queue_answers_everything(db_path: str) -> None:
    """F8: SIGTERM while thousands of requests wait: each is answered before exit."""
    proc = DaemonProcess(db_path, "--max-batch", "1").start()
    try:

        async def load() -> list[object]:
            await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
            await Event.count()
            await AsyncDatabaseManager.close()
            writer = await SocketTransport.connect(proc.socket, db_path)
            watcher = await SocketTransport.connect(proc.socket, db_path)
            pending = [
                asyncio.ensure_future(
                    writer.request(
                        {
                            "op": "insert",
                            "table": "event",
                            "values": {"key": f"q{n}", "worker": "q"},
                        }
                    )
                )
                for n in range(4000)
            ]
            while (await watcher.request({"op": "stats"}))["queue_depth"] < 500:
                await asyncio.sleep(0.005)
            proc.signal(signal.SIGTERM)
            results = await asyncio.gather(*pending, return_exceptions=True)
            await writer.close()
            await watcher.close()
            return results

        results = asyncio.run(load())
        assert proc.proc is not None and proc.proc.wait(30) == 0
    finally:
        proc.kill()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} queued requests were not answered: {errors[:3]}"
    assert event_rows(db_path) == 4000
    print("RELIABILITY F8: SIGTERM with >= 500 queued: 4000 of 4000 answered and committed")
    assert not os.path.exists(proc.socket)
    assert integrity(db_path) == "ok"


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a size-limited tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_a_clear_error_and_recovers(small_disk: Path) -> None:
    """F6: the disk fills: OperationalError, reads still served, writes work once space is back."""
    db = str(small_disk / "full.db")
    proc = DaemonProcess(db).start()
    try:

        async def scenario() -> tuple[int, int, str]:
            await AsyncDatabaseManager.init_engine(db, mode="daemon")
            blob = os.urandom(32 * 1024)
            written = 0
            with pytest.raises(OperationalError) as failure:
                for n in range(1000):
                    await Event.insert({"key": f"big{n}", "worker": blob.hex()[:20000]})
                    written += 1
            message = str(failure.value)
            # Reads are still served, and see exactly what was acknowledged.
            assert await Event.count() == written
            grow = subprocess.run(
                ["mount", "-o", "remount,size=64m", str(small_disk)], capture_output=True
            )
            assert grow.returncode == 0, grow.stderr
            await Event.insert({"key": "after", "worker": "x"})
            count = await Event.count()
            await AsyncDatabaseManager.close()
            return written, count, message

        written, count, message = asyncio.run(scenario())
        assert "full" in message.lower()
        assert written > 10 and count == written + 1
        print(
            f"RELIABILITY F6: {written} rows fit the 3 MB disk, then OperationalError "
            f"({message}); reads served; writes resumed after growing the disk"
        )
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert integrity(db) == "ok"
