"""A client process for integration tests: ``python -m tests.integration.load_client ...``.

``insert``: ``--tasks`` concurrent tasks insert rows with unique keys
``<prefix>-<task>-<n>`` until ``--rows`` each (or until ``--seconds``), and
write a JSON report: acknowledged keys, failures by exception class, mode;
with ``--model note`` into a table whose payload column is *not* unique, so
that a write run twice shows as two rows (and not as an IntegrityError);
with ``--readback`` each acknowledged row is read back at once (``unseen``
lists any a read missed).
``hold``: begin a transaction, insert one row, print ``in-transaction`` and
wait to be killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, FQDBError


class Event(BaseModel):
    id = Column("INTEGER", primary_key=True)
    key = Column("TEXT", nullable=False, unique=True)
    worker = Column("TEXT")


class Note(BaseModel):
    __tablename__ = "load_note"

    id = Column("INTEGER", primary_key=True)
    payload = Column("TEXT", nullable=False)
    worker = Column("TEXT")


async def insert_load(args: argparse.Namespace) -> dict[str, object]:
    db = await AsyncDatabaseManager.init_engine(
        args.db,
        use_filelock=args.filelock,
        mode=args.mode,
        socket=args.socket,
        request_timeout=args.request_timeout,
        connect_timeout=args.connect_timeout,
    )
    acked: list[str] = []
    unseen: list[str] = []
    failures: dict[str, int] = {}
    messages: list[str] = []
    modes: set[str] = set()
    transitions: list[str] = [db.mode]
    deadline = time.monotonic() + args.seconds if args.seconds else None

    async def task(t: int) -> None:
        for n in range(args.rows):
            if deadline is not None and time.monotonic() > deadline:
                return
            key = f"{args.prefix}-{t}-{n}"
            try:
                if args.model == "note":
                    await Note.insert({"payload": key, "worker": args.prefix})
                else:
                    await Event.insert({"key": key, "worker": args.prefix})
            except FQDBError as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
                if len(messages) < 5:
                    messages.append(f"{name}: {exc}")
                if args.stop_on_error:
                    return
                await asyncio.sleep(0.01)
            else:
                acked.append(key)
                modes.add(db.mode)
                if args.readback:
                    # Read-your-writes on this process's local readers, under the load.
                    row = await Event.fetch_one({"key": key})
                    if row is None:
                        unseen.append(key)
                if db.mode != transitions[-1]:
                    transitions.append(db.mode)

    await asyncio.gather(*(task(t) for t in range(args.tasks)))
    await AsyncDatabaseManager.close()
    return {
        "acked": acked,
        "failures": failures,
        "messages": messages,
        "resent": getattr(db.transport, "resent", 0),
        "modes": sorted(modes),
        "transitions": transitions,
        "unseen": unseen,
        "reads": db.router.stats(),
    }


async def hold(args: argparse.Namespace) -> None:
    db = await AsyncDatabaseManager.init_engine(args.db, mode=args.mode, socket=args.socket)
    async with db.transaction():
        await Event.insert({"key": f"{args.prefix}-held", "worker": args.prefix})
        print("in-transaction", flush=True)
        await asyncio.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=("insert", "hold"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--mode", default="daemon")
    parser.add_argument("--socket")
    parser.add_argument("--filelock", action="store_true")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--model", choices=("event", "note"), default="event")
    parser.add_argument("--request-timeout", type=float)
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--stop-on-error", action="store_true")
    parser.add_argument("--readback", action="store_true", help="read each acked row back")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.action == "hold":
        asyncio.run(hold(args))
        return
    report = asyncio.run(insert_load(args))
    text = json.dumps(report)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
