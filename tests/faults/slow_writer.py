"""A paced writer for the Litestream hazard test: ``python -m tests.faults.slow_writer ...``.

Inserts rows of about 300 bytes, each its own commit, at ``--rate`` rows per
second through the daemon, for ``--seconds``, into a table with no secondary
index (an index can hide the loss from ``count(*)``), then writes the keys of
the acknowledged rows to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from fastquartdb import AsyncDatabaseManager, BaseModel, Column

PAYLOAD = "x" * 300


class Note(BaseModel):
    id = Column("INTEGER", primary_key=True)
    key = Column("TEXT", nullable=False)
    body = Column("TEXT")


async def main(args: argparse.Namespace) -> None:
    await AsyncDatabaseManager.init_engine(args.db, mode="daemon")
    acked: list[str] = []
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < args.seconds:
        key = f"n{n}"
        await Note.insert({"key": key, "body": PAYLOAD})
        acked.append(key)
        n += 1
        # Paced by the clock, not by sleeps alone: the rate holds whatever a commit costs.
        await asyncio.sleep(max(0.0, started + n / args.rate - time.monotonic()))
    await AsyncDatabaseManager.close()
    with open(args.out, "w") as fh:
        json.dump({"acked": acked}, fh)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--out", required=True)
    asyncio.run(main(parser.parse_args()))
