"""One worker process: a web worker's load against one contender.

The parent starts these with multiprocessing's *spawn* method (a fresh
interpreter, as gunicorn/uvicorn workers are) and hands each a :class:`Job`.
The life of a worker::

    open the contender ─> warm up (one request per task, not measured)
    ─> barrier "ready" (the parent reads the daemon's CPU clock here)
    ─> barrier "go"    (every process starts at once)
    ─> tasks run their loop, timing each awaited call
    ─> send the measurements ─> close the contender ─> exit

Measurements are sent *before* closing so the parent's CPU and RSS window
covers the load, not the teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import os
import random
import time
import traceback
from array import array
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .contenders import RANGE_ROWS, Client, make_client

__all__ = ["Job", "main"]

#: Seconds a worker waits at a barrier before giving up on the others.
BARRIER_TIMEOUT = 120.0


@dataclass(frozen=True)
class Job:
    """Everything one worker process needs; pickled to the child."""

    scenario: str
    contender: str
    db: str
    synchronous: str
    socket: str | None
    #: ``insert`` (S1), ``read`` (S2, S3), ``mix`` (S5), ``bulk`` (S4) or ``range`` (S7).
    workload: str
    tasks: int
    #: Seconds of load (duration-based scenarios) or None.
    duration: float | None
    #: Requests per task (count-based scenarios) or None.
    count: int | None
    #: Rows already in the table (reads pick a primary key in 1..rows).
    rows: int
    write_ratio: float
    bulk_rows: int
    seed: int
    index: int
    loop: str
    #: Rounds of one request per task before the barrier (not measured).
    warmup: int = 1
    profile: str | None = None


def main(job: Job, barrier: Any, conn: Connection) -> None:
    """Process entry point: run ``job`` and send its result (or its error) on ``conn``."""
    try:
        _set_loop_policy(job.loop)
        asyncio.run(_run(job, barrier, conn))
    except BaseException:
        barrier.abort()
        with contextlib.suppress(OSError):
            conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _set_loop_policy(loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif loop != "asyncio":
        raise ValueError(f"unknown loop {loop!r}")


async def _run(job: Job, barrier: Any, conn: Connection) -> None:
    client = make_client(job.contender, job.db, job.synchronous, job.socket)
    await client.open()
    sent = False
    try:
        load = _Load(job, client)
        await load.warm_up()
        gc.collect()
        barrier.wait(BARRIER_TIMEOUT)  # ready: warmed up, connections open
        barrier.wait(BARRIER_TIMEOUT)  # go
        profiler = cProfile.Profile() if job.profile else None
        cpu0 = time.process_time()
        start = time.monotonic_ns()
        if profiler is not None:
            profiler.enable()
        await load.run(start)
        if profiler is not None:
            profiler.disable()
        end = time.monotonic_ns()
        cpu1 = time.process_time()
        conn.send(load.result(start, end, cpu1 - cpu0))
        sent = True
        if profiler is not None and job.profile:
            profiler.dump_stats(job.profile)
    finally:
        try:
            await client.close()
        except Exception:
            if sent:  # measurements are in; a teardown error must not hide them
                traceback.print_exc()
            else:
                raise


class _Load:
    """The request loop of every task of one worker, and what it measured."""

    def __init__(self, job: Job, client: Client) -> None:
        self.job = job
        self.client = client
        self.ok = 0
        self.errors: Counter[str] = Counter()
        # Per-request latencies in ns, by kind ("read"/"write"); arrays keep them compact.
        self.latencies: dict[str, array[int]] = {"read": array("q"), "write": array("q")}
        self.writes = 0
        self._names = 0
        self.payload: Any = None

    def _name(self) -> str:
        self._names += 1
        return f"w{self.job.index}-{self._names}"

    def _request(self, rng: random.Random) -> tuple[str, Any]:
        """The next request of a task: its kind and an awaitable."""
        job, client = self.job, self.client
        workload = job.workload
        if workload == "insert":
            return "write", client.insert(self._name(), rng.randrange(100))
        if workload == "read":
            return "read", client.read(rng.randint(1, job.rows))
        if workload == "range":
            return "read", client.read_range(rng.randint(1, job.rows - RANGE_ROWS + 1))
        if workload == "mix":
            if rng.random() < job.write_ratio:
                return "write", client.update(rng.randint(1, job.rows), rng.randrange(100))
            return "read", client.read(rng.randint(1, job.rows))
        raise ValueError(f"unknown workload {workload!r}")

    async def warm_up(self) -> None:
        if self.job.workload == "bulk":
            rows = [(f"bulk-{i}", i % 100) for i in range(self.job.bulk_rows)]
            self.payload = self.client.prepare_bulk(rows)
            return
        rng = random.Random(-1 - self.job.seed)
        for _ in range(max(1, self.job.warmup)):
            await asyncio.gather(*(self._request(rng)[1] for _ in range(self.job.tasks)))

    async def run(self, start: int) -> None:
        job = self.job
        if job.workload == "bulk":
            t0 = time.perf_counter_ns()
            self.ok = await self.client.bulk(self.payload)
            self.latencies["write"].append(time.perf_counter_ns() - t0)
            return
        deadline = start + int(job.duration * 1e9) if job.duration is not None else None
        await asyncio.gather(*(self._task(t, deadline) for t in range(job.tasks)))

    async def _task(self, t: int, deadline: int | None) -> None:
        job = self.job
        rng = random.Random(job.seed * 1_000_003 + job.index * 1009 + t)
        latencies = self.latencies
        count = job.count
        n = 0
        monotonic_ns, perf_counter_ns = time.monotonic_ns, time.perf_counter_ns
        while True:
            if deadline is not None:
                if monotonic_ns() >= deadline:
                    return
            elif count is not None and n >= count:
                return
            n += 1
            kind, call = self._request(rng)
            t0 = perf_counter_ns()
            try:
                await call
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
            else:
                self.ok += 1
            # Failed requests count in latency (the user waited) but not in throughput.
            latencies[kind].append(perf_counter_ns() - t0)

    def result(self, start: int, end: int, cpu: float) -> dict[str, Any]:
        """What the parent aggregates: counts, the time window, latencies, CPU."""
        return {
            "index": self.job.index,
            "pid": os.getpid(),
            "ok": self.ok,
            "errors": dict(self.errors),
            "start_ns": start,
            "end_ns": end,
            "cpu_s": cpu,
            "latency_ns": {kind: lat.tobytes() for kind, lat in self.latencies.items()},
        }
