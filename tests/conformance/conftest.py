"""The conformance fixture: every test here runs once per transport.

Tests take ``db`` (an initialised :class:`AsyncDatabaseManager`) and must not
know which transport is under it; they assert the same results and the same
exception classes on every one. ``daemon`` serves the file from an in-process
``fqdb-server`` on its default socket; ``embedded`` runs the engine in-process
and round-trips every request through the wire codec; ``daemon-writer-reads`` is
``daemon`` with local readers off (``FQDB_READERS=0``), so every read goes to
the daemon as before issue 18 (``FQDB_READERS=0 pytest`` runs every transport so);
``dqlite`` runs on a
3-node ``dqlite-demo`` cluster (one per session, a new database per test), and
``dqlite-daemon`` on the same cluster through an in-process ``fqdb-server
dqlite://...`` (group commit onto the cluster; the client in daemon mode).
Tests that cannot apply to dqlite are skipped on both with their reason in
``DQLITE_SKIPS``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager
from tests.dqlite.cluster import Cluster, require
from tests.helpers import daemon_in_process

TRANSPORTS = ["embedded", "daemon", "daemon-writer-reads", "dqlite", "dqlite-daemon"]
#: The transports on a dqlite cluster: directly, and through a per-host daemon.
DQLITE_TRANSPORTS = ("dqlite", "dqlite-daemon")

#: Conformance tests that cannot apply to a dqlite cluster: test name -> (reason, parameter id
#: substring the skip is limited to, or "" for every parameter).
DQLITE_SKIPS: dict[str, tuple[str, str]] = {
    "test_readme_flow": (
        "opens a file path with use_filelock; tests/dqlite/test_crud.py runs the README flow "
        "on the cluster",
        "",
    ),
    "test_init_engine_twice_same_file_is_harmless": (
        "normalises a file path ('dir/./name'); a dqlite URL names a cluster database, not a file",
        "",
    ),
    "test_raw_statement_deadline_per_call": (
        "the dqlite transport has no statement deadline: a statement runs on the cluster's "
        "leader, which FastQuartDB cannot interrupt",
        "",
    ),
    "test_values_with_sql_are_stored_literally": (
        "dqlite's wire protocol sends text NUL-terminated, so text containing NUL cannot be "
        "carried (the transport refuses it with ValidationError)",
        "\\x00",
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("transport") not in DQLITE_TRANSPORTS:
            continue
        reason, only = DQLITE_SKIPS.get(getattr(item, "originalname", ""), ("", ""))
        if reason and only in item.name:
            item.add_marker(pytest.mark.skip(reason=f"not on dqlite: {reason}"))


@pytest.fixture(scope="session")
def _dqlite_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require()
    cluster = Cluster(tmp_path_factory.mktemp("dqlite-conformance")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of the transport under test (its ``mode``)."""
    if request.param in DQLITE_TRANSPORTS:
        require()
    if request.param == "daemon-writer-reads":
        # Every init_engine of the test: no local readers, reads go to the daemon.
        monkeypatch.setenv("FQDB_READERS", "0")
        return "daemon"
    if request.param == "dqlite-daemon":
        return "daemon"  # its mode: the client talks to a daemon (see the db fixture)
    return str(request.param)


@contextlib.asynccontextmanager
async def serving(transport: str, path: str, **options: Any) -> AsyncIterator[None]:
    """Whatever ``transport`` needs running for ``path`` (a daemon with ``options``, or nothing)."""
    if transport == "daemon":
        async with daemon_in_process(path, **options):
            yield
    else:
        yield


@pytest.fixture
async def db(
    transport: str, db_path: str, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager on a new file (a new dqlite database), over ``transport``."""
    if transport == "dqlite":
        cluster: Cluster = request.getfixturevalue("_dqlite_cluster")
        manager = await AsyncDatabaseManager.init_engine(cluster.url())
        assert manager.mode == "dqlite"
        yield manager
        await AsyncDatabaseManager.close()
        return
    if request.node.callspec.params.get("transport") == "dqlite-daemon":
        cluster = request.getfixturevalue("_dqlite_cluster")
        url = cluster.url()
        # On the URL's default socket, as an application finds it (a new URL per test).
        async with daemon_in_process(url):
            manager = await AsyncDatabaseManager.init_engine(url, mode="daemon")
            assert manager.mode == "daemon"
            assert (await manager.stats())["reads"]["local_reads"] is False
            yield manager
            await AsyncDatabaseManager.close()
        return
    async with serving(transport, db_path):
        manager = await AsyncDatabaseManager.init_engine(db_path, mode=transport)
        assert manager.mode == transport
        # Local reads are on unless the test runs with them off: never off by accident.
        local = (await manager.stats())["reads"]["local_reads"]
        assert local is (os.environ.get("FQDB_READERS") != "0"), manager.router.why_not
        yield manager
        await AsyncDatabaseManager.close()
