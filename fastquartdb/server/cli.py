"""``fqdb-server``: the command line of the daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

from .._version import __version__
from ..engine.changelog import DEFAULT_CHANGES_MAX_AGE, DEFAULT_CHANGES_MAX_ROWS
from ..engine.config import DAEMON
from ..engine.deadline import DEFAULT_MAX_STATEMENT_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT
from ..engine.requestkeys import (
    DEFAULT_IDEMPOTENCY_MAX,
    DEFAULT_IDEMPOTENCY_WINDOW,
    DEFAULT_KEY_WINDOW,
)
from ..protocol import DEFAULT_MAX_FRAME
from ..protocol.errors import DatabaseError, FQDBError
from .config import (
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_DECODED,
    DEFAULT_MAX_REPLY,
    DEFAULT_MAX_UNSENT,
    FD_RESERVE,
    ServerConfig,
)
from .daemon import Daemon, DatabasePathError, SocketInUseError, serve
from .ownership import AlreadyServedError
from .replication import ReplicationError

__all__ = ["main", "run"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fqdb-server",
        description="Own one SQLite file and serve it to FastQuartDB clients over a Unix socket.",
    )
    parser.add_argument(
        "db", help="the SQLite database file (created if missing; its directory must exist)"
    )
    parser.add_argument(
        "--socket",
        help="Unix socket path (default: $FQDB_SOCKET, else <db>.sock; see PROTOCOL.md)",
    )
    parser.add_argument(
        "--synchronous",
        choices=("full", "normal"),
        default=DAEMON.synchronous,
        help="full: every commit survives power loss; normal: faster, may lose the "
        "last commits on power loss, never corrupts (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=DAEMON.max_batch,
        help="most requests per group commit (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DAEMON.max_queue,
        help="queued requests before reading pauses (default: %(default)s)",
    )
    parser.add_argument(
        "--max-frame",
        type=int,
        default=DEFAULT_MAX_FRAME,
        help="largest request frame in bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--transaction-timeout",
        type=float,
        default=DAEMON.transaction_timeout,
        help="seconds an interactive transaction may stay open before it is rolled back "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--transaction-idle-timeout",
        type=float,
        default=None,
        help="seconds a transaction may wait for its holder's next request "
        "(default: 10, or --transaction-timeout if that is shorter)",
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
        "--request-key-window",
        type=float,
        default=DEFAULT_KEY_WINDOW,
        metavar="SECONDS",
        help="keep the record of a keyed write at most this long, so a client that lost its "
        f"connection can resend it safely (default {DEFAULT_KEY_WINDOW:g})",
    )
    parser.add_argument(
        "--idempotency-window",
        type=float,
        default=DEFAULT_IDEMPOTENCY_WINDOW,
        metavar="SECONDS",
        help="remember an application's idempotency_key this long "
        f"(default {DEFAULT_IDEMPOTENCY_WINDOW:g})",
    )
    parser.add_argument(
        "--idempotency-max",
        type=int,
        default=DEFAULT_IDEMPOTENCY_MAX,
        metavar="N",
        help=f"remember at most N idempotency keys, oldest first out (default {DEFAULT_IDEMPOTENCY_MAX})",
    )
    parser.add_argument(
        "--changes-max-age",
        type=float,
        default=DEFAULT_CHANGES_MAX_AGE,
        metavar="SECONDS",
        help="keep a change in the change log (tables with __changes__) this long "
        f"(default {DEFAULT_CHANGES_MAX_AGE:g}: 7 days)",
    )
    parser.add_argument(
        "--changes-max-rows",
        type=int,
        default=DEFAULT_CHANGES_MAX_ROWS,
        metavar="N",
        help=f"keep at most N changes in the change log, oldest first out (default {DEFAULT_CHANGES_MAX_ROWS})",
    )
    parser.add_argument(
        "--allow-gid",
        type=int,
        action="append",
        default=[],
        metavar="GID",
        help="also admit members of this group (repeatable; default: only the daemon's own "
        "user and root)",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="serve reads only (default: reads and writes)"
    )
    parser.add_argument(
        "--max-clients",
        type=int,
        default=None,
        help="connections served at once; more are refused with a clear error (default: the "
        f"open-files limit minus {FD_RESERVE}, at most {DEFAULT_MAX_CLIENTS})",
    )
    parser.add_argument(
        "--max-clients-per-uid",
        type=int,
        default=None,
        help="connections one peer uid may hold at once (default: no limit besides --max-clients)",
    )
    parser.add_argument(
        "--hello-timeout",
        type=float,
        default=5.0,
        help="seconds a new connection has to say hello before it is closed (default 5)",
    )
    parser.add_argument(
        "--max-reply",
        type=int,
        default=DEFAULT_MAX_REPLY,
        help="largest reply in bytes; a bigger result fails that request (default 64 MiB)",
    )
    parser.add_argument(
        "--max-unsent",
        type=int,
        default=DEFAULT_MAX_UNSENT,
        help="reply bytes a client may leave unread before its requests wait (default 4 MiB)",
    )
    parser.add_argument(
        "--max-decoded",
        type=int,
        default=DEFAULT_MAX_DECODED,
        help="memory one request may decode to, in bytes (default 512 MiB)",
    )
    parser.add_argument(
        "--no-raw-sql",
        dest="raw_sql",
        action="store_false",
        help="refuse the execute op (raw SQL); only the structured ops are served "
        "(default: raw SQL allowed)",
    )
    parser.add_argument(
        "--no-local-reads",
        dest="local_reads",
        action="store_false",
        help="tell clients to send every read here instead of reading the file themselves "
        "(default: clients read the file on read-only connections of their own)",
    )
    parser.add_argument(
        "--replicate",
        metavar="URL",
        help="back the file up continuously with Litestream to URL (file:///dir, s3://bucket/path, "
        "or a directory); needs fastquartdb[backup] (default: no replication)",
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (loopback only unless "
        "--metrics-public; a port alone means 127.0.0.1); needs fastquartdb[metrics] "
        "(default: no metrics)",
    )
    parser.add_argument(
        "--metrics-public",
        action="store_true",
        help="allow --metrics on an address other hosts can reach (default: loopback only)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="what the daemon logs to stderr (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"fqdb-server {__version__}")
    return parser


def _raise_open_files_limit() -> None:
    """Use the hard open-files limit: systemd's soft 1024 would cap --max-clients needlessly."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _install_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's own loop works too
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run(config: ServerConfig, started: list[bool]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def announce(daemon: Daemon) -> None:
        started.append(True)
        print(
            f"fqdb-server: serving {config.db} on {config.socket} (pid {os.getpid()})",
            flush=True,
        )
        if daemon.metrics is not None:  # after the ready line, which tools read first
            print(f"fqdb-server: metrics on {daemon.metrics.url}", flush=True)

    await serve(config, shutdown_trigger=stop.wait, ready=announce)
    logging.getLogger("fastquartdb.server").info("stopped cleanly")


def _not_served(config: ServerConfig, exc: BaseException) -> str:
    """The one line that says why ``config.db`` could not be served, and what to do."""
    if isinstance(exc, (AlreadyServedError, SocketInUseError, ReplicationError, DatabasePathError)):
        return str(exc)
    message = f"cannot serve {config.db}: {exc}"
    if isinstance(exc, DatabaseError) and "not a database" in str(exc):
        return f"{message}; name an SQLite database file, or a new file to create one"
    if isinstance(exc, (FQDBError, OSError)):
        return message
    return f"{message} ({type(exc).__name__}; --log-level DEBUG shows the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon; returns the exit code (0 after a clean shutdown, 1 if it could not start)."""
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
            local_reads=args.local_reads,
            replicate=args.replicate,
            statement_timeout=args.statement_timeout or None,
            max_statement_timeout=args.max_statement_timeout,
            request_key_window=args.request_key_window,
            idempotency_window=args.idempotency_window,
            idempotency_max=args.idempotency_max,
            changes_max_age=args.changes_max_age,
            changes_max_rows=args.changes_max_rows,
            metrics=args.metrics,
            metrics_public=args.metrics_public,
            max_clients=args.max_clients,
            max_clients_per_uid=args.max_clients_per_uid,
            hello_timeout=args.hello_timeout,
            max_reply=args.max_reply,
            max_unsent=args.max_unsent,
            max_decoded=args.max_decoded,
        )
    except ValueError as exc:
        print(f"fqdb-server: {exc}", file=sys.stderr)
        return 2
    _raise_open_files_limit()
    _install_loop_policy()
    started: list[bool] = []
    try:
        asyncio.run(_run(config, started))
    except Exception as exc:
        if started:  # it served, then failed: a crash, whose traceback helps
            raise
        # Start-up failed: one line that says what is wrong and what to do.
        logging.getLogger("fastquartdb.server").debug("start-up failed", exc_info=True)
        print(f"fqdb-server: {_not_served(config, exc)}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
