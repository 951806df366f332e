"""The ``fqdb`` commands: each takes the parsed arguments and returns the exit status.

Reads and writes go through :func:`open_session`: the file's daemon when
one serves it (``--mode auto``, the default), else the same engine embedded.
Every command uses the engine's ops: ``tables`` and ``schema`` its ``describe``
(see :mod:`.catalog`); ``rows``, ``count`` and ``insert`` the structured
``fetch``, ``count``, ``insert_many`` and ``upsert_many`` ops, whose table and
column names (and conflict target) the engine checks against the live schema,
with the values checked per column as ``describe`` gives it; only ``query`` runs
SQL, the statement the user typed, with the raw ``execute`` op. Inspection
commands never change the file (see :mod:`.session`). ``dump``, ``backup`` and ``vacuum`` work on the file itself
(see :mod:`.maintenance`); ``stats`` needs a daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

from ..client import AsyncDatabaseManager
from ..client.connection import SocketTransport
from ..engine.dqlite.rawsql import placeholders
from ..protocol import default_socket_path
from ..protocol.errors import DaemonUnavailableError, ReadOnlyError, ValidationError
from . import maintenance
from .catalog import Catalog
from .errors import UsageError
from .filters import WhereSyntaxError, parse_param, parse_where
from .loader import Loader, check_upsert_key
from .maintenance import require_file
from .output import ResultSet, write_record, write_result
from .progress import ProgressBar
from .records import read_records
from .session import no_daemon, open_session
from .values import ColumnValues
from .watch import cmd_watch

__all__ = ["COMMANDS", "Command"]

#: A command: the parsed arguments in, the exit status out.
Command = Callable[[argparse.Namespace], int]

# ---------------------------------------------------------------- argument checks


async def _conditions(args: argparse.Namespace, catalog: Catalog) -> list[list[list[Any]]] | None:
    """``--where`` options as the wire ``where``: one group, its conditions ANDed.

    ``true``/``false`` are for BOOLEAN columns: such a value is checked against its
    column as the models check a filter value (and stored as 1/0), so ``name = true``
    is refused with a hint to quote it, rather than compared with 1.
    """
    conditions = []
    for text in args.where:
        try:
            conditions.append(parse_where(text))
        except WhereSyntaxError as exc:
            raise UsageError(f"--where {text!r}: {exc}") from None
    if not conditions:
        return None
    values: ColumnValues | None = None
    for condition, text in zip(conditions, args.where):
        column, _, value = condition
        items = value if isinstance(value, list) else [value]
        if not any(isinstance(item, bool) for item in items):
            continue
        if values is None:
            values = ColumnValues.described(args.table, await catalog.describe(args.table))
        try:
            checked = [values.check(column, item) for item in items]
        except ValidationError as exc:
            word = "true" if True in items else "false"
            raise UsageError(
                f"--where {text!r}: {exc}; to compare with the text {word}, quote it: '{word}'"
            ) from None
        condition[2] = checked if isinstance(value, list) else checked[0]
    return [conditions]


def _names(texts: list[str], option: str) -> list[str] | None:
    """Comma-separated names from a repeatable option, or None if it was not given."""
    names: list[str] = []
    for text in texts:
        parts = [part.strip() for part in text.split(",")]
        if any(not part for part in parts):
            raise UsageError(f"{option} {text!r}: an empty name (write {option} a,b,c)")
        names.extend(parts)
    return names or None


def _params(items: list[str]) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for item in items:
        try:
            name, value = parse_param(item)
        except WhereSyntaxError as exc:
            raise UsageError(f"-p {item!r}: {exc}") from None
        params[name] = value
    return params or None


def _check_placeholders(sql: str, params: dict[str, Any]) -> None:
    """Every ``:NAME`` of ``sql`` has its ``-p``; said before SQLite says it its own way."""
    names, positional = placeholders(sql)
    if positional:
        raise UsageError("-p binds :NAME placeholders; write :name for ? in the statement")
    missing = [name for name in names if name not in params]
    if missing:
        name = missing[0]
        raise UsageError(f"no value for :{name}: give one with -p {name}=TEXT or -p {name}:=NUMBER")


# ---------------------------------------------------------------- inspection


async def cmd_tables(args: argparse.Namespace) -> int:
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        result = await session.catalog.tables()
    write_result(result, args.format, sys.stdout)
    return 0


async def cmd_schema(args: argparse.Namespace) -> int:
    if args.sql and args.format != "table":
        raise UsageError("--sql prints SQL text; leave out --json, --nl and --csv")
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        if args.sql:
            statements = await session.catalog.schema_sql(args.table)
        else:
            result = await session.catalog.columns(args.table)
    if args.sql:
        for statement in statements:
            sys.stdout.write(statement + ";\n")
    else:
        write_result(result, args.format, sys.stdout)
    return 0


async def cmd_rows(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"op": "fetch", "table": args.table}
    columns = _names(args.columns, "--columns")
    order = _names(args.order, "--order")
    for key, value in (("columns", columns), ("order_by", order)):
        if value is not None:
            request[key] = value
    if args.limit is not None:
        request["limit"] = args.limit
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        where = await _conditions(args, session.catalog)
        if where is not None:
            request["where"] = where
        result = await session.db.request(request)
    write_result(ResultSet(result["columns"], result["rows"]), args.format, sys.stdout)
    return 0


async def cmd_count(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"op": "count", "table": args.table}
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        where = await _conditions(args, session.catalog)
        if where is not None:
            request["where"] = where
        count = int(await session.db.request(request))
    if args.format == "table":
        sys.stdout.write(f"{count}\n")
    else:
        write_record({"count": count}, args.format, sys.stdout)
    return 0


async def cmd_query(args: argparse.Namespace) -> int:
    params = _params(args.param)
    _check_placeholders(args.sql, params or {})
    result = None
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        try:
            result = await session.db.execute(args.sql, params)
        except ReadOnlyError:
            # The file opened read-only refused a write before changing anything: run the
            # statement again on the writer (a daemon's ReadOnlyError is its final answer).
            if not session.db.info().get("read_only"):
                raise
    if result is None:
        async with open_session(args.db, mode=args.mode, socket=args.socket) as session:
            result = await session.db.execute(args.sql, params)
    if result["columns"]:
        write_result(ResultSet(result["columns"], result["rows"]), args.format, sys.stdout)
    elif args.format == "table":
        changed = result["rowcount"]
        if changed < 0:
            sys.stdout.write("ok\n")
        else:
            sys.stdout.write(f"ok: {changed} row{'' if changed == 1 else 's'} changed\n")
    else:
        summary = {"rowcount": result["rowcount"], "lastrowid": result["lastrowid"]}
        write_record(summary, args.format, sys.stdout)
    return 0


# ---------------------------------------------------------------- writing


def cmd_insert(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        stream: BinaryIO
        if args.file == "-":
            stream, name, size = sys.stdin.buffer, "<stdin>", None
        else:
            stream = stack.enter_context(open(args.file, "rb"))
            name = args.file
            info = os.fstat(stream.fileno())
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
        verb, rows = asyncio.run(_insert(args, stream, name, size))
    sys.stdout.write(f"{verb} {rows} row{'' if rows == 1 else 's'} into {args.table}\n")
    return 0


async def _insert(
    args: argparse.Namespace, stream: BinaryIO, name: str, size: int | None
) -> tuple[str, int]:
    async with open_session(args.db, mode=args.mode, socket=args.socket) as session:
        values = ColumnValues.described(args.table, await session.catalog.describe(args.table))
        db = session.db
        assert isinstance(db, AsyncDatabaseManager)  # a session that writes is the manager's
        key = None
        if args.upsert is not None:
            key = await check_upsert_key(db, args.table, args.upsert)
        total, records = read_records(stream, args.input_format, name)
        bar = ProgressBar.for_file(sys.stderr, size, label=f"fqdb: {args.table}")
        if total is not None:
            bar.total = max(total, 1)
        loader = Loader(
            db,
            args.table,
            source=name,
            values=values,
            text=args.input_format == "csv",
            key=key,
            atomic=args.atomic,
            progress=bar.update,
        )
        try:
            rows = await loader.load(records)
            bar.finish(total if total is not None else size or 0, rows)
        finally:
            bar.close()
    return ("upserted" if key is not None else "inserted"), rows


# ---------------------------------------------------------------- the file itself


def cmd_dump(args: argparse.Namespace) -> int:
    maintenance.dump(args.db, sys.stdout)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    result = maintenance.backup(args.db, args.dest, force=args.force)
    sys.stdout.write(
        f"backed up {result['source']} to {result['dest']} "
        f"({result['pages']} pages, {result['bytes']} bytes)\n"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    result = maintenance.restore(args.url, args.dest, timestamp=args.timestamp, force=args.force)
    sys.stdout.write(
        f"restored {result['url']} to {result['dest']} ({result['tables']} tables, "
        f"{result['bytes']} bytes, integrity {result['integrity']})\n"
    )
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    result = maintenance.vacuum(args.db)
    sys.stdout.write(
        f"vacuumed {result['database']}: {result['bytes_before']} -> {result['bytes_after']} bytes\n"
    )
    return 0


# ---------------------------------------------------------------- the daemon


def _percentiles(stats: dict[str, Any]) -> dict[str, Any]:
    """Latency percentiles if the daemon reports them (``latency_ms: {p50, p95, p99}``)."""
    reported = stats.get("latency_ms")
    latency = reported if isinstance(reported, dict) else {}
    return {f"latency_{p}_ms": latency.get(p) for p in ("p50", "p95", "p99")}


def _replication(stats: dict[str, Any]) -> dict[str, Any]:
    """Litestream's state if the daemon runs it (``fqdb-server --replicate``)."""
    replication = stats.get("replication")
    if not isinstance(replication, dict):
        return {"replication": "off"}
    return {
        "replication": replication.get("state"),
        "replica_url": replication.get("url"),
        "replication_pid": replication.get("pid"),
        "replication_restarts": replication.get("restarts"),
        "replication_last_error": replication.get("last_error"),
        "wal_bytes": replication.get("wal_bytes"),
    }


async def cmd_stats(args: argparse.Namespace) -> int:
    require_file(args.db)
    socket = args.socket or default_socket_path(args.db)
    try:
        transport = await SocketTransport.connect(socket, args.db)
    except DaemonUnavailableError:
        raise no_daemon(args.db, args.socket, "stats come from a live daemon") from None
    try:
        first = await transport.request({"op": "stats"})
        started = time.monotonic()
        await asyncio.sleep(args.interval)
        stats = await transport.request({"op": "stats"})
        elapsed = time.monotonic() - started
    finally:
        await transport.close()
    me = os.getpid()
    uptime = float(stats["uptime_s"])
    record: dict[str, Any] = {
        "db": stats["db"],
        "pid": stats["pid"],
        "uptime_s": stats["uptime_s"],
        # This fqdb process is a client too while it asks; it does not count itself.
        "clients": max(int(stats["clients"]) - 1, 0),
        "client_pids": [p for p in stats.get("client_pids", []) if p != me],
        "clients_total": stats.get("clients_total"),
        "requests": stats["requests"],
        "requests_per_s": round((stats["requests"] - first["requests"]) / elapsed, 1),
        "requests_per_s_avg": round(stats["requests"] / uptime, 1) if uptime > 0 else 0.0,
        "batches": stats["batches"],
        "batch_mean": stats["batch_mean"],
        "batch_max": stats["batch_max"],
        "queue_depth": stats["queue_depth"],
        **_percentiles(stats),
        "errors": stats.get("errors"),
        "transactions": stats.get("transactions"),
        "txn_timeouts": stats.get("txn_timeouts"),
        "refused": stats.get("refused"),
        # Writes resent after a lost connection, and those answered from their record.
        "writes_resent": (stats.get("request_keys") or {}).get("resent"),
        "writes_deduplicated": (stats.get("request_keys") or {}).get("deduplicated"),
        # Each client's requests here and where its reads ran (local readers or this daemon).
        "per_client": [c for c in stats.get("per_client") or [] if c.get("pid") != me],
        "protocol_errors": stats.get("protocol_errors"),
        **_replication(stats),
    }
    if args.format != "json" and args.format != "nl":
        # One "pid: N local, M to the daemon" entry per client in a flat format.
        record["per_client"] = [
            f"{c.get('pid')}: {c.get('reads_local')} local, {c.get('reads_writer')} to the daemon"
            for c in record["per_client"]
        ]
    write_record(record, args.format, sys.stdout, none="n/a")
    return 0


async def cmd_ping(args: argparse.Namespace) -> int:
    async with open_session(args.db, mode=args.mode, socket=args.socket, read_only=True) as session:
        started = time.perf_counter()
        await session.db.request({"op": "ping"})
        ms = round((time.perf_counter() - started) * 1000, 3)
        record: dict[str, Any] = {"mode": session.db.mode, "db": session.db.path, "ms": ms}
        info = session.db.info()
        if "socket" in info:
            for key in ("socket", "server", "server_pid"):
                record[key] = info[key]
    if args.format != "table":
        write_record(record, args.format, sys.stdout)
    elif record["mode"] == "daemon":
        sys.stdout.write(
            f"pong from {record['server']} (pid {record['server_pid']}) on {record['socket']} "
            f"in {ms} ms\n"
        )
    else:
        sys.stdout.write(f"pong from {record['db']} (embedded) in {ms} ms\n")
    return 0


def _in_loop(command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Command:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))

    return run


#: Command name -> implementation.
COMMANDS: dict[str, Command] = {
    "tables": _in_loop(cmd_tables),
    "schema": _in_loop(cmd_schema),
    "rows": _in_loop(cmd_rows),
    "count": _in_loop(cmd_count),
    "query": _in_loop(cmd_query),
    "insert": cmd_insert,
    "dump": cmd_dump,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "vacuum": cmd_vacuum,
    "stats": _in_loop(cmd_stats),
    "ping": _in_loop(cmd_ping),
    "watch": _in_loop(cmd_watch),
}
