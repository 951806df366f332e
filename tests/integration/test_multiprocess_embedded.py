"""Several OS processes writing one file in embedded mode: no lost rows, no errors.

Each worker is a fresh interpreter (``subprocess``) that opens the file, says
it is ready and waits for the go line on stdin, so all of them write at once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

PROCESSES = 4
ROWS_PER_PROCESS = 500
TASKS_PER_PROCESS = 5
REPO = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, sys

from fastquartdb import AsyncDatabaseManager, BaseModel, Column


class Hit(BaseModel):
    id = Column("INTEGER", primary_key=True)
    worker = Column("INTEGER", nullable=False)
    seq = Column("INTEGER", nullable=False)
    note = Column("TEXT")


async def main(path, use_filelock, worker, rows, tasks):
    db = await AsyncDatabaseManager.init_engine(path, use_filelock=use_filelock, mode="embedded")
    assert db.mode == "embedded", db.mode
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"

    async def writer(part):
        # One row per request: every one is its own write transaction in the file.
        for seq in range(part, rows, tasks):
            await Hit.insert({"worker": worker, "seq": seq, "note": f"w{worker}-{seq}"})

    await asyncio.gather(*(writer(part) for part in range(tasks)))
    print("inserted", await Hit.count({"worker": worker}), flush=True)
    await AsyncDatabaseManager.close()


path, use_filelock, worker, rows, tasks = sys.argv[1:]
asyncio.run(main(path, use_filelock == "1", int(worker), int(rows), int(tasks)))
"""


def run_workers(path: str, use_filelock: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                path,
                "1" if use_filelock else "0",
                str(worker),
                str(ROWS_PER_PROCESS),
                str(TASKS_PER_PROCESS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for worker in range(PROCESSES)
    ]
    try:
        # Everyone has opened the file (and created the table) before anyone writes.
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.wait(30)
                pytest.fail(
                    f"worker did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
                )
        results = []
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for worker, (code, out, err) in enumerate(results):
        assert code == 0, f"worker {worker} failed:\n{err}"
        assert err == "", f"worker {worker} wrote to stderr:\n{err}"
        assert out.strip() == f"inserted {ROWS_PER_PROCESS}", out


@pytest.mark.parametrize("use_filelock", [True, False], ids=["filelock", "no-filelock"])
def test_processes_insert_into_one_file(tmp_path: Path, use_filelock: bool) -> None:
    path = str(tmp_path / "data" / "shared.db")
    os.makedirs(os.path.dirname(path))
    run_workers(path, use_filelock)

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM hit").fetchone() == (
            PROCESSES * ROWS_PER_PROCESS,
        )
        per_worker = conn.execute(
            "SELECT worker, count(*), count(DISTINCT seq), min(seq), max(seq) FROM hit GROUP BY worker"
        ).fetchall()
        assert per_worker == [
            (w, ROWS_PER_PROCESS, ROWS_PER_PROCESS, 0, ROWS_PER_PROCESS - 1)
            for w in range(PROCESSES)
        ]
        assert conn.execute("SELECT count(DISTINCT id) FROM hit").fetchone() == (
            PROCESSES * ROWS_PER_PROCESS,
        )
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    if use_filelock:
        assert os.path.exists(path + ".lock")
