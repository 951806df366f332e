"""A client process that keeps writing through the daemon until a stop file appears.

``python -m tests.cli.writer DB STOPFILE``: inserts one row per request into
``log`` and prints how many were acknowledged every 20 rows (and at the end),
so a test knows writes are under way and how many were committed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from fastquartdb import AsyncDatabaseManager


async def main(db: str, stop: str) -> None:
    manager = await AsyncDatabaseManager.init_engine(db, mode="daemon")
    written = 0
    try:
        while not os.path.exists(stop):
            await manager.execute("INSERT INTO log (payload) VALUES (?)", ["x" * 200])
            written += 1
            if written % 20 == 0:
                print(written, flush=True)
    finally:
        print(written, flush=True)
        await AsyncDatabaseManager.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
