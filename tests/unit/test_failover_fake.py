"""FailoverTransport's logic over scripted fake transports: no daemon, no processes.

The fakes stand in for the daemon connections ``_connect`` makes and the embedded
transport ``_open_embedded`` opens; each answers its requests from a script (a value
to return or an exception to raise), and records what it was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fastquartdb.client import failover
from fastquartdb.client.connection import SocketTransport
from fastquartdb.client.failover import FailoverTransport
from fastquartdb.client.transports import Transport, TransportInfo
from fastquartdb.protocol.errors import (
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    RequestTimeoutError,
)

KEY = ["client-1", 7]


def lost(retryable: bool) -> ConnectionLostError:
    """What a daemon connection raises when it drops (``retryable``: safe to send again)."""
    error = ConnectionLostError("connection to the daemon lost during insert (reset)")
    error.retryable = retryable  # type: ignore[attr-defined]
    return error


class Fake(Transport):
    """A transport whose requests get the outcomes of ``script``, in order, then ``then``.

    An outcome is a value to return, an exception to raise, or a callable of the request
    whose result is used so (it may also change the world, e.g. move the clock)."""

    def __init__(self, mode: str = "daemon", script: list[Any] | None = None, then: Any = 1):
        self.mode = mode
        self.script = list(script or [])
        self.then = then
        self.sent: list[dict[str, Any]] = []
        self.timed_out = 0
        self.cause: BaseException | None = None
        self.closed = False

    @property
    def lost_cause(self) -> BaseException | None:
        return self.cause

    def request_timed_out(self) -> None:
        self.timed_out += 1
        self.cause = ConnectionAbortedError("abandoned")

    async def request(self, request: dict[str, Any]) -> Any:
        self.sent.append(dict(request))
        outcome = self.script.pop(0) if self.script else self.then
        if callable(outcome) and not isinstance(outcome, BaseException):
            outcome = outcome(request)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self) -> None:
        self.closed = True


class World:
    """The daemons ``_connect`` will find, in order (none left: no daemon answers), and
    the embedded transport ``_open_embedded`` opens."""

    def __init__(self) -> None:
        self.daemons: list[Fake] = []
        self.embedded = Fake("embedded")
        self.embedded_opened = 0
        self.connects = 0
        self.skew = 0.0  # added to the failover module's clock

    def monotonic(self) -> float:
        return time.monotonic() + self.skew


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    world = World()

    async def connect(self: FailoverTransport) -> Any:
        world.connects += 1
        if not world.daemons:
            raise DaemonUnavailableError(f"no fqdb-server answers on {self.socket_path} (fake)")
        return world.daemons.pop(0)

    async def open_embedded(self: FailoverTransport) -> Any:
        if self._embedded is None:
            world.embedded_opened += 1
            self._embedded = world.embedded  # type: ignore[assignment]
        return self._embedded

    monkeypatch.setattr(FailoverTransport, "_connect", connect)
    monkeypatch.setattr(FailoverTransport, "_open_embedded", open_embedded)
    # Only the failover module's clock: the event loop keeps the real one.
    monkeypatch.setattr(failover, "time", types.SimpleNamespace(monotonic=world.monotonic))
    return world


@pytest.fixture
async def start(world: World, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[FailoverTransport] = []

    async def start(*daemons: Fake, allow_embedded: bool = False) -> FailoverTransport:
        world.daemons.extend(daemons)
        transport = await FailoverTransport.start(
            str(tmp_path / "x.db"),
            str(tmp_path / "absent.sock"),  # no socket file: no background probe
            allow_embedded=allow_embedded,
            embedded_options={},
            request_timeout=None,
            reconnect_window=0.05,
            probe_interval=3600.0,
        )
        opened.append(transport)
        return transport

    yield start
    for transport in opened:
        await transport.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let background tasks (a recovery) run until ``condition`` holds."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def insert() -> dict[str, Any]:
    return {"op": "insert", "table": "t", "values": {"a": 1}, "key": list(KEY)}


def not_resent(why: str) -> str:
    return (
        f"the connection to the daemon was lost with insert in flight and {why}: insert will "
        "not be resent, and whether it committed is unknown; to retry such a write safely "
        "yourself, give it an idempotency_key"
    )


# ------------------------------------------------------------ plain requests


async def test_a_keyed_write_lost_is_resent_with_its_key(start: Any) -> None:
    first = Fake(script=[lost(retryable=True)])
    second = Fake(then=41)
    db = await start(first, second)

    assert await db.request(insert()) == 41

    assert "resent" not in first.sent[0]
    assert second.sent == [{**insert(), "resent": True}]
    assert db.current is second and db.resent == 1 and db.switches == 1


async def test_an_unkeyed_write_lost_is_not_resent(start: Any) -> None:
    error = lost(retryable=False)
    second = Fake()
    db = await start(Fake(script=[error]), second)
    request = {"op": "insert", "table": "t", "values": {"a": 1}}

    with pytest.raises(ConnectionLostError) as raised:
        await db.request(request)

    assert raised.value is error
    await until(lambda: db.current is second)  # reconnected in the background
    assert second.sent == [] and db.resent == 0


async def test_a_read_lost_is_sent_again_as_it_was(start: Any) -> None:
    second = Fake(then=[{"a": 1}])
    db = await start(Fake(script=[lost(retryable=True)]), second)

    assert await db.request({"op": "fetch", "table": "t"}) == [{"a": 1}]
    assert second.sent == [{"op": "fetch", "table": "t"}]
    assert db.resent == 0


async def test_a_resend_gives_up_when_no_writer_comes_back(start: Any, tmp_path: Path) -> None:
    db = await start(Fake(script=[lost(retryable=True)]))

    with pytest.raises(ConnectionLostError) as raised:
        await db.request(insert())

    gone = f"the daemon on {tmp_path / 'absent.sock'} went away and did not come back within 0.05 s"
    assert str(raised.value) == not_resent(f"no writer could be reached ({gone})")


async def test_a_busy_writer_is_tried_again_with_the_same_key(start: Any, world: World) -> None:
    # Embedded beside a stopped daemon that holds the file's write lock: busy, until it is not.
    busy = DatabaseBusyError("database is locked")
    world.embedded.script = [busy, busy]
    world.embedded.then = 5
    db = await start(Fake(script=[lost(retryable=True)]), allow_embedded=True)

    assert await db.request(insert()) == 5
    assert world.embedded.sent == [{**insert(), "resent": True}] * 3
    assert db.resent == 3


async def test_a_resend_gives_up_at_the_end_of_its_window(start: Any, world: World) -> None:
    def busy_for_long(request: dict[str, Any]) -> DatabaseBusyError:
        world.skew += 60.0  # longer than the resend window (2 s at least)
        return DatabaseBusyError("database is locked")

    second = Fake(then=busy_for_long)
    db = await start(Fake(script=[lost(retryable=True)]), second)

    with pytest.raises(ConnectionLostError) as raised:
        await db.request(insert())

    why = "it was resent and failed again (database is locked)"
    assert str(raised.value) == not_resent(why)
    assert len(second.sent) == 1


async def test_no_daemon_back_falls_back_to_embedded_when_allowed(
    start: Any, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    db = await start(Fake(script=[lost(retryable=True)]), allow_embedded=True)
    assert db.info().mode == "daemon"

    with caplog.at_level(logging.WARNING, logger="fastquartdb.client"):
        assert await db.request(insert()) == 1

    assert world.embedded.sent == [{**insert(), "resent": True}]
    assert db.current is world.embedded and db.mode == "embedded"
    assert db.info() == TransportInfo("embedded")
    assert "is gone; running embedded on" in caplog.text


async def test_no_daemon_at_start_runs_embedded_only_when_allowed(start: Any, world: World) -> None:
    with pytest.raises(DaemonUnavailableError):
        await start()
    assert world.embedded_opened == 0

    db = await start(allow_embedded=True)
    assert db.current is world.embedded and world.embedded_opened == 1
    assert await db.request({"op": "ping"}) == 1
    assert world.embedded.sent == [{"op": "ping"}]


async def test_a_keyed_write_timed_out_abandons_the_connection_and_is_resent(
    start: Any,
) -> None:
    first = Fake(script=[RequestTimeoutError("no reply within 1 s")])
    second = Fake(then=9)
    db = await start(first, second)

    assert await db.request(insert()) == 9
    assert first.timed_out == 1
    assert second.sent == [{**insert(), "resent": True}]


async def test_a_resend_timed_out_abandons_that_connection_too(start: Any) -> None:
    second = Fake(script=[RequestTimeoutError("no reply within 1 s")])
    third = Fake(then=3)
    db = await start(Fake(script=[lost(retryable=True)]), second, third)

    assert await db.request(insert()) == 3
    assert second.timed_out == 1
    assert third.sent == [{**insert(), "resent": True}]
    assert db.resent == 2


async def test_an_unkeyed_request_timed_out_is_raised_as_it_is(start: Any) -> None:
    error = RequestTimeoutError("no reply within 1 s")
    first = Fake(script=[error])
    db = await start(first, Fake())

    with pytest.raises(RequestTimeoutError) as raised:
        await db.request({"op": "insert", "table": "t", "values": {}})
    assert raised.value is error
    assert first.timed_out == 0 and db.current is first


# ------------------------------------------------------------ transactions


async def test_a_transaction_begun_after_a_loss_reconnects_first(start: Any) -> None:
    first, second = Fake(), Fake()
    db = await start(first, second)
    first.cause = ConnectionResetError("reset")

    await db.request({"op": "begin", "txn": 1})
    await db.request({"op": "insert", "txn": 1, "table": "t", "values": {}})

    assert first.sent == []
    assert [r["op"] for r in second.sent] == ["begin", "insert"]


async def test_a_transaction_on_a_lost_connection_fails_and_rolls_back_quietly(
    start: Any,
) -> None:
    first, second = Fake(), Fake()
    db = await start(first, second)
    await db.request({"op": "begin", "txn": 1})
    await db.request({"op": "begin", "txn": 2})
    first.cause = ConnectionResetError("reset")

    with pytest.raises(ConnectionLostError) as raised:
        await db.request({"op": "insert", "txn": 1, "table": "t", "values": {}})
    assert str(raised.value) == (
        "the connection to the daemon was lost inside this transaction, "
        "and the daemon rolled it back"
    )
    assert await db.request({"op": "rollback", "txn": 2}) is None

    assert [r["op"] for r in first.sent] == ["begin", "begin"]
    await until(lambda: db.current is second)
    assert second.sent == []


async def test_a_lost_commit_that_committed_is_resolved(start: Any) -> None:
    first = Fake(script=[None, lost(retryable=False)])
    second = Fake(then={"committed": True})
    db = await start(first, second)
    await db.request({"op": "begin", "txn": 1})

    assert await db.request({"op": "commit", "txn": 1, "key": list(KEY)}) is None

    assert second.sent == [{"op": "resolve", "key": KEY}]
    assert db.resent == 1 and first.timed_out == 0


async def test_a_lost_commit_that_did_not_commit_says_nothing_was_written(start: Any) -> None:
    cause = lost(retryable=False)
    db = await start(Fake(script=[None, cause]), Fake(then={"committed": False}))
    await db.request({"op": "begin", "txn": 1})

    with pytest.raises(ConnectionLostError) as raised:
        await db.request({"op": "commit", "txn": 1, "key": list(KEY)})

    assert str(raised.value) == (
        f"{cause}: the transaction was rolled back (the connection was lost before it "
        "committed); nothing of it was written"
    )


async def test_a_timed_out_commit_abandons_the_connection_then_resolves(start: Any) -> None:
    first = Fake(script=[None, RequestTimeoutError("no reply within 1 s")])
    second = Fake(then={"committed": True})
    db = await start(first, second)
    await db.request({"op": "begin", "txn": 1})

    assert await db.request({"op": "commit", "txn": 1, "key": list(KEY)}) is None
    assert first.timed_out == 1
    assert second.sent == [{"op": "resolve", "key": KEY}]


async def test_a_commit_whose_outcome_cannot_be_asked_says_it_is_unknown(
    start: Any, tmp_path: Path
) -> None:
    cause = lost(retryable=False)
    db = await start(Fake(script=[None, cause]))
    await db.request({"op": "begin", "txn": 1})

    with pytest.raises(ConnectionLostError) as raised:
        await db.request({"op": "commit", "txn": 1, "key": list(KEY)})

    gone = f"the daemon on {tmp_path / 'absent.sock'} went away and did not come back within 0.05 s"
    assert str(raised.value) == (
        f"{cause}; the commit's outcome could not be asked ({gone}): "
        "whether the transaction committed is unknown"
    )


# ------------------------------------------------------------ what a transport declares


class Bare(Transport):
    """A transport that declares nothing of its own: the base class's defaults."""

    mode = "embedded"

    async def request(self, request: dict[str, Any]) -> Any:
        return None

    async def close(self) -> None:
        return None


def test_transport_info_is_frozen_and_keeps_the_public_shape() -> None:
    bare = Bare()
    assert bare.info() == TransportInfo("embedded", raw_sql=True)
    assert bare.info().as_dict() == {"mode": "embedded", "raw_sql": True}
    with pytest.raises(dataclasses.FrozenInstanceError):
        bare.info().mode = "daemon"  # type: ignore[misc]
    assert bare.lost_cause is None
    bare.request_timed_out()  # nothing to give up
    assert bare.lost_cause is None

    daemon = TransportInfo("daemon", False, "/run/x.sock", "fastquartdb/1.0", 42)
    assert list(daemon.as_dict().items()) == [
        ("mode", "daemon"),
        ("socket", "/run/x.sock"),
        ("server", "fastquartdb/1.0"),
        ("server_pid", 42),
        ("raw_sql", False),
    ]


async def test_a_socket_transport_declares_its_loss_and_abandons_on_timeout() -> None:
    transport = SocketTransport("/run/x.sock", request_timeout=2.0)
    transport.server = {"server": "fastquartdb/1.0", "pid": 42, "raw_sql": False}
    assert transport.info() == TransportInfo(
        "daemon", raw_sql=False, socket="/run/x.sock", server="fastquartdb/1.0", server_pid=42
    )
    assert transport.lost_cause is None

    transport.request_timed_out()

    assert transport.lost_cause is transport.lost
    assert str(transport.lost_cause) == "abandoned: no reply within 2 s"
    await transport.close()
