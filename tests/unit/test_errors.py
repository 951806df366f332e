"""The exception tree and the one table between wire codes and classes."""

from __future__ import annotations

import inspect

import pytest

from fastquartdb.protocol import errors
from fastquartdb.protocol.errors import (
    ERROR_CLASSES,
    AccessDeniedError,
    ConnectionLostError,
    DaemonUnavailableError,
    DatabaseError,
    FQDBError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    ProtocolError,
    RequestTimeoutError,
    TransactionTimeoutError,
    ValidationError,
    error_code,
    error_from_code,
)

ALL_CLASSES = [
    obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, FQDBError) and obj.__module__ == errors.__name__
]

EXPECTED_CODES = {
    "error": "FQDBError",
    "interface": "InterfaceError",
    "not_initialized": "NotInitializedError",
    "protocol": "ProtocolError",
    "access_denied": "AccessDeniedError",
    "database": "DatabaseError",
    "integrity": "IntegrityError",
    "programming": "ProgrammingError",
    "validation": "ValidationError",
    "idempotency_key": "IdempotencyKeyError",
    "schema": "SchemaError",
    "result_too_large": "ResultTooLargeError",
    "operational": "OperationalError",
    "busy": "DatabaseBusyError",
    "read_only": "ReadOnlyError",
    "connection_lost": "ConnectionLostError",
    "daemon_unavailable": "DaemonUnavailableError",
    "too_many_clients": "TooManyClientsError",
    "request_timeout": "RequestTimeoutError",
    "statement_timeout": "StatementTimeoutError",
    "transaction_timeout": "TransactionTimeoutError",
    "changes_expired": "ChangesExpiredError",
}


def test_codes_are_pinned() -> None:
    # Codes are part of the wire protocol: changing one breaks every other client.
    assert {code: cls.__name__ for code, cls in ERROR_CLASSES.items()} == EXPECTED_CODES


def test_codes_are_unique_and_map_one_to_one() -> None:
    codes = [cls.code for cls in ALL_CLASSES]
    assert len(codes) == len(set(codes))
    assert set(ERROR_CLASSES.values()) == set(ALL_CLASSES)
    for code, cls in ERROR_CLASSES.items():
        assert cls.code == code
        # The code is the class's own, not inherited from its parent.
        assert "code" in vars(cls)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_error_from_code_round_trips(cls: type[FQDBError]) -> None:
    exc = error_from_code(cls.code, "what went wrong")
    assert type(exc) is cls
    assert str(exc) == "what went wrong"
    assert error_code(exc) == cls.code
    assert error_code(cls("x")) == cls.code


@pytest.mark.parametrize("code", ["no_such_code", "", "VALIDATION", None, 7, b"validation"])
def test_unknown_code_becomes_database_error(code: object) -> None:
    exc = error_from_code(code, "boom")
    assert type(exc) is DatabaseError
    assert str(exc) == "boom"


def test_message_is_stringified() -> None:
    assert str(error_from_code("validation", None)) == "None"
    assert str(error_from_code("validation", 42)) == "42"


def test_foreign_exceptions_have_the_database_code() -> None:
    assert error_code(RuntimeError("x")) == "database"
    assert error_code(KeyboardInterrupt()) == "database"


def test_builtin_bases() -> None:
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ValidationError, ProgrammingError)
    assert issubclass(RequestTimeoutError, TimeoutError)
    assert issubclass(TransactionTimeoutError, TimeoutError)
    assert issubclass(ConnectionLostError, ConnectionError)
    assert issubclass(ConnectionLostError, OperationalError)
    assert issubclass(DaemonUnavailableError, ConnectionError)
    assert issubclass(AccessDeniedError, PermissionError)
    assert issubclass(ProtocolError, InterfaceError)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_is_an_fqdb_error_with_a_docstring(cls: type[FQDBError]) -> None:
    assert issubclass(cls, FQDBError)
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.__doc__ is not FQDBError.__doc__ or cls is FQDBError


def test_builtin_names_are_never_shadowed() -> None:
    # STYLE.md: a class named like a builtin must inherit that builtin.
    import builtins

    for cls in ALL_CLASSES:
        builtin = getattr(builtins, cls.__name__, None)
        if builtin is not None:
            assert issubclass(cls, builtin)


def test_module_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    for cls in ALL_CLASSES:
        assert cls.__name__ in doc


def test_all_is_complete() -> None:
    assert len(set(errors.__all__)) == len(errors.__all__)
    assert {"ERROR_CLASSES", "error_code", "error_from_code"} <= set(errors.__all__)
    for cls in ALL_CLASSES:
        assert cls.__name__ in errors.__all__
