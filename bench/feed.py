"""S11, S12: change-feed latency with many subscribers, through a real ``fqdb-server``.

One run::

    fqdb-server (capture on for "user", via the writer's init_engine(changes=["user"]))
    P subscriber processes, each with N subscribers: its own socket connection that
        sent "subscribe", its own feed (client/changes.py: follow_changes + ChangeWatch,
        pushes only) reading the log on the process's local readers, as db.changes() does
    1 writer process: one task inserting a row every 5 ms; the row carries the
        time.monotonic_ns() of the insert's send (CLOCK_MONOTONIC: one clock for all
        processes on Linux); the writer also records each insert's acknowledgement

Per change and subscriber: *send to receipt* (receipt minus the insert's send: an upper
bound of commit to consumer, since the commit comes after the send) and *ack to receipt*
(receipt minus the writer's acknowledgement: a lower bound, negative when the subscriber
had the change before the writer had its reply). The target is on the upper bound.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from typing import TYPE_CHECKING, Any

from .results import percentile

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .scenarios import Scenario

__all__ = ["FEED_SUBSCRIBERS", "run_feed"]

#: Subscribers of one S11 run, spread over the scenario's processes.
FEED_SUBSCRIBERS = 100
#: Seconds between two inserts of the writer.
WRITE_GAP = 0.005


async def _follow(feed: Any, received: list[tuple[int, int]], stop_at: float) -> None:
    """Take changes until ``stop_at`` (then the task is cancelled: no timer per change)."""

    async def take() -> None:
        async for change in feed:
            received.append((int(change.pk), time.monotonic_ns()))

    task = asyncio.ensure_future(take())
    try:
        await asyncio.wait({task}, timeout=max(0.0, stop_at - time.monotonic()))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await feed.aclose()


async def _feeds(db: str, socket: str, count: int, stop_at: float) -> list[tuple[int, int]]:
    """S11: a web worker's way: one manager (one connection), ``count`` db.changes() feeds."""
    from fastquartdb import AsyncDatabaseManager

    manager = await AsyncDatabaseManager.init_engine(db, mode="daemon", socket=socket)
    received: list[tuple[int, int]] = []  # (pk, receipt ns)
    feeds = [manager.changes(["user"], "now") for _ in range(count)]
    try:
        await asyncio.gather(*(_follow(feed, received, stop_at) for feed in feeds))
    finally:
        await AsyncDatabaseManager.close()
    return received


async def _connections(db: str, socket: str, count: int, stop_at: float) -> list[tuple[int, int]]:
    """S12: ``count`` subscribed connections, each its own feed (as many processes would)."""
    from fastquartdb.client.changes import ChangeWatch, follow_changes
    from fastquartdb.client.connection import SocketTransport
    from fastquartdb.engine import ReaderPool

    pool = ReaderPool.open(db, threads=2)
    received: list[tuple[int, int]] = []  # (pk, receipt ns)

    async def read(request: dict[str, Any]) -> Any:
        ok, value = pool.run_here(request)  # inline, as ReadRouter.route runs a feed's reads
        if not ok:
            raise value
        return value

    async def one(transport: SocketTransport) -> None:
        watch = ChangeWatch(transport, None, 1.0)  # pushes only: what S12 measures
        feed = follow_changes(read, watch, {"op": "changes", "tables": ["user"]}, "now")
        try:
            await _follow(feed, received, stop_at)
        finally:
            await watch.close()

    transports = [await SocketTransport.connect(socket, db) for _ in range(count)]
    try:
        await asyncio.gather(*(one(t) for t in transports))
    finally:
        for transport in transports:
            await transport.close()
        pool.close()
    return received


def _subscriber_main(
    kind: str, db: str, socket: str, count: int, stop_at: float, out: Connection
) -> None:
    try:
        run = _feeds if kind == "feeds" else _connections
        received = asyncio.run(run(db, socket, count, stop_at))
        out.send({"received": received})
    except BaseException as exc:  # the parent reports it
        out.send({"error": f"subscriber: {exc!r}"})
    finally:
        out.close()


async def _writer(db: str, socket: str, start_at: float, stop_at: float) -> dict[str, Any]:
    from fastquartdb import AsyncDatabaseManager

    from .contenders import User

    await AsyncDatabaseManager.init_engine(db, mode="daemon", socket=socket, changes=["user"])
    sent: dict[int, int] = {}
    acked: dict[int, int] = {}
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    while time.monotonic() < stop_at:
        t0 = time.monotonic_ns()
        pk = await User.insert({"username": str(t0), "age": 0})
        acked[pk] = time.monotonic_ns()
        sent[pk] = t0
        await asyncio.sleep(WRITE_GAP)
    await AsyncDatabaseManager.close()
    return {"sent": sent, "acked": acked}


def _writer_main(db: str, socket: str, start_at: float, stop_at: float, out: Connection) -> None:
    try:
        out.send(asyncio.run(_writer(db, socket, start_at, stop_at)))
    except BaseException as exc:
        out.send({"error": f"writer: {exc!r}"})
    finally:
        out.close()


def _ms(values: list[int]) -> dict[str, float]:
    values.sort()
    return {
        "p50_ms": percentile(values, 50) / 1e6,
        "p99_ms": percentile(values, 99) / 1e6,
        "max_ms": (values[-1] / 1e6) if values else float("nan"),
    }


def run_feed(scenario: Scenario, db: str, socket: str, timeout: float) -> dict[str, Any]:
    """One S11 run against the daemon on ``socket``; its metrics (the send-to-receipt latency
    as ``p50_ms``/``p99_ms``/``max_ms``, receipts per second as ``throughput``)."""
    ctx = multiprocessing.get_context("spawn")
    duration = scenario.duration or 3.0
    # Everyone connected and subscribed before the first insert: start after the spawns.
    start_at = time.monotonic() + 3.0
    stop_at = start_at + duration
    pipes: list[Connection] = []
    procs = []
    per = scenario.tasks
    # Subscribers stay a second longer: the last inserts still reach every one of them.
    kind = "feeds" if scenario.workload == "feed" else "connections"
    subscriber = (_subscriber_main, (kind, db, socket, per, stop_at + 1.0))
    targets: list[tuple[Any, tuple[Any, ...]]] = [subscriber] * scenario.processes
    targets.append((_writer_main, (db, socket, start_at, stop_at)))
    cpu0 = os.times()
    try:
        for target, args in targets:
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=target, args=(*args, sender))
            proc.start()
            sender.close()
            procs.append(proc)
            pipes.append(receiver)
        reports = []
        for pipe in pipes:
            if not pipe.poll(timeout + duration + 5):
                raise RuntimeError("an S11 process sent no result in time")
            report = pipe.recv()
            if "error" in report:
                raise RuntimeError(report["error"])
            reports.append(report)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in pipes:
            pipe.close()
    writer = reports[-1]
    sent, acked = writer["sent"], writer["acked"]
    send_to_receipt: list[int] = []
    ack_to_receipt: list[int] = []
    missing = 0
    for report in reports[:-1]:
        got = dict(report["received"])
        missing += sum(1 for pk in sent if pk not in got)
        for pk, at in report["received"]:
            if pk in sent:
                send_to_receipt.append(at - sent[pk])
                ack_to_receipt.append(at - acked[pk])
    write_ack = [acked[pk] - sent[pk] for pk in sent]
    children = os.times()
    metrics: dict[str, Any] = {
        "throughput": len(send_to_receipt) / duration,
        "ok": len(send_to_receipt),
        "requests": len(send_to_receipt),
        "commits": len(sent),
        "subscribers": scenario.processes * per,
        # Per subscriber connection, changes it never received (each should get every one).
        "missing": missing,
        "errors": missing,
        "error_kinds": {"missing": missing} if missing else {},
        "window_s": duration,
        "client_cpu_s": (children.children_user + children.children_system)
        - (cpu0.children_user + cpu0.children_system),
        **_ms(send_to_receipt),
        "ack_to_receipt": _ms(ack_to_receipt),
        "write_ack": _ms(write_ack),
    }
    return metrics
