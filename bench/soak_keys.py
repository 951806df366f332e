"""Soak: do the request-key records stay bounded under a long write load?

``python -m bench.soak_keys --minutes 10`` (``make soak-keys``): a real ``fqdb-server``
and 4 processes x 16 tasks inserting single rows for the whole time; every 10 s it
samples the rows of ``_fqdb_requests``, the database and WAL sizes and the write rate,
and writes the table to ``bench/results/soak-keys.md``. The records of each client are
deleted as it reports (``acked``) which keys it no longer waits for, so their number
must stay near processes x (ACK_EVERY + tasks) however long the run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from fastquartdb.client.keys import ACK_EVERY

from .daemon import BenchDaemon

PROCESSES, TASKS = 4, 16
RESULTS = Path(__file__).resolve().parent / "results"


class SoakRow(BaseModel):
    __tablename__ = "soak"

    id = Column("INTEGER", primary_key=True)
    payload = Column("TEXT", nullable=False)


def _writer(db: str, socket: str, seconds: float, prefix: str) -> None:
    async def main() -> None:
        await AsyncDatabaseManager.init_engine(db, mode="daemon", socket=socket)
        end = time.monotonic() + seconds

        async def task(t: int) -> None:
            n = 0
            while time.monotonic() < end:
                await SoakRow.insert({"payload": f"{prefix}-{t}-{n}"})
                n += 1

        await asyncio.gather(*(task(t) for t in range(TASKS)))
        await AsyncDatabaseManager.close()

    asyncio.run(main())


def _sample(db: str) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            records = int(conn.execute("SELECT count(*) FROM _fqdb_requests").fetchone()[0])
        except sqlite3.OperationalError:
            records = 0
        rows = int(conn.execute("SELECT count(*) FROM soak").fetchone()[0])
    conn.close()
    return records, rows


def run(minutes: float, out: Path) -> list[str]:
    """Run the soak; return the report's lines (also written to ``out``)."""
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="fqdb-soak-") as tmp:
        db = os.path.join(tmp, "soak.db")
        daemon = BenchDaemon(db, "full", os.path.join(tmp, "daemon.log")).start()
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_writer, args=(db, daemon.socket, seconds, f"p{i}"))
            for i in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        lines = [
            f"# Request-key records under a {minutes:g}-minute soak",
            "",
            f"{PROCESSES} processes x {TASKS} tasks of single-row inserts through `fqdb-server` "
            f"(synchronous=FULL); clients ack every {ACK_EVERY} keys. Command: "
            f"`python -m bench.soak_keys --minutes {minutes:g}`.",
            "",
            "| t (s) | rows written | inserts/s | records in _fqdb_requests | db MiB | wal MiB |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        start = time.monotonic()
        last_rows, last_t, peak = 0, start, 0
        time.sleep(1.0)
        while any(p.is_alive() for p in procs):
            time.sleep(10.0)
            now = time.monotonic()
            try:
                records, rows = _sample(db)
            except sqlite3.OperationalError:
                continue  # the table is not there yet
            peak = max(peak, records)
            rate = (rows - last_rows) / (now - last_t)
            last_rows, last_t = rows, now
            size = os.path.getsize(db) / 2**20
            wal = os.path.getsize(db + "-wal") / 2**20 if os.path.exists(db + "-wal") else 0.0
            line = (
                f"| {now - start:.0f} | {rows:,} | {rate:,.0f} | {records:,} | {size:.1f} | "
                f"{wal:.1f} |"
            )
            lines.append(line)
            print(line, flush=True)
        for proc in procs:
            proc.join()
        records, rows = _sample(db)
        daemon.stop()
    lines += [
        "",
        f"Peak records: {peak:,} for {rows:,} writes (bound "
        f"{PROCESSES} x ({ACK_EVERY} + {TASKS}) x 2 = {PROCESSES * (ACK_EVERY + TASKS) * 2:,}); "
        f"left at the end: {records:,} (the last unacked keys of each client, pruned after "
        "`--request-key-window`).",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak-keys.md")
    args = parser.parse_args()
    print("\n".join(run(args.minutes, args.out)))


if __name__ == "__main__":
    main()
