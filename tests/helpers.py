"""Test helpers: daemons in-process (for the conformance suite) and as real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastquartdb import AsyncDatabaseManager
from fastquartdb.server import Daemon, ServerConfig, serve


@contextlib.asynccontextmanager
async def daemon_in_process(db: str, **options: Any) -> AsyncIterator[Daemon]:
    """Serve ``db`` from this event loop until the block ends; yields the running daemon."""
    config = ServerConfig(db=db, **options)
    stop = asyncio.Event()
    ready: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, shutdown_trigger=stop.wait, ready=ready.set_result))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises why it could not start
    try:
        yield ready.result()
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def daemon_and_client(
    db: str, **options: Any
) -> AsyncIterator[tuple[Daemon, AsyncDatabaseManager]]:
    """:func:`daemon_in_process` and this process's manager on it in daemon mode (closed
    when the block ends, before the daemon); yields both."""
    async with daemon_in_process(db, **options) as daemon:
        manager = await AsyncDatabaseManager.init_engine(db, mode="daemon")
        try:
            yield daemon, manager
        finally:
            await AsyncDatabaseManager.close()


class DaemonProcess:
    """A real ``fqdb-server`` subprocess, started and stopped by process id."""

    def __init__(
        self,
        db: str,
        *args: str,
        socket: str | None = None,
        open_files: int | None = None,
    ) -> None:
        self.db = db
        self.args = list(args)
        self.socket = socket
        #: Soft and hard RLIMIT_NOFILE for the daemon (``ulimit -n``), if given.
        self.open_files = open_files
        self.proc: subprocess.Popen[str] | None = None
        self.ready_line = ""
        self.stderr_text = ""

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        cmd = [sys.executable, "-m", "fastquartdb.server", self.db, *self.args]
        if self.socket:
            cmd += ["--socket", self.socket]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=self._limit if self.open_files is not None else None,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("fqdb-server: serving"):
            self.proc.kill()
            _, err = self.proc.communicate()  # reaped and its pipes closed: nothing leaks
            raise RuntimeError(f"fqdb-server did not start: {line!r} {err}")
        self.ready_line = line.strip()
        self.socket = self.ready_line.split(" on ", 1)[1].rsplit(" (pid", 1)[0]
        return self

    def _limit(self) -> None:  # in the child, before exec
        import resource

        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stats(self) -> dict[str, Any]:
        """The daemon's ``stats`` reply, asked over a connection of its own."""
        from fastquartdb.client.connection import SocketTransport

        assert self.socket is not None
        socket_path = self.socket

        async def ask() -> dict[str, Any]:
            transport = await SocketTransport.connect(socket_path, self.db)
            try:
                result: dict[str, Any] = await transport.request({"op": "stats"})
                return result
            finally:
                await transport.close()

        return asyncio.run(ask())

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close_pipes()

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        assert self.proc is not None
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            #: What the daemon logged, kept for assertions once it has exited.
            self.stderr_text = self.proc.stderr.read()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


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


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 50 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def event_rows(db: str) -> int:
    """Rows in the load table so far (0 before it exists)."""
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM event").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def table_keys(db: str) -> list[str]:
    """Every key in the load table, duplicates included."""
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT key FROM event")]


def integrity(db: str) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
