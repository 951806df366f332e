"""A reply lost at the worst moment, deterministically: a proxy cuts the connection.

Between the client and a real ``fqdb-server`` sits a Unix-socket proxy that forwards
frames and, once, cuts both sides at a chosen point: just after the daemon answered a
write (the write committed, its reply never arrives), or just before a commit reaches
the daemon (the transaction is rolled back). The client must tell the application the
truth each time: the write's one result, the transaction committed, or the transaction
rolled back — never "outcome unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, ConnectionLostError
from fastquartdb.protocol import FrameDecoder, encode_frame
from tests.helpers import DaemonProcess


class Ledger(BaseModel):
    id = Column("INTEGER", primary_key=True)
    entry = Column("TEXT", nullable=False)


class CuttingProxy:
    """Forwards frames between clients and the daemon; cuts once where ``cut`` says.

    ``cut`` is ``"after_reply:<op>"`` (swallow the daemon's reply to the first such
    request, then close both sides) or ``"before:commit"`` (never forward the first
    top-level commit; close both sides instead).
    """

    def __init__(self, path: str, upstream: str, cut: str) -> None:
        self.path = path
        self.upstream = upstream
        self.cut = cut
        self.done = False
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # the pass-through connections of after the cut
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(c_writer)
        d_reader, d_writer = await asyncio.open_unix_connection(self.upstream)
        self._writers.add(d_writer)
        watched: set[Any] = set()

        def close() -> None:
            for writer in (c_writer, d_writer):
                writer.transport.abort()

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
        ) -> None:
            decoder = FrameDecoder(1 << 30)
            while data := await reader.read(65536):
                for message in decoder.feed(data):
                    if not self.done and up:
                        op = message.get("op")
                        top_commit = op == "commit" and message.get("savepoint") is None
                        if self.cut == "before:commit" and top_commit:
                            self.done = True
                            close()
                            return
                        if self.cut == f"after_reply:{op}":
                            watched.add(message.get("id"))
                    if not up and not self.done and message.get("id") in watched:
                        self.done = True  # the daemon has answered: the write committed
                        close()
                        return
                    writer.write(encode_frame(message, 1 << 30))
            close()

        with contextlib.suppress(OSError, ConnectionError):
            await asyncio.gather(pump(c_reader, d_writer, True), pump(d_reader, c_writer, False))
        for writer in (c_writer, d_writer):
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


@pytest.fixture
def daemon(db_path: str):
    proc = DaemonProcess(db_path).start()
    yield proc
    proc.kill()


def _entries(db: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT entry FROM ledger ORDER BY id")]


async def _run(db: str, daemon: DaemonProcess, cut: str, tmp_path: Path, body: Any) -> Any:
    proxy_path = str(tmp_path / "proxy.sock")
    async with CuttingProxy(proxy_path, daemon.socket or "", cut) as proxy:
        await AsyncDatabaseManager.init_engine(db, mode="daemon", socket=proxy_path)
        try:
            await Ledger.insert({"entry": "before"})
            outcome = await body(AsyncDatabaseManager.get())
            assert proxy.done, "the proxy never cut: the test proved nothing"
            await Ledger.insert({"entry": "after"})  # the client works on
            return outcome
        finally:
            await AsyncDatabaseManager.close()


def test_a_write_whose_reply_is_lost_returns_its_one_result(
    db_path: str, daemon: DaemonProcess, tmp_path: Path
) -> None:
    async def body(db: AsyncDatabaseManager) -> Any:
        return await Ledger.insert({"entry": "cut"})

    pk = asyncio.run(_run(db_path, daemon, "after_reply:insert", tmp_path, body))
    assert _entries(db_path) == ["before", "cut", "after"]
    assert pk == 2  # the first (and only) run's rowid, answered from its record
    assert daemon.stats()["request_keys"]["deduplicated"] == 1


def test_a_commit_whose_reply_is_lost_is_resolved_as_committed(
    db_path: str, daemon: DaemonProcess, tmp_path: Path
) -> None:
    async def body(db: AsyncDatabaseManager) -> None:
        async with db.transaction():
            await Ledger.insert({"entry": "t1"})
            await Ledger.insert({"entry": "t2"})

    asyncio.run(_run(db_path, daemon, "after_reply:commit", tmp_path, body))
    assert _entries(db_path) == ["before", "t1", "t2", "after"]
    assert daemon.stats()["request_keys"]["resolved"] == 1


def test_a_commit_that_never_arrived_is_resolved_as_rolled_back(
    db_path: str, daemon: DaemonProcess, tmp_path: Path
) -> None:
    async def body(db: AsyncDatabaseManager) -> str:
        with pytest.raises(ConnectionLostError) as raised:
            async with db.transaction():
                await Ledger.insert({"entry": "lost"})
        return str(raised.value)

    message = asyncio.run(_run(db_path, daemon, "before:commit", tmp_path, body))
    assert "rolled back" in message and "nothing of it was written" in message
    assert "unknown" not in message
    assert _entries(db_path) == ["before", "after"]
