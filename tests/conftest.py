"""Shared fixtures: a fresh database path per test, and a clean model registry."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager
from tests.helpers import LoadClient

# Embedded mode round-trips every request and reply through the wire codec in tests,
# so nothing passes embedded that the daemon could not carry.
os.environ["FQDB_WIRE_CHECK"] = "1"


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A path for a new database file in its own (existing) temporary directory.

    The directory exists: ``fqdb-server`` creates a missing file, never a missing directory.
    """
    (tmp_path / "data").mkdir(exist_ok=True)
    return str(tmp_path / "data" / "test.db")


@pytest.fixture(autouse=True)
def _model_registry() -> Iterator[None]:
    # Models defined inside a test must not leak into the next test's init_engine.
    saved = dict(AsyncDatabaseManager._models)
    yield
    AsyncDatabaseManager._models.clear()
    AsyncDatabaseManager._models.update(saved)


@pytest.fixture(autouse=True)
async def _close_manager() -> AsyncIterator[None]:
    yield
    await AsyncDatabaseManager.close()


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Any]:
    """Factory for load clients; every one is reaped at the end of the test."""
    started: list[LoadClient] = []

    def start(action: str, db: str, *args: str) -> LoadClient:
        client = LoadClient(action, db, tmp_path / f"report-{len(started)}.json", *args)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()
