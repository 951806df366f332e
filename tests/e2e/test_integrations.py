"""``fastquartdb.integrations`` in-process: settings, error mapping, body checks, lifecycle hooks.

The fast companions of ``test_frameworks.py``, which runs the same helpers
inside real servers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import (
    AsyncDatabaseManager,
    BaseModel,
    Column,
    ConnectionLostError,
    DatabaseBusyError,
    DatabaseError,
    FQDBError,
    IntegrityError,
    InterfaceError,
    NotInitializedError,
    OperationalError,
    ProgrammingError,
    SchemaError,
    ValidationError,
)
from fastquartdb.integrations import (
    DatabaseSettings,
    aiohttp_lifecycle,
    database_settings_from_env,
    error_body,
    fastapi_lifespan,
    http_status_for,
    parse_json_object,
    quart_lifecycle,
    validate_row,
)


@pytest.fixture
def person() -> type[BaseModel]:
    # Defined per test: the shared registry fixture forgets it afterwards, so its
    # table does not appear in every later test's database.
    class Person(BaseModel):
        id = Column("INTEGER", primary_key=True)
        name = Column("TEXT", nullable=False)
        age = Column("INTEGER")
        score = Column("REAL")
        active = Column("BOOLEAN")
        born = Column("DATE")
        tags = Column("JSON")

    return Person


def test_settings_defaults_and_values() -> None:
    assert database_settings_from_env({}) == DatabaseSettings("data/app.db", "auto", False, None)
    env = {
        "FQDB_PATH": "/srv/app.db",
        "FQDB_MODE": "Embedded",
        "FQDB_FILELOCK": "1",
        "FQDB_SOCKET": "/run/app.sock",
    }
    settings = database_settings_from_env(env)
    assert settings == DatabaseSettings("/srv/app.db", "embedded", True, "/run/app.sock")
    assert settings.engine_options() == {
        "path": "/srv/app.db",
        "mode": "embedded",
        "use_filelock": True,
        "socket": "/run/app.sock",
    }
    assert database_settings_from_env({"FQDB_FILELOCK": "off"}).use_filelock is False
    assert database_settings_from_env({}, default_path="x.db").path == "x.db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FQDB_MODE": "deamon"}, "FQDB_MODE must be one of"),
        ({"FQDB_FILELOCK": "y"}, "FQDB_FILELOCK"),
    ],
)
def test_settings_typos_fail_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        database_settings_from_env(env)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ValidationError("x"), 400),
        (SchemaError("x"), 400),
        (ProgrammingError("x"), 400),
        (IntegrityError("x"), 409),
        (NotInitializedError("x"), 503),
        (OperationalError("x"), 503),
        (DatabaseBusyError("x"), 503),
        (ConnectionLostError("x"), 503),
        (DatabaseError("x"), 500),
        (InterfaceError("x"), 500),
        (FQDBError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_http_status(exc: BaseException, status: int) -> None:
    assert http_status_for(exc) == status


def test_error_body() -> None:
    assert error_body(IntegrityError("UNIQUE constraint failed: user.name")) == {
        "error": "UNIQUE constraint failed: user.name"
    }
    assert error_body(FQDBError()) == {"error": "FQDBError"}


def test_parse_json_object() -> None:
    assert parse_json_object(b'{"a": 1}') == {"a": 1}
    assert parse_json_object('{"a": 1}') == {"a": 1}
    with pytest.raises(ValidationError, match="not valid JSON"):
        parse_json_object(b"{nope")
    with pytest.raises(ValidationError, match="not valid JSON"):
        parse_json_object(b"\xff\xfe")
    with pytest.raises(ValidationError, match=r"must be a JSON object .* got list"):
        parse_json_object(b"[1]")


def test_validate_row_accepts_json_values_of_each_type(person: type[BaseModel]) -> None:
    row = {
        "id": 3,
        "name": "ann",
        "age": None,
        "score": 2,
        "active": True,
        "born": "2000-01-02",
        "tags": ["a"],
    }
    assert validate_row(person, row) == row
    assert validate_row(person, {"score": 2.5}) == {"score": 2.5}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nmae": "x"}, r"unknown column 'nmae' in table 'person' \(columns: id, name, age"),
        ({"age": "old"}, "column 'age' of table 'person' is INTEGER and takes an integer, got str"),
        ({"age": True}, "takes an integer, got bool"),
        ({"age": 1.5}, "takes an integer, got float"),
        ({"name": 5}, "is TEXT and takes a string, got int"),
        ({"score": "1"}, "is REAL and takes a number"),
        ({"active": "yes"}, "is BOOLEAN and takes True/False"),
        ({"born": 20000102}, "is DATE and takes a datetime.date or an ISO date string"),
        ([("name", "x")], "Person data must be a dict"),
    ],
)
def test_validate_row_refuses(person: type[BaseModel], data: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_row(person, data)


async def test_fastapi_lifespan_opens_and_closes(person: type[BaseModel], tmp_path: Path) -> None:
    settings = DatabaseSettings(str(tmp_path / "app.db"), mode="embedded")
    lifespan = fastapi_lifespan(settings, busy_timeout=1.0)
    async with lifespan(object()):
        db = AsyncDatabaseManager.get()
        assert db.mode == "embedded"
        assert db.path == str(tmp_path / "app.db")
        await person.insert({"name": "ann"})
    with pytest.raises(NotInitializedError):
        AsyncDatabaseManager.get()


async def test_lifespan_reads_the_environment_at_start(tmp_path: Path, monkeypatch) -> None:
    lifespan = fastapi_lifespan()  # created before the variables are set, as at import
    monkeypatch.setenv("FQDB_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("FQDB_MODE", "embedded")
    monkeypatch.setenv("FQDB_FILELOCK", "1")
    async with lifespan(object()):
        db = AsyncDatabaseManager.get()
        assert (db.path, db.mode, db.use_filelock) == (str(tmp_path / "env.db"), "embedded", True)


class FakeQuart:
    def __init__(self) -> None:
        self.before: list[Any] = []
        self.after: list[Any] = []

    def before_serving(self, func: Any) -> Any:
        self.before.append(func)
        return func

    def after_serving(self, func: Any) -> Any:
        self.after.append(func)
        return func


class FakeAiohttp:
    def __init__(self) -> None:
        self.on_startup: list[Any] = []
        self.on_cleanup: list[Any] = []


async def test_quart_and_aiohttp_hooks(tmp_path: Path) -> None:
    settings = DatabaseSettings(str(tmp_path / "app.db"), mode="embedded")
    quart = FakeQuart()
    assert quart_lifecycle(quart, settings) is quart
    [start], [stop] = quart.before, quart.after
    await start()
    assert AsyncDatabaseManager.get().mode == "embedded"
    await stop()
    with pytest.raises(NotInitializedError):
        AsyncDatabaseManager.get()

    aio = FakeAiohttp()
    assert aiohttp_lifecycle(aio, settings) is aio
    [start], [stop] = aio.on_startup, aio.on_cleanup
    await start(aio)
    assert AsyncDatabaseManager.get().path == settings.path
    await stop(aio)
    with pytest.raises(NotInitializedError):
        AsyncDatabaseManager.get()


def test_no_framework_is_imported() -> None:
    code = (
        "import sys, fastquartdb.integrations; "
        "loaded = {'quart', 'fastapi', 'starlette', 'aiohttp'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
