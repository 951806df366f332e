"""``fqdb``: inspect and administer a FastQuartDB database from a terminal or a script.

Example::

    $ fqdb rows data/app.db user --where "age > 20" --order -age --limit 5
    $ fqdb stats data/app.db

``main(argv)`` runs one command and returns its exit status: 0 ok, 1 an
error (one line on stderr, ``fqdb: ...``), 2 a usage error. Expected
failures never print a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Sequence

from ..protocol.errors import FQDBError
from .commands import COMMANDS
from .errors import CommandError, UsageError
from .parser import build_parser

__all__ = ["main", "run"]


def _error(message: object) -> int:
    text = " ".join(str(message).split()) or "failed"
    print(f"fqdb: {text}", file=sys.stderr)
    return 1


def _os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def _joined_options(argv: Sequence[str]) -> list[str]:
    """``--order -age`` as ``--order=-age``: argparse would take ``-age`` for an option."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--order":
            value = next(items, None)
            if value is not None and value.startswith("-") and value != "--":
                out.append(f"--order={value}")
                continue
            out.append(item)
            if value is not None:
                out.append(value)
            continue
        out.append(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fqdb`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser, subparsers = build_parser()
    try:
        args = parser.parse_args(_joined_options(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        sub = subparsers[args.command]
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (fqdb rows ... | head): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        print("fqdb: interrupted", file=sys.stderr)
        return 130
    except (CommandError, FQDBError, sqlite3.Error) as exc:
        return _error(exc)
    except OSError as exc:
        return _error(_os_error(exc))


def run() -> None:
    """Console-script entry point (``fqdb``)."""
    sys.exit(main())
