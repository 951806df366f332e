"""Scenarios S1-S12 and D1, and the runner that plays one contender once.

Every run gets a fresh database file in its own temporary directory (D1: a
fresh database on the invocation's dqlite cluster, bench/dqlite_daemon.py), fresh
worker processes (spawned, like web workers) and, for the daemon contender,
a fresh ``fqdb-server`` subprocess stopped by pid afterwards. Repeats are
interleaved by the caller: repeat r runs every contender once before repeat
r+1 starts, each repeat starting one contender further along so no
contender always goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from . import worker
from .contenders import CONTENDERS, RANGE_ROWS, USER_DDL
from .daemon import BenchDaemon
from .dqlite_daemon import DQLITE_CONTENDERS, DqliteCluster, start_daemon
from .feed import FEED_SUBSCRIBERS, run_feed
from .results import run_metrics
from .web import WEB_CONNECTIONS, WEB_WORKERS, WebRunFailed, run_web

__all__ = [
    "FULL",
    "QUICK",
    "SCENARIOS",
    "Case",
    "Profiling",
    "RunFailed",
    "Runner",
    "Scenario",
    "Sizes",
    "scenarios_for",
]


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; :data:`FULL` for ``make bench``, :data:`QUICK` for the smoke run."""

    processes: int
    tasks: int
    s1_seconds: float
    s3_seconds: float
    s5_seconds: float
    s2_reads: int
    s2_warmup: int
    s4_rows: int
    #: Rows in the table before read scenarios start.
    read_rows: int
    s7_seconds: float = 3.0
    #: Seconds of wrk load per S8/S9 run.
    s8_seconds: float = 5.0
    #: Seconds of load per D1 run (dqlite: S1's load, direct and through a daemon).
    d1_seconds: float = 4.0


FULL = Sizes(
    processes=4,
    tasks=16,
    s1_seconds=4.0,
    s3_seconds=3.0,
    s5_seconds=3.0,
    s2_reads=10_000,
    s2_warmup=500,
    s4_rows=100_000,
    read_rows=10_000,
)
QUICK = Sizes(
    processes=4,
    tasks=16,
    s1_seconds=0.25,
    s3_seconds=0.25,
    s5_seconds=0.25,
    s2_reads=200,
    s2_warmup=20,
    s4_rows=2_000,
    read_rows=500,
    s7_seconds=0.25,
    s8_seconds=1.0,
    d1_seconds=0.5,
)


@dataclass(frozen=True)
class Case:
    """One contender in one scenario at one ``synchronous`` setting."""

    scenario: str
    contender: str
    synchronous: str = "full"

    @property
    def key(self) -> str:
        return f"{self.scenario}:{self.contender}:{self.synchronous}"

    @property
    def label(self) -> str:
        return CONTENDERS[self.contender][0]


@dataclass(frozen=True)
class Scenario:
    """What the worker processes do, how many there are, and who competes."""

    id: str
    title: str
    description: str
    workload: str
    processes: int
    tasks: int
    cases: tuple[Case, ...]
    unit: str
    duration: float | None = None
    count: int | None = None
    rows: int = 0
    bulk_rows: int = 0
    write_ratio: float = 0.0
    warmup: int = 1
    #: Derived from another scenario's runs instead of running itself.
    derived_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def size_text(self) -> str:
        if self.derived_from:
            return f"measured during {self.derived_from} daemon runs"
        load = f"{self.processes} process{'es' if self.processes > 1 else ''} x {self.tasks} task{'s' if self.tasks > 1 else ''}"
        if self.workload == "bulk":
            return f"{self.bulk_rows:,} rows in one call, 1 process"
        if self.duration is not None:
            return f"{load}, {self.duration:g} s per run"
        return f"{load}, {self.count:,} requests per task"


def _cases(
    scenario: str, contenders: list[str], settings: tuple[str, ...] = ("full",)
) -> tuple[Case, ...]:
    return tuple(Case(scenario, c, s) for s in settings for c in contenders)


def scenarios_for(sizes: Sizes) -> dict[str, Scenario]:
    """The scenarios of issues 8 and 18 at the given sizes."""
    p, t = sizes.processes, sizes.tasks
    return {
        "S1": Scenario(
            "S1",
            "contended writes",
            "Every task inserts single rows (User.insert), each acknowledged only once committed.",
            "insert",
            p,
            t,
            _cases(
                "S1",
                [
                    "daemon",
                    "daemon_writer_reads",
                    "daemon_nokeys",
                    "daemon_replicate",
                    "embedded",
                    "embedded_filelock",
                    "aiosqlite",
                    "sqlalchemy",
                ],
                ("full", "normal"),
            ),
            "inserts/s",
            duration=sizes.s1_seconds,
        ),
        "S2": Scenario(
            "S2",
            "point-read latency",
            "One task reads rows by primary key, one after another.",
            "read",
            1,
            1,
            _cases("S2", ["daemon", "embedded", "aiosqlite", "sqlite3"]),
            "reads/s",
            count=sizes.s2_reads,
            rows=sizes.read_rows,
            warmup=sizes.s2_warmup,
        ),
        "S3": Scenario(
            "S3",
            "concurrent reads",
            "Every task reads random rows by primary key.",
            "read",
            p,
            t,
            _cases("S3", ["daemon", "daemon_writer_reads", "embedded", "aiosqlite"]),
            "reads/s",
            duration=sizes.s3_seconds,
            rows=sizes.read_rows,
            warmup=5,
        ),
        "S4": Scenario(
            "S4",
            "bulk insert",
            "One call inserts every row: User.insert_many (chunks of 1000, one transaction) "
            "or sqlite3 executemany in one transaction.",
            "bulk",
            1,
            1,
            _cases("S4", ["daemon", "embedded", "sqlite3"]),
            "rows/s",
            bulk_rows=sizes.s4_rows,
        ),
        "S5": Scenario(
            "S5",
            "web-like mix",
            "Every task: 90% reads by primary key, 10% single-row updates by primary key "
            "(each acknowledged once committed).",
            "mix",
            p,
            t,
            _cases("S5", ["daemon", "embedded", "aiosqlite"]),
            "requests/s",
            duration=sizes.s5_seconds,
            rows=sizes.read_rows,
            write_ratio=0.1,
            warmup=5,
        ),
        "S6": Scenario(
            "S6",
            "cost",
            "Daemon peak RSS (VmHWM) and CPU seconds per 10,000 requests during S1; "
            "client CPU per 10,000 requests for every S1 contender.",
            "insert",
            p,
            t,
            _cases("S6", ["daemon"], ("full", "normal")),
            "MiB / CPU s",
            duration=sizes.s1_seconds,
            derived_from="S1",
        ),
        "S7": Scenario(
            "S7",
            "range reads",
            f"Every task reads {RANGE_ROWS} consecutive rows by a primary-key range "
            "(User.fetch(filters={'id': [('BETWEEN', (lo, hi))]})).",
            "range",
            p,
            t,
            _cases("S7", ["daemon", "embedded", "aiosqlite"]),
            "reads/s",
            duration=sizes.s7_seconds,
            rows=sizes.read_rows,
            warmup=5,
        ),
        **{
            sid: Scenario(
                sid,
                f"web app, {100 - share}/{share}",
                f"The Quart example under hypercorn -w {WEB_WORKERS}, driven by wrk with "
                f"{WEB_CONNECTIONS} connections: {100 - share}% GET /users/<id>, {share}% "
                "POST /users; the plain-aiosqlite app serves the same two routes.",
                "web",
                WEB_WORKERS,
                WEB_CONNECTIONS,
                _cases(sid, ["daemon", "embedded", "aiosqlite"]),
                "requests/s",
                duration=sizes.s8_seconds,
                rows=sizes.read_rows,
                write_ratio=share / 100,
            )
            for sid, share in (("S8", 10), ("S9", 50))
        },
        "S10": Scenario(
            "S10",
            "change capture cost",
            "S1 FULL through the daemon with the user table captured for change feeds "
            "(its triggers log every insert) against the same run without capture.",
            "insert",
            p,
            t,
            _cases("S10", ["daemon", "daemon_changes"]),
            "inserts/s",
            duration=sizes.s1_seconds,
        ),
        "S11": Scenario(
            "S11",
            "change feed latency, feeds",
            f"{FEED_SUBSCRIBERS} db.changes() feeds ({FEED_SUBSCRIBERS // p} in each of {p} "
            "processes, one daemon connection each: web workers with SSE clients) follow the "
            "user table while one task inserts a row every 5 ms; latency from the insert's "
            "send to each feed's receipt of the change.",
            "feed",
            p,
            FEED_SUBSCRIBERS // p,
            _cases("S11", ["daemon_changes"], ("normal",)),
            "changes/s",
            duration=sizes.s5_seconds,
        ),
        "S12": Scenario(
            "S12",
            "change feed latency, connections",
            f"S11 with {FEED_SUBSCRIBERS} subscribed daemon connections, each its own feed "
            f"({FEED_SUBSCRIBERS // p} in each of {p} processes): the daemon's fan-out.",
            "feed_connections",
            p,
            FEED_SUBSCRIBERS // p,
            _cases("S12", ["daemon_changes"], ("normal",)),
            "changes/s",
            duration=sizes.s5_seconds,
        ),
        "D1": Scenario(
            "D1",
            "dqlite writes, direct and through a daemon",
            "S1's load on a 3-node dqlite-demo cluster: every task inserts single rows "
            "(User.insert), each acknowledged once committed by a Raft quorum; each process a "
            "direct dqlite client, or all of them through one fqdb-server dqlite://... on the "
            "host, which group-commits their writes into one dqlite transaction per batch.",
            "insert",
            p,
            t,
            # dqlite has no PRAGMA synchronous: a commit is durable once a quorum has it.
            _cases("D1", ["dqlite", "dqlite_daemon"], ("raft",)),
            "inserts/s",
            duration=sizes.d1_seconds,
        ),
    }


#: Scenario ids in order.
SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12", "D1")


class RunFailed(RuntimeError):
    """One run could not finish; its message says why (worker tracebacks included)."""


@dataclass
class Profiling:
    """Optional profiles of runs: the daemon under cProfile or py-spy, worker 0 under cProfile."""

    directory: str | None = None
    daemon: str | None = None  # "cprofile" | "py-spy" | "py-spy-native" | None
    client: bool = False
    only: set[str] = field(default_factory=set)  # case keys; empty = all

    def wanted(self, case: Case) -> bool:
        return self.directory is not None and (not self.only or case.key in self.only)


def prepare_db(path: str, rows: int) -> None:
    """A fresh WAL database with the ``user`` table and ``rows`` rows (ids 1..rows)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(USER_DDL)
        if rows:
            conn.execute("BEGIN")
            conn.executemany(
                'INSERT INTO "user" ("id", "username", "age") VALUES (?, ?, ?)',
                ((i, f"user{i}", i % 100) for i in range(1, rows + 1)),
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _restore_check(db: str, replica: str, workdir: str) -> dict[str, Any]:
    """Restore the run's Litestream replica and compare it with the file the daemon wrote."""
    import subprocess

    from fastquartdb.server.replication import find_litestream

    restored = os.path.join(workdir, "restored.db")
    started = time.monotonic()
    done = subprocess.run(
        [find_litestream(), "restore", "-o", restored, "file://" + replica],
        capture_output=True,
        text=True,
        check=False,
    )
    restore_s = time.monotonic() - started
    if done.returncode != 0:
        raise RunFailed(f"litestream restore failed: {done.stderr.strip()[-500:]}")

    def rows(path: str) -> int:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute('SELECT count(*) FROM "user"').fetchone()[0])

    replica_bytes = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(replica) for f in files
    )
    return {
        "restore_s": restore_s,
        "restored_rows": rows(restored),
        "rows_in_db": rows(db),
        "replica_bytes": replica_bytes,
        "db_bytes": os.path.getsize(db),
    }


def _daemon_stats(socket_path: str, db: str) -> dict[str, Any]:
    from fastquartdb.client.connection import SocketTransport

    async def ask() -> dict[str, Any]:
        transport = await SocketTransport.connect(socket_path, db)
        try:
            result: dict[str, Any] = await transport.request({"op": "stats"})
            return result
        finally:
            await transport.close()

    return asyncio.run(ask())


class Runner:
    """Plays one case once: database, daemon, worker processes, measurements."""

    def __init__(
        self,
        *,
        tmp_root: str | None,
        loop: str,
        profiling: Profiling | None = None,
        timeout: float = 180.0,
    ) -> None:
        self.tmp_root = tmp_root
        self.loop = loop
        self.profiling = profiling or Profiling()
        self.timeout = timeout
        self._ctx = multiprocessing.get_context("spawn")
        self.cluster = DqliteCluster(tmp_root)

    def close(self) -> None:
        """Stop what outlives a run: the dqlite cluster of D1, if it was started."""
        self.cluster.close()

    def run(self, scenario: Scenario, case: Case, repeat: int) -> dict[str, Any]:
        """Run ``case`` once and return its metrics, or ``{"error": ...}`` if it failed."""
        started = time.monotonic()
        load = os.getloadavg()[0]
        workdir = tempfile.mkdtemp(prefix=f"fqdb-bench-{scenario.id}-", dir=self.tmp_root)
        try:
            metrics = self._run(scenario, case, repeat, workdir)
        except RunFailed as exc:
            metrics = {"error": str(exc)}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        metrics["repeat"] = repeat
        metrics["wall_s"] = time.monotonic() - started
        # Other work on the machine skews a run: keep the 1-minute load average with it.
        metrics["load_avg_1m"] = round(load, 2)
        return metrics

    def _profile_path(self, case: Case, repeat: int, what: str, ext: str) -> str | None:
        prof = self.profiling
        if not prof.wanted(case):
            return None
        assert prof.directory is not None
        os.makedirs(prof.directory, exist_ok=True)
        name = f"{case.scenario}-{case.contender}-{case.synchronous}-r{repeat}-{what}.{ext}"
        return os.path.join(prof.directory, name)

    def _start_daemon(self, case: Case, repeat: int, db: str, workdir: str) -> BenchDaemon:
        if case.contender in DQLITE_CONTENDERS:
            return start_daemon(db, workdir)
        wrapper: list[str] | None = None
        cprofile: str | None = None
        if self.profiling.daemon == "cprofile":
            cprofile = self._profile_path(case, repeat, "daemon", "prof")
        elif self.profiling.daemon in ("py-spy", "py-spy-native"):
            out = self._profile_path(case, repeat, "daemon", "txt")
            if out is not None:
                native = ["--native"] if self.profiling.daemon == "py-spy-native" else []
                # The venv's own py-spy (the bench extra), whether or not its bin is on PATH.
                beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
                wrapper = [
                    beside if os.path.exists(beside) else "py-spy",
                    "record",
                    "--threads",
                    *native,
                    "--format",
                    "raw",
                    "-r",
                    "200",
                    "-o",
                    out,
                    "--",
                ]
        extra = []
        if case.contender == "daemon_replicate":
            extra = ["--replicate", os.path.join(workdir, "replica")]
        return BenchDaemon(
            db,
            case.synchronous,
            os.path.join(workdir, "daemon.log"),
            wrapper=wrapper,
            cprofile=cprofile,
            extra=extra,
        ).start()

    def _run(self, scenario: Scenario, case: Case, repeat: int, workdir: str) -> dict[str, Any]:
        if case.contender in DQLITE_CONTENDERS:
            try:
                db = self.cluster.url()  # a fresh database; the table comes from init_engine
            except RuntimeError as exc:
                raise RunFailed(f"the dqlite cluster did not start: {exc}") from None
        else:
            db = os.path.join(workdir, "bench.db")
            prepare_db(db, scenario.rows)
        daemon: BenchDaemon | None = None
        if CONTENDERS[case.contender][1]:
            try:
                daemon = self._start_daemon(case, repeat, db, workdir)
            except RuntimeError as exc:
                raise RunFailed(str(exc)) from None
        try:
            if scenario.workload in ("feed", "feed_connections"):
                assert daemon is not None
                try:
                    metrics = run_feed(scenario, db, daemon.socket, self.timeout)
                except RuntimeError as exc:
                    raise RunFailed(str(exc)) from None
                daemon_cpu = 0.0
            elif scenario.workload == "web":
                socket = daemon.socket if daemon is not None else None
                cpu0 = daemon.cpu_seconds() if daemon is not None else 0.0
                try:
                    metrics = run_web(scenario, case.contender, db, socket, workdir)
                except WebRunFailed as exc:
                    raise RunFailed(str(exc)) from None
                daemon_cpu = (daemon.cpu_seconds() - cpu0) if daemon is not None else 0.0
            else:
                reports, daemon_cpu = self._run_workers(scenario, case, repeat, db, daemon)
                metrics = run_metrics(reports)
            requests = metrics["requests"] or 1
            metrics["client_cpu_s_per_10k"] = metrics["client_cpu_s"] / requests * 10_000
            if daemon is not None:
                metrics["daemon_cpu_s"] = daemon_cpu
                metrics["daemon_cpu_s_per_10k"] = daemon_cpu / requests * 10_000
                metrics.update(daemon.usage())
                try:
                    stats = _daemon_stats(daemon.socket, db)
                    metrics["daemon_stats"] = {
                        k: stats[k]
                        for k in ("requests", "batches", "batch_mean", "batch_max", "errors")
                    }
                except Exception as exc:
                    metrics["daemon_stats"] = {"error": repr(exc)}
        finally:
            if daemon is not None:
                stopping = time.monotonic()
                code = daemon.stop()
                metrics_stop_s = time.monotonic() - stopping
                if code not in (0, None):
                    with open(daemon.log_path) as fh:
                        tail = fh.read()[-2000:]
                    raise RunFailed(f"fqdb-server exited with {code}:\n{tail}")
        if case.contender == "daemon_replicate":
            metrics["daemon_stop_s"] = metrics_stop_s
            metrics.update(_restore_check(db, os.path.join(workdir, "replica"), workdir))
        return metrics

    def _run_workers(
        self,
        scenario: Scenario,
        case: Case,
        repeat: int,
        db: str,
        daemon: BenchDaemon | None,
    ) -> tuple[list[dict[str, Any]], float]:
        ctx = self._ctx
        n = scenario.processes
        barrier = ctx.Barrier(n + 1)
        base = worker.Job(
            scenario=scenario.id,
            contender=case.contender,
            db=db,
            synchronous=case.synchronous,
            socket=daemon.socket if daemon is not None else None,
            workload=scenario.workload,
            tasks=scenario.tasks,
            duration=scenario.duration,
            count=scenario.count,
            rows=scenario.rows,
            write_ratio=scenario.write_ratio,
            bulk_rows=scenario.bulk_rows,
            seed=repeat + 1,
            index=0,
            loop=self.loop,
            warmup=scenario.warmup,
        )
        procs: list[Any] = []
        conns: list[Connection] = []
        try:
            for i in range(n):
                receiver, sender = ctx.Pipe(duplex=False)
                profile = (
                    self._profile_path(case, repeat, "client", "prof")
                    if (self.profiling.client and i == 0)
                    else None
                )
                job = replace(base, index=i, profile=profile)
                proc = ctx.Process(
                    target=worker.main,
                    args=(job, barrier, sender),
                    name=f"bench-{case.key}-{i}",
                )
                proc.start()
                sender.close()
                procs.append(proc)
                conns.append(receiver)
            try:
                barrier.wait(self.timeout)  # everyone warmed up
                cpu0 = daemon.cpu_seconds() if daemon is not None else 0.0
                barrier.wait(self.timeout)  # go
            except threading.BrokenBarrierError:
                raise RunFailed(
                    self._errors(conns) or "a worker did not reach the barrier"
                ) from None
            deadline = time.monotonic() + self.timeout + (scenario.duration or 0.0)
            reports = [self._receive(conn, deadline) for conn in conns]
            cpu1 = daemon.cpu_seconds() if daemon is not None else 0.0
            return reports, cpu1 - cpu0
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()  # by its pid
                    proc.join()
            for conn in conns:
                conn.close()

    def _receive(self, conn: Connection, deadline: float) -> dict[str, Any]:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise RunFailed("a worker sent no result in time")
        try:
            report: dict[str, Any] = conn.recv()
        except EOFError:
            raise RunFailed("a worker died without a result") from None
        if "error" in report:
            raise RunFailed(report["error"])
        return report

    @staticmethod
    def _errors(conns: list[Connection]) -> str:
        errors = []
        for conn in conns:
            try:
                if conn.poll(5):
                    message = conn.recv()
                    if "error" in message:
                        errors.append(message["error"])
            except (EOFError, OSError):
                continue
        return "\n".join(errors)
