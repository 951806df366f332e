"""A real dqlite cluster for tests: ``dqlite-demo`` nodes on loopback, started and stopped by pid.

``dqlite-demo`` comes from Debian's ``go-dqlite`` package. Without it the
tests skip with the reason, unless ``FQDB_REQUIRE_DQLITE=1`` (``make
test-dqlite``), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fastquartdb.engine.dqlite.connection import NodeConnection

DEMO = "dqlite-demo"
SHELL = "dqlite"
REQUIRE = os.environ.get("FQDB_REQUIRE_DQLITE") == "1"
MISSING_REASON = (
    "dqlite-demo is not installed (apt-get install -y go-dqlite); "
    "set FQDB_REQUIRE_DQLITE=1 to make this a failure"
)


def available() -> bool:
    return shutil.which(DEMO) is not None and shutil.which(SHELL) is not None


def require() -> None:
    """Skip (or, with FQDB_REQUIRE_DQLITE=1, fail) when dqlite-demo is missing."""
    if available():
        return
    if REQUIRE:
        pytest.fail("FQDB_REQUIRE_DQLITE=1 but dqlite-demo / dqlite are not on PATH (go-dqlite)")
    pytest.skip(MISSING_REASON)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, index: int, directory: Path) -> None:
        self.index = index
        self.address = f"127.0.0.1:{_free_port()}"
        self.api = f"127.0.0.1:{_free_port()}"
        self.directory = directory / f"node{index}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / f"node{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, join: list[str]) -> None:
        cmd = [DEMO, "--db", self.address, "--api", self.api, "--dir", str(self.directory)]
        for address in join:
            cmd += ["--join", address]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, by pid."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
            try:
                assert self.proc is not None
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        elif self.proc is not None:
            self.proc.wait()


class Cluster:
    """``size`` dqlite-demo nodes; node 0 bootstraps, the others join it."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.nodes = [Node(i, directory) for i in range(size)]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def url(self, database: str | None = None) -> str:
        """A ``dqlite://`` URL for a database (a new name unless given)."""
        name = database or "t" + uuid.uuid4().hex[:12]
        return "dqlite://" + ",".join(self.addresses) + "/" + name

    def start(self, timeout: float = 60.0) -> Cluster:
        first = self.nodes[0]
        first.start([])
        self._wait_members(1, timeout)
        for node in self.nodes[1:]:
            node.start([first.address])
        self._wait_members(len(self.nodes), timeout)
        return self

    def _cluster_lines(self) -> list[str]:
        live = [n.address for n in self.nodes if n.running]
        try:
            out = subprocess.run(
                [SHELL, "-s", ",".join(live), "probe", ".cluster"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
        except subprocess.TimeoutExpired:
            return []
        return [line for line in out.splitlines() if "|voter" in line]

    def _wait_members(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(
                        f"dqlite-demo node {node.index} exited: {node.log.read_text()[-2000:]}"
                    )
            if len(self._cluster_lines()) >= count:
                return
            time.sleep(0.2)
        logs = "\n".join(n.log.read_text()[-500:] for n in self.nodes if n.log.exists())
        raise RuntimeError(f"dqlite cluster did not reach {count} voters in {timeout} s: {logs}")

    def leader(self, timeout: float = 30.0) -> Node:
        """The node that leads now (asked over the wire protocol)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    # In a thread of its own: callers may be inside a running event loop.
                    with ThreadPoolExecutor(1) as pool:
                        address = pool.submit(asyncio.run, _ask_leader(node.address)).result()
                except (ConnectionError, OSError, asyncio.TimeoutError):
                    continue
                for candidate in self.nodes:
                    if candidate.address == address and candidate.running:
                        return candidate
            time.sleep(0.1)
        raise RuntimeError("no dqlite leader")

    def kill_leader_at_commit(self) -> LeaderKill:
        """The leader's death with a COMMIT surely in flight (see :class:`LeaderKill`)."""
        leader = self.leader()
        return LeaderKill(leader, [node for node in self.nodes if node is not leader])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LeaderKill:
    """``pause()`` the followers, then ``kill()`` the leader and resume them: the leader
    cannot commit in between (no quorum), so a COMMIT sent then is in flight when it dies
    (a bare kill mostly lands between statements, and nothing is left to resolve)."""

    def __init__(self, leader: Node, followers: list[Node]) -> None:
        self.leader = leader
        self.followers = followers

    def pause(self) -> None:
        for node in self.followers:
            os.kill(node.pid, signal.SIGSTOP)

    def kill(self) -> None:
        try:
            self.leader.kill()
        finally:
            for node in self.followers:
                os.kill(node.pid, signal.SIGCONT)


async def _ask_leader(address: str) -> str:
    conn = await NodeConnection.connect(address, 1.0)
    try:
        return (await asyncio.wait_for(conn.leader(), 1.0)).address
    finally:
        await conn.close()
