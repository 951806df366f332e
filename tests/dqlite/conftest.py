"""Fixtures for the dqlite tests: one 3-node cluster per session, a new database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fastquartdb import AsyncDatabaseManager

from .cluster import Cluster, require


@pytest.fixture(scope="session")
def dqlite_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three dqlite-demo nodes on loopback, shared by the tests that only read and write."""
    require()
    cluster = Cluster(tmp_path_factory.mktemp("dqlite")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own, for tests that kill nodes."""
    require()
    cluster = Cluster(tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def ddb(dqlite_cluster: Cluster) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager on a new database of the shared cluster."""
    manager = await AsyncDatabaseManager.init_engine(dqlite_cluster.url())
    assert manager.mode == "dqlite"
    yield manager
    await AsyncDatabaseManager.close()
