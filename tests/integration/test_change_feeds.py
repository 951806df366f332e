"""Change feeds with real processes: writers, consumers, a daemon killed with SIGKILL.

Each consumer must see exactly the committed changes, in seq order, with no gap and no
duplicate, whatever is killed meanwhile; the reference is the change log in the file,
and the writers' own account of what was acknowledged and what was rolled back.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager
from fastquartdb.protocol import encode_frame
from tests.helpers import ROOT, DaemonProcess, wait_until

WRITERS, TASKS, STEPS = 4, 16, 10


class Proc:
    """A feed_client process, stopped by pid at the end of the test."""

    def __init__(self, action: str, db: str, out: Path, *args: str) -> None:
        self.out = out
        cmd = [sys.executable, "-m", "tests.integration.feed_client", action, "--db", db]
        self.proc = subprocess.Popen(
            [*cmd, "--out", str(out), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait(self, timeout: float = 90) -> None:
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.communicate()


def lines(path: Path) -> list[list[Any]]:
    """The complete JSON lines of a consumer's output (a kill may cut the last one)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            out.append(json.loads(line))
    return out


def the_log(db: str) -> list[list[Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, op, json_extract(coalesce(row, old), '$.tag') FROM _fqdb_changes "
            "ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [list(r) for r in rows]


async def write_end(db: str) -> None:
    from tests.integration.feed_client import Event

    await AsyncDatabaseManager.init_engine(db)
    await Event.insert({"tag": "END"})
    await AsyncDatabaseManager.close()


def check_consumer(seen: list[list[Any]], log: list[list[Any]]) -> None:
    seqs = [s for s, _, _ in seen]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    assert seen == log  # every committed change, nothing else, nothing twice


def check_writers(reports: list[dict[str, Any]], log: list[list[Any]]) -> None:
    inserted = [tag for _, op, tag in log if op == "insert" and tag != "END"]
    committed = [tag for r in reports for tag in r["committed"]]
    assert sorted(inserted) == sorted(committed)  # each acknowledged insert once
    rolled = {tag for r in reports for tag in r["rolled_back"]}
    assert rolled and not rolled & {tag for _, _, tag in log}
    assert sum(1 for _, op, _ in log if op == "update") == sum(r["updates"] for r in reports)


def test_writers_consumers_and_kills_lose_nothing(db_path: str, tmp_path: Path) -> None:
    daemon = DaemonProcess(db_path).start()
    procs: list[Proc] = []
    try:
        outs = [tmp_path / f"consumer{i}.jsonl" for i in range(3)]
        for out in outs:
            procs.append(Proc("consume", db_path, out))
        wait_until(lambda: daemon.stats()["changes"]["subscribers"] == 3, what="3 subscribers")
        reports = [tmp_path / f"writer{i}.json" for i in range(WRITERS)]
        writers = [
            Proc(
                "write",
                db_path,
                reports[i],
                "--name",
                f"w{i}",
                "--tasks",
                str(TASKS),
                "--n",
                str(STEPS),
            )
            for i in range(WRITERS)
        ]
        procs += writers
        # One consumer killed mid-stream and started again from its last cursor.
        wait_until(lambda: len(lines(outs[0])) >= 40, what="consumer 0 under way")
        procs[0].kill()
        cursor = lines(outs[0])[-1][0]
        restarted_out = tmp_path / "consumer0-again.jsonl"
        procs.append(Proc("consume", db_path, restarted_out, "--after", str(cursor)))
        # The daemon killed mid-stream and started again: consumers resume on it.
        wait_until(lambda: len(lines(outs[1])) >= 120, what="consumers under way")
        assert any(w.proc.poll() is None for w in writers), "the kill must come mid-stream"
        daemon.kill()
        daemon = DaemonProcess(db_path).start()
        # Every consumer subscribes again on the new daemon (its feed notices the loss).
        restarted = daemon
        wait_until(lambda: restarted.stats()["changes"]["subscribers"] == 3, what="resubscribed")
        for writer in writers:
            writer.wait()
        asyncio.run(write_end(db_path))
        for proc in procs[1:3] + procs[-1:]:
            proc.wait(60)
        log = the_log(db_path)
        check_writers([json.loads(r.read_text()) for r in reports], log)
        check_consumer(lines(outs[1]), log)
        check_consumer(lines(outs[2]), log)
        check_consumer(lines(outs[0]) + lines(restarted_out), log)
        rolled = sum(len(json.loads(r.read_text())["rolled_back"]) for r in reports)
        print(
            f"RELIABILITY C1: {len(log)} changes in the log ({rolled} rolled-back inserts absent); "
            f"3 consumers each saw all {len(log)} in seq order, 0 missing, 0 duplicated; "
            f"consumer 0 killed at seq {cursor} and resumed after it; daemon kill -9 mid-stream"
        )
    finally:
        for proc in procs:
            proc.kill()
        daemon.kill()


async def test_embedded_processes_follow_each_other_by_polling(
    db_path: str, tmp_path: Path
) -> None:
    out = tmp_path / "consumer.jsonl"
    procs = [Proc("consume", db_path, out, "--mode", "embedded")]
    try:
        wait_until(lambda: os.path.exists(db_path) and _has_log(db_path), what="consumer ready")
        reports = [tmp_path / f"writer{i}.json" for i in range(2)]
        writers = [
            Proc(
                "write",
                db_path,
                reports[i],
                "--mode",
                "embedded",
                "--name",
                f"e{i}",
                "--tasks",
                "4",
                "--n",
                "10",
            )
            for i in range(2)
        ]
        procs += writers
        for writer in writers:
            writer.wait()
        from tests.integration.feed_client import Event

        await AsyncDatabaseManager.init_engine(db_path, mode="embedded")
        await Event.insert({"tag": "END"})
        await AsyncDatabaseManager.close()
        procs[0].wait(30)
        log = the_log(db_path)
        check_writers([json.loads(r.read_text()) for r in reports], log)
        check_consumer(lines(out), log)
        print(f"RELIABILITY C2: embedded, {len(log)} changes from 2 writer processes, all seen")
    finally:
        for proc in procs:
            proc.kill()


def _has_log(db: str) -> bool:
    try:
        return bool(the_log(db) is not None)
    except sqlite3.Error:
        return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
def test_a_subscriber_that_never_reads_costs_the_daemon_little(
    db_path: str, tmp_path: Path
) -> None:
    from tests.integration.feed_client import Event

    async def insert(tags: list[str]) -> float:
        await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        started = time.monotonic()
        for tag in tags:
            await Event.insert({"tag": tag})
        elapsed = time.monotonic() - started
        await AsyncDatabaseManager.close()
        return elapsed

    # synchronous=normal: the test is about the events, not the fsyncs.
    daemon = DaemonProcess(db_path, "--synchronous", "normal").start()
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        asyncio.run(insert(["warm-up"]))
        # A raw client: hello, subscribe, then never reads a byte again.
        assert daemon.socket is not None
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(daemon.socket)
        stalled.sendall(
            encode_frame({"id": 1, "op": "hello", "version": 1})
            + encode_frame({"id": 2, "op": "subscribe"})
        )
        wait_until(lambda: daemon.stats()["changes"]["subscribers"] == 1, what="subscribed")
        before = _rss_kib(daemon.pid)
        elapsed = asyncio.run(insert([f"t{i}" for i in range(3000)]))
        changes = daemon.stats()["changes"]
        grown = _rss_kib(daemon.pid) - before
        # Past the socket buffers and 64 KiB unsent, events were merged instead of queued
        # (one pending tip), and memory stayed flat.
        assert changes["events_merged"] > 0, changes
        assert changes["events"] + changes["events_merged"] <= 3001, changes
        assert changes["tip"] == 3001
        assert grown < 16 * 1024, f"daemon RSS grew by {grown} KiB"
        assert elapsed < 120  # not stalled behind the reader that never reads
        print(
            f"RELIABILITY C3: 3000 inserts in {elapsed:.2f} s beside a subscriber that never "
            f"reads; events sent {changes['events']}, merged {changes['events_merged']}; "
            f"daemon RSS grew {grown} KiB"
        )
    finally:
        stalled.close()
        daemon.stop()
