"""Opening the writer's (or a reader's) sqlite3 connection: WAL, durability, busy timeout.

:func:`connect` is :meth:`Engine.connect <fastquartdb.engine.executor.Engine.connect>`:
it opens a file in autocommit mode and sets the pragmas every FastQuartDB
connection runs with, retrying the switch to WAL that two processes opening a
new file at once can race on.
"""

from __future__ import annotations

import sqlite3
import time

from ..protocol.errors import OperationalError, ValidationError, brief
from .config import DEFAULT_BUSY_TIMEOUT, DEFAULT_SYNCHRONOUS
from .resultcodes import translate_sqlite_error

__all__ = ["connect"]


def _switch_to_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """``PRAGMA journal_mode = WAL``, retried: two processes opening a new file at once can
    get SQLITE_BUSY at once (SQLite skips the busy handler where waiting could deadlock)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise translate_sqlite_error(exc) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def connect(
    path: str,
    *,
    synchronous: str = DEFAULT_SYNCHRONOUS,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    read_only: bool = False,
    wal_autocheckpoint: int | None = None,
) -> sqlite3.Connection:
    """Open and configure a connection: WAL, ``synchronous``, foreign keys, busy timeout.

    Autocommit mode (``isolation_level=None``): the engine issues every
    ``BEGIN`` itself, so no implicit deferred transaction ever starts.
    ``wal_autocheckpoint=0`` leaves checkpoints to someone else (Litestream,
    when the daemon replicates); None keeps SQLite's default (1000 pages).
    """
    if synchronous.lower() not in ("full", "normal", "extra", "off"):
        raise ValidationError(f"synchronous must be 'full' or 'normal', got {brief(synchronous)}")
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        timeout=busy_timeout,
        cached_statements=512,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = _switch_to_wal(conn, busy_timeout)
        if mode.lower() not in ("wal", "memory"):
            raise OperationalError(
                f"could not switch {brief(path)} to WAL (journal_mode is {mode})"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = ON")
        if wal_autocheckpoint is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise translate_sqlite_error(exc) from None
    except BaseException:
        conn.close()
        raise
    return conn
