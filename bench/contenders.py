"""What each contender does inside a worker process: open, one request, close.

Every contender answers the same few calls (``insert``, ``read``, ``update``,
``bulk``) on the same table, so a scenario is written once and run against
each. Each method is one user-visible request: what a web handler would
await. Latency is measured by the caller around that await.

Contenders (names used on the command line, in JSON and in charts):

``daemon``            fastquartdb models talking to a real ``fqdb-server``; reads run on the
                      worker's own read-only connections (local readers, the default).
``daemon_writer_reads`` the same with ``readers=0``: every read goes to the daemon (as before
                      issue 18); the baseline of R4.
``daemon_nokeys``     ``daemon`` with ``request_keys=False``: writes carry no request key (as
                      before issue 14); the baseline of K1/K2.
``daemon_changes``    the daemon with change capture on for ``user`` (``init_engine(changes=
                      ["user"])``: the log's triggers in every write), S10 against ``daemon``.
``embedded``          fastquartdb models, engine in-process (``mode="embedded"``).
``embedded_filelock`` the same with ``use_filelock=True`` (the README's multi-process advice).
``aiosqlite``         one plain aiosqlite connection per process: WAL, ``busy_timeout``,
                      autocommit, one statement (one thread hop) per request.
``sqlalchemy``        SQLAlchemy 2 async Core over aiosqlite, default pool, one
                      ``engine.begin()`` transaction per insert.
``sqlite3``           plain synchronous sqlite3 on the event loop's thread: the floor.
``dqlite``            the models on a dqlite cluster, each process a direct client
                      (``init_engine(url)``): D1's baseline.
``dqlite_daemon``     the same through one ``fqdb-server dqlite://...`` per host
                      (``init_engine(url, socket=..., mode="daemon")``), D1 (bench/dqlite_daemon.py).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from fastquartdb.engine.config import DEFAULT_BUSY_TIMEOUT

__all__ = [
    "BUSY_TIMEOUT",
    "CONTENDERS",
    "RANGE_ROWS",
    "USER_DDL",
    "Client",
    "User",
    "make_client",
]

#: Seconds any contender waits for another process's write lock (fastquartdb's default too).
BUSY_TIMEOUT = DEFAULT_BUSY_TIMEOUT

#: The table every scenario uses; the same DDL fastquartdb's ``ensure_table`` writes for ``User``.
USER_DDL = 'CREATE TABLE "user" ("id" INTEGER PRIMARY KEY, "username" TEXT NOT NULL, "age" INTEGER)'

_INSERT = 'INSERT INTO "user" ("username", "age") VALUES (?, ?)'
_SELECT = 'SELECT "id", "username", "age" FROM "user" WHERE "id" = ?'
_UPDATE = 'UPDATE "user" SET "age" = ? WHERE "id" = ?'
_RANGE = 'SELECT "id", "username", "age" FROM "user" WHERE "id" BETWEEN ? AND ?'
#: Rows per range read (S7).
RANGE_ROWS = 100


class User(BaseModel):
    id = Column("INTEGER", primary_key=True)
    username = Column("TEXT", nullable=False)
    age = Column("INTEGER")


class Client:
    """One contender's connection inside one worker process."""

    def __init__(self, db: str, synchronous: str, socket: str | None) -> None:
        self.db = db
        self.synchronous = synchronous
        self.socket = socket

    async def open(self) -> None:
        """Connect and configure; the table already exists."""

    async def close(self) -> None:
        """Release everything (threads, sockets)."""

    async def insert(self, username: str, age: int) -> Any:
        """Insert one row; returns once it is committed."""
        raise NotImplementedError(f"{type(self).__name__} does not take part in insert scenarios")

    async def read(self, pk: int) -> Any:
        """Read one row by primary key."""
        raise NotImplementedError(f"{type(self).__name__} does not take part in read scenarios")

    async def update(self, pk: int, age: int) -> Any:
        """Change one row by primary key; returns once it is committed."""
        raise NotImplementedError(f"{type(self).__name__} does not take part in write scenarios")

    async def read_range(self, low: int) -> Any:
        """Read the ``RANGE_ROWS`` rows from primary key ``low`` on."""
        raise NotImplementedError(f"{type(self).__name__} does not take part in range scenarios")

    def prepare_bulk(self, rows: list[tuple[str, int]]) -> Any:
        """The rows in the form this contender's user already holds (not timed)."""
        return rows

    async def bulk(self, payload: Any) -> int:
        """Insert all rows of ``payload`` at once (all or nothing); returns the count."""
        raise NotImplementedError(f"{type(self).__name__} does not take part in bulk scenarios")


class FastQuartDBClient(Client):
    """fastquartdb's model API, over the daemon or embedded."""

    def __init__(
        self,
        *args: Any,
        mode: str,
        use_filelock: bool = False,
        readers: int | None = None,
        request_keys: bool = True,
        changes: bool = False,
    ) -> None:
        super().__init__(*args)
        self.mode = mode
        self.use_filelock = use_filelock
        self.readers = readers
        self.request_keys = request_keys
        self.changes = changes

    async def open(self) -> None:
        db = await AsyncDatabaseManager.init_engine(
            self.db,
            use_filelock=self.use_filelock,
            mode=self.mode,
            socket=self.socket,
            synchronous=self.synchronous,
            busy_timeout=BUSY_TIMEOUT,
            readers=self.readers,
            request_keys=self.request_keys,
            changes=["user"] if self.changes else None,
        )
        if db.mode != self.mode:
            raise RuntimeError(f"wanted mode {self.mode!r}, got {db.mode!r}")

    async def close(self) -> None:
        await AsyncDatabaseManager.close()

    async def insert(self, username: str, age: int) -> Any:
        return await User.insert({"username": username, "age": age})

    async def read(self, pk: int) -> Any:
        return await User.fetch(filters={"id": pk})

    async def update(self, pk: int, age: int) -> Any:
        return await User.update({"age": age}, filters={"id": pk})

    async def read_range(self, low: int) -> Any:
        return await User.fetch(filters={"id": [("BETWEEN", (low, low + RANGE_ROWS - 1))]})

    def prepare_bulk(self, rows: list[tuple[str, int]]) -> Any:
        return [{"username": name, "age": age} for name, age in rows]

    async def bulk(self, payload: Any) -> int:
        return await User.insert_many(payload)


class DqliteClient(Client):
    """The models on a dqlite cluster: ``db`` is its URL; direct, or through a daemon's socket.

    Only the URL (and for the daemon its socket): ``synchronous`` and ``busy_timeout``
    are a file's settings, a dqlite commit waits for a Raft quorum instead.
    """

    async def open(self) -> None:
        if self.socket is None:
            db = await AsyncDatabaseManager.init_engine(self.db)
            wanted = "dqlite"
        else:
            db = await AsyncDatabaseManager.init_engine(self.db, socket=self.socket, mode="daemon")
            wanted = "daemon"
        if db.mode != wanted:
            raise RuntimeError(f"wanted mode {wanted!r}, got {db.mode!r}")

    async def close(self) -> None:
        await AsyncDatabaseManager.close()

    async def insert(self, username: str, age: int) -> Any:
        return await User.insert({"username": username, "age": age})


class AiosqliteClient(Client):
    """One aiosqlite connection per process, shared by its tasks: what a careful user writes.

    Autocommit (``isolation_level=None``): every single-row write is one
    statement, one thread hop, its own transaction. Multi-statement work
    (``bulk``) uses ``BEGIN IMMEDIATE`` so it never fails on a lock upgrade.
    """

    async def open(self) -> None:
        import aiosqlite

        self.conn = await aiosqlite.connect(self.db, isolation_level=None, timeout=BUSY_TIMEOUT)
        await self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        await self.conn.execute("PRAGMA journal_mode = WAL")
        await self.conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")

    async def close(self) -> None:
        await self.conn.close()

    async def insert(self, username: str, age: int) -> Any:
        cursor = await self.conn.execute(_INSERT, (username, age))
        return cursor.lastrowid

    async def read(self, pk: int) -> Any:
        return await self.conn.execute_fetchall(_SELECT, (pk,))

    async def update(self, pk: int, age: int) -> Any:
        cursor = await self.conn.execute(_UPDATE, (age, pk))
        return cursor.rowcount

    async def read_range(self, low: int) -> Any:
        return await self.conn.execute_fetchall(_RANGE, (low, low + RANGE_ROWS - 1))

    async def bulk(self, payload: Any) -> int:
        conn = self.conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.executemany(_INSERT, payload)
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return len(payload)


class SQLAlchemyClient(Client):
    """SQLAlchemy 2 async Core over aiosqlite, as its documentation sets SQLite up.

    Default pool (``AsyncAdaptedQueuePool``: 5 connections + 10 overflow per
    process), pragmas on connect, one ``engine.begin()`` block per insert.
    """

    async def open(self) -> None:
        from sqlalchemy import Column as SAColumn
        from sqlalchemy import Integer, MetaData, Table, Text, event, insert
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(
            f"sqlite+aiosqlite:///{self.db}", connect_args={"timeout": BUSY_TIMEOUT}
        )
        synchronous = self.synchronous.upper()

        @event.listens_for(self.engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            cursor.close()

        table = Table(
            "user",
            MetaData(),
            SAColumn("id", Integer, primary_key=True),
            SAColumn("username", Text, nullable=False),
            SAColumn("age", Integer),
        )
        self.insert_stmt = insert(table)

    async def close(self) -> None:
        await self.engine.dispose()

    async def insert(self, username: str, age: int) -> Any:
        async with self.engine.begin() as conn:
            result = await conn.execute(self.insert_stmt, {"username": username, "age": age})
            return result.inserted_primary_key[0]


class Sqlite3Client(Client):
    """Plain synchronous sqlite3 on the loop's own thread: no hop at all, the floor."""

    async def open(self) -> None:
        self.conn = sqlite3.connect(self.db, isolation_level=None, timeout=BUSY_TIMEOUT)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")

    async def close(self) -> None:
        self.conn.close()

    async def insert(self, username: str, age: int) -> Any:
        return self.conn.execute(_INSERT, (username, age)).lastrowid

    async def read(self, pk: int) -> Any:
        return self.conn.execute(_SELECT, (pk,)).fetchall()

    async def update(self, pk: int, age: int) -> Any:
        return self.conn.execute(_UPDATE, (age, pk)).rowcount

    async def bulk(self, payload: Any) -> int:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, payload)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return len(payload)


#: contender name -> (label for tables and charts, needs a daemon)
CONTENDERS: dict[str, tuple[str, bool]] = {
    "daemon": ("fastquartdb daemon", True),
    "daemon_writer_reads": ("fastquartdb daemon, readers=0", True),
    "daemon_nokeys": ("fastquartdb daemon, request_keys=False", True),
    "daemon_replicate": ("fastquartdb daemon + Litestream", True),
    "daemon_changes": ("fastquartdb daemon, change capture on", True),
    "embedded": ("fastquartdb embedded", False),
    "embedded_filelock": ("fastquartdb embedded + filelock", False),
    "aiosqlite": ("aiosqlite per process", False),
    "sqlalchemy": ("SQLAlchemy async Core", False),
    "sqlite3": ("sqlite3 (floor)", False),
    "dqlite": ("fastquartdb on dqlite, direct", False),
    "dqlite_daemon": ("fastquartdb on dqlite via fqdb-server", True),
}


#: contender name -> the module it needs beyond the test install (the ``bench`` extra).
NEEDS: dict[str, str] = {"sqlalchemy": "sqlalchemy"}


def unavailable() -> dict[str, str]:
    """Contenders whose library is not installed -> why (they are left out of the run)."""
    import importlib.util

    return {
        name: f"{module} is not installed (pip install -e '.[bench]', or make bench)"
        for name, module in NEEDS.items()
        if importlib.util.find_spec(module) is None
    }


def make_client(contender: str, db: str, synchronous: str, socket: str | None) -> Client:
    """The client for ``contender``."""
    args = (db, synchronous, socket)
    if contender in ("daemon", "daemon_replicate"):
        return FastQuartDBClient(*args, mode="daemon")
    if contender == "daemon_nokeys":
        return FastQuartDBClient(*args, mode="daemon", request_keys=False)
    if contender == "daemon_changes":
        return FastQuartDBClient(*args, mode="daemon", changes=True)
    if contender == "daemon_writer_reads":
        return FastQuartDBClient(*args, mode="daemon", readers=0)
    if contender == "embedded":
        return FastQuartDBClient(*args, mode="embedded")
    if contender == "embedded_filelock":
        return FastQuartDBClient(*args, mode="embedded", use_filelock=True)
    if contender == "aiosqlite":
        return AiosqliteClient(*args)
    if contender == "sqlalchemy":
        return SQLAlchemyClient(*args)
    if contender == "sqlite3":
        return Sqlite3Client(*args)
    if contender in ("dqlite", "dqlite_daemon"):
        return DqliteClient(*args)
    raise ValueError(f"unknown contender {contender!r} (known: {', '.join(CONTENDERS)})")
