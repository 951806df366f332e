"""``fqdb-server``: the command line of the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .._version import __version__
from ..engine.deadline import DEFAULT_MAX_STATEMENT_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT
from ..protocol import DEFAULT_MAX_FRAME
from .config import ServerConfig
from .daemon import SocketInUseError, serve
from .ownership import AlreadyServedError
from .replication import ReplicationError

__all__ = ["main", "run"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fqdb-server",
        description="Own one SQLite file and serve it to FastQuartDB clients over a Unix socket.",
    )
    parser.add_argument("db", help="the SQLite database file (created if missing)")
    parser.add_argument(
        "--socket",
        help="Unix socket path (default: $FQDB_SOCKET, else <db>.sock; see PROTOCOL.md)",
    )
    parser.add_argument(
        "--synchronous",
        choices=("full", "normal"),
        default="full",
        help="full: every commit survives power loss (default); normal: faster, may lose the "
        "last commits on power loss, never corrupts",
    )
    parser.add_argument("--max-batch", type=int, default=256, help="most requests per group commit")
    parser.add_argument(
        "--max-queue", type=int, default=8192, help="queued requests before reading pauses"
    )
    parser.add_argument(
        "--max-frame", type=int, default=DEFAULT_MAX_FRAME, help="largest request frame in bytes"
    )
    parser.add_argument(
        "--transaction-timeout",
        type=float,
        default=30.0,
        help="seconds an interactive transaction may stay open before it is rolled back (default 30)",
    )
    parser.add_argument(
        "--transaction-idle-timeout",
        type=float,
        default=None,
        help="seconds a transaction may wait for its holder's next request (default 10)",
    )
    parser.add_argument(
        "--statement-timeout",
        type=float,
        default=DEFAULT_STATEMENT_TIMEOUT,
        help="seconds one request's statements may run before they are stopped with "
        f"StatementTimeoutError (default {DEFAULT_STATEMENT_TIMEOUT:g}; 0 for no limit)",
    )
    parser.add_argument(
        "--max-statement-timeout",
        type=float,
        default=DEFAULT_MAX_STATEMENT_TIMEOUT,
        help="the longest timeout= one raw db.execute() may ask for, and the bound of the "
        f"models' migrations (default {DEFAULT_MAX_STATEMENT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--allow-gid",
        type=int,
        action="append",
        default=[],
        metavar="GID",
        help="also admit members of this group (repeatable)",
    )
    parser.add_argument("--read-only", action="store_true", help="serve reads only")
    parser.add_argument(
        "--no-raw-sql",
        dest="raw_sql",
        action="store_false",
        help="refuse the execute op (raw SQL); only the structured ops are served",
    )
    parser.add_argument(
        "--replicate",
        metavar="URL",
        help="back the file up continuously with Litestream to URL (file:///dir, s3://bucket/path, "
        "or a directory); needs fastquartdb[backup]",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
    )
    parser.add_argument("--version", action="version", version=f"fqdb-server {__version__}")
    return parser


def _install_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's own loop works too
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run(config: ServerConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def announce(daemon: object) -> None:
        print(
            f"fqdb-server: serving {config.db} on {config.socket} (pid {os.getpid()})",
            flush=True,
        )

    await serve(config, shutdown_trigger=stop.wait, ready=announce)
    logging.getLogger("fastquartdb.server").info("stopped cleanly")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon; returns the exit code (0 after a clean shutdown)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s fqdb-server %(levelname)s %(message)s"
    )
    try:
        config = ServerConfig(
            db=args.db,
            socket=args.socket,
            synchronous=args.synchronous,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            max_frame=args.max_frame,
            transaction_timeout=args.transaction_timeout,
            transaction_idle_timeout=args.transaction_idle_timeout,
            allow_gids=args.allow_gid,
            read_only=args.read_only,
            raw_sql=args.raw_sql,
            replicate=args.replicate,
            statement_timeout=args.statement_timeout or None,
            max_statement_timeout=args.max_statement_timeout,
        )
    except ValueError as exc:
        print(f"fqdb-server: {exc}", file=sys.stderr)
        return 2
    _install_loop_policy()
    try:
        asyncio.run(_run(config))
    except (AlreadyServedError, SocketInUseError, ReplicationError) as exc:
        print(f"fqdb-server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fqdb-server: cannot serve {config.db}: {exc}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
