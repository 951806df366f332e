"""The one thread that owns the sqlite3 connection, reached in one hop per call.

Built on aiosqlite's connection thread: a queue of callables, each result
handed back to the event loop with ``call_soon_threadsafe``. aiosqlite has no
public "run this callable on the connection's thread", and running a whole
batch per hop is the point of the engine (a hop costs 25-100 us; a statement
per hop would make group commit slower than no daemon), so this module is the
one place that uses its ``_execute``; the version range in pyproject pins it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

from .deadline import DEFAULT_STATEMENT_TIMEOUT
from .executor import Engine

__all__ = ["EngineThread"]

T = TypeVar("T")


class EngineThread:
    """An :class:`Engine` living on its own thread.

    Example::

        thread = await EngineThread.open("app.db")
        outcomes = await thread.call(Engine.run_batch, requests)
        await thread.close()
    """

    def __init__(self, aio: aiosqlite.Connection, engine: Engine) -> None:
        self._aio = aio
        self.engine = engine
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
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
        """

        def connector() -> sqlite3.Connection:
            return Engine.connect(
                path,
                synchronous=synchronous,
                busy_timeout=busy_timeout,
                read_only=read_only,
                wal_autocheckpoint=wal_autocheckpoint,
            )

        aio = aiosqlite.Connection(connector, 64)
        try:
            await aio
        except BaseException:
            # aiosqlite stops its thread without waiting for it; wait here, or the thread
            # may outlive the event loop and fail to hand back its last result.
            await asyncio.to_thread(aio._thread.join, 5.0)
            raise
        try:
            engine = await aio._execute(
                lambda: Engine(
                    aio._conn,
                    read_only=read_only,
                    raw_sql=raw_sql,
                    lock_path=lock_path,
                    lock_timeout=busy_timeout,
                    statement_timeout=statement_timeout,
                    max_statement_timeout=max_statement_timeout,
                )
            )
        except BaseException:
            await aio.close()
            raise
        return cls(aio, engine)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(engine, *args)`` on the connection's thread and return its result.

        If the awaiting task is cancelled the call still runs to its end on the
        thread (sqlite cannot be stopped halfway safely); its result is dropped.
        """
        result: T = await self._aio._execute(fn, self.engine, *args)
        return result

    async def close(self) -> None:
        """Checkpoint, close the connection and end the thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._aio._execute(self.engine.shutdown)
        finally:
            await self._aio.close()
