"""Which requests a client may send again after its connection to the daemon was lost."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.client.connection import SocketTransport
from fastquartdb.protocol import (
    ALL_OPS,
    RESENDABLE_OPS,
    WRITE_OPS,
    FrameDecoder,
    encode_frame,
    ok_reply,
)
from fastquartdb.protocol.errors import InterfaceError


@pytest.mark.parametrize("op", ["fetch", "count", "aggregate", "ping", "ensure_table"])
def test_reads_and_ensure_table_are_resent(op: str) -> None:
    # ensure_table compares the model with the live schema every time, so running it
    # again after a first run that did commit changes nothing: a worker starting while
    # the daemon restarts must not fail its init_engine with "outcome unknown".
    error = SocketTransport._lost_error({"op": op}, ConnectionResetError(104, "reset"))
    assert error.retryable is True  # type: ignore[attr-defined]
    assert "outcome is unknown" not in str(error)


@pytest.mark.parametrize("op", sorted(WRITE_OPS - RESENDABLE_OPS))
def test_other_unkeyed_writes_report_an_unknown_outcome(op: str) -> None:
    error = SocketTransport._lost_error({"op": op}, ConnectionResetError(104, "reset"))
    assert error.retryable is False  # type: ignore[attr-defined]
    assert "outcome is unknown" in str(error)


def test_a_request_never_sent_is_resent() -> None:
    error = SocketTransport._lost_error({"op": "insert"}, BrokenPipeError(32, "pipe"), sent=False)
    assert error.retryable is True  # type: ignore[attr-defined]


def test_a_keyed_write_is_resent() -> None:
    request = {"op": "insert", "key": ["c", 1]}
    error = SocketTransport._lost_error(request, ConnectionResetError(104, "reset"))
    assert error.retryable is True  # type: ignore[attr-defined]


async def test_a_daemon_that_does_not_record_keys_gets_unkeyed_writes(tmp_path: Path) -> None:
    """An older fqdb-server ignores unknown fields: a keyed resend could run twice there, so
    writes go unkeyed (outcome unknown on a loss, as before) and idempotency_key is refused."""
    db = str(tmp_path / "x.db")
    path = str(tmp_path / "old.sock")
    seen: list[dict[str, Any]] = []

    async def old_daemon(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for message in decoder.feed(data):
                seen.append(message)
                if message["op"] == "hello":
                    ops = sorted(ALL_OPS - {"resolve"})
                    result: Any = {"db": os.path.realpath(db), "ops": ops, "server": "old/0.0"}
                else:
                    result = 1
                writer.write(encode_frame(ok_reply(message["id"], result)))
        writer.close()

    server = await asyncio.start_unix_server(old_daemon, path)
    try:
        transport = await SocketTransport.connect(path, db, request_timeout=5.0)
        assert transport.request_keys is False
        assert await transport.request({"op": "insert", "key": ["c", 1], "acked": 0}) == 1
        assert "key" not in seen[-1] and "acked" not in seen[-1] and "expires" not in seen[-1]
        with pytest.raises(InterfaceError, match="does not support idempotency_key; upgrade"):
            await transport.request({"op": "insert", "idempotency_key": "k"})
        await transport.close()
    finally:
        server.close()
        await server.wait_closed()
