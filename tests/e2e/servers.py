"""Real web servers as subprocesses for the end-to-end tests.

Each server runs in a new session, so its master and every worker share one
process group: the test stops the master by pid (SIGTERM, as a supervisor
would) and then kills whatever is left of the group, so no worker outlives
the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4

#: framework -> its example app
APPS = {
    "quart": "examples.quart_app:app",
    "fastapi": "examples.fastapi_app:app",
    "aiohttp": "examples.aiohttp_app:app",
}


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(framework: str, port: int) -> list[str]:
    """The multi-worker server each framework documents, on 127.0.0.1:``port``."""
    app = APPS[framework]
    py = sys.executable
    if framework == "quart":
        return [py, "-m", "hypercorn", app, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"]
    if framework == "fastapi":
        return [
            py,
            "-m",
            "uvicorn",
            app,
            "--workers",
            str(WORKERS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ]
    gunicorn = [
        py,
        "-m",
        "gunicorn",
        app,
        "-k",
        "aiohttp.GunicornWebWorker",
        "-w",
        str(WORKERS),
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
    ]
    if _version("gunicorn") >= (25, 1):
        # Else every gunicorn of every test run shares ~/.gunicorn/gunicorn.ctl.
        gunicorn.append("--no-control-socket")
    return gunicorn


def _version(dist: str) -> tuple[int, ...]:
    parts = importlib.metadata.version(dist).split(".")
    return tuple(int(p) for p in parts[:2] if p.isdigit())


def app_env(db: str, **fqdb: str) -> dict[str, str]:
    """The environment of a server: this checkout importable, ``FQDB_*`` as given.

    Other ``FQDB_*`` variables are dropped, ``FQDB_WIRE_CHECK`` included: the
    servers run the product as users run it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FQDB_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["FQDB_PATH"] = db
    env.update({f"FQDB_{key.upper()}": value for key, value in fqdb.items()})
    return env


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel whether anything is left
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def kill_group(pgid: int, timeout: float = 5.0) -> None:
    """SIGKILL what is left of a process group and wait until it is gone."""
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)


class Subprocess:
    """A command in its own session, output to a log file, stopped by pid."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Subprocess:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the leader and wait; then kill anything left in its group. Returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        kill_group(self.pid)
        self.proc.wait()
        return code

    async def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Poll ``url`` until it answers 200; fail with the log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.running():
                    raise AssertionError(f"{self.cmd[:4]} exited:\n{self.output()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{url} did not answer within {timeout:g} s:\n{self.output()[-3000:]}")


async def daemon_stats(socket_path: str, db: str) -> dict[str, Any]:
    """The daemon's ``stats`` over a connection of this process (closed again)."""
    from fastquartdb.client.connection import SocketTransport

    transport = await SocketTransport.connect(socket_path, db)
    try:
        stats: dict[str, Any] = await transport.request({"op": "stats"})
        return stats
    finally:
        await transport.close()
