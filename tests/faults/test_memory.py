"""Memory is bounded per client and in total (issue 13, rows 7-10), against a real daemon.

Each case runs a real ``fqdb-server`` with its limits scaled down (so the data
stays small and the test fast, yet far larger than the bound), does what a
hostile or careless client did, and reads the daemon's peak RSS (``VmHWM``)
from ``/proc/<pid>/status``:

* row 7: pipelined fetches whose replies are never read (each ~1 MB; 300 of
  them). The daemon stops handling that connection's requests once
  ``--max-unsent`` bytes of replies wait; when the client reads, every reply
  arrives. Before: every reply was made at once (RSS grew by ~300 MB).
* row 8: one ``insert_many`` frame of 3.5 million ``[nil]`` rows (7 MB on the
  wire): that request fails with ``validation`` once its decoded estimate
  passes ``--max-decoded``; the connection and everyone else are served on. Before: ~300 MB of objects,
  then the insert.
* row 9: requests parked behind another client's transaction count against
  ``--max-queue``: the queue depth never exceeds it, and everything runs once
  the transaction ends.
* row 10: a result larger than ``--max-reply`` fails that request alone with
  ``ResultTooLargeError`` (read in chunks, so the rows never all sit in memory);
  the other tasks' writes on the same shared connection all succeed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, ResultTooLargeError
from fastquartdb.client.connection import SocketTransport
from tests.helpers import DaemonProcess

MB = 1024 * 1024


class Blob(BaseModel):
    id = Column("INTEGER", primary_key=True)
    data = Column("BLOB")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _read_frame(sock: socket.socket) -> dict[str, Any]:
    header = _recv_exactly(sock, 4)
    (length,) = struct.unpack(">I", header)
    message: dict[str, Any] = msgpack.unpackb(_recv_exactly(sock, length), raw=False)
    return message


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        assert chunk, "the daemon closed the connection"
        chunks += chunk
    return bytes(chunks)


def _greeted(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    sock.sendall(_frame({"id": 0, "op": "hello", "version": 1}))
    assert _read_frame(sock)["ok"] is True
    return sock


def _make_blobs(db: str, rows: int, size: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB)")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO blob (data) SELECT randomblob(?) FROM n",
            (rows, size),
        )
    os.chmod(db, 0o600)


@pytest.fixture
def started() -> Iterator[list[DaemonProcess]]:
    procs: list[DaemonProcess] = []
    yield procs
    for proc in procs:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


def _start(procs: list[DaemonProcess], db: str, *args: str) -> tuple[DaemonProcess, int]:
    proc = DaemonProcess(db, *args).start()
    procs.append(proc)
    proc.stats()  # warm: the first connection and request have run
    return proc, _status_kb(proc.pid, "VmRSS")


def _settled(proc: DaemonProcess, key: str) -> Any:
    """Poll ``stats`` until ``key`` stops changing (the daemon has done what it will do)."""
    deadline = time.monotonic() + 20
    last = proc.stats()[key]
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = proc.stats()[key]
        if now == last:
            return now
        last = now
    raise AssertionError(f"stats[{key!r}] never settled")


def test_unread_replies_stop_the_connection_not_grow_memory(
    tmp_path: Path, started: list[DaemonProcess]
) -> None:
    db = str(tmp_path / "app.db")
    _make_blobs(db, rows=100, size=10_000)  # every fetch of the table: a ~1 MB reply
    proc, base_kb = _start(started, db, "--max-unsent", str(1 * MB))
    sock = _greeted(proc.socket or "")
    count = 300
    fetch = {"op": "fetch", "table": "blob", "columns": ["id", "data"]}
    sock.sendall(b"".join(_frame({"id": n, **fetch}) for n in range(1, count + 1)))
    handled = _settled(proc, "requests")
    peak_kb = _status_kb(proc.pid, "VmHWM")
    grown_mb = (peak_kb - base_kb) / 1024
    # Bound: --max-unsent + one reply + the kernel's socket buffers, with room for the allocator.
    assert grown_mb < 24, f"daemon grew {grown_mb:.1f} MB with {handled} of {count} handled"
    assert handled < count
    # Nothing is lost: reading lets the daemon go on, and every reply arrives in order.
    for n in range(1, count + 1):
        reply = _read_frame(sock)
        assert reply["id"] == n and reply["ok"] is True
        assert len(reply["result"]["rows"]) == 100
    sock.close()
    print(
        f"RELIABILITY M7: {count} pipelined 1 MB fetches never read: daemon grew "
        f"{grown_mb:.1f} MB (bound 24 MB with --max-unsent 1 MiB), {handled} handled while "
        "unread; all replies delivered once read"
    )
    assert proc.stop() == 0


def test_a_frame_decoding_to_too_much_memory_is_refused(
    tmp_path: Path, started: list[DaemonProcess]
) -> None:
    db = str(tmp_path / "app.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    proc, base_kb = _start(started, db, "--max-frame", str(8 * MB), "--max-decoded", str(32 * MB))
    rows = 3_500_000
    frame = _frame(
        {"id": 1, "op": "insert_many", "table": "t", "columns": ["x"], "rows": [[None]] * rows}
    )
    assert len(frame) < 8 * MB
    sock = _greeted(proc.socket or "")
    bystander = _greeted(proc.socket or "")
    sock.sendall(frame + _frame({"id": 2, "op": "count", "table": "t"}))
    reply = _read_frame(sock)
    assert reply["id"] == 1 and reply["ok"] is False, reply
    assert reply["error"]["code"] == "validation" and "--max-decoded" in reply["error"]["message"]
    # That request failed alone: the same connection, and everyone else, are served on.
    assert _read_frame(sock) == {"id": 2, "ok": True, "result": 0}
    sock.close()
    bystander.sendall(_frame({"id": 3, "op": "count", "table": "t"}))
    assert _read_frame(bystander) == {"id": 3, "ok": True, "result": 0}
    bystander.close()
    grown_mb = (_status_kb(proc.pid, "VmHWM") - base_kb) / 1024
    # Bound: the frame buffered (8 MB) + what decoding may reach (32 MB), with room.
    assert grown_mb < 64, f"daemon grew {grown_mb:.1f} MB"
    print(
        f"RELIABILITY M8: one {len(frame) / MB:.1f} MB insert_many frame of {rows:,} [nil] rows: "
        f"that request refused, daemon grew {grown_mb:.1f} MB (bound 64 MB with --max-frame 8 MiB, "
        "--max-decoded 32 MiB); others served on"
    )
    assert proc.stop() == 0


def test_parked_requests_count_against_the_queue(
    tmp_path: Path, started: list[DaemonProcess]
) -> None:
    db = str(tmp_path / "app.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
    max_queue = 300
    proc, base_kb = _start(
        started, db, "--max-queue", str(max_queue), "--transaction-idle-timeout", "60"
    )
    path = proc.socket or ""
    holder = _greeted(path)
    holder.sendall(_frame({"id": 1, "op": "begin", "txn": 1}))
    assert _read_frame(holder)["ok"] is True
    senders, per_sender = 6, 1000  # 6,000 requests, far past --max-queue
    socks = [_greeted(path) for _ in range(senders)]
    payload = "p" * 200

    def send(sock: socket.socket) -> None:
        sock.sendall(
            b"".join(
                _frame({"id": n, "op": "insert", "table": "t", "values": {"x": payload}})
                for n in range(1, per_sender + 1)
            )
        )

    threads = [threading.Thread(target=send, args=(s,)) for s in socks]
    for thread in threads:
        thread.start()
    depth = _settled(proc, "queue_depth")
    assert depth <= max_queue, f"{depth} requests queued or parked (--max-queue {max_queue})"
    assert depth >= max_queue // 2  # the queue did fill: the bound was exercised
    grown_mb = (_status_kb(proc.pid, "VmHWM") - base_kb) / 1024
    holder.sendall(_frame({"id": 2, "op": "commit", "txn": 1}))
    assert _read_frame(holder)["ok"] is True
    for sock in socks:
        for n in range(1, per_sender + 1):
            reply = _read_frame(sock)
            assert reply["id"] == n and reply["ok"] is True, reply
    for thread in threads:
        thread.join(30)
    for sock in (holder, *socks):
        sock.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == senders * per_sender
    print(
        f"RELIABILITY M9: {senders * per_sender:,} inserts sent behind a held transaction: "
        f"at most {depth} parked (--max-queue {max_queue}), daemon grew {grown_mb:.1f} MB; "
        "all ran after the commit"
    )
    assert proc.stop() == 0


def test_a_result_over_max_reply_fails_alone(tmp_path: Path, started: list[DaemonProcess]) -> None:
    db = str(tmp_path / "app.db")
    _make_blobs(db, rows=640, size=100_000)  # 64 MB of rows
    proc, base_kb = _start(started, db, "--max-reply", str(4 * MB))

    async def use() -> tuple[BaseException | None, int, int]:
        # readers=0: the fetch goes to the daemon (a local reader has no reply to bound).
        manager = await AsyncDatabaseManager.init_engine(db, mode="daemon", readers=0)
        transport = manager.transport.current  # type: ignore[attr-defined]
        assert isinstance(transport, SocketTransport)
        big = asyncio.ensure_future(Blob.fetch())
        writes = [Blob.insert({"data": b"x" * 100}) for _ in range(200)]
        results = await asyncio.gather(big, *writes, return_exceptions=True)
        failed = [r for r in results[1:] if isinstance(r, BaseException)]
        assert not failed, failed[:3]
        some = await Blob.fetch(limit=10)
        assert transport.lost is None and manager.transport.current is transport
        await AsyncDatabaseManager.close()
        error = results[0] if isinstance(results[0], BaseException) else None
        return error, len(some), len(results) - 1

    error, some, writes = asyncio.run(use())
    assert isinstance(error, ResultTooLargeError), error
    assert "--max-reply" in str(error) and "iterate()" in str(error)
    assert some == 10
    grown_mb = (_status_kb(proc.pid, "VmHWM") - base_kb) / 1024
    # Bound: a few times --max-reply (rows read so far, their encoding), with room.
    assert grown_mb < 32, f"daemon grew {grown_mb:.1f} MB"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM blob").fetchone()[0] == 640 + writes
    print(
        f"RELIABILITY M10: fetch of a 64 MB table with --max-reply 4 MiB: ResultTooLargeError "
        f"for it alone, {writes} writes in flight on the same connection all acknowledged; "
        f"daemon grew {grown_mb:.1f} MB (bound 32 MB)"
    )
    assert proc.stop() == 0


def test_the_holders_own_flood_is_bounded_too(tmp_path: Path, started: list[DaemonProcess]) -> None:
    """Row 9 from the other side: the transaction's holder itself pipelines plain writes."""
    db = str(tmp_path / "app.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
    max_queue = 200
    proc, _ = _start(started, db, "--max-queue", str(max_queue), "--transaction-idle-timeout", "3")
    holder = _greeted(proc.socket or "")
    holder.sendall(_frame({"id": 1, "op": "begin", "txn": 1}))
    assert _read_frame(holder)["ok"] is True
    count = 3000
    frames = b"".join(
        _frame({"id": n, "op": "insert", "table": "t", "values": {"x": n}})
        for n in range(2, count + 2)
    )
    sender = threading.Thread(target=holder.sendall, args=(frames,))
    sender.start()
    depth = _settled(proc, "queue_depth")
    # Its other tasks' requests may pass the bound (they may sit before its transaction's
    # own on the connection), up to twice; the rest wait unread.
    assert max_queue < depth <= 2 * max_queue, depth
    # The transaction goes idle (its commit would sit behind the flood) and is rolled back;
    # then every plain write runs.
    replies = [_read_frame(holder) for _ in range(count)]
    sender.join(30)
    holder.close()
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:2]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == count
    print(
        f"RELIABILITY M9b: the holder pipelined {count:,} plain writes: at most {depth} waited "
        f"(2 x --max-queue {max_queue}); all ran once its idle transaction was rolled back"
    )
    assert proc.stop() == 0
