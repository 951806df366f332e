"""Helpers for tests with real processes: load clients and database checks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


class LoadClient:
    """A ``tests.integration.load_client`` process."""

    def __init__(self, action: str, db: str, out: Path | None, *args: str) -> None:
        cmd = [sys.executable, "-m", "tests.integration.load_client", action, "--db", db, *args]
        if out is not None:
            cmd += ["--out", str(out)]
        self.out = out
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def report(self, timeout: float = 120) -> dict[str, Any]:
        """Wait for the process and return its JSON report."""
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        assert self.out is not None
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Any]:
    """Factory for load clients; every one is reaped at the end of the test."""
    started: list[LoadClient] = []

    def start(action: str, db: str, *args: str) -> LoadClient:
        client = LoadClient(action, db, tmp_path / f"report-{len(started)}.json", *args)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


def table_keys(db: str) -> list[str]:
    """Every key in the load table, duplicates included."""
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT key FROM event")]


def integrity(db: str) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
