"""A client process for the local-read tests: ``python -m tests.integration.reads_client ...``.

``chase``: set the counter row to 1, 2, ... ``--rows``; after each acknowledged
write read it back (it must be the value just written) and print the value,
so another process can check that its own reads see it.
``follow``: for each value read on stdin, read the counter: it must be at least
that value (the write was acknowledged before the value was printed).
Both write a JSON report: values checked, stale reads, and where reads ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from fastquartdb import AsyncDatabaseManager, BaseModel, Column


class Counter(BaseModel):
    id = Column("INTEGER", primary_key=True)
    n = Column("INTEGER", nullable=False)


async def chase(args: argparse.Namespace) -> dict[str, object]:
    stale: list[tuple[int, object]] = []
    for k in range(1, args.rows + 1):
        await Counter.update({"n": k}, {"id": 1})
        row = await Counter.fetch_one({"id": 1})
        seen = row["n"] if row else None
        if seen != k:
            stale.append((k, seen))
        print(k, flush=True)
    return {"checked": args.rows, "stale": stale}


async def follow(args: argparse.Namespace) -> dict[str, object]:
    stale: list[tuple[int, object]] = []
    checked = 0
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        k = int(line)
        # Both kinds of local read: a point read (inline) and a range read (a reader thread).
        row = await Counter.fetch_one({"id": 1})
        rows = await Counter.fetch(filters={"id": [(">=", 1)]})
        for seen in (row["n"] if row else None, rows[0]["n"] if rows else None):
            if seen is None or seen < k:
                stale.append((k, seen))
        checked += 1
    return {"checked": checked, "stale": stale}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    db = await AsyncDatabaseManager.init_engine(args.db, mode=args.mode)
    if args.action == "chase":
        await Counter.insert({"id": 1, "n": 0}, on_conflict="ignore")
        report = await chase(args)
    else:
        report = await follow(args)
    report["reads"] = db.router.stats()
    report["mode"] = db.mode
    await AsyncDatabaseManager.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=("chase", "follow"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--mode", default="daemon")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    with open(args.out, "w") as fh:
        fh.write(json.dumps(report))


if __name__ == "__main__":
    main()
