"""What runs on the file itself, beside a daemon if one serves it: dump, backup, vacuum;
and ``restore``, which makes a new file from a Litestream replica.

Why a separate connection is safe while ``fqdb-server`` serves the file: the
file is in WAL mode, so a reader sees one consistent snapshot (the last
commit before its read transaction began) and never blocks the daemon's
writer. ``dump`` and ``backup`` open the file read-only (``mode=ro``) and
read inside one transaction; ``vacuum`` is a write and waits for the write
lock like any other writer (SQLite's own locking keeps it safe; the daemon's
requests wait for it up to their busy timeout).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from typing import TextIO

from ..engine.config import DEFAULT_BUSY_TIMEOUT
from ..server.replication import ReplicationError, find_litestream, replica_url
from .errors import CommandError

__all__ = ["backup", "dump", "open_read_only", "require_file", "restore", "vacuum"]

#: How long vacuum waits for the write lock (a daemon's batch, another writer).
VACUUM_BUSY_TIMEOUT = 30.0


def require_file(path: str) -> str:
    """Return ``path`` if it is an existing regular file; never create it.

    Raises:
        CommandError: it does not exist or is not a file.
    """
    if path.startswith("dqlite://"):
        raise CommandError(
            f"this command works on a database file, not on a dqlite cluster ({path}); "
            "read a cluster's tables with 'fqdb rows URL TABLE --nl'"
        )
    if not os.path.exists(path):
        raise CommandError(f"no such database file: {path}")
    if not os.path.isfile(path):
        raise CommandError(f"not a database file: {path} (a directory or a device?)")
    return path


def open_read_only(path: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sqlite3.Connection:
    """A read-only connection to ``path``: it can neither create nor change the file.

    Raises:
        CommandError: the file cannot be opened or is not a database, naming it.
    """
    uri = pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise CommandError(f"{path}: {exc}") from None
    try:
        # Fails here, not halfway through, if the file is not a database.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CommandError(f"{path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _snapshot(path: str) -> Iterator[sqlite3.Connection]:
    conn = open_read_only(path)
    try:
        # One read transaction: every statement below sees the same commit.
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def dump(path: str, out: TextIO) -> int:
    """Write the whole database as SQL text (schema and rows); returns the statement count."""
    count = 0
    with _snapshot(require_file(path)) as conn:
        for statement in conn.iterdump():
            out.write(statement)
            out.write("\n")
            count += 1
    return count


def backup(path: str, dest: str, *, force: bool = False) -> dict[str, int | str]:
    """Copy ``path`` to ``dest`` with SQLite's online backup API, as one consistent snapshot.

    The copy is written beside ``dest`` under a temporary name and renamed
    into place only when complete, so ``dest`` is never a half-written file.
    It is a self-contained file (rollback journal, no ``-wal`` needed) with
    the source's permission bits.

    Returns:
        ``{"source", "dest", "pages", "bytes"}``.

    Raises:
        CommandError: ``dest`` exists (without ``force``) or is the source itself.
    """
    require_file(path)
    if os.path.exists(dest):
        if os.path.realpath(dest) == os.path.realpath(path):
            raise CommandError(f"{dest} is the database itself; choose another destination")
        if not force:
            raise CommandError(f"{dest} exists; remove it or pass --force to replace it")
        if not os.path.isfile(dest):
            raise CommandError(f"{dest} exists and is not a file")
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        # Said here: the temporary file below would otherwise be what the error names.
        raise CommandError(f"no such directory: {directory} (for {dest})")
    mode = os.stat(path).st_mode & 0o777
    # Created 0600: the copy holds the same data as the source, readable by nobody else
    # until it has the source's own permission bits.
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        source = open_read_only(path)
        try:
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                # pages=-1 (the default): the whole copy is one step under one read
                # transaction, so it is a snapshot of a single commit even while the
                # daemon keeps writing (WAL readers never block the writer).
                source.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")
                pages = int(target.execute("PRAGMA page_count").fetchone()[0])
            finally:
                target.close()
        finally:
            source.close()
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        for leftover in (tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
    return {"source": path, "dest": dest, "pages": pages, "bytes": os.path.getsize(dest)}


def vacuum(path: str) -> dict[str, int | str]:
    """Rebuild the file without free pages.

    Returns:
        ``{"database", "bytes_before", "bytes_after"}`` (page count times page size).

    Raises:
        CommandError: the write lock stayed taken for :data:`VACUUM_BUSY_TIMEOUT`.
    """
    require_file(path)
    conn = sqlite3.connect(path, timeout=VACUUM_BUSY_TIMEOUT, isolation_level=None)
    try:

        def size() -> int:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            return int(pages) * int(page_size)

        try:
            before = size()
        except sqlite3.DatabaseError as exc:
            raise CommandError(f"{path}: {exc}") from None
        try:
            conn.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise CommandError(
                    f"vacuum of {path}: the database stayed locked for "
                    f"{VACUUM_BUSY_TIMEOUT:g} s ({exc}); retry when it is less busy"
                ) from None
            raise
        after = size()
    finally:
        conn.close()
    return {"database": path, "bytes_before": before, "bytes_after": after}


def _served(path: str) -> bool:
    """Whether an ``fqdb-server`` holds ``path``'s owner lock right now.

    Raises:
        CommandError: the lock file exists but this user may not open it, so nobody
            can tell (it is 0600 and belongs to the daemon's user).
    """
    lock = path + ".server.lock"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except PermissionError:
        raise CommandError(
            f"cannot tell whether an fqdb-server serves {path} ({lock} is not readable by "
            "this user); run fqdb restore as the daemon's user"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _take_over(new: str, dest: str) -> None:
    """Put ``new`` at ``dest``: the old file's mode and owner (0600 for a new one), and
    none of the old file's ``-wal``/``-shm``, which would otherwise be read as the new
    file's. The old sidecars are moved aside first and put back if the rename fails."""
    try:
        old = os.stat(dest)
    except FileNotFoundError:
        os.chmod(new, 0o600)
    else:
        os.chmod(new, old.st_mode & 0o7777)
        with contextlib.suppress(PermissionError):
            os.chown(new, old.st_uid, old.st_gid)
    moved: list[tuple[str, str]] = []
    try:
        for sidecar in (dest + "-wal", dest + "-shm"):
            if os.path.exists(sidecar):
                aside = new + sidecar[len(dest) :] + ".old"
                os.replace(sidecar, aside)
                moved.append((aside, sidecar))
        os.replace(new, dest)
    except BaseException:
        for aside, sidecar in moved:
            os.replace(aside, sidecar)
        raise
    for aside, _ in moved:
        os.unlink(aside)


def restore(
    url: str, dest: str, *, timestamp: str | None = None, force: bool = False
) -> dict[str, object]:
    """Rebuild a database from a Litestream replica (``fqdb-server --replicate``) into ``dest``.

    Litestream writes a temporary file beside ``dest``; it is checked with
    ``PRAGMA integrity_check`` and renamed into place only when whole and sound,
    so a failed restore leaves ``dest`` as it was. A new file is 0600 (it holds
    the same data as the replica); a replaced one keeps its mode and owner.

    Returns:
        ``{"url", "dest", "tables", "bytes", "integrity"}``.

    Raises:
        CommandError: ``dest`` exists (without ``force``) or a daemon serves it; Litestream
            is missing, finds no backup at ``url`` or fails; the result is not sound.
    """
    try:
        source = replica_url(url)
        binary = find_litestream()
    except ReplicationError as exc:
        raise CommandError(str(exc)) from None
    if os.path.exists(dest):
        if not force:
            raise CommandError(f"{dest} exists; choose a new path or pass --force to replace it")
        if not os.path.isfile(dest):
            raise CommandError(f"{dest} exists and is not a file")
        if _served(dest):
            raise CommandError(f"an fqdb-server serves {dest}; stop it before replacing the file")
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise CommandError(f"no such directory: {directory}")
    tmp = os.path.join(directory, f".{os.path.basename(dest)}.restoring-{os.getpid()}")
    command = [binary, "restore", "-o", tmp]
    if timestamp:
        command += ["-timestamp", timestamp]
    command.append(source)
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            words = (done.stderr or done.stdout).strip().splitlines()
            raise CommandError(
                f"litestream could not restore {source}: {words[-1] if words else 'no output'}"
            )
        if not os.path.exists(tmp):
            raise CommandError(f"no backup found at {source}")
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            verdict = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
            tables = int(
                conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
            )
            conn.execute("PRAGMA journal_mode = WAL")  # what the daemon expects to find
        finally:
            conn.close()
        if verdict != "ok":
            raise CommandError(f"the restored copy of {source} is not sound: {verdict}")
        _take_over(tmp, dest)
    finally:
        for leftover in (
            tmp,
            tmp + "-wal",
            tmp + "-shm",
            tmp + "-journal",
            tmp + "-wal.old",
            tmp + "-shm.old",
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return {
        "url": source,
        "dest": dest,
        "tables": tables,
        "bytes": os.path.getsize(dest),
        "integrity": verdict,
    }
