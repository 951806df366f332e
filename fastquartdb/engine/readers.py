"""Local readers: this process's own read-only connections to the database file.

SQLite in WAL mode has one writer and any number of readers, across processes,
and readers never block the writer or each other. So a read needs no daemon:
each process opens the file itself (``file:…?mode=ro``, ``PRAGMA query_only``)
and runs the engine's own read ops there (:meth:`Engine.run_read`, the same code
the writer runs)::

    caller (event loop) ──run_here(req)──> inline engine      (a point read: cheaper than a hop)
                        ──submit(req)───> SimpleQueue ──> reader thread 1..N, one engine each
                                           outcome <── loop.call_soon_threadsafe(future)

Who owns what: each connection belongs to one thread for its whole life (the
inline one to the event loop's thread). A submitted request belongs to the
queue until a reader takes it; the reader then owes its future exactly one
outcome, delivered only ``if not future.done()`` (the caller may have been
cancelled; the read itself is never interrupted halfway).

What a reader never does: write (the connection is read-only), checkpoint
(SQLite does not let a read-only connection checkpoint, not even as the last
one to close, which the Litestream mode relies on), or hold a read snapshot
between requests (autocommit: a statement's snapshot ends when its rows are
fetched, before the result is handed back).

Table shapes are cached per engine, as the writer caches them: checked against
``PRAGMA schema_version`` at most every ``SCHEMA_CHECK_INTERVAL``, at once after
:meth:`ReaderPool.schema_may_have_changed` (this process's writer ran DDL, raw
SQL or a commit), and at once when a request names a table or column the cache
does not know (the engine looks again and retries).

Reader threads are daemon threads, and :meth:`ReaderPool.close` ends them, so
they never keep the interpreter alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import urllib.parse
from typing import Any

from ..protocol.errors import OperationalError
from .config import DEFAULT_BUSY_TIMEOUT
from .executor import Engine, Outcome, translate_sqlite_error

__all__ = ["ReaderPool", "open_reader"]

# A request for a reader thread: (request, its future, the loop that awaits it); None ends it.
_Job = tuple[dict[str, Any], "asyncio.Future[Outcome]", asyncio.AbstractEventLoop] | None


def open_reader(path: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sqlite3.Connection:
    """A read-only connection to ``path``, or :class:`OperationalError` saying why not.

    Refused: a file this user may not open, a file not in WAL mode (a reader in a
    rollback-journal file would block the writer), and a file whose WAL cannot be
    read here (no shared memory: a network filesystem).
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    try:
        conn = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout,
            cached_statements=512,
        )
    except sqlite3.Error as exc:
        raise OperationalError(f"cannot open {path} read-only: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # mode=ro keeps the main file read-only; query_only also refuses TEMP objects.
        conn.execute("PRAGMA query_only = ON")
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode != "wal":
            raise OperationalError(
                f"{path} is in journal_mode {mode}, not WAL: a local reader would block the writer"
            )
        # Reads the schema through the WAL index: fails here if shared memory does not work.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:
        conn.close()
        raise OperationalError(f"cannot read {path} here: {translate_sqlite_error(exc)}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _reader_engine(conn: sqlite3.Connection, raw_sql: bool) -> Engine:
    # Table shapes are checked against the file at most every SCHEMA_CHECK_INTERVAL, as the
    # writer does, and at once after schema_may_have_changed() (see ReaderPool).
    return Engine(conn, raw_sql=raw_sql)


class ReaderPool:
    """One inline engine for point reads and ``threads`` reader threads for the rest.

    Example::

        pool = ReaderPool.open("app.db", threads=2)
        ok, value = pool.run_here({"op": "fetch", "table": "user", ...})
        ok, value = await pool.submit({"op": "count", "table": "user"})
        pool.close()
    """

    def __init__(self, path: str, inline: Engine, engines: list[Engine]) -> None:
        self.path = path
        self.inline = inline
        self.threads = len(engines)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        #: Whether :meth:`close` ran (asked before every read: an attribute, not a property).
        self.closed = False
        # Bumped (on the loop's thread) whenever this process's writer may have changed the
        # schema; every reader checks the schema version before its first read after that.
        self._schema_generation = 0
        self._inline_seen = 0
        self._workers = [
            threading.Thread(
                target=self._serve, args=(engine,), name=f"fqdb-reader-{i}", daemon=True
            )
            for i, engine in enumerate(engines, 1)
        ]
        for worker in self._workers:
            worker.start()

    @classmethod
    def open(
        cls,
        path: str,
        *,
        threads: int = 2,
        raw_sql: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> ReaderPool:
        """Open ``threads + 1`` read-only connections to ``path`` and start the threads.

        Raises:
            OperationalError: the file cannot be read here (the message says why).
        """
        if threads < 1:
            raise ValueError("a reader pool needs at least one thread")
        conns: list[sqlite3.Connection] = []
        try:
            for _ in range(threads + 1):
                conns.append(open_reader(path, busy_timeout))
        except BaseException:
            for conn in conns:
                conn.close()
            raise
        engines = [_reader_engine(conn, raw_sql) for conn in conns]
        return cls(path, engines[0], engines[1:])

    def is_point_read(self, request: dict[str, Any]) -> bool:
        """Whether ``request`` is a primary-key lookup (see :meth:`Engine.is_point_read`).

        Asked on the event loop's thread, which owns the inline engine.
        """
        return self.inline.is_point_read(request, load=True)

    def schema_may_have_changed(self) -> None:
        """The writer ran DDL or raw SQL for this process: reads that start from now on look
        at the schema version first, so they see a table or column it just added."""
        self._schema_generation += 1

    def run_here(self, request: dict[str, Any]) -> Outcome:
        """Run ``request`` now, on the caller's thread (the event loop's): a point read
        (:meth:`is_point_read` said so) or a change feed's read."""
        generation = self._schema_generation
        check = generation != self._inline_seen
        self._inline_seen = generation
        if request.get("op") == "fetch":
            return self.inline.run_point(request, check_schema=check)
        return self.inline.run_read(request, check_schema=check)

    def submit(self, request: dict[str, Any]) -> asyncio.Future[Outcome]:
        """Queue ``request`` for a reader thread; the future gets its outcome.

        Raises:
            OperationalError: the pool is closed.
        """
        if self.closed:
            raise OperationalError("the local readers are closed; call init_engine() again")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._jobs.put((request, future, loop))
        return future

    def _serve(self, engine: Engine) -> None:
        jobs = self._jobs
        seen = 0
        try:
            while True:
                job = jobs.get()
                if job is None:
                    return
                request, future, loop = job
                # Read once: the loop's thread may bump it meanwhile (then the next read checks).
                generation = self._schema_generation
                outcome = engine.run_read(request, check_schema=generation != seen)
                seen = generation
                # The loop may be closed by now (its caller gave up): nobody waits then.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, outcome)
        finally:
            engine.conn.close()

    def close(self, timeout: float = 5.0) -> None:
        """End the reader threads (after the reads already queued) and close every connection.

        Safe to call twice. Blocks for at most ``timeout`` seconds per thread: a
        reader in the middle of a long query is left to finish on its own (it is
        a daemon thread, so it cannot keep the process alive).
        """
        if self.closed:
            return
        self.closed = True
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.join(timeout)
        self.inline.conn.close()
