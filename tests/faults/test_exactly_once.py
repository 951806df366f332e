"""Exactly-once writes under faults: real daemon processes, real signals, 4 x 16 writers.

Rows go into ``load_note``, whose payload is *not* unique: a write run twice would show as
two rows (a unique column would turn it into an IntegrityError instead, and hide it).
Every write must be acknowledged exactly once, none lost, none run twice, and no
error may reach the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections import Counter

from fastquartdb.client.keys import ACK_EVERY
from tests.helpers import DaemonProcess, integrity, wait_until


def _payloads(db: str) -> Counter[str]:
    with sqlite3.connect(db, timeout=10) as conn:
        return Counter(row[0] for row in conn.execute("SELECT payload FROM load_note"))


def _note_rows(db: str) -> int:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM load_note").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _wait_for_all(daemon: DaemonProcess, count: int) -> None:
    # Every client connected (the stats probe itself is one more), so the fault hits all.
    wait_until(lambda: daemon.stats()["clients"] >= count + 1, what=f"{count} clients")


def _load(clients, db: str, *extra: str, procs: int = 4, seconds: float = 3.0) -> list:
    # Each task writes for ``seconds``, so every client is still writing when the fault
    # comes (a row count would let a fast client finish first on a loaded machine).
    return [
        clients(
            "insert",
            db,
            "--model",
            "note",
            "--tasks",
            "16",
            "--rows",
            "1000000",
            "--seconds",
            str(seconds),
            "--prefix",
            f"x{i}",
            *extra,
        )
        for i in range(procs)
    ]


def _check(db: str, reports: list[dict]) -> tuple[int, int]:
    """Assert exactly once; return (acknowledged, resent)."""
    for report in reports:
        assert report["failures"] == {}, report["messages"]
    acked = [k for r in reports for k in r["acked"]]
    assert len(acked) == len(set(acked)), "a write was acknowledged twice"
    # No failures: every write a task began was acknowledged, so each task's numbers run
    # from 0 without a gap.
    per_task: dict[str, list[int]] = {}
    for key in acked:
        task, _, n = key.rpartition("-")
        per_task.setdefault(task, []).append(int(n))
    for task, numbers in per_task.items():
        assert sorted(numbers) == list(range(len(numbers))), f"{task}: a write is missing"
    payloads = _payloads(db)
    duplicated = {k: n for k, n in payloads.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} writes ran twice, e.g. {next(iter(duplicated))}"
    lost = set(acked) - set(payloads)
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert set(payloads) == set(acked)
    assert integrity(db) == "ok"
    return len(acked), sum(r["resent"] for r in reports)


def test_kill9_restarted_after_half_a_second(db_path: str, clients) -> None:
    """kill -9 under 4 x 16 inserts, restart after 0.5 s: nothing lost, nothing twice, no error."""
    daemon = DaemonProcess(db_path).start()
    try:
        procs = _load(clients, db_path)
        _wait_for_all(daemon, 4)
        wait_until(lambda: _note_rows(db_path) >= 800, what="rows before the kill")
        daemon.kill()
        assert os.path.exists(daemon.socket)  # left behind: the restart must replace it
        time.sleep(0.5)
        daemon = DaemonProcess(db_path).start()
        reports = [p.report() for p in procs]
        stats = daemon.stats()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    acked, resent = _check(db_path, reports)
    assert resent > 0, "the kill caught no write in flight: the test proved nothing"
    # The records stay bounded: each client acks what it no longer waits for.
    with sqlite3.connect(db_path) as conn:
        records = conn.execute("SELECT count(*) FROM _fqdb_requests").fetchone()[0]
    assert records <= 4 * (ACK_EVERY + 16) * 2, f"{records} records kept for {acked} writes"
    keys = stats["request_keys"]
    print(
        f"RELIABILITY F1: acknowledged {acked}, errors to the application 0, lost 0, "
        f"duplicated 0; resent {resent}, answered from their record "
        f"{keys['deduplicated']}; {records} key records left (kill -9, restart after 0.5 s)"
    )


def test_kill9_not_restarted_falls_back_and_resends(db_path: str, clients) -> None:
    """kill -9, no restart: the clients resend to embedded mode; nothing lost, nothing twice."""
    daemon = DaemonProcess(db_path).start()
    try:
        procs = _load(clients, db_path, "--mode", "auto", seconds=4.0)
        _wait_for_all(daemon, 4)
        wait_until(lambda: _note_rows(db_path) >= 800, what="rows before the kill")
        daemon.kill()
        reports = [p.report() for p in procs]
    finally:
        daemon.kill()
    acked, resent = _check(db_path, reports)
    assert resent > 0, "the kill caught no write in flight: the test proved nothing"
    for report in reports:
        # No daemon after the kill: every client ends embedded (on a loaded machine one
        # may even have started there, its hello too slow).
        assert report["transitions"][-1] == "embedded", report["transitions"]
    print(
        f"RELIABILITY F3: acknowledged {acked}, errors to the application 0, lost 0, "
        f"duplicated 0; resent {resent} to embedded mode (kill -9, no restart)"
    )


def _stopped_for(
    db: str, clients, stop: float, *extra: str, seconds: float = 3.0
) -> tuple[list[dict], dict]:
    """2 x 16 writers; the daemon SIGSTOPped for ``stop`` seconds, then SIGCONT: the
    writers' reports and the daemon's stats once they are done."""
    daemon = DaemonProcess(db).start()
    try:
        procs = _load(clients, db, *extra, procs=2, seconds=seconds)
        _wait_for_all(daemon, 2)
        wait_until(lambda: _note_rows(db) >= 300, what="rows before the stop")
        daemon.signal(signal.SIGSTOP)
        time.sleep(stop)
        daemon.signal(signal.SIGCONT)
        reports = [p.report() for p in procs]
        stats = daemon.stats()
        assert daemon.stop() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            daemon.signal(signal.SIGCONT)
        daemon.kill()
    return reports, stats


def test_sigstop_past_request_timeout_then_sigcont(db_path: str, clients) -> None:
    """SIGSTOP past request_timeout, then SIGCONT: timed-out writes are resent, none runs twice."""
    reports, stats = _stopped_for(db_path, clients, 1.5, "--request-timeout", "0.5")
    acked, resent = _check(db_path, reports)
    assert resent > 0, "no request timed out: the test proved nothing"
    # Each resend reached this daemon: answered from the record its first send left, or
    # run (the first send's connection was given up, so that copy was not run).
    keys = stats["request_keys"]
    assert keys["resent"] == resent and keys["deduplicated"] <= resent, keys
    print(
        f"RELIABILITY F2: acknowledged {acked}, errors to the application 0, lost 0, "
        f"duplicated 0; resent {resent} after the 0.5 s timeout, answered from their record "
        f"{keys['deduplicated']} (SIGSTOP 1.5 s)"
    )


def test_sigstop_past_the_reconnect_window_in_auto_mode(db_path: str, clients) -> None:
    """SIGSTOP longer than the reconnect window, mode="auto": the clients resend their writes
    to embedded mode and go on there; when the daemon resumes, the copies it still holds must
    not run again (they once did, after the clients' acks had pruned their records)."""
    extra = ("--mode", "auto", "--request-timeout", "0.5", "--connect-timeout", "0.3")
    reports, _ = _stopped_for(db_path, clients, 3.0, *extra, seconds=5.5)
    acked, resent = _check(db_path, reports)
    assert resent > 0, "no request timed out: the test proved nothing"
    print(
        f"RELIABILITY F2b: acknowledged {acked}, errors to the application 0, lost 0, "
        f"duplicated 0; resent {resent}, to embedded mode or the resumed daemon (SIGSTOP 3 s, "
        "mode auto)"
    )


def test_no_writer_within_the_window_says_the_write_is_not_resent(db_path: str) -> None:
    """mode="daemon", the daemon killed with a write in flight and not restarted: the one
    error left says the write will not be resent (and here it never ran)."""
    from fastquartdb import AsyncDatabaseManager, ConnectionLostError
    from tests.integration.load_client import Note

    daemon = DaemonProcess(db_path).start()

    async def scenario() -> str:
        await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        try:
            await Note.insert({"payload": "first", "worker": "t"})
            daemon.signal(signal.SIGSTOP)  # it will never read what comes next
            pending = asyncio.ensure_future(Note.insert({"payload": "stuck", "worker": "t"}))
            await asyncio.sleep(0.2)
            daemon.kill()
            try:
                await pending
            except ConnectionLostError as exc:
                return str(exc)
            raise AssertionError("the write succeeded with no writer anywhere")
        finally:
            await AsyncDatabaseManager.close()

    try:
        message = asyncio.run(scenario())
    finally:
        daemon.kill()
    assert "will not be resent" in message, message
    assert "no writer could be reached" in message, message
    assert sorted(_payloads(db_path)) == ["first"]
