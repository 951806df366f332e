"""``fqdb watch DB [TABLE]... [--after SEQ] [--json]``: follow the change log in a terminal.

Prints each committed change of the captured tables (``__changes__``) as it commits,
one line each: ``seq op table pk row`` (``--json``: one JSON object per line, the
``Change.as_dict`` map). Through the file's daemon when one runs (pushed), else on a
read-only connection of its own that polls the file; it never writes. Starts at the
tip (``--after SEQ`` replays from after SEQ, ``--after 0`` everything retained) and runs
until interrupted, or until ``--count N`` changes were printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ..client import AsyncDatabaseManager, Change
from ..client.changes import DEFAULT_POLL_INTERVAL, ChangeWatch, check_after, follow_changes
from .session import open_session

__all__ = ["cmd_watch"]


class _NoPushes:
    """A read-only file has no writer to tell it of commits: the watch polls the file."""

    async def subscribe(self, callback: Callable[[int], None]) -> bool:
        return False


def _line(change: Change, as_json: bool) -> str:
    if as_json:
        return json.dumps(change.as_dict(), separators=(",", ":"), default=str)
    values = change.row if change.row is not None else change.old
    shown = json.dumps(change.as_dict()["row" if change.row is not None else "old"], default=str)
    return f"{change.seq}\t{change.op}\t{change.table}\t{json.dumps(change.pk)}\t" + (
        shown if values is not None else "-"
    )


async def cmd_watch(args: argparse.Namespace) -> int:
    """Print changes as they commit (see the module docstring)."""
    after = check_after(args.after) if args.after is not None else "now"
    tables = args.tables or None
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        db = session.db
        if isinstance(db, AsyncDatabaseManager):
            feed = db.changes(tables, after)
        else:
            request: dict[str, Any] = {"op": "changes"}
            if tables:
                request["tables"] = tables
            watch = ChangeWatch(_NoPushes(), db.path, DEFAULT_POLL_INTERVAL)
            feed = follow_changes(db.request, watch, request, after)
        printed = 0
        try:
            async for change in feed:
                sys.stdout.write(_line(change, args.json) + "\n")
                sys.stdout.flush()
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
        finally:
            await feed.aclose()
            if not isinstance(db, AsyncDatabaseManager):
                await watch.close()
    return 0
