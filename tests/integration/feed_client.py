"""A writer or a consumer process for the change-feed tests (tests/integration/test_change_feeds.py).

    python -m tests.integration.feed_client write   --db DB --out REPORT --name W --tasks 16 --n 12
    python -m tests.integration.feed_client consume --db DB --out LINES [--after SEQ]

A writer runs ``--tasks`` tasks of ``--n`` steps: most steps insert a row (tag
``W-task-step``) and some update it; every fifth step inserts in a transaction that
it rolls back. Its report lists what was acknowledged and what was rolled back.

A consumer follows ``db.changes(["feed_event"])`` and appends one JSON line per
change, ``[seq, op, tag]``, flushed at once (a kill -9 loses at most the line being
written); it ends after the change whose tag is ``END``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, ConnectionLostError


class Event(BaseModel):
    """The captured table."""

    __tablename__ = "feed_event"
    __changes__ = True

    id = Column("INTEGER", primary_key=True)
    tag = Column("TEXT", nullable=False, unique=True)
    n = Column("INTEGER")


class _Rollback(Exception):
    pass


async def write(args: argparse.Namespace) -> dict[str, Any]:
    db = await AsyncDatabaseManager.init_engine(args.db, mode=args.mode)
    committed: list[str] = []
    rolled_back: list[str] = []
    updates = 0

    async def task(t: int) -> None:
        nonlocal updates
        for i in range(args.n):
            tag = f"{args.name}-{t}-{i}"
            if i % 5 == 4:
                try:
                    async with db.transaction():
                        await Event.insert({"tag": tag, "n": i})
                        raise _Rollback
                except (_Rollback, ConnectionLostError):
                    pass  # never committed: rolled back here, or with the lost daemon
                rolled_back.append(tag)
                continue
            await Event.insert({"tag": tag, "n": i})
            committed.append(tag)
            if i % 3 == 0:
                await Event.update({"n": -i}, {"tag": tag})
                updates += 1

    await asyncio.gather(*(task(t) for t in range(args.tasks)))
    await AsyncDatabaseManager.close()
    return {"committed": committed, "rolled_back": rolled_back, "updates": updates}


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    db = await AsyncDatabaseManager.init_engine(args.db, mode=args.mode)
    seen = 0
    after: int | None = int(args.after) if args.after is not None else None
    with open(args.out, "a", encoding="utf-8") as out:
        async for change in db.changes(["feed_event"], after=after):
            values = change.row or change.old or {}
            out.write(json.dumps([change.seq, change.op, values.get("tag")]) + "\n")
            out.flush()
            seen += 1
            if values.get("tag") == "END":
                break
    await AsyncDatabaseManager.close()
    return {"seen": seen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["write", "consume"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--name", default="w")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--after")
    args = parser.parse_args()
    if args.action == "write":
        report = asyncio.run(write(args))
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f)
        os.replace(tmp, args.out)
    else:
        asyncio.run(consume(args))


if __name__ == "__main__":
    main()
