"""The daemon's files: one owner per file whatever the path, private modes, a private socket dir.

* Row 11 of issue 13: a hard link (``ln app.db other.db``) or a symlink and a
  daemon on each path: the second refuses to start with a clear message
  (before: both started, and the file was corrupted).
* The database, ``-wal`` and ``-shm`` are created 0600 under umask 022 (0640
  with ``--allow-gid``); an existing file readable by others gets a warning.
* Row 13: the socket for a long database path lives in a 0700 directory of
  ours (``$XDG_RUNTIME_DIR``, or ``<tmp>/fqdb-<uid>``), never under a
  predictable name in ``/tmp``; a squatted directory stops the daemon with a
  clear message, and an ``auto`` client warns and runs embedded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from fastquartdb.protocol import default_socket_path
from fastquartdb.protocol.address import runtime_dir
from tests.helpers import DaemonProcess


class PrivateNote(BaseModel):
    __tablename__ = "private_note"

    id = Column("INTEGER", primary_key=True)
    body = Column("TEXT")


def _start_fails(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastquartdb.server", db, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_hard_link_and_symlink_get_one_owner(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    first = DaemonProcess(str(db)).start()
    try:
        os.link(db, tmp_path / "other.db")
        (tmp_path / "sub").mkdir()
        os.link(db, tmp_path / "sub" / "third.db")
        os.symlink(db, tmp_path / "alias.db")
        for other in ("other.db", "sub/third.db", "alias.db"):
            result = _start_fails(str(tmp_path / other))
            assert result.returncode == 1, (other, result.stdout, result.stderr)
            assert "another fqdb-server already serves" in result.stderr, result.stderr
        # A hard link names the file's device and inode: the operator can find the twin.
        assert f"inode {os.stat(db).st_ino}" in _start_fails(str(tmp_path / "other.db")).stderr
    finally:
        assert first.stop() == 0
    # Released with the daemon: the link may now be served.
    second = DaemonProcess(str(tmp_path / "other.db")).start()
    assert second.stop() == 0


def _modes(db: Path) -> dict[str, int]:
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
        if p.exists()
    }


def test_new_files_are_private_under_umask_022(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    old = os.umask(0o022)
    try:
        proc = DaemonProcess(str(db)).start()
    finally:
        os.umask(old)
    try:

        async def write() -> None:
            await AsyncDatabaseManager.init_engine(db, mode="daemon")
            await PrivateNote.insert({"body": "secret"})
            await AsyncDatabaseManager.close()

        asyncio.run(write())
        modes = _modes(db)
        assert set(modes) == {"app.db", "app.db-wal", "app.db-shm"}, modes
        assert set(modes.values()) == {0o600}, modes
    finally:
        assert proc.stop() == 0
    assert "readable by every local user" not in proc.stderr_text


def test_allow_gid_files_are_0640_and_group_owned(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    # Root may give the file any group; anyone else one of their own.
    gid = 4242 if os.geteuid() == 0 else os.getgid()
    old = os.umask(0o022)
    try:
        proc = DaemonProcess(str(db), "--allow-gid", str(gid)).start()
    finally:
        os.umask(old)
    try:

        async def write() -> None:
            await AsyncDatabaseManager.init_engine(db, mode="daemon")
            await PrivateNote.insert({"body": "shared"})
            await AsyncDatabaseManager.close()

        asyncio.run(write())
        modes = _modes(db)
        assert set(modes) == {"app.db", "app.db-wal", "app.db-shm"}, modes
        assert set(modes.values()) == {0o640}, modes
        assert {os.stat(f"{db}{suffix}").st_gid for suffix in ("", "-wal", "-shm")} == {gid}
    finally:
        assert proc.stop() == 0


def test_existing_world_readable_file_is_warned_about(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    db.touch()
    db.chmod(0o644)
    proc = DaemonProcess(str(db)).start()
    assert proc.stop() == 0
    assert proc.proc is not None
    # Not changed behind the operator's back; said at start, with the fix.
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    err = proc.stderr_text
    assert "readable by every local user (mode 0644)" in err, err
    assert f"chmod 600 {db}*" in err, err


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir of our own as TMPDIR, so the runtime dir fqdb-<uid> starts absent."""
    base = Path(tempfile.mkdtemp(prefix="fqdb-rt-"))
    base.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("FQDB_SOCKET", raising=False)
    monkeypatch.setenv("TMPDIR", str(base))
    tempfile.tempdir = None  # gettempdir() caches its answer
    yield base
    tempfile.tempdir = None
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _long_db(tmp_path: Path) -> Path:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    return deep / "app.db"


def test_long_path_socket_lives_in_a_private_dir(tmp_path: Path, private_tmp: Path) -> None:
    db = _long_db(tmp_path)
    socket = default_socket_path(db)
    assert os.path.dirname(socket) == runtime_dir() == str(private_tmp / f"fqdb-{os.getuid()}")
    proc = DaemonProcess(str(db)).start()
    try:
        assert proc.socket == socket
        info = os.lstat(runtime_dir())
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()

        async def use() -> str:
            db_ = await AsyncDatabaseManager.init_engine(db)
            mode = db_.mode
            await AsyncDatabaseManager.close()
            return mode

        assert asyncio.run(use()) == "daemon"
    finally:
        assert proc.stop() == 0


def test_squatted_runtime_dir_refuses_start_and_clients_fall_back(
    tmp_path: Path, private_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = _long_db(tmp_path)
    squat = Path(runtime_dir())
    squat.mkdir(mode=0o777)
    squat.chmod(0o777)  # what another user would leave: writable by everyone
    result = _start_fails(str(db))
    assert result.returncode == 1, result.stderr
    assert f"{squat} may be written by other users" in result.stderr, result.stderr
    if os.geteuid() != 0:
        return  # giving the directory to another user needs root
    os.chown(squat, 65534, 65534)
    squat.chmod(0o700)
    result = _start_fails(str(db))
    assert result.returncode == 1
    assert "belongs to uid 65534" in result.stderr, result.stderr

    async def use() -> str:
        manager = await AsyncDatabaseManager.init_engine(db)
        mode = manager.mode
        await AsyncDatabaseManager.close()
        return mode

    with caplog.at_level(logging.WARNING, logger="fastquartdb.client"):
        assert asyncio.run(use()) == "embedded"
    assert any("belongs to uid 65534" in r.getMessage() for r in caplog.records), caplog.text


# Run as ``nobody`` whose primary group is not the admitted one: SQLite gives new -wal/-shm
# the process's group (it copies the database's owner only as root), so the daemon must.
GROUP_SCRIPT = r"""
import asyncio, json, os, sys
from fastquartdb.client.connection import SocketTransport
from fastquartdb.server import ServerConfig, serve

db = sys.argv[1]
stop = asyncio.Event()
seen = {}

async def use(daemon):
    transport = await SocketTransport.connect(daemon.config.socket, db)
    await transport.request({"op": "execute", "sql": "CREATE TABLE t (x)", "params": []})
    await transport.request({"op": "execute", "sql": "INSERT INTO t VALUES (1)", "params": []})
    await transport.close()
    for suffix in ("", "-wal", "-shm"):
        info = os.stat(db + suffix)
        seen[suffix or "db"] = [info.st_gid, oct(info.st_mode & 0o777)]
    stop.set()

async def main():
    tasks = []
    config = ServerConfig(db=db, allow_gids=[int(sys.argv[2])])
    await serve(config, shutdown_trigger=stop.wait,
                ready=lambda d: tasks.append(asyncio.ensure_future(use(d))))
    await asyncio.gather(*tasks)

os.umask(0o022)
asyncio.run(main())
print(json.dumps(seen))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the daemon as another user",
)
def test_allow_gid_group_reaches_wal_and_shm_as_a_plain_user() -> None:
    shared_gid = 4242
    home = Path(tempfile.mkdtemp(prefix="fqdb-group-", dir="/tmp"))
    try:
        os.chown(home, 65534, 65534)
        home.chmod(0o755)
        db = str(home / "app.db")
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                f"--groups={shared_gid}",
                sys.executable,
                "-c",
                GROUP_SCRIPT,
                db,
                str(shared_gid),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        assert seen == {name: [shared_gid, "0o640"] for name in ("db", "-wal", "-shm")}, seen
    finally:
        shutil.rmtree(home, ignore_errors=True)
