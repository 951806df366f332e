"""The command line of ``fqdb``: one sub-parser per command.

Options go after the command (``fqdb rows app.db user --json``). Commands
that talk to the database take ``--mode`` and ``--socket``; commands that
print rows take one of ``--json``, ``--nl``, ``--csv`` (the default is an
aligned table). For ``insert`` the same three flags name the *input* format.
"""

from __future__ import annotations

import argparse

from .._version import __version__

__all__ = ["build_parser"]

_EPILOG = """\
exit status: 0 ok, 1 error (one line on stderr), 2 usage error.
Through the file's fqdb-server when one runs, directly on the file otherwise.
"""

_WHERE_HELP = (
    "a condition 'column op value' (repeatable, ANDed); op is one of = == != <> < <= > >= "
    "LIKE, NOT LIKE, GLOB, IS, IS NOT, IN (v, ...), NOT IN (...), BETWEEN a AND b; "
    "values are numbers, 'quoted text', NULL, or true/false (for a BOOLEAN column)"
)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 60, got {text}")
    return value


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--mode",
        choices=("auto", "daemon", "embedded"),
        default="auto",
        help="auto: the file's fqdb-server if one runs, else the file directly (default); "
        "daemon: fail if no fqdb-server runs; embedded: always the file directly",
    )
    group.add_argument(
        "--socket", metavar="PATH", help="the daemon's socket (default: $FQDB_SOCKET, else DB.sock)"
    )
    return parent


def _output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    formats = parent.add_mutually_exclusive_group()
    for flag, what in (
        ("json", "output JSON: an array of row objects (one object for a single record)"),
        ("nl", "output JSON lines: one object per line"),
        ("csv", "output CSV with a header row"),
    ):
        formats.add_argument(
            f"--{flag}", dest="format", action="store_const", const=flag, help=what
        )
    parent.set_defaults(format="table")
    return parent


def _where_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--where", "-w", action="append", default=[], metavar="CONDITION", help=_WHERE_HELP
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``fqdb`` parser and its sub-parsers by command name."""
    parser = argparse.ArgumentParser(
        prog="fqdb",
        description="Inspect and administer a FastQuartDB (SQLite) database.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fqdb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    connection, output = _connection_options(), _output_options()
    subs: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=list(parents))
        sub.add_argument(
            "db", metavar="DB", help="the SQLite database file (must exist), or a dqlite:// URL"
        )
        subs[name] = sub
        return sub

    add("tables", "list the tables and views", connection, output)

    sub = add("schema", "columns of every table, or of TABLE", connection, output)
    sub.add_argument("table", metavar="TABLE", nargs="?")
    sub.add_argument("--sql", action="store_true", help="print the CREATE statements instead")

    sub = add("rows", "rows of TABLE, filtered, ordered and limited", connection, output)
    sub.add_argument("table", metavar="TABLE")
    _where_options(sub)
    sub.add_argument(
        "--columns", "-c", action="append", default=[], metavar="A,B", help="columns to show"
    )
    sub.add_argument(
        "--order",
        action="append",
        default=[],
        metavar="[-]COLUMN,...",
        help="sort by these columns; a leading '-' sorts descending",
    )
    sub.add_argument("--limit", "-n", type=_non_negative, metavar="N", help="at most N rows")

    sub = add("count", "count the rows of TABLE (matching --where)", connection, output)
    sub.add_argument("table", metavar="TABLE")
    _where_options(sub)

    sub = add("query", "run one SQL statement with bound parameters", connection, output)
    sub.add_argument("sql", metavar="SQL", help="one statement; :NAME placeholders for values")
    sub.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=TEXT|NAME:=JSON",
        help="bind :NAME (repeatable): NAME=TEXT binds the text exactly as typed (-p zip=007); "
        'NAME:=VALUE binds a JSON value: a number, true, false, null or "text" (-p min:=18)',
    )

    sub = add("insert", "insert (or upsert) rows from a CSV, JSON or JSON-lines file", connection)
    sub.add_argument("table", metavar="TABLE")
    sub.add_argument("file", metavar="FILE", help="the input file, or - for stdin")
    formats = sub.add_mutually_exclusive_group(required=True)
    for flag, what in (
        ("csv", "CSV with a header row"),
        ("json", "a JSON array of objects"),
        ("nl", "JSON lines"),
    ):
        formats.add_argument(
            f"--{flag}", dest="input_format", action="store_const", const=flag, help=what
        )
    sub.add_argument(
        "--upsert",
        metavar="KEY",
        help="update the row whose KEY column(s) match (a PRIMARY KEY or UNIQUE index; "
        "several columns comma-separated) instead of failing",
    )
    sub.add_argument(
        "--atomic",
        action="store_true",
        help="all rows in one transaction: all or nothing (holds the daemon's writer meanwhile)",
    )

    add("dump", "print the database as SQL text (a consistent snapshot)")

    sub = add("backup", "copy the database to DEST online, as a consistent snapshot")
    sub.add_argument("dest", metavar="DEST")
    sub.add_argument("--force", action="store_true", help="replace DEST if it exists")

    help = "rebuild a database at DEST from a Litestream replica (fqdb-server --replicate)"
    sub = commands.add_parser("restore", help=help, description=help)
    sub.add_argument(
        "url", metavar="URL", help="the replica: file:///dir, s3://bucket/path, or a directory"
    )
    sub.add_argument("dest", metavar="DEST", help="the database file to create")
    sub.add_argument(
        "--timestamp",
        metavar="TIME",
        help="restore the state as of TIME (RFC 3339, e.g. 2026-11-29T04:00:00Z)",
    )
    sub.add_argument("--force", action="store_true", help="replace DEST if it exists")
    subs["restore"] = sub

    add("vacuum", "rebuild the file to reclaim free pages (waits for the write lock)")

    sub = add("stats", "live figures of the daemon serving DB", output)
    sub.add_argument(
        "--socket", metavar="PATH", help="the daemon's socket (default: $FQDB_SOCKET, else DB.sock)"
    )
    sub.add_argument(
        "--interval",
        type=_seconds,
        default=0.5,
        metavar="S",
        help="seconds between the two samples requests/s is measured over (default 0.5)",
    )

    add("ping", "check that the database answers, and through what", connection, output)

    sub = add("watch", "print committed changes of captured tables as they commit", connection)
    sub.add_argument("tables", metavar="TABLE", nargs="*", help="only these tables")
    sub.add_argument(
        "--after",
        metavar="SEQ",
        help="replay the changes after SEQ first (0: all the log retains; default: new ones only)",
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per change")
    sub.add_argument(
        "--count", type=_non_negative, metavar="N", help="stop after N changes (default: never)"
    )
    return parser, subs
