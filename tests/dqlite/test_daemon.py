"""``fqdb-server dqlite://...``: a per-host daemon group-committing onto a real cluster.

Real processes and signals: writer processes insert through one daemon
(``tests/dqlite/writer.py`` with a socket), and the test SIGKILLs the cluster's
leader, or the daemon itself (restarted after 0.5 s). Every write carries a
request key and every batch a record of its own, so nothing is lost, nothing
is stored twice, and no error reaches the application (the ``key`` column is
not unique: a write run twice would be two rows).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager
from fastquartdb.protocol.errors import InterfaceError
from tests.helpers import DaemonProcess, daemon_and_client
from tests.integration.test_reply_limit import LIMIT, returning_too_large_leaves_nothing

from .cluster import Cluster
from .test_failover import _read, _wait_for

ROOT = Path(__file__).resolve().parents[2]


def _writers(
    url: str, socket: str, tmp_path: Path, count: int = 3, unkeyed: int = 0
) -> tuple[list[Any], list[Path]]:
    """``count`` writer processes through the daemon; the last ``unkeyed`` without keys."""
    stop = tmp_path / "stop"
    reports = [tmp_path / f"writer{i}.jsonl" for i in range(count)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.dqlite.writer",
                url,
                f"w{i}",
                str(reports[i]),
                str(stop),
                socket,
                "nokeys" if i >= count - unkeyed else "keys",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    return procs, reports


def _finish(procs: list[Any], stop: Path) -> None:
    """Let the writers end (each must exit 0)."""
    stop.touch()
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        _kill_writers(procs, stop)


def _kill_writers(procs: list[Any], stop: Path) -> None:
    """Whatever happened: no writer outlives the test."""
    stop.touch()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _acked_after(reports: list[Path], moment: float, count: int) -> bool:
    """Every writer acknowledged ``count`` writes after ``moment``."""
    return all(sum(1 for r in _read(p) if r["ok"] and r["t"] > moment) >= count for p in reports)


async def _check_exactly_once(url: str, reports: list[Path]) -> int:
    """No error reached the application; every acknowledged write is there once."""
    outcomes = [r for p in reports for r in _read(p)]
    errors = [r for r in outcomes if not r["ok"]]
    assert not errors, f"{len(errors)} errors reached the application: {errors[:3]}"
    acknowledged = {r["key"] for r in outcomes}
    assert len(outcomes) == len(acknowledged), "a write was acknowledged twice"
    db = await AsyncDatabaseManager.init_engine(url)  # directly: what the cluster holds
    try:
        rows = await db.fetch_all("SELECT key FROM event")
    finally:
        await AsyncDatabaseManager.close()
    counts = Counter(row["key"] for row in rows)
    assert not sorted(acknowledged - counts.keys()), "acknowledged writes lost"
    assert not [k for k, n in counts.items() if n > 1], "writes stored twice"
    assert not sorted(counts.keys() - acknowledged), "rows nobody wrote"
    return len(acknowledged)


@pytest.mark.slow
def test_leader_sigkill_under_load_through_the_daemon(own_cluster: Cluster, tmp_path: Path) -> None:
    url = own_cluster.url("viadaemon")
    daemon = DaemonProcess(url, socket=str(tmp_path / "fqdb.sock")).start()
    assert daemon.socket is not None
    # Two of the writers without request keys: their writes in the batch lost at COMMIT
    # are kept from running twice only by the batch's own record.
    procs, reports = _writers(url, daemon.socket, tmp_path, count=4, unkeyed=2)
    try:
        _wait_for(
            lambda: _acked_after(reports, 0.0, 100), 60, "every writer to acknowledge 100 writes"
        )
        before = daemon.stats()
        assert before["batch_max"] > 1, "the daemon never grouped writes into one batch"
        # Followers frozen first: the leader cannot commit, so the daemon's batch surely
        # waits at its COMMIT when the leader dies.
        at_commit = own_cluster.kill_leader_at_commit()
        leader = at_commit.leader
        at_commit.pause()
        time.sleep(0.5)
        killed_at = time.time()
        at_commit.kill()
        _wait_for(
            lambda: _acked_after(reports, killed_at, 50),
            60,
            "every writer to acknowledge 50 writes after the leader was killed",
        )
        cluster_stats = daemon.stats()["dqlite"]
        resumed = min(r["t"] for p in reports for r in _read(p) if r["t"] > killed_at)
        _finish(procs, tmp_path / "stop")
    finally:
        _kill_writers(procs, tmp_path / "stop")
        daemon.stop()
    assert cluster_stats["failovers"] >= 1, cluster_stats
    # The batch at its COMMIT was resolved by its record, or run again: never "unknown".
    assert cluster_stats["batches_lost"] >= 1, cluster_stats
    assert cluster_stats["leader"] != leader.address
    writes = asyncio.run(_check_exactly_once(url, reports))
    print(
        f"RELIABILITY D7: {writes} writes through the daemon, 0 errors, 0 lost, 0 twice; "
        f"batches lost with the leader {cluster_stats['batches_lost']}, failovers "
        f"{cluster_stats['failovers']}; writes resumed {resumed - killed_at:.1f} s after the kill"
    )


@pytest.mark.slow
def test_daemon_sigkill_on_a_cluster_is_resent_exactly_once(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    url = own_cluster.url("daemonkill")
    socket = str(tmp_path / "fqdb.sock")
    daemon = DaemonProcess(url, socket=socket).start()
    procs, reports = _writers(url, socket, tmp_path)
    try:
        _wait_for(
            lambda: _acked_after(reports, 0.0, 100), 60, "every writer to acknowledge 100 writes"
        )
        killed_at = time.time()
        daemon.kill()  # SIGKILL: writes in flight, replies lost
        time.sleep(0.5)
        daemon = DaemonProcess(url, socket=socket).start()
        restarted = time.time()
        _wait_for(
            lambda: _acked_after(reports, killed_at, 50),
            60,
            "every writer to acknowledge 50 writes after the daemon was killed",
        )
        keys = daemon.stats()["request_keys"]
        resumed = min(r["t"] for p in reports for r in _read(p) if r["t"] > restarted)
        _finish(procs, tmp_path / "stop")
    finally:
        _kill_writers(procs, tmp_path / "stop")
        daemon.stop()
    # The writes in flight at the kill came back with their keys (resent), and those the
    # killed daemon had committed were answered from their records on the cluster.
    assert keys["resent"] >= 1, keys
    writes = asyncio.run(_check_exactly_once(url, reports))
    print(
        f"RELIABILITY D8: {writes} writes, 0 errors, 0 lost, 0 twice; resent {keys['resent']}, "
        f"answered from their records {keys['deduplicated']}; writes resumed "
        f"{resumed - killed_at:.1f} s after the kill (the new daemon was up after "
        f"{restarted - killed_at:.1f} s)"
    )


async def test_change_feeds_are_refused_alike_through_the_daemon(dqlite_cluster: Cluster) -> None:
    url = dqlite_cluster.url()
    async with daemon_and_client(url) as (_, db):
        assert db.mode == "daemon" and db.on_cluster
        with pytest.raises(InterfaceError, match="not available on a dqlite cluster"):
            await db.changes(["note"]).__anext__()
        stats = await db.stats()
        assert stats["reads"]["local_reads"] is False
        assert stats["daemon"]["changes"] is None
        assert stats["daemon"]["dqlite"]["nodes"] == url[len("dqlite://") :].split("/")[0].split(
            ","
        )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"replicate": "file:///tmp/x"}, "a dqlite cluster is replicated by dqlite itself"),
        ({"read_only": True}, "cannot be read-only yet"),
    ],
)
def test_options_that_need_a_file_are_refused_for_a_cluster(
    option: dict[str, Any], message: str
) -> None:
    from fastquartdb.server.config import ServerConfig

    with pytest.raises(ValueError, match=message):
        ServerConfig(db="dqlite://127.0.0.1:9001/app", **option)
    config = ServerConfig(db="dqlite://127.0.0.1:9001/app")
    assert config.on_cluster and config.db == "dqlite://127.0.0.1:9001/app"  # no realpath
    assert config.socket is not None and config.socket.endswith(".sock")


async def test_a_huge_result_fails_alone_before_it_is_in_the_daemons_memory(
    dqlite_cluster: Cluster,
) -> None:
    from fastquartdb import BaseModel, Column
    from fastquartdb.protocol.errors import ResultTooLargeError

    class Blob(BaseModel):
        id = Column("INTEGER", primary_key=True)
        payload = Column("TEXT")

    url = dqlite_cluster.url()
    async with daemon_and_client(url, max_reply=64 * 1024) as (_, _db):
        await Blob.insert_many([{"payload": "x" * 1000} for _ in range(300)])  # ~300 KB
        # Refused while the rows arrive from the leader ("is larger than"), not after they
        # were all in the daemon's memory (the reply check would say "is N bytes").
        with pytest.raises(
            ResultTooLargeError, match=r"reply limit of 65536 bytes \(--max-reply\) after"
        ):
            await Blob.fetch()
        # The leader connection is still at a message boundary: everything goes on.
        assert await Blob.count() == 300
        assert len(await Blob.fetch(limit=10)) == 10
        await Blob.insert({"payload": "after"})
        assert await Blob.count() == 301


def test_a_cluster_url_trusts_no_file_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastquartdb.client.connection import _trusted_uids

    # A directory that looks like the URL, owned by someone else, must not make them trusted.
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    monkeypatch.chdir(tmp_path)
    url = "dqlite://127.0.0.1:9001/app"
    os.makedirs(url, exist_ok=True)
    os.chown(url, 4242, 4242)
    assert 4242 not in _trusted_uids(url)
    assert _trusted_uids(url) == {os.getuid(), 0}


async def test_a_returning_too_large_on_a_cluster_leaves_nothing(dqlite_cluster: Cluster) -> None:
    url = dqlite_cluster.url()
    async with daemon_and_client(url, max_reply=LIMIT) as (_, db):
        await returning_too_large_leaves_nothing(db)
