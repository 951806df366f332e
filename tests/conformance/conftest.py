"""The conformance fixture: every test here runs once per transport.

Tests take ``db`` (an initialised :class:`AsyncDatabaseManager`) and must not
know which transport is under it; they assert the same results and the same
exception classes on every one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastquartdb import AsyncDatabaseManager

TRANSPORTS = ["embedded"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The name of the transport under test."""
    return str(request.param)


@pytest.fixture
async def db(transport: str, db_path: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager on a new file, over ``transport``."""
    manager = await AsyncDatabaseManager.init_engine(db_path, mode=transport)
    assert manager.mode == transport
    yield manager
    await AsyncDatabaseManager.close()
