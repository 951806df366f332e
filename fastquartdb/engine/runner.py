"""The one thread that owns the sqlite3 connection, reached in one hop per call.

::

    event loop ──submit(fn, args)──> SimpleQueue ──> sqlite thread: fn(engine, *args)
               <──── loop.call_soon_threadsafe(settle) ────┘

A hop costs 25-100 us here, so callers hop once per *batch* (the engine's
group commit), never once per statement. Our own thread rather than
aiosqlite's: aiosqlite offers "run this callable on the connection's thread"
only as a private method, and its thread kept the interpreter alive when
``close()`` was never called.

Who owns what:

* The connection belongs to the thread. The worker's inline reads use it from
  the loop's thread only while the thread is idle (see ``worker.py``).
* A job belongs to the queue until the thread takes it; from then on the
  thread owes its future exactly one hand-back, through
  ``call_soon_threadsafe``. A future cancelled meanwhile is left alone (its
  caller is gone; the job still ran: sqlite cannot be stopped halfway). When
  the loop is already closed nobody is left to tell: the job ran to its end
  and is counted in :attr:`EngineThread.unacknowledged`.

Why a process exits by itself, with or without ``close()``: the thread
watches the thread that opened it (the event loop's thread, normally the main
thread). When that one has ended -- a script returned from ``asyncio.run``, an
exception escaped, Ctrl-C, a web worker's process is stopping -- the sqlite
thread runs what was already handed to it, reports what the worker still held
(never silently dropped), rolls back a transaction left open, checkpoints,
closes the connection and ends. It is deliberately not a daemon thread: the
interpreter's shutdown (``threading._shutdown``, before ``atexit``) waits for
that clean close instead of freezing the thread in the middle of a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from ..protocol.errors import InterfaceError
from .config import DEFAULT_BUSY_TIMEOUT, DEFAULT_SYNCHRONOUS
from .deadline import DEFAULT_STATEMENT_TIMEOUT
from .executor import Engine, Outcome

__all__ = ["EngineThread"]

T = TypeVar("T")

log = logging.getLogger("fastquartdb.engine")

#: Seconds between two looks at the owner thread while idle: how long an abandoned
#: connection keeps a finished process waiting at exit, at most.
OWNER_POLL = 0.05


class _Job(NamedTuple):
    fn: Callable[..., Any] | None  # None: close the connection and end the thread
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    # Runs on the loop. A cancelled caller left its future behind: nothing to do.
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class EngineThread:
    """An :class:`Engine` living on its own thread.

    Example::

        thread = await EngineThread.open("app.db")
        outcomes = await thread.call(Engine.run_batch, requests)
        await thread.close()
    """

    def __init__(self, path: str) -> None:
        """Use :meth:`open`."""
        self.path = path
        #: The engine; only the sqlite thread (or an idle-time inline read) uses it.
        self.engine: Engine
        #: Jobs that ran after their loop had closed: done, but nobody was told.
        self.unacknowledged = 0
        #: Set by the worker: how many requests it still holds that never reached
        #: this thread (reported if the owner thread ends first).
        self.count_unrun: Callable[[], int] | None = None
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._owner = threading.current_thread()
        self._thread: threading.Thread | None = None
        self._closing = False

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
        raw_sql: bool = True,
        lock_path: str | None = None,
        wal_autocheckpoint: int | None = None,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        max_statement_timeout: float | None = None,
    ) -> EngineThread:
        """Start the thread, open and configure the connection on it.

        ``statement_timeout`` is every request's deadline (None: none);
        ``max_statement_timeout`` caps the ``timeout`` one raw ``execute`` may ask for.

        Raises:
            FQDBError: the file cannot be opened as a database (translated by the engine).
        """

        def make_engine() -> Engine:
            conn = Engine.connect(
                path,
                synchronous=synchronous,
                busy_timeout=busy_timeout,
                read_only=read_only,
                wal_autocheckpoint=wal_autocheckpoint,
            )
            try:
                return Engine(
                    conn,
                    read_only=read_only,
                    raw_sql=raw_sql,
                    lock_path=lock_path,
                    lock_timeout=busy_timeout,
                    statement_timeout=statement_timeout,
                    max_statement_timeout=max_statement_timeout,
                )
            except BaseException:
                conn.close()
                raise

        self = cls(path)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(
            target=self._run, args=(make_engine, ready, loop), name="fqdb-sqlite"
        )
        self._thread = thread
        thread.start()
        try:
            await asyncio.shield(ready)
        except asyncio.CancelledError:
            # Nobody will use it: close it as soon as it is open.
            self._closing = True
            self._jobs.put(_Job(None, (), loop.create_future(), loop))
            raise
        except BaseException:
            thread.join()  # it handed back its failure and is ending
            raise
        return self

    @property
    def alive(self) -> bool:
        """Whether the thread still serves (not closed, not abandoned)."""
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(engine, *args)`` for the thread; the future resolves with its result.

        Raises:
            InterfaceError: the connection is closed.
        """
        if not self.alive:
            raise InterfaceError(
                f"the connection to {self.path} is closed; call init_engine() again"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, args, future, loop))
        return future

    def run(
        self, requests: list[dict[str, Any]], interactive: bool = False
    ) -> asyncio.Future[list[Outcome]]:
        """Queue one batch for the thread (the worker's :class:`~.work.Backend` door):
        ``Engine.run_in_transaction`` if ``interactive``, else ``Engine.run_batch``."""
        return self.submit(Engine.run_in_transaction if interactive else Engine.run_batch, requests)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(engine, *args)`` on the connection's thread and return its result.

        If the awaiting task is cancelled the call still runs to its end on the
        thread (sqlite cannot be stopped halfway safely); its result is dropped.
        """
        return await self.submit(fn, *args)

    async def close(self) -> None:
        """Run what is queued, roll back, checkpoint, close the connection, end the thread.

        Safe to call twice, and after the thread ended on its own.
        """
        thread = self._thread
        if self._closing or thread is None:
            return
        self._closing = True
        if thread.is_alive():
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            self._jobs.put(_Job(None, (), done, loop))
            # Shielded: a cancelled close() still closes; the thread does not need us.
            await asyncio.shield(done)
        thread.join()  # it has handed back its last result: it is returning

    # ------------------------------------------------------------ the thread

    def _run(
        self,
        make_engine: Callable[[], Engine],
        ready: asyncio.Future[None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        try:
            self.engine = make_engine()
        except BaseException as exc:
            self._hand_back(loop, ready, False, exc)
            return
        self._hand_back(loop, ready, True, None)
        closer = self._serve()
        try:
            self._finish(abandoned=closer is None)
        except BaseException as exc:
            if closer is None:
                raise
            self._hand_back(closer.loop, closer.future, False, exc)  # close() raises it
        else:
            if closer is not None:
                self._hand_back(closer.loop, closer.future, True, None)

    def _serve(self) -> _Job | None:
        """Run jobs until a close job (returned) or until the owner thread ended (None)."""
        jobs, owner, engine = self._jobs, self._owner, self.engine
        orphaned = False
        while True:
            try:
                job = jobs.get_nowait() if orphaned else jobs.get(timeout=OWNER_POLL)
            except queue.Empty:
                if orphaned:
                    return None
                # Once the owner is gone nothing new can arrive; what it handed over
                # before it ended still runs (the next rounds take it without waiting).
                orphaned = not owner.is_alive()
                continue
            if job.fn is None:
                return job
            try:
                ok, value = True, job.fn(engine, *job.args)
            except BaseException as exc:  # handed to the caller, who raises it
                ok, value = False, exc
            self._hand_back(job.loop, job.future, ok, value)

    def _hand_back(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], ok: bool, value: Any
    ) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, ok, value)
        except RuntimeError:  # the loop is closed: the job ran, nobody is left to tell
            self.unacknowledged += 1

    def _finish(self, abandoned: bool) -> None:
        """Close the connection; if ``abandoned``, report what was left open."""
        engine = self.engine
        open_transaction = engine.in_transaction
        unrun = 0
        if abandoned and self.count_unrun is not None:
            with contextlib.suppress(Exception):
                unrun = self.count_unrun()
        try:
            engine.shutdown()  # rolls back an open transaction, checkpoints
        finally:
            engine.conn.close()
        if not abandoned:
            return
        self._closing = True
        if unrun:
            log.warning(
                "%d request(s) for %s were never run: the event loop stopped before they "
                "reached the database; await AsyncDatabaseManager.close() before the loop ends "
                "to finish them",
                unrun,
                self.path,
            )
        if open_transaction:
            log.warning(
                "a transaction left open on %s was rolled back when its thread ended", self.path
            )
        # Closed for the program, but say so to those who look (python -X dev, -W default).
        with contextlib.suppress(Exception):
            warnings.warn(
                f"the database {self.path} was not closed; it was closed when its thread "
                "ended (call AsyncDatabaseManager.close())",
                ResourceWarning,
                stacklevel=1,
            )
