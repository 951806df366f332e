"""SQLite's result codes to our exception classes: the one table.

SQLite says what went wrong with a result code; its low byte (the *primary*
code) says whose fault it was. The engine reads it from sqlite3's exceptions
(``sqlite_errorcode``, Python 3.11+) and the dqlite transport from the
node's FAILURE responses (dqlite reports SQLite's codes), so both raise the
same class for the same failure. Messages are never parsed: ``table t already
exists`` and ``no such table: t`` are both SQLITE_ERROR, a statement that is
wrong in itself, so both are :class:`ProgrammingError` (HTTP 400, do not
retry); only conditions of the world (BUSY, LOCKED, FULL, IOERR, CANTOPEN,
NOMEM, INTERRUPT, ...) are :class:`OperationalError` (HTTP 503, try later).

An exception without a code (sqlite3's own checks, such as a missing binding)
is classified by its sqlite3 class, which is what PEP 249 makes it mean.
"""

from __future__ import annotations

import sqlite3

from ..protocol.errors import (
    DatabaseBusyError,
    DatabaseError,
    FQDBError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    ReadOnlyError,
    ValidationError,
)

__all__ = ["RESULT_CODE_CLASSES", "error_for_code", "translate_sqlite_error"]

#: Primary result code -> class. A code not listed becomes ``DatabaseError``.
RESULT_CODE_CLASSES: dict[int, type[FQDBError]] = {
    1: ProgrammingError,  # SQLITE_ERROR: the statement is wrong (prepare or run)
    2: OperationalError,  # SQLITE_INTERNAL
    3: OperationalError,  # SQLITE_PERM: the file's permissions
    4: OperationalError,  # SQLITE_ABORT: a rollback aborted the statement
    5: DatabaseBusyError,  # SQLITE_BUSY: another connection holds the lock
    6: DatabaseBusyError,  # SQLITE_LOCKED: a table is locked by this connection's reader
    7: OperationalError,  # SQLITE_NOMEM
    8: ReadOnlyError,  # SQLITE_READONLY: served read-only, or the file is not writable
    9: OperationalError,  # SQLITE_INTERRUPT: the statement was interrupted (deadline)
    10: OperationalError,  # SQLITE_IOERR
    11: DatabaseError,  # SQLITE_CORRUPT
    12: OperationalError,  # SQLITE_NOTFOUND
    13: OperationalError,  # SQLITE_FULL: the disk is full
    14: OperationalError,  # SQLITE_CANTOPEN
    15: OperationalError,  # SQLITE_PROTOCOL: a locking race, retried by SQLite already
    17: OperationalError,  # SQLITE_SCHEMA: the schema changed under the statement
    18: ValidationError,  # SQLITE_TOOBIG: a string or blob too big
    19: IntegrityError,  # SQLITE_CONSTRAINT: UNIQUE, NOT NULL, CHECK, FOREIGN KEY
    20: IntegrityError,  # SQLITE_MISMATCH: a value of the wrong type for a rowid
    21: ProgrammingError,  # SQLITE_MISUSE
    22: OperationalError,  # SQLITE_NOLFS
    23: ProgrammingError,  # SQLITE_AUTH: the authorizer (the raw-SQL sandbox) refused it
    24: DatabaseError,  # SQLITE_FORMAT
    25: ProgrammingError,  # SQLITE_RANGE: a parameter index out of range
    26: DatabaseError,  # SQLITE_NOTADB: the file is not a database
}

# Without a result code: sqlite3's class is all there is to go on.
_BY_SQLITE3_CLASS: tuple[tuple[type[Exception], type[FQDBError]], ...] = (
    (sqlite3.IntegrityError, IntegrityError),
    (sqlite3.OperationalError, OperationalError),
    (sqlite3.ProgrammingError, ProgrammingError),
    (sqlite3.InterfaceError, ProgrammingError),
    (sqlite3.Warning, ProgrammingError),
    (sqlite3.DataError, ValidationError),
)


def error_for_code(code: int, message: str, *, holder: str = "another process") -> FQDBError:
    """The exception for SQLite result ``code`` (primary or extended) with ``message``.

    ``holder`` names who held the lock in a busy error's advice.
    """
    cls = RESULT_CODE_CLASSES.get(code & 0xFF, DatabaseError)
    if cls is DatabaseBusyError:
        return DatabaseBusyError(f"{message}: {holder} held the write lock too long; retry")
    return cls(message)


def translate_sqlite_error(exc: sqlite3.Error) -> FQDBError:
    """The exception of ours that a sqlite3 exception stands for (by its result code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return error_for_code(code, str(exc))
    for sqlite_class, cls in _BY_SQLITE3_CLASS:
        if isinstance(exc, sqlite_class):
            return cls(str(exc))
    return DatabaseError(str(exc))
