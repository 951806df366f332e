"""A write-load client for the failover tests: ``python -m tests.dqlite.writer URL NAME OUT STOP
[SOCKET [nokeys]]`` (with SOCKET: through the per-host daemon listening there,
``mode="daemon"``; ``nokeys``: with ``request_keys=False``, so only the daemon's own
record of each batch can keep a write from running twice).

Inserts rows with keys ``NAME-0``, ``NAME-1``, ... one at a time until the file
STOP exists. Each outcome goes to OUT as one JSON line, flushed at once:
``{"key", "ok": true, "t"}`` for an acknowledged write, ``{"key", "ok": false,
"unknown": bool, "error"}`` for one that raised (``unknown``: the error said
its outcome is unknown). At the end it prints one JSON line to stdout: how often
its transport found a new leader (``failovers``), resent a write (``resent``) and
had one answered from its record, the first send having committed (``deduplicated``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from fastquartdb.protocol.errors import FQDBError


class Event(BaseModel):
    id = Column("INTEGER", primary_key=True)
    key = Column("TEXT", nullable=False)  # not unique on purpose: duplicates must be visible
    writer = Column("TEXT")


async def main(
    url: str, name: str, out: str, stop: str, socket: str | None = None, keys: str = ""
) -> None:
    if socket is None:
        db = await AsyncDatabaseManager.init_engine(url)
    else:
        db = await AsyncDatabaseManager.init_engine(
            url, socket=socket, mode="daemon", request_keys=keys != "nokeys"
        )
    with open(out, "a", encoding="utf-8") as report:
        i = 0
        while not os.path.exists(stop):
            key = f"{name}-{i}"
            i += 1
            try:
                await Event.insert({"key": key, "writer": name})
            except FQDBError as exc:
                line = {
                    "key": key,
                    "ok": False,
                    "unknown": "unknown" in str(exc),
                    "error": f"{type(exc).__name__}: {exc}",
                    "t": time.time(),
                }
            else:
                line = {"key": key, "ok": True, "t": time.time()}
            report.write(json.dumps(line) + "\n")
            report.flush()
    transport = db.transport
    keys = getattr(transport, "keys", None)
    figures = {
        # The direct transport's own counts (a daemon's are in its stats).
        "failovers": getattr(transport, "failovers", 0),
        "resent": getattr(transport, "resent", 0),
        "deduplicated": keys.stats.deduplicated if keys is not None else 0,
    }
    await AsyncDatabaseManager.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
