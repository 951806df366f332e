"""The exception tree and the one table between wire error codes and classes.

Every error FastQuartDB raises derives from :class:`FQDBError`. Names follow
PEP 249 where they fit, and classes that mean what a builtin means also inherit
that builtin (``ValidationError`` is a ``ValueError``, ``RequestTimeoutError`` a
``TimeoutError``) so ``except ValueError`` keeps working::

    FQDBError
    ├── InterfaceError                  the library was used wrongly
    │   ├── NotInitializedError         get() before init_engine()
    │   ├── ProtocolError               a malformed frame, an unknown op or version
    │   └── AccessDeniedError           (also PermissionError) the peer's user may not connect
    └── DatabaseError                   the database refused the request
        ├── IntegrityError              UNIQUE, NOT NULL, CHECK, FOREIGN KEY
        ├── ProgrammingError            the request itself is wrong
        │   ├── ValidationError         (also ValueError) bad table/column/operator/value
        │   │   └── IdempotencyKeyError an idempotency key reused for a different request
        │   ├── SchemaError             a model change SQLite cannot make in place
        │   └── ResultTooLargeError     a result beyond the daemon's --max-reply
        └── OperationalError            the request was fine, the world was not
            ├── DatabaseBusyError       the file stayed locked past busy_timeout
            ├── ReadOnlyError           the daemon serves reads only
            ├── ConnectionLostError     (also ConnectionError) the daemon went away
            ├── DaemonUnavailableError  mode="daemon" and no daemon answers
            ├── TooManyClientsError     (also ConnectionError) the daemon is at --max-clients
            ├── RequestTimeoutError     (also TimeoutError) no reply in time
            ├── StatementTimeoutError   (also TimeoutError) a statement ran past its deadline
            ├── TransactionTimeoutError the daemon rolled a transaction back
            └── ChangesExpiredError     a change-feed cursor fell off the retained log

Each class has a stable ``code``; a reply ``{"ok": false, "error": {"code",
"message"}}`` becomes the class of that code on the client, so the daemon and
embedded mode raise the same classes. An unknown code becomes ``DatabaseError``.
"""

from __future__ import annotations

import reprlib

__all__ = [
    "ERROR_CLASSES",
    "AccessDeniedError",
    "ChangesExpiredError",
    "ConnectionLostError",
    "DaemonUnavailableError",
    "DatabaseBusyError",
    "DatabaseError",
    "FQDBError",
    "IdempotencyKeyError",
    "IntegrityError",
    "InterfaceError",
    "NotInitializedError",
    "OperationalError",
    "ProgrammingError",
    "ProtocolError",
    "ReadOnlyError",
    "RequestTimeoutError",
    "ResultTooLargeError",
    "SchemaError",
    "StatementTimeoutError",
    "TooManyClientsError",
    "TransactionTimeoutError",
    "ValidationError",
    "brief",
    "error_code",
    "error_from_code",
]


class FQDBError(Exception):
    """Root of every FastQuartDB error."""

    code = "error"


class InterfaceError(FQDBError):
    """The library was used in a way it does not support."""

    code = "interface"


class NotInitializedError(InterfaceError):
    """``AsyncDatabaseManager.get()`` (or a model call) before ``init_engine()``."""

    code = "not_initialized"


class ProtocolError(InterfaceError):
    """A frame could not be decoded, or named an op or version the peer does not know."""

    code = "protocol"


class AccessDeniedError(InterfaceError, PermissionError):
    """The other end of the socket runs as a user that is not allowed.

    The daemon refuses clients of other users (unless ``--allow-gid`` admits
    their group); clients refuse a socket served by another user.
    """

    code = "access_denied"


class DatabaseError(FQDBError):
    """The database could not carry out the request."""

    code = "database"


class IntegrityError(DatabaseError):
    """A constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY) refused the change."""

    code = "integrity"


class ProgrammingError(DatabaseError):
    """The request is wrong in itself: retrying it will not help."""

    code = "programming"


class ValidationError(ProgrammingError, ValueError):
    """A table, column, operator, filter or value is not acceptable.

    Raised before any SQL runs. The message names what was wrong and what is
    allowed, e.g. ``unknown column 'agee' in table 'user' (columns: id, username, age)``.
    """

    code = "validation"


class IdempotencyKeyError(ValidationError):
    """An ``idempotency_key`` already recorded for a different request was used again.

    A key may only repeat the request it was first used with (that is what makes a
    retry safe); a new request needs a new key.
    """

    code = "idempotency_key"


class SchemaError(ProgrammingError):
    """A model differs from its table in a way SQLite cannot change in place."""

    code = "schema"


class ResultTooLargeError(ProgrammingError):
    """A result is larger than the daemon sends in one reply (``--max-reply``).

    Only that request fails; the connection and everyone else's requests go on.
    Fetch fewer rows (``limit=``, narrower ``columns=``) or stream them with
    ``iterate()``.
    """

    code = "result_too_large"


class OperationalError(DatabaseError):
    """The request was valid but could not run now (disk, locks, the daemon)."""

    code = "operational"


class DatabaseBusyError(OperationalError):
    """The database file stayed locked by another process longer than ``busy_timeout``."""

    code = "busy"


class ReadOnlyError(OperationalError):
    """A write was sent to a daemon started with ``--read-only``."""

    code = "read_only"


class ConnectionLostError(OperationalError, ConnectionError):
    """The connection to the daemon broke while a request was in flight.

    For a write the message says its outcome is unknown: it may or may not
    have been committed.
    """

    code = "connection_lost"


class DaemonUnavailableError(OperationalError, ConnectionError):
    """``mode="daemon"`` was asked for and no daemon answers on the socket."""

    code = "daemon_unavailable"


class TooManyClientsError(OperationalError, ConnectionError):
    """The daemon already serves as many connections as it may (``--max-clients``).

    The connection is refused with this error before ``hello``; ``mode="auto"``
    runs embedded instead (with a warning). Close idle connections, or raise the
    daemon's ``--max-clients`` (and its open-files limit).
    """

    code = "too_many_clients"


class RequestTimeoutError(OperationalError, TimeoutError):
    """No reply arrived within the request timeout."""

    code = "request_timeout"


class StatementTimeoutError(OperationalError, TimeoutError):
    """A statement ran longer than its deadline and was stopped; its changes are undone.

    The deadline is the statement timeout (``fqdb-server --statement-timeout``,
    ``init_engine(statement_timeout=)`` embedded), or the ``timeout=`` given to one
    ``db.execute()``. Make the statement cheaper, or give a raw one more time.
    """

    code = "statement_timeout"


class TransactionTimeoutError(OperationalError, TimeoutError):
    """An interactive transaction stayed idle or open too long and was rolled back."""

    code = "transaction_timeout"


class ChangesExpiredError(OperationalError):
    """A change-feed cursor points before the retained change log: pruning removed changes
    the consumer has not seen. Resync from the tables, then follow from ``after="now"``."""

    code = "changes_expired"


_CLASSES: tuple[type[FQDBError], ...] = (
    FQDBError,
    InterfaceError,
    NotInitializedError,
    ProtocolError,
    AccessDeniedError,
    DatabaseError,
    IntegrityError,
    ProgrammingError,
    ValidationError,
    IdempotencyKeyError,
    SchemaError,
    ResultTooLargeError,
    OperationalError,
    DatabaseBusyError,
    ReadOnlyError,
    ConnectionLostError,
    DaemonUnavailableError,
    TooManyClientsError,
    RequestTimeoutError,
    StatementTimeoutError,
    TransactionTimeoutError,
    ChangesExpiredError,
)

#: The one table between wire codes and exception classes.
ERROR_CLASSES: dict[str, type[FQDBError]] = {cls.code: cls for cls in _CLASSES}
assert len(ERROR_CLASSES) == len(_CLASSES), "error codes must be unique"


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 3
_BRIEF.maxstring = 80
_BRIEF.maxother = 80
_BRIEF.maxlist = _BRIEF.maxdict = _BRIEF.maxtuple = 6


def brief(value: object) -> str:
    """A short repr for error messages: bounded length and depth, never raises.

    Whatever a client sends ends up in messages; a value nested 1000 levels
    deep must not make the message itself fail.
    """
    try:
        return _BRIEF.repr(value)
    except Exception:  # a broken __repr__, or recursion
        return f"<{type(value).__name__}>"


def error_code(exc: BaseException) -> str:
    """Return the wire code for ``exc`` (``"database"`` for foreign exceptions)."""
    if isinstance(exc, FQDBError):
        return exc.code
    return DatabaseError.code


def error_from_code(code: object, message: object) -> FQDBError:
    """Build the exception a reply's ``error`` stands for; unknown codes give ``DatabaseError``."""
    cls = ERROR_CLASSES.get(code, DatabaseError) if isinstance(code, str) else DatabaseError
    return cls(str(message))
