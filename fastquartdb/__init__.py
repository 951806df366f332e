"""FastQuartDB: async SQLite for Quart, FastAPI, aiohttp and scripts.

Models are plain classes, CRUD is classmethods, rows are dicts. One daemon
(``fqdb-server``) can own the file and group-commit every worker's writes;
where none runs the same code runs embedded.

Example::

    from fastquartdb import AsyncDatabaseManager, BaseModel, Column

    class User(BaseModel):
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)

    await AsyncDatabaseManager.init_engine("data/app.db")
    await User.insert({"username": "Alice"})
"""

from ._version import __version__ as __version__
from .client import AsyncDatabaseManager, Change, Transaction
from .models import BaseModel, Column
from .protocol.errors import (
    AccessDeniedError,
    ChangesExpiredError,
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseBusyError,
    DatabaseError,
    FQDBError,
    IdempotencyKeyError,
    IntegrityError,
    InterfaceError,
    NotInitializedError,
    OperationalError,
    ProgrammingError,
    ProtocolError,
    ReadOnlyError,
    RequestTimeoutError,
    ResultTooLargeError,
    SchemaError,
    StatementTimeoutError,
    TooManyClientsError,
    TransactionTimeoutError,
    ValidationError,
)

__all__ = [
    "AccessDeniedError",
    "AsyncDatabaseManager",
    "BaseModel",
    "Change",
    "ChangesExpiredError",
    "Column",
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
    "Transaction",
    "TransactionTimeoutError",
    "ValidationError",
]
