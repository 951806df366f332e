"""Access: who may talk to the daemon, to whom a client talks, and what raw SQL may change.

* The socket is created 0600 (0660 for ``--allow-gid``) whatever the umask.
* As root, a client running as another user (``setpriv`` to ``nobody``) is
  refused by the daemon's ``SO_PEERCRED`` check even when the file system lets
  it connect: it gets one ``access_denied`` frame and the connection closes;
  the daemon logs it and ``stats`` counts it. ``--allow-gid`` admits that group.
* The client checks the daemon's uid the same way: a socket served by a user
  other than itself, root or the owner of the database file, e.g. squatted in
  a world-writable directory, is refused with ``AccessDeniedError`` before
  anything is sent to it. A daemon running as the file's owner (a dedicated
  user admitting the workers' group with ``--allow-gid``) is trusted.
* Raw SQL (``execute``) cannot change journaling or durability, attach files,
  load extensions or control transactions, in daemon and embedded mode;
  ``--read-only`` serves reads only; ``--no-raw-sql`` refuses ``execute`` and
  serves the model ops.

The uid tests need root and ``setpriv`` and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import (
    AccessDeniedError,
    AsyncDatabaseManager,
    BaseModel,
    Column,
    ProgrammingError,
    ReadOnlyError,
    ValidationError,
)
from fastquartdb.client.connection import SocketTransport
from tests.helpers import DaemonProcess, daemon_in_process

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
#: A group no account uses, given to the unprivileged process as its primary group.
SHARED_GID = 4242

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run a process as another user"
    if os.geteuid() != 0
    else "setpriv is missing (util-linux)",
)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fqdb-access-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(
    code: str, *args: str, uid: int = NOBODY, gid: int = NOBODY, timeout: float = 60
) -> dict[str, Any]:
    """Run Python ``code`` as ``uid``/``gid`` (no other groups); returns what it prints as JSON."""
    proc = subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# A bare client: connect, read what the daemon says unprompted, then say hello and read.
RAW_CLIENT = r"""
import json, os, socket, struct, sys
import msgpack

def frames(data):
    out = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        out.append(msgpack.unpackb(data[4:4 + n], raw=False))
        data = data[4 + n:]
    return out

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(2.0)
sock.connect(sys.argv[1])
data, closed = b"", False
def read(until_close):
    global data, closed
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            return
        data += chunk
        if not until_close and frames(data):
            return
read(until_close=False)
if not closed and not frames(data):
    body = msgpack.packb({"id": 0, "op": "hello", "version": 1})
    try:
        sock.sendall(struct.pack(">I", len(body)) + body)
    except OSError:
        pass
    read(until_close=False)
replies = frames(data)
if replies and replies[-1].get("id") is None and not closed:
    read(until_close=True)  # a connection-level error: the daemon must close next
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "replies": frames(data), "closed": closed}))
"""

# The library's client: connect, insert a row, count.
LIBRARY_CLIENT = r"""
import asyncio, json, os, sys
from fastquartdb.client.connection import SocketTransport

async def main():
    socket_path, db, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if delay:
        # The refusal arrives before the client has sent its hello (a busy client loop).
        original = SocketTransport.request
        async def late(self, request):
            if request.get("op") == "hello":
                await asyncio.sleep(delay)
            return await original(self, request)
        SocketTransport.request = late
    try:
        transport = await SocketTransport.connect(socket_path, db)
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    try:
        await transport.request({"op": "ensure_table", "table": "shared",
                                 "columns": [{"name": "who", "type": "INTEGER"}]})
        await transport.request({"op": "insert", "table": "shared", "values": {"who": os.getuid()}})
        count = await transport.request({"op": "count", "table": "shared"})
        return {"count": count, "server": transport.server["pid"]}
    finally:
        await transport.close()

print(json.dumps(asyncio.run(main())))
"""


async def _stats(socket_path: str, db: str) -> dict[str, Any]:
    transport = await SocketTransport.connect(socket_path, db)
    try:
        result: dict[str, Any] = await transport.request({"op": "stats"})
        return result
    finally:
        await transport.close()


def _stop(proc: DaemonProcess) -> str:
    """SIGTERM, wait, and return what the daemon logged."""
    assert proc.proc is not None
    if proc.proc.poll() is None:
        proc.proc.send_signal(signal.SIGTERM)
    _, err = proc.proc.communicate(timeout=30)
    assert proc.proc.returncode == 0, err
    proc.stop()
    return err


# ---------------------------------------------------------------------------- (a) the socket


@pytest.mark.parametrize("umask", [0o000, 0o002, 0o022, 0o077])
def test_socket_is_0600_whatever_the_umask(db_path: str, umask: int) -> None:
    old = os.umask(umask)
    try:
        proc = DaemonProcess(db_path).start()
    finally:
        os.umask(old)
    try:
        assert proc.socket is not None
        info = os.stat(proc.socket)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_uid == os.getuid()
    finally:
        _stop(proc)


def test_socket_with_allow_gid_is_0660_for_that_group_whatever_the_umask(db_path: str) -> None:
    old = os.umask(0)
    try:
        proc = DaemonProcess(db_path, "--allow-gid", str(SHARED_GID)).start()
    finally:
        os.umask(old)
    try:
        assert proc.socket is not None
        info = os.stat(proc.socket)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == SHARED_GID
    finally:
        _stop(proc)


# ---------------------------------------------------------------------------- (b, c) peers


def _open_daemon(db: str, public: Path, *extra: str) -> DaemonProcess:
    """A root daemon whose socket anyone may reach through the file system."""
    proc = DaemonProcess(db, "--socket", str(public / "db.sock"), *extra).start()
    assert proc.socket is not None
    # Open the file-system door wide: only SO_PEERCRED stands between a user and the daemon.
    os.chmod(proc.socket, 0o666)
    return proc


@needs_root
def test_another_uid_is_refused_with_access_denied(db_path: str, public_dir: Path) -> None:
    proc = _open_daemon(db_path, public_dir)
    assert proc.socket is not None
    try:
        attempts = [as_user(RAW_CLIENT, proc.socket) for _ in range(3)]
        for seen in attempts:
            assert seen["uid"] == NOBODY
            assert seen["closed"], seen
            (reply,) = seen["replies"]
            assert reply["id"] is None and reply["ok"] is False, reply
            assert reply["error"]["code"] == "access_denied", reply
            assert f"uid {NOBODY}" in reply["error"]["message"]
        stats = asyncio.run(_stats(proc.socket, db_path))
        assert stats["refused"] == len(attempts), stats
        assert stats["clients"] == 1  # this stats connection only
    finally:
        log = _stop(proc)
    refusals = [line for line in log.splitlines() if "refused connection" in line]
    assert len(refusals) == len(attempts), log
    assert all(f"{NOBODY}" in line for line in refusals)


@needs_root
def test_another_uid_gets_access_denied_from_the_library_client(
    db_path: str, public_dir: Path
) -> None:
    proc = _open_daemon(db_path, public_dir)
    assert proc.socket is not None
    try:
        seen = as_user(LIBRARY_CLIENT, proc.socket, db_path, "0")
        # The refusal may win the race with the hello; either way it is what is raised.
        assert seen.get("error") == "AccessDeniedError", seen
        assert "count" not in seen
    finally:
        _stop(proc)


@needs_root
def test_refused_client_always_raises_access_denied(db_path: str, public_dir: Path) -> None:
    proc = _open_daemon(db_path, public_dir)
    assert proc.socket is not None
    try:
        seen = as_user(LIBRARY_CLIENT, proc.socket, db_path, "0.3")
        assert seen.get("error") == "AccessDeniedError", seen
        assert f"uid {NOBODY} may not use this database" in seen["message"]
    finally:
        _stop(proc)


@needs_root
def test_allow_gid_admits_that_group(db_path: str, public_dir: Path) -> None:
    proc = _open_daemon(db_path, public_dir, "--allow-gid", str(SHARED_GID))
    assert proc.socket is not None
    try:
        member = as_user(LIBRARY_CLIENT, proc.socket, db_path, "0", gid=SHARED_GID)
        assert member == {"count": 1, "server": proc.pid}, member
        again = as_user(RAW_CLIENT, proc.socket, gid=SHARED_GID)
        (hello,) = again["replies"]
        assert hello["ok"] is True and hello["result"]["pid"] == proc.pid
        # Another group is still refused.
        outsider = as_user(RAW_CLIENT, proc.socket, gid=NOBODY)
        (reply,) = outsider["replies"]
        assert reply["error"]["code"] == "access_denied", reply
        stats = asyncio.run(_stats(proc.socket, db_path))
        assert stats["refused"] == 1, stats
    finally:
        _stop(proc)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT who FROM shared").fetchall() == [(NOBODY,)]


# ---------------------------------------------------------------------------- (d) the client


@pytest.fixture
def squat_dir() -> Iterator[Path]:
    """A world-writable directory like /tmp, where anyone can create a socket first."""
    path = Path(tempfile.mkdtemp(prefix="fqdb-squat-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nobody_server(db: str, *options: str, groups: str = "--clear-groups") -> subprocess.Popen[str]:
    """A real fqdb-server for ``db`` running as nobody, started and ready."""
    proc = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            groups,
            sys.executable,
            "-m",
            "fastquartdb.server",
            db,
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("fqdb-server: serving"):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"fqdb-server did not start: {line!r} {err}")
    return proc


@pytest.fixture
def nobody_daemon(squat_dir: Path) -> Iterator[tuple[str, str, int]]:
    """A real fqdb-server running as nobody on a database this user (root) owns;
    yields (db, socket, pid)."""
    db = str(squat_dir / "app.db")
    sock = str(squat_dir / "app.db.sock")
    # Ours, but writable by all: a squatter can serve it, and must still be refused.
    sqlite3.connect(db).close()
    os.chmod(db, 0o666)
    proc = nobody_server(db, "--socket", sock)
    try:
        assert os.stat(sock).st_uid == NOBODY
        yield db, sock, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@needs_root
async def test_client_refuses_a_daemon_of_another_user(
    nobody_daemon: tuple[str, str, int],
) -> None:
    db, sock, _pid = nobody_daemon
    # The socket is ours to open (root), but it is served by uid 65534, which neither
    # we are nor owns the database file.
    with pytest.raises(AccessDeniedError, match=f"served by uid {NOBODY}"):
        await SocketTransport.connect(sock, db)
    with pytest.raises(AccessDeniedError, match=f"served by uid {NOBODY}"):
        await AsyncDatabaseManager.init_engine(db, mode="daemon", socket=sock)
    # mode="auto" must not talk to it either: refuse, or run embedded on the file itself.
    try:
        manager = await AsyncDatabaseManager.init_engine(db, mode="auto", socket=sock)
    except AccessDeniedError as exc:
        assert isinstance(exc, PermissionError)
    else:
        assert manager.mode == "embedded"
        await AsyncDatabaseManager.close()


@needs_root
def test_a_dedicated_daemon_user_serves_its_group() -> None:
    """The deployment of docs/DEPLOY.md with a user of its own: the daemon runs as the
    owner of the data (here nobody, in the shared group) with --allow-gid; a worker of
    another uid in that group is admitted by the daemon and trusts it, because the
    daemon's uid owns the database file."""
    home = Path(tempfile.mkdtemp(prefix="fqdb-owner-", dir="/tmp"))
    try:
        home.chmod(0o755)
        os.chown(home, NOBODY, NOBODY)
        db, sock = str(home / "app.db"), str(home / "app.db.sock")
        proc = nobody_server(db, "--allow-gid", str(SHARED_GID), groups=f"--groups={SHARED_GID}")
        try:
            assert os.stat(db).st_uid == NOBODY and os.stat(sock).st_gid == SHARED_GID
            worker = as_user(LIBRARY_CLIENT, sock, db, "0", uid=4243, gid=SHARED_GID)
            assert worker == {"count": 1, "server": proc.pid}, worker
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT who FROM shared").fetchall() == [(4243,)]
    finally:
        shutil.rmtree(home, ignore_errors=True)


# The squatter: listen where the application expects its daemon, record what arrives.
SQUATTER = r"""
import json, os, socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
server.listen(1)
print("listening", flush=True)
server.settimeout(30)
conn, _ = server.accept()
conn.settimeout(3)
got = b""
try:
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
except socket.timeout:
    pass
print(json.dumps({"bytes": len(got)}), flush=True)
"""


@needs_root
async def test_a_squatted_socket_receives_nothing(squat_dir: Path) -> None:
    sock = str(squat_dir / "app.db.sock")
    squatter = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-c",
            SQUATTER,
            sock,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == "listening"
        with pytest.raises(AccessDeniedError):
            await SocketTransport.connect(sock, str(squat_dir / "app.db"))
        out, err = squatter.communicate(timeout=30)
        assert json.loads(out.strip().splitlines()[-1]) == {"bytes": 0}, err
    finally:
        if squatter.poll() is None:
            squatter.kill()
            squatter.communicate()


# ---------------------------------------------------------------------------- (e) raw SQL


def other_db(tmp: Path) -> str:
    return str(tmp / "other.db")


REFUSED_SQL: list[str] = [
    "PRAGMA journal_mode=DELETE",
    "PRAGMA journal_mode = MEMORY",
    "PRAGMA main.journal_mode=OFF",
    "PRAGMA synchronous=OFF",
    "PRAGMA synchronous = 0",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA wal_autocheckpoint=0",
    "PRAGMA wal_autocheckpoint = 1000000",
    "PRAGMA wal_checkpoint",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA query_only=ON",
    "PRAGMA writable_schema=ON",
    "PRAGMA busy_timeout=0",
    "PRAGMA journal_size_limit=0",
    "ATTACH DATABASE '{other}' AS other",
    "ATTACH '{other}' AS other",
    "ATTACH ':memory:' AS mem",
    "DETACH DATABASE temp",
    "SELECT load_extension('/nonexistent/ext.so')",
    "SELECT load_extension('x', 'entry')",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "BEGIN EXCLUSIVE",
    "BEGIN DEFERRED TRANSACTION",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT sp1",
    'SAVEPOINT "fqdb_request"',
    "RELEASE sp1",
    'RELEASE "fqdb_request"',
    "ROLLBACK TO sp1",
    'ROLLBACK TO "fqdb_request"',
]


def define_note() -> type[BaseModel]:
    class Note(BaseModel):
        __tablename__ = "note"
        id = Column("INTEGER", primary_key=True)
        text = Column("TEXT", nullable=False)

    return Note


@pytest.fixture(params=["embedded", "daemon"])
async def manager(
    request: pytest.FixtureRequest, db_path: str
) -> AsyncIterator[AsyncDatabaseManager]:
    AsyncDatabaseManager._models.clear()  # this module's models only; conftest restores
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "daemon":
            await stack.enter_async_context(daemon_in_process(db_path))
        note = define_note()
        db = await AsyncDatabaseManager.init_engine(db_path, mode=str(request.param))
        assert db.mode == request.param
        # The engine has now run BEGIN IMMEDIATE, SAVEPOINT, RELEASE and COMMIT itself,
        # so they sit in sqlite3's statement cache.
        await note.insert_many([{"text": "a"}, {"text": "b"}])
        await note.insert({"text": "c"})
        yield db
        await AsyncDatabaseManager.close()


async def _settings(db: AsyncDatabaseManager) -> dict[str, Any]:
    names = [
        "journal_mode",
        "synchronous",
        "wal_autocheckpoint",
        "locking_mode",
        "foreign_keys",
        "query_only",
        "busy_timeout",
        "journal_size_limit",
    ]
    settings = {}
    for name in names:
        result = await db.execute(f"PRAGMA {name}")
        settings[name] = result["rows"][0][0]
    result = await db.execute("PRAGMA database_list")
    settings["databases"] = sorted(row[1] for row in result["rows"])
    return settings


@pytest.mark.parametrize("sql", REFUSED_SQL)
async def test_execute_cannot_change_what_the_engine_manages(
    manager: AsyncDatabaseManager, sql: str, tmp_path: Path
) -> None:
    statement = sql.format(other=other_db(tmp_path))
    before = await _settings(manager)
    assert before["journal_mode"] == "wal"
    assert before["synchronous"] == 2  # FULL
    assert before["foreign_keys"] == 1
    with pytest.raises(ValidationError, match="refused") as caught:
        await manager.execute(statement)
    assert str(caught.value)  # says what and why
    assert await _settings(manager) == before
    assert not os.path.exists(other_db(tmp_path))
    # The connection is fine afterwards, and the rows are all there.
    note = AsyncDatabaseManager._models["note"]
    assert await note.count() == 3  # type: ignore[attr-defined]
    await note.insert({"text": "d"})  # type: ignore[attr-defined]
    assert await note.count() == 4  # type: ignore[attr-defined]


async def test_execute_refusals_inside_a_transaction(manager: AsyncDatabaseManager) -> None:
    """A refused statement in an interactive transaction leaves it open and intact."""
    note = AsyncDatabaseManager._models["note"]
    async with manager.transaction():
        await note.insert({"text": "in txn"})  # type: ignore[attr-defined]
        for sql in ("COMMIT", "ROLLBACK", "PRAGMA journal_mode=DELETE", "BEGIN"):
            with pytest.raises(ValidationError, match="refused"):
                await manager.execute(sql)
        assert await note.count() == 4  # type: ignore[attr-defined]
    assert await note.count() == 4  # type: ignore[attr-defined]
    assert (await manager.execute("PRAGMA journal_mode"))["rows"] == [["wal"]]


async def test_reading_the_managed_pragmas_is_allowed(manager: AsyncDatabaseManager) -> None:
    settings = await _settings(manager)
    assert settings["journal_mode"] == "wal"
    assert settings["locking_mode"] == "normal"
    assert settings["databases"] == ["main"]


# ---------------------------------------------------------------------------- read-only


def _seed(db_path: str) -> None:
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        conn.executemany("INSERT INTO note (text) VALUES (?)", [("a",), ("b",), ("c",)])
        conn.commit()


def _rows(db_path: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT id, text FROM note ORDER BY id").fetchall()


@pytest.fixture
def read_only_daemon(db_path: str) -> Iterator[DaemonProcess]:
    _seed(db_path)
    proc = DaemonProcess(db_path, "--read-only").start()
    try:
        yield proc
    finally:
        _stop(proc)


WRITES: dict[str, dict[str, Any]] = {
    "insert": {"op": "insert", "table": "note", "values": {"text": "x"}},
    "insert_many": {"op": "insert_many", "table": "note", "columns": ["text"], "rows": [["x"]]},
    "update": {
        "op": "update",
        "table": "note",
        "values": {"text": "x"},
        "where": [[["id", "=", 1]]],
    },
    "update all": {"op": "update", "table": "note", "values": {"text": "x"}, "all_rows": True},
    "delete": {"op": "delete", "table": "note", "where": [[["id", "=", 1]]]},
    "upsert": {"op": "upsert", "table": "note", "values": {"id": 1, "text": "x"}, "conflict": "id"},
    "execute write": {"op": "execute", "sql": "DELETE FROM note"},
    "execute read": {"op": "execute", "sql": "SELECT count(*) FROM note"},
    "ensure_table new": {
        "op": "ensure_table",
        "table": "other",
        "columns": [{"name": "id", "type": "INTEGER", "primary_key": True}],
    },
}


async def test_read_only_serves_reads_and_refuses_writes(
    read_only_daemon: DaemonProcess, db_path: str
) -> None:
    before = _rows(db_path)
    assert read_only_daemon.socket is not None
    transport = await SocketTransport.connect(read_only_daemon.socket, db_path)
    try:
        assert transport.server["read_only"] is True
        fetched = await transport.request({"op": "fetch", "table": "note", "order_by": "id"})
        assert [tuple(row) for row in fetched["rows"]] == before
        assert await transport.request({"op": "count", "table": "note"}) == 3
        assert await transport.request({"op": "ping"}) == "pong"
        aggregate = await transport.request(
            {"op": "aggregate", "table": "note", "aggregates": {"n": ["count", "*"]}}
        )
        assert aggregate["rows"] == [[3]]
        # The table already matches: nothing to change, so ensure_table succeeds.
        same = await transport.request(
            {
                "op": "ensure_table",
                "table": "note",
                "columns": [
                    {"name": "id", "type": "INTEGER", "primary_key": True},
                    {"name": "text", "type": "TEXT", "nullable": False},
                ],
            }
        )
        assert same == {"created": False, "added": []}
        refused = {}
        for label, request in WRITES.items():
            try:
                await transport.request(dict(request))
            except ReadOnlyError:
                refused[label] = "read_only"
            except Exception as exc:
                refused[label] = f"{type(exc).__name__}: {exc}"
            else:
                refused[label] = "accepted"
        assert refused == dict.fromkeys(WRITES, "read_only")
        # A transaction cannot write either.
        await transport.request({"op": "begin", "txn": 1})
        with pytest.raises(ReadOnlyError):
            await transport.request(
                {"op": "insert", "table": "note", "values": {"text": "x"}, "txn": 1}
            )
        await transport.request({"op": "rollback", "txn": 1})
    finally:
        await transport.close()
    assert _rows(db_path) == before
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["note"]


async def test_read_only_through_the_models(read_only_daemon: DaemonProcess, db_path: str) -> None:
    AsyncDatabaseManager._models.clear()
    note = define_note()
    await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
    assert [row["text"] for row in await note.fetch(order_by="id")] == ["a", "b", "c"]
    with pytest.raises(ReadOnlyError):
        await note.insert({"text": "x"})
    with pytest.raises(ReadOnlyError):
        await note.update({"text": "x"}, filters={"id": 1})
    with pytest.raises(ReadOnlyError):
        await note.delete(filters={"id": 1})
    assert await note.count() == 3
    await AsyncDatabaseManager.close()


# ---------------------------------------------------------------------------- no raw SQL


async def test_no_raw_sql_refuses_execute_and_serves_the_model_ops(db_path: str) -> None:
    proc = DaemonProcess(db_path, "--no-raw-sql").start()
    try:
        assert proc.socket is not None
        AsyncDatabaseManager._models.clear()
        note = define_note()
        db = await AsyncDatabaseManager.init_engine(db_path, mode="daemon")
        assert db.transport.current.server["raw_sql"] is False  # type: ignore[attr-defined]
        for sql in ("SELECT 1", "SELECT * FROM note", "DELETE FROM note", "PRAGMA journal_mode"):
            with pytest.raises(ProgrammingError, match="no-raw-sql"):
                await db.execute(sql)
        with pytest.raises(ProgrammingError, match="no-raw-sql"):
            await db.fetch_all("SELECT 1")
        # Everything structured still works.
        first = await note.insert({"text": "a"})
        await note.insert_many([{"text": "b"}, {"text": "c"}])
        assert await note.count() == 3
        assert await note.update({"text": "A"}, filters={"id": first}) == 1
        assert [r["text"] for r in await note.fetch(order_by="id")] == ["A", "b", "c"]
        assert await note.aggregate({"n": ("count", "*")}) == [{"n": 3}]
        assert await note.delete(filters={"text": "b"}) == 1
        async with db.transaction():
            await note.insert({"text": "d"})
        assert await note.count() == 3
        await AsyncDatabaseManager.close()
    finally:
        _stop(proc)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM note").fetchone()[0] == 3


def test_no_raw_sql_and_read_only_are_announced(db_path: str) -> None:
    _seed(db_path)
    proc = DaemonProcess(db_path, "--read-only", "--no-raw-sql").start()
    try:
        assert proc.socket is not None

        async def hello() -> dict[str, Any]:
            transport = await SocketTransport.connect(proc.socket or "", db_path)
            try:
                return transport.server
            finally:
                await transport.close()

        server = asyncio.run(hello())
        assert server["read_only"] is True and server["raw_sql"] is False
    finally:
        _stop(proc)
    deadline = time.monotonic() + 5
    while os.path.exists(proc.socket) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(proc.socket)
