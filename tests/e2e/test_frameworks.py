"""The example apps under real multi-worker servers, with and without ``fqdb-server``.

Each test starts a real server with 4 worker processes on a loopback port
(hypercorn for Quart, uvicorn for FastAPI, gunicorn with aiohttp's worker),
drives it with concurrent httpx requests, and checks every answer, the rows
in the file (with sqlite3, after the servers stopped) and, with a daemon,
that the daemon served 4 distinct worker processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import DaemonProcess

from .servers import (
    WORKERS,
    Subprocess,
    app_env,
    daemon_stats,
    free_port,
    group_members,
    kill_group,
    pid_alive,
    server_command,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CREATES = 200
CONCURRENCY = 32
FRAMEWORKS = ("quart", "fastapi", "aiohttp")

Row = dict[str, Any]


def _age(i: int) -> int:
    return 18 + (i * 7) % 50


class Load:
    """Concurrent requests against one server, every answer checked; keeps the expected rows."""

    def __init__(self, client: httpx.AsyncClient, framework: str) -> None:
        self.client = client
        self.framework = framework
        self.limit = asyncio.Semaphore(CONCURRENCY)
        self.statuses: Counter[int] = Counter()
        self.users: dict[int, Row] = {}

    async def call(self, method: str, url: str, expect: int, **options: Any) -> httpx.Response:
        async with self.limit:
            reply = await self.client.request(method, url, **options)
        self.statuses[reply.status_code] += 1
        assert reply.status_code == expect, (method, url, options, reply.status_code, reply.text)
        return reply

    async def create(self, i: int) -> None:
        body = {"username": f"user{i}", "age": _age(i)}
        row = (await self.call("POST", "/users", 201, json=body)).json()
        assert row == {**body, "id": row["id"]}
        assert row["id"] not in self.users
        self.users[row["id"]] = row

    async def read_range(self, low: int, high: int) -> None:
        rows = (
            await self.call("GET", "/users", 200, params={"min_age": low, "max_age": high})
        ).json()
        assert all(low <= row["age"] <= high for row in rows), rows
        assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)

    async def get(self, user_id: int) -> None:
        assert (await self.call("GET", f"/users/{user_id}", 200)).json() == self.users[user_id]

    async def patch(self, user_id: int) -> None:
        changed = {"age": self.users[user_id]["age"] + 100}
        row = (await self.call("PATCH", f"/users/{user_id}", 200, json=changed)).json()
        self.users[user_id] = {**self.users[user_id], **changed}
        assert row == self.users[user_id]

    async def delete(self, user_id: int) -> None:
        reply = await self.call("DELETE", f"/users/{user_id}", 204)
        assert reply.content == b""
        del self.users[user_id]

    async def run(self) -> None:
        # Creates racing filtered reads, from CONCURRENCY connections.
        await asyncio.gather(
            *(self.create(i) for i in range(CREATES)),
            *(self.read_range(20 + i % 20, 40 + i % 20) for i in range(60)),
        )
        assert len(self.users) == CREATES
        ids = sorted(self.users)
        gone = ids[100:150]
        await asyncio.gather(
            *(self.get(i) for i in ids[:50]),
            *(self.patch(i) for i in ids[50:100]),
            *(self.delete(i) for i in gone),
            *(self.read_range(0, 200) for _ in range(10)),
        )
        await asyncio.gather(
            *(self.call("GET", f"/users/{i}", 404) for i in gone[:10]),
            *(self.call("PATCH", f"/users/{i}", 404, json={"age": 1}) for i in gone[10:20]),
            *(self.call("DELETE", f"/users/{i}", 404) for i in gone[20:30]),
        )
        await self.check_lists()
        await self.check_errors(ids[0])
        await self.check_idempotency()

    async def check_idempotency(self) -> None:
        """One POST with an Idempotency-Key sent three times, over new connections (so to
        any worker), then three at once: one row each, identical answers; the key with
        another body is a 422."""
        base = str(self.client.base_url)

        async def post(key: str, body: Row) -> httpx.Response:
            async with httpx.AsyncClient(base_url=base, timeout=30.0) as fresh:
                return await fresh.post("/users", json=body, headers={"Idempotency-Key": key})

        body = {"username": "once", "age": 33}
        answers = [await post("order-1", body) for _ in range(3)]
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.text for a in answers}) == 1, [a.text for a in answers]
        row = answers[0].json()
        self.users[row["id"]] = row
        body = {"username": "twice", "age": 34}
        answers = await asyncio.gather(*(post("order-2", body) for _ in range(3)))
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.text for a in answers}) == 1, [a.text for a in answers]
        row = answers[0].json()
        self.users[row["id"]] = row
        other = await post("order-1", {"username": "someone else", "age": 1})
        assert other.status_code == 422, other.text
        assert "already used for a different request" in other.json()["error"], other.text
        long = await post("k" * 256, body)
        assert long.status_code == 400, long.text
        assert "Idempotency-Key header must be 1-255 characters" in long.json()["error"]

    async def check_lists(self) -> None:
        expected = sorted(self.users.values(), key=lambda row: row["id"])
        assert (await self.call("GET", "/users", 200)).json() == expected
        in_range = [row for row in expected if 30 <= row["age"] <= 40]
        reply = await self.call("GET", "/users", 200, params={"min_age": 30, "max_age": 40})
        assert reply.json() == in_range
        reply = await self.call("GET", "/users", 200, params={"min_age": 100, "limit": 5})
        assert reply.json() == [row for row in expected if row["age"] >= 100][:5]
        name = expected[-1]["username"]
        reply = await self.call("GET", "/users", 200, params={"username": name})
        assert reply.json() == [expected[-1]]

    async def check_errors(self, existing: int) -> None:
        async def error(method: str, url: str, status: int, pattern: str, **options: Any) -> None:
            reply = await self.call(method, url, status, **options)
            assert re.search(pattern, reply.json()["error"]), reply.text

        async def invalid(method: str, url: str, loc: list[Any], kind: str, **options: Any) -> None:
            # FastAPI checks bodies against User.schema(): 422 with pydantic's details.
            detail = (await self.call(method, url, 422, **options)).json()["detail"]
            assert any(d["loc"] == loc and d["type"] == kind for d in detail), detail

        unknown = "unknown column 'nmae' in table 'user'"
        wrong = "column 'age' of table 'user' is INTEGER and takes an integer, got str 'old'"
        one = f"/users/{existing}"
        if self.framework == "fastapi":
            await invalid("POST", "/users", ["body", "nmae"], "extra_forbidden", json={"nmae": "x"})
            await invalid("POST", "/users", ["body", "age"], "int_type", json={"age": "old"})
            json_type = {"content-type": "application/json"}
            await invalid(
                "POST", "/users", ["body", 1], "json_invalid", content=b"{nope", headers=json_type
            )
            await invalid("POST", "/users", ["body"], "model_attributes_type", json=[1, 2])
            await invalid("PATCH", one, ["body", "age"], "int_type", json={"age": "old"})
            await invalid(
                "PATCH", one, ["body", "username"], "string_type", json={"username": None}
            )
            await invalid("POST", "/users", ["body", "username"], "missing", json={"age": 3})
            # The id is read-only: SQLite assigns it.
            await invalid("POST", "/users", ["body", "id"], "extra_forbidden", json={"id": 1})
        else:
            await error("POST", "/users", 400, unknown, json={"nmae": "x"})
            await error("POST", "/users", 400, wrong, json={"username": "x", "age": "old"})
            await error("POST", "/users", 400, "not valid JSON", content=b"{nope")
            await error("POST", "/users", 400, "must be a JSON object", json=[1, 2])
            await error("PATCH", one, 400, wrong, json={"age": "old"})
            await error("POST", "/users", 409, "NOT NULL", json={"age": 3})
            await error(
                "POST", "/users", 409, "UNIQUE|PRIMARY", json={"id": existing, "username": "x"}
            )
        await error("PATCH", one, 400, "at least one column", json={})
        await error("GET", "/users", 400, "min_age must be an integer", params={"min_age": "x"})
        await error("GET", "/users", 400, "limit must be a non-negative", params={"limit": "-1"})


def table_rows(db: str) -> list[Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute("SELECT id, username, age FROM user ORDER BY id")]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    return rows


async def run_load(base_url: str, framework: str) -> Load:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
        load = Load(client, framework)
        await load.run()
    assert not [s for s in load.statuses if s >= 500], load.statuses
    return load


async def wait_for_clients(daemon: DaemonProcess, db: str, server: Subprocess) -> set[int]:
    """The daemon's client pids that belong to the server, once all its workers connected."""
    deadline = time.monotonic() + 20
    while True:
        stats = await daemon_stats(daemon.socket or "", db)
        pids = {pid for pid in stats["client_pids"] if pid != os.getpid()}
        if len(pids) >= WORKERS or time.monotonic() > deadline:
            return pids
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_app_with_daemon(framework: str, tmp_path: Path) -> None:
    db = str(tmp_path / "data" / "app.db")
    (tmp_path / "data").mkdir()  # fqdb-server creates the file, never its directory
    port = free_port()
    daemon = DaemonProcess(db).start()
    server = Subprocess(
        server_command(framework, port),
        tmp_path / "server.log",
        app_env(db, mode="daemon", socket=daemon.socket or ""),
    )
    try:
        server.start()
        await server.wait_http(f"http://127.0.0.1:{port}/users?limit=1")
        load = await run_load(f"http://127.0.0.1:{port}", framework)
        # Still serving: each worker process holds its own connection to the daemon.
        pids = await wait_for_clients(daemon, db, server)
        stats = await daemon_stats(daemon.socket or "", db)
        assert len(pids) == WORKERS, (pids, stats, server.output()[-2000:])
        assert all(os.getsid(pid) == server.pid != pid for pid in pids), (pids, server.pid)
        # The creates reached the daemon; the reads ran in the workers, on local readers,
        # which the workers report to the daemon (about once a second).
        assert stats["requests"] >= CREATES, stats
        deadline = time.monotonic() + 20
        while sum(c["reads_local"] or 0 for c in stats["per_client"]) < 100:
            assert time.monotonic() < deadline, stats["per_client"]
            await asyncio.sleep(0.1)
            stats = await daemon_stats(daemon.socket or "", db)
        assert server.stop() == 0, server.output()[-3000:]
        assert daemon.stop() == 0
    finally:
        server.stop()
        daemon.kill()
    assert table_rows(db) == sorted(load.users.values(), key=lambda row: row["id"])
    assert not os.path.exists(daemon.socket or "")


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_app_embedded_with_filelock(framework: str, tmp_path: Path) -> None:
    db = str(tmp_path / "data" / "app.db")
    port = free_port()
    server = Subprocess(
        server_command(framework, port),
        tmp_path / "server.log",
        app_env(db, mode="embedded", filelock="1"),
    )
    try:
        server.start()
        await server.wait_http(f"http://127.0.0.1:{port}/users?limit=1")
        load = await run_load(f"http://127.0.0.1:{port}", framework)
        assert server.stop() == 0, server.output()[-3000:]
    finally:
        server.stop()
    assert os.path.exists(db + ".lock")  # the workers ran under the file lock
    assert table_rows(db) == sorted(load.users.values(), key=lambda row: row["id"])


def test_make_run(tmp_path: Path) -> None:
    """``examples/run.py``: daemon + hypercorn from one command; Ctrl-C stops both, exit 0."""
    db = tmp_path / "data" / "app.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FQDB_")}
    run = Subprocess(
        [sys.executable, "examples/run.py", "--port", str(port), "--db", str(db)],
        tmp_path / "run.log",
        env,
    ).start()
    children: list[int] = []
    try:
        asyncio.run(run.wait_http(f"{base}/users"))
        deadline = time.monotonic() + 20
        while "Ctrl-C stops both" not in run.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = run.output()
        assert f"curl -s '{base}/users?min_age=18'" in out, out
        daemon_pid = int(re.search(r"fqdb-server: serving .* \(pid (\d+)\)", out)[1])  # type: ignore[index]
        hypercorn_pid = int(re.search(r"hypercorn: .* \(pid (\d+)\)", out)[1])  # type: ignore[index]
        children = [daemon_pid, hypercorn_pid]

        with httpx.Client(base_url=base, timeout=10) as client:
            created = client.post("/users", json={"username": "alice", "age": 30})
            assert created.status_code == 201, created.text
            assert client.get("/users").json() == [created.json()]

        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        os.killpg(run.pid, signal.SIGINT)
        assert run.proc is not None
        assert run.proc.wait(60) == 0, run.output()
    finally:
        run.stop()
        for pgid in children:  # each child leads its own group: nothing may be left of either
            kill_group(pgid)
    out = run.output()
    assert "stopped cleanly" in out, out
    assert not pid_alive(daemon_pid), out
    assert group_members(hypercorn_pid) == [], out
    assert not os.path.exists(str(db) + ".sock")
    assert table_rows(str(db)) == [{"id": 1, "username": "alice", "age": 30}]
