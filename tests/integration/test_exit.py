"""A process using embedded mode exits by itself: without close(), on an exception, on one Ctrl-C.

Each case is a real Python subprocess with a timeout; a hang fails the test
(the process is killed) instead of hanging the suite. Before the engine had a
thread of its own, every one of these hung in ``threading._shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fastquartdb.client.transports import EmbeddedTransport
from tests.e2e.servers import ROOT, Subprocess, app_env, free_port, group_members, kill_group
from tests.helpers import integrity

pytestmark = pytest.mark.slow

#: Generous: a clean exit takes well under a second; a hang never ends.
EXIT_TIMEOUT = 20.0

PRELUDE = """
import asyncio, sys
from fastquartdb import AsyncDatabaseManager, BaseModel, Column

class User(BaseModel):
    id = Column("INTEGER", primary_key=True)
    username = Column("TEXT", nullable=False)
    age = Column("INTEGER")
"""


def _env() -> dict[str, str]:
    # The product as users run it: no test-only FQDB_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FQDB_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "app.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    return [sys.executable, str(path)]


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run a script to its end; a process that does not exit in time fails the test."""
    cmd = _script(tmp_path, body)
    try:
        return subprocess.run(
            cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=EXIT_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not exit within {EXIT_TIMEOUT:g} s: {exc.stdout!r}")


def rows(db: Path, sql: str = "SELECT count(*) FROM user") -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _rows_or_zero(db: Path) -> int:
    if not db.exists():  # sqlite3.connect would create it
        return 0
    try:
        return rows(db)
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


def test_readme_snippet_without_close_exits(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        """
        async def main():
            await AsyncDatabaseManager.init_engine("data/mydb.sqlite", use_filelock=True)
            await User.insert({"username": "Alice", "age": 30})
            users = await User.fetch(filters={"age": [(">", 20), ("<", 40)]}, columns=["id", "username"])
            await User.update(data={"age": 31}, filters={"username": [("=", "Alice")]})
            await User.delete(filters={"age": [("<", 18)]})
            print(users)

        asyncio.run(main())
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[{'id': 1, 'username': 'Alice'}]"
    db = tmp_path / "data" / "mydb.sqlite"
    assert rows(db, "SELECT age FROM user WHERE username = 'Alice'") == 31
    # Closed at exit: checkpointed, so the -wal file is empty (or gone).
    wal = Path(str(db) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert integrity(str(db)) == "ok"


def test_exception_before_close_exits(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        """
        async def main():
            await AsyncDatabaseManager.init_engine("app.db")
            await User.insert({"username": "acknowledged", "age": 1})
            raise RuntimeError("boom")

        asyncio.run(main())
        """,
    )
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr
    assert rows(tmp_path / "app.db") == 1


def test_exception_inside_a_transaction_is_rolled_back_at_exit(tmp_path: Path) -> None:
    # The exception escapes while the transaction is open and the loop is gone
    # before anyone rolls it back: the thread must not leave it open, nor commit it.
    done = run_script(
        tmp_path,
        """
        async def main():
            db = await AsyncDatabaseManager.init_engine("app.db")
            await User.insert({"username": "before", "age": 1})
            await db.transaction().__aenter__()
            await User.insert({"username": "inside", "age": 2})
            raise RuntimeError("boom")

        asyncio.run(main())
        """,
    )
    assert done.returncode == 1, done.stderr
    assert "RuntimeError: boom" in done.stderr
    db = tmp_path / "app.db"
    assert rows(db) == 1
    assert integrity(str(db)) == "ok"


def test_iterate_abandoned_half_way_exits(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        """
        async def main():
            await AsyncDatabaseManager.init_engine("app.db")
            await User.insert_many([{"username": f"u{i}", "age": i} for i in range(100)])
            seen = 0
            async for row in User.iterate(batch_size=10):
                seen += 1
                if seen == 25:
                    break
            agen = User.iterate(batch_size=10)
            await agen.__anext__()   # left suspended: asyncio.run finalizes it
            print(seen)

        asyncio.run(main())
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "25"
    assert rows(tmp_path / "app.db") == 100


def test_loop_closed_with_pending_requests_finishes_or_reports_each(tmp_path: Path) -> None:
    # No asyncio.run: the loop is closed with 1000 insert tasks pending, more than one
    # batch holds. Each insert is either in the file (it reached the sqlite thread,
    # which finishes it) or counted in the warning, never silently lost.
    done = run_script(
        tmp_path,
        """
        import logging
        loop = asyncio.new_event_loop()
        loop.run_until_complete(AsyncDatabaseManager.init_engine("app.db"))
        tasks = [loop.create_task(User.insert({"username": f"u{i}", "age": i})) for i in range(1000)]
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        logging.getLogger("asyncio").disabled = True  # the 1000 "Task was destroyed" lines
        """,
    )
    assert done.returncode == 0, done.stderr
    db = tmp_path / "app.db"
    written = rows(db)
    found = re.search(rf"(\d+) request\(s\) for {re.escape(str(db))} were never run", done.stderr)
    assert found, done.stderr
    assert 0 < written < 1000
    assert written + int(found.group(1)) == 1000
    assert integrity(str(db)) == "ok"


def _start_until_ready(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        _script(tmp_path, body),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + EXIT_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        line = proc.stdout.readline() if ready else ""
        if line.strip() == "ready":
            return proc
        seen.append(line)
        if not line:  # timed out, or the script ended
            break
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"the script did not start: {seen!r} {err}")


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Whatever happens in the block, the process is gone and its pipes closed after it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _wait_http(url: str, proc: subprocess.Popen[str]) -> httpx.Response:
    # Quart runs before_serving before it listens: poll until the port answers.
    deadline = time.monotonic() + EXIT_TIMEOUT
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "the app never answered"
            time.sleep(0.05)


def _wait_exit(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"one SIGINT did not stop the process within {EXIT_TIMEOUT:g} s")
    return proc.returncode, err


def test_one_sigint_stops_a_busy_script(tmp_path: Path) -> None:
    proc = _start_until_ready(
        tmp_path,
        """
        written = 0

        async def writer(n):
            global written
            while True:
                await User.insert({"username": f"w{n}", "age": n})
                written += 1
                if written == 500:  # the signal lands in the middle of the writers' work
                    print("ready", flush=True)

        async def main():
            await AsyncDatabaseManager.init_engine("app.db")
            await asyncio.gather(*(writer(n) for n in range(8)))

        asyncio.run(main())
        """,
    )
    proc.send_signal(signal.SIGINT)
    code, err = _wait_exit(proc)
    # The sqlite thread must not die of the closed loop on its way out.
    assert "Exception in thread" not in err, err
    # What Python does on an uncaught KeyboardInterrupt: it dies of SIGINT.
    assert code == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    db = tmp_path / "app.db"
    assert rows(db) >= 500
    assert integrity(str(db)) == "ok"


QUART_APP = """
from quart import Quart

app = Quart(__name__)

@app.before_serving
async def open_database():
    # As many apps do: opened when serving starts, never closed.
    await AsyncDatabaseManager.init_engine("app.db", mode="embedded")
    await User.insert({"username": "started", "age": 1})
    print("ready", flush=True)

@app.get("/")
async def index():
    return {"users": await User.count()}
"""


def test_one_sigint_stops_quart_app_run_without_close(tmp_path: Path) -> None:
    # `python app.py` with Quart's app.run: before the fix it needed a second Ctrl-C.
    port = free_port()
    proc = _start_until_ready(tmp_path, f'{QUART_APP}\napp.run(host="127.0.0.1", port={port})\n')
    with _reaped(proc):
        assert _wait_http(f"http://127.0.0.1:{port}/", proc).json() == {"users": 1}
        proc.send_signal(signal.SIGINT)
        code, err = _wait_exit(proc)
    assert code == 0, err
    assert rows(tmp_path / "app.db") == 1


def _stop_hypercorn_with_one_sigint(server: Subprocess, port: int) -> int:
    """Ctrl-C as a terminal sends it (to the whole process group); hypercorn's exit code."""
    asyncio.run(server.wait_http(f"http://127.0.0.1:{port}/users?limit=1"))
    os.killpg(server.pid, signal.SIGINT)
    assert server.proc is not None
    try:
        code = server.proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hypercorn -w 4 did not stop on one SIGINT:\n{server.output()[-2000:]}")
    deadline = time.monotonic() + EXIT_TIMEOUT
    while group_members(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(server.pid) == [], "a worker outlived hypercorn"
    return code


def test_hypercorn_workers_that_never_close_stop_on_one_sigint(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "noclose.py").write_text(
        PRELUDE + QUART_APP.replace('"/"', '"/users"').replace("app.db", str(tmp_path / "app.db"))
    )
    env = {**_env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "hypercorn", "noclose:app", "-w", "4", "-b", f"127.0.0.1:{port}"]
    server = Subprocess(cmd, tmp_path / "server.log", env).start()
    try:
        db = tmp_path / "app.db"
        # Every worker has opened the database (each commits one row as it starts).
        deadline = time.monotonic() + 60
        while _rows_or_zero(db) < 4:
            assert server.running() and time.monotonic() < deadline, server.output()[-2000:]
            time.sleep(0.05)
        code = _stop_hypercorn_with_one_sigint(server, port)
        assert code == 0, server.output()[-2000:]
        assert rows(db) == 4
    finally:
        kill_group(server.pid)
        if server.proc is not None:
            server.proc.wait()


def test_hypercorn_four_workers_embedded_stop_on_one_sigint(tmp_path: Path) -> None:
    # The example app (quart_lifecycle closes the database in after_serving), embedded.
    port = free_port()
    db = tmp_path / "app.db"
    env = app_env(str(db), mode="embedded", filelock="1")
    cmd = [sys.executable, "-m", "hypercorn", "examples.quart_app:app", "-w", "4"]
    server = Subprocess([*cmd, "-b", f"127.0.0.1:{port}"], tmp_path / "server.log", env).start()
    try:
        asyncio.run(server.wait_http(f"http://127.0.0.1:{port}/users?limit=1"))
        reply = httpx.post(
            f"http://127.0.0.1:{port}/users", json={"username": "alice", "age": 30}, timeout=10
        )
        assert reply.status_code == 201, reply.text
        code = _stop_hypercorn_with_one_sigint(server, port)
        assert code == 0, server.output()[-2000:]
        assert rows(db) == 1
        assert integrity(str(db)) == "ok"
    finally:
        kill_group(server.pid)
        if server.proc is not None:
            server.proc.wait()


async def test_a_cancelled_worker_runs_and_answers_what_is_queued(db_path: str) -> None:
    # What asyncio.run does to the worker task when main() returns without close():
    # more than one batch is queued; every request still runs, and each caller that is
    # still waiting gets its true result, not "request not run".
    transport = await EmbeddedTransport.open(db_path)
    try:
        await transport.request({"op": "execute", "sql": "CREATE TABLE t (x)", "params": []})
        insert = "INSERT INTO t VALUES (?)"
        calls = [
            asyncio.ensure_future(
                transport.request({"op": "execute", "sql": insert, "params": [i]})
            )
            for i in range(600)
        ]
        await asyncio.sleep(0)  # every call is queued or in the batch on the thread
        task = transport.worker._task
        assert task is not None and transport.worker.depth > 0
        task.cancel()
        results = await asyncio.gather(*calls)
        assert [r["rowcount"] for r in results] == [1] * 600
        await asyncio.wait({task})
        assert task.cancelled()
    finally:
        await transport.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 600
