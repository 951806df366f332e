"""The public facade: ``fastquartdb.__all__`` is pinned, sorted and documented."""

from __future__ import annotations

import inspect

import fastquartdb

EXPECTED = [
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


def test_all_is_pinned() -> None:
    # Adding or removing a public name is an API change: update this list on purpose.
    assert fastquartdb.__all__ == EXPECTED


def test_all_is_sorted_without_duplicates() -> None:
    assert fastquartdb.__all__ == sorted(fastquartdb.__all__)
    assert len(set(fastquartdb.__all__)) == len(fastquartdb.__all__)


def test_every_name_exists_and_has_a_docstring() -> None:
    for name in fastquartdb.__all__:
        obj = getattr(fastquartdb, name)
        doc = inspect.getdoc(obj)
        assert doc and doc.strip(), name
        # Inherited docstrings do not count: each name documents itself.
        assert obj.__doc__, name


def test_public_objects_say_they_belong_to_fastquartdb() -> None:
    for name in fastquartdb.__all__:
        assert getattr(fastquartdb, name).__module__.startswith("fastquartdb."), name


def test_package_metadata() -> None:
    assert isinstance(fastquartdb.__version__, str)
    assert fastquartdb.__doc__
    errors = {n for n in EXPECTED if n.endswith("Error")}
    for name in errors:
        assert issubclass(getattr(fastquartdb, name), fastquartdb.FQDBError)
