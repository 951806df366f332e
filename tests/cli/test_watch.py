"""``fqdb watch``: the change log in a terminal, replayed and live, with and without a daemon."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from tests.helpers import DaemonProcess

FQDB = os.path.join(os.path.dirname(sys.executable), "fqdb")


class Note(BaseModel):
    __tablename__ = "watch_note"  # other test modules have a "note" model
    __changes__ = True
    id = Column("INTEGER", primary_key=True)
    body = Column("TEXT")


def write(db: str, *bodies: str) -> None:
    async def run() -> None:
        await AsyncDatabaseManager.init_engine(db)
        for body in bodies:
            await Note.insert({"body": body})
        await AsyncDatabaseManager.close()

    asyncio.run(run())


def fqdb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FQDB, *args], capture_output=True, text=True, timeout=60)


def test_watch_replays_from_a_cursor_as_text_and_json(db_path: str) -> None:
    write(db_path, "a", "b", "c")
    done = fqdb("watch", db_path, "--after", "1", "--count", "2", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(c["seq"], c["op"], c["row"]["body"]) for c in lines] == [
        (2, "insert", "b"),
        (3, "insert", "c"),
    ]
    text = fqdb("watch", db_path, "watch_note", "--after", "0", "--count", "1")
    assert text.stdout.split("\t")[:4] == ["1", "insert", "watch_note", "1"]
    bad = fqdb("watch", db_path, "--after", "soon", "--count", "1")
    assert bad.returncode == 1 and "after must be" in bad.stderr


@pytest.mark.parametrize("with_daemon", [False, True], ids=["file", "daemon"])
def test_watch_prints_changes_as_they_commit(db_path: str, with_daemon: bool) -> None:
    write(db_path, "before")  # the table exists; watch starts at the tip, after this one
    daemon = DaemonProcess(db_path).start() if with_daemon else None
    watch = subprocess.Popen(
        [FQDB, "watch", db_path, "--count", "2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        # Written until the watcher (started at the tip) has printed two of them.
        out: list[str] = []
        for i in range(200):
            write(db_path, f"live{i}")
            if watch.poll() is not None:
                break
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        changes = [json.loads(line) for line in out.splitlines()]
        assert len(changes) == 2
        assert changes[0]["row"]["body"].startswith("live")
        assert changes[1]["seq"] == changes[0]["seq"] + 1
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
        if daemon is not None:
            daemon.stop()
