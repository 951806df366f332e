"""The conformance fixture: every test here runs once per transport.

Tests take ``db`` (an initialised :class:`AsyncDatabaseManager`) and must not
know which transport is under it; they assert the same results and the same
exception classes on every one. ``daemon`` serves the file from an in-process
``fqdb-server`` on its default socket; ``embedded`` runs the engine in-process
and round-trips every request through the wire codec.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from fastquartdb import AsyncDatabaseManager
from tests.helpers import daemon_in_process

TRANSPORTS = ["embedded", "daemon"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The name of the transport under test."""
    return str(request.param)


@contextlib.asynccontextmanager
async def serving(transport: str, path: str) -> AsyncIterator[None]:
    """Whatever ``transport`` needs running for ``path`` (a daemon, or nothing)."""
    if transport == "daemon":
        async with daemon_in_process(path):
            yield
    else:
        yield


@pytest.fixture
async def db(transport: str, db_path: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager on a new file, over ``transport``."""
    async with serving(transport, db_path):
        manager = await AsyncDatabaseManager.init_engine(db_path, mode=transport)
        assert manager.mode == transport
        yield manager
        await AsyncDatabaseManager.close()
